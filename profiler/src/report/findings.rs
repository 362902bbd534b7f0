//! The rules that turn the report's numbers into plain findings (README "Report" lists them).

use serde::Serialize;

use super::Report;
use super::text::size;

/// One finding: which rule fired and what it says.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Finding {
    /// The rule's name, as the README lists it.
    pub rule: &'static str,
    pub text: String,
}

/// Share of relay control above which gossip (IHAVE + IWANT) "dominates" it, percent.
pub const GOSSIP_PERCENT: f64 = 50.0;
/// Share of all bytes above which one process outside the node dominates, percent.
pub const PROCESS_PERCENT: f64 = 50.0;
/// Deliveries per distinct message above which a shard's duplicates are flagged.
pub const AMPLIFICATION: f64 = 2.0;
/// Share of relay bytes not decoded above which the relay numbers are called inferred, percent.
pub const INFERRED_PERCENT: f64 = 50.0;
/// Share of subscribed time with the mesh below D_low above which a shard is flagged, percent.
pub const BELOW_D_LOW_PERCENT: f64 = 10.0;

/// Every rule, in the order findings are listed.
const RULES: &[fn(&Report, u32) -> Option<Finding>] = &[
    gossip_dominates_control,
    process_outside_node,
    bittorrent_or_rpc,
    duplicates_above_2x,
    relay_mostly_inferred,
    mesh_below_d_low,
    unsubscribed_senders,
];

/// The findings of `report`; `d_low` is the mesh degree the mesh rules count against.
pub fn evaluate(report: &Report, d_low: u32) -> Vec<Finding> {
    RULES.iter().filter_map(|r| r(report, d_low)).collect()
}

fn pct(part: u64, whole: u64) -> f64 {
    100.0 * part as f64 / whole.max(1) as f64
}

/// Bytes of `category` / `kind`.
fn kind_bytes(r: &Report, category: &str, kind: &str) -> u64 {
    r.categories
        .iter()
        .filter(|c| c.category == category)
        .flat_map(|c| &c.kinds)
        .filter(|k| k.name == kind)
        .map(|k| k.bytes)
        .sum()
}

fn category_bytes(r: &Report, category: &str) -> u64 {
    r.categories
        .iter()
        .filter(|c| c.category == category)
        .map(|c| c.bytes)
        .sum()
}

/// `gossip-dominates-control`: IHAVE and IWANT are more than half of relay control.
fn gossip_dominates_control(r: &Report, _: u32) -> Option<Finding> {
    let control = category_bytes(r, "relay_control");
    let gossip = kind_bytes(r, "relay_control", "ihave") + kind_bytes(r, "relay_control", "iwant");
    let share = pct(gossip, control);
    (control > 0 && share > GOSSIP_PERCENT).then(|| Finding {
        rule: "gossip-dominates-control",
        text: format!(
            "gossip (IHAVE/IWANT) is {share:.0} % of relay control ({} of {}): lower the gossip factor or the history length (gossipsub D_lazy, history_gossip), or fewer shards",
            size(gossip),
            size(control)
        ),
    })
}

/// `process-outside-node`: a process with no relay bytes has more than half of all bytes.
fn process_outside_node(r: &Report, _: u32) -> Option<Finding> {
    let p = r
        .processes
        .iter()
        .find(|p| p.relay_bytes == 0 && p.name != super::NO_OWNER)?;
    (p.percent > PROCESS_PERCENT).then(|| Finding {
        rule: "process-outside-node",
        text: format!(
            "{} — a process without Waku relay traffic — has {:.0} % of the bytes ({}): the node is not the one using the bandwidth",
            p.name,
            p.percent,
            size(p.bytes)
        ),
    })
}

/// `bittorrent-or-rpc`: BitTorrent or blockchain RPC traffic is present.
fn bittorrent_or_rpc(r: &Report, _: u32) -> Option<Finding> {
    let parts: Vec<String> = [("bittorrent", "BitTorrent"), ("rpc", "blockchain RPC")]
        .into_iter()
        .filter_map(|(cat, name)| {
            let b = category_bytes(r, cat);
            (b > 0).then(|| format!("{name} {} ({:.1} %)", size(b), pct(b, r.bytes)))
        })
        .collect();
    (!parts.is_empty()).then(|| Finding {
        rule: "bittorrent-or-rpc",
        text: format!("{} present: traffic beside Waku", parts.join(" and ")),
    })
}

/// `duplicates-above-2x`: a shard's published messages arrive more than twice per host.
fn duplicates_above_2x(r: &Report, _: u32) -> Option<Finding> {
    let shards: Vec<String> = r
        .relay_shards
        .iter()
        .filter_map(|s| {
            let a = s.amplification()?;
            (a > AMPLIFICATION).then(|| {
                let shard = s
                    .shard
                    .map_or_else(|| "no shard".into(), |n| format!("shard {n}"));
                format!(
                    "{shard} {a:.2}× ({} duplicates of {} messages)",
                    s.duplicates, s.messages
                )
            })
        })
        .collect();
    (!shards.is_empty()).then(|| Finding {
        rule: "duplicates-above-2x",
        text: format!(
            "each message arrives more than twice: {}; the mesh is denser than needed (D, D_high) or IDONTWANT is not used",
            shards.join(", ")
        ),
    })
}

/// `relay-mostly-inferred`: more than half the relay bytes were not decoded.
fn relay_mostly_inferred(r: &Report, _: u32) -> Option<Finding> {
    let relay = category_bytes(r, "relay_control") + category_bytes(r, "relay_chat");
    (relay > 0 && r.relay_undecoded_percent > INFERRED_PERCENT).then(|| Finding {
        rule: "relay-mostly-inferred",
        text: format!(
            "{:.0} % of the relay bytes are inferred from encrypted frame sizes, not decoded: the control/chat split and shards are estimates (see the confidence column)",
            r.relay_undecoded_percent
        ),
    })
}

/// `mesh-below-d-low`: a subscribed shard's mesh was below D_low for a tenth of the time.
fn mesh_below_d_low(r: &Report, d_low: u32) -> Option<Finding> {
    let lines: Vec<String> = r
        .mesh
        .iter()
        .filter_map(|m| {
            let base = if m.source == crate::account::mesh::NODE_API {
                m.secs
            } else {
                m.subscribed_secs
            };
            let share = 100.0 * m.secs_below_d_low / base.max(1e-9);
            (base > 0.0 && share > BELOW_D_LOW_PERCENT)
                .then(|| format!("{} {share:.0} % of the time", m.name()))
        })
        .collect();
    (!lines.is_empty()).then(|| Finding {
        rule: "mesh-below-d-low",
        text: format!(
            "mesh below D_low ({d_low}) on {}: messages may be late or lost there; check the peers of that shard",
            lines.join(", ")
        ),
    })
}

/// `unsubscribed-senders`: peers publish on a shard the node is not subscribed to.
fn unsubscribed_senders(r: &Report, _: u32) -> Option<Finding> {
    let lines: Vec<String> = r
        .mesh
        .iter()
        .filter(|m| m.unsubscribed_senders > 0)
        .map(|m| format!("{} ({} peers)", m.name(), m.unsubscribed_senders))
        .collect();
    (!lines.is_empty()).then(|| Finding {
        rule: "unsubscribed-senders",
        text: format!(
            "peers send on shards the node is not subscribed to: {}; their bytes are wasted",
            lines.join(", ")
        ),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::account::mesh::{MeshRow, WIRE};
    use crate::account::record::{
        Category, Counters, Direction, Endpoints, Label, Method, Owner, Row,
    };
    use crate::report::{Collector, Filter};
    use crate::sink::Sink;

    /// A row of `bytes` of `category`/`kind` on `shard`, owned by `comm`.
    fn row(category: Category, kind: &str, shard: Option<u16>, bytes: u64, comm: &str) -> Row {
        let mut label = Label::decoded(category, &Arc::from("p"), &Arc::from(kind));
        label.shard = shard;
        Row {
            window_start_us: 1_700_000_000_000_000,
            window_secs: 10,
            owner: Arc::new(Owner {
                comm: Some(Arc::from(comm)),
                pid: Some(1),
                ..Owner::default()
            }),
            endpoints: Endpoints {
                transport: "tcp",
                local_addr: None,
                local_port: None,
                remote_addr: None,
                remote_port: None,
            },
            label,
            direction: Direction::In,
            counters: Counters {
                bytes,
                ..Counters::default()
            },
        }
    }

    fn rules(rows: &[Row], mesh: &[MeshRow]) -> Vec<&'static str> {
        let mut c = Collector::new(Filter::default());
        c.write(rows).unwrap();
        c.mesh(mesh).unwrap();
        c.report(None, 4).findings.iter().map(|f| f.rule).collect()
    }

    const NODE: &str = "wakunode2";

    #[test]
    fn gossip_dominates_control_when_ihave_and_iwant_are_most_of_it() {
        let control = |kind, b| row(Category::RelayControl, kind, Some(32), b, NODE);
        let fired = rules(
            &[
                control("ihave", 600),
                control("iwant", 10),
                control("graft", 400),
            ],
            &[],
        );
        assert_eq!(fired, ["gossip-dominates-control"]);
        assert!(rules(&[control("ihave", 400), control("graft", 600)], &[]).is_empty());
    }

    #[test]
    fn a_process_without_relay_traffic_that_has_most_bytes_is_named() {
        let node = row(Category::RelayChat, "message", Some(1), 400, NODE);
        let other = row(Category::Other, "data", None, 600, "firefox");
        assert_eq!(rules(&[node.clone(), other], &[]), ["process-outside-node"]);
        let small = row(Category::Other, "data", None, 300, "firefox");
        assert!(rules(&[node, small], &[]).is_empty());
    }

    #[test]
    fn bittorrent_or_rpc_fires_on_any_byte_of_them() {
        let node = row(Category::RelayChat, "message", Some(1), 10_000, NODE);
        let bt = row(Category::Bittorrent, "piece", None, 1, NODE);
        assert_eq!(rules(&[node.clone(), bt], &[]), ["bittorrent-or-rpc"]);
        let rpc = row(Category::Rpc, "request", None, 1, NODE);
        assert_eq!(rules(&[node.clone(), rpc], &[]), ["bittorrent-or-rpc"]);
        assert!(rules(&[node], &[]).is_empty());
    }

    #[test]
    fn duplicates_above_twice_per_message_are_flagged_per_shard() {
        let mut chat = row(Category::RelayChat, "message", Some(64), 1000, NODE);
        chat.counters.messages = 7;
        chat.counters.duplicates = 4;
        assert_eq!(rules(&[chat.clone()], &[]), ["duplicates-above-2x"]);
        chat.counters.duplicates = 3;
        assert!(rules(&[chat], &[]).is_empty());
    }

    #[test]
    fn relay_mostly_inferred_counts_relay_bytes_only() {
        let mut inferred = row(Category::RelayChat, "message", Some(1), 600, NODE);
        inferred.label.method = Method::Inferred;
        inferred.label.confidence_permille = 700;
        let decoded = row(Category::RelayControl, "graft", Some(1), 400, NODE);
        assert_eq!(
            rules(&[inferred.clone(), decoded.clone()], &[]),
            ["relay-mostly-inferred"]
        );
        let other = row(Category::Other, "data", None, 5000, NODE);
        let mut half = inferred;
        half.counters.bytes = 400;
        assert!(rules(&[half, decoded, other], &[]).is_empty());
    }

    fn mesh_row(below: f32, unsubscribed_senders: u32) -> MeshRow {
        MeshRow {
            window_start_us: 1_700_000_000_000_000,
            window_secs: 10,
            local_addr: None,
            cluster_id: Some(16),
            shard: Some(32),
            pubsub_topic: Some(Arc::from("/waku/2/rs/16/32")),
            source: WIRE,
            subscribed: Some(true),
            peers_subscribed: 3,
            mesh_peers: Some(2),
            mesh_peers_min: Some(2),
            d_low: 4,
            secs_below_d_low: Some(below),
            grafts: 2,
            prunes: 0,
            unsubscribed_senders,
        }
    }

    #[test]
    fn mesh_rules_fire_on_time_below_d_low_and_unsubscribed_senders() {
        let node = row(Category::RelayChat, "message", Some(32), 100, NODE);
        assert_eq!(
            rules(std::slice::from_ref(&node), &[mesh_row(2.0, 0)]),
            ["mesh-below-d-low"]
        );
        assert_eq!(
            rules(std::slice::from_ref(&node), &[mesh_row(0.5, 1)]),
            ["unsubscribed-senders"]
        );
    }
}
