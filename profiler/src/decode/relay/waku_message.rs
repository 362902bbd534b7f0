//! The WakuMessage a relay message carries (14/WAKU2-MESSAGE, protocols.md §4): its fields as
//! the `--messages` table reports them, and the two hashes that identify it.

use sha2::{Digest, Sha256};

/// A WakuMessage, field numbers of protocols.md §4.1.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WakuMessage {
    #[prost(bytes = "vec", optional, tag = "1")]
    pub payload: Option<Vec<u8>>,
    #[prost(string, optional, tag = "2")]
    pub content_topic: Option<String>,
    #[prost(uint32, optional, tag = "3")]
    pub version: Option<u32>,
    #[prost(sint64, optional, tag = "10")]
    pub timestamp: Option<i64>,
    #[prost(bytes = "vec", optional, tag = "11")]
    pub meta: Option<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "21")]
    pub rate_limit_proof: Option<Vec<u8>>,
    #[prost(bool, optional, tag = "31")]
    pub ephemeral: Option<bool>,
}

/// Length of the `meta` Status puts on protected shards: an ECDSA signature.
pub const SIGNATURE_META_LEN: usize = 64;

/// What the `--messages` table records of a WakuMessage (never its payload).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WakuInfo {
    pub content_topic: Option<String>,
    pub payload_bytes: u64,
    pub version: Option<u32>,
    /// Unix nanoseconds, as the sender set them.
    pub timestamp_ns: Option<i64>,
    pub meta_bytes: u64,
    /// The meta is 64 bytes long: a protected-shard signature.
    pub meta_signature: bool,
    /// Bytes of the RLN rate-limit proof; 0 without one.
    pub rln_proof_bytes: u64,
    pub ephemeral: bool,
    /// The 14/WAKU2-MESSAGE deterministic hash (store keys, telemetry `messageHash`).
    pub message_hash: [u8; 32],
}

/// The gossipsub message id Waku relays use: SHA-256 of the serialized WakuMessage.
pub fn relay_id(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// Decodes the WakuMessage in `data` published on `pubsub_topic`; `None` if it is not one.
pub fn decode(pubsub_topic: &str, data: &[u8]) -> Option<WakuInfo> {
    let m = <WakuMessage as prost::Message>::decode(data).ok()?;
    let payload = m.payload.as_deref().unwrap_or_default();
    let meta = m.meta.as_deref().unwrap_or_default();
    let content_topic = m.content_topic.as_deref().unwrap_or_default();
    // sha256(pubsub_topic ‖ payload ‖ content_topic ‖ meta ‖ u64_BE(timestamp)); absent fields
    // contribute nothing.
    let mut h = Sha256::new();
    h.update(pubsub_topic.as_bytes());
    h.update(payload);
    h.update(content_topic.as_bytes());
    h.update(meta);
    if let Some(ts) = m.timestamp {
        h.update(ts.to_be_bytes());
    }
    Some(WakuInfo {
        content_topic: m.content_topic,
        payload_bytes: payload.len() as u64,
        version: m.version,
        timestamp_ns: m.timestamp,
        meta_bytes: meta.len() as u64,
        meta_signature: meta.len() == SIGNATURE_META_LEN,
        rln_proof_bytes: m.rate_limit_proof.map_or(0, |p| p.len() as u64),
        ephemeral: m.ephemeral.unwrap_or(false),
        message_hash: h.finalize().into(),
    })
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(2 * bytes.len());
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Test vectors of 14/WAKU2-MESSAGE §Deterministic message hashing: 12- and 64-byte meta.
    #[test]
    fn deterministic_hash_matches_the_rfc_vectors() {
        let vectors: [(Vec<u8>, &str); 2] = [
            (
                b"super-secret".to_vec(),
                "64cce733fed134e83da02b02c6f689814872b1a0ac97ea56b76095c3c72bfe05",
            ),
            (
                (0..64).collect(),
                "7158b6498753313368b9af8f6e0a0a05104f68f972981da42a43bc53fb0c1b27",
            ),
        ];
        for (meta, expected) in vectors {
            let m = WakuMessage {
                payload: Some(vec![1, 2, 3, 4, 0x54, 0x45, 0x53, 0x54, 5, 6, 7, 8]),
                content_topic: Some("/waku/2/default-content/proto".into()),
                meta: Some(meta.clone()),
                timestamp: Some(0x1757_89bf_a23f_8400),
                ..WakuMessage::default()
            };
            let bytes = prost::Message::encode_to_vec(&m);
            let info = decode("/waku/2/default-waku/proto", &bytes).expect("a WakuMessage");
            assert_eq!(hex(&info.message_hash), expected);
            assert_eq!(
                (info.payload_bytes, info.meta_bytes),
                (12, meta.len() as u64)
            );
            assert_eq!(info.meta_signature, meta.len() == 64);
        }
    }

    #[test]
    fn garbage_is_not_a_waku_message() {
        assert_eq!(decode("/t", &[0xff, 0xff, 0xff]), None);
    }
}
