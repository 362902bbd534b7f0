//! wakuprof's eBPF probe. cgroup_skb programs on the cgroup v2 root count every packet per
//! (socket cookie, direction) and sample packet heads into a ring buffer; socket owners are
//! recorded in process context (socket creation, sendmsg, recvmsg); TCP_CLOSE is announced so
//! userspace can read a socket's last counts and forget it.
#![no_std]
#![no_main]
#![feature(core_intrinsics)]
#![allow(internal_features)]

use core::ffi::c_void;
use core::intrinsics::{AtomicOrdering, atomic_xadd};

use aya_ebpf::bindings::{BPF_NOEXIST, BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP};
use aya_ebpf::helpers::{
    bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid,
    bpf_get_socket_cookie, bpf_ktime_get_ns, bpf_skb_load_bytes,
};
use aya_ebpf::macros::{btf_tracepoint, cgroup_skb, cgroup_sock, map};
use aya_ebpf::maps::{Array, HashMap, PerCpuArray, RingBuf};
use aya_ebpf::programs::{BtfTracePointContext, SkBuffContext, SockContext};
use wakuprof_probe_common::{
    CloseEvent, Counts, EGRESS, EVENT_CLOSE, EVENT_PACKET, EventHeader, HEAD_BYTES, INGRESS, Key,
    MAX_SOCKETS, Owner, PacketEvent, RING_BYTES, SNAP, STAT_MAP_FULL, STAT_RING_DROPS, STATS_LEN,
    WAKEUP_BYTES,
};

#[map]
static COUNTS: HashMap<Key, Counts> = HashMap::with_max_entries(MAX_SOCKETS * 2, 0);

#[map]
static OWNERS: HashMap<u64, Owner> = HashMap::with_max_entries(MAX_SOCKETS, 0);

/// Counts of packets whose socket found no room in `COUNTS`, by direction.
#[map]
static OVERFLOW: Array<Counts> = Array::with_max_entries(2, 0);

#[map]
static STATS: Array<u64> = Array::with_max_entries(STATS_LEN, 0);

#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(RING_BYTES, 0);

/// Where a packet event is assembled before the used part of it is copied into `EVENTS`.
#[map]
static SCRATCH: PerCpuArray<PacketEvent> = PerCpuArray::with_max_entries(1, 0);

/// IP protocol numbers sampled past the head budget (everything but TCP).
const TCP: u8 = 6;
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
    // SAFETY: the helper takes this program type's context.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.sock.cast()) };
    remember_owner(cookie);
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

/// Records the owner of the socket in argument 0 (`struct sock *`) of a socket tracepoint.
fn owner_of_arg(ctx: &BtfTracePointContext) {
    let sk: *mut c_void = ctx.arg(0);
    if sk.is_null() {
        return;
    }
    // SAFETY: as in `socket_state`.
    let cookie = unsafe { bpf_get_socket_cookie(sk) };
    remember_owner(cookie);
}

/// Records the current process as the owner of `cookie` unless an owner is known.
fn remember_owner(cookie: u64) {
    if OWNERS.get_ptr(&cookie).is_some() {
        return;
    }
    let owner = Owner {
        pid: (bpf_get_current_pid_tgid() >> 32) as u32,
        _pad: 0,
        // SAFETY: no arguments; valid in every program type that attaches these hooks.
        cgroup_id: unsafe { bpf_get_current_cgroup_id() },
        comm: bpf_get_current_comm().unwrap_or([0; 16]),
    };
    // A full map leaves the socket unowned; userspace reports the count of such sockets.
    let _ = OWNERS.insert(&cookie, &owner, u64::from(BPF_NOEXIST));
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

fn count(ctx: &SkBuffContext, direction: u32) {
    let len = u64::from(ctx.len());
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
                    if let Some(o) = OVERFLOW.get_ptr_mut(direction) {
                        // SAFETY: a live map value.
                        unsafe {
                            add(&raw mut (*o).bytes, len);
                            add(&raw mut (*o).packets, 1);
                        }
                    }
                    return;
                }
            }
        }
    };
    // SAFETY: a live map value; fields are updated atomically.
    unsafe {
        add(&raw mut (*counts).bytes, len);
        add(&raw mut (*counts).packets, 1);
    }
    // SAFETY: as above; a racing reader may see a slightly old value, which only moves the
    // head budget by a packet.
    let (copied_so_far, protocol, owned) =
        unsafe { ((*counts).copied, (*counts).protocol, (*counts).owned) };
    if protocol == 0 {
        // SAFETY: as above (plain stores: any packet of the socket may write the same values).
        unsafe { (*counts).protocol = u32::from(ip_protocol(ctx).unwrap_or(255)) };
    }
    let past_head = protocol == u32::from(TCP) && copied_so_far >= u64::from(HEAD_BYTES);
    let skip = past_head
        && (owned != 0 || {
            let known = OWNERS.get_ptr(&cookie).is_some();
            if known {
                // SAFETY: as above.
                unsafe { (*counts).owned = 1 };
            }
            known
        });
    match (!skip).then(|| sample(ctx, direction, cookie)).flatten() {
        // SAFETY: as above.
        Some(copied) => unsafe { add(&raw mut (*counts).copied, copied) },
        // SAFETY: as above.
        None => unsafe {
            add(&raw mut (*counts).unsampled_bytes, len);
            add(&raw mut (*counts).unsampled_packets, 1);
        },
    }
}

/// Sends the packet's first bytes to userspace; returns the number copied, `None` if the ring
/// buffer had no room (counted) or the packet could not be read.
fn sample(ctx: &SkBuffContext, direction: u32, cookie: u64) -> Option<u64> {
    let ev = SCRATCH.get_ptr_mut(0)?;
    let len = ctx.len();
    let n = if (len as usize) < SNAP { len } else { SNAP as u32 };
    if n == 0 || n as usize > SNAP {
        return None;
    }
    // SAFETY: `ev` is this CPU's scratch event; `n` is at most SNAP.
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
