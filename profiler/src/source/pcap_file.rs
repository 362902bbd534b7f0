//! Offline input: one or more pcap/pcapng files read through libpcap, merged in time order.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use pcap::{Capture, Offline, Precision};

use super::{LinkType, RawPacket};
use crate::Error;

/// One open capture file and its next packet, copied so that several files can be merged.
struct Input {
    path: PathBuf,
    capture: Capture<Offline>,
    link: LinkType,
    /// Packets read so far from this file (1-based number of `head`).
    read: u64,
    head: Option<Head>,
}

/// A buffered packet waiting for its turn in the merge.
struct Head {
    ts_ns: i64,
    wire_len: u32,
    data: Vec<u8>,
}

/// Reads several capture files as one stream, always yielding the earliest buffered packet next.
/// A file that cannot be opened or turns out corrupt is left with an error; the others go on.
pub struct CaptureSet {
    inputs: Vec<Input>,
    errors: Vec<Error>,
    /// Bytes of capture data read so far (record headers included), for progress reports.
    bytes_read: u64,
    /// Reading ends early once this is set (a stop request).
    stop: Option<Arc<AtomicBool>>,
}

/// Size of a classic pcap record header, used to estimate progress through a file.
const RECORD_HEADER_LEN: u64 = 16;

impl CaptureSet {
    /// Opens every file. A file that cannot be opened (or has an unsupported link type) is left
    /// out with an error (see [`CaptureSet::take_errors`]); fails only when none opens.
    pub fn open(paths: &[PathBuf]) -> Result<CaptureSet, Error> {
        let mut inputs = Vec::with_capacity(paths.len());
        let mut errors = Vec::new();
        for path in paths {
            match open_one(path) {
                Ok(input) => inputs.push(input),
                Err(e) => errors.push(e),
            }
        }
        if inputs.is_empty() && !errors.is_empty() {
            return Err(errors.swap_remove(0));
        }
        let mut set = CaptureSet {
            inputs,
            errors,
            bytes_read: 0,
            stop: None,
        };
        for i in 0..set.inputs.len() {
            set.advance(i);
        }
        Ok(set)
    }

    /// Ends reading early once `flag` is set (checked before each packet).
    pub fn stop_when(&mut self, flag: Arc<AtomicBool>) {
        self.stop = Some(flag);
    }

    fn stopped(&self) -> bool {
        self.stop
            .as_ref()
            .is_some_and(|s| s.load(Ordering::Relaxed))
    }

    /// Calls `f` for every packet of every file, in timestamp order across files (each file's own
    /// order is kept). Returns when all files are exhausted or have failed, or when stopped.
    pub fn for_each(&mut self, mut f: impl FnMut(&RawPacket<'_>, u64)) {
        if self.inputs.len() == 1 {
            return self.single(&mut f);
        }
        while !self.stopped() {
            let next = self
                .inputs
                .iter()
                .enumerate()
                .filter_map(|(i, inp)| inp.head.as_ref().map(|h| (h.ts_ns, i)))
                .min();
            let Some((_, i)) = next else { return };
            if let Some(head) = &self.inputs[i].head {
                let pkt = RawPacket {
                    ts_ns: head.ts_ns,
                    link: self.inputs[i].link,
                    data: &head.data,
                    wire_len: head.wire_len,
                };
                f(&pkt, self.bytes_read);
            }
            self.advance(i);
        }
    }

    /// One file needs no merge: packets go from libpcap's buffer to `f` without a copy.
    fn single(&mut self, f: &mut impl FnMut(&RawPacket<'_>, u64)) {
        let input = &mut self.inputs[0];
        if let Some(head) = input.head.take() {
            let pkt = RawPacket {
                ts_ns: head.ts_ns,
                link: input.link,
                data: &head.data,
                wire_len: head.wire_len,
            };
            f(&pkt, self.bytes_read);
        }
        while !self
            .stop
            .as_ref()
            .is_some_and(|s| s.load(Ordering::Relaxed))
        {
            match input.capture.next_packet() {
                Ok(p) => {
                    input.read += 1;
                    self.bytes_read += RECORD_HEADER_LEN + p.data.len() as u64;
                    let pkt = RawPacket {
                        ts_ns: ts_ns(p.header),
                        link: input.link,
                        data: p.data,
                        wire_len: p.header.len,
                    };
                    f(&pkt, self.bytes_read);
                }
                Err(e) => {
                    self.fail(0, e);
                    return;
                }
            }
        }
    }

    /// Records why input `i` stopped, unless it simply ended.
    fn fail(&mut self, i: usize, e: pcap::Error) {
        if matches!(e, pcap::Error::NoMorePackets) {
            return;
        }
        let input = &self.inputs[i];
        self.errors.push(Error::CorruptCapture {
            path: input.path.clone(),
            packet: input.read + 1,
            counted: input.read,
            message: libpcap_message(&e),
        });
    }

    /// Errors met while reading (corrupt or truncated files), in the order they happened.
    pub fn take_errors(&mut self) -> Vec<Error> {
        std::mem::take(&mut self.errors)
    }

    fn advance(&mut self, i: usize) {
        let input = &mut self.inputs[i];
        let mut head = input.head.take().unwrap_or(Head {
            ts_ns: 0,
            wire_len: 0,
            data: Vec::new(),
        });
        match input.capture.next_packet() {
            Ok(p) => {
                input.read += 1;
                head.ts_ns = ts_ns(p.header);
                head.wire_len = p.header.len;
                head.data.clear();
                head.data.extend_from_slice(p.data);
                self.bytes_read += RECORD_HEADER_LEN + p.data.len() as u64;
                input.head = Some(head);
            }
            Err(e) => self.fail(i, e),
        }
    }
}

fn open_one(path: &Path) -> Result<Input, Error> {
    let capture = Capture::from_file_with_precision(path, Precision::Nano).map_err(|e| {
        Error::OpenCapture {
            path: path.to_path_buf(),
            message: libpcap_message(&e),
        }
    })?;
    let dlt = capture.get_datalink();
    let link = LinkType::from_dlt(dlt.0).ok_or_else(|| Error::UnsupportedLinkType {
        path: path.to_path_buf(),
        linktype: dlt.0,
        name: dlt.get_name().unwrap_or_else(|_| "unknown".into()),
    })?;
    Ok(Input {
        path: path.to_path_buf(),
        capture,
        link,
        read: 0,
        head: None,
    })
}

/// A record's time in ns; libpcap puts nanoseconds in `tv_usec` when opened with nano precision.
fn ts_ns(h: &pcap::PacketHeader) -> i64 {
    h.ts.tv_sec * 1_000_000_000 + h.ts.tv_usec
}

/// libpcap's own text without the crate's "libpcap error:" prefix.
fn libpcap_message(e: &pcap::Error) -> String {
    match e {
        pcap::Error::PcapError(s) => s.clone(),
        other => other.to_string(),
    }
}
