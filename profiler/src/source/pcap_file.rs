//! Offline input: one or more pcap/pcapng files, merged in time order. Classic pcap is read
//! through libpcap; pcapng by [`super::pcapng`], which reads each packet by its own interface's
//! link type where libpcap refuses interfaces of different link types.

use std::os::fd::IntoRawFd;
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use pcap::{Capture, Offline, Precision};

use super::{LinkType, RawPacket, pcapng};
use crate::Error;

/// An open capture file, by format.
enum Reader {
    Pcap {
        capture: Capture<Offline>,
        link: LinkType,
        /// The stdio buffer libpcap reads through, when [`open_buffered`] opened the file.
        /// Declared after `capture` so that it is freed after libpcap closes the file.
        _buffer: Option<Box<[u8]>>,
    },
    Pcapng(pcapng::Reader),
}

impl Reader {
    /// The next packet, `None` at the end, or what is wrong with the file.
    fn next(&mut self) -> Result<Option<RawPacket<'_>>, String> {
        match self {
            Reader::Pcap { capture, link, .. } => match capture.next_packet() {
                Ok(p) => Ok(Some(RawPacket {
                    ts_ns: ts_ns(p.header),
                    link: *link,
                    data: p.data,
                    wire_len: p.header.len,
                })),
                Err(pcap::Error::NoMorePackets) => Ok(None),
                Err(e) => Err(libpcap_message(&e)),
            },
            Reader::Pcapng(r) => r.next_packet(),
        }
    }
}

/// One open capture file and its next packet, copied so that several files can be merged.
struct Input {
    path: PathBuf,
    reader: Reader,
    /// Packets read so far from this file (1-based number of `head`).
    read: u64,
    head: Option<Head>,
}

/// A buffered packet waiting for its turn in the merge.
struct Head {
    ts_ns: i64,
    link: LinkType,
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
    /// Reading ends early once one of these is set (a stop request).
    stop: Vec<Arc<AtomicBool>>,
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
            stop: Vec::new(),
        };
        for i in 0..set.inputs.len() {
            set.advance(i);
        }
        Ok(set)
    }

    /// Ends reading early once `flag` is set (checked before each packet); each call adds a
    /// flag.
    pub fn stop_when(&mut self, flag: Arc<AtomicBool>) {
        self.stop.push(flag);
    }

    fn stopped(&self) -> bool {
        self.stop.iter().any(|s| s.load(Ordering::Relaxed))
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
                    link: head.link,
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
                link: head.link,
                data: &head.data,
                wire_len: head.wire_len,
            };
            f(&pkt, self.bytes_read);
        }
        while !self.stop.iter().any(|s| s.load(Ordering::Relaxed)) {
            match input.reader.next() {
                Ok(Some(pkt)) => {
                    input.read += 1;
                    self.bytes_read += RECORD_HEADER_LEN + pkt.data.len() as u64;
                    f(&pkt, self.bytes_read);
                }
                Ok(None) => {
                    self.finish(0);
                    return;
                }
                Err(message) => {
                    self.fail(0, message);
                    return;
                }
            }
        }
    }

    /// Records why input `i` stopped.
    fn fail(&mut self, i: usize, message: String) {
        let input = &self.inputs[i];
        self.errors.push(Error::CorruptCapture {
            path: input.path.clone(),
            packet: input.read + 1,
            counted: input.read,
            message,
        });
    }

    /// Input `i` ended: the packets it skipped (interfaces of unreadable link types) are errors.
    fn finish(&mut self, i: usize) {
        let input = &self.inputs[i];
        if let Reader::Pcapng(r) = &input.reader {
            let path = &input.path;
            self.errors
                .extend(r.skipped().into_iter().map(|s| Error::SkippedInterface {
                    path: path.clone(),
                    interface: s.interface,
                    linktype: s.linktype,
                    packets: s.packets,
                }));
        }
    }

    /// Errors met while reading (corrupt or truncated files), in the order they happened.
    pub fn take_errors(&mut self) -> Vec<Error> {
        std::mem::take(&mut self.errors)
    }

    fn advance(&mut self, i: usize) {
        let input = &mut self.inputs[i];
        let mut head = input.head.take().unwrap_or(Head {
            ts_ns: 0,
            link: LinkType::RawIp,
            wire_len: 0,
            data: Vec::new(),
        });
        match input.reader.next() {
            Ok(Some(p)) => {
                input.read += 1;
                head.ts_ns = p.ts_ns;
                head.link = p.link;
                head.wire_len = p.wire_len;
                head.data.clear();
                head.data.extend_from_slice(p.data);
                self.bytes_read += RECORD_HEADER_LEN + p.data.len() as u64;
                input.head = Some(head);
            }
            Ok(None) => self.finish(i),
            Err(message) => self.fail(i, message),
        }
    }
}

fn open_one(path: &Path) -> Result<Input, Error> {
    let mut magic = [0u8; 4];
    let is_pcapng = std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
        .is_ok()
        && magic == pcapng::MAGIC;
    if is_pcapng {
        return Ok(Input {
            path: path.to_path_buf(),
            reader: Reader::Pcapng(pcapng::Reader::open(path)?),
            read: 0,
            head: None,
        });
    }
    let (capture, buffer) = match open_buffered(path) {
        Some((capture, buffer)) => (capture, Some(buffer)),
        None => {
            let capture =
                Capture::from_file_with_precision(path, Precision::Nano).map_err(|e| {
                    Error::OpenCapture {
                        path: path.to_path_buf(),
                        message: libpcap_message(&e),
                    }
                })?;
            (capture, None)
        }
    };
    let dlt = capture.get_datalink();
    let link = LinkType::from_dlt(dlt.0).ok_or_else(|| Error::UnsupportedLinkType {
        path: path.to_path_buf(),
        linktype: dlt.0,
        name: dlt.get_name().unwrap_or_else(|_| "unknown".into()),
    })?;
    Ok(Input {
        path: path.to_path_buf(),
        reader: Reader::Pcap {
            capture,
            link,
            _buffer: buffer,
        },
        read: 0,
        head: None,
    })
}

/// The stdio buffer a classic pcap file is read through. glibc's default is the file system's
/// block size (4 KiB): one read(2) per 4 KiB was a tenth of the time of `analyze`.
const READ_BUFFER: usize = 256 * 1024;

/// libpcap's size of an error message buffer (`PCAP_ERRBUF_SIZE`).
const PCAP_ERRBUF_SIZE: usize = 256;

unsafe extern "C" {
    /// libpcap's open of a capture file from a stream the caller opened (the pcap crate opens
    /// streams itself, with the default buffer).
    fn pcap_fopen_offline_with_tstamp_precision(
        fp: *mut libc::FILE,
        precision: libc::c_uint,
        errbuf: *mut libc::c_char,
    ) -> *mut libc::c_void;
}

/// Opens a classic pcap file through a stream with a [`READ_BUFFER`]-byte buffer, returned with
/// the capture, which must be dropped first. `None` when anything fails: then the ordinary open
/// says why.
fn open_buffered(path: &Path) -> Option<(Capture<Offline>, Box<[u8]>)> {
    let fd = std::fs::File::open(path).ok()?.into_raw_fd();
    // SAFETY: `fd` is open and ours; the stream takes it over and closes it.
    let fp = unsafe { libc::fdopen(fd, c"r".as_ptr()) };
    if fp.is_null() {
        // SAFETY: `fd` is still ours when fdopen failed.
        unsafe { libc::close(fd) };
        return None;
    }
    let mut buffer = vec![0u8; READ_BUFFER].into_boxed_slice();
    let mut errbuf = [0 as libc::c_char; PCAP_ERRBUF_SIZE];
    // SAFETY: the buffer is set before any I/O on the stream, as setvbuf requires, and lives on
    // the heap until after the capture (which closes the stream) is dropped. libpcap owns the
    // stream once the open succeeds; before that it is ours to close.
    unsafe {
        let handle =
            if libc::setvbuf(fp, buffer.as_mut_ptr().cast(), libc::_IOFBF, buffer.len()) == 0 {
                pcap_fopen_offline_with_tstamp_precision(
                    fp,
                    Precision::Nano as libc::c_uint,
                    errbuf.as_mut_ptr(),
                )
            } else {
                std::ptr::null_mut()
            };
        match pcap_handle(Capture::<Offline>::as_ptr, handle) {
            Some(h) => Some((Capture::from(h), buffer)),
            None => {
                libc::fclose(fp);
                None
            }
        }
    }
}

/// `handle` as the pointer type [`Capture::as_ptr`] returns (libpcap's `pcap_t`, which the
/// pcap crate does not export by name), or `None` when null.
fn pcap_handle<T>(
    _as_ptr: fn(&Capture<Offline>) -> *mut T,
    handle: *mut libc::c_void,
) -> Option<NonNull<T>> {
    NonNull::new(handle.cast())
}

/// A record's time in ns; libpcap puts nanoseconds in `tv_usec` when opened with nano precision.
/// Classic pcap stores unsigned 32-bit seconds that libpcap hands over sign-extended: from 2038
/// (2^31 s) on they come out negative, and are read back as unsigned (no capture predates
/// 1970). A pcapng time past what i64 seconds or nanoseconds hold (year 2262; a coarse
/// `if_tsresol` makes that easy) saturates instead of wrapping.
pub fn ts_ns(h: &pcap::PacketHeader) -> i64 {
    let secs = h.ts.tv_sec;
    let secs = match secs {
        0.. => secs,
        s if s >= i64::from(i32::MIN) => i64::from(s as u32),
        _ => i64::MAX,
    };
    secs.saturating_mul(1_000_000_000)
        .saturating_add(h.ts.tv_usec.max(0))
}

/// libpcap's own text without the crate's "libpcap error:" prefix.
fn libpcap_message(e: &pcap::Error) -> String {
    match e {
        pcap::Error::PcapError(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(tv_sec: i64, tv_usec: i64) -> i64 {
        ts_ns(&pcap::PacketHeader {
            ts: libc::timeval { tv_sec, tv_usec },
            caplen: 0,
            len: 0,
        })
    }

    #[test]
    fn times_past_2038_and_past_2262_neither_go_negative_nor_wrap() {
        assert_eq!(at(1, 5), 1_000_000_005);
        // 2^31 s as classic pcap's 32 bits reach libpcap: sign-extended.
        assert_eq!(at(i64::from(i32::MIN), 0), (1i64 << 31) * 1_000_000_000);
        assert_eq!(at(-1, 7), i64::from(u32::MAX) * 1_000_000_000 + 7);
        // pcapng seconds past i64 nanoseconds (or past i64 seconds, wrapped by libpcap).
        assert_eq!(at(10_000_000_000, 0), i64::MAX);
        assert_eq!(at(i64::MIN + 5, 0), i64::MAX);
    }
}
