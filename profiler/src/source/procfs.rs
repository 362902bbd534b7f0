//! What /proc says about processes and sockets: a process's name, executable and cgroup (with
//! the container it belongs to), and, for the pcap source, which process owns the socket of a
//! connection (approximate: a socket table read at one moment).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::sync::Arc;

use rustc_hash::FxHashMap;

use crate::account::record::Owner;

/// The owner record of process `pid` from /proc; `comm` stands in when the process is gone.
pub fn process(pid: u32, comm: Option<&str>, host: &Arc<str>) -> Owner {
    let dir = Path::new("/proc").join(pid.to_string());
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).ok();
    let comm = read("comm")
        .map(|c| c.trim_end().to_string())
        .or_else(|| comm.map(str::to_string));
    let exe = std::fs::read_link(dir.join("exe"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned());
    let cgroup = read("cgroup").and_then(|c| cgroup_v2_path(&c));
    let container = cgroup.as_deref().and_then(container_of);
    Owner {
        host: Some(Arc::clone(host)),
        pid: Some(pid),
        comm: comm.map(Arc::from),
        exe: exe.map(Arc::from),
        container: container.map(Arc::from),
        cgroup: cgroup.map(Arc::from),
    }
}

/// The cgroup v2 path in the text of /proc/PID/cgroup (its `0::` line).
pub fn cgroup_v2_path(text: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .map(str::to_string)
}

/// The container a cgroup path belongs to: `docker://ID`, `containerd://ID`, `cri-o://ID`, or
/// `k8s-pod://UID` when only the pod is named. Docker, containerd and CRI-O, under systemd
/// (`docker-ID.scope`) or cgroupfs (`/docker/ID`) drivers, and Kubernetes pod slices.
pub fn container_of(path: &str) -> Option<String> {
    let mut pod = None;
    let mut found = None;
    for part in path.split('/') {
        let part = part.strip_suffix(".scope").unwrap_or(part);
        let part = part.strip_suffix(".slice").unwrap_or(part);
        for (prefix, runtime) in [
            ("docker-", "docker"),
            ("cri-containerd-", "containerd"),
            ("crio-", "cri-o"),
            ("libpod-", "podman"),
        ] {
            if let Some(id) = part.strip_prefix(prefix).filter(|id| is_container_id(id)) {
                found = Some(format!("{runtime}://{id}"));
            }
        }
        if is_container_id(part) {
            let runtime = if path.contains("/docker/") {
                "docker"
            } else {
                "containerd"
            };
            found = Some(format!("{runtime}://{part}"));
        }
        if let Some(uid) = part.rsplit_once("pod").map(|(_, u)| u)
            && part.contains("kubepods")
            && uid.len() == 36
        {
            pod = Some(uid.replace('_', "-"));
        } else if let Some(uid) = part.strip_prefix("pod").filter(|u| u.len() == 36) {
            pod = Some(uid.to_string());
        }
    }
    found.or_else(|| pod.map(|p| format!("k8s-pod://{p}")))
}

fn is_container_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The cgroup v2 directory under `root` whose inode number is `id` (what the kernel calls the
/// cgroup id), as a path relative to the root (`/` for the root itself).
pub fn cgroup_path_of_id(root: &Path, id: u64) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        if std::fs::metadata(&dir).is_ok_and(|m| m.ino() == id) {
            let rel = dir.strip_prefix(root).ok()?;
            return Some(format!("/{}", rel.display()));
        }
        if let Ok(entries) = std::fs::read_dir(&dir) {
            stack.extend(
                entries
                    .filter_map(Result::ok)
                    .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                    .map(|e| e.path()),
            );
        }
    }
    None
}

/// An address and port.
type End = (IpAddr, u16);
/// A socket as /proc/net lists it: protocol, local and remote end.
type SocketKey = (u8, End, End);

/// Which process owns which socket, from /proc/net/{tcp,udp}{,6} and /proc/*/fd, read at one
/// moment: sockets opened and closed between two reads are missed.
#[derive(Default)]
pub struct SocketOwners {
    by_socket: FxHashMap<SocketKey, u32>,
    /// UDP sockets not connected to a peer, by local end.
    by_local: FxHashMap<(u8, (IpAddr, u16)), u32>,
}

impl SocketOwners {
    /// Reads the socket tables and the processes' descriptors now.
    pub fn read() -> SocketOwners {
        let mut pids: FxHashMap<u64, u32> = FxHashMap::default();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            for fd in std::fs::read_dir(entry.path().join("fd"))
                .into_iter()
                .flatten()
                .flatten()
            {
                if let Some(inode) = std::fs::read_link(fd.path()).ok().and_then(|l| {
                    l.to_str()?
                        .strip_prefix("socket:[")?
                        .strip_suffix(']')?
                        .parse()
                        .ok()
                }) {
                    pids.entry(inode).or_insert(pid);
                }
            }
        }
        let mut owners = SocketOwners::default();
        for (file, proto) in [
            ("/proc/net/tcp", 6),
            ("/proc/net/tcp6", 6),
            ("/proc/net/udp", 17),
            ("/proc/net/udp6", 17),
        ] {
            let Ok(text) = std::fs::read_to_string(file) else {
                continue;
            };
            for (local, remote, inode) in text.lines().skip(1).filter_map(parse_socket_line) {
                let Some(&pid) = pids.get(&inode) else {
                    continue;
                };
                owners.by_socket.insert((proto, local, remote), pid);
                if remote.1 == 0 {
                    owners.by_local.insert((proto, local), pid);
                }
            }
        }
        owners
    }

    /// The process owning the socket at `local` talking to `remote`, if one was listed.
    pub fn lookup(&self, proto: u8, local: (IpAddr, u16), remote: (IpAddr, u16)) -> Option<u32> {
        let unspecified = |a: IpAddr| match a {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
        };
        self.by_socket
            .get(&(proto, local, remote))
            .or_else(|| self.by_local.get(&(proto, local)))
            .or_else(|| self.by_local.get(&(proto, (unspecified(local.0), local.1))))
            .copied()
    }
}

/// (local, remote, inode) of one line of /proc/net/{tcp,udp}{,6}.
fn parse_socket_line(line: &str) -> Option<(End, End, u64)> {
    let f: Vec<&str> = line.split_whitespace().collect();
    Some((
        parse_end(f.get(1)?)?,
        parse_end(f.get(2)?)?,
        f.get(9)?.parse().ok()?,
    ))
}

/// `0100007F:1F90` (IPv4) or 32 hex digits (IPv6): 32-bit words in host byte order, then the port.
fn parse_end(s: &str) -> Option<(IpAddr, u16)> {
    let (addr, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| -> Option<[u8; 4]> {
        let w = u32::from_str_radix(addr.get(i * 8..i * 8 + 8)?, 16).ok()?;
        Some(w.to_ne_bytes())
    };
    let ip = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                b[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            IpAddr::V6(Ipv6Addr::from(b))
        }
        _ => return None,
    };
    Some((ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn containers_are_named_from_cgroup_paths() {
        let id = "4f1c0a7e2b9d8c6a5e3f1b0d9c8a7e6f5d4c3b2a1f0e9d8c7b6a5f4e3d2c1b0a";
        let cases = [
            (
                format!("/system.slice/docker-{id}.scope"),
                format!("docker://{id}"),
            ),
            (format!("/docker/{id}"), format!("docker://{id}")),
            (
                format!(
                    "/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1b2c3d4e_0000_4a5b_8c9d_0123456789ab.slice/cri-containerd-{id}.scope"
                ),
                format!("containerd://{id}"),
            ),
            (
                "/kubepods/burstable/pod1b2c3d4e-0000-4a5b-8c9d-0123456789ab".to_string(),
                "k8s-pod://1b2c3d4e-0000-4a5b-8c9d-0123456789ab".to_string(),
            ),
            (
                format!("/machine.slice/libpod-{id}.scope"),
                format!("podman://{id}"),
            ),
            (
                format!("/system.slice/crio-{id}.scope"),
                format!("cri-o://{id}"),
            ),
        ];
        for (path, want) in cases {
            assert_eq!(
                container_of(&path).as_deref(),
                Some(want.as_str()),
                "{path}"
            );
        }
        assert_eq!(
            container_of("/user.slice/user-0.slice/session-1.scope"),
            None
        );
        assert_eq!(container_of("/"), None);
    }

    #[test]
    fn proc_net_ends_parse_in_host_word_order() {
        assert_eq!(
            parse_end("0100007F:1F90"),
            Some(("127.0.0.1".parse().unwrap(), 8080))
        );
        assert_eq!(
            parse_end("00000000000000000000000001000000:0035"),
            Some(("::1".parse().unwrap(), 53))
        );
        assert_eq!(parse_end("zz:1"), None);
    }

    #[test]
    fn the_v2_line_of_proc_cgroup_is_the_path() {
        let text = "12:pids:/user.slice\n0::/system.slice/waku.service\n";
        assert_eq!(
            cgroup_v2_path(text).as_deref(),
            Some("/system.slice/waku.service")
        );
    }
}
