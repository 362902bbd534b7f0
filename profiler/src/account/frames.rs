//! Rows of the `--frames` table: the frame events of a connection with its endpoints and
//! direction, as the usage table names them.

use super::record::{Direction, Endpoints};
use crate::decode::frames::FrameEvent;
use crate::flow::Flow;

/// One Noise transport frame or TLS record of a libp2p connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameRow {
    /// When its first bytes arrived, µs since the epoch (UTC).
    pub time_us: i64,
    pub endpoints: Endpoints,
    pub direction: Direction,
    pub security: &'static str,
    pub bytes: u32,
    pub kind: &'static str,
}

/// Moves the events `flow` produced into `rows`.
pub fn record(events: &mut Vec<FrameEvent>, flow: &Flow, rows: &mut Vec<FrameRow>) {
    rows.extend(events.drain(..).map(|e| FrameRow {
        time_us: e.time_ns.div_euclid(1000),
        endpoints: flow.endpoints,
        direction: flow.direction(e.side),
        security: e.security,
        bytes: e.bytes,
        kind: e.kind,
    }));
}
