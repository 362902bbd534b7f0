//! `wakusim`: community bandwidth simulations. Waku relay networks of real rust-libp2p nodes in
//! network namespaces, communities on dedicated or shared shards (optionally protected by a
//! signing key, validated as nwaku does), measured by wakuprof against the nodes' own truth.

pub mod chart;
pub mod community;
pub mod error;
pub mod export;
mod fleet;
pub mod health;
pub mod janitor;
pub mod measure;
pub mod net;
pub mod openapi;
pub mod process;
pub mod report;
pub mod run;
pub mod runs;
pub mod scenario;
pub mod serve;
pub mod signed;
pub mod standalone;
pub mod sweep;
pub mod table;
