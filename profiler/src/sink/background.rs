//! A sink run on a thread of its own, so that encoding and writing Parquet is off the path of
//! the packets. Rows cross a bounded channel in batches of a set size, so the rows in flight are
//! bounded too.

use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread::JoinHandle;

use super::Sink;
use crate::Error;
use crate::account::frames::FrameRow;
use crate::account::mesh::MeshRow;
use crate::account::messages::MessageRow;
use crate::account::record::Row;

/// Batches waiting in the channel; one more is being written.
const QUEUED_BATCHES: usize = 2;
/// Most rows in a batch: large enough that a batch makes columns worth compressing.
const MAX_BATCH_ROWS: usize = 8192;

/// What the writing thread is asked to do.
enum Job {
    Rows(Vec<Row>),
    Messages(Vec<MessageRow>),
    Frames(Vec<FrameRow>),
    Mesh(Vec<MeshRow>),
    Roll,
}

/// A sink of type `S` that runs on its own thread. The first error of the inner sink is
/// returned by the call that follows it (and by [`Sink::finish`]); the inner sink is given back
/// by [`Background::finish_into`].
pub struct Background<S: Sink + Send + 'static> {
    jobs: Option<SyncSender<Job>>,
    thread: Option<JoinHandle<(S, Result<(), Error>)>>,
    batch_rows: usize,
    /// The inner sink once its thread has ended.
    done: Option<S>,
}

impl<S: Sink + Send + 'static> Background<S> {
    /// Starts `sink` on a thread. Rows are sent an eighth of `pending_rows` at a time (the
    /// memory budget's rows in flight, see [`crate::memory::Shares`]), so that fewer than half
    /// of them are ever queued or being written.
    pub fn spawn(sink: S, pending_rows: usize) -> Result<Background<S>, Error> {
        let (jobs, inbox) = mpsc::sync_channel(QUEUED_BATCHES);
        let thread = std::thread::Builder::new()
            .name("wakuprof-writer".into())
            .spawn(move || serve(sink, &inbox))
            .map_err(|e| Error::Invalid(format!("cannot start the writer thread: {e}")))?;
        Ok(Background {
            jobs: Some(jobs),
            thread: Some(thread),
            batch_rows: (pending_rows / 8).clamp(1, MAX_BATCH_ROWS),
            done: None,
        })
    }

    /// The inner sink, once [`Sink::finish`] has run.
    pub fn finished(&self) -> Option<&S> {
        self.done.as_ref()
    }

    /// Sends `rows` in batches; an error means the thread stopped, and [`Self::stop`] says why.
    fn send<R: Clone>(&mut self, rows: &[R], job: fn(Vec<R>) -> Job) -> Result<(), Error> {
        for chunk in rows.chunks(self.batch_rows) {
            let sent = self.jobs.as_ref().map(|j| j.send(job(chunk.to_vec())));
            if !matches!(sent, Some(Ok(()))) {
                return self.stop();
            }
        }
        Ok(())
    }

    /// Closes the channel, waits for the thread and keeps the inner sink; returns its first
    /// error.
    fn stop(&mut self) -> Result<(), Error> {
        self.jobs = None;
        let Some(thread) = self.thread.take() else {
            return Ok(());
        };
        match thread.join() {
            Ok((sink, result)) => {
                self.done = Some(sink);
                result
            }
            Err(_) => Err(Error::Invalid("the writer thread panicked".into())),
        }
    }
}

/// The writing thread: hands every job to `sink` until the channel closes, then finishes it.
/// It stops at the first error, which the sender's next call (failing to send) then returns.
fn serve<S: Sink>(mut sink: S, inbox: &Receiver<Job>) -> (S, Result<(), Error>) {
    let mut result = Ok(());
    for job in inbox {
        if result.is_err() {
            break;
        }
        result = match job {
            Job::Rows(rows) => sink.write(&rows),
            Job::Messages(rows) => sink.messages(&rows),
            Job::Frames(rows) => sink.frames(&rows),
            Job::Mesh(rows) => sink.mesh(&rows),
            Job::Roll => sink.roll(),
        };
    }
    if result.is_ok() {
        result = sink.finish();
    }
    (sink, result)
}

impl<S: Sink + Send + 'static> Sink for Background<S> {
    fn write(&mut self, rows: &[Row]) -> Result<(), Error> {
        self.send(rows, Job::Rows)
    }

    fn messages(&mut self, rows: &[MessageRow]) -> Result<(), Error> {
        self.send(rows, Job::Messages)
    }

    fn frames(&mut self, rows: &[FrameRow]) -> Result<(), Error> {
        self.send(rows, Job::Frames)
    }

    fn mesh(&mut self, rows: &[MeshRow]) -> Result<(), Error> {
        self.send(rows, Job::Mesh)
    }

    fn finish(&mut self) -> Result<(), Error> {
        self.stop()
    }

    fn roll(&mut self) -> Result<(), Error> {
        let sent = self.jobs.as_ref().map(|j| j.send(Job::Roll));
        match sent {
            Some(Ok(())) => Ok(()),
            _ => self.stop(),
        }
    }
}

impl<S: Sink + Send + 'static> Drop for Background<S> {
    /// A run that ends without [`Sink::finish`] (an input error) still finishes its files.
    fn drop(&mut self) {
        let _ = self.stop();
    }
}
