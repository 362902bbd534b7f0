//! The HTTP side of the forwarder: a client-side token bucket that keeps under the service's
//! per-IP limit (10 requests/s, burst 1), exponential backoff with jitter, and one POST that
//! says whether to retry.

use std::hash::{BuildHasher, RandomState};
use std::time::{Duration, Instant};

use super::records::Route;

/// The telemetry service's rate limit per client IP, requests per second (`RATE_LIMIT`).
pub const SERVICE_RATE_PER_SEC: f64 = 10.0;

/// How the client paces and retries.
#[derive(Clone, Debug)]
pub struct ClientConfig {
    /// Requests per second the client allows itself (token bucket, burst 1): 9, under the
    /// service's 10 so that network jitter does not make two requests arrive too close.
    pub rate_per_sec: f64,
    /// First retry delay; each further retry doubles it, up to `backoff_max`.
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Whole-request timeout (connect, send, receive).
    pub timeout: Duration,
}

impl Default for ClientConfig {
    fn default() -> ClientConfig {
        ClientConfig {
            rate_per_sec: SERVICE_RATE_PER_SEC * 0.9,
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(60),
            timeout: Duration::from_secs(30),
        }
    }
}

/// A token bucket holding at most one token, refilled at `rate` per second.
#[derive(Clone, Debug)]
pub struct TokenBucket {
    interval: Duration,
    /// When the next token is available.
    next: Option<Instant>,
}

impl TokenBucket {
    /// A bucket allowing `rate_per_sec` requests per second, burst 1.
    pub fn new(rate_per_sec: f64) -> TokenBucket {
        TokenBucket {
            interval: Duration::from_secs_f64(1.0 / rate_per_sec.max(0.001)),
            next: None,
        }
    }

    /// Takes the token at `now` if there is one; otherwise how long until there is.
    pub fn try_take(&mut self, now: Instant) -> Result<(), Duration> {
        match self.next {
            Some(next) if next > now => Err(next - now),
            _ => {
                self.next = Some(now + self.interval);
                Ok(())
            }
        }
    }

    /// Restarts the interval when an answer (or a failure) comes back at `now`: requests then
    /// reach the service at least one interval apart however long each one took in transit.
    pub fn answered(&mut self, now: Instant) {
        let next = now + self.interval;
        self.next = Some(self.next.map_or(next, |n| n.max(next)));
    }

    /// Waits for the token and takes it.
    pub fn take(&mut self) {
        while let Err(wait) = self.try_take(Instant::now()) {
            std::thread::sleep(wait);
        }
    }
}

/// Exponential backoff with jitter: retry `n` (from 1) waits a random time in `[d/2, d]` with
/// `d = min(base · 2^(n-1), max)`, so many clients failing together do not retry together.
#[derive(Clone, Debug)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    rng: u64,
}

impl Backoff {
    /// A backoff seeded from the process's random hasher keys.
    pub fn new(base: Duration, max: Duration) -> Backoff {
        let seed = RandomState::new().hash_one(std::process::id()) | 1;
        Backoff {
            base,
            max,
            rng: seed,
        }
    }

    /// The delay before retry `attempt` (1 for the first retry).
    pub fn delay(&mut self, attempt: u32) -> Duration {
        let exp = attempt.saturating_sub(1).min(30);
        let d = self.base.saturating_mul(1 << exp).min(self.max);
        let half = d / 2;
        let span = u64::try_from((d - half).as_micros()).unwrap_or(u64::MAX);
        let jitter = if span == 0 {
            0
        } else {
            self.next() % (span + 1)
        };
        half + Duration::from_micros(jitter)
    }

    /// xorshift64*.
    fn next(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
}

/// What the service made of a request it answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx. For `/record-metrics`, the per-item errors the service listed (the records were
    /// received; as with status-go they are not sent again).
    Delivered { item_errors: Vec<String> },
    /// A 4xx other than 408/429: the request can never succeed as it is.
    Rejected { status: u16, body: String },
}

/// Why a request should be tried again.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Retry {
    pub reason: String,
    /// The service asked to slow down (429).
    pub rate_limited: bool,
    /// The delay the service asked for (`Retry-After`), if any.
    pub after: Option<Duration>,
}

/// Posts records to one telemetry service.
pub struct Client {
    agent: ureq::Agent,
    base: String,
}

/// Most bytes of an error body kept for messages.
const BODY_EXCERPT: usize = 300;

impl Client {
    /// A client for the service at `base` (e.g. `https://telemetry.status.im`).
    pub fn new(base: &str, cfg: &ClientConfig) -> Client {
        let config = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(cfg.timeout))
            .user_agent(concat!("wakuprof/", env!("CARGO_PKG_VERSION")))
            .build();
        Client {
            agent: ureq::Agent::new_with_config(config),
            base: base.trim_end_matches('/').to_string(),
        }
    }

    /// POSTs a JSON body to `route`, with an `Idempotency-Key` header when given.
    pub fn post(&self, route: Route, body: &[u8], key: Option<&str>) -> Result<Outcome, Retry> {
        let url = format!("{}{}", self.base, route.path());
        let mut req = self
            .agent
            .post(&url)
            .header("Content-Type", "application/json");
        if let Some(k) = key {
            req = req.header("Idempotency-Key", k);
        }
        let mut resp = req.send(body).map_err(|e| Retry {
            reason: format!("{url}: {e}"),
            rate_limited: false,
            after: None,
        })?;
        let status = resp.status().as_u16();
        let after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let text = resp
            .body_mut()
            .with_config()
            .limit(1 << 20)
            .read_to_string()
            .unwrap_or_default();
        let excerpt: String = text.chars().take(BODY_EXCERPT).collect();
        match status {
            200..=299 => Ok(Outcome::Delivered {
                item_errors: item_errors(route, &text),
            }),
            408 | 429 => Err(Retry {
                reason: format!("{url}: HTTP {status} {}", excerpt.trim()),
                rate_limited: status == 429,
                after,
            }),
            400..=499 => Ok(Outcome::Rejected {
                status,
                body: excerpt,
            }),
            _ => Err(Retry {
                reason: format!("{url}: HTTP {status} {}", excerpt.trim()),
                rate_limited: false,
                after,
            }),
        }
    }
}

/// The per-item errors of a `/record-metrics` answer (`[{"Id": …, "Error": "…"}]` or `null`).
fn item_errors(route: Route, text: &str) -> Vec<String> {
    if route != Route::RecordMetrics {
        return Vec::new();
    }
    let Ok(serde_json::Value::Array(items)) = serde_json::from_str(text) else {
        return Vec::new();
    };
    items
        .iter()
        .map(|i| {
            i.get("Error")
                .and_then(|e| e.as_str())
                .map_or_else(|| i.to_string(), str::to_string)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_allows_one_request_per_interval() {
        let mut b = TokenBucket::new(10.0);
        let t0 = Instant::now();
        assert_eq!(b.try_take(t0), Ok(()));
        assert_eq!(b.try_take(t0), Err(Duration::from_millis(100)));
        assert_eq!(
            b.try_take(t0 + Duration::from_millis(60)),
            Err(Duration::from_millis(40))
        );
        assert_eq!(b.try_take(t0 + Duration::from_millis(100)), Ok(()));
        // an answer that took long pushes the next token back
        b.answered(t0 + Duration::from_millis(150));
        assert_eq!(
            b.try_take(t0 + Duration::from_millis(200)),
            Err(Duration::from_millis(50))
        );
        // no burst after a pause: one token, then the interval again
        let later = t0 + Duration::from_secs(5);
        assert_eq!(b.try_take(later), Ok(()));
        assert!(b.try_take(later + Duration::from_millis(99)).is_err());
    }

    #[test]
    fn requests_through_the_bucket_stay_under_the_rate() {
        let mut b = TokenBucket::new(ClientConfig::default().rate_per_sec);
        let start = Instant::now();
        for _ in 0..6 {
            b.take();
        }
        let took = start.elapsed();
        assert!(
            took >= Duration::from_millis(5 * 111),
            "6 requests in {took:?}: faster than 9/s"
        );
    }

    #[test]
    fn backoff_doubles_with_jitter_and_caps() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_secs(2));
        for attempt in 1..=10u32 {
            let full =
                Duration::from_millis(100 * (1u64 << (attempt - 1))).min(Duration::from_secs(2));
            for _ in 0..50 {
                let d = b.delay(attempt);
                assert!(
                    d >= full / 2 && d <= full,
                    "attempt {attempt}: {d:?} not in [{:?}, {full:?}]",
                    full / 2
                );
            }
        }
        let samples: std::collections::BTreeSet<Duration> = (0..20).map(|_| b.delay(3)).collect();
        assert!(samples.len() > 10, "jittered: {samples:?}");
    }

    #[test]
    fn item_errors_are_read_from_record_metrics_answers() {
        assert_eq!(
            item_errors(
                Route::RecordMetrics,
                r#"[{"Id": 5, "Error": "Unknown telemetry type: BandwidthUsage"}]"#
            ),
            ["Unknown telemetry type: BandwidthUsage"]
        );
        assert!(item_errors(Route::RecordMetrics, "null").is_empty());
        assert!(item_errors(Route::ProtocolStats, r#"{"error": ""}"#).is_empty());
    }
}
