//! The eBPF probe, loaded from the object embedded at build time: attaches its programs
//! (cgroup_skb on the cgroup v2 root, socket-owner hooks, the TCP state tracepoint), reads its
//! counters and drains its ring buffer. Dropping a [`Probe`] detaches everything (the kernel
//! also detaches the links when the process dies).

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::PathBuf;

use aya::maps::{Array, HashMap, MapData, RingBuf};
use aya::programs::{BtfTracePoint, CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, CgroupSock};
use aya::{Btf, Ebpf, EbpfLoader};
use wakuprof_probe_common::{
    CloseEvent, Counts, EGRESS, EVENT_CLOSE, EVENT_PACKET, EventHeader, HEAD_BYTES, INGRESS,
    KernelLayout, Key, MAX_SOCKETS, OWNED, Owner, PacketEvent, ProcessKey, RING_BYTES,
    STAT_MAP_FULL, STAT_RING_DROPS, Traffic,
};

use super::btf::KernelBtf;
use super::caps;
use crate::Error;

/// The probe object, when this binary was built with the eBPF toolchain.
#[cfg(probe_embedded)]
static OBJECT: Option<&[u8]> = Some(aya::include_bytes_aligned!(env!("WAKUPROF_PROBE_OBJECT")));
#[cfg(not(probe_embedded))]
static OBJECT: Option<&[u8]> = None;

/// What to say when the binary has no probe.
pub const NOT_BUILT: &str = "this wakuprof was built without the probe (no bpf-linker at build time); run `cargo xtask setup`, rebuild, or use --source pcap";

/// Whether this binary carries the probe.
pub fn embedded() -> bool {
    OBJECT.is_some()
}

/// One ring buffer event.
pub enum Event<'a> {
    /// A packet of socket `header.cookie`: its IP length and first bytes.
    Packet {
        header: EventHeader,
        len: u32,
        data: &'a [u8],
    },
    /// Socket `cookie` reached TCP_CLOSE.
    Close { cookie: u64 },
}

/// The probe's own counters.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct ProbeStats {
    /// Packet samples the ring buffer had no room for (their bytes are still counted).
    pub ring_drops: u64,
    /// Packets of sockets the socket counters had no room for (counted per process instead).
    pub map_full: u64,
    /// Bytes and packets of those packets counted per process, by direction (ingress, egress).
    pub per_process: [(u64, u64); 2],
    /// Bytes and packets of those packets with no known owner, by direction.
    pub overflow: [(u64, u64); 2],
}

/// How large the probe's maps are made at load time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeSizes {
    /// Sockets counted at once.
    pub sockets: u32,
    /// Bytes of the ring buffer that carries packet samples (a power of two, at least a page).
    pub ring_bytes: u32,
    /// Bytes of each TCP socket direction sampled for the decoders; later packets are only
    /// counted, with their connection's label.
    pub head_bytes: u32,
}

impl Default for ProbeSizes {
    fn default() -> ProbeSizes {
        ProbeSizes {
            sockets: MAX_SOCKETS,
            ring_bytes: RING_BYTES,
            head_bytes: HEAD_BYTES,
        }
    }
}

impl ProbeSizes {
    /// Checks what the kernel requires of the sizes.
    pub fn check(&self) -> Result<(), Error> {
        // SAFETY: no arguments.
        let page = u32::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        if !self.ring_bytes.is_power_of_two() || self.ring_bytes < page {
            return Err(Error::Probe(format!(
                "the probe's ring buffer (--probe-ring) must be a power of two of at least {page} bytes, not {}",
                self.ring_bytes
            )));
        }
        if self.sockets == 0 || self.sockets > u32::MAX / 2 {
            return Err(Error::Probe(format!(
                "the probe's socket map (--probe-sockets) must hold between 1 and {} sockets, not {}",
                u32::MAX / 2,
                self.sockets
            )));
        }
        Ok(())
    }
}

/// Socket owners as the probe's counters record them, by socket cookie.
pub struct Owners<'a>(&'a HashMap<MapData, Key, Counts>);

impl Owners<'_> {
    /// The recorded owner of a socket, and whether it is final: an accepted socket has its
    /// listener's until a process sends or receives on it.
    pub fn get(&self, cookie: u64) -> Option<(Owner, bool)> {
        [INGRESS, EGRESS].into_iter().find_map(|direction| {
            let key = Key {
                cookie,
                direction,
                _pad: 0,
            };
            self.0
                .get(&key, 0)
                .ok()
                .filter(|c| c.owned != 0)
                .map(|c| (c.owner, c.owned == OWNED))
        })
    }
}

/// The loaded, attached probe.
pub struct Probe {
    counts: HashMap<MapData, Key, Counts>,
    fallback: HashMap<MapData, ProcessKey, Traffic>,
    /// Per direction, what per-process counters held when they were forgotten.
    forgotten: [(u64, u64); 2],
    overflow: Array<MapData, Traffic>,
    stats: Array<MapData, u64>,
    ring: RingBuf<MapData>,
    /// Where the cgroup programs are attached.
    pub cgroup_root: PathBuf,
    /// Holds the programs and their links; dropped last, which detaches them.
    _ebpf: Ebpf,
}

/// Programs attached to the cgroup v2 root, with how.
const SKB_PROGRAMS: [(&str, CgroupSkbAttachType); 2] = [
    ("count_ingress", CgroupSkbAttachType::Ingress),
    ("count_egress", CgroupSkbAttachType::Egress),
];
/// BTF tracepoints, by program name and tracepoint.
const TRACEPOINTS: [(&str, &str); 3] = [
    ("owner_at_send", "sock_send_length"),
    ("owner_at_recv", "sock_recv_length"),
    ("socket_state", "inet_sock_set_state"),
];

impl Probe {
    /// Loads the probe with maps of `sizes` and attaches every program; errors name the missing
    /// capability or the step that failed. Nothing stays attached when this fails.
    pub fn load(sizes: ProbeSizes) -> Result<Probe, Error> {
        let object = OBJECT.ok_or_else(|| Error::Probe(NOT_BUILT.to_string()))?;
        sizes.check()?;
        caps::require(caps::PROBE)?;
        raise_memlock();
        let cgroup_root = cgroup2_root()?;
        let cgroup = File::open(&cgroup_root)
            .map_err(|e| Error::Probe(format!("{}: {e}", cgroup_root.display())))?;
        let layout = KernelBtf::read()
            .and_then(|btf| btf.layout().map_err(Error::Probe))
            .unwrap_or_else(|e| {
                tracing::warn!(
                    "{e}: packets that a device without segmentation offload splits count as the socket sent them (short by a header per extra segment)"
                );
                KernelLayout::default()
            });
        let mut ebpf = EbpfLoader::new()
            .set_global("LAYOUT", &layout, true)
            .set_global("HEAD", &sizes.head_bytes, true)
            .set_max_entries("COUNTS", sizes.sockets * 2)
            .set_max_entries("EVENTS", sizes.ring_bytes)
            // Socket-local storage (`OWNER_OF`) is only used by the programs.
            .allow_unsupported_maps()
            .load(object)
            .map_err(|e| load_error("loading the object", &e))?;
        for (name, attach) in SKB_PROGRAMS {
            let prog: &mut CgroupSkb = program(&mut ebpf, name)?;
            prog.load().map_err(|e| load_error(name, &e))?;
            prog.attach(&cgroup, attach, CgroupAttachMode::Single)
                .map_err(|e| load_error(name, &e))?;
        }
        let prog: &mut CgroupSock = program(&mut ebpf, "owner_at_create")?;
        prog.load().map_err(|e| load_error("owner_at_create", &e))?;
        prog.attach(&cgroup, CgroupAttachMode::Single)
            .map_err(|e| load_error("owner_at_create", &e))?;
        let btf = Btf::from_sys_fs()
            .map_err(|e| Error::Probe(format!("kernel BTF (/sys/kernel/btf/vmlinux): {e}")))?;
        for (name, tracepoint) in TRACEPOINTS {
            let prog: &mut BtfTracePoint = program(&mut ebpf, name)?;
            prog.load(tracepoint, &btf)
                .map_err(|e| load_error(name, &e))?;
            prog.attach().map_err(|e| load_error(name, &e))?;
        }
        Ok(Probe {
            counts: map(&mut ebpf, "COUNTS")?,
            fallback: map(&mut ebpf, "FALLBACK")?,
            forgotten: [(0, 0); 2],
            overflow: map(&mut ebpf, "OVERFLOW")?,
            stats: map(&mut ebpf, "STATS")?,
            ring: map(&mut ebpf, "EVENTS")?,
            cgroup_root,
            _ebpf: ebpf,
        })
    }

    /// Waits up to `timeout_ms` for the ring buffer to hold events.
    pub fn wait(&self, timeout_ms: i32) {
        let mut fd = libc::pollfd {
            fd: self.ring.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd; an interrupted or failed poll only ends the wait early.
        unsafe { libc::poll(&mut fd, 1, timeout_ms) };
    }

    /// Hands queued events to `f`, at most `max`; returns how many there were.
    pub fn drain(&mut self, max: usize, mut f: impl FnMut(Event<'_>)) -> usize {
        let mut n = 0;
        while n < max {
            let Some(item) = self.ring.next() else { break };
            n += 1;
            if let Some(event) = parse_event(&item) {
                f(event);
            }
        }
        n
    }

    /// Every socket's counters.
    pub fn counts(&self) -> Vec<(Key, Counts)> {
        self.counts.iter().filter_map(Result::ok).collect()
    }

    /// The probe's record of socket owners.
    pub fn owners(&self) -> Owners<'_> {
        Owners(&self.counts)
    }

    /// Per process and direction: packets of sockets the socket counters had no room for.
    pub fn per_process(&self) -> Vec<(ProcessKey, Traffic)> {
        self.fallback.iter().filter_map(Result::ok).collect()
    }

    /// Forgets a process's per-process counter if it still holds `last` (what was read of it
    /// last); returns whether it was forgotten.
    pub fn forget_process(&mut self, key: &ProcessKey, last: Traffic) -> bool {
        if self.fallback.get(key, 0).ok() != Some(last) || self.fallback.remove(key).is_err() {
            return false;
        }
        if let Some(f) = self.forgotten.get_mut(key.direction as usize) {
            *f = (f.0 + last.bytes, f.1 + last.packets);
        }
        true
    }

    /// Forgets a socket whose counters have been read for the last time.
    pub fn forget(&mut self, cookie: u64) {
        for direction in [INGRESS, EGRESS] {
            let _ = self.counts.remove(&Key {
                cookie,
                direction,
                _pad: 0,
            });
        }
    }

    /// The probe's drop and overflow counters.
    pub fn stats(&self) -> ProbeStats {
        let stat = |i| self.stats.get(&i, 0).unwrap_or(0);
        let over = |d| {
            self.overflow
                .get(&d, 0)
                .map_or((0, 0), |t| (t.bytes, t.packets))
        };
        let mut per_process = self.forgotten;
        for (key, t) in self.per_process() {
            if let Some(p) = per_process.get_mut(key.direction as usize) {
                *p = (p.0 + t.bytes, p.1 + t.packets);
            }
        }
        ProbeStats {
            ring_drops: stat(STAT_RING_DROPS),
            map_full: stat(STAT_MAP_FULL),
            per_process,
            overflow: [over(0), over(1)],
        }
    }
}

fn parse_event(bytes: &[u8]) -> Option<Event<'_>> {
    let header = read::<EventHeader>(bytes)?;
    match header.kind {
        EVENT_PACKET => {
            let len_at = std::mem::offset_of!(PacketEvent, len);
            let len = u32::from_ne_bytes(bytes.get(len_at..len_at + 4)?.try_into().ok()?);
            let copied_at = std::mem::offset_of!(PacketEvent, copied);
            let copied = u32::from_ne_bytes(bytes.get(copied_at..copied_at + 4)?.try_into().ok()?);
            let data_at = std::mem::offset_of!(PacketEvent, data);
            let data = bytes.get(data_at..data_at + copied as usize)?;
            Some(Event::Packet { header, len, data })
        }
        EVENT_CLOSE if bytes.len() >= std::mem::size_of::<CloseEvent>() => Some(Event::Close {
            cookie: header.cookie,
        }),
        _ => None,
    }
}

/// Reads a `#[repr(C)]` record of plain integers from the start of `bytes`.
fn read<T: Copy>(bytes: &[u8]) -> Option<T> {
    (bytes.len() >= std::mem::size_of::<T>())
        // SAFETY: length checked; T is a plain-integer record valid for any bit pattern, read
        // unaligned.
        .then(|| unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

fn program<'a, T>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut T, Error>
where
    &'a mut T: TryFrom<&'a mut aya::programs::Program>,
{
    ebpf.program_mut(name)
        .and_then(|p| p.try_into().ok())
        .ok_or_else(|| Error::Probe(format!("program {name} missing from the object")))
}

fn map<T>(ebpf: &mut Ebpf, name: &str) -> Result<T, Error>
where
    T: TryFrom<aya::maps::Map>,
{
    ebpf.take_map(name)
        .and_then(|m| T::try_from(m).ok())
        .ok_or_else(|| Error::Probe(format!("map {name} missing from the object")))
}

/// A load or attach failure, with the likely cause when the kernel said EPERM.
fn load_error(step: &str, e: &dyn std::error::Error) -> Error {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        message.push_str(": ");
        message.push_str(&s.to_string());
        source = s.source();
    }
    if message.contains("Operation not permitted") {
        message.push_str(&format!(" ({})", caps::HINT));
    }
    Error::Probe(format!("{step}: {message}"))
}

/// Lifts RLIMIT_MEMLOCK, which kernels before 5.11 charge BPF maps to; failure is harmless on
/// newer kernels.
fn raise_memlock() {
    let unlimited = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: a valid rlimit.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &unlimited) } != 0 {
        tracing::debug!("cannot raise RLIMIT_MEMLOCK; fine on kernels from 5.11");
    }
}

/// Where cgroup v2 is mounted, from /proc/mounts.
pub fn cgroup2_root() -> Result<PathBuf, Error> {
    let mounts =
        std::fs::read_to_string("/proc/mounts").map_err(|e| Error::io("/proc/mounts", e))?;
    mounts
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.get(2) == Some(&"cgroup2"))
        .and_then(|f| f.get(1).map(PathBuf::from))
        .ok_or_else(|| {
            Error::Probe("no cgroup v2 hierarchy is mounted (see /proc/mounts); mount one or use --source pcap".into())
        })
}

#[cfg(test)]
mod tests {
    use super::ProbeSizes;

    #[test]
    fn sizes_the_kernel_refuses_are_refused_first() {
        let sized = |sockets, ring_bytes| ProbeSizes {
            sockets,
            ring_bytes,
            ..ProbeSizes::default()
        };
        assert!(ProbeSizes::default().check().is_ok());
        assert!(sized(64, 16 << 10).check().is_ok());
        let ring = sized(64, 10 << 10).check().expect_err("not a power of two");
        assert!(ring.to_string().contains("--probe-ring"), "{ring}");
        assert!(sized(64, 1024).check().is_err(), "under a page");
        assert!(sized(0, 16 << 10).check().is_err(), "no sockets");
    }
}
