//! Churn end to end as root: 5 nodes over plaintext, one joining late, one restarting and one
//! leaving during the publishing. wakuprof's per-node relay bytes, duplicates and mesh must
//! still equal each node's truth (a restarted node's processes summed, a node that left has no
//! mesh at the end), and the nodes that were away must have missed messages the others got.

use serde_json::Value;

mod common;

const SCENARIO: &str = r#"
duration_secs = 4
seed = 21
transport = "plaintext"

[network]
nodes = 5
degree = 4

[[community]]
name = "open"
members = [0, 1, 2, 3, 4]

[[community.message]]
content_topic = "/open/1/chat/proto"
size = 300
rate_per_min = 150

[[churn]]
node = 3
at_secs = 1.5
action = "join"

[[churn]]
node = 4
at_secs = 1.0
action = "restart"
down_secs = 1.5

[[churn]]
node = 2
at_secs = 3.0
action = "leave"
"#;

/// Messages node `i` published or was delivered on shard 32, from gossipsub's events.
fn seen(report: &Value, i: usize) -> u64 {
    let t = &report["per_node"][i]["topics"]["/waku/2/rs/16/32"];
    t["published"].as_u64().expect("published") + t["received"].as_u64().expect("received")
}

#[test]
fn joins_restarts_and_leaves_are_measured_exactly() {
    if !common::root() {
        return;
    }
    let (report, wakusim) = common::run(SCENARIO);
    assert_eq!(report["churn"].as_array().map(Vec::len), Some(3));
    common::own_processes(&report, wakusim, &[4]);
    for node in report["per_node"].as_array().expect("per_node") {
        assert!(
            !common::relay_exact(node).is_empty(),
            "{} carried messages",
            node["node"]
        );
        common::health_exact(node);
    }
    let gone = &report["per_node"][2]["shards"][0];
    assert_eq!(gone["truth_mesh_peers"], 0, "node2 left: {gone}");
    let everything = seen(&report, 0);
    assert!(everything > 0);
    assert!(
        seen(&report, 1) == everything,
        "node1 stayed and got every message"
    );
    for away in [3, 4] {
        assert!(
            seen(&report, away) < everything,
            "node{away} was away and missed messages: {} of {everything}",
            seen(&report, away)
        );
    }
}
