//! BitTorrent samples: real clients from Debian (aria2 as seeder and leecher) and opentracker on
//! the loopback of a network namespace of their own, transferring a known file, with the UDP
//! tracker, the Mainline DHT between the two clients, and plaintext or MSE-encrypted peer
//! connections, or transmission over uTP. The truth is what the implementations report: the
//! torrent's metadata (aria2's `-S`), the downloaded file compared with the original,
//! opentracker's counters, aria2's log of every peer-wire, DHT and UDP tracker message sent or
//! received, and transmission's own byte counters.

use std::{
    collections::BTreeMap,
    fs,
    io::{Read as _, Write as _},
    net::TcpStream,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use pcap::Precision;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::{
    capture::{self, CaptureSpec},
    netns::{self, Namespaces},
    scenario::hex,
    truth::{CaptureTruth, Head},
};

/// One BitTorrent sample.
pub struct Sample {
    /// Base name of the files in samples/.
    pub name: &'static str,
    /// The clients that seed and leech.
    pub clients: Clients,
    /// Whether the torrent names opentracker's HTTP announce URL rather than its UDP one.
    pub http_tracker: bool,
}

/// Which BitTorrent implementation runs both ends.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Clients {
    /// aria2 on the loopback of one namespace; `encrypted` requires MSE/PE with RC4.
    Aria2 { encrypted: bool },
    /// transmission-daemon in two namespaces joined by a veth pair (transmission never
    /// connects to loopback peers), peers over uTP; captured on `any` in the seeder's namespace,
    /// where the tracker runs.
    Transmission,
    /// aria2 and transmission-daemon on the veth pair, peers over TCP (transmission's uTP off),
    /// each in an MSE/PE mode of its own.
    Mixed(Mixed),
}

/// Who seeds and how each client of a mixed sample treats MSE/PE.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Mixed {
    /// Whether aria2 seeds (and transmission leeches) or the other way round.
    pub aria2_seeds: bool,
    /// aria2's options on MSE/PE (none: its default, plaintext allowed).
    pub aria2_crypto: &'static [&'static str],
    /// transmission's `encryption`: 0 tolerated (prefers plaintext), 1 preferred, 2 required.
    pub transmission_encryption: u8,
}

impl Mixed {
    /// transmission's name of its encryption mode.
    fn transmission_mode(self) -> &'static str {
        match self.transmission_encryption {
            0 => "tolerated",
            1 => "preferred",
            _ => "required",
        }
    }

    /// aria2's MSE/PE options as its command line reads them.
    fn aria2_mode(self) -> String {
        if self.aria2_crypto.is_empty() {
            "default options".to_owned()
        } else {
            self.aria2_crypto.join(" ")
        }
    }
}

/// The BitTorrent samples.
pub static SAMPLES: &[Sample] = &[
    Sample {
        name: "bt-aria2-plain",
        clients: Clients::Aria2 { encrypted: false },
        http_tracker: false,
    },
    Sample {
        name: "bt-aria2-http-tracker",
        clients: Clients::Aria2 { encrypted: false },
        http_tracker: true,
    },
    Sample {
        name: "bt-aria2-mse",
        clients: Clients::Aria2 { encrypted: true },
        http_tracker: false,
    },
    Sample {
        name: "bt-transmission-utp",
        clients: Clients::Transmission,
        http_tracker: false,
    },
    Sample {
        name: "bt-mse-tolerated",
        clients: Clients::Mixed(Mixed {
            aria2_seeds: false,
            aria2_crypto: &[],
            transmission_encryption: 0,
        }),
        http_tracker: false,
    },
    Sample {
        name: "bt-mse-preferred",
        clients: Clients::Mixed(Mixed {
            aria2_seeds: true,
            aria2_crypto: &["--bt-require-crypto=true", "--bt-min-crypto-level=plain"],
            transmission_encryption: 1,
        }),
        http_tracker: false,
    },
    Sample {
        name: "bt-mse-required",
        clients: Clients::Mixed(Mixed {
            aria2_seeds: true,
            aria2_crypto: &[],
            transmission_encryption: 2,
        }),
        http_tracker: false,
    },
    Sample {
        name: "bt-mse-arc4",
        clients: Clients::Mixed(Mixed {
            aria2_seeds: false,
            aria2_crypto: &["--bt-require-crypto=true", "--bt-min-crypto-level=arc4"],
            transmission_encryption: 1,
        }),
        http_tracker: false,
    },
];

/// The namespace every process of an aria2 sample runs in.
const NETNS: &str = "wkp-bt";
/// The namespaces of the transmission seeder (with the tracker) and leecher, their veth ends.
const NETNS_PAIR: [&str; 2] = ["wkp-bt-a", "wkp-bt-b"];
const VETH: [&str; 2] = ["wkp-bta", "wkp-btb"];
/// The tracker's port (UDP and TCP).
const TRACKER_PORT: u16 = 6969;
/// Seeder and leecher on loopback: address, TCP and DHT port.
const SEEDER: Client = Client {
    role: "seeder",
    addr: "127.0.0.2",
    port: 6881,
};
const LEECHER: Client = Client {
    role: "leecher",
    addr: "127.0.0.3",
    port: 6882,
};
/// Seeder and leecher on the veth pair (test-net addresses, only inside the namespaces).
const VETH_SEEDER: Client = Client {
    role: "seeder",
    addr: "198.18.7.1",
    port: 6881,
};
const VETH_LEECHER: Client = Client {
    role: "leecher",
    addr: "198.18.7.2",
    port: 6882,
};
/// Size of the shared file, and the seed of its bytes.
const FILE_SIZE: usize = 400 * 1024;
const FILE_SEED: u64 = 0x5eed_b17e;
/// log2 of the piece length mktorrent is asked for (64 KiB).
const PIECE_LENGTH_LOG2: &str = "16";
/// How long the leecher may take.
const LEECH_LIMIT: Duration = Duration::from_secs(60);
/// How long a client or the tracker may take to stop.
const STOP_LIMIT: Duration = Duration::from_secs(10);
/// What is captured: the scenario's own traffic.
const FILTER: &str = "tcp or udp";
/// Pause for the last packets (stop announces, FINs) before the capture ends.
const SETTLE: Duration = Duration::from_secs(1);

/// One aria2 client.
#[derive(Clone, Copy)]
struct Client {
    role: &'static str,
    addr: &'static str,
    port: u16,
}

#[derive(Serialize)]
struct Truth {
    #[serde(flatten)]
    head: Head,
    torrent: TorrentTruth,
    clients: Vec<ClientTruth>,
    /// Peer-wire messages sent, by kind, over all clients.
    peer_wire_sent: BTreeMap<String, u64>,
    /// The same by the address they were sent to (a client's connections to itself included).
    peer_wire_sent_to: BTreeMap<String, BTreeMap<String, u64>>,
    /// DHT messages sent, by `query`/`response` and method, over all clients.
    dht_sent: BTreeMap<String, u64>,
    /// UDP tracker requests sent and replies received, by action, over all clients (aria2).
    tracker_udp: BTreeMap<String, u64>,
    /// opentracker's own counters of UDP requests received, by action.
    tracker_stats: BTreeMap<String, u64>,
    /// HTTP announce and scrape requests opentracker counted (its `<tcp>` stats).
    tracker_http_stats: BTreeMap<String, u64>,
    /// transmission's own counters (`stats.json`) per client.
    transmission_stats: BTreeMap<&'static str, serde_json::Value>,
    /// transmission's peer connections as its deep log tells them, per client and peer.
    transmission_peers: Vec<TransmissionPeer>,
}

/// One peer of a transmission client, from its deep log (`TR_DEBUG_FD`).
#[derive(Serialize, Default)]
struct TransmissionPeer {
    /// The client's role (its address is in `clients[]`).
    client: &'static str,
    /// The peer's address and port as transmission names it.
    peer: String,
    /// Whether transmission opened the connection.
    outgoing: bool,
    /// MSE crypto_provide (responder) and crypto_select (either side): 1 plaintext, 2 RC4.
    crypto_provide: Option<u8>,
    crypto_select: Option<u8>,
    /// Length of the initiator's initial payload (IA), as the responder read it.
    ia_len: Option<u64>,
    /// Bytes transmission wrote into the peer's socket (its reads are not all logged).
    wrote: u64,
}

#[derive(Serialize)]
struct TorrentTruth {
    info_hash: String,
    file_size: u64,
    piece_length: u64,
    pieces: u64,
    /// 16 KiB blocks of the file: the piece messages of one complete download.
    blocks: u64,
    sha256: String,
    downloaded_sha256: String,
    encryption: String,
}

#[derive(Serialize)]
struct ClientTruth {
    role: &'static str,
    address: &'static str,
    tcp_port: u16,
    dht_port: u16,
    exit: Option<i32>,
}

/// Size of the blocks aria2 requests.
const BLOCK: u64 = 16 * 1024;

/// The file's bytes: xorshift64* from a fixed seed.
fn file_bytes() -> Vec<u8> {
    let mut x = FILE_SEED;
    let mut out = Vec::with_capacity(FILE_SIZE + 8);
    while out.len() < FILE_SIZE {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(FILE_SIZE);
    out
}

/// A command run inside a namespace.
fn in_ns(ns: &str, program: &str) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns, program]);
    c
}

/// How transmission-daemon treats its peers: `encryption` 0 tolerated, 1 preferred, 2 required.
#[derive(Clone, Copy)]
struct TransmissionMode {
    encryption: u8,
    utp: bool,
}

/// transmission-daemon's settings: DHT on, LPD, PEX, port mapping, blocklists and RPC off, uTP
/// and encryption as `mode` says, bound to the client's address; its deep log (every handshake
/// step and message) goes to its output.
fn transmission(client: Client, work: &Path, mode: TransmissionMode) -> anyhow::Result<Command> {
    let home = work.join(client.role);
    let (config, download, watch) = (home.join("config"), home.join("data"), home.join("watch"));
    for dir in [&config, &download, &watch] {
        fs::create_dir_all(dir)?;
    }
    let settings = serde_json::json!({
        "bind-address-ipv4": client.addr,
        "blocklist-enabled": false,
        "dht-enabled": true,
        "download-dir": download,
        "encryption": mode.encryption,
        "idle-seeding-limit-enabled": false,
        "incomplete-dir-enabled": false,
        "lpd-enabled": false,
        "message-level": 3,
        "peer-port": client.port,
        "peer-port-random-on-start": false,
        "pex-enabled": false,
        "port-forwarding-enabled": false,
        "ratio-limit-enabled": false,
        "rpc-enabled": false,
        "start-added-torrents": true,
        "utp-enabled": mode.utp,
        "watch-dir": watch,
        "watch-dir-enabled": true,
    });
    fs::write(config.join("settings.json"), settings.to_string())?;
    let mut c = in_ns(veth_ns(client), "transmission-daemon");
    c.env("TR_DEBUG_FD", "2")
        .arg("-f")
        .arg("-g")
        .arg(&config)
        .arg("--logfile")
        .arg(home.join("transmission.log"));
    Ok(c)
}

/// The namespace of a client on the veth pair: the seeder's (with the tracker) or the leecher's.
fn veth_ns(client: Client) -> &'static str {
    if client.role == "seeder" {
        NETNS_PAIR[0]
    } else {
        NETNS_PAIR[1]
    }
}

/// Two namespaces joined by a veth pair with the veth seeder and leecher addresses, IPv6 off
/// (no router or multicast chatter).
fn veth_pair() -> anyhow::Result<Namespaces> {
    let namespaces = Namespaces::create(&NETNS_PAIR)?;
    netns::ip(&[
        "link", "add", VETH[0], "type", "veth", "peer", "name", VETH[1],
    ])?;
    for (i, client) in [VETH_SEEDER, VETH_LEECHER].iter().enumerate() {
        run(in_ns(NETNS_PAIR[i], "sysctl").args([
            "-qw",
            "net.ipv6.conf.all.disable_ipv6=1",
            "net.ipv6.conf.default.disable_ipv6=1",
        ]))?;
        netns::ip(&["link", "set", VETH[i], "netns", NETNS_PAIR[i]])?;
        let addr = format!("{}/24", client.addr);
        netns::ip(&["-n", NETNS_PAIR[i], "addr", "add", &addr, "dev", VETH[i]])?;
        netns::ip(&["-n", NETNS_PAIR[i], "link", "set", VETH[i], "up"])?;
    }
    Ok(namespaces)
}

/// A child process that is ended (by its pid) when dropped.
struct Process(Child, &'static str);

impl Process {
    fn spawn(mut cmd: Command, name: &'static str, log: &Path) -> anyhow::Result<Process> {
        let out = fs::File::create(log)?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("start {name}"))?;
        Ok(Process(child, name))
    }

    /// Asks the process to stop (SIGTERM) and waits up to `limit`, then kills it.
    fn stop(mut self, limit: Duration) -> anyhow::Result<Option<i32>> {
        if let Ok(pid) = i32::try_from(self.0.id()) {
            // SAFETY: kill only sends a signal to the process this struct started.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        self.wait(limit)
    }

    /// Waits up to `limit` for the process to exit by itself; kills it after that.
    fn wait(&mut self, limit: Duration) -> anyhow::Result<Option<i32>> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.0.try_wait()? {
                return Ok(status.code());
            }
            if start.elapsed() >= limit {
                self.0.kill()?;
                bail!("{} did not finish within {limit:?}", self.1);
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let name = format!("{cmd:?}");
    let out = cmd.output().with_context(|| format!("run {name}"))?;
    ensure!(
        out.status.success(),
        "{name} failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8(out.stdout)?)
}

/// The value of `key: value` in aria2's `-S` listing.
fn field<'a>(listing: &'a str, key: &str) -> anyhow::Result<&'a str> {
    listing
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(": "))
        .map(str::trim)
        .with_context(|| format!("aria2c -S printed no {key:?}"))
}

/// aria2's options shared by both clients: no LPD, no PEX, no bootstrap nodes but the peer,
/// debug log (which names every message sent and received), `crypto` for MSE/PE.
fn aria2(client: Client, ns: &str, dir: &Path, crypto: &[&str]) -> Command {
    let mut c = in_ns(ns, "aria2c");
    let port = client.port.to_string();
    c.arg(format!("--interface={}", client.addr))
        .arg(format!("--listen-port={port}"))
        .arg(format!("--dht-listen-port={port}"))
        .arg(format!("--dht-listen-addr={}", client.addr))
        .arg(format!(
            "--dht-file-path={}/dht-{}.dat",
            dir.display(),
            client.role
        ))
        .args([
            "--enable-dht=true",
            "--enable-dht6=false",
            "--bt-enable-lpd=false",
            "--enable-peer-exchange=false",
            "--disable-ipv6=true",
            "--bt-stop-timeout=0",
            "--log-level=debug",
            "--console-log-level=warn",
            "--summary-interval=0",
            "--follow-torrent=false",
        ])
        .arg(format!("--log={}/{}.log", dir.display(), client.role))
        .args(crypto);
    c
}

/// aria2's options that require RC4.
const ARIA2_RC4: &[&str] = &["--bt-require-crypto=true", "--bt-min-crypto-level=arc4"];

/// aria2's name of a peer-wire message (as its log writes it) and the profiler's kind.
const ARIA2_MESSAGES: &[(&str, &str)] = &[
    ("extended handshake", "extended"),
    ("allowed fast", "allowed_fast"),
    ("have all", "have_all"),
    ("have none", "have_none"),
    ("not interested", "not_interested"),
    ("keep alive", "keepalive"),
    ("handshake", "handshake"),
    ("bitfield", "bitfield"),
    ("piece", "piece"),
    ("request", "request"),
    ("have", "have"),
    ("unchoke", "unchoke"),
    ("choke", "choke"),
    ("interested", "interested"),
    ("cancel", "cancel"),
    ("reject", "reject"),
    ("suggest", "suggest"),
    ("port", "port"),
];

/// Counts from one aria2 debug log into the truth's maps.
fn count_log(log: &str, truth: &mut Truth) {
    for line in log.lines() {
        if let Some((_, rest)) = line.split_once(" - To: ") {
            let (to, text) = rest.split_once(' ').unwrap_or((rest, ""));
            let to = to.rsplit_once(':').map_or(to, |(addr, _)| addr);
            let kind = ARIA2_MESSAGES.iter().find(|(name, _)| {
                text.strip_prefix(name)
                    .is_some_and(|r| r.is_empty() || r.starts_with(' '))
            });
            let kind = kind.map_or("unknown", |(_, k)| k);
            *truth.peer_wire_sent.entry(kind.to_owned()).or_default() += 1;
            *truth
                .peer_wire_sent_to
                .entry(to.to_owned())
                .or_default()
                .entry(kind.to_owned())
                .or_default() += 1;
        } else if let Some((_, rest)) = line.split_once("Message sent: dht ") {
            let mut words = rest.split(' ');
            if let (Some(y), Some(method)) = (words.next(), words.next()) {
                *truth.dht_sent.entry(format!("{y} {method}")).or_default() += 1;
            }
        } else if let Some((_, rest)) = line.split_once("UDPT sent ") {
            let action = rest.split(' ').next().unwrap_or_default().to_lowercase();
            *truth
                .tracker_udp
                .entry(format!("{action} request"))
                .or_default() += 1;
        } else if let Some((_, rest)) = line.split_once("UDPT received ") {
            let action = rest.split(' ').next().unwrap_or_default().to_lowercase();
            *truth
                .tracker_udp
                .entry(format!("{action} reply"))
                .or_default() += 1;
        }
    }
}

/// The peers of a transmission client from its deep log, whose lines read
/// `[time] [address]:port message (file.c:line)`; peers on the client's own address (its
/// connections to itself, which the capture does not see) are left out.
fn transmission_peers(log: &str, client: Client, truth: &mut Truth) {
    let mut peers: BTreeMap<String, TransmissionPeer> = BTreeMap::new();
    for line in log.lines() {
        let Some(rest) = line.split_once("] [").map(|(_, r)| r) else {
            continue;
        };
        let Some((addr, message)) = rest.split_once("]:") else {
            continue;
        };
        let Some((port, message)) = message.split_once(' ') else {
            continue;
        };
        if addr == client.addr || port.parse::<u16>().is_err() {
            continue;
        }
        let number = |prefix: &str| {
            let rest = message.strip_prefix(prefix)?;
            let end = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            rest[..end].parse::<u64>().ok()
        };
        let p = peers
            .entry(format!("{addr}:{port}"))
            .or_insert_with(|| TransmissionPeer {
                client: client.role,
                peer: format!("{addr}:{port}"),
                ..TransmissionPeer::default()
            });
        if let Some(n) = number("wrote ") {
            p.wrote += n;
        } else if let Some(n) = number("crypto_provide is ") {
            p.crypto_provide = u8::try_from(n).ok();
        } else if let Some(n) =
            number("crypto select is ").or_else(|| number("selecting crypto mode '"))
        {
            p.crypto_select = u8::try_from(n).ok();
        } else if let Some(n) = number("ia_len is ") {
            p.ia_len = Some(n);
        }
    }
    for line in log
        .lines()
        .filter(|l| l.contains("Starting an OUTGOING connection with ["))
    {
        if let Some((_, peer)) = line.split_once("connection with [") {
            let key = peer
                .split(' ')
                .next()
                .unwrap_or_default()
                .replacen(']', "", 1);
            if let Some(p) = peers.get_mut(&key) {
                p.outgoing = true;
            }
        }
    }
    truth
        .transmission_peers
        .extend(peers.into_values().filter(|p| p.wrote > 0));
}

/// What a run of the clients left behind.
struct Ran {
    stats: capture::CaptureStats,
    tracker_stats: BTreeMap<String, u64>,
    tracker_http_stats: BTreeMap<String, u64>,
    device: &'static str,
    netns: &'static str,
    exits: [Option<i32>; 2],
    downloaded: PathBuf,
}

/// opentracker's own counters (`/stats?mode=everything`, asked from the tracker's address,
/// which is blessed as admin, after the capture): UDP requests received by action, and HTTP
/// announce and scrape requests.
fn tracker_stats(
    ns: &'static str,
    addr: &'static str,
) -> anyhow::Result<(BTreeMap<String, u64>, BTreeMap<String, u64>)> {
    let page = thread::spawn(move || -> anyhow::Result<String> {
        netns::enter(ns)?;
        let mut conn = TcpStream::connect((addr, TRACKER_PORT))?;
        conn.write_all(b"GET /stats?mode=everything HTTP/1.0\r\n\r\n")?;
        let mut page = String::new();
        conn.read_to_string(&mut page)?;
        Ok(page)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("tracker stats thread panicked"))??;
    let udp = stats_section(&page, "udp", &["connect", "announce", "scrape"])?;
    let tcp = stats_section(&page, "tcp", &["announce", "scrape"])?;
    Ok((udp, tcp))
}

/// The counters `actions` of section `<name>` of opentracker's stats page.
fn stats_section(
    page: &str,
    name: &str,
    actions: &[&str],
) -> anyhow::Result<BTreeMap<String, u64>> {
    let section = page
        .split_once(&format!("<{name}>"))
        .and_then(|(_, rest)| rest.split_once(&format!("</{name}>")))
        .map(|(s, _)| s)
        .with_context(|| format!("no <{name}> in opentracker's stats: {page:?}"))?;
    let mut out = BTreeMap::new();
    for action in actions {
        let open = format!("<{action}>");
        let value = section
            .split_once(&open)
            .and_then(|(_, rest)| rest.split_once('<'))
            .with_context(|| format!("no {open} in opentracker's {name} stats"))?
            .0;
        out.insert((*action).to_owned(), value.trim().parse()?);
    }
    Ok(out)
}

/// Which program runs one end of a sample, and how.
#[derive(Clone, Copy)]
enum Program {
    Aria2 { crypto: &'static [&'static str] },
    Transmission(TransmissionMode),
}

impl Clients {
    /// The programs of the seeder and the leecher.
    fn programs(self) -> [Program; 2] {
        match self {
            Clients::Aria2 { encrypted } => {
                let crypto = if encrypted { ARIA2_RC4 } else { &[] };
                [Program::Aria2 { crypto }; 2]
            }
            Clients::Transmission => {
                [Program::Transmission(TransmissionMode {
                    encryption: 0,
                    utp: true,
                }); 2]
            }
            Clients::Mixed(m) => {
                let aria2 = Program::Aria2 {
                    crypto: m.aria2_crypto,
                };
                let transmission = Program::Transmission(TransmissionMode {
                    encryption: m.transmission_encryption,
                    utp: false,
                });
                if m.aria2_seeds {
                    [aria2, transmission]
                } else {
                    [transmission, aria2]
                }
            }
        }
    }

    /// The seeder's and the leecher's address and port.
    fn addresses(self) -> (Client, Client) {
        match self {
            Clients::Aria2 { .. } => (SEEDER, LEECHER),
            Clients::Transmission | Clients::Mixed(_) => (VETH_SEEDER, VETH_LEECHER),
        }
    }
}

/// The namespace a client runs in: the aria2-only samples share one on loopback.
fn client_ns(client: Client) -> &'static str {
    if client.addr.starts_with("127.") {
        NETNS
    } else {
        veth_ns(client)
    }
}

/// Starts the seeder of `work`/file.bin.
fn seed(program: Program, client: Client, work: &Path, torrent: &Path) -> anyhow::Result<Process> {
    let log = work.join("seeder.out");
    match program {
        Program::Aria2 { crypto } => {
            let mut cmd = aria2(client, client_ns(client), work, crypto);
            cmd.args(["--seed-ratio=0.0", "--check-integrity=true", "-d"])
                .arg(work)
                .arg(torrent);
            Process::spawn(cmd, "aria2c seeder", &log)
        }
        Program::Transmission(mode) => {
            let cmd = transmission(client, work, mode)?;
            fs::copy(work.join("file.bin"), work.join("seeder/data/file.bin"))?;
            fs::copy(torrent, work.join("seeder/watch/file.torrent"))?;
            Process::spawn(cmd, "transmission seeder", &log)
        }
    }
}

/// Starts the leecher and returns once it has the whole file, with where it wrote it.
fn leech(
    program: Program,
    client: Client,
    seeder: Client,
    work: &Path,
    torrent: &Path,
) -> anyhow::Result<(Process, PathBuf)> {
    let log = work.join("leecher.out");
    match program {
        Program::Aria2 { crypto } => {
            let dir = work.join("leech");
            let mut cmd = aria2(client, client_ns(client), work, crypto);
            cmd.arg(format!("--dht-entry-point={}:{}", seeder.addr, seeder.port))
                .args(["--seed-time=0", "-d"])
                .arg(&dir)
                .arg(torrent);
            let mut leecher = Process::spawn(cmd, "aria2c leecher", &log)?;
            leecher.wait(LEECH_LIMIT)?;
            Ok((leecher, dir.join("file.bin")))
        }
        Program::Transmission(mode) => {
            let cmd = transmission(client, work, mode)?;
            fs::copy(torrent, work.join("leecher/watch/file.torrent"))?;
            let leecher = Process::spawn(cmd, "transmission leecher", &log)?;
            let downloaded = work.join("leecher/data/file.bin");
            let want = fs::read(work.join("file.bin"))?;
            let start = Instant::now();
            while fs::read(&downloaded).ok().as_ref() != Some(&want) {
                ensure!(
                    start.elapsed() < LEECH_LIMIT,
                    "the leecher did not finish in time"
                );
                thread::sleep(Duration::from_millis(200));
            }
            Ok((leecher, downloaded))
        }
    }
}

/// Starts the tracker, the capture, the seeder and the leecher; stops them once the leecher has
/// the file.
fn run_clients(sample: &Sample, work: &Path, torrent: &Path, out: &Path) -> anyhow::Result<Ran> {
    let (tracker_ns, tracker_addr, device, capture_ns) = match sample.clients {
        Clients::Aria2 { .. } => (NETNS, "127.0.0.1", "lo", NETNS),
        Clients::Transmission | Clients::Mixed(_) => {
            (NETNS_PAIR[0], VETH_SEEDER.addr, "any", NETNS_PAIR[0])
        }
    };
    let mut tracker_cmd = in_ns(tracker_ns, "opentracker");
    let port = TRACKER_PORT.to_string();
    tracker_cmd
        .args([
            "-i",
            tracker_addr,
            "-p",
            &port,
            "-P",
            &port,
            "-A",
            tracker_addr,
            "-w",
        ])
        .arg(work.join("whitelist"))
        .current_dir(work);
    let tracker = Process::spawn(tracker_cmd, "opentracker", &work.join("opentracker.out"))?;
    netns::wait_for_listener(tracker_ns, "udp", TRACKER_PORT)?;
    netns::wait_for_listener(tracker_ns, "tcp", TRACKER_PORT)?;
    let running = capture::start(CaptureSpec {
        device: device.into(),
        netns: Some(capture_ns.into()),
        linktype: None,
        precision: Precision::Micro,
        filter: FILTER.into(),
        out: out.to_path_buf(),
    })?;
    let [seed_program, leech_program] = sample.clients.programs();
    let (seeder_client, leecher_client) = sample.clients.addresses();
    let seeder = seed(seed_program, seeder_client, work, torrent)?;
    thread::sleep(Duration::from_secs(2));
    let (mut leecher, downloaded) =
        leech(leech_program, leecher_client, seeder_client, work, torrent)?;
    thread::sleep(SETTLE);
    let leecher_exit = match leech_program {
        Program::Aria2 { .. } => leecher.wait(Duration::ZERO)?,
        Program::Transmission(_) => leecher.stop(STOP_LIMIT)?,
    };
    let seeder_exit = seeder.stop(STOP_LIMIT)?;
    thread::sleep(SETTLE);
    let stats = running.stop()?;
    let (tracker_stats, tracker_http_stats) = tracker_stats(tracker_ns, tracker_addr)?;
    tracker.stop(STOP_LIMIT)?;
    Ok(Ran {
        stats,
        tracker_stats,
        tracker_http_stats,
        device,
        netns: capture_ns,
        exits: [seeder_exit, leecher_exit],
        downloaded,
    })
}

/// Makes one sample: `<name>.pcap` and `<name>.truth.json` in `out_dir`.
pub fn make(sample: &Sample, out_dir: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(out_dir)?;
    let work = std::env::temp_dir().join(format!("wkp-{}", sample.name));
    if work.exists() {
        fs::remove_dir_all(&work)?;
    }
    fs::create_dir_all(&work)?;
    let data = file_bytes();
    let file = work.join("file.bin");
    fs::write(&file, &data)?;
    let (seeder, leecher) = sample.clients.addresses();
    let tracker_addr = match sample.clients {
        Clients::Aria2 { .. } => "127.0.0.1",
        Clients::Transmission | Clients::Mixed(_) => VETH_SEEDER.addr,
    };
    let torrent = work.join("file.torrent");
    let scheme = if sample.http_tracker { "http" } else { "udp" };
    let announce = format!("{scheme}://{tracker_addr}:{TRACKER_PORT}/announce");
    run(Command::new("mktorrent")
        .args(["-a", &announce, "-l", PIECE_LENGTH_LOG2, "-o"])
        .arg(&torrent)
        .arg(&file))
    .context("mktorrent (Debian package mktorrent)")?;
    let listing = run(Command::new("aria2c").arg("-S").arg(&torrent))?;
    let info_hash = field(&listing, "Info Hash")?.to_owned();
    let pieces: u64 = field(&listing, "The Number of Pieces")?.parse()?;
    fs::write(work.join("whitelist"), format!("{info_hash}\n"))?;

    let _namespaces = match sample.clients {
        Clients::Aria2 { .. } => Namespaces::create(&[NETNS])?,
        Clients::Transmission | Clients::Mixed(_) => veth_pair()?,
    };
    let out = out_dir.join(format!("{}.pcap", sample.name));
    let ran = run_clients(sample, &work, &torrent, &out)?;
    let downloaded = fs::read(&ran.downloaded).context("the leecher's download")?;
    ensure!(
        downloaded == data,
        "the leecher's file differs from the seeder's"
    );
    let stats = ran.stats;
    let file_size = data.len() as u64;
    let tracker = if sample.http_tracker { "HTTP" } else { "UDP" };
    let (clients, peers) = match sample.clients {
        Clients::Aria2 { encrypted: false } => (
            "aria2 1.36 (seeder and leecher)".to_owned(),
            "TCP, each opened with an MSE/PE handshake that selects plaintext (aria2's default)"
                .to_owned(),
        ),
        Clients::Aria2 { encrypted: true } => (
            "aria2 1.36 (seeder and leecher)".to_owned(),
            "TCP, MSE/PE with RC4 required (aria2 --bt-require-crypto --bt-min-crypto-level=arc4)"
                .to_owned(),
        ),
        Clients::Transmission => (
            "transmission-daemon 3.00 (seeder and leecher)".to_owned(),
            "uTP, plaintext preferred (transmission encryption 0)".to_owned(),
        ),
        Clients::Mixed(m) => {
            let (aria2, transmission) = if m.aria2_seeds {
                ("seeder", "leecher")
            } else {
                ("leecher", "seeder")
            };
            (
                format!("aria2 1.36 ({aria2}) and transmission-daemon 3.00 ({transmission})"),
                format!(
                    "TCP, MSE/PE: aria2 with {}, transmission with encryption {}",
                    m.aria2_mode(),
                    m.transmission_mode()
                ),
            )
        }
    };
    let made_by = format!("{clients} and opentracker ({tracker} tracker), Debian");
    let place = match sample.clients {
        Clients::Aria2 { .. } => format!(
            "on the loopback of a namespace, opentracker on {tracker_addr}:{TRACKER_PORT} ({tracker})"
        ),
        Clients::Transmission | Clients::Mixed(_) => format!(
            "in two namespaces joined by a veth pair, opentracker on {tracker_addr}:{TRACKER_PORT} \
             ({tracker}) in the seeder's namespace"
        ),
    };
    let mut truth = Truth {
        head: Head {
            sample: sample.name.to_owned(),
            file: format!("{}.pcap", sample.name),
            link_type: stats.linktype.get_name()?,
            made_by,
            description: format!(
                "seeder {}:{} and leecher {}:{} {place}, Mainline DHT between the clients, {} KiB \
             file in {pieces} pieces of 64 KiB; peers: {peers}; captured live on `{}` by libpcap",
                seeder.addr,
                seeder.port,
                leecher.addr,
                leecher.port,
                FILE_SIZE / 1024,
                ran.device,
            ),
            capture: CaptureTruth::new(
                ran.device,
                Some(ran.netns),
                FILTER,
                Precision::Micro,
                &stats,
            ),
        },
        torrent: TorrentTruth {
            info_hash,
            file_size,
            piece_length: 1 << 16,
            pieces,
            blocks: file_size.div_ceil(BLOCK),
            sha256: hex(&Sha256::digest(&data)),
            downloaded_sha256: hex(&Sha256::digest(&downloaded)),
            encryption: peers,
        },
        clients: vec![
            client_truth(seeder, ran.exits[0]),
            client_truth(leecher, ran.exits[1]),
        ],
        tracker_stats: ran.tracker_stats,
        tracker_http_stats: ran.tracker_http_stats,
        peer_wire_sent: BTreeMap::new(),
        peer_wire_sent_to: BTreeMap::new(),
        dht_sent: BTreeMap::new(),
        tracker_udp: BTreeMap::new(),
        transmission_stats: BTreeMap::new(),
        transmission_peers: Vec::new(),
    };
    for (client, program) in [seeder, leecher].into_iter().zip(sample.clients.programs()) {
        if let Program::Aria2 { .. } = program {
            let log: PathBuf = work.join(format!("{}.log", client.role));
            let text =
                fs::read_to_string(&log).with_context(|| format!("read {}", log.display()))?;
            count_log(&text, &mut truth);
        } else {
            let path = work.join(client.role).join("config/stats.json");
            let text =
                fs::read_to_string(&path).with_context(|| format!("read {}", path.display()))?;
            truth
                .transmission_stats
                .insert(client.role, serde_json::from_str(&text)?);
            let out = work.join(format!("{}.out", client.role));
            let log = fs::read(&out).with_context(|| format!("read {}", out.display()))?;
            transmission_peers(&String::from_utf8_lossy(&log), client, &mut truth);
        }
    }
    let truth_path = out_dir.join(format!("{}.truth.json", sample.name));
    fs::write(&truth_path, serde_json::to_string_pretty(&truth)? + "\n")
        .with_context(|| format!("write {}", truth_path.display()))?;
    fs::remove_dir_all(&work)?;
    Ok(())
}

fn client_truth(c: Client, exit: Option<i32>) -> ClientTruth {
    ClientTruth {
        role: c.role,
        address: c.addr,
        tcp_port: c.port,
        dht_port: c.port,
        exit,
    }
}
