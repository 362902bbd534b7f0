//! A small community network over Noise, as Waku nodes run: 5 nodes, a protected community on
//! its own shard and one on the shared shard 32. wakuprof cannot read Noise, so it infers each
//! frame's kind from sizes and timing; per node, its relay bytes (all kinds) and its `message`
//! bytes in each direction must be within 5 % of what the node wrote and read, measured live by
//! wakuprof's eBPF probe.

use serde_json::Value;

mod common;

const SCENARIO: &str = r#"
duration_secs = 8
seed = 5
transport = "noise"
measure = "probe"

[network]
nodes = 5
degree = 2

[[community]]
name = "guarded"
shard = 200
protected = true
members = [0, 1, 2]

[[community.message]]
content_topic = "/guarded/1/chat/proto"
size = 150
size_max = 3000
rate_per_min = 90

[[community]]
name = "open"
members = [2, 3, 4]

[[community.message]]
content_topic = "/open/1/chat/proto"
size = 400
rate_per_min = 60
"#;

/// Largest error of wakuprof's per-node bytes against the nodes' truth on Noise, percent.
const NOISE_TOLERANCE_PCT: f64 = 5.0;

#[test]
fn profiler_is_within_five_percent_of_every_node_on_noise() {
    if !common::root() {
        return;
    }
    let (report, wakusim) = common::run(SCENARIO);
    assert_eq!(report["transport"], "noise");
    assert_eq!(report["measured_by"]["source"], "ebpf");
    common::own_processes(&report, wakusim, &[]);
    let nodes = report["per_node"].as_array().expect("per_node");
    assert_eq!(nodes.len(), 5);
    for node in nodes {
        let name = &node["node"];
        let total = node["relay_total_error_pct"].as_f64().expect("total error");
        eprintln!("{name} relay: {total:.2} %");
        assert!(
            total <= NOISE_TOLERANCE_PCT,
            "{name}: relay bytes {total:.2} % off the truth"
        );
        let messages: Vec<&Value> = node["kinds_vs_truth"]
            .as_array()
            .expect("kinds")
            .iter()
            .filter(|c| c["kind"] == "message")
            .collect();
        assert_eq!(messages.len(), 2, "{name}: messages in and out");
        for c in messages {
            assert!(
                c["truth_bytes"].as_u64() > Some(10_000),
                "{name}: {} carried messages",
                c["direction"]
            );
            let error = c["error_pct"].as_f64().expect("error");
            eprintln!("{name} message {}: {error:.2} %", c["direction"]);
            assert!(
                error <= NOISE_TOLERANCE_PCT,
                "{name}: message bytes {} are {error:.2} % off the truth ({} vs {})",
                c["direction"],
                c["profiler_bytes"],
                c["truth_bytes"]
            );
        }
    }
}
