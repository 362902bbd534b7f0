//! Packet sources: everything that does capture I/O. Capture files and live libpcap yield raw
//! frames with their link type; the eBPF probe yields per-socket counters and packet heads;
//! `procfs` says who owns a socket; `btf` reads the kernel layout the probe is given. `link` turns a frame into the L3/L4 view the flow table needs.

pub mod btf;
pub mod caps;
mod fast_ipv4;
pub mod link;
pub mod live_pcap;
pub mod pcap_file;
pub mod pcapng;
pub mod probe;
pub mod procfs;
pub mod read_ahead;

/// Link-layer framing of a capture, as libpcap's DLT/LINKTYPE numbers name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkType {
    /// DLT_EN10MB: Ethernet II, with or without 802.1Q/802.1ad tags.
    Ethernet,
    /// DLT_LINUX_SLL: Linux cooked capture v1 (16-byte header).
    LinuxSll,
    /// DLT_LINUX_SLL2: Linux cooked capture v2 (20-byte header).
    LinuxSll2,
    /// DLT_NULL: BSD loopback, 4-byte address family in the capturing host's byte order.
    Null,
    /// DLT_LOOP: OpenBSD loopback, 4-byte address family in network byte order.
    Loop,
    /// DLT_RAW / LINKTYPE_RAW / LINKTYPE_IPV4 / LINKTYPE_IPV6: the frame is the IP packet.
    RawIp,
}

impl LinkType {
    /// Maps a libpcap link-type number to a supported framing; `None` when unsupported.
    pub fn from_dlt(dlt: i32) -> Option<LinkType> {
        match dlt {
            1 => Some(LinkType::Ethernet),
            113 => Some(LinkType::LinuxSll),
            276 => Some(LinkType::LinuxSll2),
            0 => Some(LinkType::Null),
            108 => Some(LinkType::Loop),
            12 | 14 | 101 | 228 | 229 => Some(LinkType::RawIp),
            _ => None,
        }
    }
}

/// One captured frame, borrowed from the source's buffer.
#[derive(Clone, Copy, Debug)]
pub struct RawPacket<'a> {
    /// Capture time, nanoseconds since the Unix epoch.
    pub ts_ns: i64,
    pub link: LinkType,
    /// The captured bytes (possibly cut at the snap length).
    pub data: &'a [u8],
    /// The frame's length on the wire.
    pub wire_len: u32,
}
