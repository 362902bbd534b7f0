//! A [`StreamMuxer`] that records what the node writes and reads on every substream, so that the
//! ground truth can decode each stream's multistream-select exchange and gossipsub RPCs from
//! the bytes the implementation itself produced (above security and muxer framing).

use std::{
    io::{self, IoSlice},
    pin::Pin,
    sync::{Arc, Mutex, PoisonError},
    task::{Context, Poll},
};

use futures::{AsyncRead, AsyncWrite};
use libp2p::core::muxing::{StreamMuxer, StreamMuxerBox, StreamMuxerEvent, SubstreamBox};

/// The bytes one node wrote into and read from one substream.
#[derive(Debug, Default)]
pub struct StreamRecord {
    /// Whether this node opened the substream.
    pub outbound: bool,
    written: Mutex<Vec<u8>>,
    read: Mutex<Vec<u8>>,
}

impl StreamRecord {
    /// A copy of every byte the node wrote so far.
    pub fn written(&self) -> Vec<u8> {
        self.written
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// A copy of every byte the node read so far.
    pub fn read(&self) -> Vec<u8> {
        self.read
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// A record of bytes another process tapped (the js-libp2p nodes' muxers).
    pub fn recorded(outbound: bool, written: Vec<u8>, read: Vec<u8>) -> Self {
        StreamRecord {
            outbound,
            written: Mutex::new(written),
            read: Mutex::new(read),
        }
    }

    /// An empty record, for tests.
    #[cfg(test)]
    pub fn for_test(outbound: bool) -> Self {
        StreamRecord {
            outbound,
            ..StreamRecord::default()
        }
    }

    /// Appends to the written bytes, for tests.
    #[cfg(test)]
    pub fn push_written(&self, bytes: &[u8]) {
        Self::append(&self.written, bytes);
    }

    /// Appends to the read bytes, for tests.
    #[cfg(test)]
    pub fn push_read(&self, bytes: &[u8]) {
        Self::append(&self.read, bytes);
    }

    fn append(buffer: &Mutex<Vec<u8>>, bytes: &[u8]) {
        buffer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend_from_slice(bytes);
    }
}

/// Where new stream records go (a connection side's list).
pub type Streams = Arc<Mutex<Vec<Arc<StreamRecord>>>>;

/// Wraps a muxer; every substream it yields is a [`Tapped`] one registered in `streams`.
pub struct Tap {
    inner: StreamMuxerBox,
    streams: Streams,
}

impl Tap {
    /// Taps `inner`, registering its substreams in `streams`.
    pub fn new(inner: StreamMuxerBox, streams: Streams) -> Self {
        Tap { inner, streams }
    }

    fn tapped(&self, inner: SubstreamBox, outbound: bool) -> Tapped {
        let record = Arc::new(StreamRecord {
            outbound,
            ..StreamRecord::default()
        });
        self.streams
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(record.clone());
        Tapped { inner, record }
    }
}

impl StreamMuxer for Tap {
    type Substream = Tapped;
    type Error = io::Error;

    fn poll_inbound(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        Pin::new(&mut self.inner)
            .poll_inbound(cx)
            .map_ok(|s| self.tapped(s, false))
    }

    fn poll_outbound(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        Pin::new(&mut self.inner)
            .poll_outbound(cx)
            .map_ok(|s| self.tapped(s, true))
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.inner).poll_close(cx)
    }

    fn poll(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<StreamMuxerEvent, Self::Error>> {
        Pin::new(&mut self.inner).poll(cx)
    }
}

/// A substream that appends what passes through it to its [`StreamRecord`].
pub struct Tapped {
    inner: SubstreamBox,
    record: Arc<StreamRecord>,
}

impl AsyncRead for Tapped {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            StreamRecord::append(&self.record.read, &buf[..n]);
        }
        polled
    }
}

impl AsyncWrite for Tapped {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            StreamRecord::append(&self.record.written, &buf[..n]);
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = polled {
            let mut left = n;
            for buf in bufs {
                let take = left.min(buf.len());
                StreamRecord::append(&self.record.written, &buf[..take]);
                left -= take;
                if left == 0 {
                    break;
                }
            }
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
