//! The small community network measured live by wakuprof's eBPF probe, as root: one probe
//! session measures every node while the run goes (`--measure probe` over the scenario's
//! `pcap`). The report must say the probe measured it, with no sample dropped; every node's
//! relay bytes and messages by kind and shard, its duplicates and its mesh must equal its
//! truth; and no program of the probe may stay attached after the run.

use std::process::Command;

mod common;

/// The probe's programs, as `bpftool prog list` names them.
const PROGRAMS: [&str; 6] = [
    "count_ingress",
    "count_egress",
    "owner_at_create",
    "owner_at_send",
    "owner_at_recv",
    "socket_state",
];

/// Asserts that none of the probe's programs is loaded.
fn nothing_attached() {
    let out = Command::new("bpftool")
        .args(["prog", "list"])
        .output()
        .expect("bpftool runs");
    let list = String::from_utf8_lossy(&out.stdout);
    for p in PROGRAMS {
        assert!(
            !list.contains(&format!("name {p} ")),
            "program {p} is still loaded after wakusim exited:\n{list}"
        );
    }
}

#[test]
fn the_probe_measures_every_node_exactly() {
    if !common::root() {
        return;
    }
    // The command line's choice overrides the scenario's.
    let (report, wakusim) = common::run_with(&common::small("pcap"), &["--measure", "probe"]);
    nothing_attached();
    common::own_processes(&report, wakusim, &[]);
    assert_eq!(
        report["measured_by"],
        serde_json::json!({"source": "ebpf", "reason": "measure = probe"})
    );
    assert_eq!(report["probe"]["ring_drops"], 0, "{}", report["probe"]);
    for node in report["per_node"].as_array().expect("per_node") {
        common::relay_exact(node);
        common::health_exact(node);
    }
}
