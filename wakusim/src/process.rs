//! Each node as its own OS process, started inside the node's network namespace, so that a
//! per-process profiler attributes its bytes as on a real host. The parent writes the node's
//! configuration and then [`Command`]s to the child's stdin, one JSON line each; the child
//! (`wakusim node`, hidden) runs the node as the sample generator does and writes [`Report`]s
//! to its stdout, ending with its counts and every connection side it tapped (the truth).

use std::{
    collections::{BTreeMap, HashMap},
    fs::File,
    io::{self, BufRead, BufReader, Write},
    net::{IpAddr, SocketAddr},
    os::{fd::AsRawFd, unix::process::CommandExt},
    process::{Child, ChildStdin, Stdio},
    sync::mpsc,
    thread,
};

use anyhow::{Context as _, anyhow, bail};
use base64::Engine as _;
use k256::ecdsa::VerifyingKey;
use serde::{Deserialize, Serialize};
use traffic::{
    node::{self, Command, NodeSpec, Relay, Report, TopicCounts},
    scenario::node_name,
    tap::StreamRecord,
    transport::{ConnSide, Muxer, Registry, ReportedSide, Security, TransportSpec},
};

use crate::run::validator;

/// What a node process needs to start its node: the first line on its stdin.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeConfig {
    /// Node index.
    pub index: usize,
    /// Address to listen on (ephemeral port).
    pub listen_ip: IpAddr,
    /// Security protocol of the transport (the muxer is yamux).
    pub security: Security,
    /// How the node runs gossipsub.
    pub relay: Relay,
    /// Pubsub topics the node subscribes to.
    pub topics: Vec<String>,
    /// Protected pubsub topics and their keys (SEC1 bytes): messages there must be signed.
    pub keys: BTreeMap<String, Vec<u8>>,
}

/// One line of a node process's stdout.
#[derive(Serialize, Deserialize)]
enum Line {
    /// A report, as the node made it.
    Report(Report),
    /// The node stopped: its counts and the connection sides it tapped.
    Done {
        counts: BTreeMap<String, TopicCounts>,
        sides: Vec<Side>,
    },
}

/// A connection side as it crosses the pipe (stream bytes in base64).
#[derive(Serialize, Deserialize)]
struct Side {
    node: usize,
    dialer: bool,
    local: SocketAddr,
    remote: SocketAddr,
    written: u64,
    read: u64,
    security: String,
    muxer: String,
    /// (outbound, written, read) per substream.
    streams: Vec<(bool, String, String)>,
}

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

impl Side {
    fn of(side: &ConnSide) -> Side {
        Side {
            node: side.node,
            dialer: side.dialer,
            local: side.local,
            remote: side.remote,
            written: side.written(),
            read: side.read(),
            security: side.security().unwrap_or_default(),
            muxer: side.muxer().unwrap_or_default(),
            streams: side
                .streams()
                .iter()
                .map(|s| (s.outbound, B64.encode(s.written()), B64.encode(s.read())))
                .collect(),
        }
    }

    fn reported(self) -> anyhow::Result<ReportedSide> {
        let mut streams = Vec::new();
        for (outbound, written, read) in self.streams {
            streams.push(StreamRecord::recorded(
                outbound,
                B64.decode(written)?,
                B64.decode(read)?,
            ));
        }
        Ok(ReportedSide {
            node: self.node,
            dialer: self.dialer,
            local: self.local,
            remote: self.remote,
            written: self.written,
            read: self.read,
            security: self.security,
            muxer: self.muxer,
            streams,
        })
    }
}

/// A running node process; dropping it kills the process if it still runs.
pub struct NodeProcess {
    index: usize,
    child: Child,
    stdin: ChildStdin,
    reader: Option<thread::JoinHandle<Option<Line>>>,
    registry: Registry,
}

impl NodeProcess {
    /// Starts `wakusim node` in the network namespace `netns` with `config`; its reports go to
    /// `reports` and, once it stopped, its connection sides to `registry`. The process gets
    /// SIGKILL if the calling thread ends before it (a killed wakusim leaves no node behind).
    pub fn spawn(
        config: &NodeConfig,
        netns: &str,
        registry: Registry,
        reports: mpsc::Sender<Report>,
    ) -> anyhow::Result<NodeProcess> {
        let path = format!("/run/netns/{netns}");
        let ns = File::open(&path).with_context(|| format!("open {path}"))?;
        let fd = ns.as_raw_fd();
        let parent = std::process::id();
        let exe = std::env::current_exe().context("find the wakusim executable")?;
        let mut command = std::process::Command::new(exe);
        command
            .arg("node")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        // SAFETY: between fork and exec the closure only makes syscalls (prctl, getppid,
        // setns), which are async-signal-safe; `ns` outlives the spawn.
        unsafe {
            command.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(io::Error::last_os_error());
                }
                if u32::try_from(libc::getppid()).ok() != Some(parent) {
                    return Err(io::Error::from_raw_os_error(libc::ESRCH));
                }
                if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command
            .spawn()
            .with_context(|| format!("start {}'s process", node_name(config.index)))?;
        drop(ns);
        let (Some(mut stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            bail!("{}'s process has no pipes", node_name(config.index));
        };
        writeln!(stdin, "{}", serde_json::to_string(config)?)?;
        let index = config.index;
        let reader = thread::Builder::new()
            .name(format!("{}-reader", node_name(index)))
            .spawn(move || read_lines(index, stdout, &reports))?;
        Ok(NodeProcess {
            index,
            child,
            stdin,
            reader: Some(reader),
            registry,
        })
    }

    /// The process id (what a per-process profiler attributes the node's bytes to).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `command` to the node.
    pub fn send(&self, command: &Command) -> anyhow::Result<()> {
        let mut line = serde_json::to_vec(command)?;
        line.push(b'\n');
        (&self.stdin)
            .write_all(&line)
            .with_context(|| format!("send to {}", node_name(self.index)))
    }

    /// Waits for the process to stop; adds its connection sides to the registry and returns
    /// its per-topic counts.
    pub fn join(mut self) -> anyhow::Result<BTreeMap<String, TopicCounts>> {
        let last = self.reader.take().and_then(|r| r.join().ok()).flatten();
        let status = self.child.wait()?;
        let Some(Line::Done { counts, sides }) = last else {
            bail!(
                "{} (pid {}) ended ({status}) without its counts",
                node_name(self.index),
                self.pid()
            );
        };
        for side in sides {
            self.registry.add_reported(side.reported()?);
        }
        Ok(counts)
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // Fails only if it has just exited; wait reaps it either way.
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Forwards a node process's reports until its last line, which it returns (none if the
/// process ended without one: it then reports the failure).
fn read_lines(index: usize, stdout: impl io::Read, reports: &mpsc::Sender<Report>) -> Option<Line> {
    let failed = |error: String| {
        let _ = reports.send(Report::Failed { node: index, error });
        None
    };
    for line in BufReader::new(stdout).lines() {
        let line = match line {
            Ok(l) => l,
            Err(e) => return failed(format!("reading its process: {e}")),
        };
        match serde_json::from_str(&line) {
            Ok(Line::Report(r)) => {
                // The run may have given up already; it then reports its own error.
                let _ = reports.send(r);
            }
            Ok(done) => return Some(done),
            Err(e) => return failed(format!("bad line from its process: {e}")),
        }
    }
    failed("its process ended without its counts".into())
}

/// The `wakusim node` process: reads its configuration and commands from stdin, runs the node
/// and writes its reports, counts and connection sides to stdout.
pub fn child() -> anyhow::Result<()> {
    let mut stdin = io::stdin().lock();
    let mut first = String::new();
    stdin.read_line(&mut first)?;
    let config: NodeConfig =
        serde_json::from_str(&first).context("the node configuration on stdin")?;
    let mut keys = HashMap::new();
    for (topic, key) in &config.keys {
        let key =
            VerifyingKey::from_sec1_bytes(key).map_err(|e| anyhow!("the key of {topic}: {e}"))?;
        keys.insert(topic.clone(), key);
    }
    let spec = NodeSpec {
        index: config.index,
        listen_ip: config.listen_ip,
        listen_port: 0,
        netns: None,
        transport: TransportSpec {
            security: config.security,
            muxer: Muxer::Yamux,
            source: None,
        },
        relay: config.relay,
        mesh_peers: 1,
        topics: config.topics,
        validator: Some(validator(keys)),
    };
    let registry = Registry::default();
    let (tx, rx) = mpsc::channel();
    let handle = node::spawn(spec, registry.clone(), tx)?;
    let commands = handle.commands.clone();
    drop(stdin);
    // Ends with stdin: the node then stops, as the scenario went away.
    thread::spawn(move || {
        for line in io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            match serde_json::from_str::<Command>(&line) {
                Ok(c) => {
                    if commands.send(c).is_err() {
                        break;
                    }
                }
                Err(e) => {
                    tracing::error!("bad command on stdin: {e}");
                    break;
                }
            }
        }
    });
    let mut out = io::stdout().lock();
    let mut write = |line: &Line| -> anyhow::Result<()> {
        serde_json::to_writer(&mut out, line)?;
        out.write_all(b"\n")?;
        Ok(out.flush()?)
    };
    for report in rx {
        write(&Line::Report(report))?;
    }
    let counts = handle.join()?;
    let sides = registry.sides().iter().map(|s| Side::of(s)).collect();
    write(&Line::Done { counts, sides })
}
