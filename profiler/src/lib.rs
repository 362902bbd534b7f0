//! wakuprof: a packet-level bandwidth profiler for Waku nodes.
//!
//! The library is the pipeline of design.md: `source` reads packets, `flow` tracks connections and
//! reassembles TCP, `decode` labels the bytes, `account` splits wire bytes over labels and windows,
//! and `sink` writes the rows. Only `source` and `sink` do I/O.

pub mod account;
pub mod analyze;
pub mod decode;
pub mod error;
pub mod flow;
pub mod forward;
pub mod live;
pub mod live_decoder;
pub mod memory;
pub mod node;
pub mod report;
pub mod rules;
pub mod shards;
pub mod sink;
pub mod source;

pub use error::Error;
