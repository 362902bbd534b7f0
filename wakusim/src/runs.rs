//! Runs as the command line and the REST API start them: run a scenario, build its report and
//! write `report.json`; and, for the API, runs in the background that can be watched, stopped
//! and asked for their report. One run at a time: a run's namespaces are named for the process.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    thread::{self, JoinHandle},
    time::Instant,
};

use anyhow::Context as _;
use serde::Serialize;

use crate::{
    error::Error,
    report::Report,
    run,
    scenario::Scenario,
    sweep::{self, Param},
};

/// Runs `s` with its captures in `out`, builds the report and writes `out/report.json`.
/// `stop` ends the publishing early; what ran is still measured.
pub fn execute(s: &Scenario, out: &Path, stop: &AtomicBool) -> anyhow::Result<Report> {
    std::fs::create_dir_all(out).with_context(|| format!("create {}", out.display()))?;
    let outcome = run::run(s, out, stop)?;
    let report = Report::build(s, &outcome)?;
    let path = out.join("report.json");
    std::fs::write(&path, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("write {}", path.display()))?;
    Ok(report)
}

/// What a background run does.
pub enum Job {
    /// One run of a scenario; its report is report.json's.
    Run(Scenario),
    /// A sweep of one parameter over values; its report is sweep.json's.
    Sweep {
        scenario: Scenario,
        param: Param,
        values: Vec<f64>,
    },
}

impl Job {
    fn kind(&self) -> Kind {
        match self {
            Job::Run(_) => Kind::Run,
            Job::Sweep { .. } => Kind::Sweep,
        }
    }

    fn scenario(&self) -> &Scenario {
        match self {
            Job::Run(s) | Job::Sweep { scenario: s, .. } => s,
        }
    }

    /// Runs the job into `out`; its report as JSON.
    fn execute(&self, out: &Path, stop: &AtomicBool) -> anyhow::Result<String> {
        Ok(match self {
            Job::Run(s) => serde_json::to_string(&execute(s, out, stop)?)?,
            Job::Sweep {
                scenario,
                param,
                values,
            } => serde_json::to_string(&sweep::execute(scenario, *param, values, out, stop)?)?,
        })
    }
}

/// A run or a sweep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Run,
    Sweep,
}

/// Where a background run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Running,
    /// Asked to stop: closing, capturing the rest and measuring.
    Stopping,
    Done,
    Failed,
}

/// What `GET /runs/{id}` shows.
#[derive(Debug, Clone, Serialize)]
pub struct RunInfo {
    pub id: u64,
    pub kind: Kind,
    pub status: Status,
    /// Nodes of the scenario (a sweep's base scenario).
    pub nodes: usize,
    /// Seconds of publishing the scenario asks for (per value, for a sweep).
    pub duration_secs: f64,
    /// Seconds since the run started (setup, publishing, teardown, measuring).
    pub elapsed_secs: f64,
    /// Where the captures and report.json are.
    pub out: PathBuf,
    /// Why it failed.
    pub error: Option<String>,
}

struct Entry {
    info: RunInfo,
    started: Instant,
    stop: Arc<AtomicBool>,
    report: Option<String>,
    thread: Option<JoinHandle<()>>,
}

/// The background runs of one server.
#[derive(Default)]
pub struct Runs {
    entries: Arc<Mutex<BTreeMap<u64, Entry>>>,
}

impl Runs {
    /// Starts `job` in the background with its files under `root/run<id>`.
    pub fn start(&self, job: Job, root: &Path) -> Result<RunInfo, Error> {
        let mut entries = self.lock();
        if let Some(busy) = entries
            .values()
            .find(|e| matches!(e.info.status, Status::Running | Status::Stopping))
        {
            return Err(Error::Conflict(format!(
                "run {} is in progress; one run at a time",
                busy.info.id
            )));
        }
        let id = entries.keys().next_back().map_or(1, |last| last + 1);
        let info = RunInfo {
            id,
            kind: job.kind(),
            status: Status::Running,
            nodes: job.scenario().network.nodes,
            duration_secs: job.scenario().duration_secs,
            elapsed_secs: 0.0,
            out: root.join(format!("run{id}")),
            error: None,
        };
        let stop = Arc::new(AtomicBool::new(false));
        let (shared, flag, out) = (self.entries.clone(), stop.clone(), info.out.clone());
        let thread = thread::Builder::new()
            .name(format!("run{id}"))
            .spawn(move || {
                let result = job.execute(&out, &flag);
                let mut entries = shared.lock().unwrap_or_else(PoisonError::into_inner);
                if let Some(e) = entries.get_mut(&id) {
                    match result {
                        Ok(report) => {
                            e.info.status = Status::Done;
                            e.report = Some(report);
                        }
                        Err(err) => {
                            tracing::warn!("run {id}: {err:#}");
                            e.info.status = Status::Failed;
                            e.info.error = Some(format!("{err:#}"));
                        }
                    }
                    e.info.elapsed_secs = e.started.elapsed().as_secs_f64();
                }
            })?;
        entries.insert(
            id,
            Entry {
                info: info.clone(),
                started: Instant::now(),
                stop,
                report: None,
                thread: Some(thread),
            },
        );
        Ok(info)
    }

    /// Every run, by id.
    pub fn list(&self) -> Vec<RunInfo> {
        self.lock().values().map(Entry::info).collect()
    }

    /// Run `id` as it is now.
    pub fn info(&self, id: u64) -> Result<RunInfo, Error> {
        self.with(id, |e| Ok(e.info()))
    }

    /// Asks run `id` to stop publishing; it still closes, captures and reports.
    pub fn stop(&self, id: u64) -> Result<RunInfo, Error> {
        self.with(id, |e| {
            if e.info.status == Status::Running {
                e.stop.store(true, Ordering::SeqCst);
                e.info.status = Status::Stopping;
            }
            Ok(e.info())
        })
    }

    /// The report of run `id` (JSON, as report.json or sweep.json), once it is done.
    pub fn report(&self, id: u64) -> Result<String, Error> {
        self.with(id, |e| match (&e.report, e.info.status) {
            (Some(r), _) => Ok(r.clone()),
            (None, Status::Failed) => Err(Error::Conflict(format!(
                "run {id} failed: {}",
                e.info.error.as_deref().unwrap_or("?")
            ))),
            (None, _) => Err(Error::Conflict(format!("run {id} is still running"))),
        })
    }

    /// Stops every run and waits for them to clean up.
    pub fn stop_all(&self) {
        let threads: Vec<JoinHandle<()>> = self
            .lock()
            .values_mut()
            .filter_map(|e| {
                e.stop.store(true, Ordering::SeqCst);
                e.thread.take()
            })
            .collect();
        for t in threads {
            if t.join().is_err() {
                tracing::warn!("a run panicked");
            }
        }
    }

    fn with<T>(&self, id: u64, f: impl FnOnce(&mut Entry) -> Result<T, Error>) -> Result<T, Error> {
        let mut entries = self.lock();
        let e = entries
            .get_mut(&id)
            .ok_or_else(|| Error::NotFound(format!("no run {id}")))?;
        f(e)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Entry {
    fn info(&self) -> RunInfo {
        let mut info = self.info.clone();
        if matches!(info.status, Status::Running | Status::Stopping) {
            info.elapsed_secs = self.started.elapsed().as_secs_f64();
        }
        info
    }
}
