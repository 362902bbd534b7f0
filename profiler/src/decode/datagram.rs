//! What a UDP decoder is: it sees one datagram and labels it whole, or declines. The registry of
//! decoders and their shared state are in [`super::udp`], which depends on the decoders; the
//! decoders depend only on this.

use std::net::IpAddr;

use super::{DecodeCtx, LabelId};

/// One UDP datagram as the decoders see it.
#[derive(Clone, Copy, Debug)]
pub struct Datagram<'a> {
    pub src: (IpAddr, u16),
    pub dst: (IpAddr, u16),
    /// The UDP payload as captured (may be cut short by the snap length).
    pub payload: &'a [u8],
    /// The payload length the UDP header states.
    pub wire_payload: u32,
}

/// A decoder's answer for a datagram it knows: its label and the messages it carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Labelled {
    pub label: LabelId,
    pub units: u32,
}

/// Labels UDP datagrams of one protocol.
pub trait DatagramDecoder: Sync {
    /// The label of `d` if it is this protocol's; `None` otherwise.
    fn datagram(&self, d: &Datagram<'_>, ctx: &mut DecodeCtx<'_>) -> Option<Labelled>;
}
