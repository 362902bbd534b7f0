//! A scenario written out for an engine that runs it beyond one machine's namespaces: Kubernetes
//! manifests with one Pod per node (the relay node, `wakusim run-node`, and wakuprof as its
//! sidecar), a headless Service giving each node a stable DNS name its peers dial, the scenario
//! in a ConfigMap and the protected communities' keys in a Secret; or a Shadow simulator
//! configuration running the same `wakusim run-node` on each simulated host, with a capture
//! per host for `wakuprof analyze`.

use std::path::Path;

use anyhow::{Context as _, ensure};
use serde_json::{Value, json};

use crate::{
    community::hex,
    run::{Rng, topology},
    scenario::Scenario,
    standalone::DEFAULT_PORT,
};

/// The image the manifests run: wakusim and wakuprof, built by `wakusim/Dockerfile`.
pub const IMAGE: &str = "wakusim:0.1.0";
/// The headless Service, also the nodes' DNS subdomain.
pub const SERVICE: &str = "wakusim";
const CONFIG_MAP: &str = "wakusim-scenario";
const SECRET: &str = "wakusim-keys";
const SCENARIO_DIR: &str = "/etc/wakusim/scenario";
const KEYS_DIR: &str = "/etc/wakusim/keys";
const READY_FILE: &str = "/tmp/wakusim-ready";
/// Where each node's host keeps the profiler's Parquet, one directory per pod.
pub const PROFILE_HOST_DIR: &str = "/var/lib/wakusim/profiles";
const METRICS_PORT: u16 = 9610;

/// The manifests of scenario `s` (whose file reads `text`), in the order to apply them.
pub fn kubernetes(s: &Scenario, text: &str, image: &str) -> anyhow::Result<Vec<Value>> {
    ensure!(
        s.communities.iter().all(|c| !c.stored),
        "stored communities cannot be exported: give their shard and protection in the scenario"
    );
    for (i, c) in s.communities.iter().enumerate() {
        let key_name = c
            .name
            .chars()
            .all(|ch| ch.is_ascii_alphanumeric() || "-_.".contains(ch));
        ensure!(
            !c.protected || (key_name && !c.name.starts_with('.')),
            "community[{i}] ({}).name: a protected community's name is a key of the Secret: letters, digits, '-', '_' and '.' only, not first",
            c.name
        );
    }
    let mut objects = vec![json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": CONFIG_MAP, "labels": labels()},
        "data": {"scenario.toml": text},
    })];
    let keys: serde_json::Map<String, Value> = s
        .communities
        .iter()
        .filter(|c| c.protected)
        .map(|c| {
            let key = c.signing_key(s.seed).to_bytes();
            (c.name.clone(), Value::String(hex(&key)))
        })
        .collect();
    let protected = !keys.is_empty();
    if protected {
        objects.push(json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": SECRET, "labels": labels()},
            "type": "Opaque",
            "stringData": keys,
        }));
    }
    objects.push(json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": SERVICE, "labels": labels()},
        "spec": {
            "clusterIP": "None",
            "selector": labels(),
            "ports": [{"name": "relay", "port": DEFAULT_PORT, "targetPort": DEFAULT_PORT}],
        },
    }));
    for (i, dials) in dials(s).iter().enumerate() {
        objects.push(pod(i, dials, image, protected));
    }
    Ok(objects)
}

/// The nodes each node dials: the topology a single-host run of `s` connects.
fn dials(s: &Scenario) -> Vec<Vec<usize>> {
    let mut dials = vec![Vec::new(); s.network.nodes];
    for (from, to) in topology(s.network.nodes, s.network.degree, &mut Rng::of(s)) {
        dials[from].push(to);
    }
    dials
}

/// Seconds of simulated time a Shadow run of `s` gets beyond its publishing: for the nodes
/// to start, connect, form their meshes, linger and close.
const SHADOW_SETUP_SECS: f64 = 60.0;

/// The Shadow configuration of scenario `s` (a copy of its file at `scenario`): a host
/// `node<i>` per node on a 1 Gbit switch, each running `wakusim` (at `binary`) `run-node` and
/// capturing its `eth0.pcap`.
pub fn shadow(s: &Scenario, scenario: &Path, binary: &Path) -> anyhow::Result<Value> {
    ensure!(
        s.communities.iter().all(|c| !c.stored),
        "stored communities cannot be exported: give their shard and protection in the scenario"
    );
    let hosts: serde_json::Map<String, Value> = dials(s)
        .iter()
        .enumerate()
        .map(|(i, dials)| {
            let mut args: Vec<String> = [
                "run-node",
                "--scenario",
                &scenario.display().to_string(),
                "--index",
                &i.to_string(),
                "--port",
                &DEFAULT_PORT.to_string(),
                // Every host starts at once: the peers listen by then.
                "--dial-delay",
                "2",
            ]
            .map(str::to_owned)
            .to_vec();
            for d in dials {
                args.extend(["--dial".to_owned(), format!("node{d}:{DEFAULT_PORT}")]);
            }
            let host = json!({
                "network_node_id": 0,
                "processes": [{
                    "path": binary.display().to_string(),
                    "args": args,
                    "start_time": "1s",
                    "expected_final_state": {"exited": 0},
                }],
            });
            (format!("node{i}"), host)
        })
        .collect();
    let stop = (s.duration_secs + SHADOW_SETUP_SECS).ceil();
    Ok(json!({
        "general": {
            "stop_time": format!("{stop}s"),
            "seed": s.seed,
            "model_unblocked_syscall_latency": true,
        },
        "network": {"graph": {"type": "1_gbit_switch"}},
        "host_option_defaults": {"pcap_enabled": true},
        "hosts": hosts,
    }))
}

fn labels() -> Value {
    json!({"app.kubernetes.io/name": "wakusim-node"})
}

/// The DNS name of node `i` within the namespace.
pub fn host(i: usize) -> String {
    format!("node{i}.{SERVICE}")
}

/// Node `i`'s Pod: the relay node dialling `dials`, and wakuprof capturing the pod's eth0.
fn pod(i: usize, dials: &[usize], image: &str, protected: bool) -> Value {
    let mut node_cmd: Vec<String> = [
        "wakusim",
        "run-node",
        "--scenario",
        &format!("{SCENARIO_DIR}/scenario.toml"),
        "--index",
        &i.to_string(),
        "--port",
        &DEFAULT_PORT.to_string(),
        "--ready-file",
        READY_FILE,
    ]
    .map(str::to_owned)
    .to_vec();
    if protected {
        node_cmd.extend(["--keys".to_owned(), KEYS_DIR.to_owned()]);
    }
    for d in dials {
        node_cmd.extend(["--dial".to_owned(), format!("{}:{DEFAULT_PORT}", host(*d))]);
    }
    let mut mounts = vec![json!({"name": "scenario", "mountPath": SCENARIO_DIR, "readOnly": true})];
    let mut volumes = vec![json!({"name": "scenario", "configMap": {"name": CONFIG_MAP}})];
    if protected {
        mounts.push(json!({"name": "keys", "mountPath": KEYS_DIR, "readOnly": true}));
        volumes.push(json!({"name": "keys", "secret": {"secretName": SECRET}}));
    }
    volumes.push(json!({
        "name": "profile",
        "hostPath": {"path": PROFILE_HOST_DIR, "type": "DirectoryOrCreate"},
    }));
    let profiler_cmd = [
        "wakuprof",
        "live",
        "--source",
        "pcap",
        "--interface",
        "eth0",
        "--window",
        "1",
        "--out",
        "/profile/$(POD_NAME)",
        "--metrics",
        &format!("0.0.0.0:{METRICS_PORT}"),
        "--quiet",
    ];
    let mut meta_labels = labels();
    meta_labels["wakusim/node"] = json!(i.to_string());
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": format!("wakusim-node{i}"), "labels": meta_labels},
        "spec": {
            "hostname": format!("node{i}"),
            "subdomain": SERVICE,
            "restartPolicy": "Never",
            "shareProcessNamespace": true,
            // wakuprof as a native sidecar: it starts first and gets SIGTERM (and writes its
            // last Parquet) once the node is done.
            "initContainers": [{
                "name": "wakuprof",
                "image": image,
                "restartPolicy": "Always",
                "command": profiler_cmd,
                "env": [{"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}],
                "ports": [{"name": "metrics", "containerPort": METRICS_PORT}],
                "securityContext": {"capabilities": {"add": ["NET_ADMIN", "NET_RAW", "SYS_PTRACE"]}},
                "volumeMounts": [{"name": "profile", "mountPath": "/profile"}],
            }],
            "containers": [{
                "name": "node",
                "image": image,
                "command": node_cmd,
                "ports": [{"name": "relay", "containerPort": DEFAULT_PORT}],
                "readinessProbe": {
                    "exec": {"command": ["test", "-f", READY_FILE]},
                    "periodSeconds": 1,
                },
                "volumeMounts": mounts,
            }],
            "volumes": volumes,
            "terminationGracePeriodSeconds": 30,
        },
    })
}

/// The file `write` puts the manifests in.
pub const FILE: &str = "wakusim.yaml";
/// The file the Shadow configuration goes to.
pub const SHADOW_FILE: &str = "shadow.yaml";
/// The scenario's copy beside the Shadow configuration.
pub const SHADOW_SCENARIO: &str = "scenario.toml";

/// Writes `objects` as one YAML stream (documents separated by `---`) to `dir/wakusim.yaml`,
/// ready for `kubectl apply -f`. Returns its path.
pub fn write(objects: &[Value], dir: &Path) -> anyhow::Result<std::path::PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let mut all = String::new();
    for o in objects {
        all.push_str("---\n");
        all.push_str(&serde_norway::to_string(o)?);
    }
    let path = dir.join(FILE);
    std::fs::write(&path, all).with_context(|| format!("write {}", path.display()))?;
    Ok(path)
}

/// Writes the Shadow configuration of scenario `s` (whose file reads `text`) into `dir`:
/// `shadow.yaml` and the scenario's copy it runs. Returns the configuration's path.
pub fn write_shadow(
    s: &Scenario,
    text: &str,
    binary: &Path,
    dir: &Path,
) -> anyhow::Result<std::path::PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let dir = dir
        .canonicalize()
        .with_context(|| format!("resolve {}", dir.display()))?;
    let scenario = dir.join(SHADOW_SCENARIO);
    std::fs::write(&scenario, text).with_context(|| format!("write {}", scenario.display()))?;
    let path = dir.join(SHADOW_FILE);
    let config = serde_norway::to_string(&shadow(s, &scenario, binary)?)?;
    std::fs::write(&path, config).with_context(|| format!("write {}", path.display()))?;
    Ok(path)
}
