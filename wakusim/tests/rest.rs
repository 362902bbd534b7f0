//! `wakusim serve` end to end as root: communities created and published into over HTTP, a
//! small run of a stored protected community started, watched and reported, a sweep stopped
//! during its first value, and the errors a client gets for bad requests. The run's report must hold wakuprof's per-node relay bytes equal to
//! each node's truth (plaintext), and no run may leave a namespace behind.

use std::{thread, time::Duration};

use serde_json::{Value, json};

mod common;

const SCENARIO: &str = r#"
duration_secs = 3
seed = 5
transport = "plaintext"

[network]
nodes = 4
degree = 2

[[community]]
name = "guarded"
stored = true
members = [0, 1, 2]

[[community.message]]
content_topic = "/guarded/1/chat/proto"
size = 300
rate_per_min = 120

[[community]]
name = "open"
members = [1, 3]

[[community.message]]
content_topic = "/open/1/chat/proto"
size = 100
rate_per_min = 60
"#;

#[test]
fn communities_runs_and_errors_over_http() {
    if !common::root() {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let server = common::Server::start(dir.path());
    let wakusim = server.child.id();
    let tag = format!("wsim{}-", wakusim % 100_000);

    let (status, doc) = server.call("GET", "/openapi.json", "");
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")));
    for path in [
        "/communities",
        "/communities/{name}",
        "/communities/{name}/messages",
        "/runs",
        "/runs/{id}",
        "/runs/{id}/stop",
        "/runs/{id}/report",
        "/sweeps",
    ] {
        assert!(doc["paths"][path].is_object(), "{path} is documented");
    }

    let new = json!({"name": "guarded", "shard": 200, "protected": true}).to_string();
    let (status, guarded) = server.call("POST", "/communities", &new);
    assert_eq!(status, 201, "{guarded}");
    assert_eq!(guarded["pubsub_topic"], "/waku/2/rs/16/200");
    assert_eq!(guarded["public_key"].as_str().map(str::len), Some(66));
    assert!(
        guarded.get("private_key").is_none(),
        "no private key unless asked"
    );
    let (status, taken) = server.call("POST", "/communities", &new);
    assert_eq!(status, 409, "{taken}");
    let (status, listed) = server.call("GET", "/communities", "");
    assert_eq!((status, listed[0]["name"].clone()), (200, json!("guarded")));
    let (status, msg) = server.call(
        "POST",
        "/communities/guarded/messages",
        &json!({"payload": "hello"}).to_string(),
    );
    assert_eq!(status, 201, "{msg}");
    assert_eq!(msg["signed"], true);
    assert_eq!(msg["relay_json"]["payload"], "aGVsbG8=");

    let (status, bad) = server.call(
        "POST",
        "/communities",
        &json!({"name": "wide", "shard": 5000}).to_string(),
    );
    assert_eq!(
        (status, bad["field"].clone()),
        (400, json!("shard")),
        "{bad}"
    );
    let (status, bad) = server.call(
        "POST",
        "/communities",
        &json!({"name": "x", "colour": 1}).to_string(),
    );
    assert_eq!(
        (status, bad["field"].clone()),
        (400, json!("colour")),
        "{bad}"
    );
    let (status, bad) = server.call("POST", "/communities", r#"{"name": "x", "shard": "a"}"#);
    assert_eq!(
        (status, bad["field"].clone()),
        (400, json!("shard")),
        "{bad}"
    );
    let (status, missing) = server.call("GET", "/communities/nobody", "");
    assert_eq!(status, 404, "{missing}");
    let (status, missing) = server.call("POST", "/communities/nobody/messages", "{\"size\": 3}");
    assert_eq!(status, 404, "{missing}");
    let (status, wrong) = server.call("DELETE", "/communities", "");
    assert_eq!(status, 405, "{wrong}");
    let (status, bad) = server.call("POST", "/runs", &SCENARIO.replace("nodes = 4", "nodes = 1"));
    assert_eq!(
        (status, bad["field"].clone()),
        (400, json!("network.nodes")),
        "{bad}"
    );

    let (status, bad) = server.call(
        "POST",
        "/runs",
        &SCENARIO.replace("\"guarded\"\nstored", "\"nobody\"\nstored"),
    );
    assert_eq!(
        (status, bad["field"].clone()),
        (400, json!("community[0] (nobody).stored")),
        "{bad}"
    );
    let (status, run) = server.call("POST", "/runs", SCENARIO);
    assert_eq!(status, 202, "{run}");
    let id = run["id"].as_u64().expect("an id");
    let (status, busy) = server.call("POST", "/runs", SCENARIO);
    assert_eq!(status, 409, "one run at a time: {busy}");
    let (status, early) = server.call("GET", &format!("/runs/{id}/report"), "");
    assert_eq!(status, 409, "no report before the end: {early}");
    server.wait(id);
    let (status, report) = server.call("GET", &format!("/runs/{id}/report"), "");
    assert_eq!(status, 200);
    assert_eq!(report["stopped_by_signal"], false);
    assert_eq!(
        report["communities"][0]["public_key"], guarded["public_key"],
        "the run signs with the stored community's key"
    );
    assert_eq!(
        report["communities"][0]["pubsub_topic"],
        "/waku/2/rs/16/200"
    );
    let nodes = report["per_node"].as_array().expect("per_node");
    assert_eq!(nodes.len(), 4);
    for node in nodes {
        common::health_exact(node);
        assert!(
            !common::relay_exact(node).is_empty(),
            "{} carried messages",
            node["node"]
        );
    }

    for (query, field) in [
        ("", "param"),
        ("?param=width&values=1", "param"),
        ("?param=nodes", "values"),
        ("?param=d&values=4,6.5", "values"),
        ("?param=nodes&values=4,1", "network.nodes"),
    ] {
        let (status, bad) = server.call("POST", &format!("/sweeps{query}"), SCENARIO);
        assert_eq!(
            (status, bad["field"].clone()),
            (400, json!(field)),
            "{query}: {bad}"
        );
    }
    // A sweep stopped during its first value: the run is closed, measured and tabulated, and
    // the second value never starts.
    let long = SCENARIO.replace("duration_secs = 3", "duration_secs = 60");
    let (status, sweep) = server.call("POST", "/sweeps?param=rate&values=60%2C120", &long);
    assert_eq!(status, 202, "{sweep}");
    assert_eq!(sweep["kind"], "sweep");
    let id = sweep["id"].as_u64().expect("an id");
    thread::sleep(Duration::from_secs(2));
    let (status, stopping) = server.call("POST", &format!("/runs/{id}/stop"), "");
    assert_eq!(status, 202, "{stopping}");
    let run = server.wait(id);
    assert!(run["elapsed_secs"].as_f64() < Some(40.0), "{run}");
    let (_, table) = server.call("GET", &format!("/runs/{id}/report"), "");
    assert_eq!(table["stopped"], true, "{table}");
    let rows = table["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 1, "only the first value ran: {table}");
    assert_eq!(rows[0]["value"], 60.0);
    assert_eq!(rows[0]["relay_bytes"], rows[0]["truth_relay_bytes"]);
    let first = rows[0]["out"].as_str().expect("the run's directory");
    let report: Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{first}/report.json")).expect("report.json"),
    )
    .expect("JSON");
    assert_eq!(report["stopped_by_signal"], true);
    common::own_processes(&report, wakusim, &[]);
    assert!(
        !common::namespaces().contains(&tag),
        "namespaces left: {}",
        common::namespaces()
    );
    let (status, missing) = server.call("GET", "/runs/99", "");
    assert_eq!(status, 404, "{missing}");
}
