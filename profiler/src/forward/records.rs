//! The JSON the forwarder sends to the status-im telemetry service (protocols.md §9): the
//! `ProtocolStats` object of `POST /protocol-stats` exactly as the service accepts it today, and the
//! proposed `BandwidthUsage` record of `POST /record-metrics` carrying the fine breakdown.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::account::record::{Category, Direction, Row};

/// `telemetry_type` of the fine-breakdown record (a proposed extension of the service).
pub const BANDWIDTH_USAGE: &str = "BandwidthUsage";

/// Bytes in and out of one protocol over one window, and the rates (`types.Metric`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metric {
    #[serde(rename = "totalIn")]
    pub total_in: i64,
    #[serde(rename = "totalOut")]
    pub total_out: i64,
    /// Bytes per second received over the window.
    #[serde(rename = "rateIn")]
    pub rate_in: f64,
    /// Bytes per second sent over the window.
    #[serde(rename = "rateOut")]
    pub rate_out: f64,
}

/// The body of `POST /protocol-stats` (`types.ProtocolStats`): the five protocols status-go
/// reports, for one window of one host.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProtocolStats {
    /// The host's random id (never a peer id).
    #[serde(rename = "hostID")]
    pub host_id: String,
    pub relay: Metric,
    pub store: Metric,
    #[serde(rename = "filter-push")]
    pub filter_push: Metric,
    #[serde(rename = "filter-subscribe")]
    pub filter_subscribe: Metric,
    pub lightpush: Metric,
}

/// Which of the five `ProtocolStats` members a row's bytes belong to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    Relay,
    Store,
    FilterPush,
    FilterSubscribe,
    Lightpush,
}

/// The `ProtocolStats` member of a row: relay is `relay_control` + `relay_chat`; the others are
/// `waku_service` rows whose protocol id is a store, filter-push, filter-subscribe or lightpush id
/// (any version).
pub fn slot(category: Category, protocol: &str) -> Option<Slot> {
    match category {
        Category::RelayControl | Category::RelayChat => Some(Slot::Relay),
        Category::WakuService => {
            let id = protocol.strip_prefix("/vac/waku/")?;
            let name = id.split('/').next()?;
            match name {
                "store" | "store-query" => Some(Slot::Store),
                "filter-push" => Some(Slot::FilterPush),
                "filter-subscribe" => Some(Slot::FilterSubscribe),
                "lightpush" => Some(Slot::Lightpush),
                _ => None,
            }
        }
        _ => None,
    }
}

impl ProtocolStats {
    /// Adds a row's wire bytes to its member, if it has one.
    pub fn add(&mut self, category: Category, protocol: &str, direction: Direction, bytes: u64) {
        let Some(slot) = slot(category, protocol) else {
            return;
        };
        let m = match slot {
            Slot::Relay => &mut self.relay,
            Slot::Store => &mut self.store,
            Slot::FilterPush => &mut self.filter_push,
            Slot::FilterSubscribe => &mut self.filter_subscribe,
            Slot::Lightpush => &mut self.lightpush,
        };
        let bytes = i64::try_from(bytes).unwrap_or(i64::MAX);
        match direction {
            Direction::In => m.total_in = m.total_in.saturating_add(bytes),
            Direction::Out => m.total_out = m.total_out.saturating_add(bytes),
        }
    }

    /// Fills the rates: totals divided by the window length.
    pub fn set_rates(&mut self, window_secs: u32) {
        let secs = f64::from(window_secs.max(1));
        for m in [
            &mut self.relay,
            &mut self.store,
            &mut self.filter_push,
            &mut self.filter_subscribe,
            &mut self.lightpush,
        ] {
            m.rate_in = m.total_in as f64 / secs;
            m.rate_out = m.total_out as f64 / secs;
        }
    }
}

/// One item of the `POST /record-metrics` array (`types.TelemetryRequest`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetryItem<T> {
    /// The idempotency key of the record as an integer below 2^53 (the service's `id: int`).
    pub id: u64,
    pub telemetry_type: String,
    pub telemetry_data: T,
}

/// The fine breakdown of one window of one host: the proposed `BandwidthUsage` record.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BandwidthUsage {
    #[serde(rename = "hostID")]
    pub host_id: String,
    /// Window start, seconds since the Unix epoch (UTC).
    #[serde(rename = "windowStart")]
    pub window_start: i64,
    #[serde(rename = "windowSecs")]
    pub window_secs: u32,
    /// 0 for a window's first record; rows of the same window that arrived after it had been
    /// sent go in parts 1, 2, …, to be added to it.
    pub part: u32,
    pub rows: Vec<UsageRow>,
}

/// One row of a [`BandwidthUsage`]: the usage table aggregated over endpoints and owners. The
/// optional fields are only present when `--telemetry-include` names them.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageRow {
    pub category: String,
    pub kind: String,
    pub cluster_id: Option<u16>,
    pub shard: Option<u16>,
    pub direction: String,
    pub method: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_addr: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_addr: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_port: Option<u16>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pubsub_topic: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_topic: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comm: Option<String>,
    pub bytes: u64,
    pub packets: u64,
    pub messages: u64,
}

/// Private fields a user may allow to leave the host (`--telemetry-include`); none by default.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Include {
    pub addresses: bool,
    pub ports: bool,
    pub pubsub_topics: bool,
    pub content_topics: bool,
    pub processes: bool,
}

impl Include {
    /// The names `--telemetry-include` accepts.
    pub const NAMES: [&'static str; 5] = [
        "addresses",
        "ports",
        "pubsub-topics",
        "content-topics",
        "processes",
    ];

    /// Parses a comma-separated list of [`Include::NAMES`].
    pub fn parse(list: &str) -> Result<Include, String> {
        let mut inc = Include::default();
        for name in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match name {
                "addresses" => inc.addresses = true,
                "ports" => inc.ports = true,
                "pubsub-topics" => inc.pubsub_topics = true,
                "content-topics" => inc.content_topics = true,
                "processes" => inc.processes = true,
                other => {
                    return Err(format!(
                        "'{other}' is not something the forwarder can include (one of: {})",
                        Include::NAMES.join(", ")
                    ));
                }
            }
        }
        Ok(inc)
    }

    /// The row's key as sent: the fine-breakdown fields plus what the user allowed.
    pub fn key(&self, r: &Row) -> UsageRow {
        let ep = &r.endpoints;
        let when = |on: bool, v: Option<String>| if on { v } else { None };
        UsageRow {
            category: r.label.category.as_str().to_string(),
            kind: r.label.kind.to_string(),
            cluster_id: r.label.cluster_id,
            shard: r.label.shard,
            direction: r.direction.as_str().to_string(),
            method: r.label.method.as_str().to_string(),
            local_addr: when(self.addresses, ep.local_addr.map(|a| a.to_string())),
            remote_addr: when(self.addresses, ep.remote_addr.map(|a| a.to_string())),
            local_port: ep.local_port.filter(|_| self.ports),
            remote_port: ep.remote_port.filter(|_| self.ports),
            pubsub_topic: when(
                self.pubsub_topics,
                r.label.pubsub_topic.as_deref().map(str::to_string),
            ),
            content_topic: when(
                self.content_topics,
                r.label.content_topic.as_deref().map(str::to_string),
            ),
            comm: when(self.processes, r.owner.comm.as_deref().map(str::to_string)),
            bytes: 0,
            packets: 0,
            messages: 0,
        }
    }
}

/// The kinds of record sent per window.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Route {
    /// `POST /protocol-stats`, one object per request.
    ProtocolStats,
    /// `POST /record-metrics`, items batched in one array.
    RecordMetrics,
}

impl Route {
    /// The URL path of the route.
    pub fn path(self) -> &'static str {
        match self {
            Route::ProtocolStats => "/protocol-stats",
            Route::RecordMetrics => "/record-metrics",
        }
    }

    /// The record type named in the idempotency key.
    fn record_type(self) -> &'static str {
        match self {
            Route::ProtocolStats => "ProtocolStats",
            Route::RecordMetrics => BANDWIDTH_USAGE,
        }
    }
}

/// Who makes the records: the host's stored random id, and the run they come from (random per
/// live process, so two runs sharing a window never share a key; empty for a replay, so
/// replaying the same files again yields the same keys).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Origin {
    pub host_id: String,
    pub run: String,
}

/// The idempotency key of a record: SHA-256 over host id, run, window, record type and part, so
/// a record keeps its key however often it is sent and a receiver can drop repeats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Key([u8; 32]);

impl Key {
    /// The key of `route`'s record for part `part` of a window.
    pub fn new(
        origin: &Origin,
        window_start_us: i64,
        window_secs: u32,
        route: Route,
        part: u32,
    ) -> Key {
        let mut h = Sha256::new();
        h.update(b"wakuprof-telemetry-v1\0");
        h.update(origin.host_id.as_bytes());
        h.update([0]);
        h.update(origin.run.as_bytes());
        h.update([0]);
        h.update(window_start_us.to_be_bytes());
        h.update(window_secs.to_be_bytes());
        h.update(route.record_type().as_bytes());
        h.update([0]);
        h.update(part.to_be_bytes());
        Key(h.finalize().into())
    }

    /// The key as 32 hex digits (its first 128 bits), for the `Idempotency-Key` header.
    pub fn hex(&self) -> String {
        self.0[..16].iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The key as an integer below 2^53 (exact in JSON numbers everywhere), for an item's `id`.
    pub fn id(&self) -> u64 {
        let mut first = [0u8; 8];
        first.copy_from_slice(&self.0[..8]);
        u64::from_be_bytes(first) & ((1 << 53) - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_stats_has_exactly_the_service_fields() {
        let mut ps = ProtocolStats {
            host_id: "h".into(),
            ..ProtocolStats::default()
        };
        ps.add(
            Category::RelayChat,
            "/vac/waku/relay/2.0.0",
            Direction::In,
            100,
        );
        ps.add(
            Category::RelayControl,
            "/vac/waku/relay/2.0.0",
            Direction::Out,
            50,
        );
        ps.add(
            Category::WakuService,
            "/vac/waku/store-query/3.0.0",
            Direction::In,
            7,
        );
        ps.add(
            Category::WakuService,
            "/vac/waku/store/2.0.0-beta4",
            Direction::In,
            3,
        );
        ps.add(
            Category::WakuService,
            "/vac/waku/lightpush/3.0.0",
            Direction::Out,
            9,
        );
        ps.add(
            Category::WakuService,
            "/vac/waku/peer-exchange/2.0.0-alpha1",
            Direction::Out,
            1000,
        );
        ps.add(Category::Libp2p, "/ipfs/id/1.0.0", Direction::Out, 1000);
        ps.set_rates(10);
        let v = serde_json::to_value(&ps).expect("serializes");
        let keys: Vec<&str> = v
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "filter-push",
                "filter-subscribe",
                "hostID",
                "lightpush",
                "relay",
                "store"
            ]
        );
        assert_eq!(
            v["relay"],
            serde_json::json!({"totalIn": 100, "totalOut": 50, "rateIn": 10.0, "rateOut": 5.0})
        );
        assert_eq!(v["store"]["totalIn"], 10);
        assert_eq!(v["lightpush"]["totalOut"], 9);
        assert_eq!(v["filter-push"]["totalIn"], 0);
    }

    #[test]
    fn slots_by_protocol_id() {
        let ws = Category::WakuService;
        assert_eq!(
            slot(ws, "/vac/waku/filter-push/2.0.0-beta1"),
            Some(Slot::FilterPush)
        );
        assert_eq!(
            slot(ws, "/vac/waku/filter-subscribe/2.0.0-beta1"),
            Some(Slot::FilterSubscribe)
        );
        assert_eq!(
            slot(ws, "/vac/waku/lightpush/2.0.0-beta1"),
            Some(Slot::Lightpush)
        );
        assert_eq!(slot(ws, "/vac/waku/metadata/1.0.0"), None);
        assert_eq!(slot(ws, "/vac/waku/store-sync"), None);
        assert_eq!(slot(Category::Other, "/vac/waku/store/2.0.0-beta4"), None);
        assert_eq!(
            slot(Category::RelayControl, "/meshsub/1.1.0"),
            Some(Slot::Relay)
        );
    }

    #[test]
    fn keys_are_deterministic_and_distinct() {
        let origin = |host: &str, run: &str| Origin {
            host_id: host.into(),
            run: run.into(),
        };
        let o = origin("host", "");
        let a = Key::new(&o, 1_000_000, 10, Route::ProtocolStats, 0);
        assert_eq!(a, Key::new(&o, 1_000_000, 10, Route::ProtocolStats, 0));
        assert_ne!(a, Key::new(&o, 1_000_000, 10, Route::RecordMetrics, 0));
        assert_ne!(a, Key::new(&o, 1_000_000, 10, Route::ProtocolStats, 1));
        assert_ne!(a, Key::new(&o, 2_000_000, 10, Route::ProtocolStats, 0));
        let other = origin("other", "");
        assert_ne!(a, Key::new(&other, 1_000_000, 10, Route::ProtocolStats, 0));
        let run = origin("host", "run-2");
        assert_ne!(a, Key::new(&run, 1_000_000, 10, Route::ProtocolStats, 0));
        assert!(a.id() < 1 << 53);
        assert_eq!(a.hex().len(), 32);
    }

    #[test]
    fn include_lists() {
        assert_eq!(
            Include::parse("").expect("empty is fine"),
            Include::default()
        );
        let inc = Include::parse("addresses, content-topics").expect("known names");
        assert!(inc.addresses && inc.content_topics && !inc.ports);
        let err = Include::parse("addresses,payloads").expect_err("unknown name");
        assert!(
            err.contains("payloads") && err.contains("content-topics"),
            "{err}"
        );
    }
}
