//! DNS on port 53, over UDP and over TCP (2-byte length prefix, RFC 1035 §4.2). Messages of
//! EIP-1459 node discovery (protocols.md §6.2) are `discovery` / `dns-enrtree`: TXT queries at or
//! under a tree domain (configured, or learned from earlier answers), TXT queries whose first
//! label is a record hash, and answers holding `enrtree-root:`, `enrtree-branch:`, `enrtree://`
//! or `enr:` records. Messages of libp2p's dnsaddr bootstrap (TXT queries of `_dnsaddr.<domain>`,
//! and answers holding `dnsaddr=<multiaddr>` records) are `discovery` / `dnsaddr`. Every other DNS
//! message is `other` / `dns`. Kinds: `query`, and for answers the tree record they hold (`root`,
//! `branch`, `link`, `enr`) or `response`.

use crate::account::record::{Category, Method};
use crate::decode::datagram::{Datagram, DatagramDecoder, Labelled};
use crate::decode::discovery::discv5::Discv5State;
use crate::decode::discovery::enr;
use crate::decode::error::DecodeError;
use crate::decode::services::http::PORT_CONFIDENCE;
use crate::decode::{
    Conn, DecodeCtx, LabelId, LabelTable, Probe, Side, StreamDecoder, StreamProbe,
};
use crate::rules::{Rules, in_any};

/// The protocol id of plain DNS rows and of its decode errors.
const PROTOCOL: &str = "dns";

/// The DNS port.
pub const PORT: u16 = 53;
const HEADER_LEN: usize = 12;
const TXT: u16 = 16;
/// Tree domains learned from answers, at most.
const LEARNED_DOMAINS: usize = 256;
/// First label of the names libp2p's dnsaddr resolution asks for (TXT).
const DNSADDR_LABEL: &str = "_dnsaddr.";
/// Start of a TXT record holding a dnsaddr multiaddr.
const DNSADDR_RECORD: &str = "dnsaddr=";
/// Length of a record hash label: base32 (no padding) of 16 bytes.
const HASH_LABEL_LEN: usize = 26;

/// An EIP-1459 record found in an answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TreeRecord {
    Root,
    Branch,
    /// A node record, as text (`enr:…`).
    Enr(String),
    /// A link to another tree, with that tree's domain.
    Link(String),
}

/// What the profiler reads of a DNS message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub response: bool,
    /// The first question's name, lower case, without the trailing dot.
    pub qname: String,
    pub qtype: u16,
    /// The first tree record among the TXT answers.
    pub record: Option<TreeRecord>,
    /// Whether a TXT answer holds a `dnsaddr=` multiaddr.
    pub dnsaddr: bool,
}

/// Reads a DNS message; `None` if it is not one (too short, no question, names running off).
pub fn parse(msg: &[u8]) -> Option<Message> {
    let header = msg.get(..HEADER_LEN)?;
    let response = header[2] & 0x80 != 0;
    let count = |i: usize| u16::from_be_bytes([header[i], header[i + 1]]);
    let (questions, answers) = (count(4), count(6));
    if questions == 0 {
        return None;
    }
    let (qname, mut at) = read_name(msg, HEADER_LEN)?;
    let qtype = u16::from_be_bytes([*msg.get(at)?, *msg.get(at + 1)?]);
    at += 4;
    for _ in 1..questions {
        at = skip_name(msg, at)? + 4;
    }
    let mut record = None;
    let mut dnsaddr = false;
    for _ in 0..answers {
        at = skip_name(msg, at)?;
        let fixed = msg.get(at..at + 10)?;
        let rtype = u16::from_be_bytes([fixed[0], fixed[1]]);
        let rdlen = usize::from(u16::from_be_bytes([fixed[8], fixed[9]]));
        let rdata = msg.get(at + 10..at + 10 + rdlen)?;
        at += 10 + rdlen;
        if rtype == TXT {
            let text = txt_text(rdata);
            dnsaddr |= text.starts_with(DNSADDR_RECORD);
            if record.is_none() {
                record = tree_record(&text);
            }
        }
    }
    Some(Message {
        response,
        qname,
        qtype,
        record,
        dnsaddr,
    })
}

/// A name at `at` without compression (as in questions), lower case; and where it ends.
fn read_name(msg: &[u8], mut at: usize) -> Option<(String, usize)> {
    let mut name = String::new();
    loop {
        let len = usize::from(*msg.get(at)?);
        if len == 0 {
            return Some((name, at + 1));
        }
        if len & 0xC0 != 0 {
            return None;
        }
        let label = msg.get(at + 1..at + 1 + len)?;
        if !name.is_empty() {
            name.push('.');
        }
        name.extend(label.iter().map(|&b| char::from(b.to_ascii_lowercase())));
        at += 1 + len;
    }
}

/// Where the name at `at` ends; a compression pointer ends it.
fn skip_name(msg: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = usize::from(*msg.get(at)?);
        match len {
            0 => return Some(at + 1),
            l if l & 0xC0 == 0xC0 => return msg.get(at + 1).map(|_| at + 2),
            l if l & 0xC0 != 0 => return None,
            l => at += 1 + l,
        }
    }
}

/// The character-strings of a TXT record, joined.
fn txt_text(mut rdata: &[u8]) -> String {
    let mut text = Vec::new();
    while let Some((&len, rest)) = rdata.split_first() {
        let n = usize::from(len).min(rest.len());
        text.extend_from_slice(&rest[..n]);
        rdata = &rest[n..];
    }
    String::from_utf8_lossy(&text).into_owned()
}

fn tree_record(text: &str) -> Option<TreeRecord> {
    if text.starts_with("enrtree-root:") {
        Some(TreeRecord::Root)
    } else if text.starts_with("enrtree-branch:") {
        Some(TreeRecord::Branch)
    } else if let Some(link) = text.strip_prefix("enrtree://") {
        let domain = link.split_once('@').map(|(_, d)| d)?;
        Some(TreeRecord::Link(domain.trim().to_ascii_lowercase()))
    } else if text.starts_with("enr:") {
        Some(TreeRecord::Enr(text.to_string()))
    } else {
        None
    }
}

/// Whether a label looks like an EIP-1459 record hash (26 base32 characters).
fn is_hash_label(label: &str) -> bool {
    label.len() == HASH_LABEL_LEN
        && label
            .bytes()
            .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b))
}

/// The parent of a name: all but its first label.
fn parent(name: &str) -> &str {
    name.split_once('.').map_or("", |(_, p)| p)
}

/// What DNS decoding remembers: tree domains learned from answers, and the labels.
#[derive(Default)]
pub struct DnsState {
    learned: Vec<String>,
    labels: Option<Labels>,
    /// Messages that were `dns-enrtree`, and all DNS messages read.
    pub enrtree: u64,
    pub messages: u64,
}

#[derive(Clone, Copy)]
struct Labels {
    tree_query: LabelId,
    tree_response: LabelId,
    root: LabelId,
    branch: LabelId,
    link: LabelId,
    enr: LabelId,
    dnsaddr_query: LabelId,
    dnsaddr_response: LabelId,
    query: LabelId,
    response: LabelId,
    /// Port 53 bytes that do not parse as DNS.
    unparsed: LabelId,
}

impl Labels {
    fn new(t: &mut LabelTable) -> Labels {
        let tree = |t: &mut LabelTable, kind| t.decoded(Category::Discovery, "dns-enrtree", kind);
        let dns = |t: &mut LabelTable, kind| t.decoded(Category::Other, PROTOCOL, kind);
        let unparsed = dns(t, "unparsed");
        Labels {
            tree_query: tree(t, "query"),
            tree_response: tree(t, "response"),
            root: tree(t, "root"),
            branch: tree(t, "branch"),
            link: tree(t, "link"),
            enr: tree(t, "enr"),
            dnsaddr_query: t.decoded(Category::Discovery, "dnsaddr", "query"),
            dnsaddr_response: t.decoded(Category::Discovery, "dnsaddr", "response"),
            query: dns(t, "query"),
            response: dns(t, "response"),
            unparsed: t.with_method(unparsed, Method::Port, PORT_CONFIDENCE),
        }
    }
}

impl DnsState {
    /// Whether a tree domain was learned from an answer.
    pub fn written(&self) -> bool {
        !self.learned.is_empty()
    }

    fn labels(&mut self, table: &mut LabelTable) -> Labels {
        *self.labels.get_or_insert_with(|| Labels::new(table))
    }

    fn learn(&mut self, domain: &str) {
        if domain.is_empty() || self.learned.iter().any(|d| d == domain) {
            return;
        }
        if self.learned.len() == LEARNED_DOMAINS {
            self.learned.remove(0);
        }
        self.learned.push(domain.to_string());
    }

    /// The label of one DNS message (the bytes of its body, without any TCP length prefix),
    /// or why it is not one. Node records in tree answers teach `discv5` their nodes' ids and
    /// endpoints.
    pub fn label(
        &mut self,
        body: &[u8],
        rules: &Rules,
        table: &mut LabelTable,
        discv5: &mut Discv5State,
    ) -> Result<LabelId, DecodeError> {
        let l = self.labels(table);
        self.messages += 1;
        let m = parse(body).ok_or(DecodeError::new(PROTOCOL, "unparsable message"))?;
        let dnsaddr = m.dnsaddr || (m.qtype == TXT && m.qname.starts_with(DNSADDR_LABEL));
        if dnsaddr {
            return Ok(if m.response {
                l.dnsaddr_response
            } else {
                l.dnsaddr_query
            });
        }
        let tree_name = m.qtype == TXT
            && (in_any(&m.qname, &rules.discovery.enrtree_domains)
                || in_any(&m.qname, &self.learned)
                || m.qname.split('.').next().is_some_and(is_hash_label));
        let label = match &m.record {
            Some(TreeRecord::Root) => {
                self.learn(&m.qname);
                l.root
            }
            Some(TreeRecord::Branch) => {
                self.learn(parent(&m.qname));
                l.branch
            }
            Some(TreeRecord::Enr(text)) => {
                self.learn(parent(&m.qname));
                if let Some(record) = enr::parse_text(text) {
                    discv5.learn_record(&record);
                }
                l.enr
            }
            Some(TreeRecord::Link(domain)) => {
                self.learn(domain);
                l.link
            }
            None if tree_name && m.response => l.tree_response,
            None if tree_name => l.tree_query,
            None if m.response => l.response,
            None => l.query,
        };
        self.enrtree += u64::from(tree_name || m.record.is_some());
        Ok(label)
    }
}

/// DNS over UDP.
pub struct DnsDatagrams;

/// Hands the shards node records announced to the peer book.
fn learn_shards(ctx: &mut DecodeCtx<'_>) {
    for (addr, cluster, shards) in ctx.udp.discv5.shard_records.drain(..) {
        ctx.relay.peers.learn(addr, Some(cluster), shards);
    }
}

/// The label of one DNS message; a malformed one is counted and `unparsed`.
fn message_label(body: &[u8], ctx: &mut DecodeCtx<'_>) -> LabelId {
    let udp = &mut *ctx.udp;
    let label = udp.dns.label(body, ctx.rules, ctx.labels, &mut udp.discv5);
    learn_shards(ctx);
    label.unwrap_or_else(|e| {
        ctx.malformed(e);
        ctx.udp.dns.labels(ctx.labels).unparsed
    })
}

impl DatagramDecoder for DnsDatagrams {
    fn datagram(&self, d: &Datagram<'_>, ctx: &mut DecodeCtx<'_>) -> Option<Labelled> {
        if d.src.1 != PORT && d.dst.1 != PORT {
            return None;
        }
        let label = message_label(d.payload, ctx);
        Some(Labelled { label, units: 1 })
    }
}

/// DNS over TCP: connections to port 53.
pub struct DnsProbe;

impl StreamProbe for DnsProbe {
    fn probe(&self, _side: Side, _first: &[u8], conn: &Conn, ctx: &mut DecodeCtx<'_>) -> Probe {
        if conn.responder.1 != PORT {
            return Probe::No;
        }
        let unparsed = ctx.udp.dns.labels(ctx.labels).unparsed;
        Probe::Yes(Box::new(DnsStream {
            held: [Vec::new(), Vec::new()],
            broken: [false; 2],
            first: None,
            unparsed,
        }))
    }
}

/// A DNS-over-TCP connection: each side's messages, held until complete.
struct DnsStream {
    held: [Vec<u8>; 2],
    /// A side that lost bytes: everything further is `unparsed`.
    broken: [bool; 2],
    /// The label of the first message: the connection's, for its packets without payload.
    first: Option<LabelId>,
    unparsed: LabelId,
}

impl StreamDecoder for DnsStream {
    fn heap_bytes(&self) -> usize {
        self.held.iter().map(Vec::capacity).sum()
    }

    fn data(&mut self, side: Side, bytes: &[u8], ctx: &mut DecodeCtx<'_>) {
        let i = side.index();
        if self.broken[i] {
            ctx.emit(side, bytes.len() as u64, self.unparsed, 0);
            return;
        }
        let held = &mut self.held[i];
        held.extend_from_slice(bytes);
        while held.len() >= 2 {
            let need = 2 + usize::from(u16::from_be_bytes([held[0], held[1]]));
            let Some(message) = held.get(2..need) else {
                break;
            };
            let label = message_label(message, ctx);
            self.first.get_or_insert(label);
            ctx.emit(side, need as u64, label, 1);
            held.drain(..need);
        }
    }

    fn gap(&mut self, side: Side, len: u64, ctx: &mut DecodeCtx<'_>) {
        let i = side.index();
        let held = std::mem::take(&mut self.held[i]).len() as u64;
        self.broken[i] = true;
        ctx.emit(side, held + len, self.unparsed, 0);
    }

    fn connection_label(&self) -> LabelId {
        self.first.unwrap_or(self.unparsed)
    }

    fn settled(&self, side: Side) -> Option<LabelId> {
        self.broken[side.index()].then_some(self.unparsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A message with one question and TXT answers holding `texts`.
    fn message(response: bool, name: &str, qtype: u16, texts: &[&str]) -> Vec<u8> {
        let mut m = vec![0x12, 0x34, if response { 0x81 } else { 0x01 }, 0];
        let answers = u16::try_from(texts.len()).expect("count");
        for n in [1, answers, 0, 0] {
            m.extend_from_slice(&u16::to_be_bytes(n));
        }
        for label in name.split('.') {
            m.push(u8::try_from(label.len()).expect("label"));
            m.extend_from_slice(label.as_bytes());
        }
        m.push(0);
        m.extend_from_slice(&qtype.to_be_bytes());
        m.extend_from_slice(&[0, 1]);
        for t in texts {
            m.extend_from_slice(&[0xC0, 0x0C, 0, 16, 0, 1, 0, 0, 0, 60]);
            let len = u8::try_from(t.len()).expect("text");
            m.extend_from_slice(&u16::from(len + 1).to_be_bytes());
            m.push(len);
            m.extend_from_slice(t.as_bytes());
        }
        m
    }

    fn kind(st: &mut DnsState, t: &mut LabelTable, msg: &[u8]) -> String {
        let id = st
            .label(msg, &Rules::default(), t, &mut Discv5State::default())
            .expect("a DNS message");
        let l = t.get(id);
        format!("{}/{}", l.protocol, l.kind)
    }

    #[test]
    fn tree_domains_are_learned_from_answers() {
        let (mut st, mut t) = (DnsState::default(), LabelTable::default());
        let root = "enrtree-root:v1 e=AAAA l=BBBB seq=1 sig=x";
        assert_eq!(
            kind(&mut st, &mut t, &message(false, "tree.test", TXT, &[])),
            "dns/query"
        );
        let answer = message(true, "tree.test", TXT, &[root]);
        assert_eq!(kind(&mut st, &mut t, &answer), "dns-enrtree/root");
        let again = message(false, "Tree.Test", TXT, &[]);
        assert_eq!(kind(&mut st, &mut t, &again), "dns-enrtree/query");
        let link = message(true, "x.tree.test", TXT, &["enrtree://KEY@other.test"]);
        assert_eq!(kind(&mut st, &mut t, &link), "dns-enrtree/link");
        let linked = message(false, "other.test", TXT, &[]);
        assert_eq!(kind(&mut st, &mut t, &linked), "dns-enrtree/query");
        let a = message(false, "tree.test", 1, &[]);
        assert_eq!(kind(&mut st, &mut t, &a), "dns/query");
    }

    #[test]
    fn hash_labels_and_status_fleets_are_trees() {
        let (mut st, mut t) = (DnsState::default(), LabelTable::default());
        let hash = message(false, "c7hrfpf3blgf3yr4dy5kx3smbe.unknown.test", TXT, &[]);
        assert_eq!(kind(&mut st, &mut t, &hash), "dns-enrtree/query");
        let fleet = message(false, "boot.prod.status.nodes.status.im", TXT, &[]);
        assert_eq!(kind(&mut st, &mut t, &fleet), "dns-enrtree/query");
        let enr = message(true, "q.unknown.test", TXT, &["enr:-abc"]);
        assert_eq!(kind(&mut st, &mut t, &enr), "dns-enrtree/enr");
    }

    #[test]
    fn dnsaddr_lookups_are_discovery() {
        let (mut st, mut t) = (DnsState::default(), LabelTable::default());
        let query = message(false, "_dnsaddr.bootstrap.libp2p.io", TXT, &[]);
        assert_eq!(kind(&mut st, &mut t, &query), "dnsaddr/query");
        let record =
            "dnsaddr=/ip4/127.0.0.1/tcp/60000/p2p/QmNnooDu7bfjPFoTZYxMNLWUQJyrVwtbZg5gBMjTezGAJN";
        let answer = message(true, "_dnsaddr.bootstrap.libp2p.io", TXT, &[record]);
        assert_eq!(kind(&mut st, &mut t, &answer), "dnsaddr/response");
        let empty = message(true, "_dnsaddr.bootstrap.test", TXT, &[]);
        assert_eq!(kind(&mut st, &mut t, &empty), "dnsaddr/response");
        let other = message(true, "bootstrap.test", TXT, &["v=spf1 -all"]);
        assert_eq!(kind(&mut st, &mut t, &other), "dns/response");
        let a = message(false, "_dnsaddr.bootstrap.test", 1, &[]);
        assert_eq!(kind(&mut st, &mut t, &a), "dns/query");
    }

    #[test]
    fn garbage_is_unparsed_never_a_panic() {
        let (mut st, mut t) = (DnsState::default(), LabelTable::default());
        let good = message(true, "a.test", TXT, &["enr:-x"]);
        for cut in 0..good.len() {
            let _ = st.label(
                &good[..cut],
                &Rules::default(),
                &mut t,
                &mut Discv5State::default(),
            );
        }
        let garbage = st.label(
            &[0xC0; 40],
            &Rules::default(),
            &mut t,
            &mut Discv5State::default(),
        );
        assert_eq!(
            garbage,
            Err(DecodeError::new(PROTOCOL, "unparsable message")),
            "reported as malformed"
        );
    }
}
