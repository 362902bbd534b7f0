//! Usage rows summed per window into what is forwarded for it: the five-protocol
//! `ProtocolStats` and the fine `BandwidthUsage` breakdown, aggregated over endpoints and owners
//! unless the user allowed them out.

use std::collections::BTreeMap;

use super::records::{
    BANDWIDTH_USAGE, BandwidthUsage, Include, Key, Origin, ProtocolStats, Route, TelemetryItem,
    UsageRow,
};
use super::spool::Envelope;
use crate::account::record::Row;

/// A window: its start (µs since the epoch) and length (s).
pub type WindowId = (i64, u32);

/// Counters of one sent row.
#[derive(Clone, Copy, Debug, Default)]
struct Sums {
    bytes: u64,
    packets: u64,
    messages: u64,
}

/// One window's rows, summed.
#[derive(Clone, Debug, Default)]
pub struct WindowSums {
    stats: ProtocolStats,
    rows: BTreeMap<UsageRow, Sums>,
}

impl WindowSums {
    /// Wire bytes summed into the window.
    pub fn bytes(&self) -> u64 {
        self.rows.values().map(|s| s.bytes).sum()
    }

    /// The two records of the window (part `part` of it), ready for the spool.
    pub fn envelopes(self, origin: &Origin, window: WindowId, part: u32) -> Vec<Envelope> {
        let (start_us, secs) = window;
        let mut stats = self.stats;
        stats.host_id = origin.host_id.clone();
        stats.set_rates(secs);
        let rows: Vec<UsageRow> = self
            .rows
            .into_iter()
            .map(|(mut r, s)| {
                r.bytes = s.bytes;
                r.packets = s.packets;
                r.messages = s.messages;
                r
            })
            .collect();
        let usage_key = Key::new(origin, start_us, secs, Route::RecordMetrics, part);
        let item = TelemetryItem {
            id: usage_key.id(),
            telemetry_type: BANDWIDTH_USAGE.to_string(),
            telemetry_data: BandwidthUsage {
                host_id: origin.host_id.clone(),
                window_start: start_us.div_euclid(1_000_000),
                window_secs: secs,
                part,
                rows,
            },
        };
        let stats_key = Key::new(origin, start_us, secs, Route::ProtocolStats, part);
        let envelope = |route, key: Key, body| Envelope {
            route,
            key: key.hex(),
            window_start_us: start_us,
            window_secs: secs,
            part,
            body,
        };
        vec![
            envelope(
                Route::ProtocolStats,
                stats_key,
                serde_json::to_value(&stats).unwrap_or_default(),
            ),
            envelope(
                Route::RecordMetrics,
                usage_key,
                serde_json::to_value(&item).unwrap_or_default(),
            ),
        ]
    }
}

/// Open windows, summing rows as they come.
#[derive(Clone, Debug, Default)]
pub struct Windows {
    include: Include,
    open: BTreeMap<WindowId, WindowSums>,
}

impl Windows {
    /// Sums windows keeping the private fields `include` allows.
    pub fn new(include: Include) -> Windows {
        Windows {
            include,
            open: BTreeMap::new(),
        }
    }

    /// Adds rows to their windows.
    pub fn add(&mut self, rows: &[Row]) {
        for r in rows {
            let w = self
                .open
                .entry((r.window_start_us, r.window_secs))
                .or_default();
            w.stats.add(
                r.label.category,
                &r.label.protocol,
                r.direction,
                r.counters.bytes,
            );
            let s = w.rows.entry(self.include.key(r)).or_default();
            s.bytes += r.counters.bytes;
            s.packets += r.counters.packets;
            s.messages += r.counters.messages;
        }
    }

    /// Windows open, oldest first.
    pub fn ids(&self) -> impl Iterator<Item = WindowId> + '_ {
        self.open.keys().copied()
    }

    /// Number of windows open.
    pub fn len(&self) -> usize {
        self.open.len()
    }

    /// Whether no window is open.
    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    /// Closes a window and hands out its sums.
    pub fn take(&mut self, id: WindowId) -> Option<WindowSums> {
        self.open.remove(&id)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::account::record::{Category, Counters, Direction, Endpoints, Label, Owner};

    fn origin(host: &str) -> Origin {
        Origin {
            host_id: host.into(),
            run: String::new(),
        }
    }

    fn row(window: i64, cat: Category, proto: &str, kind: &str, port: u16, bytes: u64) -> Row {
        let mut label = Label::decoded(cat, &Arc::from(proto), &Arc::from(kind));
        label.shard = Some(3);
        label.content_topic = Some(Arc::from("/app/1/chat/proto"));
        Row {
            window_start_us: window,
            window_secs: 10,
            owner: Arc::new(Owner::default()),
            endpoints: Endpoints {
                transport: "tcp",
                local_addr: Some("10.1.2.3".parse().expect("addr")),
                local_port: Some(port),
                remote_addr: Some("192.0.2.7".parse().expect("addr")),
                remote_port: Some(60000),
            },
            label,
            direction: Direction::In,
            counters: Counters {
                bytes,
                packets: 1,
                messages: 1,
                ..Counters::default()
            },
        }
    }

    #[test]
    fn rows_fold_over_endpoints_and_keep_every_byte() {
        let mut w = Windows::new(Include::default());
        let relay = "/vac/waku/relay/2.0.0";
        w.add(&[
            row(0, Category::RelayChat, relay, "message", 1000, 100),
            row(0, Category::RelayChat, relay, "message", 1001, 50),
            row(
                0,
                Category::WakuService,
                "/vac/waku/filter-push/2.0.0-beta1",
                "data",
                1002,
                7,
            ),
            row(10_000_000, Category::Other, "tcp", "data", 1003, 9),
        ]);
        assert_eq!(w.len(), 2);
        let sums = w.take((0, 10)).expect("window 0");
        assert_eq!(sums.bytes(), 157);
        let env = sums.envelopes(&origin("host"), (0, 10), 0);
        let ps = &env[0].body;
        assert_eq!(ps["relay"]["totalIn"], 150);
        assert_eq!(ps["relay"]["rateIn"], 15.0);
        assert_eq!(ps["filter-push"]["totalIn"], 7);
        let data = &env[1].body["telemetry_data"];
        assert_eq!(env[1].body["telemetry_type"], "BandwidthUsage");
        assert_eq!(data["rows"].as_array().expect("rows").len(), 2);
        assert_eq!(data["rows"][0]["category"], "relay_chat");
        assert_eq!(data["rows"][0]["bytes"], 150);
        assert_eq!(data["rows"][0]["packets"], 2);
        assert_eq!(data["rows"][1]["bytes"], 7);
        let text = serde_json::to_string(&env).expect("json");
        for private in [
            "10.1.2.3",
            "192.0.2.7",
            "60000",
            "/app/1/chat",
            "port",
            "addr",
        ] {
            assert!(!text.contains(private), "{private} leaked: {text}");
        }
    }

    #[test]
    fn included_fields_are_sent() {
        let inc = Include::parse("addresses,ports,content-topics").expect("names");
        let mut w = Windows::new(inc);
        w.add(&[row(0, Category::Other, "tcp", "data", 1000, 1)]);
        let env = w
            .take((0, 10))
            .expect("window")
            .envelopes(&origin("h"), (0, 10), 0);
        let r = &env[1].body["telemetry_data"]["rows"][0];
        assert_eq!(r["local_addr"], "10.1.2.3");
        assert_eq!(r["remote_port"], 60000);
        assert_eq!(r["content_topic"], "/app/1/chat/proto");
        assert!(r.get("pubsub_topic").is_none());
    }

    #[test]
    fn parts_get_their_own_keys() {
        let a = WindowSums::default().envelopes(&origin("h"), (0, 10), 0);
        let b = WindowSums::default().envelopes(&origin("h"), (0, 10), 1);
        assert_ne!(a[0].key, b[0].key);
        assert_ne!(a[1].body["id"], b[1].body["id"]);
        assert_eq!(b[1].body["telemetry_data"]["part"], 1);
    }
}
