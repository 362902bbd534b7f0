//! The on-disk spool between the windows and the telemetry service: append-only segment files of
//! JSON lines plus an acknowledged position, each write synced, so records survive a crash or a
//! restart and are sent at least once. The spool is bounded: in live mode the oldest records are
//! dropped (with a warning naming them) when the bound is hit; a replay waits instead.

use std::collections::VecDeque;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::records::Route;
use crate::Error;

/// One record waiting to be sent: where it goes, its idempotency key and its JSON body.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    pub route: Route,
    /// The idempotency key as hex (`Idempotency-Key` header of `/protocol-stats`).
    pub key: String,
    pub window_start_us: i64,
    pub window_secs: u32,
    pub part: u32,
    /// The body: a `ProtocolStats` object, or one `/record-metrics` item.
    pub body: serde_json::Value,
}

/// A position in the spool: a segment and a byte offset in it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pos {
    pub segment: u64,
    pub offset: u64,
}

/// What to do when an append would pass the bound.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WhenFull {
    /// Drop the oldest segments (live mode: the source cannot wait).
    DropOldest,
    /// Append nothing and report it (a replay waits for the sender to make room).
    Refuse,
}

/// A segment file and its length.
#[derive(Clone, Copy, Debug)]
struct Segment {
    seq: u64,
    len: u64,
}

/// The spool directory: `seg-<n>.jsonl` files, the `acked` position and a `lock` file.
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    segment_bytes: u64,
    segments: VecDeque<Segment>,
    acked: Pos,
    writer: Option<File>,
    /// Number of the next segment; never reused, so positions only grow.
    next_seq: u64,
    /// Records appended and not yet acknowledged.
    pending: u64,
    /// Records dropped because the bound was hit, over the life of this handle.
    pub dropped: u64,
    _lock: File,
}

/// Smallest and largest segment size.
const MIN_SEGMENT: u64 = 1024;
const MAX_SEGMENT: u64 = 8 << 20;

impl Spool {
    /// Opens (or creates) the spool in `dir`, bounded to `max_bytes` on disk. Fails if another
    /// process holds it. A record cut short by a crash is removed.
    pub fn open(dir: &Path, max_bytes: u64) -> Result<Spool, Error> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let lock_path = dir.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| Error::io(&lock_path, e))?;
        if lock.try_lock().is_err() {
            return Err(Error::Invalid(format!(
                "{}: another wakuprof is forwarding from this spool (use another --state-dir)",
                dir.display()
            )));
        }
        let mut segments: Vec<Segment> = Vec::new();
        for e in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
            let e = e.map_err(|e| Error::io(dir, e))?;
            let name = e.file_name();
            let Some(seq) = name
                .to_str()
                .and_then(|n| n.strip_prefix("seg-"))
                .and_then(|n| n.strip_suffix(".jsonl"))
                .and_then(|n| n.parse::<u64>().ok())
            else {
                continue;
            };
            let len = e.metadata().map_err(|err| Error::io(e.path(), err))?.len();
            segments.push(Segment { seq, len });
        }
        segments.sort_by_key(|s| s.seq);
        let mut spool = Spool {
            dir: dir.to_path_buf(),
            max_bytes,
            segment_bytes: (max_bytes / 8).clamp(MIN_SEGMENT, MAX_SEGMENT),
            segments: segments.into(),
            acked: Pos::default(),
            writer: None,
            next_seq: 1,
            pending: 0,
            dropped: 0,
            _lock: lock,
        };
        spool.acked = spool.read_acked()?;
        let last = spool.segments.back().map_or(0, |s| s.seq);
        spool.next_seq = last.max(spool.acked.segment) + 1;
        spool.repair_tail()?;
        let first = spool.segments.front().map(|s| s.seq);
        if let Some(first) = first
            && spool.acked.segment < first
        {
            spool.acked = Pos {
                segment: first,
                offset: 0,
            };
        }
        while let Some(s) = spool.segments.front().copied() {
            if s.seq < spool.acked.segment {
                spool.remove_segment(s.seq)?;
            } else {
                break;
            }
        }
        if let Some(head) = spool.segments.front()
            && spool.acked.segment == head.seq
        {
            spool.acked.offset = spool.acked.offset.min(head.len);
        }
        spool.pending = spool.count_from(spool.acked)?;
        Ok(spool)
    }

    /// Records waiting to be sent.
    pub fn pending(&self) -> u64 {
        self.pending
    }

    /// Bytes the segment files take on disk.
    pub fn disk_bytes(&self) -> u64 {
        self.segments.iter().map(|s| s.len).sum()
    }

    /// Appends records (one window's, usually) and syncs them. Returns false, having written
    /// nothing, when `when_full` is [`WhenFull::Refuse`] and the records do not fit yet, or when
    /// they are larger than the whole bound (dropped with a warning; for `Refuse`, an error).
    pub fn append(&mut self, records: &[Envelope], when_full: WhenFull) -> Result<bool, Error> {
        let mut buf = Vec::new();
        for r in records {
            serde_json::to_writer(&mut buf, r).map_err(|e| Error::Invalid(e.to_string()))?;
            buf.push(b'\n');
        }
        let add = buf.len() as u64;
        if add > self.max_bytes {
            let window = records.first().map_or(0, |r| r.window_start_us);
            let what = format!(
                "the records of the window of {} take {add} bytes, more than the whole telemetry spool bound of {} bytes",
                utc(window),
                self.max_bytes
            );
            if when_full == WhenFull::Refuse {
                return Err(Error::Invalid(format!(
                    "{what}: raise --telemetry-spool-max"
                )));
            }
            tracing::warn!("{what}: they are dropped (raise --telemetry-spool-max)");
            self.dropped += records.len() as u64;
            return Ok(false);
        }
        if when_full == WhenFull::Refuse
            && self.pending > 0
            && self.disk_bytes() + add > self.max_bytes
        {
            return Ok(false);
        }
        self.reclaim_acked()?;
        let rotate = self
            .segments
            .back()
            .is_none_or(|s| s.len > 0 && s.len + add > self.segment_bytes);
        if rotate {
            self.new_segment()?;
        }
        while self.disk_bytes() + add > self.max_bytes && self.segments.len() > 1 {
            self.drop_oldest()?;
        }
        let seq = self.segments.back().map_or(0, |s| s.seq);
        let path = self.segment_path(seq);
        if self.writer.is_none() {
            let f = OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(|e| Error::io(&path, e))?;
            self.writer = Some(f);
        }
        if let Some(w) = self.writer.as_mut() {
            w.write_all(&buf).map_err(|e| Error::io(&path, e))?;
            w.sync_data().map_err(|e| Error::io(&path, e))?;
        }
        if let Some(s) = self.segments.back_mut() {
            s.len += add;
        }
        self.pending += records.len() as u64;
        Ok(true)
    }

    /// Up to `n` records from the acknowledged position, each with the position after it.
    pub fn peek(&self, n: usize) -> Result<Vec<(Pos, Envelope)>, Error> {
        let mut out = Vec::new();
        for s in &self.segments {
            if out.len() >= n {
                break;
            }
            if s.seq < self.acked.segment {
                continue;
            }
            let start = if s.seq == self.acked.segment {
                self.acked.offset
            } else {
                0
            };
            self.read_segment(s.seq, start, n - out.len(), &mut out)?;
        }
        Ok(out)
    }

    /// Acknowledges every record up to `pos` (`count` of them): they were delivered. Positions
    /// at or before the current one (e.g. in a segment dropped meanwhile) are ignored.
    pub fn ack(&mut self, pos: Pos, count: u64) -> Result<(), Error> {
        if pos <= self.acked {
            return Ok(());
        }
        self.acked = pos;
        self.pending = self.pending.saturating_sub(count);
        self.write_acked()?;
        while let Some(s) = self.segments.front().copied() {
            if s.seq < self.acked.segment {
                self.remove_segment(s.seq)?;
            } else {
                break;
            }
        }
        Ok(())
    }

    fn segment_path(&self, seq: u64) -> PathBuf {
        self.dir.join(format!("seg-{seq:020}.jsonl"))
    }

    /// Starts a new, empty segment after the last one.
    fn new_segment(&mut self) -> Result<(), Error> {
        let seq = self.next_seq;
        self.next_seq += 1;
        let path = self.segment_path(seq);
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| Error::io(&path, e))?;
        sync_dir(&self.dir);
        self.writer = Some(f);
        self.segments.push_back(Segment { seq, len: 0 });
        if self.segments.len() == 1 {
            self.acked = Pos {
                segment: seq,
                offset: 0,
            };
            self.write_acked()?;
        }
        Ok(())
    }

    /// When everything is acknowledged, removes the segments so their space is free again.
    fn reclaim_acked(&mut self) -> Result<(), Error> {
        if self.pending > 0 {
            return Ok(());
        }
        let all_read = self.segments.back().is_some_and(|s| {
            self.acked
                == Pos {
                    segment: s.seq,
                    offset: s.len,
                }
                && s.len > 0
        });
        if all_read {
            while let Some(s) = self.segments.front().copied() {
                self.remove_segment(s.seq)?;
            }
            self.writer = None;
        }
        Ok(())
    }

    /// Drops the oldest segment, warning about the unsent records it held.
    fn drop_oldest(&mut self) -> Result<(), Error> {
        let Some(s) = self.segments.front().copied() else {
            return Ok(());
        };
        let start = if s.seq == self.acked.segment {
            self.acked.offset
        } else {
            0
        };
        let mut lost = Vec::new();
        if s.seq >= self.acked.segment {
            self.read_segment(s.seq, start, usize::MAX, &mut lost)?;
        }
        let path = self.segment_path(s.seq);
        self.remove_segment(s.seq)?;
        if let Some(next) = self.segments.front()
            && self.acked.segment <= s.seq
        {
            self.acked = Pos {
                segment: next.seq,
                offset: 0,
            };
            self.write_acked()?;
        }
        if !lost.is_empty() {
            let n = lost.len() as u64;
            self.pending = self.pending.saturating_sub(n);
            self.dropped += n;
            let first = lost
                .iter()
                .map(|(_, e)| e.window_start_us)
                .min()
                .unwrap_or(0);
            let last = lost
                .iter()
                .map(|(_, e)| e.window_start_us)
                .max()
                .unwrap_or(0);
            tracing::warn!(
                "telemetry spool over its bound of {} bytes: dropped the {n} oldest unsent records (windows {} to {}) with {}",
                self.max_bytes,
                utc(first),
                utc(last),
                path.display()
            );
        }
        Ok(())
    }

    fn remove_segment(&mut self, seq: u64) -> Result<(), Error> {
        let path = self.segment_path(seq);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(&path, e)),
        }
        self.segments.retain(|s| s.seq != seq);
        if self.segments.is_empty() {
            self.writer = None;
        }
        sync_dir(&self.dir);
        Ok(())
    }

    /// Reads up to `n` records of segment `seq` from `start`.
    fn read_segment(
        &self,
        seq: u64,
        start: u64,
        n: usize,
        out: &mut Vec<(Pos, Envelope)>,
    ) -> Result<(), Error> {
        let path = self.segment_path(seq);
        let mut f = File::open(&path).map_err(|e| Error::io(&path, e))?;
        f.seek(SeekFrom::Start(start))
            .map_err(|e| Error::io(&path, e))?;
        let mut r = BufReader::new(f);
        let mut offset = start;
        let mut line = Vec::new();
        let mut taken = 0;
        while taken < n {
            line.clear();
            let got = r
                .read_until(b'\n', &mut line)
                .map_err(|e| Error::io(&path, e))?;
            if got == 0 || line.last() != Some(&b'\n') {
                break;
            }
            offset += got as u64;
            let env: Envelope = serde_json::from_slice(&line).map_err(|e| {
                Error::Invalid(format!("{}: unreadable spool record: {e}", path.display()))
            })?;
            out.push((
                Pos {
                    segment: seq,
                    offset,
                },
                env,
            ));
            taken += 1;
        }
        Ok(())
    }

    /// Records from `pos` to the end.
    fn count_from(&self, pos: Pos) -> Result<u64, Error> {
        let mut n = 0u64;
        for s in &self.segments {
            if s.seq < pos.segment {
                continue;
            }
            let path = self.segment_path(s.seq);
            let mut f = File::open(&path).map_err(|e| Error::io(&path, e))?;
            let start = if s.seq == pos.segment { pos.offset } else { 0 };
            f.seek(SeekFrom::Start(start))
                .map_err(|e| Error::io(&path, e))?;
            let mut bytes = Vec::new();
            f.read_to_end(&mut bytes).map_err(|e| Error::io(&path, e))?;
            n += bytes.iter().filter(|&&b| b == b'\n').count() as u64;
        }
        Ok(n)
    }

    /// Cuts the last segment after its last whole, readable record (a crash may leave half a
    /// line).
    fn repair_tail(&mut self) -> Result<(), Error> {
        let Some(last) = self.segments.back().copied() else {
            return Ok(());
        };
        let path = self.segment_path(last.seq);
        let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        let mut good = 0usize;
        for line in bytes.split_inclusive(|&b| b == b'\n') {
            if line.last() != Some(&b'\n') || serde_json::from_slice::<Envelope>(line).is_err() {
                break;
            }
            good += line.len();
        }
        if good < bytes.len() {
            tracing::warn!(
                "{}: removing {} bytes of a record cut short (the process stopped while writing it)",
                path.display(),
                bytes.len() - good
            );
            let f = OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| Error::io(&path, e))?;
            f.set_len(good as u64).map_err(|e| Error::io(&path, e))?;
            f.sync_all().map_err(|e| Error::io(&path, e))?;
            if let Some(s) = self.segments.back_mut() {
                s.len = good as u64;
            }
        }
        Ok(())
    }

    fn read_acked(&self) -> Result<Pos, Error> {
        let path = self.dir.join("acked");
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Pos::default()),
            Err(e) => return Err(Error::io(&path, e)),
        };
        let mut it = text.split_whitespace().map(str::parse::<u64>);
        match (it.next(), it.next()) {
            (Some(Ok(segment)), Some(Ok(offset))) => Ok(Pos { segment, offset }),
            _ => Err(Error::Invalid(format!(
                "{}: not a spool position ('<segment> <offset>')",
                path.display()
            ))),
        }
    }

    /// Writes the acknowledged position atomically: temporary file, sync, rename, sync the
    /// directory.
    fn write_acked(&self) -> Result<(), Error> {
        let path = self.dir.join("acked");
        let tmp = self.dir.join("acked.tmp");
        let mut f = File::create(&tmp).map_err(|e| Error::io(&tmp, e))?;
        writeln!(f, "{} {}", self.acked.segment, self.acked.offset)
            .map_err(|e| Error::io(&tmp, e))?;
        f.sync_all().map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, &path).map_err(|e| Error::io(&path, e))?;
        sync_dir(&self.dir);
        Ok(())
    }
}

/// Syncs a directory so renames and new files in it are durable (best effort).
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// A window start (µs since the epoch) as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn utc(us: i64) -> String {
    let (date, hour) = crate::sink::parquet::partition(us);
    let secs = us.div_euclid(1_000_000).rem_euclid(3600);
    format!("{date}T{hour:02}:{:02}:{:02}Z", secs / 60, secs % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(window: i64) -> Envelope {
        Envelope {
            route: Route::ProtocolStats,
            key: format!("k{window}"),
            window_start_us: window * 1_000_000,
            window_secs: 10,
            part: 0,
            body: serde_json::json!({"hostID": "h", "pad": "x".repeat(100)}),
        }
    }

    fn windows(v: &[(Pos, Envelope)]) -> Vec<i64> {
        v.iter()
            .map(|(_, e)| e.window_start_us / 1_000_000)
            .collect()
    }

    #[test]
    fn records_survive_reopen_until_acknowledged() {
        let dir = tempfile::tempdir().expect("temp dir");
        {
            let mut s = Spool::open(dir.path(), 1 << 20).expect("opens");
            assert!(
                s.append(&[env(0), env(10)], WhenFull::DropOldest)
                    .expect("appends")
            );
            assert!(s.append(&[env(20)], WhenFull::DropOldest).expect("appends"));
            let got = s.peek(2).expect("peeks");
            assert_eq!(windows(&got), [0, 10]);
            s.ack(got[0].0, 1).expect("acks");
            assert_eq!(s.pending(), 2);
        }
        let s = Spool::open(dir.path(), 1 << 20).expect("reopens");
        assert_eq!(s.pending(), 2);
        assert_eq!(windows(&s.peek(10).expect("peeks")), [10, 20]);
    }

    #[test]
    fn a_second_process_cannot_open_the_same_spool() {
        let dir = tempfile::tempdir().expect("temp dir");
        let _s = Spool::open(dir.path(), 1 << 20).expect("opens");
        let err = Spool::open(dir.path(), 1 << 20).err().expect("locked");
        assert!(err.to_string().contains("another wakuprof"), "{err}");
    }

    #[test]
    fn a_half_written_record_is_cut_on_open() {
        let dir = tempfile::tempdir().expect("temp dir");
        {
            let mut s = Spool::open(dir.path(), 1 << 20).expect("opens");
            s.append(&[env(0), env(10)], WhenFull::DropOldest)
                .expect("appends");
        }
        let seg = std::fs::read_dir(dir.path())
            .expect("lists")
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| p.extension().is_some_and(|e| e == "jsonl"))
            .expect("a segment");
        let mut f = OpenOptions::new().append(true).open(&seg).expect("opens");
        f.write_all(b"{\"route\":\"protocol-st").expect("writes");
        drop(f);
        let mut s = Spool::open(dir.path(), 1 << 20).expect("reopens");
        assert_eq!(s.pending(), 2);
        s.append(&[env(20)], WhenFull::DropOldest).expect("appends");
        assert_eq!(windows(&s.peek(10).expect("peeks")), [0, 10, 20]);
    }

    #[test]
    fn the_bound_drops_the_oldest_or_refuses() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut s = Spool::open(dir.path(), 2048).expect("opens");
        for w in 0..40 {
            assert!(
                s.append(&[env(w * 10)], WhenFull::DropOldest)
                    .expect("appends")
            );
            assert!(s.disk_bytes() <= 2048, "{} bytes on disk", s.disk_bytes());
        }
        assert!(s.dropped > 0);
        let left = windows(&s.peek(100).expect("peeks"));
        assert_eq!(left.len() as u64 + s.dropped, 40);
        assert_eq!(s.pending(), left.len() as u64);
        assert_eq!(left.last(), Some(&390), "the newest are kept");
        assert!(
            left.windows(2).all(|w| w[1] == w[0] + 10),
            "what is kept is contiguous"
        );
        let mut w = 400;
        while s.append(&[env(w)], WhenFull::Refuse).expect("appends") {
            w += 10;
            assert!(w < 1000, "refusing never starts");
        }
        let before = s.pending();
        assert!(!s.append(&[env(w)], WhenFull::Refuse).expect("refuses"));
        assert_eq!(s.pending(), before);
        assert!(s.disk_bytes() <= 2048, "{} bytes on disk", s.disk_bytes());
        let all = s.peek(100).expect("peeks");
        let (last, _) = all[all.len() - 1];
        s.ack(last, all.len() as u64).expect("acks");
        assert!(s.append(&[env(w)], WhenFull::Refuse).expect("room again"));
        assert_eq!(windows(&s.peek(10).expect("peeks")), [w]);
    }

    #[test]
    fn acknowledging_a_dropped_position_is_ignored() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut s = Spool::open(dir.path(), 2048).expect("opens");
        s.append(&[env(0)], WhenFull::DropOldest).expect("appends");
        let early = s.peek(1).expect("peeks")[0].0;
        for w in 1..40 {
            s.append(&[env(w * 10)], WhenFull::DropOldest)
                .expect("appends");
        }
        let pending = s.pending();
        s.ack(early, 1).expect("ignored");
        assert_eq!(s.pending(), pending);
        assert_eq!(s.peek(1).expect("peeks").len(), 1);
    }

    #[test]
    fn utc_text() {
        assert_eq!(utc(1_729_281_222_000_000), "2024-10-18T19:53:42Z");
    }
}
