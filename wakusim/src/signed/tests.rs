//! The signed-shard rule against an independent implementation: `tests/signed_shard.py`
//! (hashlib and python3-cryptography) checks what this module signs, and signs what it checks.

use std::{
    io::Write as _,
    process::{Command, Stdio},
    time::{Duration, UNIX_EPOCH},
};

use serde_json::{Value, json};

use super::*;

/// Messages covering empty and large payloads, both ephemeral flags and a timestamp whose
/// 8 little-endian bytes all differ.
fn messages() -> Vec<(String, WakuMessage)> {
    let msg = |payload: Vec<u8>, content_topic: &str, timestamp: i64, ephemeral| WakuMessage {
        payload,
        content_topic: content_topic.into(),
        version: Some(0),
        timestamp: Some(timestamp),
        meta: None,
        rate_limit_proof: None,
        ephemeral: Some(ephemeral),
    };
    vec![
        (
            "/waku/2/rs/16/128".into(),
            msg(
                b"hello".to_vec(),
                "/status/1/community/proto",
                1_765_000_000_123_456_789,
                false,
            ),
        ),
        (
            "/waku/2/rs/16/129".into(),
            msg(Vec::new(), "/c/1/x/proto", 0x0102_0304_0506_0708, true),
        ),
        (
            "/waku/2/rs/1/0".into(),
            msg((0..=255).cycle().take(5000).collect(), "", 1, false),
        ),
    ]
}

fn as_json(topic: &str, m: &WakuMessage) -> Value {
    json!({
        "pubsub_topic": topic,
        "payload_hex": hex(&m.payload),
        "content_topic": m.content_topic,
        "timestamp": m.timestamp,
        "ephemeral": m.ephemeral.unwrap_or(false),
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex from the script"))
        .collect()
}

fn python(job: &Value) -> Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/signed_shard.py");
    let mut child = Command::new("python3")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs (cargo xtask test installs python3-cryptography)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(job.to_string().as_bytes())
        .expect("write the job");
    let out = child.wait_with_output().expect("python3 finishes");
    assert!(out.status.success(), "signed_shard.py failed");
    serde_json::from_slice(&out.stdout).expect("the script writes JSON")
}

fn at(m: &WakuMessage) -> SystemTime {
    let ts = u64::try_from(m.timestamp.expect("timestamp")).expect("positive timestamp");
    UNIX_EPOCH + Duration::from_nanos(ts)
}

#[test]
fn python_agrees_on_hashes_and_signatures_made_here() {
    let key = key_from_seed(b"community alpha");
    let public = hex(key.verifying_key().to_encoded_point(true).as_bytes());
    let mut check = Vec::new();
    for (topic, mut m) in messages() {
        sign(&key, &topic, &mut m);
        let mut v = as_json(&topic, &m);
        v["meta_hex"] = hex(m.meta.as_deref().expect("signed")).into();
        v["public_key_hex"] = public.clone().into();
        check.push((msg_hash(&topic, &m), v));
        // The same signature on another shard must fail on both sides.
        let mut moved = as_json("/waku/2/rs/16/32", &m);
        moved["meta_hex"] = hex(m.meta.as_deref().expect("signed")).into();
        moved["public_key_hex"] = public.clone().into();
        check.push((msg_hash("/waku/2/rs/16/32", &m), moved));
    }
    let job = json!({ "check": check.iter().map(|c| &c.1).collect::<Vec<_>>(), "make": [] });
    let out = python(&job);
    for (i, (hash, _)) in check.iter().enumerate() {
        assert_eq!(out["hashes"][i], hex(hash), "hash of message {i}");
        assert_eq!(
            out["verified"][i],
            i % 2 == 0,
            "signature check of message {i}"
        );
    }
}

#[test]
fn signatures_made_by_python_verify_here_with_low_s_only() {
    let private = "4c0883a69102937d6231471b5dbb6204fe5129617082792ae468d01a3f362318";
    let make: Vec<Value> = messages()
        .iter()
        .map(|(topic, m)| {
            let mut v = as_json(topic, m);
            v["private_key_hex"] = private.into();
            v
        })
        .collect();
    let out = python(&json!({ "check": [], "make": make }));
    for (i, (topic, mut m)) in messages().into_iter().enumerate() {
        let made = &out["made"][i];
        let public = VerifyingKey::from_sec1_bytes(&unhex(
            made["public_key_hex"].as_str().expect("public key"),
        ))
        .expect("a valid public key");
        assert_eq!(
            made["hash_hex"],
            hex(&msg_hash(&topic, &m)),
            "hash of message {i}"
        );
        m.meta = Some(unhex(made["meta_hex"].as_str().expect("meta")));
        assert_eq!(verify(&public, &topic, &m, at(&m)), Ok(()), "message {i}");
        m.meta = Some(unhex(made["meta_high_s_hex"].as_str().expect("meta")));
        assert_eq!(
            verify(&public, &topic, &m, at(&m)),
            Err(Invalid::BadSignature),
            "high-S signature of message {i}"
        );
    }
}

#[test]
fn the_window_is_five_minutes_either_way_and_a_timestamp_is_required() {
    let key = key_from_seed(b"w");
    let (topic, mut m) = messages().remove(0);
    sign(&key, &topic, &mut m);
    let public = key.verifying_key();
    let t = at(&m);
    let just = WINDOW - Duration::from_nanos(1);
    assert_eq!(verify(public, &topic, &m, t + just), Ok(()));
    assert_eq!(verify(public, &topic, &m, t - just), Ok(()));
    assert_eq!(
        verify(public, &topic, &m, t + WINDOW),
        Err(Invalid::OutsideWindow)
    );
    assert_eq!(
        verify(public, &topic, &m, t - WINDOW),
        Err(Invalid::OutsideWindow)
    );
    let mut unsigned = m.clone();
    unsigned.meta = None;
    assert_eq!(
        verify(public, &topic, &unsigned, t),
        Err(Invalid::NoSignature)
    );
    let mut untimed = m.clone();
    untimed.timestamp = None;
    assert_eq!(
        verify(public, &topic, &untimed, t),
        Err(Invalid::NoTimestamp)
    );
    let other = key_from_seed(b"other");
    assert_eq!(
        verify(other.verifying_key(), &topic, &m, t),
        Err(Invalid::BadSignature)
    );
}
