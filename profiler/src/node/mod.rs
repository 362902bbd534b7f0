//! What the Waku node itself says: its peers and their shards (nwaku's admin REST API, ENRs in
//! discovery) and its own byte counters (its Prometheus endpoint), to give encrypted relay
//! bytes a shard and to reconcile what the node counts with what the wire carried.

pub mod metrics;
pub mod peers;
pub mod reconcile;

use std::time::Duration;

/// Why the node's API or metrics could not be read.
#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("{what}: {message} (is the node's REST API / metrics server enabled and reachable?)")]
    Fetch { what: String, message: String },
    #[error("{what}: cannot read: {error}")]
    Read { what: String, error: std::io::Error },
    #[error("{what}: not the format nwaku serves: {message}")]
    Format { what: String, message: String },
}

/// Longest body read from the node.
const MAX_BODY: u64 = 16 << 20;
/// How long a request to the node may take.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The text at `source`: an `http(s)://` URL fetched with GET, or a file (a saved answer).
pub fn fetch(source: &str) -> Result<String, NodeError> {
    if !(source.starts_with("http://") || source.starts_with("https://")) {
        return std::fs::read_to_string(source).map_err(|error| NodeError::Read {
            what: source.to_string(),
            error,
        });
    }
    let fail = |message: String| NodeError::Fetch {
        what: source.to_string(),
        message,
    };
    let config = ureq::Agent::config_builder()
        .timeout_global(Some(TIMEOUT))
        .user_agent(concat!("wakuprof/", env!("CARGO_PKG_VERSION")))
        .build();
    let agent = ureq::Agent::new_with_config(config);
    let mut resp = agent.get(source).call().map_err(|e| fail(e.to_string()))?;
    resp.body_mut()
        .with_config()
        .limit(MAX_BODY)
        .read_to_string()
        .map_err(|e| fail(e.to_string()))
}

/// The peer book from the admin API answer at `source` (URL or file); the API names shards but
/// not clusters, so its peers are put on `cluster`.
pub fn read_peers(source: &str, cluster: u16) -> Result<peers::PeerBook, NodeError> {
    let list = peers::parse_admin_peers(source, &fetch(source)?)?;
    let mut book = peers::PeerBook::new(Some(cluster));
    book.learn_api(&list);
    Ok(book)
}

/// The node's counters from one scrape at `source` (URL or file).
pub fn read_counters(source: &str) -> Result<metrics::NodeCounters, NodeError> {
    metrics::NodeCounters::parse(source, &fetch(source)?)
}
