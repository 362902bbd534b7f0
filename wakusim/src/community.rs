//! Communities kept in a state directory (one JSON file each, readable by its owner only), and
//! the WakuMessages published into them: signed with the community's key when its shard is
//! protected, as its relays would accept them.

use std::{
    fs::OpenOptions,
    io::{ErrorKind, Write as _},
    os::unix::fs::OpenOptionsExt as _,
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use base64::Engine as _;
use k256::ecdsa::SigningKey;
use prost::Message as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use traffic::waku::WakuMessage;

use crate::{
    error::Error,
    scenario::{DEFAULT_CLUSTER, SHARED_SHARD, Scenario},
    signed,
};

/// A community as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Community {
    pub name: String,
    pub cluster: u16,
    pub shard: u16,
    pub pubsub_topic: String,
    /// Whether the shard is protected by the community's signing key.
    pub protected: bool,
    pub content_topics: Vec<String>,
    /// The shard's public key (SEC1 compressed, hex), when protected.
    pub public_key: Option<String>,
    /// The signing key (hex); shown only when asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
}

/// What creating a community takes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewCommunity {
    /// Letters, digits, `-` and `_` (at most 64).
    pub name: String,
    /// Its own shard; the shared shard 32 when absent.
    pub shard: Option<u16>,
    /// Status' cluster 16 when absent.
    pub cluster: Option<u16>,
    #[serde(default)]
    pub protected: bool,
    /// `/<name>/1/chat/proto` when absent.
    pub content_topics: Option<Vec<String>>,
}

/// What publishing takes: one of `payload`, `payload_hex` or `size`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewMessage {
    /// The community's first content topic when absent.
    pub content_topic: Option<String>,
    /// The payload as text.
    pub payload: Option<String>,
    /// The payload as hex.
    pub payload_hex: Option<String>,
    /// A payload of this many random bytes.
    pub size: Option<usize>,
    #[serde(default)]
    pub ephemeral: bool,
}

/// A message built for a community, ready to send.
#[derive(Debug, Serialize)]
pub struct Built {
    pub community: String,
    pub pubsub_topic: String,
    pub content_topic: String,
    /// Unix time in nanoseconds; a protected shard accepts it for 5 minutes.
    pub timestamp: i64,
    pub signed: bool,
    /// The WakuMessage protobuf, hex: what travels in a gossipsub message's data.
    pub waku_message_hex: String,
    /// Gossipsub's message id: SHA-256 of the protobuf, hex.
    pub id: String,
    /// The message as nwaku's REST API takes it (`POST /relay/v1/messages/{pubsub topic}`).
    pub relay_json: serde_json::Value,
}

/// Most bytes of a published payload.
const MAX_PAYLOAD: usize = 140 * 1024;

/// The state directory: `$XDG_STATE_HOME/wakusim`, else `~/.local/state/wakusim`.
pub fn default_state_dir() -> PathBuf {
    let home = || std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state"));
    std::env::var_os("XDG_STATE_HOME")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .or_else(home)
        .unwrap_or_else(std::env::temp_dir)
        .join("wakusim")
}

/// The communities in one state directory.
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// The store in `state` (created on the first community).
    pub fn new(state: &Path) -> Store {
        Store {
            dir: state.join("communities"),
        }
    }

    /// Creates a community; a protected one gets a fresh secp256k1 key pair.
    pub fn create(&self, new: NewCommunity) -> Result<Community, Error> {
        let name = new.name;
        let valid = name.len() <= 64
            && !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid {
            return Err(Error::invalid(
                "name",
                format!("{name:?} is not 1 to 64 letters, digits, '-' or '_'"),
            ));
        }
        let shard = new.shard.unwrap_or(SHARED_SHARD);
        if shard >= 1024 {
            return Err(Error::invalid(
                "shard",
                format!("{shard} is past the 1024 shards of a cluster"),
            ));
        }
        if new.protected && shard == SHARED_SHARD {
            return Err(Error::invalid(
                "protected",
                format!(
                    "the shared shard {SHARED_SHARD} cannot be protected; give the community its own shard"
                ),
            ));
        }
        let content_topics = new
            .content_topics
            .unwrap_or_else(|| vec![format!("/{name}/1/chat/proto")]);
        if content_topics.is_empty() || content_topics.iter().any(String::is_empty) {
            return Err(Error::invalid(
                "content_topics",
                "give at least one, none empty",
            ));
        }
        let key = new.protected.then(fresh_key).transpose()?;
        let cluster = new.cluster.unwrap_or(DEFAULT_CLUSTER);
        let community = Community {
            pubsub_topic: format!("/waku/2/rs/{cluster}/{shard}"),
            name,
            cluster,
            shard,
            protected: new.protected,
            content_topics,
            public_key: key
                .as_ref()
                .map(|k| hex(&k.verifying_key().to_sec1_bytes())),
            private_key: key.as_ref().map(|k| hex(&k.to_bytes())),
        };
        std::fs::create_dir_all(&self.dir)?;
        let path = self.path(&community.name);
        let mut file = match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
        {
            Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                return Err(Error::Conflict(format!(
                    "community {} exists already",
                    community.name
                )));
            }
            other => other?,
        };
        file.write_all(&serde_json::to_vec_pretty(&community).map_err(internal)?)?;
        Ok(public(community))
    }

    /// Every community, by name, without private keys.
    pub fn list(&self) -> Result<Vec<Community>, Error> {
        let entries = match std::fs::read_dir(&self.dir) {
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Vec::new()),
            other => other?,
        };
        let mut names = Vec::new();
        for entry in entries {
            let file = entry?.file_name();
            if let Some(name) = file.to_str().and_then(|f| f.strip_suffix(".json")) {
                names.push(name.to_owned());
            }
        }
        names.sort();
        names
            .iter()
            .map(|n| self.get(n, false))
            .collect::<Result<_, _>>()
    }

    /// The community `name`, with its private key only when `private`.
    pub fn get(&self, name: &str, private: bool) -> Result<Community, Error> {
        let path = self.path(name);
        let text = match std::fs::read_to_string(&path) {
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(Error::NotFound(format!("no community {name}")));
            }
            other => other?,
        };
        let community: Community = serde_json::from_str(&text)
            .map_err(|e| Error::Internal(format!("{}: {e}", path.display())))?;
        Ok(if private {
            community
        } else {
            public(community)
        })
    }

    /// Builds a message for community `name`, signed when its shard is protected.
    pub fn publish(&self, name: &str, new: NewMessage) -> Result<Built, Error> {
        let community = self.get(name, true)?;
        let content_topic = match new.content_topic {
            Some(t) if t.is_empty() => return Err(Error::invalid("content_topic", "empty")),
            Some(t) => t,
            None => community.content_topics[0].clone(),
        };
        let payload = match (new.payload, new.payload_hex, new.size) {
            (Some(text), None, None) => text.into_bytes(),
            (None, Some(h), None) => unhex(&h)
                .ok_or_else(|| Error::invalid("payload_hex", "not an even number of hex digits"))?,
            (None, None, Some(size)) => random_bytes(size)?,
            _ => {
                return Err(Error::invalid(
                    "payload",
                    "give exactly one of payload, payload_hex or size",
                ));
            }
        };
        if payload.len() > MAX_PAYLOAD {
            return Err(Error::invalid(
                "payload",
                format!("{} bytes is over {MAX_PAYLOAD}", payload.len()),
            ));
        }
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX));
        let mut msg = WakuMessage {
            payload,
            content_topic,
            version: Some(0),
            timestamp: Some(timestamp),
            meta: None,
            rate_limit_proof: None,
            ephemeral: new.ephemeral.then_some(true),
        };
        if let Some(key) = &community.private_key {
            signed::sign(&signing_key(name, key)?, &community.pubsub_topic, &mut msg);
        }
        let data = msg.encode_to_vec();
        let b64 = base64::engine::general_purpose::STANDARD;
        let mut relay_json = serde_json::json!({
            "payload": b64.encode(&msg.payload),
            "contentTopic": msg.content_topic,
            "timestamp": timestamp,
            "ephemeral": new.ephemeral,
        });
        if let Some(meta) = &msg.meta {
            relay_json["meta"] = b64.encode(meta).into();
        }
        Ok(Built {
            community: community.name,
            pubsub_topic: community.pubsub_topic,
            content_topic: msg.content_topic,
            timestamp,
            signed: msg.meta.is_some(),
            waku_message_hex: hex(&data),
            id: hex(&Sha256::digest(&data)),
            relay_json,
        })
    }

    /// Gives the scenario's `stored` communities the shard, protection and key of the stored
    /// ones, then checks the scenario again.
    pub fn resolve(&self, s: &mut Scenario) -> Result<(), Error> {
        for (i, c) in s.communities.iter_mut().enumerate() {
            if !c.stored {
                continue;
            }
            let field = format!("community[{i}] ({}).stored", c.name);
            if c.shard.is_some() || c.protected {
                return Err(Error::invalid(
                    field,
                    "the stored community's shard and protection apply; drop shard and protected",
                ));
            }
            let stored = match self.get(&c.name, true) {
                Err(Error::NotFound(e)) => return Err(Error::invalid(field, e)),
                other => other?,
            };
            if stored.cluster != s.cluster {
                return Err(Error::invalid(
                    field,
                    format!(
                        "the stored community is on cluster {}, the scenario on {}",
                        stored.cluster, s.cluster
                    ),
                ));
            }
            c.shard = Some(stored.shard);
            c.protected = stored.protected;
            c.key = stored
                .private_key
                .as_deref()
                .map(|k| signing_key(&c.name, k))
                .transpose()?;
            c.stored = false;
        }
        s.check().map_err(|e| Error::from_check(&e))
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.json"))
    }
}

/// The stored signing key of community `name`.
pub(crate) fn signing_key(name: &str, hex: &str) -> Result<SigningKey, Error> {
    unhex(hex)
        .and_then(|b| SigningKey::from_slice(&b).ok())
        .ok_or_else(|| Error::Internal(format!("community {name}: bad stored key")))
}

fn public(mut c: Community) -> Community {
    c.private_key = None;
    c
}

fn internal(e: impl std::fmt::Display) -> Error {
    Error::Internal(e.to_string())
}

fn random_bytes(len: usize) -> Result<Vec<u8>, Error> {
    use std::io::Read as _;
    let mut bytes = vec![0; len];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes)
}

/// A fresh signing key from 32 bytes of the kernel's randomness.
fn fresh_key() -> Result<SigningKey, Error> {
    Ok(signed::key_from_seed(&random_bytes(32)?))
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(name: &str, shard: Option<u16>, protected: bool) -> NewCommunity {
        NewCommunity {
            name: name.into(),
            shard,
            cluster: None,
            protected,
            content_topics: None,
        }
    }

    #[test]
    fn a_protected_community_signs_what_its_shard_accepts() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::new(dir.path());
        let c = store
            .create(new("alpha", Some(128), true))
            .expect("created");
        assert!(c.private_key.is_none(), "not shown unless asked");
        let public = unhex(c.public_key.as_deref().expect("a public key")).expect("hex");
        let key = k256::ecdsa::VerifyingKey::from_sec1_bytes(&public).expect("a key");
        let built = store
            .publish(
                "alpha",
                NewMessage {
                    size: Some(500),
                    ..NewMessage::default()
                },
            )
            .expect("built");
        let msg = WakuMessage::decode(unhex(&built.waku_message_hex).expect("hex").as_slice())
            .expect("a WakuMessage");
        assert_eq!(msg.payload.len(), 500);
        assert_eq!(
            signed::verify(&key, "/waku/2/rs/16/128", &msg, SystemTime::now()),
            Ok(())
        );
        assert_eq!(
            signed::verify(&key, "/waku/2/rs/16/129", &msg, SystemTime::now()),
            Err(signed::Invalid::BadSignature)
        );
    }

    #[test]
    fn names_shards_and_payloads_are_checked() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::new(dir.path());
        let field = |e: Error| e.field().map(str::to_owned);
        let open = store.create(new("open", None, false)).expect("created");
        assert_eq!((open.shard, open.public_key), (SHARED_SHARD, None));
        assert!(matches!(
            store.create(new("open", Some(3), false)),
            Err(Error::Conflict(_))
        ));
        let bad = store
            .create(new("../x", None, false))
            .expect_err("bad name");
        assert_eq!(field(bad).as_deref(), Some("name"));
        let bad = store
            .create(new("p", None, true))
            .expect_err("protected 32");
        assert_eq!(field(bad).as_deref(), Some("protected"));
        let two = NewMessage {
            size: Some(1),
            payload: Some("x".into()),
            ..NewMessage::default()
        };
        let bad = store.publish("open", two).expect_err("two payloads");
        assert_eq!(field(bad).as_deref(), Some("payload"));
        assert!(matches!(
            store.get("nobody", false),
            Err(Error::NotFound(_))
        ));
        assert_eq!(store.list().expect("listed").len(), 1);
    }
}
