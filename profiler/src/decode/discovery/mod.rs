//! Peer discovery: discv5 (as Waku uses it), ENRs, and DNS (EIP-1459 trees, libp2p dnsaddr).

pub mod discv5;
pub mod dns;
pub mod enr;
