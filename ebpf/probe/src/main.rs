//! wakuprof's eBPF probe. cgroup_skb programs on the cgroup v2 root count every packet per
//! (socket cookie, direction) and sample packet heads into a ring buffer; socket owners are
//! recorded in process context (socket creation, sendmsg, recvmsg) in the socket's own storage
//! (which accepted sockets inherit from their listener) and copied into its counters; TCP_CLOSE
//! is announced so userspace can read a socket's last counts and forget it. Packets of sockets
//! the counters have no room for are counted per owning process. A large (GSO) packet leaving
//! by a device that splits it in software counts as the segments on the wire.
#![no_std]
#![no_main]
#![feature(core_intrinsics)]
#![allow(internal_features)]

use core::ffi::c_void;
use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::bindings::{
    BPF_F_CLONE, BPF_F_NO_PREALLOC, BPF_NOEXIST, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP,
    BPF_RB_NO_WAKEUP, BPF_SK_STORAGE_GET_F_CREATE, bpf_map_type::BPF_MAP_TYPE_SK_STORAGE,
};
use aya_ebpf::helpers::{
    bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
    bpf_get_socket_cookie, bpf_ktime_get_ns, bpf_probe_read_kernel, bpf_sk_fullsock,
    bpf_sk_storage_get, bpf_skb_load_bytes,
};
use aya_ebpf::macros::{btf_map, btf_tracepoint, cgroup_skb, cgroup_sock, map};
use aya_ebpf::maps::{Array, HashMap, PerCpuArray, RingBuf};
use aya_ebpf::programs::{BtfTracePointContext, SkBuffContext, SockContext};
use wakuprof_probe_common::{
    CloseEvent, Counts, EGRESS, EVENT_CLOSE, EVENT_PACKET, EventHeader, HEAD_BYTES, INGRESS,
    INHERITED, KernelLayout, Key, MAX_PROCESSES, MAX_SOCKETS, OWNED, Owner, PacketEvent,
    ProcessKey, RING_BYTES, SNAP, STAT_MAP_FULL, STAT_RING_DROPS, STATS_LEN, Traffic, WAKEUP_BYTES,
};

/// Bytes of each TCP socket direction sampled ([`HEAD_BYTES`] unless userspace sets it before
/// the probe is loaded).
#[unsafe(no_mangle)]
static HEAD: u32 = HEAD_BYTES;

/// This kernel's structure layout, written by userspace before the probe is loaded.
#[unsafe(no_mangle)]
static LAYOUT: KernelLayout = KernelLayout {
    sock_dst: 0,
    dst_dev: 0,
    dev_features: 0,
    dev_ifindex: 0,
    dev_gso_max_size: 0,
    dev_gso_ipv4_max_size: 0,
    dev_gso_max_segs: 0,
    dev_hard_header_len: 0,
    tso_bit: 0,
    tso6_bit: 0,
    udp_bit: 0,
    _pad: 0,
};

#[map]
static COUNTS: HashMap<Key, Counts> = HashMap::with_max_entries(MAX_SOCKETS * 2, 0);

/// Packets of sockets that found no room in `COUNTS`, per owning process and direction.
#[map]
static FALLBACK: HashMap<ProcessKey, Traffic> = HashMap::with_max_entries(MAX_PROCESSES * 2, 0);

/// Packets that found no room in `COUNTS` and have no known owner (or no room in `FALLBACK`),
/// by direction.
#[map]
static OVERFLOW: Array<Traffic> = Array::with_max_entries(2, 0);

/// A socket's owner as its storage holds it, with the socket it was recorded for: an accepted
/// socket inherits its listener's (another cookie) until a process sends or receives on it.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Recorded {
    owner: Owner,
    cookie: u64,
}

/// BTF definition of a socket-local storage map (the kernel frees a socket's value with the
/// socket, so it has no size limit) whose values a listener's accepted sockets inherit.
#[repr(C)]
pub struct SocketStorage {
    r#type: *const [i32; BPF_MAP_TYPE_SK_STORAGE as usize],
    key: *const i32,
    value: *const Recorded,
    max_entries: *const [i32; 0],
    map_flags: *const [i32; (BPF_F_NO_PREALLOC | BPF_F_CLONE) as usize],
}

// SAFETY: the fields only describe the map in BTF; nothing reads them.
unsafe impl Sync for SocketStorage {}

/// Each socket's owner, recorded in process context.
#[btf_map]
static OWNER_OF: SocketStorage = SocketStorage {
    r#type: core::ptr::null(),
    key: core::ptr::null(),
    value: core::ptr::null(),
    max_entries: core::ptr::null(),
    map_flags: core::ptr::null(),
};

#[map]
static STATS: Array<u64> = Array::with_max_entries(STATS_LEN, 0);

#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(RING_BYTES, 0);

/// Programs that may be sampling on one CPU at once: a socket's egress in process context, and
/// a softirq's ingress or egress interrupting it.
const SCRATCH_SLOTS: u32 = 4;

/// Where a packet event is assembled before the used part of it is copied into `EVENTS`: a slot
/// per program running on the CPU, so that an interrupting program leaves the event of the one
/// it interrupted whole.
#[map]
static SCRATCH: PerCpuArray<PacketEvent> = PerCpuArray::with_max_entries(SCRATCH_SLOTS, 0);

/// Per CPU: the scratch slots in use (the next program takes the slot of that number).
#[map]
static NESTING: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// IP protocol numbers: TCP (sampled only up to the head budget) and UDP.
const TCP: u8 = 6;
const UDP: u8 = 17;
/// `ETH_P_IP` / `ETH_P_IPV6` as `__sk_buff.protocol` holds them (network byte order).
const ETH_P_IP_BE: u32 = 0x0008;
const ETH_P_IPV6_BE: u32 = 0xdd86;
/// `TCP_CLOSE` in the kernel's TCP state numbering.
const TCP_CLOSE: i32 = 7;

#[cgroup_skb(ingress)]
pub fn count_ingress(ctx: SkBuffContext) -> i32 {
    count(&ctx, INGRESS);
    1
}

#[cgroup_skb(egress)]
pub fn count_egress(ctx: SkBuffContext) -> i32 {
    count(&ctx, EGRESS);
    1
}

#[cgroup_sock(sock_create)]
pub fn owner_at_create(ctx: SockContext) -> i32 {
    // A new socket: nothing counted yet, no owner recorded yet.
    let mut recorded = Recorded {
        owner: current_owner(),
        // SAFETY: the helper takes this program type's context.
        cookie: unsafe { bpf_get_socket_cookie(ctx.sock.cast()) },
    };
    // SAFETY: in this program type the helper takes the context as the socket.
    unsafe {
        bpf_sk_storage_get(
            owner_storage(),
            ctx.sock.cast(),
            (&raw mut recorded).cast(),
            u64::from(BPF_SK_STORAGE_GET_F_CREATE),
        )
    };
    1
}

#[btf_tracepoint(function = "sock_send_length")]
pub fn owner_at_send(ctx: BtfTracePointContext) -> i32 {
    owner_of_arg(&ctx);
    0
}

#[btf_tracepoint(function = "sock_recv_length")]
pub fn owner_at_recv(ctx: BtfTracePointContext) -> i32 {
    owner_of_arg(&ctx);
    0
}

#[btf_tracepoint(function = "inet_sock_set_state")]
pub fn socket_state(ctx: BtfTracePointContext) -> i32 {
    let new_state: i32 = ctx.arg(2);
    if new_state != TCP_CLOSE {
        return 0;
    }
    let sk: *mut c_void = ctx.arg(0);
    // SAFETY: argument 0 of this tracepoint is a `struct sock *` the verifier knows by BTF.
    let cookie = unsafe { bpf_get_socket_cookie(sk) };
    match EVENTS.reserve::<CloseEvent>(0) {
        Some(mut e) => {
            e.write(CloseEvent {
                header: header(EVENT_CLOSE, 0, cookie),
            });
            e.submit(0);
        }
        None => bump(STAT_RING_DROPS),
    }
    0
}

/// Records the current process as the owner of the socket in argument 0 (`struct sock *`) of a
/// socket tracepoint, unless one was recorded for this socket (not inherited from its
/// listener), and gives it to the socket's counters.
fn owner_of_arg(ctx: &BtfTracePointContext) {
    let sk: *mut c_void = ctx.arg(0);
    if sk.is_null() {
        return;
    }
    // SAFETY: as in `socket_state`.
    let cookie = unsafe { bpf_get_socket_cookie(sk) };
    // SAFETY: a socket the verifier knows by BTF; without the create flag nothing is written.
    let known = unsafe { bpf_sk_storage_get(owner_storage(), sk, core::ptr::null_mut(), 0) }
        .cast::<Recorded>();
    let mut recorded = Recorded {
        owner: current_owner(),
        cookie,
    };
    if known.is_null() {
        // SAFETY: as above; the value is copied into the socket's new storage.
        unsafe {
            bpf_sk_storage_get(
                owner_storage(),
                sk,
                (&raw mut recorded).cast(),
                u64::from(BPF_SK_STORAGE_GET_F_CREATE),
            )
        };
    } else {
        // SAFETY: a live storage value of this map's type.
        unsafe {
            if (*known).cookie == cookie {
                return;
            }
            *known = recorded;
        }
    }
    // A socket counted before it had an owner of its own (opened before the probe started, or
    // accepted): its last packets may already have been counted.
    for direction in [INGRESS, EGRESS] {
        let key = Key {
            cookie,
            direction,
            _pad: 0,
        };
        if let Some(c) = COUNTS.get_ptr_mut(&key) {
            own(c, &recorded.owner, OWNED);
        }
    }
}

fn current_owner() -> Owner {
    Owner {
        pid: (bpf_get_current_pid_tgid() >> 32) as u32,
        _pad: 0,
        // SAFETY: no arguments; valid in every program type that attaches these hooks.
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    }
}

fn owner_storage() -> *mut c_void {
    (&raw const OWNER_OF).cast_mut().cast()
}

/// The recorded owner of the packet's socket (`cookie`), and whether it is its own ([`OWNED`])
/// or its listener's ([`INHERITED`]).
fn owner_of_packet(ctx: &SkBuffContext, cookie: u64) -> Option<(Owner, u32)> {
    // SAFETY: a field of the program's context.
    let sk = unsafe { (*ctx.skb.skb).__bindgen_anon_2.sk };
    if sk.is_null() {
        return None;
    }
    // SAFETY: a non-null socket of the context.
    let full = unsafe { bpf_sk_fullsock(sk) };
    if full.is_null() {
        return None;
    }
    // SAFETY: a full socket; without the create flag nothing is written.
    let p = unsafe { bpf_sk_storage_get(owner_storage(), full.cast(), core::ptr::null_mut(), 0) };
    if p.is_null() {
        return None;
    }
    // SAFETY: a live storage value of this map's type.
    let recorded = unsafe { *p.cast::<Recorded>() };
    let state = if recorded.cookie == cookie {
        OWNED
    } else {
        INHERITED
    };
    Some((recorded.owner, state))
}

/// Fills a socket's counters' owner, unless one as good is there.
fn own(counts: *mut Counts, owner: &Owner, state: u32) {
    // SAFETY: a live map value; the owner is written before the flag that says it is there.
    unsafe {
        let owned = (*counts).owned;
        if owned == 0 || (owned == INHERITED && state == OWNED) {
            (*counts).owner = *owner;
            (*counts).owned = state;
        }
    }
}

fn header(kind: u32, direction: u32, cookie: u64) -> EventHeader {
    EventHeader {
        kind,
        direction,
        cookie,
        // SAFETY: no arguments.
        ts_ns: unsafe { bpf_ktime_get_ns() },
    }
}

fn bump(stat: u32) {
    if let Some(p) = STATS.get_ptr_mut(stat) {
        add(p, 1);
    }
}

/// Atomic add into a map value (BPF_ATOMIC_ADD; the old value is not fetched).
fn add(p: *mut u64, v: u64) {
    // SAFETY: `p` points into a map value, 8-byte aligned and live as long as the map.
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(p, v) };
}

/// The IP protocol of the packet (the first next-header for IPv6).
fn ip_protocol(ctx: &SkBuffContext) -> Option<u8> {
    let offset = // SAFETY: a field of the program's context.
    match unsafe { (*ctx.skb.skb).protocol } {
        ETH_P_IP_BE => 9,
        ETH_P_IPV6_BE => 6,
        _ => return None,
    };
    ctx.load::<u8>(offset).ok()
}

/// The bytes and segments a device adds to an egress packet when it splits it in software: the
/// IP and transport headers of each segment past the first. The socket's hook sees one large
/// (GSO) packet; the wire, and a capture on the device, as many packets as its `gso_segs`.
fn software_split(ctx: &SkBuffContext) -> (u64, u64) {
    // SAFETY: fields of the program's context.
    let (segs, family) = unsafe { ((*ctx.skb.skb).gso_segs, (*ctx.skb.skb).protocol) };
    if segs <= 1 {
        return (0, 0);
    }
    // SAFETY: a read-only global, set before load.
    let layout = unsafe { core::ptr::read_volatile(&raw const LAYOUT) };
    let v4 = family == ETH_P_IP_BE;
    let ip_header = match family {
        ETH_P_IP_BE => ctx.load::<u8>(0).map(|b| usize::from(b & 0x0f) * 4),
        ETH_P_IPV6_BE => Ok(40),
        _ => return (0, 0),
    };
    let Ok(ip_header) = ip_header else {
        return (0, 0);
    };
    let (bit, transport_header) = match ip_protocol(ctx) {
        Some(TCP) => (
            if v4 { layout.tso_bit } else { layout.tso6_bit },
            ctx.load::<u8>(ip_header + 12)
                .map(|b| usize::from(b >> 4) * 4)
                .unwrap_or(0),
        ),
        Some(UDP) => (layout.udp_bit, 8),
        _ => return (0, 0),
    };
    if transport_header == 0 || layout.sock_dst == 0 || bit >= 64 {
        return (0, 0);
    }
    let Some(dev) = device(ctx, &layout, v4) else {
        return (0, 0);
    };
    let split = dev.features & (1 << bit) == 0
        || segs > dev.gso_max_segs
        || ctx.len() + dev.hard_header_len >= dev.gso_max_size;
    if !split {
        return (0, 0);
    }
    let extra = u64::from(segs - 1);
    (extra * (ip_header + transport_header) as u64, extra)
}

/// What decides whether a device splits a large packet in software.
struct Device {
    features: u64,
    /// For the packet's IP version.
    gso_max_size: u32,
    gso_max_segs: u32,
    hard_header_len: u32,
}

/// The device the packet leaves by, read through its socket's route (only when that route's
/// device is the packet's).
fn device(ctx: &SkBuffContext, layout: &KernelLayout, v4: bool) -> Option<Device> {
    // SAFETY: a field of the program's context.
    let sk = unsafe { (*ctx.skb.skb).__bindgen_anon_2.sk };
    if sk.is_null() {
        return None;
    }
    // SAFETY: a non-null socket of the context.
    let full = unsafe { bpf_sk_fullsock(sk) };
    if full.is_null() {
        return None;
    }
    // The socket's address as a number (the verifier allows no arithmetic on a socket pointer):
    // read back from the stack slot it is stored in.
    // SAFETY: reads 8 bytes of this stack frame.
    let sock: u64 = unsafe { bpf_probe_read_kernel((&raw const full).cast::<u64>()) }.ok()?;
    let dst = read::<u64>(sock, layout.sock_dst).filter(|&a| a != 0)?;
    let dev = read::<u64>(dst, layout.dst_dev).filter(|&a| a != 0)?;
    // SAFETY: a field of the program's context.
    if read::<u32>(dev, layout.dev_ifindex)? != unsafe { (*ctx.skb.skb).ifindex } {
        return None;
    }
    let max_size = if v4 {
        layout.dev_gso_ipv4_max_size
    } else {
        layout.dev_gso_max_size
    };
    Some(Device {
        features: read::<u64>(dev, layout.dev_features)?,
        gso_max_size: read::<u32>(dev, max_size)?,
        gso_max_segs: u32::from(read::<u16>(dev, layout.dev_gso_max_segs)?),
        hard_header_len: u32::from(read::<u16>(dev, layout.dev_hard_header_len)?),
    })
}

/// A `T` at `offset` bytes into the kernel object at `base`.
fn read<T>(base: u64, offset: u32) -> Option<T> {
    // SAFETY: bpf_probe_read_kernel checks the address; a bad one fails the read.
    unsafe { bpf_probe_read_kernel((base + u64::from(offset)) as *const T) }.ok()
}

fn count(ctx: &SkBuffContext, direction: u32) {
    let (split_bytes, split_packets) = if direction == EGRESS {
        software_split(ctx)
    } else {
        (0, 0)
    };
    let wire_len = u64::from(ctx.len()) + split_bytes;
    let packets = 1 + split_packets;
    // SAFETY: the helper takes this program type's context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.skb.skb.cast()) };
    let key = Key {
        cookie,
        direction,
        _pad: 0,
    };
    let counts = match COUNTS.get_ptr_mut(&key) {
        Some(c) => c,
        None => {
            let _ = COUNTS.insert(&key, &Counts::default(), u64::from(BPF_NOEXIST));
            match COUNTS.get_ptr_mut(&key) {
                Some(c) => c,
                None => {
                    bump(STAT_MAP_FULL);
                    count_per_process(ctx, cookie, direction, wire_len, packets);
                    return;
                }
            }
        }
    };
    // SAFETY: a live map value; fields are updated atomically.
    unsafe {
        add(&raw mut (*counts).bytes, wire_len);
        add(&raw mut (*counts).packets, packets);
    }
    // SAFETY: as above; a racing reader may see a slightly old value, which only moves the
    // head budget by a packet.
    let (copied_so_far, protocol, owned) =
        unsafe { ((*counts).copied, (*counts).protocol, (*counts).owned) };
    if protocol == 0 {
        // SAFETY: as above (plain stores: any packet of the socket may write the same values).
        unsafe { (*counts).protocol = u32::from(ip_protocol(ctx).unwrap_or(255)) };
    }
    let owned = owned == OWNED
        || owner_of_packet(ctx, cookie).is_some_and(|(o, state)| {
            own(counts, &o, state);
            true
        });
    // SAFETY: a read-only global, set before load.
    let head = unsafe { core::ptr::read_volatile(&raw const HEAD) };
    let past_head = protocol == u32::from(TCP) && copied_so_far >= u64::from(head);
    let skip = past_head && owned;
    // The event of a sampled packet carries the packet as the socket sent it: the headers a
    // split adds are carried by no event.
    let (unsampled_bytes, unsampled_packets) =
        match (!skip).then(|| sample(ctx, direction, cookie)).flatten() {
            Some(copied) => {
                // SAFETY: as above.
                unsafe { add(&raw mut (*counts).copied, copied) };
                (split_bytes, split_packets)
            }
            None => (wire_len, packets),
        };
    if unsampled_packets > 0 {
        // SAFETY: as above.
        unsafe {
            add(&raw mut (*counts).unsampled_bytes, unsampled_bytes);
            add(&raw mut (*counts).unsampled_packets, unsampled_packets);
        }
    }
}

/// Counts a packet of a socket that found no room in `COUNTS` against its owning process, or
/// without an owner when none is known or `FALLBACK` is full too.
fn count_per_process(ctx: &SkBuffContext, cookie: u64, direction: u32, bytes: u64, packets: u64) {
    let traffic = owner_of_packet(ctx, cookie).and_then(|(owner, _)| {
        let key = ProcessKey {
            owner,
            direction,
            _pad: 0,
        };
        FALLBACK.get_ptr_mut(&key).or_else(|| {
            let _ = FALLBACK.insert(&key, &Traffic::default(), u64::from(BPF_NOEXIST));
            FALLBACK.get_ptr_mut(&key)
        })
    });
    if let Some(t) = traffic.or_else(|| OVERFLOW.get_ptr_mut(direction)) {
        // SAFETY: a live map value.
        unsafe {
            add(&raw mut (*t).bytes, bytes);
            add(&raw mut (*t).packets, packets);
        }
    }
}

/// Sends the packet's first bytes to userspace; returns the number copied, `None` if the ring
/// buffer had no room (counted) or the packet could not be read.
fn sample(ctx: &SkBuffContext, direction: u32, cookie: u64) -> Option<u64> {
    let nesting = NESTING.get_ptr_mut(0)?;
    // SAFETY: this CPU's counter; a program that interrupts this one restores it before this
    // one goes on.
    let slot = unsafe { *nesting };
    if slot >= SCRATCH_SLOTS {
        return None;
    }
    // SAFETY: as above.
    unsafe { *nesting = slot + 1 };
    let copied = sample_in(ctx, direction, cookie, slot);
    // SAFETY: as above.
    unsafe { *nesting = slot };
    copied
}

/// [`sample`], the event assembled in scratch slot `slot`.
fn sample_in(ctx: &SkBuffContext, direction: u32, cookie: u64, slot: u32) -> Option<u64> {
    let ev = SCRATCH.get_ptr_mut(slot)?;
    let len = ctx.len();
    let n = if (len as usize) < SNAP {
        len
    } else {
        SNAP as u32
    };
    if n == 0 || n as usize > SNAP {
        return None;
    }
    // SAFETY: `ev` is this program's scratch event on this CPU; `n` is at most SNAP.
    let loaded = unsafe {
        (*ev).header = header(EVENT_PACKET, direction, cookie);
        (*ev).len = len;
        (*ev).copied = n;
        bpf_skb_load_bytes(ctx.skb.skb.cast(), 0, (&raw mut (*ev).data).cast(), n)
    };
    if loaded != 0 {
        return None;
    }
    let size = core::mem::offset_of!(PacketEvent, data) + n as usize;
    let size = size.min(core::mem::size_of::<PacketEvent>());
    let flags = if EVENTS.query(u64::from(BPF_RB_AVAIL_DATA)) >= WAKEUP_BYTES {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    };
    // SAFETY: the first `size` bytes of the scratch event, all initialised above.
    let bytes = unsafe { core::slice::from_raw_parts(ev.cast::<u8>(), size) };
    match EVENTS.output::<[u8]>(bytes, u64::from(flags)) {
        Ok(()) => Some(u64::from(n)),
        Err(_) => {
            bump(STAT_RING_DROPS);
            None
        }
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}
