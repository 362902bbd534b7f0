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
    /// `ip`/`tcp` and `ip6`/`tcp6` pairs: where the node listens for libp2p.
    pub tcp: Vec<(IpAddr, u16)>,
    /// Waku's relay shards (`rs`, else `rsv`; protocols.md §4): cluster and shard ids.
    pub shards: Option<(u16, Vec<u16>)>,
}

/// Reads Waku's `rs` field (u16 BE cluster, u8 count, count × u16 BE shard) or, failing that,
/// `rsv` (u16 BE cluster, 128-byte bit vector: shard s is bit s % 8, from the least significant,
/// of byte s / 8).
fn shards(rs: Option<&[u8]>, rsv: Option<&[u8]>) -> Option<(u16, Vec<u16>)> {
    let be = |b: &[u8]| u16::from_be_bytes([b[0], b[1]]);
    if let Some(v) = rs.filter(|v| v.len() >= 3 && v.len() == 3 + 2 * usize::from(v[2])) {
        return Some((be(v), v[3..].chunks_exact(2).map(be).collect()));
    }
    let v = rsv.filter(|v| v.len() == 130)?;
    let ids = (0..1024u16)
        .filter(|&s| v[2 + usize::from(s / 8)] & (1 << (s % 8)) != 0)
        .collect();
    Some((be(v), ids))
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
    let ip4 = value(b"ip").and_then(|ip| <[u8; 4]>::try_from(ip).ok());
    let ip4 = ip4.map(|o| IpAddr::V4(Ipv4Addr::from(o)));
    let ip6 = value(b"ip6").and_then(|ip| <[u8; 16]>::try_from(ip).ok());
    let ip6 = ip6.map(|o| IpAddr::V6(Ipv6Addr::from(o)));
    let pairs = |k4: &[u8], k6: &[u8]| {
        let with = |ip: Option<IpAddr>, k: &[u8]| Some((ip?, value(k).and_then(port)?));
        [with(ip4, k4), with(ip6, k6)]
            .into_iter()
            .flatten()
            .collect()
    };
    Some(Record {
        node_id,
        endpoints: pairs(b"udp", b"udp6"),
        tcp: pairs(b"tcp", b"tcp6"),
        shards: shards(value(b"rs"), value(b"rsv")),
    })
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

    #[test]
    fn rs_and_rsv() {
        assert_eq!(
            shards(Some(&[0, 16, 2, 0, 32, 0, 64]), None),
            Some((16, vec![32, 64]))
        );
        assert_eq!(
            shards(Some(&[0, 16, 2, 0, 32]), None),
            None,
            "count says 2, one given"
        );
        let mut v = vec![0, 1];
        v.resize(130, 0);
        v[2] = 0b1000_0001;
        v[2 + 1023 / 8] = 0x80;
        assert_eq!(shards(None, Some(&v)), Some((1, vec![0, 7, 1023])));
        assert_eq!(shards(None, Some(&v[..129])), None);
    }
}
