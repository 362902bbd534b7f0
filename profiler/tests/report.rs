//! `wakuprof report`: its numbers against DuckDB over the Parquet it reads, the same report from
//! the capture analyzed on the fly, mesh health against the nodes' own ledger of GRAFT and
//! PRUNE, and the HTML page as a person sees it in headless Chromium.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{duckdb, duckdb_rows, repo, wakuprof};
use serde_json::Value;

fn sample(name: &str) -> PathBuf {
    repo().join("samples").join(name)
}

fn run_ok(args: &[&str]) -> String {
    let out = wakuprof(args);
    assert!(
        out.status.success(),
        "wakuprof {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Analyzes `name` into `dir`/usage and `dir`/mesh, in 1-s windows (the samples last seconds).
fn analyze_to(name: &str, dir: &Path) -> (String, String) {
    let usage = dir.join("usage").display().to_string();
    let mesh = dir.join("mesh").display().to_string();
    let capture = sample(name).display().to_string();
    run_ok(&[
        "analyze", &capture, "--out", &usage, "--mesh", &mesh, "--window", "1", "--quiet",
    ]);
    (usage, mesh)
}

fn report_json(args: &[&str]) -> Value {
    let mut all = vec!["report", "--format", "json"];
    all.extend_from_slice(args);
    serde_json::from_str(&run_ok(&all)).expect("report --format json is JSON")
}

fn glob(dir: &str) -> String {
    format!("read_parquet('{dir}/**/*.parquet', hive_partitioning = false)")
}

fn int(v: &Value) -> u64 {
    v.as_u64().unwrap_or_else(|| panic!("not a count: {v}"))
}

/// The (category, shard, bytes) group with the most bytes, by DuckDB.
fn top_group(usage: &str, filter: &str) -> (String, String, u64) {
    let row = duckdb(&format!(
        "select category, coalesce(cast(shard as varchar), ''), sum(bytes) b from {} {filter} group by 1, 2 order by b desc limit 1",
        glob(usage)
    ));
    (
        row[0].clone(),
        row[1].clone(),
        row[2].parse().expect("a byte count"),
    )
}

#[test]
fn report_of_parquet_equals_duckdb_and_the_capture_on_the_fly() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (usage, mesh) = analyze_to("relay-meshsub-gossip.pcap", tmp.path());
    let r = report_json(&[&usage, &mesh]);
    let total: u64 = duckdb(&format!("select sum(bytes) from {}", glob(&usage)))[0]
        .parse()
        .expect("a byte count");
    assert_eq!(int(&r["bytes"]), total);
    let (cat, shard, bytes) = top_group(&usage, "");
    let h = &r["headline"];
    assert_eq!(h["category"], cat.as_str());
    assert_eq!(
        h["shard"]
            .as_u64()
            .map(|s| s.to_string())
            .unwrap_or_default(),
        shard
    );
    assert_eq!(int(&h["bytes"]), bytes);
    let share = format!("{:.0} %", 100.0 * bytes as f64 / total as f64);
    assert!(
        h["text"].as_str().unwrap_or_default().contains(&share),
        "{h}"
    );
    let rows: u64 = duckdb(&format!("select count(*) from {}", glob(&usage)))[0]
        .parse()
        .expect("a count");
    assert_eq!(int(&r["rows"]), rows);

    // The capture read directly gives the same report.
    let capture = sample("relay-meshsub-gossip.pcap").display().to_string();
    let direct = report_json(&[&capture, "--window", "1"]);
    for key in [
        "bytes",
        "headline",
        "categories",
        "relay_shards",
        "mesh",
        "findings",
    ] {
        assert_eq!(
            direct[key], r[key],
            "{key} differs between Parquet and capture input"
        );
    }

    // Filters: a shard, and a time range, as DuckDB counts them.
    let on32 = report_json(&[&usage, &mesh, "--shard", "32"]);
    let b32: u64 = duckdb(&format!(
        "select sum(bytes) from {} where shard = 32",
        glob(&usage)
    ))[0]
        .parse()
        .expect("a byte count");
    assert_eq!(int(&on32["bytes"]), b32);
    assert!(b32 > 0 && b32 < total);
    let windows = duckdb_rows(&format!(
        "select distinct strftime(window_start, '%Y-%m-%dT%H:%M:%SZ') w from {} order by w",
        glob(&usage)
    ));
    assert!(windows.len() >= 3, "the sample spans several windows");
    let (since, until) = (&windows[1][0], &windows[windows.len() - 1][0]);
    let mid = report_json(&[&usage, "--since", since, "--until", until]);
    let bmid: u64 = duckdb(&format!(
        "select sum(bytes) from {} where window_start >= '{since}' and window_start < '{until}'",
        glob(&usage)
    ))[0]
        .parse()
        .expect("a byte count");
    assert_eq!(int(&mid["bytes"]), bmid);
    let nobody = report_json(&[&usage, "--comm", "nobody"]);
    assert_eq!(int(&nobody["bytes"]), 0);
}

/// Σ entries of `kind` per pubsub topic that the nodes wrote (the truth file's ledger).
fn truth_entries(truth: &Value, kind: &str) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for p in truth["relay_parts"].as_array().expect("relay_parts") {
        if p["kind"] == kind {
            let topic = p["pubsub_topic"].as_str().unwrap_or_default().to_string();
            *out.entry(topic).or_default() += int(&p["entries"]);
        }
    }
    out
}

#[test]
fn mesh_table_counts_the_grafts_and_prunes_the_nodes_wrote() {
    for name in ["relay-meshsub-gossip", "relay-plaintext-mplex"] {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (_, mesh) = analyze_to(&format!("{name}.pcap"), tmp.path());
        let truth: Value = serde_json::from_str(
            &std::fs::read_to_string(sample(&format!("{name}.truth.json"))).expect("truth"),
        )
        .expect("truth is JSON");
        for (kind, column) in [("graft", "grafts"), ("prune", "prunes")] {
            let seen: BTreeMap<String, u64> = duckdb_rows(&format!(
                "select pubsub_topic, sum({column}) from {} where source = 'wire' group by 1",
                glob(&mesh)
            ))
            .into_iter()
            .map(|r| (r[0].clone(), r[1].parse().expect("a count")))
            .filter(|(_, n)| *n > 0)
            .collect();
            assert_eq!(
                seen,
                truth_entries(&truth, kind),
                "{name}: {kind} per topic"
            );
        }
        // Every mesh row's seconds below D_low fit in its window.
        let bad = duckdb(&format!(
            "select count(*) from {} where secs_below_d_low > window_secs or mesh_peers_min > mesh_peers",
            glob(&mesh)
        ));
        assert_eq!(bad[0], "0", "{name}");
    }
    // In the mplex sample every node subscribes to both topics and stays: nobody sends on a
    // topic its receiver did not subscribe to.
    let tmp = tempfile::tempdir().expect("tempdir");
    let (_, mesh) = analyze_to("relay-plaintext-mplex.pcap", tmp.path());
    let unsubscribed = duckdb(&format!(
        "select sum(unsubscribed_senders), count(*) filter (where subscribed) from {}",
        glob(&mesh)
    ));
    assert_eq!(unsubscribed[0], "0");
    assert_ne!(unsubscribed[1], "0");
    // In the gossip sample node0 (127.0.0.1) leaves /waku/2/rs/16/64: its last row says so.
    let tmp = tempfile::tempdir().expect("tempdir");
    let (_, mesh) = analyze_to("relay-meshsub-gossip.pcap", tmp.path());
    let last = duckdb(&format!(
        "select subscribed from {} where local_addr = '127.0.0.1' and shard = 64 order by window_start desc limit 1",
        glob(&mesh)
    ));
    assert_eq!(last, ["False"]);
}

/// Runs headless Chromium on `page` with `args`; returns (stdout, stderr).
fn chromium(page: &Path, args: &[&str]) -> (String, String) {
    let profile = tempfile::tempdir().expect("tempdir");
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            "--enable-logging=stderr",
            "--v=0",
        ])
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args(args)
        .arg(format!("file://{}", page.display()))
        .output()
        .expect("chromium runs (`cargo xtask test` installs Debian's chromium)");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The chart figures the page must show.
const CHARTS: [&str; 7] = [
    "chart-bandwidth",
    "chart-shards",
    "chart-control-kinds",
    "chart-processes",
    "chart-peers",
    "chart-duplicates",
    "chart-mesh",
];

/// The text of `<figure id=id>…</figure>` in `dom`.
fn figure<'a>(dom: &'a str, id: &str) -> &'a str {
    let start = dom
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no chart {id} in the page"));
    let end = dom[start..].find("</figure>").expect("figure closes") + start;
    &dom[start..end]
}

/// The value of attribute `name` of the element with `id`.
fn attribute(dom: &str, id: &str, name: &str) -> String {
    let start = dom.find(&format!("id=\"{id}\"")).expect("element present");
    let tag_start = dom[..start].rfind('<').expect("tag");
    let tag = &dom[tag_start..start + dom[start..].find('>').expect("tag ends")];
    let key = format!("{name}=\"");
    let v = tag
        .find(&key)
        .unwrap_or_else(|| panic!("{id} has no {name}"))
        + key.len();
    tag[v..v + tag[v..].find('"').expect("quoted")].to_string()
}

#[test]
fn html_report_renders_in_chromium_with_every_chart_and_the_parquet_numbers() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (usage, mesh) = analyze_to("relay-meshsub-gossip.pcap", tmp.path());
    let artifacts = Path::new(env!("CARGO_TARGET_TMPDIR")).join("report");
    std::fs::create_dir_all(&artifacts).expect("artifact dir");
    let page = artifacts.join("relay-meshsub-gossip.html");
    let page_arg = page.display().to_string();
    run_ok(&["report", &usage, &mesh, "--quiet", "--html", &page_arg]);
    let html = std::fs::read_to_string(&page).expect("page written");
    for needle in ["src=", "href=", "url(", "@import", "http://", "https://"] {
        assert!(
            !html.contains(needle),
            "the page loads something ({needle})"
        );
    }

    let shot = artifacts.join("relay-meshsub-gossip.png");
    let (_, stderr) = chromium(
        &page,
        &[
            "--window-size=1280,3000",
            "--hide-scrollbars",
            &format!("--screenshot={}", shot.display()),
        ],
    );
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 20_000,
        "screenshot of {} bytes",
        png.len()
    );
    let (dom, dom_stderr) = chromium(&page, &["--dump-dom"]);
    for log in [&stderr, &dom_stderr] {
        let console: Vec<&str> = log.lines().filter(|l| l.contains("CONSOLE")).collect();
        assert!(console.is_empty(), "console messages: {console:?}");
    }
    for id in CHARTS {
        let fig = figure(&dom, id);
        let marks = fig.matches("class=\"series\"").count() + fig.matches("class=\"bar\"").count();
        assert!(marks > 0, "chart {id} is empty");
        assert!(!fig.contains("class=\"empty\""), "chart {id} says no data");
    }
    let total: u64 = duckdb(&format!("select sum(bytes) from {}", glob(&usage)))[0]
        .parse()
        .expect("a byte count");
    assert_eq!(
        attribute(&dom, "headline", "data-total-bytes"),
        total.to_string()
    );
    let (cat, shard, bytes) = top_group(&usage, "");
    assert_eq!(attribute(&dom, "headline", "data-bytes"), bytes.to_string());
    assert_eq!(attribute(&dom, "headline", "data-category"), cat);
    assert_eq!(attribute(&dom, "headline", "data-shard"), shard);
    let share = format!("{:.0} %", 100.0 * bytes as f64 / total as f64);
    let headline_text = &dom[dom.find("id=\"headline\"").expect("headline")..];
    assert!(headline_text[..headline_text.find("</p>").expect("p")].contains(&share));
    // The bandwidth chart's areas add up to the Parquet's bytes per category.
    let per_cat = duckdb_rows(&format!(
        "select category, sum(bytes) from {} group by 1",
        glob(&usage)
    ));
    let fig = figure(&dom, "chart-bandwidth");
    for row in per_cat {
        assert!(
            fig.contains(&format!(
                "data-category=\"{}\" data-v=\"{}\"",
                row[0], row[1]
            )),
            "bandwidth chart: {} should hold {} bytes",
            row[0],
            row[1]
        );
    }
}

#[test]
fn node_api_peers_per_shard_become_mesh_rows_where_relay_is_encrypted() {
    let peers = repo().join("profiler/tests/fixtures/nwaku/admin-peers.json");
    let listed: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(&peers).expect("fixture")).expect("JSON");
    let mut want: BTreeMap<String, u64> = BTreeMap::new();
    for p in &listed {
        for s in p["shards"].as_array().expect("shards") {
            *want.entry(s.to_string()).or_default() += 1;
        }
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let mesh = tmp.path().join("mesh").display().to_string();
    let capture = sample("relay-noise-mix.pcap").display().to_string();
    let peers = peers.display().to_string();
    run_ok(&[
        "analyze",
        &capture,
        "--node-api",
        &peers,
        "--mesh",
        &mesh,
        "--quiet",
    ]);
    let got: BTreeMap<String, u64> = duckdb_rows(&format!(
        "select shard, max(peers_subscribed), min(peers_subscribed) from {} where source = 'node-api' group by 1",
        glob(&mesh)
    ))
    .into_iter()
    .map(|r| {
        assert_eq!(r[1], r[2], "the book does not change in an offline run");
        (r[0].clone(), r[1].parse().expect("a count"))
    })
    .collect();
    assert_eq!(got, want);
    // The report says so, and counts the time with fewer than D_low peers listed.
    let r = report_json(&[&capture, "--node-api", &peers]);
    let api: Vec<&Value> = r["mesh"]
        .as_array()
        .expect("mesh lines")
        .iter()
        .filter(|m| m["source"] == "node-api")
        .collect();
    assert_eq!(api.len(), want.len());
    for m in api {
        assert_eq!(
            m["secs_below_d_low"], m["secs"],
            "fewer than 4 peers listed: {m}"
        );
    }
}
