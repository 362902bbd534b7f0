//! `wakusim export --to kubernetes` as far as a machine without a cluster can test it: the
//! manifests parse as YAML, every object is well formed, everything a Pod refers to (ConfigMap,
//! Secret, Service, volumes, image) exists, the commands name subcommands and options the
//! binaries have, and the Pods and their dials are the scenario's nodes and topology. Then
//! `wakusim run-node`, what the Pods run, runs a three-node network on loopback: every message
//! one node publishes reaches the others.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use serde_json::Value;

const SCENARIO: &str = r#"
duration_secs = 3
seed = 7

[network]
nodes = 6
degree = 3

[[community]]
name = "guarded"
shard = 200
protected = true
members = [0, 1, 2]

[[community.message]]
content_topic = "/guarded/1/chat/proto"
size = 300
rate_per_min = 60

[[community]]
name = "open"
members = [1, 2]

[[community.message]]
content_topic = "/open/1/chat/proto"
size = 100
rate_per_min = 60
"#;

fn wakusim() -> Command {
    Command::new(env!("CARGO_BIN_EXE_wakusim"))
}

/// The wakuprof binary beside wakusim's, built when it is not there yet.
fn wakuprof() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_wakusim")).with_file_name("wakuprof");
    if !bin.exists() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let built = Command::new(cargo)
            .args(["build", "-p", "wakuprof", "--bin", "wakuprof"])
            .status()
            .expect("cargo runs");
        assert!(built.success(), "cargo build -p wakuprof");
    }
    bin
}

/// Asserts that `command` names a subcommand of its binary and only options that subcommand
/// has, by its `--help`.
fn assert_cli(binary: &Path, command: &[String]) {
    let help = Command::new(binary)
        .args([&command[1], "--help"])
        .output()
        .expect("the binary runs");
    assert!(
        help.status.success(),
        "{} has no {}",
        command[0],
        command[1]
    );
    let text = String::from_utf8_lossy(&help.stdout);
    for option in command.iter().filter(|a| a.starts_with("--")) {
        assert!(
            text.contains(&format!("{option} ")) || text.contains(&format!("{option}\n")),
            "{} {} has no {option}",
            command[0],
            command[1]
        );
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .expect("a list")
        .iter()
        .map(|s| s.as_str().expect("a string").to_owned())
        .collect()
}

/// Exports `SCENARIO` to `engine` into `dir` and parses what it wrote, `file`, as YAML
/// documents.
fn export(dir: &Path, engine: &str, file: &str) -> Vec<Value> {
    let scenario = dir.join("scenario.toml");
    std::fs::write(&scenario, SCENARIO).expect("write the scenario");
    let out = dir.join(engine);
    let status = wakusim()
        .arg("export")
        .arg(&scenario)
        .args(["--to", engine, "--out"])
        .arg(&out)
        .stdout(Stdio::null())
        .status()
        .expect("wakusim runs");
    assert!(status.success(), "wakusim export --to {engine} failed");
    let text = std::fs::read_to_string(out.join(file)).expect("the exported file");
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| serde::Deserialize::deserialize(doc).expect("a YAML document"))
        .collect()
}

/// The node `node<j><suffix>` names.
fn dialled(target: &str, suffix: &str) -> usize {
    target
        .strip_suffix(suffix)
        .and_then(|h| h.strip_prefix("node"))
        .and_then(|j| j.parse().ok())
        .unwrap_or_else(|| panic!("{target} is no node{suffix}"))
}

/// The (dialler, dialled) pairs of `args`' `--dial` options of node `i`.
fn dials(i: usize, args: &[String], suffix: &str) -> Vec<(usize, usize)> {
    args.windows(2)
        .filter(|w| w[0] == "--dial")
        .map(|w| (i, dialled(&w[1], suffix)))
        .collect()
}

/// The edges of the Kubernetes export of `SCENARIO`.
fn kubernetes_edges(objects: &[Value]) -> BTreeSet<(usize, usize)> {
    objects
        .iter()
        .filter(|o| o["kind"] == "Pod")
        .enumerate()
        .flat_map(|(i, p)| {
            dials(
                i,
                &strings(&p["spec"]["containers"][0]["command"]),
                ".wakusim:60000",
            )
        })
        .collect()
}

#[test]
fn manifests_parse_and_refer_to_what_exists() {
    let dir = tempfile::tempdir().expect("temp dir");
    let objects = export(dir.path(), "kubernetes", "wakusim.yaml");

    let mut names: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for o in &objects {
        assert!(o["apiVersion"].is_string(), "apiVersion of {o}");
        let kind = o["kind"].as_str().expect("kind");
        let name = o["metadata"]["name"].as_str().expect("metadata.name");
        let dns_label = name.len() <= 63
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !name.starts_with('-')
            && !name.ends_with('-');
        assert!(dns_label, "{kind} {name}: not a DNS label");
        assert!(
            names
                .entry(kind.to_owned())
                .or_default()
                .insert(name.to_owned()),
            "{kind} {name} twice"
        );
    }
    let has = |kind: &str, name: &str| names.get(kind).is_some_and(|n| n.contains(name));
    let config = objects
        .iter()
        .find(|o| o["kind"] == "ConfigMap")
        .expect("a ConfigMap");
    assert_eq!(config["data"]["scenario.toml"], SCENARIO);
    let secret = objects
        .iter()
        .find(|o| o["kind"] == "Secret")
        .expect("a Secret");
    let keys = secret["stringData"].as_object().expect("stringData");
    assert_eq!(keys.keys().collect::<Vec<_>>(), ["guarded"]);
    assert_eq!(keys["guarded"].as_str().map(str::len), Some(64));

    let dockerfile = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Dockerfile"))
        .expect("wakusim/Dockerfile");
    let wakuprof = wakuprof();
    let pods: Vec<&Value> = objects.iter().filter(|o| o["kind"] == "Pod").collect();
    assert_eq!(pods.len(), 6, "a Pod per node");
    let mut edges = BTreeSet::new();
    for (i, pod) in pods.iter().enumerate() {
        let spec = &pod["spec"];
        assert_eq!(spec["hostname"], format!("node{i}"));
        let service = spec["subdomain"].as_str().expect("subdomain");
        assert!(has("Service", service), "no Service {service}");
        let svc = objects
            .iter()
            .find(|o| o["kind"] == "Service")
            .expect("the Service");
        assert_eq!(svc["spec"]["clusterIP"], "None", "headless");
        for (k, v) in svc["spec"]["selector"].as_object().expect("selector") {
            assert_eq!(
                &pod["metadata"]["labels"][k], v,
                "the Service selects node{i}"
            );
        }
        let mut volumes = BTreeSet::new();
        for v in spec["volumes"].as_array().expect("volumes") {
            volumes.insert(v["name"].as_str().expect("volume name").to_owned());
            if let Some(c) = v["configMap"]["name"].as_str() {
                assert!(has("ConfigMap", c), "no ConfigMap {c}");
            }
            if let Some(s) = v["secret"]["secretName"].as_str() {
                assert!(has("Secret", s), "no Secret {s}");
            }
        }
        let sidecars = spec["initContainers"].as_array().expect("the sidecar");
        let containers = spec["containers"].as_array().expect("containers");
        assert_eq!(sidecars[0]["restartPolicy"], "Always", "a native sidecar");
        for c in sidecars.iter().chain(containers) {
            let image = c["image"].as_str().expect("image");
            assert!(
                dockerfile.contains(&format!("-t {image} ")),
                "the Dockerfile does not build {image}"
            );
            for m in c["volumeMounts"].as_array().expect("mounts") {
                let name = m["name"].as_str().expect("mount name");
                assert!(volumes.contains(name), "no volume {name}");
            }
        }
        let profiler = strings(&sidecars[0]["command"]);
        assert_eq!(profiler[..2], ["wakuprof", "live"]);
        assert_cli(&wakuprof, &profiler);
        let node = strings(&containers[0]["command"]);
        assert_eq!(node[..2], ["wakusim", "run-node"]);
        assert_cli(Path::new(env!("CARGO_BIN_EXE_wakusim")), &node);
        let index = node.iter().position(|a| a == "--index").expect("--index");
        assert_eq!(node[index + 1], i.to_string());
        for (_, j) in dials(i, &node, ".wakusim:60000") {
            assert!(j < 6 && j != i, "node{i} dials node{j}");
            assert!(edges.insert((i.min(j), i.max(j))), "{i}-{j} dialled twice");
        }
    }
    for i in 1..6 {
        assert!(edges.contains(&(i - 1, i)), "the chain {}-{i}", i - 1);
    }
    // degree 3: each node dials its predecessor and up to two random others.
    assert!(edges.len() > 5 && edges.len() <= 5 + 2 * 6, "{edges:?}");
}

#[test]
fn shadow_runs_the_same_nodes_and_topology() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = export(dir.path(), "shadow", "shadow.yaml");
    assert_eq!(config.len(), 1);
    let config = &config[0];
    let stop: f64 = config["general"]["stop_time"]
        .as_str()
        .and_then(|t| t.strip_suffix('s'))
        .and_then(|t| t.parse().ok())
        .expect("stop_time in seconds");
    assert!(stop > 3.0, "the simulation outlasts the publishing");
    assert_eq!(config["network"]["graph"]["type"], "1_gbit_switch");
    assert_eq!(config["host_option_defaults"]["pcap_enabled"], true);
    let hosts = config["hosts"].as_object().expect("hosts");
    assert_eq!(hosts.len(), 6, "a host per node");
    let binary = Path::new(env!("CARGO_BIN_EXE_wakusim"))
        .canonicalize()
        .expect("the binary");
    let mut edges = BTreeSet::new();
    for i in 0..6 {
        let host = &hosts[&format!("node{i}")];
        assert_eq!(host["network_node_id"], 0);
        let process = &host["processes"][0];
        let path = process["path"].as_str().expect("path");
        assert_eq!(
            Path::new(path).canonicalize().expect("the path exists"),
            binary
        );
        let mut command = vec!["wakusim".to_owned()];
        command.extend(strings(&process["args"]));
        assert_eq!(command[1], "run-node");
        assert_cli(&binary, &command);
        let at = command
            .iter()
            .position(|a| a == "--scenario")
            .expect("--scenario");
        let scenario = std::fs::read_to_string(&command[at + 1]).expect("the scenario's copy");
        assert_eq!(scenario, SCENARIO);
        let at = command
            .iter()
            .position(|a| a == "--index")
            .expect("--index");
        assert_eq!(command[at + 1], i.to_string());
        edges.extend(dials(i, &command, ":60000"));
    }
    let k8s = export(dir.path(), "kubernetes", "wakusim.yaml");
    assert_eq!(edges, kubernetes_edges(&k8s), "the same topology");
}

/// Starts node `index` of `scenario` on port `port`, dialling `dial`, and waits until it
/// listens (as a Pod's readiness probe does).
fn node(scenario: &Path, index: usize, port: u16, dial: &[String]) -> Child {
    let ready = scenario.with_file_name(format!("ready{index}"));
    let mut c = wakusim();
    c.arg("run-node")
        .arg("--scenario")
        .arg(scenario)
        .args(["--index", &index.to_string(), "--port", &port.to_string()])
        .arg("--ready-file")
        .arg(&ready);
    for d in dial {
        c.args(["--dial", d]);
    }
    let child = c.stdout(Stdio::piped()).spawn().expect("wakusim run-node");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready.exists() {
        assert!(Instant::now() < deadline, "node{index} does not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

#[test]
fn run_node_runs_a_network_on_loopback() {
    let dir = tempfile::tempdir().expect("temp dir");
    let scenario = dir.path().join("scenario.toml");
    let three = SCENARIO.replace("nodes = 6\ndegree = 3", "nodes = 3\ndegree = 1");
    std::fs::write(&scenario, three).expect("write the scenario");
    let base = 20_000 + (std::process::id() % 20_000) as u16;
    let children = vec![
        node(&scenario, 0, base, &[]),
        node(&scenario, 1, base + 1, &[format!("localhost:{base}")]),
        node(&scenario, 2, base + 2, &[format!("127.0.0.1:{}", base + 1)]),
    ];
    let counts: Vec<Value> = children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().expect("the node finishes");
            assert!(out.status.success(), "wakusim run-node failed");
            serde_json::from_slice(&out.stdout).expect("counts as JSON")
        })
        .collect();
    for topic in ["/waku/2/rs/16/200", "/waku/2/rs/16/32"] {
        let published: u64 = counts
            .iter()
            .map(|c| c[topic]["published"].as_u64().expect("published"))
            .sum();
        assert!(published > 0, "{topic}: something was published");
        for (i, c) in counts.iter().enumerate() {
            let own = c[topic]["published"].as_u64().expect("published");
            assert_eq!(
                c[topic]["received"].as_u64(),
                Some(published - own),
                "node{i} received every other node's messages on {topic}"
            );
        }
    }
}

#[test]
fn a_protected_community_whose_name_is_no_secret_key_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let scenario = dir.path().join("scenario.toml");
    std::fs::write(&scenario, SCENARIO.replace("\"guarded\"", "\"our guard\""))
        .expect("write the scenario");
    let out = wakusim()
        .arg("export")
        .arg(&scenario)
        .arg("--out")
        .arg(dir.path())
        .output()
        .expect("wakusim runs");
    assert!(!out.status.success(), "the export was refused");
    let error = String::from_utf8_lossy(&out.stderr);
    assert!(
        error.contains("community[0] (our guard).name"),
        "the error names the field: {error}"
    );
    assert!(!dir.path().join("wakusim.yaml").exists());
}
