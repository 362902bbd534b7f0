//! Published relay messages as they cross the wire: duplicates per receiving host, and the rows of
//! the `--messages` table.

use std::net::IpAddr;
use std::sync::Arc;

use super::record::{Counters, Direction, Endpoints};
use super::table::UsageTable;
use crate::decode::LabelTable;
use crate::decode::lru::Lru;
use crate::decode::relay::relay_book::Published;
use crate::decode::relay::waku_message::WakuInfo;
use crate::flow::Flow;

/// (receiving host, message) pairs remembered for duplicate detection.
pub const SEEN: usize = 1 << 18;

/// One published message seen on a relay stream: a row of the `--messages` table.
#[derive(Clone, Debug, PartialEq)]
pub struct MessageRow {
    /// When the entry was read completely, microseconds since the epoch (UTC).
    pub time_us: i64,
    pub endpoints: Endpoints,
    pub direction: Direction,
    /// Relay stream protocol, e.g. `/vac/waku/relay/2.0.0`.
    pub protocol: Arc<str>,
    pub pubsub_topic: Option<Arc<str>>,
    pub cluster_id: Option<u16>,
    pub shard: Option<u16>,
    /// SHA-256 of the WakuMessage bytes: the gossipsub id of nwaku and go-waku.
    pub message_id: [u8; 32],
    /// Bytes of the `RPC.publish` entry (its payload_bytes in the usage table).
    pub entry_bytes: u64,
    /// Bytes of the serialized WakuMessage.
    pub data_bytes: u64,
    /// The WakuMessage's fields; `None` when `data` is not a WakuMessage.
    pub waku: Option<WakuInfo>,
    /// The receiving host had seen this message before.
    pub duplicate: bool,
}

/// Duplicate detection and, with `--messages`, the message rows not yet written.
pub struct MessageLog {
    seen: Lru<(IpAddr, [u8; 32]), ()>,
    /// Rows waiting for the sink; `None` when no message table is written.
    pub rows: Option<Vec<MessageRow>>,
    /// Messages and duplicates counted so far.
    pub messages: u64,
    pub duplicates: u64,
}

impl MessageLog {
    /// A log that keeps message rows when `keep_rows` is set.
    pub fn new(keep_rows: bool) -> MessageLog {
        MessageLog {
            seen: Lru::new(SEEN),
            rows: keep_rows.then(Vec::new),
            messages: 0,
            duplicates: 0,
        }
    }

    /// Accounts the messages `flow` carried in the packet at `ts_ns` (window `window`): a message
    /// its receiving host saw before counts once in `duplicates` of its usage row.
    pub fn record(
        &mut self,
        published: &mut Vec<Published>,
        flow: &Flow,
        (ts_ns, window): (i64, i64),
        labels: &LabelTable,
        table: &mut UsageTable,
    ) {
        let keys = flow.row_keys();
        for p in published.drain(..) {
            let direction = flow.direction(p.side);
            let ep = flow.endpoints;
            let receiver = match direction {
                Direction::Out => ep.remote_addr,
                Direction::In => ep.local_addr,
            };
            let duplicate = receiver.is_some_and(|host| {
                let key = (host, p.id);
                let seen = self.seen.get(&key).is_some();
                if !seen {
                    self.seen.insert(key, ());
                }
                seen
            });
            self.messages += 1;
            if duplicate {
                self.duplicates += 1;
                let c = Counters {
                    duplicates: 1,
                    ..Counters::default()
                };
                table.add(window, keys.key(p.side, p.label), &c);
            }
            if let Some(rows) = &mut self.rows {
                let label = labels.get(p.label);
                rows.push(MessageRow {
                    time_us: ts_ns.div_euclid(1000),
                    endpoints: ep,
                    direction,
                    protocol: Arc::clone(&label.protocol),
                    pubsub_topic: label.pubsub_topic.clone(),
                    cluster_id: label.cluster_id,
                    shard: label.shard,
                    message_id: p.id,
                    entry_bytes: p.entry_bytes,
                    data_bytes: p.data_bytes,
                    waku: p.waku,
                    duplicate,
                });
            }
        }
    }
}
