//! Network namespaces for the link-layer variants that loopback cannot produce: a veth pair whose
//! frames carry 802.1Q tags, and a pair of TUN devices (libpcap gives DLT_RAW on those).
//!
//! This kernel has neither 8021q nor bridge VLAN filtering, so the tags are pushed on egress and
//! popped on ingress by two tiny tc (tcx) eBPF programs that call the kernel's
//! `bpf_skb_vlan_push` / `bpf_skb_vlan_pop`; libpcap puts the tag back into the captured frame.

use std::{
    fs::{File, OpenOptions},
    io::{self, Read, Write},
    mem,
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
};

use anyhow::{Context as _, anyhow, bail, ensure};

/// Moves the calling thread into the named network namespace (`ip netns` naming).
pub fn enter(name: &str) -> anyhow::Result<()> {
    let path = format!("/run/netns/{name}");
    let ns = File::open(&path).with_context(|| format!("open {path}"))?;
    // SAFETY: setns only reads the fd, which stays open for the duration of the call.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        return Err(io::Error::last_os_error()).with_context(|| format!("setns into {name}"));
    }
    Ok(())
}

/// Runs `f` on a short-lived thread inside the named namespace.
fn in_netns<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> anyhow::Result<T> {
    let name = name.to_owned();
    thread::spawn(move || {
        enter(&name)?;
        f()
    })
    .join()
    .map_err(|_| anyhow!("namespace helper thread panicked"))?
}

/// Runs `ip` with these arguments and fails on a non-zero exit.
pub fn ip(args: &[&str]) -> anyhow::Result<()> {
    let status = Command::new("ip")
        .args(args)
        .status()
        .context("run ip (iproute2)")?;
    ensure!(status.success(), "ip {} failed: {status}", args.join(" "));
    Ok(())
}

/// Waits until something in namespace `ns` listens on `port` (`udp` or `tcp`), for servers
/// started as other processes.
pub fn wait_for_listener(ns: &str, proto: &str, port: u16) -> anyhow::Result<()> {
    let flags = if proto == "udp" { "-Hlun" } else { "-Hltn" };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                ns,
                "ss",
                flags,
                "sport",
                &format!("= :{port}"),
            ])
            .output()
            .context("run ss (iproute2)")?;
        if !out.stdout.is_empty() {
            return Ok(());
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "nothing listens on {proto} port {port} in {ns}"
        );
        thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Network namespaces that are deleted (with everything in them) when this is dropped.
pub struct Namespaces(Vec<String>);

impl Namespaces {
    /// Creates the namespaces (replacing leftovers of an earlier run) with `lo` up.
    pub fn create(names: &[&str]) -> anyhow::Result<Self> {
        let mut created = Namespaces(Vec::new());
        for name in names {
            if std::path::Path::new("/run/netns").join(name).exists() {
                ip(&["netns", "delete", name])?;
            }
            ip(&["netns", "add", name])?;
            created.0.push((*name).to_owned());
            ip(&["-n", name, "link", "set", "lo", "up"])?;
        }
        Ok(created)
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for name in &self.0 {
            if let Err(e) = ip(&["netns", "delete", name]) {
                eprintln!("traffic: could not delete namespace {name}: {e:#}");
            }
        }
    }
}

/// One eBPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Clone, Copy)]
struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

/// `BPF_ALU64 | BPF_MOV | BPF_K`: dst = imm.
const fn mov(dst: u8, imm: i32) -> Insn {
    Insn {
        code: 0xb7,
        regs: dst,
        off: 0,
        imm,
    }
}

/// `BPF_JMP | BPF_CALL`: r0 = helper(r1..r5).
const fn call(helper: i32) -> Insn {
    Insn {
        code: 0x85,
        regs: 0,
        off: 0,
        imm: helper,
    }
}

/// `BPF_JMP | BPF_EXIT`: return r0.
const EXIT: Insn = Insn {
    code: 0x95,
    regs: 0,
    off: 0,
    imm: 0,
};
const BPF_FUNC_SKB_VLAN_PUSH: i32 = 18;
const BPF_FUNC_SKB_VLAN_POP: i32 = 19;
const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_TCX_INGRESS: u32 = 46;
const BPF_TCX_EGRESS: u32 = 47;
/// `TCX_PASS`: let the packet continue.
const TCX_PASS: i32 = 0;

/// The leading fields of `union bpf_attr` for `BPF_PROG_LOAD`.
#[repr(C)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// The leading fields of `union bpf_attr` for `BPF_LINK_CREATE` with a tcx target.
#[repr(C)]
struct LinkCreateAttr {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
    relative_fd: u32,
    pad: u32,
    expected_revision: u64,
}

fn bpf<A>(cmd: libc::c_long, attr: &A) -> io::Result<OwnedFd> {
    // SAFETY: `attr` is a properly initialised repr(C) prefix of `union bpf_attr`; the kernel
    // reads `size_of::<A>()` bytes and zero-extends the rest.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr as *const A, mem::size_of::<A>()) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let fd = i32::try_from(fd).map_err(io::Error::other)?;
    // SAFETY: the kernel just returned this fd to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn load(program: &[Insn], attach_type: u32) -> anyhow::Result<OwnedFd> {
    let license = c"GPL";
    let mut log = vec![0u8; 64 * 1024];
    let attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_SCHED_CLS,
        insn_cnt: u32::try_from(program.len())?,
        insns: program.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: u32::try_from(log.len())?,
        log_buf: log.as_mut_ptr() as u64,
        kern_version: 0,
        prog_flags: 0,
        prog_name: *b"wakuprof_vlan\0\0\0",
        prog_ifindex: 0,
        expected_attach_type: attach_type,
    };
    bpf(BPF_PROG_LOAD, &attr).with_context(|| {
        let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
        format!(
            "load tc program: {}",
            String::from_utf8_lossy(&log[..end]).trim()
        )
    })
}

/// Tags every frame leaving `ifname` with VLAN `vid` and untags every frame arriving on it.
/// Returns the eBPF links; dropping them detaches the programs.
fn vlan_links(ifname: &str, vid: u16) -> anyhow::Result<Vec<OwnedFd>> {
    let name = std::ffi::CString::new(ifname)?;
    // SAFETY: `name` is a valid NUL-terminated string.
    let ifindex = unsafe { libc::if_nametoindex(name.as_ptr()) };
    ensure!(ifindex != 0, "no interface {ifname}");
    let push = [
        mov(2, i32::from(0x8100u16.to_be())),
        mov(3, i32::from(vid)),
        call(BPF_FUNC_SKB_VLAN_PUSH),
        mov(0, TCX_PASS),
        EXIT,
    ];
    let pop = [call(BPF_FUNC_SKB_VLAN_POP), mov(0, TCX_PASS), EXIT];
    let mut links = Vec::new();
    for (program, attach_type) in [(&push[..], BPF_TCX_EGRESS), (&pop[..], BPF_TCX_INGRESS)] {
        let prog = load(program, attach_type)?;
        let attr = LinkCreateAttr {
            prog_fd: u32::try_from(prog.as_raw_fd())?,
            target_ifindex: ifindex,
            attach_type,
            flags: 0,
            relative_fd: 0,
            pad: 0,
            expected_revision: 0,
        };
        links.push(
            bpf(BPF_LINK_CREATE, &attr)
                .with_context(|| format!("attach tcx program to {ifname}"))?,
        );
    }
    Ok(links)
}

/// Two namespaces joined by a veth pair whose frames carry an 802.1Q tag on the wire.
pub struct VlanPair {
    _links: Vec<OwnedFd>,
    _namespaces: Namespaces,
}

impl VlanPair {
    /// Creates `ns[i]` holding veth `ifnames[i]` with address `addrs[i]`/24, both ends tagging
    /// with `vid`.
    pub fn create(
        ns: [&str; 2],
        ifnames: [&str; 2],
        addrs: [&str; 2],
        vid: u16,
    ) -> anyhow::Result<Self> {
        let namespaces = Namespaces::create(&ns)?;
        ip(&[
            "link", "add", ifnames[0], "netns", ns[0], "type", "veth", "peer", "name", ifnames[1],
            "netns", ns[1],
        ])?;
        let mut links = Vec::new();
        for i in 0..2 {
            let cidr = format!("{}/24", addrs[i]);
            ip(&["-n", ns[i], "addr", "add", &cidr, "dev", ifnames[i]])?;
            ip(&["-n", ns[i], "link", "set", ifnames[i], "up"])?;
            let ifname = ifnames[i].to_owned();
            links.extend(in_netns(ns[i], move || vlan_links(&ifname, vid))?);
        }
        Ok(VlanPair {
            _links: links,
            _namespaces: namespaces,
        })
    }
}

/// `TUNSETIFF` = `_IOW('T', 202, int)`.
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;

/// `struct ifreq` with the flags member of its union.
#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    pad: [u8; 22],
}

fn open_tun(ifname: &str) -> anyhow::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/net/tun")
        .context("open /dev/net/tun")?;
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: libc::c_short::try_from(libc::IFF_TUN | libc::IFF_NO_PI)?,
        pad: [0; 22],
    };
    ensure!(
        ifname.len() < libc::IFNAMSIZ,
        "interface name {ifname} too long"
    );
    req.name[..ifname.len()].copy_from_slice(ifname.as_bytes());
    // SAFETY: TUNSETIFF reads and writes one `struct ifreq`, which `req` is.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, &mut req as *mut IfReq) };
    if rc != 0 {
        return Err(io::Error::last_os_error())
            .with_context(|| format!("create tun device {ifname}"));
    }
    Ok(file)
}

/// Copies IP packets between two TUN devices until stopped: a point-to-point wire.
fn forward(a: File, b: File, stop: &AtomicBool) -> anyhow::Result<()> {
    let mut files = [a, b];
    let mut buf = vec![0u8; 65536];
    while !stop.load(Ordering::SeqCst) {
        let mut fds = files.each_ref().map(|f| libc::pollfd {
            fd: f.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        });
        // SAFETY: `fds` is an array of two initialised pollfd structs.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), 2, 50) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(err).context("poll tun devices");
        }
        for (from, fd) in fds.iter().enumerate() {
            if fd.revents & libc::POLLIN != 0 {
                let len = files[from].read(&mut buf).context("read tun")?;
                files[1 - from]
                    .write_all(&buf[..len])
                    .context("write tun")?;
            }
        }
    }
    Ok(())
}

/// Two namespaces joined by a pair of TUN devices (no link-layer header at all) and a
/// userspace thread that passes every packet from one device to the other.
pub struct TunPair {
    stop: Arc<AtomicBool>,
    wire: Option<thread::JoinHandle<anyhow::Result<()>>>,
    _namespaces: Namespaces,
}

impl TunPair {
    /// Creates `ns[i]` holding TUN device `ifnames[i]` with address `addrs[i]` peered to the other.
    pub fn create(ns: [&str; 2], ifnames: [&str; 2], addrs: [&str; 2]) -> anyhow::Result<Self> {
        let namespaces = Namespaces::create(&ns)?;
        let mut files = Vec::new();
        for i in 0..2 {
            let ifname = ifnames[i].to_owned();
            files.push(in_netns(ns[i], move || open_tun(&ifname))?);
            ip(&[
                "-n",
                ns[i],
                "addr",
                "add",
                addrs[i],
                "peer",
                addrs[1 - i],
                "dev",
                ifnames[i],
            ])?;
            ip(&["-n", ns[i], "link", "set", ifnames[i], "up"])?;
        }
        let [a, b]: [File; 2] = files
            .try_into()
            .map_err(|_| anyhow!("two tun devices expected"))?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let wire = thread::Builder::new()
            .name("tun-wire".into())
            .spawn(move || forward(a, b, &flag))?;
        Ok(TunPair {
            stop,
            wire: Some(wire),
            _namespaces: namespaces,
        })
    }

    /// Stops the wire and reports whether it failed.
    pub fn close(mut self) -> anyhow::Result<()> {
        self.stop.store(true, Ordering::SeqCst);
        match self.wire.take().map(thread::JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => bail!("tun wire thread panicked"),
            None => Ok(()),
        }
    }
}

impl Drop for TunPair {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(wire) = self.wire.take() {
            let _ = wire.join();
        }
    }
}
