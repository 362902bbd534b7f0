//! JSON-RPC 2.0 bodies (single calls and batches), as HTTP and WebSocket carry them: where each
//! call or response sits in the body and which method it belongs to. Responses name no method;
//! [`Calls`] remembers the method of each request id on a connection to name them.

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::decode::lru::Lru;

/// Kind of a response whose request was not seen, and of calls whose method is not a plain
/// `namespace_name` (bounded so that hostile method strings cannot multiply labels).
pub const UNKNOWN_METHOD: &str = "other";
/// Longest method name kept as a kind.
const MAX_METHOD_LEN: usize = 48;
/// Request ids remembered per connection.
const REMEMBERED_IDS: usize = 1024;

/// One call or response of a body: its byte range and the method it belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Element {
    pub start: usize,
    pub len: usize,
    pub method: String,
}

#[derive(Deserialize)]
struct Fields<'a> {
    #[serde(borrow, default)]
    jsonrpc: Option<&'a str>,
    #[serde(borrow, default)]
    method: Option<&'a str>,
    #[serde(borrow, default)]
    id: Option<&'a RawValue>,
}

/// The methods of request ids seen on one connection.
pub struct Calls(Lru<String, String>);

impl Default for Calls {
    fn default() -> Self {
        Calls(Lru::new(REMEMBERED_IDS))
    }
}

/// A method name as a kind: kept when it looks like `eth_call`, else [`UNKNOWN_METHOD`].
pub fn method_kind(method: &str) -> &str {
    let plain = method.len() <= MAX_METHOD_LEN
        && method.split_once('_').is_some_and(|(ns, name)| {
            !ns.is_empty()
                && !name.is_empty()
                && ns
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        });
    if plain { method } else { UNKNOWN_METHOD }
}

impl Calls {
    /// The elements of a JSON-RPC body, or `None` if it is not JSON-RPC (not JSON, or no element
    /// with `jsonrpc` or `method`). Requests teach the ids' methods; responses use them.
    pub fn elements(&mut self, body: &[u8]) -> Option<Vec<Element>> {
        let text = std::str::from_utf8(body).ok()?;
        let raw: Vec<&RawValue> = match text.trim_start().as_bytes().first() {
            Some(b'[') => serde_json::from_str(text).ok()?,
            Some(b'{') => vec![serde_json::from_str(text).ok()?],
            _ => return None,
        };
        let base = text.as_ptr() as usize;
        let mut out = Vec::with_capacity(raw.len());
        let mut any = false;
        for r in raw {
            let f: Fields<'_> = serde_json::from_str(r.get()).ok()?;
            any |= f.jsonrpc.is_some() || f.method.is_some();
            let id = f.id.map(|i| i.get().to_string());
            let method = match (f.method, id) {
                (Some(m), id) => {
                    let kind = method_kind(m).to_string();
                    if let Some(id) = id {
                        self.0.insert(id, kind.clone());
                    }
                    kind
                }
                (None, Some(id)) => self
                    .0
                    .get(&id)
                    .cloned()
                    .unwrap_or_else(|| UNKNOWN_METHOD.into()),
                (None, None) => UNKNOWN_METHOD.into(),
            };
            out.push(Element {
                start: r.get().as_ptr() as usize - base,
                len: r.get().len(),
                method,
            });
        }
        any.then_some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_split_into_calls_and_responses_take_their_methods() {
        let mut calls = Calls::default();
        let req = br#"[{"jsonrpc":"2.0","id":1,"method":"eth_call","params":[]}, {"jsonrpc":"2.0","id":"a","method":"net_version"}]"#;
        let e = calls.elements(req).expect("a batch");
        assert_eq!(e.len(), 2);
        assert_eq!((e[0].start, e[0].method.as_str()), (1, "eth_call"));
        assert_eq!(&req[e[1].start..e[1].start + e[1].len][..2], b"{\"");
        let resp = br#"{"jsonrpc":"2.0","id":"a","result":"1"}"#;
        let e = calls.elements(resp).expect("a response");
        assert_eq!(
            (e[0].start, e[0].len, e[0].method.as_str()),
            (0, resp.len(), "net_version")
        );
        let unknown = br#"{"jsonrpc":"2.0","id":9,"result":"1"}"#;
        assert_eq!(
            calls.elements(unknown).expect("response")[0].method,
            "other"
        );
    }

    #[test]
    fn other_json_and_odd_methods_are_not_kinds() {
        let mut calls = Calls::default();
        assert_eq!(calls.elements(br#"{"hello":1}"#), None);
        assert_eq!(calls.elements(b"not json"), None);
        assert_eq!(method_kind("eth_getBalance"), "eth_getBalance");
        assert_eq!(method_kind("Eth_x"), "other");
        assert_eq!(method_kind(&"a_".repeat(40)), "other");
        assert_eq!(method_kind("nounderscore"), "other");
    }
}
