//! What every `<name>.truth.json` starts with: the sample, its file, how it was made, and how
//! it was captured with what libpcap reported.

use std::net::SocketAddr;

use pcap::Precision;
use serde::Serialize;

use crate::capture::CaptureStats;

/// The fields every truth file starts with (flattened into each sample's own truth).
#[derive(Serialize)]
pub struct Head {
    pub sample: String,
    pub file: String,
    pub link_type: String,
    pub made_by: String,
    pub description: String,
    pub capture: CaptureTruth,
}

/// One TCP connection and the payload bytes each side wrote, as the implementation counted them.
#[derive(Serialize)]
pub struct Conn {
    pub dialer: SocketAddr,
    pub listener: SocketAddr,
    pub bytes_dialer_to_listener: u64,
    pub bytes_listener_to_dialer: u64,
}

/// How a capture was made and what libpcap reported.
#[derive(Serialize)]
pub struct CaptureTruth {
    pub tool: &'static str,
    pub device: String,
    pub netns: Option<String>,
    pub filter: String,
    pub timestamp_precision: &'static str,
    pub packets: u64,
    pub received: u32,
    pub dropped: u32,
    pub if_dropped: u32,
    pub converted: Option<String>,
}

impl CaptureTruth {
    /// The record of a live capture on `device` (in `netns`) with `filter` that ended with `stats`.
    pub fn new(
        device: &str,
        netns: Option<&str>,
        filter: &str,
        precision: Precision,
        stats: &CaptureStats,
    ) -> CaptureTruth {
        CaptureTruth {
            tool: "libpcap via the pcap crate",
            device: device.into(),
            netns: netns.map(Into::into),
            filter: filter.into(),
            timestamp_precision: match precision {
                Precision::Micro => "micro",
                Precision::Nano => "nano",
            },
            packets: stats.packets,
            received: stats.received,
            dropped: stats.dropped,
            if_dropped: stats.if_dropped,
            converted: None,
        }
    }
}
