//! Live capture through libpcap, for `live --source pcap`: one or more interfaces (`any` by
//! default), polled together, packets in nanosecond time.

use std::os::fd::AsRawFd;

use pcap::{Active, Capture, Precision};

use super::{LinkType, RawPacket};
use crate::Error;

/// Bytes kept of each packet: whole packets, as the decoders need.
const SNAPLEN: i32 = 262_144;
/// Kernel buffer per interface.
const BUFFER_BYTES: i32 = 32 << 20;
/// libpcap hands packets over in blocks at least this often. Not immediate mode: that forces
/// fixed frames of the snap length (TPACKET_V2), so 32 MiB would hold only ~128 packets and a
/// burst would overflow it; packed blocks hold tens of thousands.
pub const BLOCK_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(100);

/// Open live captures.
pub struct LiveCapture {
    captures: Vec<(String, Capture<Active>, LinkType)>,
}

impl LiveCapture {
    /// Opens every interface of `devices` (e.g. `any`, `eth0`), non-blocking.
    pub fn open(devices: &[String]) -> Result<LiveCapture, Error> {
        let mut captures = Vec::new();
        for device in devices {
            let err = |e: pcap::Error| Error::LiveCapture {
                device: device.clone(),
                message: e.to_string(),
            };
            let cap = Capture::from_device(device.as_str())
                .map_err(err)?
                .snaplen(SNAPLEN)
                .buffer_size(BUFFER_BYTES)
                .timeout(BLOCK_TIMEOUT.as_millis() as i32)
                .precision(Precision::Nano)
                .open()
                .map_err(err)?
                .setnonblock()
                .map_err(err)?;
            let dlt = cap.get_datalink().0;
            let link = LinkType::from_dlt(dlt).ok_or_else(|| Error::LiveCapture {
                device: device.clone(),
                message: format!("unsupported link type {dlt}"),
            })?;
            captures.push((device.clone(), cap, link));
        }
        Ok(LiveCapture { captures })
    }

    /// Waits up to `timeout_ms` for any interface to have packets.
    pub fn wait(&self, timeout_ms: i32) {
        let mut fds: Vec<libc::pollfd> = self
            .captures
            .iter()
            .map(|(_, c, _)| libc::pollfd {
                fd: c.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: a valid array of pollfds; a failed poll only ends the wait early.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout_ms) };
    }

    /// Hands queued packets to `f`, at most `max` per interface; returns how many there were.
    pub fn drain(&mut self, max: usize, mut f: impl FnMut(&RawPacket<'_>)) -> Result<usize, Error> {
        let mut n = 0;
        for (device, cap, link) in &mut self.captures {
            for _ in 0..max {
                match cap.next_packet() {
                    Ok(p) => {
                        n += 1;
                        f(&RawPacket {
                            ts_ns: p.header.ts.tv_sec * 1_000_000_000 + p.header.ts.tv_usec,
                            link: *link,
                            data: p.data,
                            wire_len: p.header.len,
                        });
                    }
                    Err(pcap::Error::TimeoutExpired | pcap::Error::NoMorePackets) => break,
                    Err(e) => {
                        return Err(Error::LiveCapture {
                            device: device.clone(),
                            message: e.to_string(),
                        });
                    }
                }
            }
        }
        Ok(n)
    }

    /// Packets the kernel dropped for lack of buffer, over all interfaces.
    pub fn dropped(&mut self) -> u64 {
        self.captures
            .iter_mut()
            .filter_map(|(_, c, _)| c.stats().ok())
            .map(|s| u64::from(s.dropped))
            .sum()
    }
}
