//! A local stand-in for the status-im telemetry service that enforces its contract
//! (protocols.md §9): the routes and status codes, the per-client-IP rate limit (10 requests/s,
//! burst 1, 429 past it), the exact `ProtocolStats` shape, the `/record-metrics` item shape and
//! the proposed `BandwidthUsage` record. It can fail on demand (an outage) or take a request and
//! never answer (so a client can be killed mid-request), and keeps everything it received.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How the service answers at the moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Answers per the contract.
    Up,
    /// Answers 503 to everything (an outage behind a proxy).
    Unavailable,
    /// Closes every connection without answering (the service is gone).
    Gone,
    /// Receives the next request fully, keeps it, and never answers it (nor anything after).
    StallNext,
}

/// A request the service took (valid or not), with the answer it gave, if any.
#[derive(Clone, Debug)]
pub struct Received {
    pub path: String,
    pub status: Option<u16>,
    pub idempotency_key: Option<String>,
    pub body: Value,
    pub raw: String,
    /// The answer's body.
    pub answer: String,
}

#[derive(Default)]
struct State {
    mode: Option<Mode>,
    received: Vec<Received>,
    /// Token bucket per client IP: time the next request is allowed.
    next_allowed: HashMap<IpAddr, Instant>,
    stalled: bool,
}

/// The running service.
pub struct Service {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    /// Extra row fields `BandwidthUsage` may carry (what `--telemetry-include` allowed).
    allowed: Arc<BTreeSet<String>>,
}

/// The service's rate: one request per 100 ms per client IP, burst 1.
const INTERVAL: Duration = Duration::from_millis(100);

const STATS_KEYS: [&str; 6] = [
    "filter-push",
    "filter-subscribe",
    "hostID",
    "lightpush",
    "relay",
    "store",
];
const METRIC_KEYS: [&str; 4] = ["rateIn", "rateOut", "totalIn", "totalOut"];
const USAGE_KEYS: [&str; 5] = ["hostID", "part", "rows", "windowSecs", "windowStart"];
const ROW_KEYS: [&str; 9] = [
    "bytes",
    "category",
    "cluster_id",
    "direction",
    "kind",
    "messages",
    "method",
    "packets",
    "shard",
];
/// The optional row fields of `BandwidthUsage`, by the `--telemetry-include` name allowing them.
pub const OPTIONAL_ROW_KEYS: [(&str, &str); 7] = [
    ("addresses", "local_addr"),
    ("addresses", "remote_addr"),
    ("ports", "local_port"),
    ("ports", "remote_port"),
    ("pubsub-topics", "pubsub_topic"),
    ("content-topics", "content_topic"),
    ("processes", "comm"),
];

impl Service {
    /// Starts the service on a free loopback port; `include` names what rows may carry.
    pub fn start(include: &[&str]) -> Service {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binds a loopback port");
        let addr = listener.local_addr().expect("has an address");
        let state = Arc::new(Mutex::new(State {
            mode: Some(Mode::Up),
            ..State::default()
        }));
        let allowed: BTreeSet<String> = OPTIONAL_ROW_KEYS
            .iter()
            .filter(|(name, _)| include.contains(name))
            .map(|(_, key)| key.to_string())
            .collect();
        let allowed = Arc::new(allowed);
        let (st, al) = (Arc::clone(&state), Arc::clone(&allowed));
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let (st, al) = (Arc::clone(&st), Arc::clone(&al));
                std::thread::spawn(move || serve(conn, &st, &al));
            }
        });
        Service {
            addr,
            state,
            allowed,
        }
    }

    /// The base URL to give `--telemetry`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_mode(&self, mode: Mode) {
        let mut s = self.state.lock().expect("state");
        s.mode = Some(mode);
        if mode != Mode::StallNext {
            s.stalled = false;
        }
    }

    /// Whether a request was taken and left unanswered (after [`Mode::StallNext`]).
    pub fn stalled(&self) -> bool {
        self.state.lock().expect("state").stalled
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.state.lock().expect("state").received.clone()
    }

    /// Waits until `cond` holds for what was received, or panics after `timeout`.
    pub fn wait_for(&self, what: &str, timeout: Duration, cond: impl Fn(&[Received]) -> bool) {
        let start = Instant::now();
        while !cond(&self.state.lock().expect("state").received) {
            assert!(start.elapsed() < timeout, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The optional row fields this service accepts.
    pub fn allowed(&self) -> &BTreeSet<String> {
        &self.allowed
    }
}

fn serve(conn: TcpStream, state: &Mutex<State>, allowed: &BTreeSet<String>) {
    let peer = conn.peer_addr().map(|a| a.ip()).ok();
    let Ok(write_half) = conn.try_clone() else {
        return;
    };
    let mut out = write_half;
    let mut reader = BufReader::new(conn);
    loop {
        let Some((method, path, headers, body)) = read_request(&mut reader) else {
            return;
        };
        let mode = state.lock().expect("state").mode.unwrap_or(Mode::Up);
        if mode == Mode::Gone {
            return;
        }
        let raw = String::from_utf8_lossy(&body).into_owned();
        let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let key = headers.get("idempotency-key").cloned();
        let mut rec = Received {
            path: path.clone(),
            status: None,
            idempotency_key: key,
            body: parsed.clone(),
            raw,
            answer: String::new(),
        };
        if mode == Mode::StallNext {
            let mut s = state.lock().expect("state");
            s.received.push(rec);
            s.stalled = true;
            drop(s);
            // Never answer; the connection stays open until the client goes away.
            let mut sink = Vec::new();
            let _ = reader.read_to_end(&mut sink);
            return;
        }
        let (status, answer) = if mode == Mode::Unavailable {
            (503, "Service Unavailable\n".to_string())
        } else if !allow(state, peer) {
            (429, "Too Many Requests\n".to_string())
        } else {
            route(&method, &path, &parsed, &headers, allowed)
        };
        rec.status = Some(status);
        rec.answer.clone_from(&answer);
        state.lock().expect("state").received.push(rec);
        let reason = match status {
            200 => "OK",
            201 => "Created",
            400 => "Bad Request",
            404 => "Not Found",
            429 => "Too Many Requests",
            _ => "Service Unavailable",
        };
        let reply = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{answer}",
            answer.len()
        );
        if out.write_all(reply.as_bytes()).is_err() {
            return;
        }
    }
}

/// The per-IP token bucket: one token per [`INTERVAL`], burst 1.
fn allow(state: &Mutex<State>, peer: Option<IpAddr>) -> bool {
    let Some(ip) = peer else { return false };
    let mut s = state.lock().expect("state");
    let now = Instant::now();
    match s.next_allowed.get(&ip) {
        Some(&next) if next > now => false,
        _ => {
            s.next_allowed.insert(ip, now + INTERVAL);
            true
        }
    }
}

type Request = (String, String, BTreeMap<String, String>, Vec<u8>);

fn read_request(r: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    let path = parts.next()?.to_string();
    let mut headers = BTreeMap::new();
    loop {
        let mut h = String::new();
        r.read_line(&mut h).ok()?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
    }
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0; len];
    r.read_exact(&mut body).ok()?;
    Some((method, path, headers, body))
}

fn route(
    method: &str,
    path: &str,
    body: &Value,
    headers: &BTreeMap<String, String>,
    allowed: &BTreeSet<String>,
) -> (u16, String) {
    match (method, path) {
        ("GET", "/health") => (200, "OK".into()),
        ("POST", "/protocol-stats") => {
            if !headers
                .get("content-type")
                .is_some_and(|t| t.starts_with("application/json"))
            {
                return (400, "{\"error\":\"content type\"}".into());
            }
            match check_protocol_stats(body) {
                Ok(()) => (201, "{}".into()),
                Err(e) => (400, serde_json::json!({ "error": e }).to_string()),
            }
        }
        ("POST", "/record-metrics") => {
            let Some(items) = body.as_array() else {
                return (400, "{\"error\":\"not an array\"}".into());
            };
            let mut errors = Vec::new();
            for item in items {
                if let Err(e) = check_item(item, allowed) {
                    errors.push(serde_json::json!({ "Id": item.get("id"), "Error": e }));
                }
            }
            (201, Value::Array(errors).to_string())
        }
        _ => (404, "404 page not found\n".into()),
    }
}

/// An object's member names, sorted.
fn keys(v: &Value) -> Option<Vec<&str>> {
    v.as_object().map(|o| {
        let mut k: Vec<&str> = o.keys().map(String::as_str).collect();
        k.sort_unstable();
        k
    })
}

fn is_count(v: &Value) -> bool {
    v.as_u64().is_some()
}

/// `ProtocolStats`: exactly its six members, each metric exactly its four numbers.
pub fn check_protocol_stats(v: &Value) -> Result<(), String> {
    if keys(v).as_deref() != Some(&STATS_KEYS[..]) {
        return Err(format!("members {:?}, want {STATS_KEYS:?}", keys(v)));
    }
    if v["hostID"].as_str().is_none_or(str::is_empty) {
        return Err("hostID is not a string".into());
    }
    for name in [
        "relay",
        "store",
        "filter-push",
        "filter-subscribe",
        "lightpush",
    ] {
        let m = &v[name];
        if keys(m).as_deref() != Some(&METRIC_KEYS[..]) {
            return Err(format!("{name}: members {:?}", keys(m)));
        }
        if !is_count(&m["totalIn"]) || !is_count(&m["totalOut"]) {
            return Err(format!("{name}: totals are not int64 counts"));
        }
        if !m["rateIn"].is_number() || !m["rateOut"].is_number() {
            return Err(format!("{name}: rates are not numbers"));
        }
    }
    Ok(())
}

/// A `/record-metrics` item: `id` int, `telemetry_type` string, `telemetry_data`; for
/// `BandwidthUsage`, the proposed record's exact shape.
fn check_item(item: &Value, allowed: &BTreeSet<String>) -> Result<(), String> {
    let want = ["id", "telemetry_data", "telemetry_type"];
    if keys(item).as_deref() != Some(&want[..]) || !is_count(&item["id"]) {
        return Err(format!("item members {:?}", keys(item)));
    }
    match item["telemetry_type"].as_str() {
        Some("BandwidthUsage") => check_usage(&item["telemetry_data"], allowed),
        Some(t) => Err(format!("Unknown telemetry type: {t}")),
        None => Err("telemetry_type is not a string".into()),
    }
}

fn check_usage(d: &Value, allowed: &BTreeSet<String>) -> Result<(), String> {
    if keys(d).as_deref() != Some(&USAGE_KEYS[..]) {
        return Err(format!("BandwidthUsage members {:?}", keys(d)));
    }
    if !d["hostID"].is_string()
        || !d["windowStart"].is_i64()
        || !is_count(&d["windowSecs"])
        || !is_count(&d["part"])
    {
        return Err("BandwidthUsage header types".into());
    }
    let rows = d["rows"].as_array().ok_or("rows is not an array")?;
    for r in rows {
        let ks = keys(r).ok_or("a row is not an object")?;
        for k in &ks {
            if !ROW_KEYS.contains(k) && !allowed.contains(*k) {
                return Err(format!("row member {k} is not allowed"));
            }
        }
        for k in ROW_KEYS {
            if !ks.contains(&k) {
                return Err(format!("row member {k} missing"));
            }
        }
        for k in ["category", "kind", "direction", "method"] {
            if !r[k].is_string() {
                return Err(format!("row {k} is not a string"));
            }
        }
        for k in ["bytes", "packets", "messages"] {
            if !is_count(&r[k]) {
                return Err(format!("row {k} is not a count"));
            }
        }
    }
    Ok(())
}
