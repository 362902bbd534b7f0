//! Rule 1: Σ bytes over all rows equals Σ IP total lengths (frame lengths for non-IP frames), per
//! direction, on every bundled sample (the JavaScript stacks' included) and on the shared mixed
//! capture; tshark is the reference.

mod common;

use std::path::Path;

use wakuprof::account::record::Direction;
use wakuprof::analyze::Config;

fn check(path: &Path, cfg: Config) {
    let (rows, stats, errors) = common::analyze(&[path.to_path_buf()], cfg);
    assert_eq!(errors, 0, "{}: read errors", path.display());
    let (inb, outb) = (
        common::bytes(&rows, Direction::In),
        common::bytes(&rows, Direction::Out),
    );
    assert_eq!(inb, stats.ip_bytes_in, "{}: inbound", path.display());
    assert_eq!(
        outb,
        stats.ip_bytes_out + stats.non_ip_bytes,
        "{}: outbound",
        path.display()
    );
    let packets: u64 = rows.iter().map(|r| r.counters.packets).sum();
    assert_eq!(
        packets,
        stats.packets,
        "{}: every packet counted once",
        path.display()
    );
    let (reference, frames) = common::tshark_wire_bytes(path);
    assert_eq!(frames, stats.packets, "{}: frames", path.display());
    assert_eq!(
        inb + outb,
        reference,
        "{}: Σ bytes vs tshark",
        path.display()
    );
}

#[test]
fn conservation_on_the_mixed_capture() {
    check(&common::ndpi_mix(), Config::default());
}

#[test]
fn conservation_on_the_mixed_capture_with_small_windows_and_few_flows() {
    let cfg = Config {
        window_secs: 1,
        max_flows: 1000,
        reassembly_budget: 64 * 1024,
        ..Config::default()
    };
    check(&common::ndpi_mix(), cfg);
}

#[test]
fn conservation_on_every_sample() {
    let samples = common::samples();
    assert!(!samples.is_empty(), "samples/ holds captures");
    for s in samples {
        check(&s, Config::default());
    }
}

#[test]
fn conservation_on_every_js_sample() {
    let samples = common::js_samples();
    assert!(
        samples.len() >= 4,
        "samples/js/ holds captures: {samples:?}"
    );
    for s in samples {
        check(&s, Config::default());
    }
}
