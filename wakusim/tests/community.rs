//! A small community network run end to end as root: 6 nodes in their own namespaces, a
//! protected community on its own shard, one on the shared shard 32, and an attacker publishing
//! unsigned messages onto the protected shard, over plaintext, measured from each node's
//! capture (the probe's run of it is `tests/probe.rs`). wakuprof's per-node relay bytes
//! by kind and shard must equal what each node wrote and read, so must its duplicates and the
//! mesh it followed from GRAFTs and PRUNEs, and the attacker's messages must stop at its direct
//! peers.

use std::collections::BTreeSet;

use serde_json::Value;

mod common;

fn names(v: &Value) -> BTreeSet<String> {
    v.as_array()
        .expect("a list")
        .iter()
        .map(|n| n.as_str().expect("a name").to_owned())
        .collect()
}

#[test]
fn profiler_matches_every_node_and_the_attack_stops_at_the_first_hop() {
    if !common::root() {
        return;
    }
    let (report, wakusim) = common::run(&common::small("pcap"));

    common::own_processes(&report, wakusim, &[]);

    let published = report["published"].as_array().expect("published");
    let valid_guarded = published
        .iter()
        .filter(|p| p["pubsub_topic"] == "/waku/2/rs/16/200" && p["attack"] == false)
        .count();
    assert!(valid_guarded >= 15, "{valid_guarded} signed messages");
    let mut duplicates = 0;
    for node in report["per_node"].as_array().expect("per_node") {
        let name = node["node"].as_str().expect("name");
        duplicates += common::health_exact(node);
        let topics: BTreeSet<String> = common::relay_exact(node)
            .iter()
            .map(|c| c["pubsub_topic"].as_str().expect("topic").to_owned())
            .collect();
        assert_eq!(
            topics,
            BTreeSet::from(["/waku/2/rs/16/200".into(), "/waku/2/rs/16/32".into()]),
            "{name} carries messages of both shards"
        );
        let guarded = &node["topics"]["/waku/2/rs/16/200"];
        let delivered = guarded["received"].as_u64().expect("received")
            + guarded["published"].as_u64().expect("published");
        let own_attack = if name == "node5" { 5 } else { 0 };
        assert_eq!(
            delivered,
            (valid_guarded + own_attack) as u64,
            "{name}: every signed message and nothing else is delivered"
        );
    }

    assert!(duplicates > 0, "gossipsub sends some messages twice");

    let attack = &report["attack"];
    assert_eq!(attack["published"], 5);
    let first_hop = names(&attack["first_hop"]);
    let sent_to = names(&attack["sent_to"]);
    assert!(!sent_to.is_empty(), "the attacker's peers got its messages");
    assert!(
        sent_to.is_subset(&first_hop),
        "sent past the first hop: {sent_to:?} vs {first_hop:?}"
    );
    let rejected_by: BTreeSet<String> = attack["rejected_by"]
        .as_array()
        .expect("rejected_by")
        .iter()
        .map(|r| {
            assert_eq!(r[1], "node5", "rejected messages come from the attacker");
            r[0].as_str().expect("name").to_owned()
        })
        .collect();
    assert_eq!(rejected_by, sent_to, "every node sent one rejected it");
    assert_eq!(attack["accepted_by"].as_array().map(Vec::len), Some(0));
    assert_eq!(attack["stopped_at_first_hop"], true);
}
