//! Records shared by the eBPF probe and userspace, `#[repr(C)]` so both read the same bytes.
//!
//! The probe counts every packet per (socket cookie, direction) in [`Counts`], with the socket's
//! [`Owner`] once known, and sends the first [`SNAP`] bytes of some packets (see [`HEAD_BYTES`])
//! as [`PacketEvent`]s; sockets reaching TCP_CLOSE are announced by [`CloseEvent`]s on the same
//! ring buffer. Packets of sockets the counters have no room for are counted per process
//! ([`ProcessKey`]), or, with no owner known, per direction only.
#![no_std]

/// Packet bytes (from the IP header) copied into one [`PacketEvent`].
pub const SNAP: usize = 2048;
/// A TCP socket's packets are sampled, per direction, until this many bytes have been copied;
/// later packets are only counted (the default; userspace may set another at load time). UDP
/// and other packets are always sampled.
pub const HEAD_BYTES: u32 = 64 * 1024;
/// Most sockets counted at once (the default; userspace may size the map at load time);
/// packets of further sockets are counted per process.
pub const MAX_SOCKETS: u32 = 65_536;
/// Most (process, direction) pairs counted for sockets the socket counters had no room for.
pub const MAX_PROCESSES: u32 = 4096;
/// Size of the ring buffer that carries events, bytes (a power of two; the default, as above).
pub const RING_BYTES: u32 = 16 * 1024 * 1024;
/// Userspace is woken once this many bytes of events wait (it also polls every 50 ms), so a
/// busy socket does not cost a wakeup per packet.
pub const WAKEUP_BYTES: u64 = 256 * 1024;

/// `Key::direction` of packets a socket received.
pub const INGRESS: u32 = 0;
/// `Key::direction` of packets a socket sent.
pub const EGRESS: u32 = 1;

/// `EventHeader::kind` of a [`PacketEvent`].
pub const EVENT_PACKET: u32 = 1;
/// `EventHeader::kind` of a [`CloseEvent`].
pub const EVENT_CLOSE: u32 = 2;

/// Index in the `STATS` array: events the ring buffer had no room for.
pub const STAT_RING_DROPS: u32 = 0;
/// Index in the `STATS` array: packets of sockets the `COUNTS` map had no room for (counted
/// per process, or without an owner).
pub const STAT_MAP_FULL: u32 = 1;
/// Length of the `STATS` array.
pub const STATS_LEN: u32 = 2;

/// Key of the `COUNTS` map: one socket, one direction.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Key {
    /// The kernel's socket cookie (`bpf_get_socket_cookie`), unique for the boot.
    pub cookie: u64,
    /// [`INGRESS`] or [`EGRESS`].
    pub direction: u32,
    pub _pad: u32,
}

/// Value of the `COUNTS` map, updated atomically by the probe.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Σ IP lengths (`skb->len` at the cgroup hook) of every packet, and the packets. A large
    /// (GSO) packet that its device splits in software counts as the segments on the wire: its
    /// length plus the IP and transport headers of each segment past the first.
    pub bytes: u64,
    pub packets: u64,
    /// Bytes and packets on the wire that no event carries: packets whose event did not reach
    /// the ring buffer (past the head, or no room), and the extra segment headers of packets
    /// split in software. Counted apart rather than as a difference, so a reader never sees a
    /// packet between being counted and being sampled.
    pub unsampled_bytes: u64,
    pub unsampled_packets: u64,
    /// Packet bytes copied into events so far (compared with [`HEAD_BYTES`]).
    pub copied: u64,
    /// IP protocol of the socket's first packet.
    pub protocol: u32,
    /// [`OWNED`] once `owner` is filled, [`INHERITED`] while it is the listener's that an
    /// accepted socket inherited (until a process sends or receives on it); then only the head
    /// budget decides sampling.
    pub owned: u32,
    /// Who owns the socket, once known.
    pub owner: Owner,
}

/// Who owns a socket: the process that created it (or, for a socket created before the probe
/// started, the first that sent or received on it); an accepted socket inherits its listener's.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Owner {
    /// Process id (the kernel's tgid).
    pub pid: u32,
    pub _pad: u32,
    /// cgroup v2 id of the process (the inode number of its cgroup directory).
    pub cgroup_id: u64,
    /// The thread's command name, NUL-padded.
    pub comm: [u8; 16],
}

/// `Counts::owned` of a socket whose owner was recorded in process context.
pub const OWNED: u32 = 1;
/// `Counts::owned` of an accepted socket whose owner is, so far, its listener's.
pub const INHERITED: u32 = 2;

/// Key of the `FALLBACK` map: packets of a process's sockets the `COUNTS` map had no room for.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct ProcessKey {
    pub owner: Owner,
    /// [`INGRESS`] or [`EGRESS`].
    pub direction: u32,
    pub _pad: u32,
}

/// Bytes (IP lengths, as in [`Counts::bytes`]) and packets.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    pub bytes: u64,
    pub packets: u64,
}

/// First bytes of every ring buffer event.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventHeader {
    /// [`EVENT_PACKET`] or [`EVENT_CLOSE`].
    pub kind: u32,
    /// [`INGRESS`] or [`EGRESS`] (packets only).
    pub direction: u32,
    pub cookie: u64,
    /// CLOCK_MONOTONIC time, ns.
    pub ts_ns: u64,
}

/// A packet: its IP length and its first bytes, from the IP header on. Only the header and the
/// `copied` bytes of `data` are sent: records are as long as the packet head they carry.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PacketEvent {
    pub header: EventHeader,
    /// IP length of the packet.
    pub len: u32,
    /// Bytes of `data` filled.
    pub copied: u32,
    pub data: [u8; SNAP],
}

/// Where the probe finds, in this kernel's own structures, what tells whether the device a socket
/// sends through splits its large (GSO) packets in software (the kernel's own test is
/// `gso_features_check` and `skb_gso_ok` in net/core/dev.c): byte offsets and feature bit
/// numbers from the kernel's BTF, written into the probe at load time (the probe has no CO-RE
/// relocations). All zero when unknown: then no packet is taken as split.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelLayout {
    /// `struct sock` → `sk_dst_cache` (the route a connected socket sends on).
    pub sock_dst: u32,
    /// `struct dst_entry` → `dev` (the route's output device).
    pub dst_dev: u32,
    /// `struct net_device` → `features` (a 64-bit `netdev_features_t`).
    pub dev_features: u32,
    /// `struct net_device` → `ifindex`.
    pub dev_ifindex: u32,
    /// `struct net_device` → `gso_max_size` (IPv6, and IPv4 on kernels before 6.3) and
    /// `gso_ipv4_max_size`, both `u32`: a packet this long or longer with its link header is
    /// split in software whatever the features say.
    pub dev_gso_max_size: u32,
    pub dev_gso_ipv4_max_size: u32,
    /// `struct net_device` → `gso_max_segs` (`u16`): so is a packet of more segments.
    pub dev_gso_max_segs: u32,
    /// `struct net_device` → `hard_header_len` (`u16`), the link header's length.
    pub dev_hard_header_len: u32,
    /// Bit numbers in `features` of TCP over IPv4 and IPv6 segmentation (`NETIF_F_TSO_BIT`,
    /// `NETIF_F_TSO6_BIT`) and UDP segmentation (`NETIF_F_GSO_UDP_L4_BIT`).
    pub tso_bit: u32,
    pub tso6_bit: u32,
    pub udp_bit: u32,
    pub _pad: u32,
}

/// A socket reached TCP_CLOSE: its counters are final.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct CloseEvent {
    pub header: EventHeader,
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: plain `#[repr(C)]` integers, every bit pattern valid, padding named.
    unsafe impl aya::Pod for super::Key {}
    unsafe impl aya::Pod for super::Counts {}
    unsafe impl aya::Pod for super::Owner {}
    unsafe impl aya::Pod for super::ProcessKey {}
    unsafe impl aya::Pod for super::Traffic {}
    unsafe impl aya::Pod for super::KernelLayout {}
}
