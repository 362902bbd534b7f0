//! The small community network measured live by wakuprof's eBPF probe, as root: one probe
//! session measures every node while the run goes (`--measure probe` over the scenario's
//! `pcap`). The report must say the probe measured it, with no sample dropped; every node's
//! relay bytes and messages by kind and shard, its duplicates and its mesh must equal its
//! truth; and no program of the probe may stay attached after the run.

/// The probe's programs and the check that none stays loaded, shared with wakuprof's live tests.
#[path = "../../profiler/tests/common/attached.rs"]
mod attached;
mod common;

#[test]
fn the_probe_measures_every_node_exactly() {
    if !common::root() {
        return;
    }
    // The command line's choice overrides the scenario's.
    let (report, wakusim) = common::run_with(&common::small("pcap"), &["--measure", "probe"]);
    attached::assert_nothing_attached("wakusim");
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
