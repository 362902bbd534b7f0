//! Cleanup that survives a killed wakusim. Before a run creates its namespaces it starts a
//! janitor: `wakusim janitor NAME…` (hidden), in its own session so that signals meant for
//! wakusim's process group miss it. The janitor reads its stdin, a pipe only wakusim holds,
//! until it ends: when wakusim closes it after removing the namespaces itself, or when the
//! kernel closes it because wakusim died, even by SIGKILL. The janitor then kills whatever still
//! runs in each namespace left and deletes it, with the veths and bridge inside.

use std::{
    io,
    os::unix::process::CommandExt as _,
    path::Path,
    process::{Child, ChildStdin, Command, Stdio},
};

use anyhow::Context as _;
use traffic::netns::ip;

/// A running janitor; dropping it (once the namespaces are gone) ends it and waits for it.
pub struct Janitor {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl Janitor {
    /// Starts the janitor of the namespaces `names` (before they are created).
    pub fn start(names: &[&str]) -> anyhow::Result<Janitor> {
        let exe = std::env::current_exe().context("find the wakusim executable")?;
        let mut command = Command::new(exe);
        command
            .arg("janitor")
            .args(names)
            .stdin(Stdio::piped())
            .stdout(Stdio::null());
        // SAFETY: between fork and exec the closure only calls setsid, which is
        // async-signal-safe.
        unsafe {
            command.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command.spawn().context("start the namespace janitor")?;
        let stdin = child.stdin.take();
        Ok(Janitor { child, stdin })
    }
}

impl Drop for Janitor {
    fn drop(&mut self) {
        // The janitor then finds nothing left and ends; waiting for it keeps it from deleting
        // the namespaces of a next run that reuses the names.
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

/// The `wakusim janitor` process: waits until its stdin ends, then removes the namespaces
/// `names` that still exist.
pub fn child(names: &[String]) -> anyhow::Result<()> {
    // Nothing is written to it: its end is the message.
    io::copy(&mut io::stdin().lock(), &mut io::sink()).context("read the janitor's pipe")?;
    for name in names {
        if let Err(e) = remove(name) {
            tracing::warn!("could not remove namespace {name}: {e:#}");
        }
    }
    Ok(())
}

/// Kills every process in namespace `name` and deletes it; nothing to do if it is gone.
fn remove(name: &str) -> anyhow::Result<()> {
    if !Path::new("/run/netns").join(name).exists() {
        return Ok(());
    }
    let out = Command::new("ip")
        .args(["netns", "pids", name])
        .output()
        .context("run ip (iproute2)")?;
    for pid in String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|p| p.parse::<libc::pid_t>().ok())
    {
        // SAFETY: kill has no memory preconditions; a process gone already gets ESRCH.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
    ip(&["netns", "delete", name])
}
