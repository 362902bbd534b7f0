//! The harnesses behind the fuzz targets: each turns fuzzer bytes into the input of one part of
//! the pipeline, runs it, and checks what must hold for any input (no panic, and no part counts
//! more bytes than it was given). The byte layouts are simple so that `cargo xtask fuzz` can seed
//! them from the samples' streams, datagrams and frames.

// An explicit path, so that the regression tests can include this file as a module.
#[path = "nested.rs"]
pub mod nested;

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

use arbitrary::{Arbitrary, Unstructured};
use wakuprof::analyze::{Analyzer, Config};
use wakuprof::decode::bittorrent::{BittorrentProbe, krpc::Dht, udp_tracker::UdpTracker, utp::Utp};
use wakuprof::decode::discovery::discv5::Discv5Decoder;
use wakuprof::decode::discovery::dns::{DnsDatagrams, DnsProbe};
use wakuprof::decode::libp2p::Libp2pProbe;
use wakuprof::decode::services::http::HttpProbe;
use wakuprof::decode::services::tls_sni::TlsProbe;
use wakuprof::decode::udp::{Datagram, DatagramDecoder};
use wakuprof::decode::{Conn, PROBE_WINDOW, Probe, Side, StreamDecoder, StreamProbe, TestCtx};
use wakuprof::source::link::{self, Frame};
use wakuprof::source::pcap_file::CaptureSet;
use wakuprof::source::{LinkType, RawPacket};

/// Runs fuzz target `target` on one input; `false` if there is no such target. The targets in
/// fuzz_targets/ and the regression tests replaying their crash inputs both come here.
pub fn run(target: &str, data: &[u8]) -> bool {
    match target {
        "stream_libp2p" => stream(&Libp2pProbe, data),
        "stream_dns" => stream(&DnsProbe, data),
        "stream_http" => stream(&HttpProbe, data),
        "stream_tls" => stream(&TlsProbe, data),
        "stream_bittorrent" => stream(&BittorrentProbe, data),
        "datagram_dns" => datagrams(&DnsDatagrams, data),
        "datagram_udp_tracker" => datagrams(&UdpTracker, data),
        "datagram_dht" => datagrams(&Dht, data),
        "datagram_discv5" => datagrams(&Discv5Decoder, data),
        "datagram_utp" => datagrams(&Utp, data),
        "link" => frame(data),
        "capture" => capture(data),
        "pipeline" => pipeline(data),
        "nested" => {
            if let Ok(session) = nested::Session::arbitrary_take_rest(Unstructured::new(data)) {
                session.run();
            }
        }
        _ => return false,
    }
    true
}

/// Bytes the spans emitted so far cover, per side.
fn covered(o: &TestCtx) -> [u64; 2] {
    let mut c = [0u64; 2];
    for s in &o.spans {
        c[s.side.index()] += s.len;
    }
    c
}

/// A big-endian u16 at the front of `input`, consumed.
fn take_u16(input: &mut &[u8]) -> Option<u16> {
    let (b, rest) = input.split_first_chunk::<2>()?;
    *input = rest;
    Some(u16::from_be_bytes(*b))
}

/// One piece of a TCP connection: bytes of a side, or a gap (bytes never seen).
#[derive(Clone, Copy)]
pub enum Piece<'a> {
    Data(Side, &'a [u8]),
    Gap(Side, u64),
}

/// A TCP connection as a stream target reads it: `flags` (bit 0: the responder is on
/// loopback), the responder's port (u16 BE), then pieces `tag len(u16 BE) bytes`, tag bit 0 =
/// responder, bit 1 = a gap of `len` bytes (no bytes follow).
pub fn stream_input(mut input: &[u8]) -> Option<(Conn, Vec<Piece<'_>>)> {
    let (&flags, rest) = input.split_first()?;
    input = rest;
    let port = take_u16(&mut input)?;
    let responder = if flags & 1 != 0 {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))
    };
    let conn = Conn {
        initiator: (IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2)), 40000),
        responder: (responder, port),
    };
    let mut pieces = Vec::new();
    while let Some((&tag, rest)) = input.split_first() {
        input = rest;
        let side = if tag & 1 == 0 {
            Side::Initiator
        } else {
            Side::Responder
        };
        let Some(len) = take_u16(&mut input) else {
            break;
        };
        if tag & 2 != 0 {
            pieces.push(Piece::Gap(side, u64::from(len)));
            continue;
        }
        let len = usize::from(len).min(input.len());
        let (bytes, rest) = input.split_at(len);
        input = rest;
        pieces.push(Piece::Data(side, bytes));
    }
    Some((conn, pieces))
}

/// Offers a connection to `probe` as the classifier does (first bytes held until it decides);
/// once it claims the connection, every piece goes to its decoder. The decoder's spans never
/// cover more bytes of a side than that side sent.
pub fn stream(probe: &dyn StreamProbe, input: &[u8]) {
    let Some((conn, pieces)) = stream_input(input) else {
        return;
    };
    run_stream(probe, &conn, &pieces);
}

/// [`stream`] on pieces already built.
pub fn run_stream(probe: &dyn StreamProbe, conn: &Conn, pieces: &[Piece<'_>]) {
    let mut o = TestCtx::default();
    let mut held: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
    for (n, piece) in pieces.iter().enumerate() {
        let Piece::Data(side, bytes) = piece else {
            return;
        };
        let h = &mut held[side.index()];
        h.extend_from_slice(bytes);
        match probe.probe(*side, h, conn, &mut o.ctx()) {
            Probe::Yes(mut d) => {
                let mut replay: Vec<Piece<'_>> = Side::BOTH
                    .iter()
                    .map(|&s| Piece::Data(s, &held[s.index()]))
                    .collect();
                replay.extend(pieces[n + 1..].iter().map(Piece::clone));
                feed(d.as_mut(), &replay, &mut o);
                return;
            }
            Probe::NeedMore if h.len() < PROBE_WINDOW => {}
            Probe::NeedMore | Probe::No => return,
        }
    }
}

/// Hands every piece to `d`; after each, the spans cover no more bytes of a side than it sent.
fn feed(d: &mut dyn StreamDecoder, pieces: &[Piece<'_>], o: &mut TestCtx) {
    let mut given = [0u64; 2];
    for piece in pieces {
        let mut ctx = o.ctx();
        match *piece {
            Piece::Data(side, bytes) => {
                given[side.index()] += bytes.len() as u64;
                d.data(side, bytes, &mut ctx);
            }
            Piece::Gap(side, len) => {
                given[side.index()] += len;
                d.gap(side, len, &mut ctx);
            }
        }
        for s in Side::BOTH {
            let _ = d.settled(s);
        }
        let _ = (d.connection_label(), d.connection_known());
        let covered = covered(o);
        for s in Side::BOTH {
            assert!(
                covered[s.index()] <= given[s.index()],
                "{s:?}: spans cover {} bytes of {} given",
                covered[s.index()],
                given[s.index()]
            );
        }
    }
}

/// Datagrams of one flow as a datagram target reads them: records `tag port_a(u16 BE)
/// port_b(u16 BE) len(u16 BE) payload`; tag bit 0 = sent from `port_b` to `port_a`, bit 1 = the
/// capture cut the payload (the UDP header states 100 bytes more). Each goes to `decoder`, with
/// state kept across them; the spans of a datagram never cover more than its payload.
pub fn datagrams(decoder: &dyn DatagramDecoder, mut input: &[u8]) {
    let mut o = TestCtx::default();
    let a = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    let b = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));
    while let Some((&tag, rest)) = input.split_first() {
        input = rest;
        let (Some(pa), Some(pb), Some(len)) = (
            take_u16(&mut input),
            take_u16(&mut input),
            take_u16(&mut input),
        ) else {
            return;
        };
        let len = usize::from(len).min(input.len());
        let (payload, rest) = input.split_at(len);
        input = rest;
        let (src, dst) = if tag & 1 == 0 {
            ((a, pa), (b, pb))
        } else {
            ((b, pb), (a, pa))
        };
        let cut = if tag & 2 != 0 { 100 } else { 0 };
        let d = Datagram {
            src,
            dst,
            payload,
            wire_payload: payload.len() as u32 + cut,
        };
        o.spans.clear();
        let _ = decoder.datagram(&d, &mut o.ctx());
        let covered: u64 = o.spans.iter().map(|s| s.len).sum();
        assert!(
            covered <= u64::from(d.wire_payload),
            "spans cover {covered} bytes of a {}-byte payload",
            d.wire_payload
        );
    }
}

/// The link types a frame can be read as, chosen by the first byte of a link input.
const LINKS: [LinkType; 6] = [
    LinkType::Ethernet,
    LinkType::LinuxSll,
    LinkType::LinuxSll2,
    LinkType::Null,
    LinkType::Loop,
    LinkType::RawIp,
];

/// The link type a selector byte names.
pub fn link_of(selector: u8) -> LinkType {
    LINKS[usize::from(selector) % LINKS.len()]
}

/// One frame: `link selector (u8) wire extra (u8) bytes`; the frame's wire length is its
/// captured length plus `extra`. Whatever the headers claim, the IP length read is at most the
/// wire length.
pub fn frame(input: &[u8]) {
    let [sel, extra, data @ ..] = input else {
        return;
    };
    let wire_len = data.len() as u32 + u32::from(*extra);
    let pkt = RawPacket {
        ts_ns: 0,
        link: link_of(*sel),
        data,
        wire_len,
    };
    match link::parse(&pkt) {
        Frame::Ip(ip) => assert!(
            ip.ip_len <= wire_len,
            "IP length {} > {wire_len}",
            ip.ip_len
        ),
        Frame::NonIp { len, .. } => assert_eq!(len, wire_len),
    }
}

/// A capture file holding `bytes`, private to this process (the fuzzer runs one input at a time).
fn capture_file(bytes: &[u8]) -> Option<PathBuf> {
    let path = std::env::temp_dir().join(format!("wakuprof-fuzz-{}.pcap", std::process::id()));
    std::fs::write(&path, bytes).ok()?;
    Some(path)
}

/// Reads capture-file bytes through libpcap as `analyze` does; errors are fine, panics are not.
pub fn capture(bytes: &[u8]) {
    let Some(path) = capture_file(bytes) else {
        return;
    };
    if let Ok(mut set) = CaptureSet::open(std::slice::from_ref(&path)) {
        let mut packets = 0u64;
        set.for_each(|p, _| {
            packets += 1;
            assert!(p.data.len() <= 1 << 20);
        });
        let _ = set.take_errors();
    }
    let _ = std::fs::remove_file(&path);
}

/// The whole pipeline from capture-file bytes: every packet read is counted in exactly one row,
/// Σ row bytes equals the IP and non-IP totals (conservation), and no row carries more bytes
/// than the frames had on the wire.
pub fn pipeline(bytes: &[u8]) {
    let Some(path) = capture_file(bytes) else {
        return;
    };
    let Ok(mut set) = CaptureSet::open(std::slice::from_ref(&path)) else {
        let _ = std::fs::remove_file(&path);
        return;
    };
    let mut a = Analyzer::new(Config {
        window_secs: 1,
        max_flows: 64,
        reassembly_budget: 1 << 16,
        messages: true,
        frames: true,
        ..Config::default()
    });
    let mut wire = 0u64;
    set.for_each(|p, _| {
        wire += u64::from(p.wire_len);
        a.packet(p);
    });
    let _ = std::fs::remove_file(&path);
    let stats = a.finish();
    let mut rows = a.take_rows();
    loop {
        let more = a.drain(1 << 12);
        if more.is_empty() {
            break;
        }
        rows.extend(more);
    }
    let bytes: u64 = rows.iter().map(|r| r.counters.bytes).sum();
    let packets: u64 = rows.iter().map(|r| r.counters.packets).sum();
    assert_eq!(packets, stats.packets, "every packet counted once");
    assert_eq!(
        bytes,
        stats.ip_bytes_in + stats.ip_bytes_out + stats.non_ip_bytes,
        "conservation"
    );
    assert!(
        bytes <= wire,
        "rows carry {bytes} bytes of {wire} on the wire"
    );
}
