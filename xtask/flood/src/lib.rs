//! Synthetic packet floods written as classic pcap (raw IPv4): load inputs for wakuprof's memory
//! budget. They stress bounds, not parsing: the bytes decoders are checked against come from real
//! implementations (xtask/traffic); a flood only has to open connections the way a port scan or a
//! peer flood does, and say how many IP bytes it wrote, so that conservation can be checked.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

/// What a flood sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flood {
    /// One SYN from each of `n` sources to one port.
    Syn,
    /// `n` TCP connections that each open like libp2p (SYN, SYN-ACK, then the multistream header,
    /// a `/yamux/1.0.0` proposal and a yamux header) and go silent.
    Libp2p,
    /// One plaintext libp2p connection with yamux that opens `n` streams: each proposes the relay
    /// protocol, is accepted, then starts a publish entry that never completes.
    Streams,
}

/// What was written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Written {
    pub packets: u64,
    /// Σ IP total lengths: what wakuprof's rows must add up to.
    pub ip_bytes: u64,
}

/// Writes `n` units of `flood` (sources, connections or streams) to `path`.
pub fn write(path: &Path, flood: Flood, n: u32) -> io::Result<Written> {
    let mut pcap = Pcap::create(path)?;
    match flood {
        Flood::Syn => syn(&mut pcap, n)?,
        Flood::Libp2p => libp2p(&mut pcap, n)?,
        Flood::Streams => streams(&mut pcap, n)?,
    }
    pcap.finish()
}

/// The address every flood connects to (TEST-NET-1) and its port.
const TARGET: ([u8; 4], u16) = ([192, 0, 2, 1], 60000);
/// TCP flags.
const SYN: u8 = 0x02;
const ACK: u8 = 0x10;
const PSH: u8 = 0x08;
/// multistream-select messages: `uvarint(len) || text || '\n'`.
const MULTISTREAM: &[u8] = b"\x13/multistream/1.0.0\n";
const PLAINTEXT: &[u8] = b"\x11/plaintext/2.0.0\n";
const YAMUX: &[u8] = b"\x0d/yamux/1.0.0\n";
const RELAY: &[u8] = b"\x16/vac/waku/relay/2.0.0\n";
/// yamux frame types and flags.
const YAMUX_DATA: u8 = 0;
const YAMUX_WINDOW_UPDATE: u8 = 1;
const YAMUX_SYN: u16 = 1;
const YAMUX_ACK: u16 = 2;
/// Most TCP payload per segment.
const MSS: usize = 1400;

/// The `i`-th source address: 10.0.0.1 onwards.
fn source(i: u32) -> ([u8; 4], u16) {
    let a = (0x0a00_0001 + i).to_be_bytes();
    (a, 40000 + (i % 20000) as u16)
}

fn syn(pcap: &mut Pcap, n: u32) -> io::Result<()> {
    for i in 0..n {
        let c = Conn::new(source(i), TARGET);
        pcap.packet(&c.segment(true, SYN, &[]))?;
    }
    Ok(())
}

fn libp2p(pcap: &mut Pcap, n: u32) -> io::Result<()> {
    let mut hello = [MULTISTREAM, YAMUX].concat();
    hello.extend(yamux_header(YAMUX_WINDOW_UPDATE, YAMUX_SYN, 1, 256 * 1024));
    for i in 0..n {
        let mut c = Conn::new(source(i), TARGET);
        c.handshake(pcap, false)?;
        c.send(pcap, true, &hello)?;
    }
    Ok(())
}

fn streams(pcap: &mut Pcap, n: u32) -> io::Result<()> {
    let mut c = Conn::new(source(0), TARGET);
    c.handshake(pcap, true)?;
    let exchange = b"\x08exchange";
    for (first, then) in [(PLAINTEXT, &exchange[..]), (YAMUX, &[][..])] {
        for initiator in [true, false] {
            c.send(pcap, initiator, &[MULTISTREAM, first].concat())?;
        }
        for initiator in [true, false] {
            c.send(pcap, initiator, then)?;
        }
    }
    let proposal = [MULTISTREAM, RELAY].concat();
    // An RPC of 300 bytes whose first field, a publish entry of 280 bytes, stops after 20.
    let publish = [&b"\xac\x02\x12\x98\x02"[..], &[0x55; 20]].concat();
    let ids = || (0..n).map(|k| 2 * k + 1);
    let frames = |flags: u16, body: &[u8]| -> Vec<Vec<u8>> {
        ids()
            .map(|id| {
                [
                    &yamux_header(YAMUX_DATA, flags, id, body.len() as u32)[..],
                    body,
                ]
                .concat()
            })
            .collect()
    };
    c.send_frames(pcap, true, &frames(YAMUX_SYN, &proposal))?;
    c.send_frames(pcap, false, &frames(YAMUX_ACK, &proposal))?;
    c.send_frames(pcap, true, &frames(0, &publish))
}

/// A yamux header: version 0, type, flags, stream id, length.
fn yamux_header(kind: u8, flags: u16, id: u32, len: u32) -> [u8; 12] {
    let mut h = [0; 12];
    h[1] = kind;
    h[2..4].copy_from_slice(&flags.to_be_bytes());
    h[4..8].copy_from_slice(&id.to_be_bytes());
    h[8..12].copy_from_slice(&len.to_be_bytes());
    h
}

/// A TCP connection's endpoints and the next sequence number of each.
struct Conn {
    ends: [([u8; 4], u16); 2],
    seq: [u32; 2],
}

impl Conn {
    fn new(initiator: ([u8; 4], u16), responder: ([u8; 4], u16)) -> Conn {
        Conn {
            ends: [initiator, responder],
            seq: [1000, 5000],
        }
    }

    /// SYN, SYN-ACK and, with `ack`, the initiator's ACK.
    fn handshake(&mut self, pcap: &mut Pcap, ack: bool) -> io::Result<()> {
        pcap.packet(&self.segment(true, SYN, &[]))?;
        pcap.packet(&self.segment(false, SYN | ACK, &[]))?;
        self.seq = self.seq.map(|s| s.wrapping_add(1));
        if ack {
            pcap.packet(&self.segment(true, ACK, &[]))?;
        }
        Ok(())
    }

    /// Sends `bytes` from one end in segments of at most [`MSS`].
    fn send(&mut self, pcap: &mut Pcap, initiator: bool, bytes: &[u8]) -> io::Result<()> {
        for chunk in bytes.chunks(MSS) {
            pcap.packet(&self.segment(initiator, PSH | ACK, chunk))?;
            let i = usize::from(!initiator);
            self.seq[i] = self.seq[i].wrapping_add(chunk.len() as u32);
        }
        Ok(())
    }

    /// Sends whole frames from one end, as many per segment as fit.
    fn send_frames(
        &mut self,
        pcap: &mut Pcap,
        initiator: bool,
        frames: &[Vec<u8>],
    ) -> io::Result<()> {
        let mut segment = Vec::with_capacity(MSS);
        for f in frames {
            if segment.len() + f.len() > MSS {
                self.send(pcap, initiator, &segment)?;
                segment.clear();
            }
            segment.extend_from_slice(f);
        }
        self.send(pcap, initiator, &segment)
    }

    /// An IPv4 packet carrying a TCP segment from one end, with valid checksums.
    fn segment(&self, initiator: bool, flags: u8, payload: &[u8]) -> Vec<u8> {
        let (from, to) = if initiator { (0, 1) } else { (1, 0) };
        let ((src, sport), (dst, dport)) = (self.ends[from], self.ends[to]);
        let total = 40 + payload.len();
        let mut p = Vec::with_capacity(total);
        p.extend([0x45, 0]);
        p.extend((total as u16).to_be_bytes());
        p.extend([0, 0, 0x40, 0, 64, 6, 0, 0]);
        p.extend(src);
        p.extend(dst);
        let ip_sum = !ones_sum(&p, 0);
        p[10..12].copy_from_slice(&ip_sum.to_be_bytes());
        p.extend(sport.to_be_bytes());
        p.extend(dport.to_be_bytes());
        p.extend(self.seq[from].to_be_bytes());
        let ack = if flags & ACK != 0 { self.seq[to] } else { 0 };
        p.extend(ack.to_be_bytes());
        p.extend([0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
        p.extend(payload);
        let pseudo = ones_sum(&p[12..20], 6 + (total as u16 - 20));
        let tcp_sum = !ones_sum(&p[20..], pseudo);
        p[36..38].copy_from_slice(&tcp_sum.to_be_bytes());
        p
    }
}

/// Ones' complement sum of `bytes` as 16-bit words, starting from `start`.
fn ones_sum(bytes: &[u8], start: u16) -> u16 {
    bytes
        .chunks(2)
        .map(|w| u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]))
        .fold(start, |a, b| {
            let (s, carry) = a.overflowing_add(b);
            s + u16::from(carry)
        })
}

/// A classic pcap file of raw IPv4 packets, 1 µs apart.
struct Pcap {
    out: BufWriter<File>,
    ts_us: u64,
    written: Written,
}

/// Capture start: 2023-11-14T22:13:20Z.
const START_SECS: u64 = 1_700_000_000;
/// LINKTYPE_RAW: each record is an IP packet.
const LINKTYPE_RAW: u32 = 101;

impl Pcap {
    fn create(path: &Path) -> io::Result<Pcap> {
        let mut out = BufWriter::with_capacity(1 << 20, File::create(path)?);
        for field in [0xa1b2_c3d4u32, 0x0004_0002, 0, 0, 65535, LINKTYPE_RAW] {
            out.write_all(&field.to_le_bytes())?;
        }
        Ok(Pcap {
            out,
            ts_us: START_SECS * 1_000_000,
            written: Written::default(),
        })
    }

    fn packet(&mut self, ip: &[u8]) -> io::Result<()> {
        let len = ip.len() as u32;
        let secs = (self.ts_us / 1_000_000) as u32;
        let micros = (self.ts_us % 1_000_000) as u32;
        for field in [secs, micros, len, len] {
            self.out.write_all(&field.to_le_bytes())?;
        }
        self.out.write_all(ip)?;
        self.ts_us += 1;
        self.written.packets += 1;
        self.written.ip_bytes += u64::from(len);
        Ok(())
    }

    fn finish(mut self) -> io::Result<Written> {
        self.out.flush()?;
        Ok(self.written)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_verify() {
        let c = Conn::new(source(7), TARGET);
        let p = c.segment(true, PSH | ACK, b"odd");
        assert_eq!(ones_sum(&p[..20], 0), 0xffff);
        let pseudo = ones_sum(&p[12..20], 6 + (p.len() as u16 - 20));
        assert_eq!(ones_sum(&p[20..], pseudo), 0xffff);
    }

    #[test]
    fn counts_what_it_writes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("syn.pcap");
        let w = write(&path, Flood::Syn, 10).unwrap();
        assert_eq!(
            w,
            Written {
                packets: 10,
                ip_bytes: 400
            }
        );
        let len = std::fs::metadata(&path).unwrap().len();
        assert_eq!(len, 24 + 10 * (16 + 40));
    }
}
