//! The common frame, whole IPv4 carrying TCP or UDP, read field by field without etherparse's
//! slicing (which builds and copies a large result per frame). Anything else (VLAN tags, IPv6,
//! fragments, other protocols, an IP length below the header's) is left to [`super::link`],
//! and what this path returns is exactly what that one would.

use std::net::{IpAddr, Ipv4Addr};

use super::link::{Frame, IpPacket, TcpSegment, Transport};
use super::{LinkType, RawPacket};

/// The ethertype of IPv4, as it appears on the wire.
const IPV4: [u8; 2] = [0x08, 0x00];
const IPV4_MIN: usize = 20;
const TCP_MIN: usize = 20;
const UDP_LEN: usize = 8;

/// The frame read directly when it is the common case; `None` leaves it to the full parser.
pub fn parse<'a>(pkt: &RawPacket<'a>) -> Option<Frame<'a>> {
    let data = pkt.data;
    let at = match pkt.link {
        LinkType::Ethernet => (data.get(12..14)? == IPV4).then_some(14)?,
        LinkType::LinuxSll => (data.get(14..16)? == IPV4).then_some(16)?,
        LinkType::LinuxSll2 => (data.get(..2)? == IPV4 && data.len() >= 20).then_some(20)?,
        LinkType::RawIp => 0,
        LinkType::Null | LinkType::Loop => return None,
    };
    ipv4(data.get(at..)?, at, pkt.wire_len)
}

/// `ip` starts `at` bytes into a frame of `wire_len` bytes on the wire.
fn ipv4(ip: &[u8], at: usize, wire_len: u32) -> Option<Frame<'_>> {
    let h: &[u8; IPV4_MIN] = ip.get(..IPV4_MIN)?.try_into().ok()?;
    let header_len = usize::from(h[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([h[2], h[3]]));
    // More fragments, or a fragment offset: a fragment (the don't-fragment bit is 0x4000).
    let fragment = u16::from_be_bytes([h[6], h[7]]) & 0x3fff != 0;
    let proto = h[9];
    if h[0] >> 4 != 4
        || header_len < IPV4_MIN
        || ip.len() < header_len
        || total < header_len
        || fragment
        || (proto != 6 && proto != 17)
    {
        return None;
    }
    // Cut by the snap length: the payload is what was captured, its wire length from the header.
    let incomplete = ip.len() < total;
    let payload = &ip[header_len..if incomplete { ip.len() } else { total }];
    let on_wire = wire_len.saturating_sub(u32::try_from(at).unwrap_or(u32::MAX));
    let ip_len = (total as u32).min(on_wire);
    let wire_payload = if incomplete {
        ip_len.saturating_sub(header_len as u32)
    } else {
        payload.len() as u32
    };
    let transport = if proto == 6 {
        tcp(payload, wire_payload)
    } else {
        udp(payload, wire_payload)
    };
    Some(Frame::Ip(IpPacket {
        ip_len,
        src: IpAddr::V4(Ipv4Addr::new(h[12], h[13], h[14], h[15])),
        dst: IpAddr::V4(Ipv4Addr::new(h[16], h[17], h[18], h[19])),
        proto,
        fragment: None,
        transport,
    }))
}

fn port(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn tcp(seg: &[u8], wire_payload: u32) -> Transport<'_> {
    let Some(&offset) = seg.get(12) else {
        return Transport::Other;
    };
    let header_len = usize::from(offset >> 4) * 4;
    if seg.len() < TCP_MIN || header_len < TCP_MIN || seg.len() < header_len {
        return Transport::Other;
    }
    let flags = seg[13];
    Transport::Tcp(TcpSegment {
        src_port: port(seg, 0),
        dst_port: port(seg, 2),
        seq: u32::from_be_bytes([seg[4], seg[5], seg[6], seg[7]]),
        syn: flags & 0x02 != 0,
        ack: flags & 0x10 != 0,
        fin: flags & 0x01 != 0,
        rst: flags & 0x04 != 0,
        payload: &seg[header_len..],
        wire_payload_len: wire_payload.saturating_sub(header_len as u32),
    })
}

fn udp(dgram: &[u8], wire_payload: u32) -> Transport<'_> {
    if dgram.len() < UDP_LEN {
        return Transport::Other;
    }
    // The length field counts when the capture holds that much and it covers the header.
    let len = usize::from(port(dgram, 4));
    let dgram = if dgram.len() < len || len < UDP_LEN {
        dgram
    } else {
        &dgram[..len]
    };
    Transport::Udp {
        src_port: port(dgram, 0),
        dst_port: port(dgram, 2),
        payload: &dgram[UDP_LEN..],
        wire_payload_len: wire_payload.saturating_sub(UDP_LEN as u32),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::link;

    /// IPv4 (with `options` 4-byte words of options) carrying `proto`'s header and 12 payload bytes.
    fn ip_packet(proto: u8, options: usize) -> Vec<u8> {
        let transport: Vec<u8> = if proto == 17 {
            vec![0x9c, 0x40, 0xea, 0x60, 0, 20, 0, 0]
        } else {
            vec![
                0x9c, 0x40, 0xea, 0x60, 1, 2, 3, 4, 0, 0, 0, 0, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0,
            ]
        };
        let header_len = 20 + options * 4;
        let total = header_len + transport.len() + 12;
        let mut p = vec![
            0x40 | (header_len / 4) as u8,
            0,
            0,
            0,
            0,
            1,
            0x40,
            0,
            64,
            proto,
            0,
            0,
            10,
            0,
            0,
            1,
            192,
            168,
            7,
            9,
        ];
        p[2..4].copy_from_slice(&(total as u16).to_be_bytes());
        p.resize(header_len, 1);
        p.extend_from_slice(&transport);
        p.extend_from_slice(b"hello, world");
        p
    }

    /// The link headers in front of IPv4, the four this path reads and one it leaves.
    fn links() -> Vec<(LinkType, Vec<u8>)> {
        let mut sll = vec![0u8; 16];
        sll[14..].copy_from_slice(&IPV4);
        let mut sll2 = vec![0u8; 20];
        sll2[..2].copy_from_slice(&IPV4);
        vec![
            (LinkType::Ethernet, [[7u8; 12].as_slice(), &IPV4].concat()),
            (LinkType::LinuxSll, sll),
            (LinkType::LinuxSll2, sll2),
            (LinkType::RawIp, Vec::new()),
            (LinkType::Null, 2u32.to_le_bytes().to_vec()),
        ]
    }

    /// The frames of one IP packet under every link header, and every prefix of them, at their
    /// own length and at longer and shorter lengths on the wire.
    fn check(ip: &[u8], taken: &mut usize, total: &mut usize) {
        for (link, header) in links() {
            let frame = [header.as_slice(), ip].concat();
            for cut in 0..=frame.len() {
                for extra in [0, 1, 100, 70_000] {
                    for wire_len in [cut as u32 + extra, cut.saturating_sub(3) as u32, 0] {
                        let pkt = RawPacket {
                            ts_ns: 0,
                            link,
                            data: &frame[..cut],
                            wire_len,
                        };
                        *total += 1;
                        if let Some(fast) = parse(&pkt) {
                            *taken += 1;
                            assert_eq!(fast, link::parse_sliced(&pkt), "{link:?} {:?}", pkt.data);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn the_direct_path_reads_what_etherparse_reads() {
        let (mut taken, mut total) = (0, 0);
        for proto in [6, 17, 1, 51, 58] {
            for options in [0, 1, 10] {
                let base = ip_packet(proto, options);
                let t = 20 + options * 4;
                let mut variants = vec![base.clone()];
                for b0 in [0x45, 0x44, 0x4f, 0x65, 0x35, 0x40, 0x46] {
                    variants.push([&[b0][..], &base[1..]].concat());
                }
                for len in [0u16, 1, 19, 20, t as u16, t as u16 + 7, 1000, 65_535] {
                    let mut v = base.clone();
                    v[2..4].copy_from_slice(&len.to_be_bytes());
                    variants.push(v);
                }
                for frag in [
                    [0, 0],
                    [0x20, 0],
                    [0, 1],
                    [0x1f, 0xff],
                    [0x80, 0],
                    [0x60, 0],
                ] {
                    let mut v = base.clone();
                    v[6..8].copy_from_slice(&frag);
                    variants.push(v);
                }
                for word in [0x00, 0x10, 0x40, 0x60, 0xf0, 0x5f] {
                    let mut v = base.clone();
                    v[t + 12] = word;
                    variants.push(v);
                }
                for udp_len in [0u16, 7, 8, 9, 20, 21, 65_535] {
                    let mut v = base.clone();
                    v[t + 4..t + 6].copy_from_slice(&udp_len.to_be_bytes());
                    variants.push(v);
                }
                let mut flags = base.clone();
                flags[t + 13] = 0x17;
                variants.push(flags);
                for v in variants {
                    check(&v, &mut taken, &mut total);
                }
            }
        }
        assert!(taken > total / 20, "taken {taken} of {total}");
        // Whole TCP and UDP packets take the direct path under the four link headers it reads.
        for (link, header) in links().into_iter().filter(|(l, _)| *l != LinkType::Null) {
            for proto in [6, 17] {
                let frame = [header.as_slice(), &ip_packet(proto, 0)].concat();
                let pkt = RawPacket {
                    ts_ns: 0,
                    link,
                    data: &frame,
                    wire_len: frame.len() as u32,
                };
                assert!(parse(&pkt).is_some(), "{link:?} {proto}");
            }
        }
        let mut ipv6 = vec![0x60, 0, 0, 0, 0, 8, 17, 64];
        ipv6.extend_from_slice(&[0; 32]);
        ipv6.extend_from_slice(&[0, 1, 0, 2, 0, 8, 0, 0]);
        let pkt = RawPacket {
            ts_ns: 0,
            link: LinkType::RawIp,
            data: &ipv6,
            wire_len: 48,
        };
        assert_eq!(parse(&pkt), None);
    }
}
