//! Capabilities the live sources need, read from /proc/self/status, so a missing one is named
//! before the kernel answers a bare EPERM.

use crate::Error;

/// A capability by number and name.
pub type Cap = (u32, &'static str);

const CAP_NET_ADMIN: Cap = (12, "CAP_NET_ADMIN");
const CAP_NET_RAW: Cap = (13, "CAP_NET_RAW");
const CAP_SYS_ADMIN: Cap = (21, "CAP_SYS_ADMIN");
const CAP_PERFMON: Cap = (38, "CAP_PERFMON");
const CAP_BPF: Cap = (39, "CAP_BPF");

/// What the eBPF probe needs: loading (BPF), tracepoints (PERFMON), cgroup attachment
/// (NET_ADMIN). CAP_SYS_ADMIN alone also does.
pub const PROBE: &[Cap] = &[CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN];
/// What a live libpcap capture needs.
pub const PCAP: &[Cap] = &[CAP_NET_RAW];

/// How to get the capabilities.
pub const HINT: &str = "run as root, or grant them: sudo setcap cap_bpf,cap_perfmon,cap_net_admin,cap_net_raw+ep $(which wakuprof)";

/// The effective capability set of this process.
fn effective() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let hex = status.lines().find_map(|l| l.strip_prefix("CapEff:"))?;
    u64::from_str_radix(hex.trim(), 16).ok()
}

/// The capabilities of `needed` this process lacks (none when CAP_SYS_ADMIN covers them).
pub fn missing(needed: &[Cap]) -> Vec<&'static str> {
    let Some(eff) = effective() else {
        return Vec::new();
    };
    let has = |c: Cap| eff & (1u64 << c.0) != 0;
    if needed.iter().all(|&c| c != CAP_NET_RAW) && has(CAP_SYS_ADMIN) {
        return Vec::new();
    }
    needed.iter().filter(|&&c| !has(c)).map(|c| c.1).collect()
}

/// Fails with the names of the missing capabilities, if any.
pub fn require(needed: &[Cap]) -> Result<(), Error> {
    let lacking = missing(needed);
    if lacking.is_empty() {
        return Ok(());
    }
    Err(Error::Permission {
        missing: lacking.join(", "),
        hint: HINT,
    })
}
