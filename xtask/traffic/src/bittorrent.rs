//! BitTorrent samples: real clients from Debian (aria2 as seeder and leecher) and opentracker on
//! the loopback of a network namespace of their own, transferring a known file, with the UDP
//! tracker, the Mainline DHT between the two clients, and plaintext or MSE-encrypted peer
//! connections. The truth is what the implementations report: the torrent's metadata (aria2's
//! `-S`), the downloaded file compared with the original, and every peer-wire, DHT and UDP
//! tracker message the clients logged as sent or received.

use std::{
    collections::BTreeMap,
    fs,
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
    netns::Namespaces,
    scenario::{CaptureTruth, hex},
};

/// One BitTorrent sample.
pub struct Sample {
    /// Base name of the files in samples/.
    pub name: &'static str,
    /// Whether both clients require MSE/PE with RC4 (no plaintext peer connection).
    pub encrypted: bool,
}

/// The BitTorrent samples.
pub static SAMPLES: &[Sample] = &[
    Sample {
        name: "bt-aria2-plain",
        encrypted: false,
    },
    Sample {
        name: "bt-aria2-mse",
        encrypted: true,
    },
];

/// The namespace every process of a sample runs in.
const NETNS: &str = "wkp-bt";
/// The tracker's address and port (UDP and TCP).
const TRACKER: (&str, u16) = ("127.0.0.1", 6969);
/// Seeder and leecher: address, TCP and DHT port.
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
/// Size of the shared file, and the seed of its bytes.
const FILE_SIZE: usize = 400 * 1024;
const FILE_SEED: u64 = 0x5eed_b17e;
/// log2 of the piece length mktorrent is asked for (64 KiB).
const PIECE_LENGTH_LOG2: &str = "16";
/// How long the leecher may take.
const LEECH_LIMIT: Duration = Duration::from_secs(60);
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
    sample: String,
    file: String,
    link_type: String,
    made_by: String,
    description: String,
    capture: CaptureTruth,
    torrent: TorrentTruth,
    clients: Vec<ClientTruth>,
    /// Peer-wire messages sent, by kind, over all clients.
    peer_wire_sent: BTreeMap<String, u64>,
    /// DHT messages sent, by `query`/`response` and method, over all clients.
    dht_sent: BTreeMap<String, u64>,
    /// UDP tracker requests sent and replies received, by action, over all clients.
    tracker_udp: BTreeMap<String, u64>,
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
    encryption: &'static str,
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

/// A command run inside the sample's namespace.
fn in_ns(program: &str) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", NETNS, program]);
    c
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
        while start.elapsed() < limit {
            if let Some(status) = self.0.try_wait()? {
                return Ok(status.code());
            }
            thread::sleep(Duration::from_millis(50));
        }
        self.0.kill()?;
        bail!("{} did not finish within {limit:?}", self.1)
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
/// debug log (which names every message sent and received).
fn aria2(client: Client, dir: &Path, encrypted: bool) -> Command {
    let mut c = in_ns("aria2c");
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
        .arg(format!("--log={}/{}.log", dir.display(), client.role));
    if encrypted {
        c.args(["--bt-require-crypto=true", "--bt-min-crypto-level=arc4"]);
    }
    c
}

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
            let text = rest.split_once(' ').map_or("", |(_, t)| t);
            let kind = ARIA2_MESSAGES.iter().find(|(name, _)| {
                text.strip_prefix(name)
                    .is_some_and(|r| r.is_empty() || r.starts_with(' '))
            });
            let kind = kind.map_or("unknown", |(_, k)| k);
            *truth.peer_wire_sent.entry(kind.to_owned()).or_default() += 1;
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

/// Makes one sample: `<name>.pcap` and `<name>.truth.json` in `out_dir`.
pub fn make(sample: &Sample, out_dir: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(out_dir)?;
    let work = std::env::temp_dir().join(format!("wkp-{}", sample.name));
    if work.exists() {
        fs::remove_dir_all(&work)?;
    }
    let (seed_dir, leech_dir) = (work.join("seed"), work.join("leech"));
    fs::create_dir_all(&seed_dir)?;
    fs::create_dir_all(&leech_dir)?;
    let data = file_bytes();
    let file = seed_dir.join("file.bin");
    fs::write(&file, &data)?;
    let torrent = work.join("file.torrent");
    let announce = format!("udp://{}:{}/announce", TRACKER.0, TRACKER.1);
    run(Command::new("mktorrent")
        .args(["-a", &announce, "-l", PIECE_LENGTH_LOG2, "-o"])
        .arg(&torrent)
        .arg(&file))
    .context("mktorrent (Debian package mktorrent)")?;
    let listing = run(Command::new("aria2c").arg("-S").arg(&torrent))?;
    let info_hash = field(&listing, "Info Hash")?.to_owned();
    let pieces: u64 = field(&listing, "The Number of Pieces")?.parse()?;
    let whitelist = work.join("whitelist");
    fs::write(&whitelist, format!("{info_hash}\n"))?;

    let _ns = Namespaces::create(&[NETNS])?;
    let mut tracker_cmd = in_ns("opentracker");
    let port = TRACKER.1.to_string();
    tracker_cmd
        .args(["-i", TRACKER.0, "-p", &port, "-P", &port, "-w"])
        .arg(&whitelist)
        .current_dir(&work);
    let tracker = Process::spawn(tracker_cmd, "opentracker", &work.join("opentracker.out"))?;
    thread::sleep(Duration::from_millis(300));

    let out = out_dir.join(format!("{}.pcap", sample.name));
    let filter = "tcp or udp".to_owned();
    let running = capture::start(CaptureSpec {
        device: "lo".into(),
        netns: Some(NETNS.into()),
        linktype: None,
        precision: Precision::Micro,
        filter: filter.clone(),
        out: out.clone(),
    })?;

    let mut seed_cmd = aria2(SEEDER, &work, sample.encrypted);
    seed_cmd
        .args(["--seed-ratio=0.0", "--check-integrity=true", "-d"])
        .arg(&seed_dir)
        .arg(&torrent);
    let seeder = Process::spawn(seed_cmd, "aria2c seeder", &work.join("seeder.out"))?;
    thread::sleep(Duration::from_secs(1));
    let mut leech_cmd = aria2(LEECHER, &work, sample.encrypted);
    leech_cmd
        .arg(format!("--dht-entry-point={}:{}", SEEDER.addr, SEEDER.port))
        .args(["--seed-time=0", "-d"])
        .arg(&leech_dir)
        .arg(&torrent);
    let mut leecher = Process::spawn(leech_cmd, "aria2c leecher", &work.join("leecher.out"))?;
    let leecher_exit = leecher.wait(LEECH_LIMIT)?;
    thread::sleep(SETTLE);
    let seeder_exit = seeder.stop(Duration::from_secs(10))?;
    thread::sleep(SETTLE);
    let stats = running.stop()?;
    tracker.stop(Duration::from_secs(5))?;

    let downloaded = fs::read(leech_dir.join("file.bin")).context("the leecher's download")?;
    ensure!(
        downloaded == data,
        "the leecher's file differs from the seeder's"
    );
    ensure!(
        leecher_exit == Some(0),
        "the leecher exited with {leecher_exit:?}"
    );
    let digest = hex(&Sha256::digest(&data));
    let file_size = data.len() as u64;
    let encryption = if sample.encrypted {
        "MSE/PE required, RC4 (aria2 --bt-require-crypto --bt-min-crypto-level=arc4)"
    } else {
        "none (aria2 accepts MSE but opens plaintext connections)"
    };
    let mut truth = Truth {
        sample: sample.name.to_owned(),
        file: format!("{}.pcap", sample.name),
        link_type: stats.linktype.get_name()?,
        made_by: "aria2 1.36 (seeder and leecher) and opentracker (UDP tracker), Debian".into(),
        description: format!(
            "aria2 seeder {}:{} and leecher {}:{} on the loopback of a namespace, opentracker \
             on {}:{} (UDP), Mainline DHT between the clients, {} KiB file in {pieces} pieces \
             of 64 KiB; peer connections: {encryption}; captured live on `lo` by libpcap",
            SEEDER.addr,
            SEEDER.port,
            LEECHER.addr,
            LEECHER.port,
            TRACKER.0,
            TRACKER.1,
            FILE_SIZE / 1024,
        ),
        capture: CaptureTruth {
            tool: "libpcap via the pcap crate".into(),
            device: "lo".into(),
            netns: Some(NETNS.into()),
            filter,
            timestamp_precision: "micro",
            packets: stats.packets,
            received: stats.received,
            dropped: stats.dropped,
            if_dropped: stats.if_dropped,
            converted: None,
        },
        torrent: TorrentTruth {
            info_hash,
            file_size,
            piece_length: 1 << 16,
            pieces,
            blocks: file_size.div_ceil(BLOCK),
            sha256: digest.clone(),
            downloaded_sha256: hex(&Sha256::digest(&downloaded)),
            encryption,
        },
        clients: vec![
            client_truth(SEEDER, seeder_exit),
            client_truth(LEECHER, leecher_exit),
        ],
        peer_wire_sent: BTreeMap::new(),
        dht_sent: BTreeMap::new(),
        tracker_udp: BTreeMap::new(),
    };
    for client in [SEEDER, LEECHER] {
        let log: PathBuf = work.join(format!("{}.log", client.role));
        let text = fs::read_to_string(&log).with_context(|| format!("read {}", log.display()))?;
        count_log(&text, &mut truth);
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
