//! pcapng files, read here rather than by libpcap: libpcap stops at the first interface whose
//! link type differs from the first one's (a capture merged from an Ethernet and a raw-IP
//! interface), where each packet can be read by its own interface's framing. Times follow each
//! interface's `if_tsresol` and `if_tsoffset` and saturate rather than wrap.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

use super::{LinkType, RawPacket};
use crate::Error;

/// The first four bytes of a pcapng file (a Section Header Block's type).
pub const MAGIC: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];
/// Block types read; the others are skipped.
const SECTION_HEADER: u32 = 0x0a0d_0d0a;
const INTERFACE: u32 = 1;
const OBSOLETE_PACKET: u32 = 2;
const SIMPLE_PACKET: u32 = 3;
const ENHANCED_PACKET: u32 = 6;
/// The byte-order magic of a Section Header Block.
const BYTE_ORDER: u32 = 0x1a2b_3c4d;
/// Largest block read: a packet of a jumbo-frame interface fits many times over.
const MAX_BLOCK: u32 = 16 << 20;
/// Interface options: time resolution and offset.
const IF_TSRESOL: u16 = 9;
const IF_TSOFFSET: u16 = 14;

/// One interface of the current section.
struct Interface {
    /// `Err(linktype)` for a link type wakuprof cannot read (its packets are skipped).
    link: Result<LinkType, u16>,
    /// Packets of this interface skipped because its link type cannot be read.
    skipped: u64,
    /// Time units per second.
    units: u128,
    /// Seconds added to every time.
    offset: i64,
    snaplen: u32,
}

/// A pcapng file read block by block.
pub struct Reader {
    file: BufReader<File>,
    big_endian: bool,
    interfaces: Vec<Interface>,
    block: Vec<u8>,
    last_ns: i64,
    /// Packets whose time did not fit (counted, warned about once).
    pub saturated: u64,
}

/// Packets of one interface that were skipped: wakuprof cannot read its link type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Skipped {
    pub interface: usize,
    pub linktype: u16,
    pub packets: u64,
}

impl Reader {
    /// Opens `path` and reads up to its first interface, whose link type must be readable.
    pub fn open(path: &Path) -> Result<Reader, Error> {
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let mut r = Reader {
            file: BufReader::new(file),
            big_endian: false,
            interfaces: Vec::new(),
            block: Vec::new(),
            last_ns: 0,
            saturated: 0,
        };
        let open_err = |message: String| Error::OpenCapture {
            path: path.to_path_buf(),
            message,
        };
        while r.interfaces.is_empty() {
            match r.next_block().map_err(open_err)? {
                Some(_) => {}
                None => return Err(open_err("no interface before the end of the file".into())),
            }
        }
        if let Err(linktype) = r.interfaces[0].link {
            return Err(Error::UnsupportedLinkType {
                path: path.to_path_buf(),
                linktype: i32::from(linktype),
                name: "pcapng interface".into(),
            });
        }
        Ok(r)
    }

    /// Counts a packet of `interface`, whose link type cannot be read; warns at its first.
    fn skip(&mut self, interface: usize) {
        let Some(iface) = self.interfaces.get_mut(interface) else {
            return;
        };
        iface.skipped += 1;
        if iface.skipped == 1
            && let Err(linktype) = iface.link
        {
            tracing::warn!(
                "pcapng: interface {interface} has link type {linktype}, which wakuprof cannot read; its packets are skipped"
            );
        }
    }

    /// The interfaces whose packets were skipped so far, with how many.
    pub fn skipped(&self) -> Vec<Skipped> {
        self.interfaces
            .iter()
            .enumerate()
            .filter_map(|(interface, i)| match i.link {
                Err(linktype) if i.skipped > 0 => Some(Skipped {
                    interface,
                    linktype,
                    packets: i.skipped,
                }),
                _ => None,
            })
            .collect()
    }

    /// The next packet, `Ok(None)` at the end of the file, or what is wrong with the file.
    /// Packets of an interface whose link type cannot be read are skipped (see [`Reader::skipped`]).
    pub fn next_packet(&mut self) -> Result<Option<RawPacket<'_>>, String> {
        loop {
            let Some((kind, body_len)) = self.next_block()? else {
                return Ok(None);
            };
            let (interface, ts, caplen, wire_len, data_at) = match kind {
                ENHANCED_PACKET => (
                    self.u32_at(0)? as usize,
                    Some((self.u32_at(4)?, self.u32_at(8)?)),
                    self.u32_at(12)?,
                    self.u32_at(16)?,
                    20,
                ),
                OBSOLETE_PACKET => (
                    usize::from(self.u16_at(0)?),
                    Some((self.u32_at(4)?, self.u32_at(8)?)),
                    self.u32_at(12)?,
                    self.u32_at(16)?,
                    20,
                ),
                SIMPLE_PACKET => {
                    let wire = self.u32_at(0)?;
                    let snap = self.interfaces.first().map_or(0, |i| i.snaplen);
                    let cap = if snap == 0 { wire } else { wire.min(snap) };
                    (0, None, cap.min(body_len.saturating_sub(4)), wire, 4)
                }
                _ => continue,
            };
            let iface = self.interfaces.get(interface).ok_or_else(|| {
                format!("a packet of interface {interface}, which is not defined")
            })?;
            let (link, units, offset) = (iface.link, iface.units, iface.offset);
            let Ok(link) = link else {
                self.skip(interface);
                continue;
            };
            let ts_ns = match ts {
                Some((high, low)) => {
                    let t = u128::from(high) << 32 | u128::from(low);
                    let ns = i128::try_from(t * 1_000_000_000 / units)
                        .unwrap_or(i128::MAX)
                        .saturating_add(i128::from(offset) * 1_000_000_000);
                    i64::try_from(ns).unwrap_or_else(|_| {
                        self.saturated += 1;
                        if self.saturated == 1 {
                            tracing::warn!(
                                "pcapng: a packet time is past what 64-bit nanoseconds hold (year 2262); such times are kept at the largest one"
                            );
                        }
                        if ns < 0 { i64::MIN } else { i64::MAX }
                    })
                }
                None => self.last_ns,
            };
            self.last_ns = ts_ns;
            let data = self
                .block
                .get(data_at..data_at + caplen as usize)
                .ok_or_else(|| format!("a packet of {caplen} bytes in a block of {body_len}"))?;
            return Ok(Some(RawPacket {
                ts_ns,
                link,
                data,
                wire_len: wire_len.max(caplen),
            }));
        }
    }

    fn u32_at(&self, at: usize) -> Result<u32, String> {
        let b: [u8; 4] = self
            .block
            .get(at..at + 4)
            .and_then(|b| b.try_into().ok())
            .ok_or("a block too short for its fields")?;
        Ok(if self.big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        })
    }

    fn u16_at(&self, at: usize) -> Result<u16, String> {
        let b: [u8; 2] = self
            .block
            .get(at..at + 2)
            .and_then(|b| b.try_into().ok())
            .ok_or("a block too short for its fields")?;
        Ok(if self.big_endian {
            u16::from_be_bytes(b)
        } else {
            u16::from_le_bytes(b)
        })
    }

    /// Reads the next block into `self.block` (its body, without type and lengths); section
    /// headers and interfaces are taken in. `None` at a clean end of file.
    fn next_block(&mut self) -> Result<Option<(u32, u32)>, String> {
        let mut head = [0u8; 8];
        match read_full(&mut self.file, &mut head)? {
            0 => return Ok(None),
            8 => {}
            _ => return Err("the file ends inside a block header".into()),
        }
        let kind_bytes: [u8; 4] = [head[0], head[1], head[2], head[3]];
        if kind_bytes == MAGIC {
            // The byte order is in the body: read it before the length.
            let mut order = [0u8; 4];
            if read_full(&mut self.file, &mut order)? != 4 {
                return Err("the file ends inside a section header".into());
            }
            self.big_endian = match u32::from_le_bytes(order) {
                BYTE_ORDER => false,
                o if o.swap_bytes() == BYTE_ORDER => true,
                _ => return Err("a section header without the byte-order magic".into()),
            };
            self.interfaces.clear();
            let total = self.u32_of([head[4], head[5], head[6], head[7]]);
            self.read_body(total, 4)?;
            return Ok(Some((SECTION_HEADER, total)));
        }
        let kind = self.u32_of(kind_bytes);
        let total = self.u32_of([head[4], head[5], head[6], head[7]]);
        let body_len = self.read_body(total, 0)?;
        if kind == INTERFACE {
            self.interface()?;
        }
        Ok(Some((kind, body_len)))
    }

    fn u32_of(&self, b: [u8; 4]) -> u32 {
        if self.big_endian {
            u32::from_be_bytes(b)
        } else {
            u32::from_le_bytes(b)
        }
    }

    /// Reads the rest of a block of `total` bytes, `already` of its body read, and its trailing
    /// length; returns the body length.
    fn read_body(&mut self, total: u32, already: u32) -> Result<u32, String> {
        if total < 12 + already || !total.is_multiple_of(4) || total > MAX_BLOCK {
            return Err(format!("a block of {total} bytes"));
        }
        let body = total - 12;
        self.block.resize((body - already) as usize + 4, 0);
        if read_full(&mut self.file, &mut self.block)? != self.block.len() {
            return Err("the file ends inside a block".into());
        }
        self.block.truncate((body - already) as usize);
        Ok(body)
    }

    /// Takes in the Interface Description Block in `self.block`.
    fn interface(&mut self) -> Result<(), String> {
        let linktype = self.u16_at(0)?;
        let snaplen = self.u32_at(4)?;
        let mut units = 1_000_000u128;
        let mut offset = 0i64;
        let mut at = 8;
        while at + 4 <= self.block.len() {
            let code = self.u16_at(at)?;
            let len = usize::from(self.u16_at(at + 2)?);
            let value = self.block.get(at + 4..at + 4 + len).unwrap_or_default();
            match (code, value) {
                (0, _) => break,
                (IF_TSRESOL, [r]) => {
                    units = if r & 0x80 == 0 {
                        10u128.checked_pow(u32::from(*r)).unwrap_or(u128::MAX)
                    } else {
                        2u128.checked_pow(u32::from(r & 0x7f)).unwrap_or(u128::MAX)
                    };
                }
                (IF_TSOFFSET, v) if v.len() == 8 => {
                    let b: [u8; 8] = v.try_into().map_err(|_| "if_tsoffset")?;
                    offset = if self.big_endian {
                        i64::from_be_bytes(b)
                    } else {
                        i64::from_le_bytes(b)
                    };
                }
                _ => {}
            }
            at += 4 + len.div_ceil(4) * 4;
        }
        let link = LinkType::from_dlt(i32::from(linktype)).ok_or(linktype);
        self.interfaces.push(Interface {
            link,
            units: units.max(1),
            offset,
            snaplen,
            skipped: 0,
        });
        Ok(())
    }
}

/// Reads until `buf` is full or the file ends; returns the bytes read.
fn read_full(file: &mut impl Read, buf: &mut [u8]) -> Result<usize, String> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A block of `kind` around `body` (little-endian).
    fn block(kind: u32, body: &[u8]) -> Vec<u8> {
        let total = (12 + body.len()) as u32;
        [
            kind.to_le_bytes().as_slice(),
            &total.to_le_bytes(),
            body,
            &total.to_le_bytes(),
        ]
        .concat()
    }

    /// A file with one raw-IP interface of resolution `tsresol` and one packet at `t` units.
    fn file(tsresol: u8, t: u64) -> Vec<u8> {
        let shb = [
            BYTE_ORDER.to_le_bytes().as_slice(),
            &[1, 0, 0, 0],
            &u64::MAX.to_le_bytes(),
        ]
        .concat();
        let idb = [
            [101u8, 0, 0, 0, 0, 0, 0, 0].as_slice(),
            &IF_TSRESOL.to_le_bytes(),
            &1u16.to_le_bytes(),
            &[tsresol, 0, 0, 0],
            &[0, 0, 0, 0],
        ]
        .concat();
        let epb = [
            0u32.to_le_bytes().as_slice(),
            &((t >> 32) as u32).to_le_bytes(),
            &(t as u32).to_le_bytes(),
            &4u32.to_le_bytes(),
            &4u32.to_le_bytes(),
            &[0x45, 0, 0, 4],
        ]
        .concat();
        [
            block(SECTION_HEADER, &shb),
            block(INTERFACE, &idb),
            block(ENHANCED_PACKET, &epb),
        ]
        .concat()
    }

    fn first_time(bytes: &[u8]) -> (i64, u64) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("t.pcapng");
        std::fs::write(&path, bytes).expect("write");
        let mut r = Reader::open(&path).expect("opens");
        let ts = r.next_packet().expect("reads").expect("a packet").ts_ns;
        assert!(r.next_packet().expect("reads").is_none());
        (ts, r.saturated)
    }

    #[test]
    fn times_follow_the_resolution_and_saturate_past_64_bit_nanoseconds() {
        assert_eq!(first_time(&file(6, 1_500_000)), (1_500_000_000, 0));
        assert_eq!(first_time(&file(0x80 | 10, 3 << 10)), (3_000_000_000, 0));
        // Seconds (10^0) near 2^64: far past what i64 nanoseconds hold.
        assert_eq!(first_time(&file(0, u64::MAX - 1)), (i64::MAX, 1));
    }
}
