//! Interned labels: decoders and the hot path handle 4-byte ids, rows get the full [`Label`].

use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::account::record::{Category, Label, Method};

/// Index of a label in the [`LabelTable`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LabelId(pub u32);

/// Most distinct labels kept; past this, new labels fold into one overflow label per category.
pub const MAX_LABELS: usize = 1 << 16;

/// Cluster and shard of a static-sharding pubsub topic `/waku/2/rs/<cluster>/<shard>`.
pub fn static_shard(topic: &str) -> Option<(u16, u16)> {
    let rest = topic.strip_prefix("/waku/2/rs/")?;
    let (cluster, shard) = rest.split_once('/')?;
    Some((cluster.parse().ok()?, shard.parse().ok()?))
}

/// Protocol and kind of the per-category label that stands in for labels past [`MAX_LABELS`].
const OVERFLOW: &str = "overflow";

/// All labels seen in a run, each stored once.
#[derive(Default)]
pub struct LabelTable {
    labels: Vec<Label>,
    index: FxHashMap<Label, LabelId>,
    strings: FxHashMap<Box<str>, Arc<str>>,
    transport: FxHashMap<LabelId, LabelId>,
    /// [`LabelTable::heap_bytes`], measured again whenever the table changes (it is read for
    /// every packet, and changes rarely).
    heap: usize,
    /// Labels that could not be added because the table was full.
    pub overflowed: u64,
}

impl LabelTable {
    /// Returns the id of `label`, adding it if new.
    pub fn intern(&mut self, label: Label) -> LabelId {
        if let Some(&id) = self.index.get(&label) {
            return id;
        }
        if self.labels.len() >= MAX_LABELS && label.kind.as_ref() != OVERFLOW {
            self.overflowed += 1;
            let category = label.category;
            return self.decoded(category, OVERFLOW, OVERFLOW);
        }
        let id = LabelId(self.labels.len() as u32);
        self.labels.push(label.clone());
        self.index.insert(label, id);
        self.measure();
        id
    }

    /// Labels held.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether no label was added yet.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Approximate heap bytes of the labels, their index and their strings (64 bytes each).
    pub fn heap_bytes(&self) -> usize {
        self.heap
    }

    fn measure(&mut self) {
        use crate::memory::{table_bytes, vec_bytes};
        self.heap = vec_bytes(&self.labels)
            + table_bytes::<(Label, LabelId)>(self.index.capacity())
            + table_bytes::<(Box<str>, Arc<str>)>(self.strings.capacity())
            + self.strings.len() * 64
            + table_bytes::<(LabelId, LabelId)>(self.transport.capacity());
    }

    /// Shares one allocation per distinct string.
    pub fn string(&mut self, s: &str) -> Arc<str> {
        if let Some(a) = self.strings.get(s) {
            return Arc::clone(a);
        }
        let a: Arc<str> = Arc::from(s);
        self.strings.insert(s.into(), Arc::clone(&a));
        self.measure();
        a
    }

    /// Interns a decoded label with no shard or topic.
    pub fn decoded(&mut self, category: Category, protocol: &str, kind: &str) -> LabelId {
        let protocol = self.string(protocol);
        let kind = self.string(kind);
        self.intern(Label::decoded(category, &protocol, &kind))
    }

    /// The same label obtained by `method` with confidence `permille` (rules of thumb, ports).
    pub fn with_method(&mut self, id: LabelId, method: Method, permille: u16) -> LabelId {
        let mut label = self.labels[id.0 as usize].clone();
        label.method = method;
        label.confidence_permille = permille;
        self.intern(label)
    }

    /// The same label with kind `transport` and no topic: for segments without payload.
    pub fn transport_of(&mut self, id: LabelId) -> LabelId {
        if let Some(&t) = self.transport.get(&id) {
            return t;
        }
        let base = &self.labels[id.0 as usize];
        let (category, protocol, method) = (base.category, Arc::clone(&base.protocol), base.method);
        let kind = self.string("transport");
        let mut label = Label::decoded(category, &protocol, &kind);
        label.method = method;
        let t = self.intern(label);
        self.transport.insert(id, t);
        self.measure();
        t
    }

    /// The same label for bytes of pubsub topic `topic`; static-sharding topics
    /// (`/waku/2/rs/<cluster>/<shard>`) also give the cluster and shard.
    pub fn with_topic(&mut self, id: LabelId, topic: &str) -> LabelId {
        let mut label = self.labels[id.0 as usize].clone();
        let (cluster_id, shard) = static_shard(topic).unzip();
        label.cluster_id = cluster_id;
        label.shard = shard;
        label.pubsub_topic = Some(self.string(topic));
        self.intern(label)
    }

    /// The label behind an id.
    pub fn get(&self, id: LabelId) -> &Label {
        &self.labels[id.0 as usize]
    }
}
