//! Ethereum Node Records (EIP-778) as text (`enr:<base64url RLP>`, e.g. in EIP-1459 DNS trees):
//! the node id of the "v4" identity scheme (keccak256 of the uncompressed secp256k1 public key)
//! and the UDP endpoints the record announces, so that discv5 packets to those endpoints can be
//! unmasked without a configured id.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use base64::Engine as _;
use k256::elliptic_curve::sec1::ToEncodedPoint;
use sha3::{Digest, Keccak256};

/// Longest record the spec allows.
const MAX_RECORD: usize = 300;

/// What a record says about where its node listens for discv5.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    pub node_id: [u8; 32],
    /// `ip`/`udp` and `ip6`/`udp6` pairs the record holds.
    pub endpoints: Vec<(IpAddr, u16)>,
}

/// Reads `enr:<base64url>` text; `None` unless it is a v4 record with a valid public key.
pub fn parse_text(text: &str) -> Option<Record> {
    let b64 = text.trim().strip_prefix("enr:")?;
    if b64.len() > MAX_RECORD * 2 {
        return None;
    }
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(b64.trim_end_matches('='))
        .ok()?;
    parse_rlp(&raw)
}

/// Reads a record in its RLP form: `[signature, seq, k1, v1, k2, v2, …]`.
pub fn parse_rlp(raw: &[u8]) -> Option<Record> {
    let (list, _) = item(raw)?;
    let Item::List(mut body) = list else {
        return None;
    };
    let mut fields = Vec::new();
    while !body.is_empty() {
        let (it, rest) = item(body)?;
        fields.push(it);
        body = rest;
    }
    let pairs = fields.get(2..)?;
    let value = |key: &[u8]| {
        pairs
            .chunks_exact(2)
            .find(|kv| matches!(kv[0], Item::Bytes(k) if k == key))
            .and_then(|kv| match kv[1] {
                Item::Bytes(v) => Some(v),
                Item::List(_) => None,
            })
    };
    if value(b"id")? != b"v4" {
        return None;
    }
    let key = k256::PublicKey::from_sec1_bytes(value(b"secp256k1")?).ok()?;
    let point = key.to_encoded_point(false);
    let mut node_id = [0u8; 32];
    node_id.copy_from_slice(&Keccak256::digest(&point.as_bytes()[1..]));
    let port = |v: &[u8]| {
        (v.len() <= 2 && !v.is_empty()).then(|| v.iter().fold(0u16, |p, &b| p << 8 | u16::from(b)))
    };
    let mut endpoints = Vec::new();
    if let (Some(ip), Some(udp)) = (value(b"ip"), value(b"udp").and_then(port)) {
        let octets: [u8; 4] = ip.try_into().ok()?;
        endpoints.push((IpAddr::V4(Ipv4Addr::from(octets)), udp));
    }
    if let (Some(ip), Some(udp)) = (value(b"ip6"), value(b"udp6").and_then(port)) {
        let octets: [u8; 16] = ip.try_into().ok()?;
        endpoints.push((IpAddr::V6(Ipv6Addr::from(octets)), udp));
    }
    Some(Record { node_id, endpoints })
}

/// One RLP item: a byte string or the payload of a list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Item<'a> {
    Bytes(&'a [u8]),
    List(&'a [u8]),
}

/// The item at the start of `buf` and what follows it.
fn item(buf: &[u8]) -> Option<(Item<'_>, &[u8])> {
    let (&first, rest) = buf.split_first()?;
    let (list, len, rest) = match first {
        0x00..=0x7f => return Some((Item::Bytes(&buf[..1]), rest)),
        0x80..=0xb7 => (false, usize::from(first - 0x80), rest),
        0xb8..=0xbf => long(false, usize::from(first - 0xb7), rest)?,
        0xc0..=0xf7 => (true, usize::from(first - 0xc0), rest),
        0xf8..=0xff => long(true, usize::from(first - 0xf7), rest)?,
    };
    let body = rest.get(..len)?;
    let it = if list {
        Item::List(body)
    } else {
        Item::Bytes(body)
    };
    Some((it, &rest[len..]))
}

/// A long-form length of `n` bytes at the start of `rest`.
fn long(list: bool, n: usize, rest: &[u8]) -> Option<(bool, usize, &[u8])> {
    let bytes = rest.get(..n).filter(|_| n <= 2)?;
    let len = bytes.iter().fold(0usize, |l, &b| l << 8 | usize::from(b));
    Some((list, len, &rest[n..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example record of EIP-778 (node id and endpoint as the EIP gives them).
    const EIP_778: &str = "enr:-IS4QHCYrYZbAKWCBRlAy5zzaDZXJBGkcnh4MHcBFZntXNFrdvJjX04jRzjzCBOonrkTfj499SZuOh8R33Ls8RRcy5wBgmlkgnY0gmlwhH8AAAGJc2VjcDI1NmsxoQPKY0yuDUmstAHYpMa2_oxVtw0RW_QAdpzBQA8yWM0xOIN1ZHCCdl8";

    #[test]
    fn the_eip_example_gives_its_node_id_and_endpoint() {
        let r = parse_text(EIP_778).expect("a v4 record");
        let id: String = r.node_id.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            id,
            "a448f24c6d18e575453db13171562b71999873db5b286df957af199ec94617f7"
        );
        assert_eq!(r.endpoints, vec![("127.0.0.1".parse().expect("ip"), 30303)]);
    }

    #[test]
    fn damaged_records_are_refused() {
        assert_eq!(parse_text("enr:"), None);
        assert_eq!(parse_text("enr:!!!"), None);
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&EIP_778[4..])
            .expect("base64");
        for cut in 0..raw.len() {
            assert_eq!(parse_rlp(&raw[..cut]), None, "cut {cut}");
        }
    }
}
