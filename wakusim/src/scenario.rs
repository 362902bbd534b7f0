//! The scenario file (TOML): the network, its communities and what their members publish,
//! gossipsub's mesh parameters, an optional attacker. Unknown fields are errors, and every
//! check names the field it rejects.

use std::{collections::BTreeSet, path::Path, time::Duration};

use anyhow::{Context as _, bail, ensure};
use serde::Deserialize;
use traffic::node::Mesh;

use crate::measure::Measure;

/// Status' cluster.
pub const DEFAULT_CLUSTER: u16 = 16;
/// The shared shard communities use unless they get their own.
pub const SHARED_SHARD: u16 = 32;
/// Most nodes a run may have (one /24 on the simulation's bridge).
pub const MAX_NODES: usize = 200;

/// A whole simulation.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Seconds of publishing.
    pub duration_secs: f64,
    /// Seed of the topology, the publishing schedule, payloads and community keys.
    #[serde(default)]
    pub seed: u64,
    /// `plaintext` (the profiler sees everything) or `noise` (as Waku nodes run).
    #[serde(default = "default_transport")]
    pub transport: Transport,
    /// What measures the nodes: `auto` (wakuprof's eBPF probe, live, where it loads; else
    /// each node's capture), `probe` or `pcap`.
    #[serde(default)]
    pub measure: Measure,
    /// Waku cluster of every shard.
    #[serde(default = "default_cluster")]
    pub cluster: u16,
    /// The relay network.
    pub network: Network,
    /// Gossipsub mesh parameters (nwaku's when absent).
    #[serde(default)]
    pub gossipsub: Gossipsub,
    /// The communities.
    #[serde(default, rename = "community")]
    pub communities: Vec<Community>,
    /// A node publishing invalid messages onto a protected shard.
    pub attacker: Option<Attacker>,
    /// Nodes joining, leaving and restarting during the publishing.
    #[serde(default)]
    pub churn: Vec<Churn>,
}

/// What a node does at a churn event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ChurnAction {
    /// The node is absent (no connection) until then; it then dials every peer of the topology.
    Join,
    /// The node closes its connections and stops.
    Leave,
    /// The node stops, and `down_secs` later starts again (a new identity and port, as a
    /// restarted node without a persistent key) and dials its peers of the topology.
    Restart,
}

/// One churn event.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Churn {
    pub node: usize,
    /// Seconds after the publishing starts.
    pub at_secs: f64,
    pub action: ChurnAction,
    /// How long a restarting node stays down.
    #[serde(default = "default_down_secs")]
    pub down_secs: f64,
}

fn default_down_secs() -> f64 {
    1.0
}

/// The security the nodes negotiate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    /// `/plaintext/2.0.0`: the profiler decodes every byte, its error against truth is zero.
    Plaintext,
    /// `/noise`: the profiler infers kinds from sizes and timing.
    Noise,
}

fn default_transport() -> Transport {
    Transport::Plaintext
}

fn default_cluster() -> u16 {
    DEFAULT_CLUSTER
}

/// Nodes and how they connect.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// Number of relay nodes (node0 … node{n-1}).
    pub nodes: usize,
    /// Connections each node dials: one to the previous node (so the network is connected),
    /// the rest to random others.
    #[serde(default = "default_degree")]
    pub degree: usize,
}

fn default_degree() -> usize {
    3
}

/// Gossipsub's mesh parameters.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gossipsub {
    pub d: usize,
    pub d_low: usize,
    pub d_high: usize,
    pub d_lazy: usize,
    pub heartbeat_ms: u64,
}

impl Default for Gossipsub {
    fn default() -> Self {
        let m = Mesh::WAKU;
        Gossipsub {
            d: m.d,
            d_low: m.d_low,
            d_high: m.d_high,
            d_lazy: m.d_lazy,
            heartbeat_ms: u64::try_from(m.heartbeat.as_millis()).unwrap_or(1000),
        }
    }
}

impl Gossipsub {
    /// The node's mesh parameters.
    pub fn mesh(&self) -> Mesh {
        Mesh {
            d: self.d,
            d_low: self.d_low,
            d_high: self.d_high,
            d_lazy: self.d_lazy,
            heartbeat: Duration::from_millis(self.heartbeat_ms),
        }
    }
}

/// A community: its members, its shard and what they publish.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Community {
    pub name: String,
    /// Its own shard; the shared shard 32 when absent.
    pub shard: Option<u16>,
    /// Whether the shard is protected by the community's signing key.
    #[serde(default)]
    pub protected: bool,
    /// Take shard, protection and key from the community of this name in the state directory
    /// (`wakusim community create`) instead of `shard` and `protected`; cleared once taken.
    #[serde(default)]
    pub stored: bool,
    /// The stored community's signing key (else one derived from the seed and the name).
    #[serde(skip)]
    pub key: Option<k256::ecdsa::SigningKey>,
    /// Indexes of the member nodes.
    pub members: Vec<usize>,
    /// What each member publishes.
    #[serde(default, rename = "message")]
    pub messages: Vec<MessageClass>,
}

impl Community {
    /// The community's shard number.
    pub fn shard(&self) -> u16 {
        self.shard.unwrap_or(SHARED_SHARD)
    }

    /// The key members sign with on a protected shard: the stored one, else one derived from
    /// the scenario's seed and the name (so that runs repeat).
    pub fn signing_key(&self, seed: u64) -> k256::ecdsa::SigningKey {
        self.key.clone().unwrap_or_else(|| {
            crate::signed::key_from_seed(format!("{seed} {}", self.name).as_bytes())
        })
    }
}

/// One kind of message a community's members publish.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageClass {
    pub content_topic: String,
    /// Payload bytes (the smallest, when `size_max` is set).
    pub size: usize,
    /// Largest payload: sizes are then uniform in `size..=size_max`.
    pub size_max: Option<usize>,
    /// Messages per minute each member publishes.
    pub rate_per_min: f64,
    #[serde(default)]
    pub ephemeral: bool,
}

/// What the attacker publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AttackMode {
    /// No `meta` at all.
    Unsigned,
    /// Signed with a key that is not the community's.
    WrongKey,
}

/// A node that publishes invalid messages onto a protected community's shard.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attacker {
    pub node: usize,
    /// Name of the protected community it targets.
    pub community: String,
    pub mode: AttackMode,
    /// Messages it publishes over the run.
    pub messages: usize,
    /// Payload bytes of each.
    #[serde(default = "default_attack_size")]
    pub size: usize,
}

fn default_attack_size() -> usize {
    200
}

/// Most payload bytes of a message (nwaku's 150 KiB limit on the whole RPC leaves room).
const MAX_PAYLOAD: usize = 140 * 1024;

impl Scenario {
    /// Reads and checks a scenario file.
    pub fn load(path: &Path) -> anyhow::Result<Scenario> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        Scenario::parse(&text).with_context(|| format!("scenario {}", path.display()))
    }

    /// Parses and checks a scenario.
    pub fn parse(text: &str) -> anyhow::Result<Scenario> {
        let scenario: Scenario = toml::from_str(text)?;
        scenario.check()?;
        Ok(scenario)
    }

    /// Parses and checks a scenario written as JSON (the same fields as the TOML).
    pub fn parse_json(text: &str) -> anyhow::Result<Scenario> {
        let scenario: Scenario = serde_json::from_str(text)?;
        scenario.check()?;
        Ok(scenario)
    }

    /// Every pubsub topic in use, sorted.
    pub fn pubsub_topics(&self) -> Vec<String> {
        let shards: BTreeSet<u16> = self.communities.iter().map(Community::shard).collect();
        shards.iter().map(|s| self.pubsub_topic(*s)).collect()
    }

    /// The pubsub topic of `shard` in the scenario's cluster.
    pub fn pubsub_topic(&self, shard: u16) -> String {
        format!("/waku/2/rs/{}/{shard}", self.cluster)
    }

    /// Checks every field; each error starts with the path of the field it rejects.
    pub fn check(&self) -> anyhow::Result<()> {
        let n = self.network.nodes;
        ensure!(
            self.duration_secs.is_finite()
                && self.duration_secs > 0.0
                && self.duration_secs <= 3600.0,
            "duration_secs: {} is not in (0, 3600]",
            self.duration_secs
        );
        ensure!(
            (2..=MAX_NODES).contains(&n),
            "network.nodes: {n} is not in 2..={MAX_NODES}"
        );
        ensure!(
            (1..n).contains(&self.network.degree),
            "network.degree: {} is not in 1..{n} (fewer than the other nodes)",
            self.network.degree
        );
        let g = &self.gossipsub;
        ensure!(
            g.d_low >= 1 && g.d_low <= g.d && g.d <= g.d_high,
            "gossipsub: d_low ({}) <= d ({}) <= d_high ({}) with d_low >= 1 is required",
            g.d_low,
            g.d,
            g.d_high
        );
        ensure!(
            (100..=60_000).contains(&g.heartbeat_ms),
            "gossipsub.heartbeat_ms: {} is not in 100..=60000",
            g.heartbeat_ms
        );
        ensure!(
            !self.communities.is_empty(),
            "community: at least one is needed"
        );
        let mut names = BTreeSet::new();
        for (i, c) in self.communities.iter().enumerate() {
            let at = format!("community[{i}] ({})", c.name);
            ensure!(names.insert(&c.name), "{at}.name: used twice");
            ensure!(!c.members.is_empty(), "{at}.members: empty");
            if let Some(m) = c.members.iter().find(|m| **m >= n) {
                bail!("{at}.members: node {m} does not exist (network.nodes = {n})");
            }
            if c.shard.is_none() && c.protected {
                bail!(
                    "{at}.protected: the shared shard {SHARED_SHARD} cannot be protected; give the community its own shard"
                );
            }
            if c.shard == Some(SHARED_SHARD) && c.protected {
                bail!("{at}.shard: {SHARED_SHARD} is the shared shard and cannot be protected");
            }
            if let Some(s) = c.shard
                && s >= 1024
            {
                bail!("{at}.shard: {s} is past the 1024 shards of a cluster");
            }
            let clash = self
                .communities
                .iter()
                .any(|o| o.shard() == c.shard() && o.protected != c.protected);
            ensure!(
                !clash,
                "{at}.protected: shard {} holds protected and unprotected communities",
                c.shard()
            );
            for (j, m) in c.messages.iter().enumerate() {
                let at = format!("{at}.message[{j}]");
                ensure!(!m.content_topic.is_empty(), "{at}.content_topic: empty");
                ensure!(
                    (1..=MAX_PAYLOAD).contains(&m.size),
                    "{at}.size: {} is not in 1..={MAX_PAYLOAD}",
                    m.size
                );
                if let Some(max) = m.size_max {
                    ensure!(
                        (m.size..=MAX_PAYLOAD).contains(&max),
                        "{at}.size_max: {max} is not in size..={MAX_PAYLOAD}"
                    );
                }
                ensure!(
                    m.rate_per_min.is_finite() && m.rate_per_min >= 0.0 && m.rate_per_min <= 600.0,
                    "{at}.rate_per_min: {} is not in 0..=600",
                    m.rate_per_min
                );
            }
        }
        self.check_churn()?;
        if let Some(a) = &self.attacker {
            ensure!(a.node < n, "attacker.node: node {} does not exist", a.node);
            let target = self
                .communities
                .iter()
                .find(|c| c.name == a.community)
                .with_context(|| format!("attacker.community: no community {}", a.community))?;
            ensure!(
                target.protected || target.stored,
                "attacker.community: {} is not protected",
                a.community
            );
            ensure!(
                (1..=MAX_PAYLOAD).contains(&a.size),
                "attacker.size: {} is not in 1..={MAX_PAYLOAD}",
                a.size
            );
            ensure!(
                a.messages <= 10_000,
                "attacker.messages: {} is over 10000",
                a.messages
            );
        }
        Ok(())
    }
}

impl Scenario {
    /// Each churn event fits the run and the node's state: a join only as the node's first
    /// event, a leave or restart only while it is up, everything before the publishing ends.
    fn check_churn(&self) -> anyhow::Result<()> {
        let mut order: Vec<usize> = (0..self.churn.len()).collect();
        order.sort_by(|a, b| self.churn[*a].at_secs.total_cmp(&self.churn[*b].at_secs));
        // Per node: whether it is up, and when it may next change.
        let mut up: Vec<(bool, f64)> = (0..self.network.nodes)
            .map(|i| {
                (
                    !self
                        .churn
                        .iter()
                        .any(|c| c.node == i && c.action == ChurnAction::Join),
                    0.0,
                )
            })
            .collect();
        let mut joins = BTreeSet::new();
        for k in order {
            let c = &self.churn[k];
            let at = format!("churn[{k}]");
            let state = up
                .get_mut(c.node)
                .with_context(|| format!("{at}.node: node {} does not exist", c.node))?;
            ensure!(
                c.at_secs.is_finite() && c.at_secs >= 0.0 && c.at_secs < self.duration_secs,
                "{at}.at_secs: {} is not in [0, duration_secs = {})",
                c.at_secs,
                self.duration_secs
            );
            ensure!(
                c.at_secs >= state.1,
                "{at}.at_secs: node {} is still restarting at {}",
                c.node,
                c.at_secs
            );
            match c.action {
                ChurnAction::Join => {
                    ensure!(
                        joins.insert(c.node) && !state.0,
                        "{at}.action: node {} joins only once, as its first event",
                        c.node
                    );
                    state.0 = true;
                }
                ChurnAction::Leave | ChurnAction::Restart => ensure!(
                    state.0,
                    "{at}.action: node {} is not up at {} s",
                    c.node,
                    c.at_secs
                ),
            }
            if c.action == ChurnAction::Leave {
                state.0 = false;
            }
            if c.action == ChurnAction::Restart {
                ensure!(
                    c.down_secs.is_finite()
                        && c.down_secs > 0.0
                        && c.at_secs + c.down_secs < self.duration_secs,
                    "{at}.down_secs: {} does not end before duration_secs = {}",
                    c.down_secs,
                    self.duration_secs
                );
                state.1 = c.at_secs + c.down_secs;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
        duration_secs = 5
        [network]
        nodes = 4
        [[community]]
        name = "a"
        shard = 128
        protected = true
        members = [0, 1]
        [[community.message]]
        content_topic = "/a/1/chat/proto"
        size = 100
        rate_per_min = 60
    "#;

    fn error(text: &str) -> String {
        format!("{:#}", Scenario::parse(text).expect_err("rejected"))
    }

    #[test]
    fn a_good_scenario_gets_the_defaults() {
        let s = Scenario::parse(GOOD).expect("parses");
        assert_eq!(s.cluster, 16);
        assert_eq!(s.transport, Transport::Plaintext);
        assert_eq!(s.measure, Measure::Auto);
        assert_eq!(s.gossipsub.mesh(), Mesh::WAKU);
        assert_eq!(s.pubsub_topics(), ["/waku/2/rs/16/128"]);
    }

    #[test]
    fn the_shipped_scenarios_are_valid() {
        for name in ["demo", "mesh"] {
            let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("scenarios/{name}.toml"));
            let s = Scenario::load(&path).expect("the scenario parses");
            assert_eq!(s.pubsub_topics(), ["/waku/2/rs/16/32", "/waku/2/rs/16/128"]);
            assert!(s.attacker.is_some());
        }
    }

    #[test]
    fn errors_name_the_field() {
        let unknown = error(&GOOD.replace("rate_per_min", "rate"));
        assert!(unknown.contains("rate"), "{unknown}");
        let measure = error(&format!("measure = \"ebpf\"\n{GOOD}"));
        assert!(
            measure.contains(r#"measure: "ebpf" is not one of "auto", "probe", "pcap""#),
            "{measure}"
        );
        let json = serde_json::from_str::<Measure>(r#""live""#).expect_err("rejected");
        assert!(json.to_string().starts_with("measure: "), "{json}");
        let member = error(&GOOD.replace("[0, 1]", "[0, 9]"));
        assert!(
            member.contains("community[0] (a).members: node 9"),
            "{member}"
        );
        let shared = error(&GOOD.replace("shard = 128", ""));
        assert!(shared.contains("community[0] (a).protected"), "{shared}");
        let mesh = error(&format!(
            "{GOOD}\n[gossipsub]\nd = 2\nd_low = 4\nd_high = 8\nd_lazy = 6\nheartbeat_ms = 1000"
        ));
        assert!(mesh.contains("gossipsub: d_low (4) <= d (2)"), "{mesh}");
        let churn = |events: &str| error(&format!("{GOOD}\n{events}"));
        let e = churn("[[churn]]\nnode = 1\nat_secs = 9\naction = \"leave\"");
        assert!(
            e.contains("churn[0].at_secs: 9 is not in [0, duration_secs = 5)"),
            "{e}"
        );
        let e = churn(
            "[[churn]]\nnode = 1\nat_secs = 1\naction = \"leave\"\n[[churn]]\nnode = 1\nat_secs = 2\naction = \"restart\"",
        );
        assert!(
            e.contains("churn[1].action: node 1 is not up at 2 s"),
            "{e}"
        );
        let e = churn(
            "[[churn]]\nnode = 1\nat_secs = 1\naction = \"join\"\n[[churn]]\nnode = 1\nat_secs = 2\naction = \"join\"",
        );
        assert!(
            e.contains("churn[1].action: node 1 joins only once, as its first event"),
            "{e}"
        );
        let e = churn(
            "[[churn]]\nnode = 2\nat_secs = 1\naction = \"restart\"\ndown_secs = 2\n[[churn]]\nnode = 2\nat_secs = 2\naction = \"leave\"",
        );
        assert!(
            e.contains("churn[1].at_secs: node 2 is still restarting at 2"),
            "{e}"
        );
        let ok = format!(
            "{GOOD}\n[[churn]]\nnode = 3\nat_secs = 1\naction = \"join\"\n[[churn]]\nnode = 3\nat_secs = 2\naction = \"restart\"\n[[churn]]\nnode = 3\nat_secs = 4\naction = \"leave\""
        );
        Scenario::parse(&ok).expect("join, restart, leave");
        let attacker = error(&format!(
            "{GOOD}\n[attacker]\nnode = 3\ncommunity = \"b\"\nmode = \"unsigned\"\nmessages = 1"
        ));
        assert!(
            attacker.contains("attacker.community: no community b"),
            "{attacker}"
        );
    }
}
