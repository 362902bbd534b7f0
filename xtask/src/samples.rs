//! `cargo xtask samples`: makes the captures in samples/ with the `traffic` binary (real
//! rust-libp2p nodes, and js-libp2p nodes under Node for samples/js/, captured live by libpcap),
//! checks each capture against the ground truth the nodes reported, using tshark, and writes
//! samples/README.md.

use std::{
    collections::BTreeMap,
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, bail, ensure};
use clap::Args;
use serde::Deserialize;

use crate::setup::{self, Package};

/// Options of `cargo xtask samples`.
#[derive(Args)]
pub struct SamplesArgs {
    /// Samples to re-make (all when none is given); `cargo run -p traffic -- list` names them.
    names: Vec<String>,
}

/// What making and checking the samples needs besides the build: `ip` for the network
/// namespaces, editcap and capinfos, tshark as the independent reader of the captures, and the
/// real implementations the discovery, services, BitTorrent and JS samples run (Node and npm,
/// which installs the pinned js-libp2p packages of xtask/js with `npm ci`; openssl makes the wss
/// sample's throwaway certificate).
const PACKAGES: &[Package] = &[
    Package {
        name: "nodejs",
        marker: "/usr/bin/node",
    },
    Package {
        name: "npm",
        marker: "/usr/bin/npm",
    },
    Package {
        name: "openssl",
        marker: "/usr/bin/openssl",
    },
    Package {
        name: "iproute2",
        marker: "/sbin/ip",
    },
    Package {
        name: "wireshark-common",
        marker: "/usr/bin/editcap",
    },
    Package {
        name: "tshark",
        marker: "/usr/bin/tshark",
    },
    Package {
        name: "dnsmasq-base",
        marker: "/usr/sbin/dnsmasq",
    },
    Package {
        name: "bind9-dnsutils",
        marker: "/usr/bin/dig",
    },
    Package {
        name: "curl",
        marker: "/usr/bin/curl",
    },
    Package {
        name: "aria2",
        marker: "/usr/bin/aria2c",
    },
    Package {
        name: "mktorrent",
        marker: "/usr/bin/mktorrent",
    },
    Package {
        name: "opentracker",
        marker: "/usr/bin/opentracker",
    },
    Package {
        name: "transmission-daemon",
        marker: "/usr/bin/transmission-daemon",
    },
];

/// The parts of `<name>.truth.json` the checks and the README use.
#[derive(Deserialize)]
struct Truth {
    sample: String,
    file: String,
    link_type: String,
    description: String,
    capture: CaptureTruth,
    /// Per-connection bytes the senders reported; samples whose clients report none (the
    /// BitTorrent ones) leave it out, and only the capture-wide checks apply.
    #[serde(default)]
    connections: Vec<Connection>,
    /// UDP endpoints with the payload bytes their implementation sent and received.
    #[serde(default)]
    udp_endpoints: Vec<UdpEndpoint>,
}

#[derive(Deserialize)]
struct UdpEndpoint {
    endpoint: String,
    sent: u64,
    received: u64,
}

#[derive(Deserialize)]
struct CaptureTruth {
    packets: u64,
}

#[derive(Deserialize)]
struct Connection {
    dialer: String,
    listener: String,
    bytes_dialer_to_listener: u64,
    bytes_listener_to_dialer: u64,
}

/// What capinfos says about a capture file.
struct FileInfo {
    format: String,
    encapsulation: String,
    packets: u64,
}

pub fn run(args: &SamplesArgs) -> anyhow::Result<()> {
    if !setup::is_root() {
        bail!(
            "`cargo xtask samples` needs root: it captures packets and creates network namespaces"
        );
    }
    setup::ensure_packages(setup::BUILD)?;
    setup::ensure_packages(PACKAGES)?;
    let root = crate::workspace_root();
    let samples = root.join("samples");
    fs::create_dir_all(&samples)?;
    let staging = tempfile::Builder::new()
        .prefix(".staging-")
        .tempdir_in(&samples)
        .context("create a staging directory in samples/")?;
    setup::run(
        setup::cargo()
            .current_dir(&root)
            .args(["run", "--release", "--quiet", "-p", "traffic", "--", "make"])
            .arg("--out-dir")
            .arg(staging.path())
            .args(&args.names),
    )?;

    let made = truths_in(staging.path())?;
    ensure!(!made.is_empty(), "traffic made no sample");
    for truth in &made {
        check(staging.path(), truth).with_context(|| format!("sample {}", truth.sample))?;
    }
    let js = samples.join(JS_DIR);
    fs::create_dir_all(&js)?;
    for truth in &made {
        let home = if truth.sample.starts_with("js-") {
            &js
        } else {
            &samples
        };
        for name in [truth.file.clone(), format!("{}.truth.json", truth.sample)] {
            fs::rename(staging.path().join(&name), home.join(&name))
                .with_context(|| format!("move {name} into {}", home.display()))?;
        }
    }
    write_readme(&samples)
}

/// The folder of samples/ holding the captures of the JavaScript stacks (`js-*`).
const JS_DIR: &str = "js";

/// Reads every `*.truth.json` in `dir`, sorted by file name.
fn truths_in(dir: &Path) -> anyhow::Result<Vec<Truth>> {
    let mut paths: Vec<PathBuf> = fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    paths.retain(|p| p.to_string_lossy().ends_with(".truth.json"));
    paths.sort();
    paths
        .iter()
        .map(|p| {
            let text = fs::read_to_string(p).with_context(|| format!("read {}", p.display()))?;
            serde_json::from_str(&text).with_context(|| format!("parse {}", p.display()))
        })
        .collect()
}

/// capinfos' name for a libpcap link-layer type name.
fn capinfos_encapsulation(link_type: &str) -> anyhow::Result<&'static str> {
    Ok(match link_type {
        "EN10MB" => "ether",
        "LINUX_SLL" => "linux-sll",
        "LINUX_SLL2" => "linux-sll2",
        "RAW" => "rawip",
        "NULL" => "null",
        other => bail!("no capinfos name known for link type {other}"),
    })
}

fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let name = format!("{cmd:?}");
    let out = cmd.output().with_context(|| format!("cannot run {name}"))?;
    ensure!(
        out.status.success(),
        "{name} failed with {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8(out.stdout)?)
}

fn file_info(path: &Path) -> anyhow::Result<FileInfo> {
    let text = output(
        Command::new("capinfos")
            .args(["-T", "-r", "-t", "-E", "-c"])
            .arg(path),
    )?;
    let fields: Vec<&str> = text.trim_end().split('\t').collect();
    let [_, format, encapsulation, packets] = fields[..] else {
        bail!("unexpected capinfos output {text:?}");
    };
    Ok(FileInfo {
        format: format.to_owned(),
        encapsulation: encapsulation.to_owned(),
        packets: packets.parse()?,
    })
}

/// Checks a capture against its truth: file format, link type and packet count (capinfos), and
/// for every connection and direction, the TCP payload bytes tshark sees against the bytes the
/// sender wrote into its socket; for every UDP endpoint of the truth, the payload it sent and
/// received. A retransmission, a cut frame or a flow the truth does not know fails the check.
fn check(dir: &Path, truth: &Truth) -> anyhow::Result<()> {
    let path = dir.join(&truth.file);
    let info = file_info(&path)?;
    let format = if truth.file.ends_with(".pcapng") {
        "pcapng"
    } else {
        "pcap"
    };
    ensure!(
        info.format == format,
        "file format is {}, not {format}",
        info.format
    );
    let encapsulation = capinfos_encapsulation(&truth.link_type)?;
    ensure!(
        info.encapsulation == encapsulation,
        "link type is {}, the truth says {}",
        info.encapsulation,
        truth.link_type
    );
    ensure!(
        info.packets == truth.capture.packets,
        "{} packets in the file, {} in the truth",
        info.packets,
        truth.capture.packets
    );

    let fields = [
        "ip.src",
        "tcp.srcport",
        "ip.dst",
        "tcp.dstport",
        "tcp.len",
        "tcp.analysis.retransmission",
        "frame.cap_len",
        "frame.len",
        "udp.srcport",
        "udp.dstport",
        "udp.length",
    ];
    let mut tshark = Command::new("tshark");
    tshark.arg("-r").arg(&path).args(["-T", "fields"]);
    for field in fields {
        tshark.args(["-e", field]);
    }
    let mut payload: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut udp: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for (n, line) in output(&mut tshark)?.lines().enumerate() {
        let cols: Vec<&str> = line.split('\t').collect();
        let [
            src,
            sport,
            dst,
            dport,
            len,
            retransmission,
            cap_len,
            frame_len,
            usport,
            udport,
            ulen,
        ] = cols[..]
        else {
            bail!("frame {}: unexpected tshark output {line:?}", n + 1);
        };
        ensure!(
            retransmission.is_empty(),
            "frame {} is a retransmission; make the sample again",
            n + 1
        );
        ensure!(
            cap_len == frame_len,
            "frame {} was cut to {cap_len} of {frame_len} bytes",
            n + 1
        );
        if !ulen.is_empty() && !truth.udp_endpoints.is_empty() {
            let bytes = ulen
                .parse::<u64>()
                .with_context(|| format!("frame {}: udp.length", n + 1))?
                .saturating_sub(8);
            let (from, to) = (format!("{src}:{usport}"), format!("{dst}:{udport}"));
            ensure!(
                truth
                    .udp_endpoints
                    .iter()
                    .any(|e| e.endpoint == from || e.endpoint == to),
                "frame {}: UDP {from} -> {to} touches no endpoint of the truth",
                n + 1
            );
            udp.entry(from).or_default().0 += bytes;
            udp.entry(to).or_default().1 += bytes;
            continue;
        }
        if len.is_empty() {
            continue;
        }
        *payload
            .entry((format!("{src}:{sport}"), format!("{dst}:{dport}")))
            .or_default() += len
            .parse::<u64>()
            .with_context(|| format!("frame {}: tcp.len", n + 1))?;
    }
    for conn in &truth.connections {
        for (from, to, wrote) in [
            (&conn.dialer, &conn.listener, conn.bytes_dialer_to_listener),
            (&conn.listener, &conn.dialer, conn.bytes_listener_to_dialer),
        ] {
            let seen = payload.remove(&(from.clone(), to.clone())).unwrap_or(0);
            ensure!(
                seen == wrote,
                "{from} -> {to}: tshark sees {seen} payload bytes, the sender wrote {wrote}"
            );
        }
    }
    if let Some(((from, to), _)) = payload
        .first_key_value()
        .filter(|_| !truth.connections.is_empty())
    {
        bail!("flow {from} -> {to} is in the capture but not in the truth");
    }
    for e in &truth.udp_endpoints {
        let seen = udp.get(&e.endpoint).copied().unwrap_or_default();
        ensure!(
            seen == (e.sent, e.received),
            "{}: tshark sees (sent, received) UDP payload {seen:?}, the truth says ({}, {})",
            e.endpoint,
            e.sent,
            e.received
        );
    }
    let flows = match truth.connections.len() {
        0 => "no retransmission or cut frame (no per-connection truth)".to_owned(),
        n => format!("{n} connections, payload bytes match per direction"),
    };
    eprintln!(
        "xtask: {} checked: {} packets, {flows}",
        truth.file, info.packets
    );
    Ok(())
}

const README_HEAD: &str = "\
# Sample captures

Real traffic from real implementations, each capture with the ground truth those implementations
reported (`<name>.truth.json`). Made by `cargo xtask samples` (as root): the `traffic` binary
(`xtask/traffic`) runs rust-libp2p 0.57 nodes set up as Waku relays (gossipsub on
`/vac/waku/relay/2.0.0` as version 1.1, anonymous unsigned messages as with StrictNoSign, message
id = sha256 of the WakuMessage bytes, Waku's mesh parameters, identify and ping) that publish real
WakuMessage protobufs on `/waku/2/rs/16/32` and `/waku/2/rs/16/64`, and captures them live with
libpcap. The `relay-*` samples vary this: mplex instead of yamux, and gossipsub's own
`/meshsub/1.3.0` (v1.2's IDONTWANT; rust-libp2p 0.57 cannot be held to 1.2.0) with a mesh of 2, no flood publishing, a node that joins after the messages
(served by IHAVE/IWANT) and a node that leaves a topic (PRUNE), so that every control kind shows. xtask then checks every capture with tshark: for each connection and direction, the TCP
payload bytes equal what the sending node wrote into its socket, with no retransmission and no cut
frame. Ports, peer ids, message ids and timestamps change from run to run; message sizes and counts
do not. Byte counts per connection do vary: which relay forwards a message first (and so which
duplicates are sent) depends on timing, pings and heartbeats follow the clock, and the secp256k1
signatures in the handshakes vary in length. Each truth file holds the counts of its own run.

The `bt-*` samples are BitTorrent clients from Debian (aria2 1.36, transmission-daemon 3.00) and
opentracker as UDP (and, once, HTTP) tracker, transferring one 400 KiB file of fixed pseudo-random bytes in network
namespaces of their own, with the Mainline DHT between the clients; their truth is what the
clients and the tracker report (see below), and tshark checks them for retransmissions and cut
frames. The `bt-mse-*` samples pair aria2 with transmission (uTP off, so peers use TCP) in each
of their MSE/PE modes: aria2 with its defaults, `--bt-require-crypto` and
`--bt-min-crypto-level=plain|arc4`, transmission with encryption tolerated, preferred and
required; one seeds and the other leeches, and either may open a connection.

`discovery-discv5-dns` starts six nodes of the `discv5` crate 0.11, each in its own process (four
with Waku's protocol id `d5waku`, two with the standard `discv5`) on 127.0.0.2-7:9000; dnsmasq
serves an EIP-1459 tree of the Waku nodes' ENRs (root, branches, leaves and a link to a second
tree) that dig walks as a client would, once more over TCP, plus libp2p's dnsaddr bootstrap
lookup (TXT `_dnsaddr.bootstrap.test`, answered with two `dnsaddr=` multiaddrs of a peer), a TXT
lookup of another name and one A lookup; then the nodes run their lookups.
`services-rpc-tls` runs a jsonrpsee 0.26 server with HTTP and WebSocket clients making a known set
of calls and batches, rustls clients asking for four server names (an RPC provider, a DoH
resolver, the telemetry host, an unlisted host), and curl fetching from Python's http.server on
the node's REST (8645) and metrics (8008) ports. tshark checks their TCP payload per connection
and, for discovery, the UDP payload each endpoint sent and received.

| file | link type | packets | bytes | how it was made |
|---|---|---|---|---|
";

const README_JS: &str = "
## The JavaScript stacks (samples/js/)

The `js-*` captures come from js-libp2p nodes run by Node in a network namespace of their own
(`xtask/js/relay.mjs`; the npm packages are pinned by `xtask/js/package-lock.json` and installed
with `npm ci`). Every node is set up as js-waku sets up its relay: gossipsub (@chainsafe/libp2p-gossipsub)
speaking only `/vac/waku/relay/2.0.0`, StrictNoSign, message id = sha256 of the WakuMessage bytes
(as nwaku), no floodsub fallback, identify and ping; the WakuMessages are encoded by @waku/proto.
`js-waku-ws-noise-mplex` runs the versions of libp2p, Noise, mplex, WebSocket, identify and ping that
@waku/sdk 0.0.36 pins, over `/ws`; `js-waku-wss-noise-mplex` the same over wss (`/tls/ws`: Node's
TLS 1.3 with a throwaway self-signed certificate openssl makes for the run, no ALPN; 4 nodes, a
ring of three and a late joiner, 6 messages, one over a TLS record), and
`js-waku-wss-noise-mplex-measure` over wss again with 5 nodes (a line of four and a late joiner
dialing both ends); the `js-libp2p-*` ones run
TCP with Noise or TLS 1.3 (the muxer chosen by ALPN, without multistream-select) and yamux. The
others have 5 nodes; in each, one node joins after the messages and gets them through IHAVE/IWANT. The truth comes from inside the nodes: every
socket's own byte counters (Node's `net` diagnostics channels), the plaintext each connection's
Noise or TLS layer took from the muxer and the plaintext the other end's layer delivered, and
every muxed stream's bytes where the muxer sends and delivers them, decoded into relay parts as
for the rust-libp2p samples. The generator checks that what one node wrote on each stream is what
the other node's muxer delivered, byte for byte, and xtask checks each connection's TCP payload
with tshark.

Fit and measure: a model of the encrypted framing is fitted (or tuned) on the samples marked
`[fit]` and measured on those marked `[measure]`, which are never used to fit.
`js-libp2p-noise-yamux-measure` differs from the fit samples in size mix (messages at the 16 KiB
and 64 KiB boundaries, and tiny ones), topology (a ring of four and a late joiner dialing two,
mesh D = 1), pace (100 ms between messages, heartbeats every second, 4 s of idle gossip) and no
flood publishing; `js-waku-wss-noise-mplex-measure` from its wss fit sample in size mix (40 B to
66 KiB: just under and over a 16 KiB TLS record, past WebSocket's 16-bit length, meta and RLN
proofs), topology (5 nodes: a line of four and a late joiner dialing both ends, mesh D = 1), pace
(150 ms between messages, heartbeats every second, 3 s of idle gossip) and no flood publishing.

Which samples tune the inference of encrypted connections (README, \"Encrypted connections\") and
which only measure it: it was built on the rust-libp2p Noise samples above (`libp2p-noise-*`,
`relay-noise-*`) and tuned on `js-libp2p-noise-yamux`, `js-libp2p-tls-yamux`,
`js-waku-ws-noise-mplex` and `js-waku-wss-noise-mplex` (`[fit]`; the wss layer and the split of
coalesced writes were written looking at the last); `js-libp2p-noise-yamux-measure` and
`js-waku-wss-noise-mplex-measure` (`[measure]`) only measure it: no rule or constant was chosen
to fit them (the rules come from the stacks' sources and the fit samples), and their errors are
reported as measured, also where they are larger.

| file | link type | packets | bytes | how it was made |
|---|---|---|---|---|
";

const README_TAIL: &str = "
## What a truth file holds

- `connections[]`: per TCP connection, the `dialer` and `listener` socket addresses (a rust-libp2p
  dialer binds its listen port), the `security` and `muxer` ids multistream-select agreed on, and
  `bytes_dialer_to_listener` / `bytes_listener_to_dialer`: the bytes the sender wrote into its TCP
  socket, i.e. the TCP payload per direction. `bytes_read_by_*` is what the receiver read; the
  last frames of a close may go unread.
- `topics[]`: per node and pubsub topic, messages `published` and `received` (gossipsub's own
  events, duplicates not counted) and the sum of their WakuMessage sizes.
- `messages[]`: each published message: publisher, pubsub and content topic, payload and
  WakuMessage size, gossipsub message id.
- `capture`: device, namespace, BPF filter, timestamp precision, the packets written, libpcap's
  statistics (`received`, `dropped`, `if_dropped`; on `lo` and `any` the kernel counts each
  loopback packet twice, as sent and as received, and libpcap keeps one) and `converted` when the
  file is not libpcap's own output.
- JS samples' `connections[]` also hold the `transport` (`tcp` or `ws`) and
  `plaintext_dialer_to_listener` / `plaintext_listener_to_dialer`: the bytes each side's Noise or
  TLS layer took from its muxer to encrypt, and `plaintext_read_by_*`: what the layer decrypted
  and handed to the muxer (the last muxer frames of a close may go unread). On the wire, the
  security layer adds its handshake and framing to the plaintext (and `/ws` its HTTP upgrade and
  WebSocket frame headers).
- `relay_parts[]`: per sending and receiving socket, relay stream protocol, kind and pubsub
  topic, the `entries` and payload `bytes` the sending node wrote, split as design.md rule 4 says.
  Every node's muxer is tapped: the bytes it wrote on each substream, above security and muxer
  framing, are decoded (multistream-select, then each length-prefixed RPC with prost) into
  `message`, `subscribe`, `ihave`, `iwant`, `graft`, `prune`, `idontwant` entries (tag + length +
  body) and `framing` (RPC length prefixes, `RPC.control` tag + length, fields that are no entry);
  IWANT and IDONTWANT ids go to the topic of the message they name. The parts of every RPC add up
  to its size, and the parts of every stream to the bytes written on it.
- `deliveries[]`: per receiving node and message, the `RPC.publish` entries that carried it to
  the node (so duplicates are `publish_entries - 1`).
- `nodes[]`, `relay`: names, peer ids, listen addresses and the gossipsub settings.
- BitTorrent samples: `torrent` (info-hash, file size, piece length and count as aria2 `-S`
  reads the .torrent, 16 KiB blocks, SHA-256 of the file and of the leecher's download),
  `clients[]` (role, address, port, exit status), `tracker_stats` (UDP connect, announce and
  scrape requests opentracker counted, read from its `/stats` after the capture); `tracker_http_stats` (HTTP announce and scrape requests, its `<tcp>` counters); for aria2, `peer_wire_sent` (peer-wire
  messages by kind), `dht_sent` (KRPC queries and responses by method) and `tracker_udp` (UDP
  tracker requests sent and replies received by action), counted from both clients' debug logs;
  for transmission, `transmission_stats`: each daemon's own `stats.json` (downloaded and
  uploaded payload bytes). With both clients, `peer_wire_sent_to` (aria2's messages by the
  address they went to) and `transmission_peers[]`: per peer transmission's deep log
  (`TR_DEBUG_FD`) names, whether transmission opened the connection, the MSE `crypto_provide`,
  `crypto_select` (1 plaintext, 2 RC4) and `ia_len` it logged, and the bytes it `wrote`.
- Discovery: `udp_endpoints[]` (per UDP endpoint, the payload bytes `sent` and `received` as its
  implementation counted them: the discv5 crate's `Discv5::metrics()` per node process, dig's
  QUERY SIZE and MSG SIZE for the DNS server), `discv5_nodes[]` (address, protocol id, node id,
  ENR, bytes, `sessions_established`: the crate's `SessionEstablished` events, one at each end of
  a session), `discv5_packets` (UDP packets on port 9000 in the capture), `dns[]` (every dig run:
  transport, name, type, query and response sizes, the tree or `dnsaddr` record the answer
  held), `enrtree_domains` and `dnsaddr_records` (what dnsmasq served for the dnsaddr domain).
- Services: `connections[]` with the `service` each one is for, counted by the server's socket
  (bytes read and written) or by curl; `calls_made[]` (per transport and method, calls the
  clients made, batches included) and `calls_served` (per method, calls the server's handlers ran).
";

/// Writes samples/README.md: one line per sample in samples/ and in samples/js/, from its truth
/// file.
fn write_readme(samples: &Path) -> anyhow::Result<()> {
    let mut text = README_HEAD.to_owned();
    table(&mut text, samples)?;
    text.push_str(README_JS);
    table(&mut text, &samples.join(JS_DIR))?;
    text.push_str(README_TAIL);
    fs::write(samples.join("README.md"), text).context("write samples/README.md")
}

/// Appends one table row per sample in `dir`.
fn table(text: &mut String, dir: &Path) -> anyhow::Result<()> {
    for truth in truths_in(dir)? {
        let path = dir.join(&truth.file);
        let info = file_info(&path)?;
        let bytes = fs::metadata(&path)?.len();
        writeln!(
            text,
            "| `{}` | {} | {} | {bytes} | {} |",
            truth.file, truth.link_type, info.packets, truth.description
        )?;
        eprintln!(
            "xtask: {:<32} {:<11} {:>5} packets {bytes:>8} bytes",
            truth.file, truth.link_type, info.packets
        );
    }
    Ok(())
}
