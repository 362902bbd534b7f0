//! libp2p's tokio TCP transport, but dialing from a fixed source address: a node that listens on
//! 127.0.0.3 also dials from 127.0.0.3 (an ephemeral port), so every connection's two
//! endpoints carry the two nodes' host addresses. (libp2p-tcp's port reuse binds the unspecified
//! address, and the kernel would then pick 127.0.0.1 as source for any loopback peer.)

use std::{
    io,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    task::{Context, Poll},
};

use futures::{FutureExt, future::BoxFuture};
use libp2p::{
    Multiaddr, Transport,
    core::transport::{DialOpts, ListenerId, TransportError, TransportEvent},
    multiaddr::Protocol,
    tcp,
};
use tokio::net::TcpSocket;

/// TCP that listens like libp2p-tcp and dials from `source` when one is set.
pub struct HostTcp {
    inner: tcp::tokio::Transport,
    source: Option<IpAddr>,
}

impl HostTcp {
    /// Nagle off; dials bind `source` (ephemeral port) when given, else libp2p-tcp dials.
    pub fn new(source: Option<IpAddr>) -> Self {
        HostTcp {
            inner: tcp::tokio::Transport::new(tcp::Config::new().nodelay(true)),
            source,
        }
    }
}

/// The IP and port of `/ip4|ip6/…/tcp/…[/p2p/…]`.
fn socket_addr(addr: &Multiaddr) -> Option<SocketAddr> {
    let mut ip = None;
    let mut port = None;
    for protocol in addr {
        match protocol {
            Protocol::Ip4(v4) if ip.is_none() => ip = Some(IpAddr::V4(v4)),
            Protocol::Ip6(v6) if ip.is_none() => ip = Some(IpAddr::V6(v6)),
            Protocol::Tcp(p) if ip.is_some() && port.is_none() => port = Some(p),
            Protocol::P2p(_) if port.is_some() => {}
            _ => return None,
        }
    }
    Some(SocketAddr::new(ip?, port?))
}

async fn connect(source: IpAddr, remote: SocketAddr) -> io::Result<tcp::tokio::TcpStream> {
    let socket = match remote {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.bind(SocketAddr::new(source, 0))?;
    let stream = socket.connect(remote).await?;
    stream.set_nodelay(true)?;
    Ok(tcp::tokio::TcpStream(stream))
}

impl Transport for HostTcp {
    type Output = tcp::tokio::TcpStream;
    type Error = io::Error;
    type ListenerUpgrade = <tcp::tokio::Transport as Transport>::ListenerUpgrade;
    type Dial = BoxFuture<'static, io::Result<tcp::tokio::TcpStream>>;

    fn listen_on(
        &mut self,
        id: ListenerId,
        addr: Multiaddr,
    ) -> Result<(), TransportError<Self::Error>> {
        self.inner.listen_on(id, addr)
    }

    fn remove_listener(&mut self, id: ListenerId) -> bool {
        self.inner.remove_listener(id)
    }

    fn dial(
        &mut self,
        addr: Multiaddr,
        opts: DialOpts,
    ) -> Result<Self::Dial, TransportError<Self::Error>> {
        let Some(source) = self.source else {
            return self.inner.dial(addr, opts).map(FutureExt::boxed);
        };
        match socket_addr(&addr) {
            Some(remote) if remote.is_ipv4() == source.is_ipv4() => {
                Ok(connect(source, remote).boxed())
            }
            _ => Err(TransportError::MultiaddrNotSupported(addr)),
        }
    }

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<TransportEvent<Self::ListenerUpgrade, Self::Error>> {
        Pin::new(&mut self.inner).poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_tcp_addresses_only() {
        let ok: Multiaddr = "/ip4/127.0.0.2/tcp/4001".parse().expect("multiaddr");
        assert_eq!(
            socket_addr(&ok),
            Some("127.0.0.2:4001".parse().expect("addr"))
        );
        let udp: Multiaddr = "/ip4/127.0.0.2/udp/4001".parse().expect("multiaddr");
        assert_eq!(socket_addr(&udp), None);
    }
}
