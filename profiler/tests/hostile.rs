//! Hostile input: every input a fuzz target crashed on (tests/fuzz_regressions/<target>/, the
//! classes found before fuzzing included) replayed through the same harness the targets use, and
//! captures whose timestamps are past 2038, pcapng files mixing link types.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use wakuprof::analyze::{Analyzer, Config};
use wakuprof::error::Error;
use wakuprof::source::pcap_file::CaptureSet;

#[path = "../../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod harness;

#[test]
fn every_fuzz_regression_input_runs_clean() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions");
    let mut replayed = 0;
    for dir in std::fs::read_dir(&root)
        .expect("tests/fuzz_regressions")
        .flatten()
    {
        let target = dir.file_name().to_string_lossy().into_owned();
        for input in std::fs::read_dir(dir.path()).expect("target dir").flatten() {
            let data = std::fs::read(input.path()).expect("input");
            assert!(harness::run(&target, &data), "no fuzz target {target}");
            replayed += 1;
        }
    }
    assert!(replayed >= 3, "{replayed} inputs under {}", root.display());
}

/// A copy of `sample` made by editcap with its times moved `secs` seconds later.
fn shifted(sample: &str, secs: u64, dir: &Path) -> PathBuf {
    let out = dir.join("shifted.pcap");
    let status = Command::new("editcap")
        .arg("-t")
        .arg(secs.to_string())
        .arg(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("../samples")
                .join(sample),
        )
        .arg(&out)
        .status()
        .expect("editcap (wireshark-common) runs");
    assert!(status.success(), "editcap -t {secs}");
    out
}

#[test]
fn classic_pcap_times_past_2038_stay_after_1970() {
    let dir = tempfile::tempdir().expect("temp dir");
    let sample = "libp2p-plaintext-yamux.pcap";
    let (_, base, _) = common::analyze(
        &[Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../samples")
            .join(sample)],
        Config::default(),
    );
    // 2^31 s is 2038-01-19; the sample is from 2026, 2.2e9 s later is 2096.
    let late = shifted(sample, 2_200_000_000, dir.path());
    let (rows, stats, errors) = common::analyze(&[late], Config::default());
    assert_eq!(errors, 0);
    let first = stats.first_ns.expect("packets");
    assert_eq!(
        first - base.first_ns.expect("packets"),
        2_200_000_000 * 1_000_000_000,
        "every time moves by the shift"
    );
    assert!(first > (1i64 << 31) * 1_000_000_000);
    assert!(
        rows.iter()
            .all(|r| r.window_start_us > (1i64 << 31) * 1_000_000)
    );
    assert_eq!(
        rows.iter().map(|r| r.counters.bytes).sum::<u64>(),
        base.ip_bytes_in + base.ip_bytes_out + base.non_ip_bytes,
        "the same bytes"
    );
}

/// Runs a wireshark-common tool, failing the test if it fails.
fn tool(name: &str, args: &[&Path]) {
    let status = Command::new(name)
        .args(args)
        .status()
        .unwrap_or_else(|e| panic!("{name} (wireshark-common) runs: {e}"));
    assert!(status.success(), "{name} {args:?}");
}

#[test]
fn a_pcapng_of_ethernet_and_raw_ip_interfaces_is_read_whole() {
    let dir = tempfile::tempdir().expect("temp dir");
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples");
    let (raw, eth, mixed) = (
        dir.path().join("raw.pcapng"),
        dir.path().join("eth.pcapng"),
        dir.path().join("mixed.pcapng"),
    );
    let pcapng = Path::new("-F");
    tool(
        "editcap",
        &[
            pcapng,
            Path::new("pcapng"),
            &samples.join("libp2p-noise-raw.pcap"),
            &raw,
        ],
    );
    tool(
        "editcap",
        &[
            pcapng,
            Path::new("pcapng"),
            &samples.join("libp2p-plaintext-vlan.pcap"),
            &eth,
        ],
    );
    tool(
        "mergecap",
        &[
            pcapng,
            Path::new("pcapng"),
            Path::new("-w"),
            &mixed,
            &raw,
            &eth,
        ],
    );
    let (rows, stats, errors) = common::analyze(std::slice::from_ref(&mixed), Config::default());
    assert_eq!(errors, 0, "read to the end");
    let (reference, frames) = common::tshark_wire_bytes(&mixed);
    assert_eq!(stats.packets, frames, "every packet, as tshark reads them");
    assert_eq!(
        stats.non_ip_frames, 0,
        "each packet read by its own interface's framing"
    );
    assert_eq!(
        rows.iter().map(|r| r.counters.bytes).sum::<u64>(),
        reference,
        "Σ bytes vs tshark"
    );
}

#[test]
fn a_pcapng_interface_of_an_unreadable_link_type_is_skipped_and_said() {
    let dir = tempfile::tempdir().expect("temp dir");
    let samples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../samples");
    let (eth, wifi, mixed) = (
        dir.path().join("eth.pcapng"),
        dir.path().join("wifi.pcapng"),
        dir.path().join("mixed.pcapng"),
    );
    let pcapng = Path::new("-F");
    let format = Path::new("pcapng");
    let vlan = samples.join("libp2p-plaintext-vlan.pcap");
    tool("editcap", &[pcapng, format, &vlan, &eth]);
    // The same packets labelled 802.11 (link type 105), which wakuprof does not read.
    let raw = samples.join("libp2p-noise-raw.pcap");
    let encap = Path::new("ieee-802-11");
    tool(
        "editcap",
        &[pcapng, format, Path::new("-T"), encap, &raw, &wifi],
    );
    tool(
        "mergecap",
        &[pcapng, format, Path::new("-w"), &mixed, &eth, &wifi],
    );

    let (alone, alone_stats, _) = common::analyze(std::slice::from_ref(&eth), Config::default());
    let mut set = CaptureSet::open(std::slice::from_ref(&mixed)).expect("opens");
    let mut a = Analyzer::new(Config::default());
    let mut bytes = 0;
    set.for_each(|p, _| {
        a.packet(p);
        bytes += a.take_rows().iter().map(|r| r.counters.bytes).sum::<u64>();
    });
    let stats = a.finish();
    bytes += a
        .drain(usize::MAX)
        .iter()
        .map(|r| r.counters.bytes)
        .sum::<u64>();
    let errors = set.take_errors();

    assert_eq!(
        stats.packets, alone_stats.packets,
        "the Ethernet interface's packets"
    );
    assert_eq!(
        bytes,
        alone.iter().map(|r| r.counters.bytes).sum::<u64>(),
        "the Ethernet interface's bytes, all of them"
    );
    let (_, wifi_frames) = common::tshark_wire_bytes(&wifi);
    let said: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert!(
        matches!(
            errors.as_slice(),
            [Error::SkippedInterface { linktype: 105, packets, .. }] if *packets == wifi_frames
        ),
        "one error naming the skipped interface's {wifi_frames} packets: {said:?}"
    );
}
