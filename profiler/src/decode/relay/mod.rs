//! Waku relay: gossipsub RPCs, the WakuMessages they carry, and the book of recent messages and
//! peers the encrypted inference leans on.

pub mod gossipsub;
pub mod gossipsub_pb;
pub mod relay_book;
pub mod waku_message;
