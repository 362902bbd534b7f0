//! The configurable lists behind the non-relay rules: discovery ports and tree domains, RPC
//! providers, DoH resolvers, telemetry hosts and the node's own HTTP ports. Defaults are built in;
//! `--config FILE` (TOML, the shape `wakuprof config` prints) replaces any list it names.

use std::net::IpAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::Error;

/// Every list the decoders consult.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Rules {
    pub discovery: DiscoveryRules,
    pub rpc: RpcRules,
    pub other: OtherRules,
}

/// discv5 and DNS discovery (EIP-1459).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DiscoveryRules {
    /// Node ids (64 hex digits) whose inbound discv5 packets can be unmasked; `--node-id` adds to it.
    pub node_ids: Vec<String>,
    /// UDP ports where datagrams that cannot be unmasked still count as discv5 (method `heuristic`).
    pub discv5_ports: Vec<u16>,
    /// Domains of EIP-1459 trees: TXT queries at or under them are `dns-enrtree`.
    pub enrtree_domains: Vec<String>,
}

impl Default for DiscoveryRules {
    fn default() -> Self {
        DiscoveryRules {
            node_ids: Vec::new(),
            discv5_ports: vec![9000],
            enrtree_domains: strings(&[
                "nodes.status.im",
                "waku.nodes.status.im",
                "status.nodes.status.im",
            ]),
        }
    }
}

/// Ethereum RPC reached over TLS.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RpcRules {
    /// Host names (or parent domains) of RPC providers, matched against the TLS SNI.
    pub providers: Vec<String>,
}

impl Default for RpcRules {
    fn default() -> Self {
        RpcRules {
            providers: strings(&[
                "infura.io",
                "alchemy.com",
                "alchemyapi.io",
                "quiknode.pro",
                "quicknode.com",
                "ankr.com",
                "cloudflare-eth.com",
                "llamarpc.com",
                "publicnode.com",
                "drpc.org",
                "blastapi.io",
                "chainstack.com",
                "1rpc.io",
                "rpc.sepolia.org",
                "linea.build",
            ]),
        }
    }
}

/// Traffic of a node's host that is neither Waku nor RPC but deserves a name.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct OtherRules {
    /// DNS-over-HTTPS resolvers, matched against the TLS SNI → `other` / `doh`.
    pub doh_resolvers: Vec<String>,
    /// The Status telemetry service, matched against the TLS SNI → `other` / `telemetry`.
    pub telemetry_hosts: Vec<String>,
    /// The node's REST API on loopback → `other` / `node-rest`.
    pub node_rest_ports: Vec<u16>,
    /// The node's Prometheus endpoint on loopback → `other` / `node-metrics`.
    pub node_metrics_ports: Vec<u16>,
}

impl Default for OtherRules {
    fn default() -> Self {
        OtherRules {
            doh_resolvers: strings(&[
                "cloudflare-dns.com",
                "dns.google",
                "dns.quad9.net",
                "doh.opendns.com",
                "dns.nextdns.io",
                "doh.cleanbrowsing.org",
                "dns.adguard-dns.com",
                "doh.mullvad.net",
            ]),
            telemetry_hosts: strings(&["telemetry.status.im"]),
            node_rest_ports: vec![8645],
            node_metrics_ports: vec![8008],
        }
    }
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_string()).collect()
}

/// Whether `name` is `domain` or a name under it (case-insensitive, trailing dots ignored).
pub fn in_domain(name: &str, domain: &str) -> bool {
    // Compared as bytes: a name from the wire may hold any UTF-8, and a split inside a character
    // would panic.
    let name = name.trim_end_matches('.').as_bytes();
    let domain = domain.trim_end_matches('.').as_bytes();
    let Some(cut) = name.len().checked_sub(domain.len()) else {
        return false;
    };
    let (head, tail) = name.split_at(cut);
    tail.eq_ignore_ascii_case(domain) && (head.is_empty() || head.ends_with(b"."))
}

/// Whether `name` is in any of `domains`.
pub fn in_any(name: &str, domains: &[String]) -> bool {
    domains.iter().any(|d| in_domain(name, d))
}

/// Whether an address is loopback, where the node's own REST and metrics endpoints listen.
pub fn is_loopback(addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => a.is_loopback(),
        IpAddr::V6(a) => a.is_loopback() || a.to_ipv4_mapped().is_some_and(|m| m.is_loopback()),
    }
}

impl Rules {
    /// Reads a TOML file; lists it names replace the defaults, the rest keep them.
    pub fn load(path: &Path) -> Result<Rules, Error> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let rules: Rules = toml::from_str(&text)
            .map_err(|e| Error::Invalid(format!("{}: {e}", path.display())))?;
        rules.node_ids()?;
        Ok(rules)
    }

    /// The defaults as TOML, for `wakuprof config` and as a starting point for a file.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_default()
    }

    /// The configured discv5 node ids, parsed.
    pub fn node_ids(&self) -> Result<Vec<[u8; 32]>, Error> {
        self.discovery
            .node_ids
            .iter()
            .map(|h| parse_node_id(h))
            .collect()
    }
}

/// A discv5 node id from 64 hex digits (an optional `0x` prefix is allowed).
pub fn parse_node_id(hex: &str) -> Result<[u8; 32], Error> {
    let digits = hex.strip_prefix("0x").unwrap_or(hex);
    let bad = || {
        Error::Invalid(format!(
            "'{hex}' is not a discv5 node id: expected 64 hex digits (the keccak256 of the node's public key)"
        ))
    };
    if digits.len() != 64 || !digits.is_ascii() {
        return Err(bad());
    }
    let mut id = [0u8; 32];
    for (i, b) in id.iter_mut().enumerate() {
        *b = u8::from_str_radix(&digits[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_match_whole_labels() {
        assert!(in_domain(
            "boot.prod.status.nodes.status.im.",
            "nodes.status.im"
        ));
        assert!(in_domain("NODES.status.im", "nodes.status.im"));
        assert!(!in_domain("evilnodes.status.im", "nodes.status.im"));
        assert!(!in_domain("status.im", "nodes.status.im"));
    }

    #[test]
    fn names_from_the_wire_are_compared_as_bytes() {
        // The cut before the domain falls inside 'é' (2 bytes): no panic, no match.
        assert!(!in_domain("éab", "ab"));
        assert!(!in_any("é.xy", &["ab".to_string()]));
        assert!(in_domain("bé.nodes.status.im", "nodes.status.im"));
        assert!(!in_domain("é", "nodes.status.im"));
    }

    #[test]
    fn a_file_replaces_only_the_lists_it_names() {
        let rules: Rules = toml::from_str("[rpc]\nproviders = [\"rpc.example\"]\n").expect("toml");
        assert_eq!(rules.rpc.providers, ["rpc.example"]);
        assert_eq!(rules.other, OtherRules::default());
        let round: Rules = toml::from_str(&Rules::default().to_toml()).expect("round trip");
        assert_eq!(round, Rules::default());
    }

    #[test]
    fn unknown_keys_and_bad_ids_are_errors() {
        assert!(toml::from_str::<Rules>("[rpc]\nprovider = []\n").is_err());
        assert!(parse_node_id("12").is_err());
        assert!(parse_node_id(&"g".repeat(64)).is_err());
        assert_eq!(parse_node_id(&"0a".repeat(32)).expect("id"), [10; 32]);
    }
}
