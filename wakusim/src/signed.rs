//! Protected shards as nwaku validates them (`waku/waku_relay/validator_signed.nim`): the
//! message hash is SHA-256 over the pubsub topic, payload, content topic, timestamp (8 bytes
//! little-endian) and one ephemeral byte; `meta` holds a 64-byte secp256k1 ECDSA signature
//! (r ‖ s, low S as libsecp256k1 requires) of that hash; the timestamp must be set and within
//! 5 minutes of the receiver's clock. Anything else on a protected shard is rejected.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k256::ecdsa::{
    Signature, SigningKey, VerifyingKey,
    signature::hazmat::{PrehashSigner, PrehashVerifier},
};
use sha2::{Digest, Sha256};
use traffic::waku::WakuMessage;

/// How far a signed message's timestamp may be from the receiver's clock (exclusive).
pub const WINDOW: Duration = Duration::from_secs(5 * 60);

/// Why a message on a protected shard was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Invalid {
    /// The timestamp is missing or zero.
    #[error("no timestamp")]
    NoTimestamp,
    /// The timestamp is 5 minutes or more away from now.
    #[error("timestamp outside the ±5 min window")]
    OutsideWindow,
    /// `meta` is not a 64-byte signature.
    #[error("meta is not a 64-byte signature")]
    NoSignature,
    /// The signature does not verify under the shard's key.
    #[error("signature does not verify")]
    BadSignature,
}

/// nwaku's application-level message hash of `msg` on `pubsub_topic`.
pub fn msg_hash(pubsub_topic: &str, msg: &WakuMessage) -> [u8; 32] {
    let timestamp = msg.timestamp.unwrap_or(0) as u64;
    Sha256::new()
        .chain_update(pubsub_topic.as_bytes())
        .chain_update(&msg.payload)
        .chain_update(msg.content_topic.as_bytes())
        .chain_update(timestamp.to_le_bytes())
        .chain_update([u8::from(msg.ephemeral.unwrap_or(false))])
        .finalize()
        .into()
}

/// The signing key of a protected shard, derived from a seed so that runs repeat.
pub fn key_from_seed(seed: &[u8]) -> SigningKey {
    let mut counter = 0u32;
    loop {
        let digest = Sha256::new()
            .chain_update(seed)
            .chain_update(counter.to_le_bytes())
            .finalize();
        // A digest is a valid scalar except with negligible probability (zero or ≥ n).
        if let Ok(key) = SigningKey::from_bytes(&digest) {
            return key;
        }
        counter += 1;
    }
}

/// Signs `msg` for `pubsub_topic`: sets `meta` to the 64-byte signature of its hash.
pub fn sign(key: &SigningKey, pubsub_topic: &str, msg: &mut WakuMessage) {
    let hash = msg_hash(pubsub_topic, msg);
    // Signing a 32-byte prehash with a valid key cannot fail.
    let signature: Signature = key
        .sign_prehash(&hash)
        .expect("a 32-byte prehash signs under any valid key");
    msg.meta = Some(signature.to_bytes().to_vec());
}

/// Checks `msg` on a protected `pubsub_topic` against the shard's key at time `now`.
pub fn verify(
    key: &VerifyingKey,
    pubsub_topic: &str,
    msg: &WakuMessage,
    now: SystemTime,
) -> Result<(), Invalid> {
    let ts = msg
        .timestamp
        .filter(|t| *t != 0)
        .ok_or(Invalid::NoTimestamp)?;
    let now = now
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i128::try_from(d.as_nanos()).unwrap_or(i128::MAX));
    if (now - i128::from(ts)).unsigned_abs() >= WINDOW.as_nanos() {
        return Err(Invalid::OutsideWindow);
    }
    let meta = msg.meta.as_deref().ok_or(Invalid::NoSignature)?;
    let signature = Signature::from_slice(meta).map_err(|_| Invalid::NoSignature)?;
    key.verify_prehash(&msg_hash(pubsub_topic, msg), &signature)
        .map_err(|_| Invalid::BadSignature)
}

#[cfg(test)]
mod tests;
