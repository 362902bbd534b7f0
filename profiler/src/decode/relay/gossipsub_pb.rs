//! The gossipsub RPC entries the relay decoder reads (protocols.md §3.2), as prost messages.
//! Only the fields wakuprof uses are declared; prost skips the others.

/// `RPC.subscriptions` entry.
#[derive(Clone, PartialEq, prost::Message)]
pub struct SubOpts {
    #[prost(bool, optional, tag = "1")]
    pub subscribe: Option<bool>,
    #[prost(string, optional, tag = "2")]
    pub topic_id: Option<String>,
}

/// `RPC.publish` entry: a pubsub message; with Waku's StrictNoSign only `data` and `topic`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct Message {
    #[prost(bytes = "vec", optional, tag = "2")]
    pub data: Option<Vec<u8>>,
    #[prost(string, optional, tag = "4")]
    pub topic: Option<String>,
}

/// `ControlMessage.ihave` entry: a topic and ids of messages recently seen on it.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ControlIHave {
    #[prost(string, optional, tag = "1")]
    pub topic_id: Option<String>,
    #[prost(bytes = "vec", repeated, tag = "2")]
    pub message_ids: Vec<Vec<u8>>,
}

/// `ControlMessage.iwant` and `ControlMessage.idontwant` entries: message ids, no topic.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ControlIds {
    #[prost(bytes = "vec", repeated, tag = "1")]
    pub message_ids: Vec<Vec<u8>>,
}

/// `ControlMessage.graft` and `ControlMessage.prune` entries: their topic.
#[derive(Clone, PartialEq, prost::Message)]
pub struct ControlTopic {
    #[prost(string, optional, tag = "1")]
    pub topic_id: Option<String>,
}
