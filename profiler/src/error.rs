//! The library's error type: each variant says what failed and where, so the binary can print it as is.

use std::path::PathBuf;

/// The link types the profiler reads, as error messages list them.
const SUPPORTED_LINKS: &str = "supported: Ethernet, Linux SLL/SLL2, BSD loopback, raw IPv4/IPv6";

/// Everything the library can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A capture file could not be opened (missing, unreadable, not a capture).
    #[error("{path}: cannot open capture: {message}")]
    OpenCapture { path: PathBuf, message: String },
    /// A capture file is truncated or corrupt; packets before `packet` were counted.
    #[error("{path}: packet {packet}: {message} (the {counted} packets before it were counted)")]
    CorruptCapture {
        path: PathBuf,
        packet: u64,
        counted: u64,
        message: String,
    },
    /// A capture uses a link type the profiler cannot read.
    #[error("{path}: unsupported link type {linktype} ({name}); {SUPPORTED_LINKS}")]
    UnsupportedLinkType {
        path: PathBuf,
        linktype: i32,
        name: String,
    },
    /// A pcapng interface has a link type the profiler cannot read: its packets were skipped,
    /// the other interfaces' packets counted.
    #[error(
        "{path}: {packets} packets of pcapng interface {interface} skipped: unsupported link type {linktype}; {SUPPORTED_LINKS}"
    )]
    SkippedInterface {
        path: PathBuf,
        interface: usize,
        linktype: u16,
        packets: u64,
    },
    /// Reading or writing a file failed. The I/O error is part of the message, not a source
    /// of it: printed as a chain, it would repeat (`File exists (os error 17): File exists …`).
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    /// Writing Parquet failed.
    #[error("{path}: cannot write Parquet: {message}")]
    Parquet { path: PathBuf, message: String },
    /// A command-line value or option is invalid.
    #[error("{0}")]
    Invalid(String),
    /// The eBPF probe is not in this binary, or cannot be loaded or attached here.
    #[error("eBPF probe: {0}")]
    Probe(String),
    /// The process lacks a capability a live source needs.
    #[error("missing capability {missing} ({hint})")]
    Permission { missing: String, hint: &'static str },
    /// A live capture could not be opened or read.
    #[error("live capture on {device}: {message}")]
    LiveCapture { device: String, message: String },
}

impl Error {
    /// Wraps an I/O error with the path it concerns.
    pub fn io(path: impl Into<PathBuf>, error: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            error,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_io_error_reads_once_as_a_chain() {
        let e = Error::io(
            "/tmp/x",
            std::io::Error::from(std::io::ErrorKind::AlreadyExists),
        );
        let chain = format!("{:#}", anyhow::Error::from(e));
        assert_eq!(chain.matches("exists").count(), 1, "{chain}");
        assert!(chain.starts_with("/tmp/x: "), "{chain}");
    }
}
