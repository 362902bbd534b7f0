//! `traffic` as a library: the real rust-libp2p (and js-libp2p) nodes, network namespaces,
//! captures and ground truth behind the sample generator, shared with `wakusim`.

pub mod bittorrent;
pub mod capture;
pub mod discovery;
pub mod discv5_node;
pub mod host_tcp;
pub mod js_relay;
pub mod netns;
pub mod node;
pub mod relay_truth;
pub mod rpc;
pub mod scenario;
pub mod services;
pub mod tap;
pub mod transport;
pub mod truth;
pub mod waku;
