//! Hostile input: frames of random bytes, and real frames with random bytes written over them,
//! go through the whole pipeline without a panic, and every byte is still accounted for.

mod common;

use wakuprof::account::record::Direction;
use wakuprof::analyze::{Analyzer, Config};
use wakuprof::source::pcap_file::CaptureSet;
use wakuprof::source::{LinkType, RawPacket};

/// xorshift64*: a small deterministic generator, so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

#[test]
fn corrupted_frames_never_panic_and_stay_conserved() {
    let mut frames: Vec<(i64, Vec<u8>, u32)> = Vec::new();
    let sample = common::samples()
        .into_iter()
        .find(|p| p.to_string_lossy().ends_with("libp2p-plaintext-yamux.pcap"))
        .expect("the plaintext sample");
    let mut set = CaptureSet::open(&[sample]).expect("sample opens");
    set.for_each(|p, _| frames.push((p.ts_ns, p.data.to_vec(), p.wire_len)));
    let mut rng = Rng(0x5eed);
    let links = [
        LinkType::Ethernet,
        LinkType::LinuxSll,
        LinkType::LinuxSll2,
        LinkType::Null,
        LinkType::RawIp,
    ];
    for round in 0..20 {
        let mut a = Analyzer::new(Config::default());
        for (ts, data, wire) in &frames {
            let mut d = data.clone();
            let hits = rng.next() % 4;
            for _ in 0..hits {
                let i = (rng.next() as usize) % d.len().max(1);
                if let Some(b) = d.get_mut(i) {
                    *b = rng.next() as u8;
                }
            }
            let cut = if rng.next().is_multiple_of(8) {
                (rng.next() as usize) % (d.len() + 1)
            } else {
                d.len()
            };
            let link = if round % 2 == 0 {
                LinkType::Ethernet
            } else {
                links[(rng.next() % 5) as usize]
            };
            a.packet(&RawPacket {
                ts_ns: *ts,
                link,
                data: &d[..cut],
                wire_len: *wire,
            });
            let noise: Vec<u8> = (0..rng.next() % 200).map(|_| rng.next() as u8).collect();
            a.packet(&RawPacket {
                ts_ns: *ts,
                link,
                data: &noise,
                wire_len: noise.len() as u32,
            });
        }
        let stats = a.finish();
        let rows = a.drain(usize::MAX);
        assert_eq!(
            common::bytes(&rows, Direction::In),
            stats.ip_bytes_in,
            "round {round}"
        );
        assert_eq!(
            common::bytes(&rows, Direction::Out),
            stats.ip_bytes_out + stats.non_ip_bytes,
            "round {round}"
        );
        let packets: u64 = rows.iter().map(|r| r.counters.packets).sum();
        assert_eq!(packets, stats.packets, "round {round}");
    }
}
