//! The discovery sample: an EIP-1459 tree of Waku nodes' ENRs (with a link to a second tree)
//! served by dnsmasq and walked with dig, over UDP and once over TCP, plus libp2p's dnsaddr
//! bootstrap lookup (TXT `_dnsaddr.<domain>`, answered with `dnsaddr=<multiaddr>` records), one
//! TXT lookup of another name and one ordinary A lookup;
//! then the discv5 nodes of the `discv5` crate behind those ENRs (four with Waku's `d5waku`
//! protocol id, two with the standard `discv5` that are in no tree), each in a process of its
//! own, run their lookups. Everything runs in a network namespace of its own and is captured on
//! its loopback.

use std::{
    collections::BTreeMap,
    fs,
    io::{BufRead, BufReader, Write as _},
    net::SocketAddr,
    path::Path,
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    thread,
    time::Duration,
};

use anyhow::{Context as _, anyhow, bail, ensure};
use base64::Engine as _;
use discv5::enr::{CombinedKey, k256::ecdsa::SigningKey};
use pcap::Precision;
use serde::Serialize;
use sha3::{Digest, Keccak256};

use crate::{
    capture::{self, CaptureSpec},
    discv5_node::NodeReport,
    netns::{self, Namespaces},
    truth::{CaptureTruth, Conn, Head},
};

/// The sample this module makes.
pub const SAMPLE: &str = "discovery-discv5-dns";
const NETNS: &str = "wp-disc";
const DNS_SERVER: &str = "127.0.0.53";
/// Domain of the main tree (not a default of wakuprof's: the test configures it) and of the
/// tree it links to (learned from the link record).
const TREE: &str = "nodes.waku.test";
const LINKED_TREE: &str = "linked.waku.test";
/// A name outside any tree, answered with an A record.
const PLAIN_NAME: &str = "other.waku.test";
/// The domain of libp2p's dnsaddr bootstrap lookup, and a TXT name that is not one.
const DNSADDR_DOMAIN: &str = "bootstrap.test";
const DNSADDR_NAME: &str = "_dnsaddr.bootstrap.test";
/// Listen port the dnsaddr records name for the bootstrap peer.
const DNSADDR_PORT: u16 = 60000;
/// Source port of the one DNS-over-TCP query, so the connection is known in the truth.
const TCP_QUERY_PORT: u16 = 45053;
const DISCV5_PORT: u16 = 9000;

/// The nodes: address and protocol id; the first of each id is the others' boot node.
const NODES: [(&str, &str); 6] = [
    ("127.0.0.2", "d5waku"),
    ("127.0.0.3", "d5waku"),
    ("127.0.0.4", "d5waku"),
    ("127.0.0.5", "d5waku"),
    ("127.0.0.6", "discv5"),
    ("127.0.0.7", "discv5"),
];

#[derive(Serialize)]
struct Truth {
    #[serde(flatten)]
    head: Head,
    connections: Vec<Conn>,
    udp_endpoints: Vec<UdpEndpoint>,
    discv5_nodes: Vec<NodeReport>,
    discv5_packets: u64,
    dns: Vec<DnsExchange>,
    enrtree_domains: Vec<&'static str>,
    /// The `dnsaddr=` records dnsmasq served for the dnsaddr domain.
    dnsaddr_records: Vec<String>,
}

/// UDP payload bytes an endpoint sent and received, as its implementation counted them.
#[derive(Serialize)]
struct UdpEndpoint {
    endpoint: SocketAddr,
    sent: u64,
    received: u64,
    counted_by: &'static str,
}

/// One dig run: the question, dig's own QUERY SIZE and MSG SIZE rcvd, and the tree record the
/// answer held.
#[derive(Serialize)]
struct DnsExchange {
    transport: &'static str,
    name: String,
    qtype: &'static str,
    query_bytes: u64,
    response_bytes: u64,
    record: Option<&'static str>,
}

/// A node process: its stdin (closing it ends the run) and stdout (ENR, `done`, report).
struct NodeProc {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl NodeProc {
    fn start(addr: &str, protocol: &str, boot: Option<&str>) -> anyhow::Result<(NodeProc, String)> {
        let exe = std::env::current_exe()?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", NETNS])
            .arg(exe)
            .args(["discv5-node", "--addr", &format!("{addr}:{DISCV5_PORT}")])
            .args(["--protocol", protocol]);
        if let Some(b) = boot {
            cmd.args(["--boot", b]);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("start a discv5 node")?;
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().context("node stdout")?);
        let mut node = NodeProc {
            child,
            stdin,
            stdout,
        };
        let enr = node.line()?;
        Ok((node, enr))
    }

    /// Tells the node to start its lookups.
    fn go(&mut self) -> anyhow::Result<()> {
        let stdin = self.stdin.as_mut().context("node stdin")?;
        stdin.write_all(b"go\n")?;
        Ok(stdin.flush()?)
    }

    fn line(&mut self) -> anyhow::Result<String> {
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        ensure!(!line.is_empty(), "a discv5 node ended early");
        Ok(line.trim().to_owned())
    }

    fn finish(mut self) -> anyhow::Result<NodeReport> {
        drop(self.stdin.take());
        let report = serde_json::from_str(&self.line()?).context("node report")?;
        let status = self.child.wait()?;
        ensure!(status.success(), "discv5 node exited with {status}");
        Ok(report)
    }
}

/// Makes the sample into `out_dir`.
pub fn make(out_dir: &Path) -> anyhow::Result<()> {
    let _ns = Namespaces::create(&[NETNS])?;
    let file = format!("{SAMPLE}.pcap");
    let filter = "udp or tcp";
    let running = capture::start(CaptureSpec::loopback(NETNS, filter, out_dir.join(&file)))?;

    let mut nodes = Vec::new();
    let mut waku_enrs = Vec::new();
    let mut boots: BTreeMap<&str, String> = BTreeMap::new();
    for (addr, protocol) in NODES {
        let boot = boots.get(protocol).cloned();
        let (node, enr) = NodeProc::start(addr, protocol, boot.as_deref())?;
        boots.entry(protocol).or_insert_with(|| enr.clone());
        if protocol == "d5waku" {
            waku_enrs.push(enr);
        }
        nodes.push(node);
    }

    let mut records = tree_records(&waku_enrs)?;
    let dnsaddr_records = dnsaddr_records();
    records.extend(
        dnsaddr_records
            .iter()
            .map(|r| (DNSADDR_NAME.to_owned(), r.clone())),
    );
    records.push((DNSADDR_DOMAIN.into(), "v=spf1 -all".into()));
    let conf_dir = tempfile_dir()?;
    let mut dnsmasq = start_dnsmasq(&records, &conf_dir)?;
    let walked = walk();
    dnsmasq.kill().ok();
    dnsmasq.wait().ok();
    fs::remove_dir_all(&conf_dir).ok();
    let (dns, tcp) = walked?;

    for node in &mut nodes {
        node.go()?;
    }
    for node in &mut nodes {
        let line = node.line()?;
        ensure!(line == "done", "a discv5 node said {line:?}");
    }
    let reports: Vec<NodeReport> = nodes
        .into_iter()
        .map(NodeProc::finish)
        .collect::<anyhow::Result<_>>()?;
    thread::sleep(Duration::from_millis(300));
    let stats = running.stop()?;
    ensure!(
        stats.dropped == 0,
        "libpcap dropped {} packets",
        stats.dropped
    );

    let server: SocketAddr = format!("{DNS_SERVER}:53").parse()?;
    let udp_dns = dns.iter().filter(|d| d.transport == "udp");
    let mut udp_endpoints = vec![UdpEndpoint {
        endpoint: server,
        sent: udp_dns.clone().map(|d| d.response_bytes).sum(),
        received: udp_dns.map(|d| d.query_bytes).sum(),
        counted_by: "dig (MSG SIZE rcvd / QUERY SIZE of each UDP query)",
    }];
    udp_endpoints.extend(reports.iter().map(|r| UdpEndpoint {
        endpoint: SocketAddr::V4(r.addr),
        sent: r.bytes_sent,
        received: r.bytes_recv,
        counted_by: "discv5 crate (Discv5::metrics bytes_sent / bytes_recv)",
    }));
    let truth = Truth {
        head: Head {
            sample: SAMPLE.into(),
            file: file.clone(),
            link_type: stats.linktype.get_name()?,
            made_by: "discv5 crate 0.11 (one process per node), dnsmasq 2.90, dig 9.18".into(),
            description: "an EIP-1459 tree (with a link) of the d5waku nodes' ENRs walked by dig \
                          over UDP and TCP, a libp2p dnsaddr lookup (TXT _dnsaddr.bootstrap.test, \
                          two dnsaddr= records), a TXT and an A lookup of other names; then \
                          discv5 lookups with ids d5waku (4 nodes) and discv5 (2 nodes)"
                .into(),
            capture: CaptureTruth::new("lo", Some(NETNS), filter, Precision::Micro, &stats),
        },
        connections: vec![tcp],
        udp_endpoints,
        discv5_packets: count_port(&out_dir.join(&file), DISCV5_PORT)?,
        discv5_nodes: reports,
        dns,
        enrtree_domains: vec![TREE, LINKED_TREE],
        dnsaddr_records,
    };
    let path = out_dir.join(format!("{SAMPLE}.truth.json"));
    fs::write(&path, serde_json::to_string_pretty(&truth)? + "\n")
        .with_context(|| format!("write {}", path.display()))
}

/// The bootstrap peer's `dnsaddr=` records, as a libp2p bootstrap domain publishes them: TCP and
/// QUIC multiaddrs ending in the peer id of a fresh secp256k1 key.
fn dnsaddr_records() -> Vec<String> {
    let peer = libp2p::identity::Keypair::generate_secp256k1()
        .public()
        .to_peer_id();
    [
        format!("dnsaddr=/ip4/127.0.0.1/tcp/{DNSADDR_PORT}/p2p/{peer}"),
        format!("dnsaddr=/ip4/127.0.0.1/udp/{DNSADDR_PORT}/quic-v1/p2p/{peer}"),
    ]
    .into()
}

/// A fresh directory for dnsmasq's configuration.
fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("wakuprof-dnsmasq-{}", std::process::id()));
    fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// base32 (RFC 4648, no padding) as EIP-1459 names records.
fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    let (mut acc, mut bits) = (0u32, 0);
    for &b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(char::from(ALPHABET[((acc >> bits) & 31) as usize]));
        }
    }
    if bits > 0 {
        out.push(char::from(ALPHABET[((acc << (5 - bits)) & 31) as usize]));
    }
    out
}

/// The subdomain label of a record: base32 of the first 16 bytes of its keccak256.
fn record_hash(text: &str) -> String {
    base32(&Keccak256::digest(text.as_bytes())[..16])
}

/// A signed root record for a tree whose ENR subtree starts at `e` and link subtree at `l`.
fn root(key: &SigningKey, e: &str, l: &str) -> anyhow::Result<String> {
    let unsigned = format!("enrtree-root:v1 e={e} l={l} seq=1");
    let (sig, recovery) = key
        .sign_prehash_recoverable(&Keccak256::digest(unsigned.as_bytes()))
        .map_err(|e| anyhow!("sign the tree root: {e}"))?;
    let mut raw = sig.to_bytes().to_vec();
    raw.push(recovery.to_byte());
    let sig = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
    Ok(format!("{unsigned} sig={sig}"))
}

fn signing_key() -> anyhow::Result<SigningKey> {
    match CombinedKey::generate_secp256k1() {
        CombinedKey::Secp256k1(k) => Ok(k),
        _ => bail!("not a secp256k1 key"),
    }
}

/// (name, TXT text) of both trees: the main one lists `enrs` (`enr:…` text) and links to the
/// second, which lists the first ENR again.
fn tree_records(enrs: &[String]) -> anyhow::Result<Vec<(String, String)>> {
    let first = enrs.first().context("no Waku node ENR")?;
    let (main_key, linked_key) = (signing_key()?, signing_key()?);
    let mut records = Vec::new();
    let mut add = |domain: &str, text: String| {
        let hash = record_hash(&text);
        records.push((format!("{hash}.{domain}"), text));
        hash
    };
    let leaves: Vec<String> = enrs.iter().map(|e| add(TREE, e.clone())).collect();
    let branch = add(TREE, format!("enrtree-branch:{}", leaves.join(",")));
    let linked_pub = base32(&linked_key.verifying_key().to_sec1_bytes());
    let link = add(TREE, format!("enrtree://{linked_pub}@{LINKED_TREE}"));
    let links = add(TREE, format!("enrtree-branch:{link}"));
    let linked_leaf = add(LINKED_TREE, first.clone());
    let linked_links = add(LINKED_TREE, "enrtree-branch:".to_string());
    records.push((TREE.into(), root(&main_key, &branch, &links)?));
    records.push((
        LINKED_TREE.into(),
        root(&linked_key, &linked_leaf, &linked_links)?,
    ));
    Ok(records)
}

/// Starts dnsmasq serving `records` (from a configuration file: only there do quotes keep the
/// commas of a branch record inside one string).
fn start_dnsmasq(records: &[(String, String)], dir: &Path) -> anyhow::Result<Child> {
    let mut conf = format!("address=/{PLAIN_NAME}/127.0.0.9\n");
    for (name, text) in records {
        conf.push_str(&format!("txt-record={name},\"{text}\"\n"));
    }
    let conf_path = dir.join("dnsmasq.conf");
    fs::write(&conf_path, conf)?;
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", NETNS, "dnsmasq", "--keep-in-foreground"])
        .arg(format!("--conf-file={}", conf_path.display()))
        .args(["--no-resolv", "--no-hosts"])
        .arg(format!("--listen-address={DNS_SERVER}"))
        .args(["--bind-interfaces", "--port=53", "--user=root"]);
    let child = cmd
        .stdout(Stdio::null())
        .spawn()
        .context("start dnsmasq (Debian package dnsmasq-base)")?;
    netns::wait_for_listener(NETNS, "udp", 53)?;
    Ok(child)
}

/// What dig printed of one query.
struct Dig {
    query_bytes: u64,
    response_bytes: u64,
    txt: Vec<String>,
}

fn dig(name: &str, qtype: &str, tcp: bool) -> anyhow::Result<Dig> {
    let mut cmd = Command::new("ip");
    cmd.args([
        "netns",
        "exec",
        NETNS,
        "dig",
        "+qr",
        "+nocookie",
        "+norecurse",
    ])
    .arg(format!("@{DNS_SERVER}"));
    if tcp {
        cmd.args(["+tcp", "-b"])
            .arg(format!("127.0.0.1#{TCP_QUERY_PORT}"));
    }
    let out = cmd
        .args([qtype, name])
        .output()
        .context("run dig (Debian package bind9-dnsutils)")?;
    ensure!(out.status.success(), "dig {qtype} {name} failed");
    let text = String::from_utf8(out.stdout)?;
    let size = |key: &str| -> anyhow::Result<u64> {
        let line = text
            .lines()
            .find(|l| l.starts_with(key))
            .with_context(|| format!("dig printed no {key:?}: {text}"))?;
        Ok(line[key.len()..].trim().parse()?)
    };
    let txt = text
        .lines()
        .filter(|l| !l.starts_with(';'))
        .map(|l| l.replace('\t', " "))
        .filter_map(|l| {
            l.split_once(" IN TXT ")
                .map(|(_, t)| t.replace("\" \"", ""))
        })
        .map(|t| t.trim().trim_matches('"').to_owned())
        .collect();
    Ok(Dig {
        query_bytes: size(";; QUERY SIZE:")?,
        response_bytes: size(";; MSG SIZE  rcvd:")?,
        txt,
    })
}

/// The tree record kind of a TXT text.
fn record_kind(text: &str) -> Option<&'static str> {
    [
        ("enrtree-root:", "root"),
        ("enrtree-branch:", "branch"),
        ("enrtree://", "link"),
        ("enr:", "enr"),
        ("dnsaddr=", "dnsaddr"),
    ]
    .iter()
    .find(|(prefix, _)| text.starts_with(prefix))
    .map(|(_, kind)| *kind)
}

/// Walks both trees as an EIP-1459 client does (root, then every branch down to the leaves,
/// following links), then the root again over TCP, then the dnsaddr lookup, a TXT lookup of
/// another name and an A lookup.
fn walk() -> anyhow::Result<(Vec<DnsExchange>, Conn)> {
    let mut done = Vec::new();
    let mut todo = vec![TREE.to_owned()];
    while let Some(name) = todo.pop() {
        let d = dig(&name, "TXT", false)?;
        let text = d.txt.first().cloned().unwrap_or_default();
        let record = record_kind(&text);
        let domain = if name == TREE || name == LINKED_TREE {
            name.clone()
        } else {
            name.split_once('.')
                .map(|(_, p)| p.to_owned())
                .unwrap_or_default()
        };
        match record {
            Some("root") => {
                for field in text.split(' ') {
                    let follow = field
                        .strip_prefix("e=")
                        .or_else(|| field.strip_prefix("l=").filter(|_| domain == TREE));
                    if let Some(h) = follow {
                        todo.push(format!("{h}.{domain}"));
                    }
                }
            }
            Some("branch") => {
                let children = text.trim_start_matches("enrtree-branch:");
                todo.extend(
                    children
                        .split(',')
                        .filter(|c| !c.is_empty())
                        .map(|c| format!("{c}.{domain}")),
                );
            }
            Some("link") => todo.push(LINKED_TREE.to_owned()),
            _ => {}
        }
        done.push(DnsExchange {
            transport: "udp",
            name,
            qtype: "TXT",
            query_bytes: d.query_bytes,
            response_bytes: d.response_bytes,
            record,
        });
    }
    let over_tcp = dig(TREE, "TXT", true)?;
    let tcp = Conn {
        dialer: format!("127.0.0.1:{TCP_QUERY_PORT}").parse()?,
        listener: format!("{DNS_SERVER}:53").parse()?,
        bytes_dialer_to_listener: over_tcp.query_bytes + 2,
        bytes_listener_to_dialer: over_tcp.response_bytes + 2,
    };
    done.push(DnsExchange {
        transport: "tcp",
        name: TREE.into(),
        qtype: "TXT",
        query_bytes: over_tcp.query_bytes,
        response_bytes: over_tcp.response_bytes,
        record: over_tcp.txt.first().and_then(|t| record_kind(t)),
    });
    for (name, qtype) in [
        (DNSADDR_NAME, "TXT"),
        (DNSADDR_DOMAIN, "TXT"),
        (PLAIN_NAME, "A"),
    ] {
        let d = dig(name, qtype, false)?;
        let record = d.txt.first().and_then(|t| record_kind(t));
        ensure!(
            (name == DNSADDR_NAME) == (record == Some("dnsaddr") && d.txt.len() == 2),
            "dig {qtype} {name} answered {:?}",
            d.txt
        );
        done.push(DnsExchange {
            transport: "udp",
            name: name.into(),
            qtype,
            query_bytes: d.query_bytes,
            response_bytes: d.response_bytes,
            record,
        });
    }
    Ok((done, tcp))
}

/// UDP packets to or from `port` in an Ethernet capture of IPv4 (as loopback captures are).
fn count_port(path: &Path, port: u16) -> anyhow::Result<u64> {
    let mut cap = pcap::Capture::from_file(path)?;
    let mut n = 0;
    while let Ok(p) = cap.next_packet() {
        let ip = p.data.get(14..).unwrap_or_default();
        let Some(&vihl) = ip.first() else { continue };
        let ihl = usize::from(vihl & 15) * 4;
        let ports = ip.get(ihl..ihl + 4).unwrap_or_default();
        if ip.get(9) == Some(&17) && ports.len() == 4 {
            let (s, d) = (
                u16::from_be_bytes([ports[0], ports[1]]),
                u16::from_be_bytes([ports[2], ports[3]]),
            );
            n += u64::from(s == port || d == port);
        }
    }
    Ok(n)
}
