//! The telemetry forwarder: usage rows summed per window into the status-im telemetry service's
//! `ProtocolStats` and the proposed `BandwidthUsage` record, written to an on-disk spool, and
//! sent from there by a background thread (protocols.md §9).

pub mod client;
pub mod records;
pub mod replay;
pub mod sender;
pub mod spool;
pub mod state;
pub mod windows;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::Error;
use crate::account::record::Row;
use crate::sink::Sink;
use client::ClientConfig;
use records::{Include, Origin};
use sender::{Delivery, Shared};
use spool::{Spool, WhenFull};
use windows::{WindowId, WindowSums, Windows};

/// Default bound of the spool on disk.
pub const DEFAULT_SPOOL_BYTES: u64 = 64 << 20;

/// Where and how to forward.
#[derive(Clone, Debug)]
pub struct ForwardConfig {
    /// The service's base URL (`https://telemetry.status.im`); routes are appended.
    pub url: String,
    /// Holds the host id and the spool.
    pub state_dir: PathBuf,
    /// Private fields allowed out.
    pub include: Include,
    /// Bound of the spool on disk, bytes.
    pub spool_bytes: u64,
    pub client: ClientConfig,
}

/// How records are made: by a live run (random run id; a full spool drops the oldest) or by a
/// replay of Parquet (deterministic keys; a full spool makes the replay wait).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Live,
    Replay,
}

/// What a forwarder did, for the end-of-run report.
#[derive(Clone, Debug, Default, Serialize)]
pub struct ForwardReport {
    /// Windows (and late parts of windows) put in the spool.
    pub windows: u64,
    /// Wire bytes of the rows in those windows.
    pub bytes: u64,
    pub delivery: Delivery,
    /// Records dropped because the spool's bound was hit.
    pub dropped: u64,
    /// Records still in the spool at the end (sent by the next run).
    pub left_in_spool: u64,
    /// Windows that could not be spooled (e.g. a full disk) and are not forwarded.
    pub spool_errors: u64,
}

/// A [`Sink`] that forwards what it is given; see the module doc.
pub struct Forwarder {
    windows: Windows,
    origin: Origin,
    mode: Mode,
    /// Next part of each window already spooled, for rows that come after it.
    parts: BTreeMap<WindowId, u32>,
    shared: Arc<Shared>,
    sender: Option<JoinHandle<()>>,
    /// How long `finish` waits for the spool to empty (live runs).
    pub drain: Duration,
    /// Set by the caller to stop waiting (a signal).
    stop: Option<Arc<AtomicBool>>,
    report: ForwardReport,
}

/// Parts of windows older than this (behind the newest spooled) are forgotten.
const PARTS_KEPT_US: i64 = 3600 * 1_000_000;

impl Forwarder {
    /// Opens the state directory and the spool and starts the sender, which first sends what
    /// an earlier run left in the spool.
    pub fn start(cfg: &ForwardConfig, mode: Mode) -> Result<Forwarder, Error> {
        check_url(&cfg.url)?;
        let host_id = state::host_id(&cfg.state_dir)?;
        let run = match mode {
            Mode::Live => state::random_uuid()?,
            Mode::Replay => String::new(),
        };
        let spool = Spool::open(&cfg.state_dir.join("spool"), cfg.spool_bytes)?;
        let left = spool.pending();
        if left > 0 {
            tracing::info!("telemetry: {left} records left by an earlier run are sent first");
        }
        let shared = Arc::new(Shared::new(spool));
        let thread_shared = Arc::clone(&shared);
        let url = cfg.url.clone();
        let client = cfg.client.clone();
        let sender = std::thread::Builder::new()
            .name("telemetry".into())
            .spawn(move || sender::run(&thread_shared, &url, &client))
            .map_err(|e| Error::Invalid(format!("cannot start the telemetry thread: {e}")))?;
        Ok(Forwarder {
            windows: Windows::new(cfg.include),
            origin: Origin { host_id, run },
            mode,
            parts: BTreeMap::new(),
            shared,
            sender: Some(sender),
            drain: Duration::from_secs(10),
            stop: None,
            report: ForwardReport::default(),
        })
    }

    /// Stops waiting (for room in the spool, for delivery) once `stop` is set.
    pub fn stop_on(&mut self, stop: Arc<AtomicBool>) {
        self.stop = Some(stop);
    }

    fn stopped(&self) -> bool {
        self.stop
            .as_ref()
            .is_some_and(|s| s.load(Ordering::Relaxed))
    }

    /// The host id the records carry.
    pub fn host_id(&self) -> &str {
        &self.origin.host_id
    }

    /// Records waiting in the spool.
    pub fn pending(&self) -> u64 {
        self.shared.spool().pending()
    }

    /// What the sender did so far.
    pub fn delivery(&self) -> Delivery {
        self.shared.delivery()
    }

    /// Spools one window's records (the next part if the window went before). A replay waits
    /// for room; false if it was stopped first.
    pub fn spool_window(&mut self, id: WindowId, sums: WindowSums) -> Result<bool, Error> {
        let part = self.parts.get(&id).copied().unwrap_or(0);
        let bytes = sums.bytes();
        let records = sums.envelopes(&self.origin, id, part);
        let when_full = match self.mode {
            Mode::Live => WhenFull::DropOldest,
            Mode::Replay => WhenFull::Refuse,
        };
        loop {
            let done = self.shared.spool().append(&records, when_full)?;
            if done {
                break;
            }
            if self.mode == Mode::Live {
                // Larger than the whole bound: dropped, and the spool said so.
                self.parts.insert(id, part + 1);
                return Ok(true);
            }
            if self.stopped() {
                return Ok(false);
            }
            let spool = self.shared.spool();
            let _unused = self
                .shared
                .changed
                .wait_timeout(spool, Duration::from_millis(200))
                .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        self.shared.changed.notify_all();
        self.parts.insert(id, part + 1);
        let newest = id.0;
        self.parts.retain(|w, _| w.0 >= newest - PARTS_KEPT_US);
        self.report.windows += 1;
        self.report.bytes += bytes;
        Ok(true)
    }

    /// Adds rows to their windows without spooling them.
    pub fn add(&mut self, rows: &[Row]) {
        self.windows.add(rows);
    }

    /// Spools every open window, oldest first, calling `spooled` after each; false if stopped
    /// first.
    pub fn spool_open(
        &mut self,
        mut spooled: impl FnMut(WindowId) -> Result<(), Error>,
    ) -> Result<bool, Error> {
        let ids: Vec<WindowId> = self.windows.ids().collect();
        for id in ids {
            let Some(sums) = self.windows.take(id) else {
                continue;
            };
            if !self.spool_window(id, sums)? {
                return Ok(false);
            }
            spooled(id)?;
        }
        Ok(true)
    }

    /// Lets the sender empty the spool, for at most `wait` (`None`: until done or stopped),
    /// then stops it. `progress` is called about every 100 ms.
    pub fn close(
        &mut self,
        wait: Option<Duration>,
        mut progress: impl FnMut(&Forwarder),
    ) -> ForwardReport {
        self.shared.closing.store(true, Ordering::Relaxed);
        self.shared.changed.notify_all();
        let start = Instant::now();
        if let Some(sender) = self.sender.take() {
            while !sender.is_finished() {
                let late = wait.is_some_and(|w| start.elapsed() >= w);
                if late || self.stopped() {
                    self.shared.abort.store(true, Ordering::Relaxed);
                }
                progress(self);
                std::thread::sleep(Duration::from_millis(100));
            }
            if sender.join().is_err() {
                tracing::error!(
                    "telemetry: the sender thread panicked; unsent records stay in the spool"
                );
            }
        }
        let spool = self.shared.spool();
        self.report.left_in_spool = spool.pending();
        self.report.dropped = spool.dropped;
        drop(spool);
        self.report.delivery = self.shared.delivery();
        self.report.clone()
    }

    /// Spools the open windows; a failure (the spool's disk full) costs those windows their
    /// forwarding, never the run: it is logged and counted.
    fn spool_or_log(&mut self) {
        if let Err(e) = self.spool_open(|_| Ok(())) {
            self.report.spool_errors += 1;
            tracing::error!("telemetry: a window is not forwarded: {e}");
        }
    }

    /// The report of the last [`Forwarder::close`] (after `finish`).
    pub fn report(&self) -> &ForwardReport {
        &self.report
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        if self.sender.is_some() {
            self.shared.abort.store(true, Ordering::Relaxed);
            self.shared.changed.notify_all();
            if let Some(s) = self.sender.take() {
                let _ = s.join();
            }
        }
    }
}

impl Sink for Forwarder {
    /// Rows of a live run come when their window closes: every window they touch is spooled at
    /// once, late rows as a further part.
    fn write(&mut self, rows: &[Row]) -> Result<(), Error> {
        self.windows.add(rows);
        self.spool_or_log();
        Ok(())
    }

    fn finish(&mut self) -> Result<(), Error> {
        self.spool_or_log();
        let wait = self.drain;
        let report = self.close(Some(wait), |_| {});
        if report.left_in_spool > 0 {
            tracing::warn!(
                "telemetry: {} records not delivered within {} s stay in the spool; the next run sends them",
                report.left_in_spool,
                wait.as_secs()
            );
        }
        Ok(())
    }
}

/// Checks that `url` is an http(s) URL without a path the routes would be appended to wrongly.
fn check_url(url: &str) -> Result<(), Error> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    match rest {
        Some(r) if !r.is_empty() && !r.starts_with('/') && !r.contains(['?', '#', ' ']) => Ok(()),
        _ => Err(Error::Invalid(format!(
            "--telemetry {url}: not an http(s) URL of the telemetry service (e.g. https://telemetry.status.im or http://127.0.0.1:8080)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        for ok in [
            "https://telemetry.status.im",
            "http://127.0.0.1:8080",
            "http://[::1]:8080/",
            "https://example.org/telemetry",
        ] {
            assert!(check_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "telemetry.status.im",
            "ftp://x",
            "http://",
            "http:///x",
            "http://a b",
        ] {
            let err = check_url(bad).expect_err(bad).to_string();
            assert!(err.contains("http(s) URL"), "{err}");
        }
    }
}
