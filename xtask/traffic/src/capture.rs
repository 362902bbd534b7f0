//! Live capture with libpcap (through the `pcap` crate) on its own thread, and the rewrap of an
//! Ethernet capture into BSD loopback (DLT_NULL) framing.

use std::{
    io,
    os::fd::AsRawFd,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, anyhow, ensure};
use pcap::{Active, Capture, Linktype, Packet, PacketHeader, Precision};

use crate::netns;

/// What to capture and where to write it.
pub struct CaptureSpec {
    /// Interface name (`lo`, `any`, a veth or tun device).
    pub device: String,
    /// Namespace the interface lives in, if not the current one.
    pub netns: Option<String>,
    /// Link-layer header type to ask libpcap for, if not the device's default.
    pub linktype: Option<Linktype>,
    /// Timestamp precision of the capture and the file.
    pub precision: Precision,
    /// BPF filter.
    pub filter: String,
    /// pcap file to write.
    pub out: PathBuf,
}

impl CaptureSpec {
    /// The loopback of namespace `netns`, microsecond timestamps, the device's link type.
    pub fn loopback(netns: &str, filter: &str, out: PathBuf) -> CaptureSpec {
        CaptureSpec {
            device: "lo".into(),
            netns: Some(netns.into()),
            linktype: None,
            precision: Precision::Micro,
            filter: filter.into(),
            out,
        }
    }
}

/// What libpcap reported at the end of a capture.
pub struct CaptureStats {
    /// Packets written to the file.
    pub packets: u64,
    /// `ps_recv`: packets the kernel passed to libpcap.
    pub received: u32,
    /// `ps_drop`: packets dropped for lack of buffer space.
    pub dropped: u32,
    /// `ps_ifdrop`: packets dropped by the interface.
    pub if_dropped: u32,
    /// The link-layer header type of the file.
    pub linktype: Linktype,
}

/// A capture running on its own thread.
pub struct Running {
    stop: Arc<AtomicBool>,
    thread: thread::JoinHandle<anyhow::Result<CaptureStats>>,
}

/// Largest IPv4 packet (65,535) plus the largest link-layer header we capture (SLL2: 20,
/// 802.1Q Ethernet: 18), rounded up; a larger snaplen only makes libpcap's ring hold fewer packets.
const SNAPLEN: i32 = 65_600;
/// How long to wait for packets before looking at the stop flag again.
const POLL_MS: i32 = 100;
/// How often the file is flushed, so that a process killed mid-capture leaves a readable file
/// missing at most this much of the end.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// How long draining may take once stop was asked for.
const DRAIN_LIMIT: Duration = Duration::from_secs(5);

/// Opens the capture and returns once libpcap is capturing, so nothing sent afterwards is missed.
pub fn start(spec: CaptureSpec) -> anyhow::Result<Running> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let (ready, is_ready) = mpsc::channel();
    let thread = thread::Builder::new()
        .name("capture".into())
        .spawn(move || capture(&spec, &flag, &ready))?;
    match is_ready.recv() {
        Ok(()) => Ok(Running { stop, thread }),
        Err(_) => Err(thread
            .join()
            .map_err(|_| anyhow!("capture thread panicked"))?
            .err()
            .unwrap_or_else(|| anyhow!("capture stopped before it started"))),
    }
}

impl Running {
    /// Reads what is still buffered, stops, and returns libpcap's statistics.
    pub fn stop(self) -> anyhow::Result<CaptureStats> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread
            .join()
            .map_err(|_| anyhow!("capture thread panicked"))?
    }
}

fn capture(
    spec: &CaptureSpec,
    stop: &AtomicBool,
    ready: &mpsc::Sender<()>,
) -> anyhow::Result<CaptureStats> {
    if let Some(ns) = &spec.netns {
        netns::enter(ns)?;
    }
    let mut cap = Capture::from_device(spec.device.as_str())?
        .promisc(false)
        .snaplen(SNAPLEN)
        .buffer_size(64 << 20)
        .immediate_mode(true)
        .precision(spec.precision)
        .open()
        .with_context(|| format!("open capture on {}", spec.device))?
        .setnonblock()?;
    if let Some(linktype) = spec.linktype {
        cap.set_datalink(linktype)
            .with_context(|| format!("select link type {linktype:?} on {}", spec.device))?;
    }
    cap.filter(&spec.filter, true)
        .with_context(|| format!("filter {:?}", spec.filter))?;
    let mut file = cap
        .savefile(&spec.out)
        .with_context(|| format!("create {}", spec.out.display()))?;
    file.flush()?;
    ready.send(())?;

    let mut packets = 0;
    let mut stopping_since = None;
    let mut flushed = Instant::now();
    loop {
        match cap.next_packet() {
            Ok(packet) => {
                file.write(&packet);
                packets += 1;
            }
            Err(pcap::Error::TimeoutExpired) if stop.load(Ordering::SeqCst) => break,
            Err(pcap::Error::TimeoutExpired) => wait_readable(&cap)?,
            Err(e) => return Err(e).context("read capture"),
        }
        if flushed.elapsed() >= FLUSH_EVERY {
            file.flush()?;
            flushed = Instant::now();
        }
        if stop.load(Ordering::SeqCst) {
            let since = *stopping_since.get_or_insert_with(Instant::now);
            ensure!(
                since.elapsed() < DRAIN_LIMIT,
                "capture did not drain within {DRAIN_LIMIT:?}"
            );
        }
    }
    file.flush()?;
    let stats = cap.stats()?;
    Ok(CaptureStats {
        packets,
        received: stats.received,
        dropped: stats.dropped,
        if_dropped: stats.if_dropped,
        linktype: cap.get_datalink(),
    })
}

/// Waits until the (non-blocking) capture has packets or [`POLL_MS`] passed.
fn wait_readable(cap: &Capture<Active>) -> anyhow::Result<()> {
    let mut fd = libc::pollfd {
        fd: cap.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: `fd` is one initialised pollfd.
    let rc = unsafe { libc::poll(&mut fd, 1, POLL_MS) };
    if rc < 0 {
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err).context("poll capture");
        }
    }
    Ok(())
}

/// Length of an Ethernet II header.
const ETHERNET_HEADER_LEN: usize = 14;
/// BSD's `AF_INET`, which every BSD numbers 2.
const BSD_AF_INET: u32 = 2;

/// Rewrites an Ethernet capture of IPv4 packets as DLT_NULL (a 4-byte host-order address
/// family instead of the Ethernet header), keeping timestamps. Returns the packet count.
pub fn rewrap_null(input: &Path, output: &Path) -> anyhow::Result<u64> {
    let mut source =
        Capture::from_file(input).with_context(|| format!("open {}", input.display()))?;
    ensure!(
        source.get_datalink() == Linktype::ETHERNET,
        "{} is not an Ethernet capture",
        input.display()
    );
    let mut file = Capture::dead(Linktype::NULL)?
        .savefile(output)
        .with_context(|| format!("create {}", output.display()))?;
    let mut packets = 0;
    let mut frame = Vec::new();
    loop {
        let packet = match source.next_packet() {
            Ok(packet) => packet,
            Err(pcap::Error::NoMorePackets) => break,
            Err(e) => return Err(e).context("read capture"),
        };
        let data = packet.data;
        ensure!(
            data.len() > ETHERNET_HEADER_LEN && data[12..14] == [0x08, 0x00],
            "packet {} is not Ethernet + IPv4",
            packets + 1
        );
        frame.clear();
        frame.extend_from_slice(&BSD_AF_INET.to_ne_bytes());
        frame.extend_from_slice(&data[ETHERNET_HEADER_LEN..]);
        let shrink = |n: u32| n - (ETHERNET_HEADER_LEN as u32) + 4;
        let header = PacketHeader {
            ts: packet.header.ts,
            caplen: shrink(packet.header.caplen),
            len: shrink(packet.header.len),
        };
        file.write(&Packet::new(&header, &frame));
        packets += 1;
    }
    file.flush()?;
    Ok(packets)
}

#[cfg(test)]
mod tests {
    use std::net::UdpSocket;

    use super::*;

    /// What a capture wrote must be readable while it still runs, so that a process killed
    /// mid-capture keeps it: as root, one UDP datagram on a namespace's loopback is on disk
    /// within [`FLUSH_EVERY`] (and a bit).
    #[test]
    fn a_running_capture_reaches_the_disk_within_a_second() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: capturing in a network namespace needs root");
            return;
        }
        let ns = format!("capflush{}", std::process::id());
        let _namespaces = netns::Namespaces::create(&[&ns]).expect("namespace");
        let out = std::env::temp_dir().join(format!("{ns}.pcap"));
        let running = start(CaptureSpec::loopback(&ns, "udp", out.clone())).expect("capture");
        let sender = ns.clone();
        thread::spawn(move || -> anyhow::Result<()> {
            netns::enter(&sender)?;
            let socket = UdpSocket::bind("127.0.0.1:0")?;
            socket.send_to(b"kept", "127.0.0.1:9")?;
            Ok(())
        })
        .join()
        .expect("sender thread")
        .expect("send a datagram");
        thread::sleep(FLUSH_EVERY + Duration::from_millis(300));

        let on_disk = Capture::from_file(&out).map(|mut cap| {
            let mut packets = 0;
            while cap.next_packet().is_ok() {
                packets += 1;
            }
            packets
        });
        let stats = running.stop().expect("stop");
        std::fs::remove_file(&out).expect("remove the capture");
        assert_eq!(
            on_disk.ok(),
            Some(1),
            "packets on disk before the capture stopped"
        );
        assert_eq!(stats.packets, 1);
    }
}
