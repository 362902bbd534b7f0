//! WakuMessage encoding (14/WAKU2-MESSAGE) and the deterministic message plans the scenarios
//! publish, so that tests can check per-shard byte counts.

use std::time::{SystemTime, UNIX_EPOCH};

/// Status' default shard (cluster 16, shard 32).
pub const SHARD_32: &str = "/waku/2/rs/16/32";
/// Status' non-protected shard (cluster 16, shard 64).
pub const SHARD_64: &str = "/waku/2/rs/16/64";
/// Every node subscribes to both shards.
pub const TOPICS: [&str; 2] = [SHARD_32, SHARD_64];

/// A WakuMessage with the field numbers of protocols.md §4.1.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WakuMessage {
    /// Application bytes.
    #[prost(bytes = "vec", tag = "1")]
    pub payload: Vec<u8>,
    /// Content topic, e.g. `/waku/1/0x<hex>/rfc26`.
    #[prost(string, tag = "2")]
    pub content_topic: String,
    /// Payload version (0 for unencrypted payloads).
    #[prost(uint32, optional, tag = "3")]
    pub version: Option<u32>,
    /// Unix time in nanoseconds (zigzag sint64).
    #[prost(sint64, optional, tag = "10")]
    pub timestamp: Option<i64>,
    /// Up to 64 bytes of metadata (Status puts a signature here on protected shards).
    #[prost(bytes = "vec", optional, tag = "11")]
    pub meta: Option<Vec<u8>>,
    /// Serialized RLN RateLimitProof.
    #[prost(bytes = "vec", optional, tag = "21")]
    pub rate_limit_proof: Option<Vec<u8>>,
    /// Whether stores may skip the message.
    #[prost(bool, optional, tag = "31")]
    pub ephemeral: Option<bool>,
}

/// One message a scenario publishes.
#[derive(Clone, Copy, Debug)]
pub struct Planned {
    /// Index of the publishing node (taken modulo the node count).
    pub publisher: usize,
    /// Pubsub topic (shard).
    pub pubsub_topic: &'static str,
    /// Content topic inside the WakuMessage.
    pub content_topic: &'static str,
    /// Length of the payload field.
    pub payload_len: usize,
    /// Whether the message carries a 64-byte `meta` (as on Status protected shards).
    pub meta: bool,
    /// Whether the message is flagged ephemeral.
    pub ephemeral: bool,
    /// Whether the message carries an RLN-sized `rate_limit_proof` ([`RLN_PROOF_LEN`] bytes).
    pub rln: bool,
}

/// Size of a serialized RLN RateLimitProof: a 128-byte zkSNARK proof and six 32-byte fields
/// (merkle root, epoch, share x, share y, nullifier, RLN identifier), each with its protobuf tag
/// and length.
pub const RLN_PROOF_LEN: usize = 128 + 3 + 6 * (32 + 2);

const STATUS_CONTENT_TOPIC: &str = "/waku/1/0xb5b1c6cf/rfc26";
const APP_CONTENT_TOPIC: &str = "/wakuprof/1/samples/proto";

pub const fn planned(publisher: usize, pubsub_topic: &'static str, payload_len: usize) -> Planned {
    let content_topic = if payload_len < 1024 {
        APP_CONTENT_TOPIC
    } else {
        STATUS_CONTENT_TOPIC
    };
    Planned {
        publisher,
        pubsub_topic,
        content_topic,
        payload_len,
        meta: false,
        ephemeral: false,
        rln: false,
    }
}

/// A planned message with signature-sized `meta` and/or an RLN-sized proof.
pub const fn with(p: Planned, meta: bool, rln: bool) -> Planned {
    Planned { meta, rln, ..p }
}

/// The main plan: 100 B, 1 KiB, 10 KiB and 60 KiB payloads spread over both shards and all
/// three nodes (85,392 payload bytes in 10 messages).
pub const MAIN: &[Planned] = &[
    planned(0, SHARD_32, 100),
    planned(0, SHARD_32, 1024),
    planned(0, SHARD_32, 10 * 1024),
    planned(0, SHARD_32, 60 * 1024),
    Planned {
        meta: true,
        ..planned(1, SHARD_64, 100)
    },
    planned(1, SHARD_64, 1024),
    planned(1, SHARD_64, 10 * 1024),
    Planned {
        ephemeral: true,
        ..planned(2, SHARD_32, 100)
    },
    planned(2, SHARD_64, 1024),
    planned(2, SHARD_64, 100),
];

/// The size mix of the encrypted-inference samples: 100 B to 140 KiB payloads, around and past
/// yamux's 16 KiB frame split, with and without a 64-byte `meta` (a signature) and an RLN proof
/// (327,528 payload bytes in 10 messages).
pub const MIX: &[Planned] = &[
    with(planned(0, SHARD_32, 100), false, true),
    with(planned(1, SHARD_32, 300), true, false),
    with(planned(2, SHARD_64, 2000), true, true),
    planned(0, SHARD_64, 16 * 1024 - 60),
    planned(1, SHARD_32, 16 * 1024),
    with(planned(2, SHARD_32, 40 * 1024), false, true),
    with(planned(0, SHARD_64, 100 * 1024), true, false),
    with(planned(1, SHARD_32, 140 * 1024), false, true),
    planned(2, SHARD_64, 700),
    with(planned(0, SHARD_32, 5000), true, true),
];

/// A smaller plan for the link-layer variants (12,488 payload bytes in 5 messages).
pub const SMALL: &[Planned] = &[
    planned(0, SHARD_32, 100),
    planned(0, SHARD_32, 1024),
    planned(1, SHARD_32, 10 * 1024),
    Planned {
        meta: true,
        ..planned(1, SHARD_64, 100)
    },
    planned(0, SHARD_64, 1024),
];

impl Planned {
    /// Builds the WakuMessage for the `index`-th planned message, stamped with the current time.
    pub fn message(&self, index: usize) -> WakuMessage {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        WakuMessage {
            payload: filler(index, self.payload_len),
            content_topic: self.content_topic.to_owned(),
            version: Some(0),
            timestamp: Some(now),
            meta: self.meta.then(|| filler(index + 1000, 64)),
            rate_limit_proof: self.rln.then(|| filler(index + 2000, RLN_PROOF_LEN)),
            ephemeral: self.ephemeral.then_some(true),
        }
    }
}

/// Deterministic, incompressible-looking bytes (xorshift64), different for every `seed`.
fn filler(seed: usize, len: usize) -> Vec<u8> {
    let mut state =
        0x9e37_79b9_7f4a_7c15_u64 ^ (seed as u64 + 1).wrapping_mul(0xff51_afd7_ed55_8ccd);
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state.to_le_bytes()[0]
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    #[test]
    fn encodes_the_field_numbers_of_the_spec() {
        let msg = WakuMessage {
            payload: vec![0xAB; 3],
            content_topic: "/a/1/b/c".into(),
            version: Some(0),
            timestamp: Some(-1),
            meta: Some(vec![1]),
            rate_limit_proof: Some(vec![2]),
            ephemeral: Some(true),
        };
        let mut expected = vec![0x0A, 3, 0xAB, 0xAB, 0xAB, 0x12, 8];
        expected.extend_from_slice(b"/a/1/b/c");
        expected.extend_from_slice(&[
            0x18, 0, 0x50, 1, 0x5A, 1, 1, 0xAA, 0x01, 1, 2, 0xF8, 0x01, 1,
        ]);
        assert_eq!(msg.encode_to_vec(), expected);
    }

    #[test]
    fn plans_have_the_documented_payload_totals() {
        let total = |plan: &[Planned]| plan.iter().map(|p| p.payload_len).sum::<usize>();
        assert_eq!(total(MAIN), 85_392);
        assert_eq!(total(SMALL), 12_488);
        assert_eq!(total(MIX), 327_528);
    }

    #[test]
    fn message_sizes_do_not_depend_on_the_run() {
        let a = MAIN[3].message(3).encoded_len();
        let b = MAIN[3].message(3).encoded_len();
        assert_eq!(a, b);
        assert_eq!(MAIN[3].message(3).payload, MAIN[3].message(3).payload);
    }
}
