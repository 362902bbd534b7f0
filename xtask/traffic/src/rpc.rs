//! The gossipsub RPC protobuf (protocols.md §3.2, proto2) as prost structs, with every field
//! rust-libp2p 0.57 (libp2p-gossipsub 0.50) writes, including its newer extension fields, so
//! that re-encoding a decoded entry gives back its wire size exactly.

/// `RPC`: one length-prefixed message on a relay stream.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Rpc {
    /// Subscription changes.
    #[prost(message, repeated, tag = "1")]
    pub subscriptions: Vec<SubOpts>,
    /// Published (or forwarded) messages.
    #[prost(message, repeated, tag = "2")]
    pub publish: Vec<Message>,
    /// Control messages.
    #[prost(message, optional, tag = "3")]
    pub control: Option<ControlMessage>,
    /// Partial messages extension (rust-libp2p, not in Waku's schema).
    #[prost(message, optional, tag = "10")]
    pub partial: Option<PartialMessages>,
}

/// `RPC.SubOpts`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SubOpts {
    /// Subscribe (true) or unsubscribe.
    #[prost(bool, optional, tag = "1")]
    pub subscribe: Option<bool>,
    /// The pubsub topic.
    #[prost(string, optional, tag = "2")]
    pub topicid: Option<String>,
    /// Partial messages: the sender prefers them (rust-libp2p writes `false`).
    #[prost(bool, optional, tag = "3")]
    pub requests_partial: Option<bool>,
    /// Partial messages: the sender can send them (rust-libp2p writes `false`).
    #[prost(bool, optional, tag = "4")]
    pub supports_partial: Option<bool>,
}

/// `Message`: a pubsub message; unsigned (StrictNoSign) ones hold only `data` and `topic`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Message {
    /// Author peer id.
    #[prost(bytes = "vec", optional, tag = "1")]
    pub from: Option<Vec<u8>>,
    /// The WakuMessage bytes.
    #[prost(bytes = "vec", optional, tag = "2")]
    pub data: Option<Vec<u8>>,
    /// Sequence number.
    #[prost(bytes = "vec", optional, tag = "3")]
    pub seqno: Option<Vec<u8>>,
    /// The pubsub topic.
    #[prost(string, optional, tag = "4")]
    pub topic: Option<String>,
    /// Author signature.
    #[prost(bytes = "vec", optional, tag = "5")]
    pub signature: Option<Vec<u8>>,
    /// Author public key.
    #[prost(bytes = "vec", optional, tag = "6")]
    pub key: Option<Vec<u8>>,
}

/// `ControlMessage`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ControlMessage {
    /// IHAVE entries.
    #[prost(message, repeated, tag = "1")]
    pub ihave: Vec<ControlIHave>,
    /// IWANT entries.
    #[prost(message, repeated, tag = "2")]
    pub iwant: Vec<ControlIds>,
    /// GRAFT entries.
    #[prost(message, repeated, tag = "3")]
    pub graft: Vec<ControlGraft>,
    /// PRUNE entries.
    #[prost(message, repeated, tag = "4")]
    pub prune: Vec<ControlPrune>,
    /// IDONTWANT entries.
    #[prost(message, repeated, tag = "5")]
    pub idontwant: Vec<ControlIds>,
    /// Extensions announcement (rust-libp2p sends one, empty, first on every relay stream).
    #[prost(message, optional, tag = "6")]
    pub extensions: Option<ControlExtensions>,
}

/// `ControlIHave`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ControlIHave {
    /// The pubsub topic.
    #[prost(string, optional, tag = "1")]
    pub topic_id: Option<String>,
    /// Message ids the sender has.
    #[prost(bytes = "vec", repeated, tag = "2")]
    pub message_ids: Vec<Vec<u8>>,
}

/// `ControlIWant` and `ControlIDontWant`: message ids only, no topic.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ControlIds {
    /// Message ids.
    #[prost(bytes = "vec", repeated, tag = "1")]
    pub message_ids: Vec<Vec<u8>>,
}

/// `ControlGraft`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ControlGraft {
    /// The pubsub topic.
    #[prost(string, optional, tag = "1")]
    pub topic_id: Option<String>,
}

/// `ControlPrune`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ControlPrune {
    /// The pubsub topic.
    #[prost(string, optional, tag = "1")]
    pub topic_id: Option<String>,
    /// Peer exchange.
    #[prost(message, repeated, tag = "2")]
    pub peers: Vec<PeerInfo>,
    /// Backoff in seconds.
    #[prost(uint64, optional, tag = "3")]
    pub backoff: Option<u64>,
}

/// `PeerInfo` (peer exchange in PRUNE).
#[derive(Clone, PartialEq, prost::Message)]
pub struct PeerInfo {
    /// Peer id bytes.
    #[prost(bytes = "vec", optional, tag = "1")]
    pub peer_id: Option<Vec<u8>>,
    /// Signed peer record.
    #[prost(bytes = "vec", optional, tag = "2")]
    pub signed_peer_record: Option<Vec<u8>>,
}

/// `ControlExtensions` (rust-libp2p).
#[derive(Clone, PartialEq, prost::Message)]
pub struct ControlExtensions {
    /// Whether partial messages are supported.
    #[prost(bool, optional, tag = "10")]
    pub partial_messages: Option<bool>,
}

/// `PartialMessagesExtension` (rust-libp2p).
#[derive(Clone, PartialEq, prost::Message)]
pub struct PartialMessages {
    /// Topic.
    #[prost(bytes = "vec", optional, tag = "1")]
    pub topic_id: Option<Vec<u8>>,
    /// Group.
    #[prost(bytes = "vec", optional, tag = "2")]
    pub group_id: Option<Vec<u8>>,
    /// Encoded partial message.
    #[prost(bytes = "vec", optional, tag = "3")]
    pub partial_message: Option<Vec<u8>>,
    /// Parts metadata.
    #[prost(bytes = "vec", optional, tag = "4")]
    pub parts_metadata: Option<Vec<u8>>,
}
