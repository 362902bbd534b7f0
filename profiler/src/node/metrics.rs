//! The node's own byte counters from its Prometheus text exposition (nwaku's `/metrics`,
//! protocols.md §10): `waku_relay_network_bytes{topic,type,direction}` (WakuMessage bytes plus
//! the topic's length, per message: `gross`/`in` every copy received, `net`/`in` once per new
//! message, `net`/`out` every copy sent), `libp2p_network_bytes{direction}` (every stream byte,
//! framing included) and `waku_service_network_bytes{service,direction}`.

use std::collections::BTreeMap;

use super::NodeError;

/// Counter values of one scrape (or the difference of two).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct NodeCounters {
    /// `waku_relay_network_bytes` by (topic, type, direction).
    pub relay: BTreeMap<(String, String, String), f64>,
    /// `libp2p_network_bytes` by direction.
    pub libp2p: BTreeMap<String, f64>,
    /// `waku_service_network_bytes` by (service, direction).
    pub services: BTreeMap<(String, String), f64>,
}

const RELAY: &str = "waku_relay_network_bytes";
const LIBP2P: &str = "libp2p_network_bytes";
const SERVICES: &str = "waku_service_network_bytes";

impl NodeCounters {
    /// Reads a Prometheus text exposition; a body without any of the three counters is an error
    /// (the wrong endpoint, or a node with metrics off).
    pub fn parse(what: &str, text: &str) -> Result<NodeCounters, NodeError> {
        let mut c = NodeCounters::default();
        let mut seen = false;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = |message: &str| NodeError::Format {
                what: what.to_string(),
                message: format!("line {}: {message}: {line:.80}", n + 1),
            };
            let (name, labels, value) = sample(line).ok_or_else(|| bad("not a sample"))?;
            let name = name.strip_suffix("_total").unwrap_or(name);
            let get = |k: &str| {
                labels
                    .iter()
                    .find(|(l, _)| l == k)
                    .map(|(_, v)| v.clone())
                    .ok_or_else(|| bad(&format!("{name} without label {k}")))
            };
            match name {
                RELAY => {
                    let key = (get("topic")?, get("type")?, get("direction")?);
                    *c.relay.entry(key).or_default() += value;
                }
                LIBP2P => *c.libp2p.entry(get("direction")?).or_default() += value,
                SERVICES => {
                    let key = (get("service")?, get("direction")?);
                    *c.services.entry(key).or_default() += value;
                }
                _ => continue,
            }
            seen = true;
        }
        if !seen {
            return Err(NodeError::Format {
                what: what.to_string(),
                message: format!(
                    "none of {RELAY}, {LIBP2P}, {SERVICES}: is this a node's /metrics?"
                ),
            });
        }
        Ok(c)
    }

    /// What was counted between `earlier` and this scrape; a counter that went down (the node
    /// restarted) counts from zero.
    pub fn since(&self, earlier: &NodeCounters) -> NodeCounters {
        fn diff<K: Ord + Clone>(
            now: &BTreeMap<K, f64>,
            then: &BTreeMap<K, f64>,
        ) -> BTreeMap<K, f64> {
            now.iter()
                .map(|(k, &v)| {
                    let before = then.get(k).copied().unwrap_or(0.0);
                    (k.clone(), if v >= before { v - before } else { v })
                })
                .collect()
        }
        NodeCounters {
            relay: diff(&self.relay, &earlier.relay),
            libp2p: diff(&self.libp2p, &earlier.libp2p),
            services: diff(&self.services, &earlier.services),
        }
    }

    /// Relay bytes of `topic` (or of all topics) of `type` and `direction`.
    pub fn relay(&self, topic: Option<&str>, kind: &str, direction: &str) -> f64 {
        self.relay
            .iter()
            .filter(|((t, k, d), _)| topic.is_none_or(|x| x == t) && k == kind && d == direction)
            .map(|(_, v)| v)
            .sum()
    }
}

/// A sample's labels, as (name, value) pairs.
type Labels = Vec<(String, String)>;

/// Name, labels and value of a sample line `name{k="v",…} value [timestamp]`.
fn sample(line: &str) -> Option<(&str, Labels, f64)> {
    let name_end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let name = &line[..name_end];
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(r) = rest.strip_prefix('{') {
        rest = r;
        loop {
            rest = rest.trim_start_matches([' ', ',']);
            if let Some(r) = rest.strip_prefix('}') {
                rest = r;
                break;
            }
            let eq = rest.find('=')?;
            let key = rest[..eq].trim().to_string();
            let (value, after) = quoted(rest[eq + 1..].trim_start())?;
            labels.push((key, value));
            rest = after;
        }
    }
    let value = rest.split_whitespace().next()?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        v => v.parse().ok()?,
    };
    Some((name, labels, value))
}

/// A `"…"` label value with `\\`, `\"` and `\n` escapes, and what follows it.
fn quoted(s: &str) -> Option<(String, &str)> {
    let mut chars = s.strip_prefix('"')?.char_indices();
    let mut out = String::new();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((out, &s[i + 2..])),
            '\\' => match chars.next()?.1 {
                'n' => out.push('\n'),
                e => out.push(e),
            },
            c => out.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples_with_and_without_labels() {
        let (n, l, v) =
            sample(r#"a_total{topic="/x/\"y\"",direction="in"} 12.0 1700000000"#).unwrap();
        assert_eq!((n, v), ("a_total", 12.0));
        assert_eq!(l[0], ("topic".to_string(), "/x/\"y\"".to_string()));
        assert_eq!(l[1].1, "in");
        assert_eq!(sample("b 3").map(|s| s.2), Some(3.0));
        assert!(sample("c{x=\"1\" 3").is_none());
        assert!(sample("d{x=\"1\"} nope").is_none());
    }

    #[test]
    fn garbage_is_a_format_error() {
        let e = NodeCounters::parse("m", "<html>not metrics</html>").unwrap_err();
        assert!(e.to_string().contains("line 1"), "{e}");
        let e = NodeCounters::parse("m", "up 1\n").unwrap_err();
        assert!(e.to_string().contains("is this a node's /metrics"), "{e}");
    }

    #[test]
    fn a_restart_counts_from_zero() {
        let mut a = NodeCounters::default();
        a.libp2p.insert("in".into(), 100.0);
        let mut b = a.clone();
        b.libp2p.insert("in".into(), 150.0);
        assert_eq!(b.since(&a).libp2p["in"], 50.0);
        assert_eq!(a.since(&b).libp2p["in"], 100.0);
    }
}
