//! From a captured frame to the fields the flow table needs: IP length, addresses, transport
//! header. Parsing is lax (etherparse's `LaxSlicedPacket`) so cut-off frames still count; the
//! common frame takes the direct path of [`super::fast_ipv4`].

use std::net::IpAddr;

use etherparse::{EtherType, IpNumber, LaxNetSlice, LaxSlicedPacket, TransportSlice};

use super::{LinkType, RawPacket, fast_ipv4};

/// Length of the Linux cooked v1 header; the protocol field is its last two bytes.
const SLL_LEN: usize = 16;
/// Length of the Linux cooked v2 header; the protocol field is its first two bytes.
const SLL2_LEN: usize = 20;
/// Length of the BSD loopback address-family header.
const NULL_LEN: usize = 4;

/// What a frame is, as far as accounting is concerned.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// Not IP (ARP, LLDP, …) or an IP header too broken to read: `len` wire bytes of `protocol`.
    NonIp { protocol: &'static str, len: u32 },
    /// An IP packet; `ip_len` is its total length from the IP header.
    Ip(IpPacket<'a>),
}

/// The IP-level view of a packet.
#[derive(Debug, PartialEq, Eq)]
pub struct IpPacket<'a> {
    /// IP total length (IPv4 total length, IPv6 40 + payload length).
    pub ip_len: u32,
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IP protocol number of the payload (after IPv6 extension headers).
    pub proto: u8,
    /// Fragment identity when the packet is a fragment: (identification, first fragment?).
    pub fragment: Option<(u32, bool)>,
    pub transport: Transport<'a>,
}

/// The transport layer of an IP packet.
#[derive(Debug, PartialEq, Eq)]
pub enum Transport<'a> {
    Tcp(TcpSegment<'a>),
    Udp {
        src_port: u16,
        dst_port: u16,
        payload: &'a [u8],
        /// Payload length on the wire (from the IP length; the capture may hold less).
        wire_payload_len: u32,
    },
    /// ICMP, other protocols, non-first fragments and transport headers cut off by the snap length.
    Other,
}

/// The TCP fields reassembly uses.
#[derive(Debug, PartialEq, Eq)]
pub struct TcpSegment<'a> {
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u32,
    pub syn: bool,
    pub ack: bool,
    pub fin: bool,
    pub rst: bool,
    /// Payload bytes present in the capture.
    pub payload: &'a [u8],
    /// Payload length on the wire (from the IP length), ≥ `payload.len()` when the snap length cut it.
    pub wire_payload_len: u32,
}

/// Parses a captured frame. Never fails: what cannot be read is reported as `NonIp` with its length.
pub fn parse<'a>(pkt: &RawPacket<'a>) -> Frame<'a> {
    fast_ipv4::parse(pkt).unwrap_or_else(|| parse_sliced(pkt))
}

/// [`parse`] through etherparse's slicing, which reads every framing this module supports.
pub(super) fn parse_sliced<'a>(pkt: &RawPacket<'a>) -> Frame<'a> {
    let data = pkt.data;
    let sliced = match pkt.link {
        LinkType::Ethernet => LaxSlicedPacket::from_ethernet(data).ok(),
        LinkType::LinuxSll => ether_type_at(data, SLL_LEN - 2)
            .map(|et| LaxSlicedPacket::from_ether_type(et, &data[SLL_LEN..])),
        LinkType::LinuxSll2 => ether_type_at(data, 0).and_then(|et| {
            (data.len() >= SLL2_LEN)
                .then(|| LaxSlicedPacket::from_ether_type(et, &data[SLL2_LEN..]))
        }),
        LinkType::Null | LinkType::Loop => null_ether_type(pkt.link, data)
            .map(|et| LaxSlicedPacket::from_ether_type(et, &data[NULL_LEN..])),
        LinkType::RawIp => LaxSlicedPacket::from_ip(data).ok(),
    };
    match sliced {
        Some(s) => from_sliced(s, data, pkt.wire_len),
        None => Frame::NonIp {
            protocol: "truncated-link",
            len: pkt.wire_len,
        },
    }
}

fn ether_type_at(data: &[u8], at: usize) -> Option<EtherType> {
    let b = data.get(at..at + 2)?;
    Some(EtherType(u16::from_be_bytes([b[0], b[1]])))
}

/// BSD address families for IPv4 and the several values BSDs use for IPv6.
fn null_ether_type(link: LinkType, data: &[u8]) -> Option<EtherType> {
    let b: [u8; 4] = data.get(..NULL_LEN)?.try_into().ok()?;
    let family = if link == LinkType::Loop {
        u32::from_be_bytes(b)
    } else {
        // The capturing host's byte order is unknown: small values read correctly one way only.
        let le = u32::from_le_bytes(b);
        if le <= 0xffff {
            le
        } else {
            u32::from_be_bytes(b)
        }
    };
    Some(match family {
        2 => EtherType::IPV4,
        24 | 28 | 30 => EtherType::IPV6,
        other => EtherType(0xff00 | (other as u16 & 0xff)),
    })
}

/// PPPoE session header (6) + PPP protocol (2), in front of IP in PPPoE session frames.
const PPPOE_LEN: usize = 8;
/// PPP protocol numbers of IPv4 and IPv6.
const PPP_IPV4: u16 = 0x0021;
const PPP_IPV6: u16 = 0x0057;

/// The IP packet inside a PPPoE session frame (ethertype 0x8864), which etherparse leaves opaque.
fn pppoe_ip<'a>(s: &LaxSlicedPacket<'a>) -> Option<LaxSlicedPacket<'a>> {
    let p = s.ether_payload()?;
    if p.ether_type != EtherType(0x8864) {
        return None;
    }
    let proto = p.payload.get(6..8)?;
    match u16::from_be_bytes([proto[0], proto[1]]) {
        PPP_IPV4 | PPP_IPV6 => LaxSlicedPacket::from_ip(&p.payload[PPPOE_LEN..]).ok(),
        _ => None,
    }
}

/// What the frame had on the wire from `ip` (a slice of `data`) on: the most an IP packet
/// starting there can be, whatever its header says.
fn wire_from(data: &[u8], ip: &[u8], wire_len: u32) -> u32 {
    let offset = (ip.as_ptr() as usize).saturating_sub(data.as_ptr() as usize);
    wire_len.saturating_sub(u32::try_from(offset).unwrap_or(u32::MAX))
}

/// `data` is the whole captured frame, `wire_len` its length on the wire. The IP length that
/// counts is the header's, capped at what the frame held from the IP header on: a header that
/// claims more than the frame carried never adds bytes.
fn from_sliced<'a>(s: LaxSlicedPacket<'a>, data: &'a [u8], wire_len: u32) -> Frame<'a> {
    if s.net.is_none()
        && let Some(inner) = pppoe_ip(&s)
    {
        return from_sliced(inner, data, wire_len);
    }
    let Some(net) = s.net else {
        return Frame::NonIp {
            protocol: ether_protocol_name(&s),
            len: wire_len,
        };
    };
    let (ip_len, src, dst, payload, fragment) = match &net {
        LaxNetSlice::Ipv4(v4) => {
            let h = v4.header();
            let fragment = v4.payload().fragmented.then(|| {
                (
                    u32::from(h.identification()),
                    h.fragments_offset().value() == 0,
                )
            });
            (
                u32::from(h.total_len()),
                IpAddr::V4(h.source_addr()),
                IpAddr::V4(h.destination_addr()),
                v4.payload(),
                fragment,
            )
        }
        LaxNetSlice::Ipv6(v6) => {
            let h = v6.header();
            let fragment = v6.payload().fragmented.then(|| ipv6_fragment(v6));
            (
                40 + u32::from(h.payload_length()),
                IpAddr::V6(h.source_addr()),
                IpAddr::V6(h.destination_addr()),
                v6.payload(),
                fragment.flatten(),
            )
        }
        LaxNetSlice::Arp(_) => {
            return Frame::NonIp {
                protocol: "arp",
                len: wire_len,
            };
        }
    };
    // A zero length field means the packet is longer than the field can say: a segmentation
    // offload packet over 64 KiB (BIG TCP, or a capture taken before the NIC split it). Then the
    // frame's own length past the link header is the packet's length, not the captured bytes,
    // which a snap length (or the probe's sample) cuts short.
    let on_wire = wire_from(data, ip_start(&net), wire_len);
    let length_unsaid = ip_len <= ip_header_len(&net) && !payload.payload.is_empty();
    let ip_len = if length_unsaid {
        on_wire
    } else {
        ip_len.min(on_wire)
    };
    let wire_payload = if payload.incomplete || length_unsaid {
        ip_len.saturating_sub(ip_header_len(&net))
    } else {
        payload.payload.len() as u32
    };
    let transport = if fragment.is_some_and(|(_, first)| !first) {
        Transport::Other
    } else {
        match s.transport {
            Some(TransportSlice::Tcp(t)) => Transport::Tcp(TcpSegment {
                src_port: t.source_port(),
                dst_port: t.destination_port(),
                seq: t.sequence_number(),
                syn: t.syn(),
                ack: t.ack(),
                fin: t.fin(),
                rst: t.rst(),
                payload: t.payload(),
                wire_payload_len: wire_payload.saturating_sub(u32::from(t.data_offset()) * 4),
            }),
            Some(TransportSlice::Udp(u)) => Transport::Udp {
                src_port: u.source_port(),
                dst_port: u.destination_port(),
                payload: u.payload(),
                wire_payload_len: wire_payload.saturating_sub(8),
            },
            _ => Transport::Other,
        }
    };
    Frame::Ip(IpPacket {
        ip_len,
        src,
        dst,
        proto: payload.ip_number.0,
        fragment,
        transport,
    })
}

/// The IP header's bytes, where the packet starts in the frame.
fn ip_start<'b>(net: &'b LaxNetSlice<'_>) -> &'b [u8] {
    match net {
        LaxNetSlice::Ipv4(v4) => v4.header().slice(),
        LaxNetSlice::Ipv6(v6) => v6.header().slice(),
        LaxNetSlice::Arp(a) => a.slice(),
    }
}

/// Length of the IP header and extension headers in front of the payload.
fn ip_header_len(net: &LaxNetSlice<'_>) -> u32 {
    match net {
        LaxNetSlice::Ipv4(v4) => u32::from(v4.header().ihl()) * 4,
        LaxNetSlice::Ipv6(v6) => 40 + v6.extensions().slice().len() as u32,
        LaxNetSlice::Arp(_) => 0,
    }
}

fn ipv6_fragment(v6: &etherparse::LaxIpv6Slice<'_>) -> Option<(u32, bool)> {
    v6.extensions()
        .clone()
        .into_iter()
        .find_map(|ext| match ext {
            etherparse::Ipv6ExtensionSlice::Fragment(f) => {
                Some((f.identification(), f.fragment_offset().value() == 0))
            }
            _ => None,
        })
}

fn ether_protocol_name(s: &LaxSlicedPacket<'_>) -> &'static str {
    let et = s.ether_payload().map(|p| p.ether_type);
    match et {
        Some(EtherType::ARP) => "arp",
        Some(EtherType::IPV4) | Some(EtherType::IPV6) => "malformed-ip",
        Some(EtherType(0x88cc)) => "lldp",
        Some(EtherType(0x888e)) => "eapol",
        Some(EtherType(t)) if t < 0x0600 => "llc",
        _ => "non-ip",
    }
}

/// Name of an IP protocol number for rows of protocols without a decoder.
pub fn ip_protocol_name(proto: u8) -> &'static str {
    match IpNumber(proto) {
        IpNumber::TCP => "tcp",
        IpNumber::UDP => "udp",
        IpNumber::ICMP => "icmp",
        IpNumber::IPV6_ICMP => "icmpv6",
        IpNumber::IGMP => "igmp",
        IpNumber::GRE => "gre",
        IpNumber::ENCAPSULATING_SECURITY_PAYLOAD => "esp",
        IpNumber::SCTP => "sctp",
        _ => "ip",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An IPv4/TCP packet, 127.0.0.1:40000 → 127.0.0.1:60000, 3 payload bytes (43 bytes).
    const IP_TCP: [u8; 43] = [
        0x45, 0, 0, 43, 0, 1, 0x40, 0, 64, 6, 0, 0, 127, 0, 0, 1, 127, 0, 0, 1, // IPv4
        0x9c, 0x40, 0xea, 0x60, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x18, 0xff, 0xff, 0, 0, 0,
        0, // TCP
        b'a', b'b', b'c',
    ];

    fn framed(header: &[u8]) -> Vec<u8> {
        [header, &IP_TCP].concat()
    }

    fn ip_len(link: LinkType, frame: &[u8]) -> Option<(u32, u16, usize)> {
        let pkt = RawPacket {
            ts_ns: 0,
            link,
            data: frame,
            wire_len: frame.len() as u32,
        };
        match parse(&pkt) {
            Frame::Ip(ip) => match ip.transport {
                Transport::Tcp(t) => Some((ip.ip_len, t.dst_port, t.payload.len())),
                _ => None,
            },
            Frame::NonIp { .. } => None,
        }
    }

    #[test]
    fn every_link_type_reaches_the_same_packet() {
        let eth = [[0u8; 12].as_slice(), &[0x08, 0x00]].concat();
        let vlan = [[0u8; 12].as_slice(), &[0x81, 0x00, 0x00, 0x64, 0x08, 0x00]].concat();
        let qinq = [
            [0u8; 12].as_slice(),
            &[0x88, 0xa8, 0, 1, 0x81, 0, 0, 2, 0x08, 0],
        ]
        .concat();
        let mut sll = [0u8; 16];
        sll[14..].copy_from_slice(&[0x08, 0x00]);
        let mut sll2 = [0u8; 20];
        sll2[..2].copy_from_slice(&[0x08, 0x00]);
        let null_le = 2u32.to_le_bytes();
        let loop_be = 2u32.to_be_bytes();
        let cases: [(LinkType, &[u8]); 8] = [
            (LinkType::Ethernet, &eth),
            (LinkType::Ethernet, &vlan),
            (LinkType::Ethernet, &qinq),
            (LinkType::LinuxSll, &sll),
            (LinkType::LinuxSll2, &sll2),
            (LinkType::Null, &null_le),
            (LinkType::Loop, &loop_be),
            (LinkType::RawIp, &[]),
        ];
        for (link, header) in cases {
            let f = framed(header);
            assert_eq!(
                ip_len(link, &f),
                Some((43, 60000, 3)),
                "{link:?} {header:?}"
            );
        }
    }

    #[test]
    fn truncated_frames_never_panic_and_keep_their_length() {
        let f = framed(&[[0u8; 12].as_slice(), &[0x08, 0x00]].concat());
        for cut in 0..f.len() {
            let pkt = RawPacket {
                ts_ns: 0,
                link: LinkType::Ethernet,
                data: &f[..cut],
                wire_len: f.len() as u32,
            };
            match parse(&pkt) {
                Frame::Ip(ip) => assert_eq!(ip.ip_len, 43, "cut {cut}"),
                Frame::NonIp { len, .. } => assert_eq!(len, f.len() as u32, "cut {cut}"),
            }
        }
    }

    #[test]
    fn a_zero_length_field_takes_the_frames_length_on_the_wire() {
        // A 100,000-byte segmentation offload packet, its length field 0, sampled to 2048 bytes.
        let mut ip = IP_TCP.to_vec();
        ip[2..4].copy_from_slice(&[0, 0]);
        ip.resize(2048, 0);
        for header in [&[][..], &[0u8; 16][..]] {
            let mut f = header.to_vec();
            if header.len() == 16 {
                f[14..].copy_from_slice(&[0x08, 0x00]);
            }
            f.extend_from_slice(&ip);
            let link = if header.is_empty() {
                LinkType::RawIp
            } else {
                LinkType::LinuxSll
            };
            let pkt = RawPacket {
                ts_ns: 0,
                link,
                data: &f,
                wire_len: 100_000 + header.len() as u32,
            };
            let Frame::Ip(ip) = parse(&pkt) else {
                panic!("an IP packet")
            };
            assert_eq!(ip.ip_len, 100_000, "{link:?}");
            let Transport::Tcp(t) = ip.transport else {
                panic!("a TCP segment")
            };
            assert_eq!(t.wire_payload_len, 100_000 - 40, "{link:?}");
        }
    }

    #[test]
    fn a_header_that_claims_more_than_the_frame_counts_the_frame() {
        let mut f = framed(&[[0u8; 12].as_slice(), &[0x08, 0x00]].concat());
        f[14 + 2..14 + 4].copy_from_slice(&65_535u16.to_be_bytes());
        f.resize(64, 0);
        // 64 bytes on the wire, 14 of them Ethernet: the IP packet is at most 50.
        assert_eq!(ip_len(LinkType::Ethernet, &f).map(|(l, ..)| l), Some(50));
        let pkt = RawPacket {
            ts_ns: 0,
            link: LinkType::Ethernet,
            data: &f[..40],
            wire_len: 1514,
        };
        // Cut by the snap length, not lying: the frame's 1500 bytes of IP still count.
        assert!(matches!(parse(&pkt), Frame::Ip(ip) if ip.ip_len == 1500));
    }

    #[test]
    fn pppoe_sessions_are_unwrapped() {
        let mut h = [0u8; 12].to_vec();
        h.extend_from_slice(&[0x88, 0x64, 0x11, 0x00, 0x00, 0x01, 0x00, 45, 0x00, 0x21]);
        let f = framed(&h);
        assert_eq!(ip_len(LinkType::Ethernet, &f), Some((43, 60000, 3)));
    }
}
