//! The thread that empties the spool into the telemetry service: it reads the oldest records,
//! sends each `ProtocolStats` on its own and the `BandwidthUsage` items in batches, paced by the
//! token bucket, retrying with backoff until the service answers, and acknowledges them in the
//! spool only then (at least once: a record sent but not acknowledged goes again, same key).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::client::{Backoff, Client, ClientConfig, Outcome, Retry, TokenBucket};
use super::records::Route;
use super::spool::{Envelope, Pos, Spool};

/// Most records read from the spool per round.
const ROUND_RECORDS: usize = 256;
/// Most `/record-metrics` items per request, and most body bytes.
const BATCH_ITEMS: usize = 100;
const BATCH_BYTES: usize = 1 << 20;
/// How often an idle sender looks at the spool when nobody woke it.
const IDLE_POLL: Duration = Duration::from_secs(1);
/// Step of the sleeps that watch for an abort.
const SLEEP_STEP: Duration = Duration::from_millis(50);

/// What the sender did so far.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Delivery {
    /// HTTP requests made, answered or not.
    pub requests: u64,
    /// Requests that failed and were tried again.
    pub retries: u64,
    /// Answers 429 (the service's rate limit).
    pub rate_limited: u64,
    /// Records the service accepted.
    pub delivered: u64,
    /// Records the service refused with a 4xx (dropped: they can never succeed as they are).
    pub rejected: u64,
    /// Per-item errors `/record-metrics` answered for records it received.
    pub item_errors: u64,
    /// The last failure, while the service is failing; cleared by the next success.
    pub failing: Option<String>,
}

/// What the sink and the sender thread share.
pub struct Shared {
    pub spool: Mutex<Spool>,
    /// Signalled when records are appended, and when the sender acknowledges some.
    pub changed: Condvar,
    /// Set when no more records come: the sender returns once the spool is empty.
    pub closing: AtomicBool,
    /// Set to stop now, leaving what is unsent in the spool.
    pub abort: AtomicBool,
    pub delivery: Mutex<Delivery>,
}

impl Shared {
    /// Shares `spool` with a sender.
    pub fn new(spool: Spool) -> Shared {
        Shared {
            spool: Mutex::new(spool),
            changed: Condvar::new(),
            closing: AtomicBool::new(false),
            abort: AtomicBool::new(false),
            delivery: Mutex::new(Delivery::default()),
        }
    }

    /// The spool, even if a thread panicked holding it (its state is on disk anyway).
    pub fn spool(&self) -> MutexGuard<'_, Spool> {
        self.spool.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A copy of the delivery counters.
    pub fn delivery(&self) -> Delivery {
        self.delivery
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn count(&self, f: impl FnOnce(&mut Delivery)) {
        f(&mut self.delivery.lock().unwrap_or_else(PoisonError::into_inner));
    }
}

/// One request: a route and the records it carries.
struct Request<'a> {
    route: Route,
    records: Vec<&'a Envelope>,
}

impl Request<'_> {
    /// The body: the `ProtocolStats` object, or the JSON array of items.
    fn body(&self) -> Vec<u8> {
        match self.route {
            Route::ProtocolStats => self
                .records
                .first()
                .map(|r| r.body.to_string().into_bytes())
                .unwrap_or_default(),
            Route::RecordMetrics => {
                let items: Vec<&serde_json::Value> = self.records.iter().map(|r| &r.body).collect();
                serde_json::to_vec(&items).unwrap_or_default()
            }
        }
    }
}

/// Splits a round into requests: each `ProtocolStats` alone, the items in batches.
fn requests(round: &[(Pos, Envelope)]) -> Vec<Request<'_>> {
    let mut out = Vec::new();
    let mut batch: Vec<&Envelope> = Vec::new();
    let mut batch_bytes = 0;
    for (_, e) in round {
        match e.route {
            Route::ProtocolStats => out.push(Request {
                route: Route::ProtocolStats,
                records: vec![e],
            }),
            Route::RecordMetrics => {
                let size = e.body.to_string().len();
                if !batch.is_empty()
                    && (batch.len() >= BATCH_ITEMS || batch_bytes + size > BATCH_BYTES)
                {
                    out.push(Request {
                        route: Route::RecordMetrics,
                        records: std::mem::take(&mut batch),
                    });
                    batch_bytes = 0;
                }
                batch_bytes += size;
                batch.push(e);
            }
        }
    }
    if !batch.is_empty() {
        out.push(Request {
            route: Route::RecordMetrics,
            records: batch,
        });
    }
    out
}

/// Runs the sender until the spool is empty after closing, or an abort.
pub fn run(shared: &Shared, url: &str, cfg: &ClientConfig) {
    let client = Client::new(url, cfg);
    let mut bucket = TokenBucket::new(cfg.rate_per_sec);
    let mut backoff = Backoff::new(cfg.backoff_base, cfg.backoff_max);
    while !shared.abort.load(Ordering::Relaxed) {
        let round = {
            let spool = shared.spool();
            match spool.peek(ROUND_RECORDS) {
                Ok(r) if r.is_empty() => {
                    if shared.closing.load(Ordering::Relaxed) {
                        return;
                    }
                    let _unused = shared
                        .changed
                        .wait_timeout(spool, IDLE_POLL)
                        .unwrap_or_else(PoisonError::into_inner);
                    continue;
                }
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(
                        "telemetry: cannot read the spool, stopping the forwarder: {e}"
                    );
                    return;
                }
            }
        };
        let Some(&(last, _)) = round.last() else {
            continue;
        };
        for req in requests(&round) {
            if !send(shared, &client, &mut bucket, &mut backoff, &req) {
                return;
            }
        }
        let acked = shared.spool().ack(last, round.len() as u64);
        if let Err(e) = acked {
            tracing::error!(
                "telemetry: cannot record progress in the spool, stopping the forwarder: {e}"
            );
            return;
        }
        shared.changed.notify_all();
    }
}

/// Sends one request until the service answers; false if aborted first.
fn send(
    shared: &Shared,
    client: &Client,
    bucket: &mut TokenBucket,
    backoff: &mut Backoff,
    req: &Request<'_>,
) -> bool {
    let body = req.body();
    let key = match req.route {
        Route::ProtocolStats => req.records.first().map(|r| r.key.as_str()),
        Route::RecordMetrics => None,
    };
    let n = req.records.len() as u64;
    let mut attempt = 0u32;
    loop {
        if !wait_for_token(shared, bucket) {
            return false;
        }
        shared.count(|d| d.requests += 1);
        let answer = client.post(req.route, &body, key);
        bucket.answered(Instant::now());
        let retry: Retry = match answer {
            Ok(outcome) => {
                delivered(shared, req, n, attempt, outcome);
                return true;
            }
            Err(r) => r,
        };
        attempt += 1;
        let delay = retry.after.unwrap_or_default().max(backoff.delay(attempt));
        let pending = shared.spool().pending();
        if attempt == 1 {
            tracing::warn!(
                "telemetry: {}; retrying with backoff ({pending} records spooled)",
                retry.reason
            );
        } else {
            tracing::info!(
                "telemetry: attempt {attempt} failed: {}; next in {:.1} s",
                retry.reason,
                delay.as_secs_f64()
            );
        }
        shared.count(|d| {
            d.retries += 1;
            d.rate_limited += u64::from(retry.rate_limited);
            d.failing = Some(retry.reason.clone());
        });
        if !sleep_unless_aborted(shared, delay) {
            return false;
        }
    }
}

/// Counts an answered request and says so when it ends an outage.
fn delivered(shared: &Shared, req: &Request<'_>, n: u64, attempts: u32, outcome: Outcome) {
    if attempts > 0 {
        tracing::info!(
            "telemetry: {} answers again after {attempts} failed attempts",
            req.route.path()
        );
    }
    match outcome {
        Outcome::Delivered { item_errors } => {
            if let Some(first) = item_errors.first() {
                tracing::warn!(
                    "telemetry: {} of {n} items were received with errors, e.g. '{first}' (a service without the BandwidthUsage extension answers this way)",
                    item_errors.len()
                );
            }
            shared.count(|d| {
                d.delivered += n;
                d.item_errors += item_errors.len() as u64;
                d.failing = None;
            });
        }
        Outcome::Rejected { status, body } => {
            tracing::error!(
                "telemetry: {} refused {n} records with HTTP {status} ({}); they are dropped",
                req.route.path(),
                body.trim()
            );
            shared.count(|d| {
                d.rejected += n;
                d.failing = None;
            });
        }
    }
}

/// Waits for the bucket's token; false if aborted first.
fn wait_for_token(shared: &Shared, bucket: &mut TokenBucket) -> bool {
    loop {
        match bucket.try_take(Instant::now()) {
            Ok(()) => return true,
            Err(wait) => {
                if !sleep_unless_aborted(shared, wait) {
                    return false;
                }
            }
        }
    }
}

/// Sleeps `d` in small steps; false if an abort came meanwhile.
fn sleep_unless_aborted(shared: &Shared, d: Duration) -> bool {
    let end = Instant::now() + d;
    loop {
        if shared.abort.load(Ordering::Relaxed) {
            return false;
        }
        let now = Instant::now();
        if now >= end {
            return true;
        }
        std::thread::sleep((end - now).min(SLEEP_STEP));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(route: Route, n: usize) -> (Pos, Envelope) {
        (
            Pos::default(),
            Envelope {
                route,
                key: format!("k{n}"),
                window_start_us: 0,
                window_secs: 10,
                part: 0,
                body: serde_json::json!({"id": n}),
            },
        )
    }

    #[test]
    fn stats_go_alone_and_items_in_batches() {
        let mut round = Vec::new();
        for i in 0..150 {
            round.push(env(Route::ProtocolStats, i));
            round.push(env(Route::RecordMetrics, i));
        }
        let reqs = requests(&round);
        let stats = reqs
            .iter()
            .filter(|r| r.route == Route::ProtocolStats)
            .count();
        let batches: Vec<usize> = reqs
            .iter()
            .filter(|r| r.route == Route::RecordMetrics)
            .map(|r| r.records.len())
            .collect();
        assert_eq!(stats, 150);
        assert_eq!(batches, [100, 50]);
        let body: serde_json::Value =
            serde_json::from_slice(&reqs[reqs.len() - 1].body()).expect("json");
        assert_eq!(body.as_array().map(Vec::len), Some(50));
        assert_eq!(body[0]["id"], 100);
    }
}
