//! The libp2p TCP transport of a node, instrumented: every socket is wrapped in a byte counter,
//! the security and muxer ids that multistream-select negotiated are recorded per connection,
//! and the muxer is tapped so that every substream's bytes are recorded too. The counts are what
//! the implementation wrote into and read from its sockets, i.e. the TCP payload bytes per
//! direction.

use std::{
    io,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
};

use futures::{AsyncRead, AsyncWrite};
use libp2p::{
    PeerId, Transport,
    core::{
        Negotiated,
        muxing::StreamMuxerBox,
        transport::Boxed,
        upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade},
    },
    identity::Keypair,
    noise, plaintext, yamux,
};
use multistream_select::{Version, dialer_select_proto, listener_select_proto};

use crate::{
    host_tcp::HostTcp,
    tap::{StreamRecord, Streams, Tap},
};

/// Which security protocol the node offers.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    /// `/noise` (Noise XX, ChaCha20-Poly1305), as every Waku node.
    Noise,
    /// `/plaintext/2.0.0`, for test networks: everything above TCP stays readable.
    Plaintext,
}

/// Which stream muxer the node offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Muxer {
    /// `/yamux/1.0.0`, as nwaku, go-waku and status-go.
    Yamux,
    /// `/mplex/6.7.0`, as js-waku.
    Mplex,
}

impl Muxer {
    /// The muxer's protocol id.
    pub fn id(self) -> &'static str {
        match self {
            Muxer::Yamux => "/yamux/1.0.0",
            Muxer::Mplex => "/mplex/6.7.0",
        }
    }
}

/// What one side of one TCP connection saw.
#[derive(Debug)]
pub struct ConnSide {
    /// Index of the node owning this socket.
    pub node: usize,
    /// Whether this side dialed.
    pub dialer: bool,
    /// Local socket address.
    pub local: SocketAddr,
    /// Remote socket address.
    pub remote: SocketAddr,
    written: AtomicU64,
    read: AtomicU64,
    security: Mutex<Option<String>>,
    muxer: Mutex<Option<String>>,
    streams: Streams,
}

impl ConnSide {
    /// Bytes written into the socket so far.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::SeqCst)
    }

    /// Bytes read from the socket so far.
    pub fn read(&self) -> u64 {
        self.read.load(Ordering::SeqCst)
    }

    /// The negotiated security protocol id, once negotiated.
    pub fn security(&self) -> Option<String> {
        self.security
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The negotiated muxer id, once negotiated.
    pub fn muxer(&self) -> Option<String> {
        self.muxer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Every substream of the connection, in the order this side opened or accepted them.
    pub fn streams(&self) -> Vec<Arc<StreamRecord>> {
        self.streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// One connection side as another process reported it (the js-libp2p nodes).
pub struct ReportedSide {
    /// Index of the node owning the socket.
    pub node: usize,
    /// Whether this side dialed.
    pub dialer: bool,
    /// Local socket address.
    pub local: SocketAddr,
    /// Remote socket address.
    pub remote: SocketAddr,
    /// Bytes written into the socket.
    pub written: u64,
    /// Bytes read from the socket.
    pub read: u64,
    /// The negotiated security protocol id.
    pub security: String,
    /// The negotiated muxer id.
    pub muxer: String,
    /// Every substream, in the order this side opened or accepted them.
    pub streams: Vec<StreamRecord>,
}

/// Every connection side of every node of a scenario, shared by the node threads.
#[derive(Clone, Default)]
pub struct Registry(Arc<Mutex<Vec<Arc<ConnSide>>>>);

impl Registry {
    fn open(
        &self,
        node: usize,
        dialer: bool,
        local: SocketAddr,
        remote: SocketAddr,
    ) -> Arc<ConnSide> {
        let side = Arc::new(ConnSide {
            node,
            dialer,
            local,
            remote,
            written: AtomicU64::new(0),
            read: AtomicU64::new(0),
            security: Mutex::new(None),
            muxer: Mutex::new(None),
            streams: Streams::default(),
        });
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(side.clone());
        side
    }

    /// Registers a connection side another process reported.
    pub fn add_reported(&self, side: ReportedSide) {
        let added = self.open(side.node, side.dialer, side.local, side.remote);
        added.written.store(side.written, Ordering::SeqCst);
        added.read.store(side.read, Ordering::SeqCst);
        *added
            .security
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(side.security);
        *added.muxer.lock().unwrap_or_else(PoisonError::into_inner) = Some(side.muxer);
        added
            .streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(side.streams.into_iter().map(Arc::new));
    }

    /// A snapshot of all connection sides seen so far.
    pub fn sides(&self) -> Vec<Arc<ConnSide>> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// A socket that adds every byte it reads or writes to its [`ConnSide`].
struct Counting<S> {
    inner: S,
    side: Arc<ConnSide>,
}

impl<S: AsyncRead + Unpin> AsyncRead for Counting<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            this.side.read.fetch_add(n as u64, Ordering::SeqCst);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counting<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            this.side.written.fetch_add(n as u64, Ordering::SeqCst);
        }
        polled
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }
}

/// Runs multistream-select for `up` on `io` and then the upgrade itself, as libp2p's upgrade
/// builder does, and returns the protocol id that was agreed on.
async fn negotiate<C, U, O, E>(io: C, up: U, dialer: bool) -> io::Result<(String, O)>
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: InboundConnectionUpgrade<Negotiated<C>, Output = O, Error = E>
        + OutboundConnectionUpgrade<Negotiated<C>, Output = O, Error = E>,
    E: std::error::Error + Send + Sync + 'static,
{
    if dialer {
        let (info, io) = dialer_select_proto(io, up.protocol_info(), Version::V1)
            .await
            .map_err(io::Error::other)?;
        let id = info.as_ref().to_owned();
        let out = OutboundConnectionUpgrade::upgrade_outbound(up, io, info).await;
        Ok((id, out.map_err(io::Error::other)?))
    } else {
        let (info, io) = listener_select_proto(io, up.protocol_info())
            .await
            .map_err(io::Error::other)?;
        let id = info.as_ref().to_owned();
        let out = InboundConnectionUpgrade::upgrade_inbound(up, io, info).await;
        Ok((id, out.map_err(io::Error::other)?))
    }
}

/// Security, then the muxer, on one counted socket; records both negotiated ids on `side` and
/// taps the muxer's substreams into it.
async fn secure_and_multiplex<C, U, D, E>(
    io: C,
    security: U,
    muxer: Muxer,
    side: Arc<ConnSide>,
) -> io::Result<(PeerId, StreamMuxerBox)>
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: InboundConnectionUpgrade<Negotiated<C>, Output = (PeerId, D), Error = E>
        + OutboundConnectionUpgrade<Negotiated<C>, Output = (PeerId, D), Error = E>,
    D: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    E: std::error::Error + Send + Sync + 'static,
{
    let (security_id, (peer, secured)) = negotiate(io, security, side.dialer).await?;
    *side.security.lock().unwrap_or_else(PoisonError::into_inner) = Some(security_id);
    let (muxer_id, muxed) = match muxer {
        Muxer::Yamux => {
            let (id, m) = negotiate(secured, yamux::Config::default(), side.dialer).await?;
            (id, StreamMuxerBox::new(m))
        }
        Muxer::Mplex => {
            let (id, m) = negotiate(secured, libp2p_mplex::Config::new(), side.dialer).await?;
            (id, StreamMuxerBox::new(m))
        }
    };
    *side.muxer.lock().unwrap_or_else(PoisonError::into_inner) = Some(muxer_id);
    let tapped = Tap::new(muxed, side.streams.clone());
    Ok((peer, StreamMuxerBox::new(tapped)))
}

/// How a node's transport is set up.
#[derive(Clone, Copy, Debug)]
pub struct TransportSpec {
    /// Security protocol offered.
    pub security: Security,
    /// Muxer offered.
    pub muxer: Muxer,
    /// Source address of dials (`None`: libp2p-tcp's own choice, with port reuse).
    pub source: Option<IpAddr>,
}

/// TCP (Nagle off; dials from `spec.source` when set) → counted socket → security → muxer,
/// tapped.
pub fn build(
    key: &Keypair,
    spec: TransportSpec,
    node: usize,
    registry: Registry,
) -> Boxed<(PeerId, StreamMuxerBox)> {
    let key = key.clone();
    let TransportSpec {
        security,
        muxer,
        source,
    } = spec;
    HostTcp::new(source)
        .and_then(move |stream, endpoint| {
            let key = key.clone();
            let registry = registry.clone();
            async move {
                let local = stream.0.local_addr()?;
                let remote = stream.0.peer_addr()?;
                let side = registry.open(node, endpoint.is_dialer(), local, remote);
                let io = Counting {
                    inner: stream,
                    side: side.clone(),
                };
                match security {
                    Security::Noise => {
                        let config = noise::Config::new(&key).map_err(io::Error::other)?;
                        secure_and_multiplex(io, config, muxer, side).await
                    }
                    Security::Plaintext => {
                        secure_and_multiplex(io, plaintext::Config::new(&key), muxer, side).await
                    }
                }
            }
        })
        .boxed()
}
