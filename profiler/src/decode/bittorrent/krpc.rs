//! Mainline DHT (BEP 5, protocols.md §8.3): KRPC messages, one bencoded dictionary per UDP
//! datagram, with keys `t` (transaction id), `y` (`q` query, `r` response, `e` error) and `q`
//! (the method). A response takes the method of its query when the transaction was seen.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{Endpoint, label};
use crate::decode::datagram::{Datagram, DatagramDecoder, Labelled};
use crate::decode::lru::Lru;
use crate::decode::{DecodeCtx, LabelId};

/// Protocol name of the DHT.
pub const PROTOCOL: &str = "bt-dht";
/// Deepest nesting of lists and dictionaries accepted.
pub const MAX_DEPTH: usize = 16;
/// Methods that become kinds; other queries are `query`.
const METHODS: &[&str] = &[
    "ping",
    "find_node",
    "get_peers",
    "announce_peer",
    "get",
    "put",
    "sample_infohashes",
];
/// Longest transaction id remembered (clients use 2 to 4 bytes).
const MAX_TXN_LEN: usize = 16;
/// Most outstanding queries remembered.
pub(crate) const TXNS_KEPT: usize = 4096;
/// Compact peer info: IPv4 address + port, IPv6 address + port.
const COMPACT_V4: usize = 6;
const COMPACT_V6: usize = 18;

/// Why bytes are not bencode.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BencodeError {
    /// The input ends inside a value.
    #[error("bencode: input ends inside a value at offset {0}")]
    Truncated(usize),
    /// A byte that cannot start or continue a value here.
    #[error("bencode: unexpected byte {byte:#04x} at offset {offset}")]
    Unexpected { byte: u8, offset: usize },
    /// Lists and dictionaries nest deeper than [`MAX_DEPTH`].
    #[error("bencode: nesting deeper than {MAX_DEPTH} at offset {0}")]
    TooDeep(usize),
}

/// A bencoded value, borrowing its strings from the input.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value<'a> {
    Int(i64),
    Bytes(&'a [u8]),
    List(Vec<Value<'a>>),
    Dict(Vec<(&'a [u8], Value<'a>)>),
}

impl<'a> Value<'a> {
    /// The value of `key` if this is a dictionary that has it.
    pub fn get(&self, key: &[u8]) -> Option<&Value<'a>> {
        match self {
            Value::Dict(entries) => entries.iter().find(|(k, _)| *k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// The string, if this is one.
    pub fn bytes(&self) -> Option<&'a [u8]> {
        match self {
            Value::Bytes(b) => Some(b),
            _ => None,
        }
    }

    /// The integer, if this is one.
    pub fn int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }
}

/// Parses one value at the start of `buf`; returns it and the bytes it took.
pub fn parse(buf: &[u8]) -> Result<(Value<'_>, usize), BencodeError> {
    let mut pos = 0;
    let v = value(buf, &mut pos, 0)?;
    Ok((v, pos))
}

fn byte_at(buf: &[u8], pos: usize) -> Result<u8, BencodeError> {
    buf.get(pos).copied().ok_or(BencodeError::Truncated(pos))
}

/// Reads decimal digits (with an optional leading `-`) up to `end`; returns the number.
fn number(buf: &[u8], pos: &mut usize, end: u8) -> Result<i64, BencodeError> {
    let start = *pos;
    let mut n: i64 = 0;
    let negative = byte_at(buf, *pos)? == b'-';
    if negative {
        *pos += 1;
    }
    loop {
        let b = byte_at(buf, *pos)?;
        let offset = *pos;
        *pos += 1;
        match b {
            b'0'..=b'9' => {
                n = n
                    .checked_mul(10)
                    .and_then(|n| n.checked_add(i64::from(b - b'0')))
                    .ok_or(BencodeError::Unexpected { byte: b, offset })?;
            }
            _ if b == end && offset > start + usize::from(negative) => {
                return Ok(if negative { -n } else { n });
            }
            _ => return Err(BencodeError::Unexpected { byte: b, offset }),
        }
    }
}

fn value<'a>(buf: &'a [u8], pos: &mut usize, depth: usize) -> Result<Value<'a>, BencodeError> {
    let offset = *pos;
    match byte_at(buf, offset)? {
        b'i' => {
            *pos += 1;
            number(buf, pos, b'e').map(Value::Int)
        }
        b'0'..=b'9' => string(buf, pos).map(Value::Bytes),
        b'l' | b'd' if depth >= MAX_DEPTH => Err(BencodeError::TooDeep(offset)),
        b'l' => {
            *pos += 1;
            let mut items = Vec::new();
            while byte_at(buf, *pos)? != b'e' {
                items.push(value(buf, pos, depth + 1)?);
            }
            *pos += 1;
            Ok(Value::List(items))
        }
        b'd' => {
            *pos += 1;
            let mut entries = Vec::new();
            while byte_at(buf, *pos)? != b'e' {
                let key = string(buf, pos)?;
                entries.push((key, value(buf, pos, depth + 1)?));
            }
            *pos += 1;
            Ok(Value::Dict(entries))
        }
        byte => Err(BencodeError::Unexpected { byte, offset }),
    }
}

fn string<'a>(buf: &'a [u8], pos: &mut usize) -> Result<&'a [u8], BencodeError> {
    let offset = *pos;
    let len = number(buf, pos, b':')?;
    let len = usize::try_from(len).map_err(|_| BencodeError::Unexpected { byte: b'-', offset })?;
    let end = pos.checked_add(len).filter(|&e| e <= buf.len());
    let end = end.ok_or(BencodeError::Truncated(buf.len()))?;
    let s = &buf[*pos..end];
    *pos = end;
    Ok(s)
}

/// Peers in compact form (`values` of a `get_peers` response).
fn compact_peers<'a>(items: &'a [Value<'_>]) -> impl Iterator<Item = Endpoint> + 'a {
    items.iter().filter_map(|v| {
        let b = v.bytes()?;
        let (ip, port) = match b.len() {
            COMPACT_V4 => {
                let a: [u8; 4] = b[..4].try_into().ok()?;
                (IpAddr::V4(Ipv4Addr::from(a)), &b[4..])
            }
            COMPACT_V6 => {
                let a: [u8; 16] = b[..16].try_into().ok()?;
                (IpAddr::V6(Ipv6Addr::from(a)), &b[16..])
            }
            _ => return None,
        };
        Some((ip, u16::from_be_bytes([port[0], port[1]])))
    })
}

/// Queries waiting for their response: (querier, transaction id) → the query's label.
pub struct Transactions(Lru<(Endpoint, Vec<u8>), LabelId>);

impl Transactions {
    /// Queries remembered.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no query is remembered.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl Default for Transactions {
    fn default() -> Self {
        Transactions(Lru::new(TXNS_KEPT))
    }
}

/// Labels KRPC datagrams and learns DHT nodes and the peers they hand out.
pub struct Dht;

impl DatagramDecoder for Dht {
    fn datagram(&self, d: &Datagram<'_>, ctx: &mut DecodeCtx<'_>) -> Option<Labelled> {
        let p = d.payload;
        if p.first() != Some(&b'd') || p.last() != Some(&b'e') {
            return None;
        }
        let (msg, used) = parse(p).ok()?;
        let txn = msg.get(b"t")?.bytes()?;
        if used != p.len() || txn.len() > MAX_TXN_LEN {
            return None;
        }
        let book = &mut ctx.udp.bittorrent;
        let label = match msg.get(b"y")?.bytes()? {
            b"q" => {
                let method = msg.get(b"q")?.bytes()?;
                let kind = METHODS
                    .iter()
                    .find(|m| m.as_bytes() == method)
                    .map_or("query", |m| m);
                let l = label(ctx.labels, PROTOCOL, kind);
                book.dht.0.insert((d.src, txn.to_vec()), l);
                if let Some(port) = announced_port(&msg, d.src.1) {
                    book.learn_peer((d.src.0, port));
                }
                l
            }
            b"r" => {
                let values = msg.get(b"r").and_then(|r| r.get(b"values"));
                if let Some(Value::List(items)) = values {
                    for peer in compact_peers(items) {
                        book.learn_peer(peer);
                    }
                }
                match book.dht.0.get(&(d.dst, txn.to_vec())) {
                    Some(&l) => l,
                    None => label(ctx.labels, PROTOCOL, "response"),
                }
            }
            b"e" => label(ctx.labels, PROTOCOL, "error"),
            _ => return None,
        };
        ctx.udp.bittorrent.learn_peer(d.src);
        Some(Labelled { label, units: 1 })
    }
}

/// The TCP port an `announce_peer` query announces (`implied_port` means the sender's).
fn announced_port(msg: &Value<'_>, src_port: u16) -> Option<u16> {
    if msg.get(b"q")?.bytes()? != b"announce_peer" {
        return None;
    }
    let args = msg.get(b"a")?;
    if args.get(b"implied_port").and_then(Value::int) == Some(1) {
        return Some(src_port);
    }
    u16::try_from(args.get(b"port")?.int()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::TestCtx;

    const PING: &[u8] = b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe";
    const PONG: &[u8] = b"d1:rd2:id20:mnopqrstuvwxyz123456e1:t2:aa1:y1:re";
    const PEERS: &[u8] =
        b"d1:rd2:id20:mnopqrstuvwxyz1234566:valuesl6:\x7f\x00\x00\x02\x1a\xe1ee1:t2:bb1:y1:re";

    fn endpoint(last: u8, port: u16) -> Endpoint {
        (IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)), port)
    }

    fn kind(t: &mut TestCtx, payload: &[u8], src: Endpoint, dst: Endpoint) -> Option<String> {
        t.datagram_kind(&Dht, payload, src, dst)
    }

    #[test]
    fn response_takes_the_query_method() {
        let mut t = TestCtx::default();
        let (a, b) = (endpoint(1, 6881), endpoint(2, 6882));
        assert_eq!(kind(&mut t, PING, a, b).as_deref(), Some("ping"));
        assert_eq!(kind(&mut t, PONG, b, a).as_deref(), Some("ping"));
        assert_eq!(kind(&mut t, PEERS, b, a).as_deref(), Some("response"));
        assert!(t.udp.bittorrent.is_peer(&endpoint(2, 6881)));
        assert!(t.udp.bittorrent.is_peer(&b));
    }

    #[test]
    fn truncated_and_foreign_bytes_are_not_krpc() {
        let mut t = TestCtx::default();
        let (a, b) = (endpoint(1, 1), endpoint(2, 2));
        for cut in 0..PING.len() {
            assert_eq!(kind(&mut t, &PING[..cut], a, b), None, "cut {cut}");
        }
        assert_eq!(kind(&mut t, b"d1:xi1ee", a, b), None);
        assert_eq!(
            parse(b"i-e"),
            Err(BencodeError::Unexpected {
                byte: b'e',
                offset: 2
            })
        );
        let deep = [b'l'; MAX_DEPTH + 1];
        assert_eq!(parse(&deep), Err(BencodeError::TooDeep(MAX_DEPTH)));
    }
}
