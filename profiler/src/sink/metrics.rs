//! Prometheus exposition of a live run (`live --metrics ADDR`): counters summed from the rows
//! handed to the sinks, and the probe's health, served as text format 0.0.4 on `GET /metrics`.
//!
//! Series are keyed by (category, kind, shard, direction, comm); at most [`MAX_SERIES`] of them
//! exist, later keys fold into kind and comm `_overflow`, so a hostile peer or a host with many
//! processes cannot grow the exposition without bound.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use super::Sink;
use crate::Error;
use crate::account::record::{Counters, Row};

/// Most (category, kind, shard, direction, comm) series.
pub const MAX_SERIES: usize = 4096;

/// Reads one counter of a series.
type CounterOf = fn(&Counters) -> u64;

/// The labels of one series.
type SeriesKey = (&'static str, Arc<str>, Option<u16>, &'static str, Arc<str>);

/// Health of the live source, as gauges and counters.
#[derive(Clone, Copy, Debug, Default)]
pub struct Health {
    pub ring_drops: u64,
    pub map_full: u64,
    pub flows_evicted_idle: u64,
    pub flows_evicted_limit: u64,
    pub flows_evicted_memory: u64,
    pub pcap_dropped: u64,
    pub processes: u64,
}

/// What the exporter serves; shared between the sink and the HTTP thread.
#[derive(Default)]
pub struct Registry {
    series: BTreeMap<SeriesKey, Counters>,
    health: Health,
}

/// The exporter's state, handed to [`serve`] and kept up to date by [`MetricsSink`].
pub type Shared = Arc<Mutex<Registry>>;

/// The metric families served, with their help text: (name, type, help).
pub const FAMILIES: &[(&str, &str, &str)] = &[
    (
        "wakuprof_bytes_total",
        "counter",
        "Wire bytes (IP length) attributed, by category, kind, shard, direction and process name.",
    ),
    (
        "wakuprof_payload_bytes_total",
        "counter",
        "Application bytes of the units counted, same labels.",
    ),
    (
        "wakuprof_packets_total",
        "counter",
        "Packets attributed, same labels.",
    ),
    (
        "wakuprof_messages_total",
        "counter",
        "Protocol units counted (relay messages, RPC calls, ...), same labels.",
    ),
    (
        "wakuprof_duplicates_total",
        "counter",
        "Relay messages received again, same labels.",
    ),
    (
        "wakuprof_retransmitted_bytes_total",
        "counter",
        "Wire bytes of retransmitted TCP segments, same labels.",
    ),
    (
        "wakuprof_probe_ring_drops_total",
        "counter",
        "Packet samples the probe's ring buffer had no room for (bytes still counted).",
    ),
    (
        "wakuprof_probe_map_full_total",
        "counter",
        "Packets of sockets the probe's counter map had no room for (counted per process).",
    ),
    (
        "wakuprof_flows_evicted_total",
        "counter",
        "Flows retired before their end, by reason (idle, limit, memory).",
    ),
    (
        "wakuprof_pcap_dropped_total",
        "counter",
        "Packets the kernel dropped before libpcap read them (pcap source).",
    ),
    (
        "wakuprof_processes",
        "gauge",
        "Processes seen owning sockets.",
    ),
    (
        "wakuprof_series_overflowed",
        "gauge",
        "1 when the series limit was reached and later series fold into kind/comm _overflow.",
    ),
];

/// A sink that adds every row to the registry.
pub struct MetricsSink {
    pub registry: Shared,
}

impl Sink for MetricsSink {
    fn write(&mut self, rows: &[Row]) -> Result<(), Error> {
        let mut reg = self.registry.lock().unwrap_or_else(PoisonError::into_inner);
        for r in rows {
            let comm: Arc<str> = r.owner.comm.clone().unwrap_or_else(|| Arc::from(""));
            let mut key = (
                r.label.category.as_str(),
                Arc::clone(&r.label.kind),
                r.label.shard,
                r.direction.as_str(),
                comm,
            );
            if !reg.series.contains_key(&key) && reg.series.len() >= MAX_SERIES {
                key.1 = Arc::from("_overflow");
                key.4 = Arc::from("_overflow");
            }
            reg.series.entry(key).or_default().add(&r.counters);
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<(), Error> {
        Ok(())
    }
}

impl Registry {
    /// Replaces the health figures.
    pub fn set_health(&mut self, h: Health) {
        self.health = h;
    }

    /// The exposition, Prometheus text format 0.0.4.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let per_series: [(&str, CounterOf); 6] = [
            ("wakuprof_bytes_total", |c| c.bytes),
            ("wakuprof_payload_bytes_total", |c| c.payload_bytes),
            ("wakuprof_packets_total", |c| c.packets),
            ("wakuprof_messages_total", |c| c.messages),
            ("wakuprof_duplicates_total", |c| c.duplicates),
            ("wakuprof_retransmitted_bytes_total", |c| c.retrans_bytes),
        ];
        for (name, value) in per_series {
            header(&mut out, name);
            for ((category, kind, shard, direction, comm), c) in &self.series {
                let shard = shard.map(|s| s.to_string()).unwrap_or_default();
                let _ = writeln!(
                    out,
                    "{name}{{category=\"{category}\",kind=\"{}\",shard=\"{shard}\",direction=\"{direction}\",comm=\"{}\"}} {}",
                    escape(kind),
                    escape(comm),
                    value(c)
                );
            }
        }
        let h = &self.health;
        for (name, v) in [
            ("wakuprof_probe_ring_drops_total", h.ring_drops),
            ("wakuprof_probe_map_full_total", h.map_full),
            ("wakuprof_pcap_dropped_total", h.pcap_dropped),
            ("wakuprof_processes", h.processes),
            (
                "wakuprof_series_overflowed",
                u64::from(self.series.len() >= MAX_SERIES),
            ),
        ] {
            header(&mut out, name);
            let _ = writeln!(out, "{name} {v}");
        }
        header(&mut out, "wakuprof_flows_evicted_total");
        let _ = writeln!(
            out,
            "wakuprof_flows_evicted_total{{reason=\"idle\"}} {}",
            h.flows_evicted_idle
        );
        let _ = writeln!(
            out,
            "wakuprof_flows_evicted_total{{reason=\"limit\"}} {}",
            h.flows_evicted_limit
        );
        let _ = writeln!(
            out,
            "wakuprof_flows_evicted_total{{reason=\"memory\"}} {}",
            h.flows_evicted_memory
        );
        out
    }
}

fn header(out: &mut String, name: &str) {
    if let Some((_, ty, help)) = FAMILIES.iter().find(|f| f.0 == name) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {ty}");
    }
}

/// A label value with `\`, `"` and newlines escaped as the text format requires.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Serves `GET /metrics` on `addr` from a background thread; returns the bound address.
pub fn serve(addr: SocketAddr, registry: Shared) -> Result<SocketAddr, Error> {
    let listener = TcpListener::bind(addr)
        .map_err(|e| Error::Invalid(format!("--metrics {addr}: cannot listen: {e}")))?;
    let bound = listener
        .local_addr()
        .map_err(|e| Error::Invalid(format!("--metrics {addr}: {e}")))?;
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            if let Err(e) = answer(stream, &registry) {
                tracing::debug!("metrics request failed: {e}");
            }
        }
    });
    Ok(bound)
}

fn answer(mut stream: TcpStream, registry: &Shared) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut request = String::new();
    BufReader::new(&stream).read_line(&mut request)?;
    let path = request.split_whitespace().nth(1).unwrap_or("");
    let (status, body) = if request.starts_with("GET ") && path == "/metrics" {
        let reg = registry.lock().unwrap_or_else(PoisonError::into_inner);
        ("200 OK", reg.render())
    } else {
        ("404 Not Found", "only GET /metrics is served\n".to_string())
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::account::record::{Category, Direction, Endpoints, Label, Owner};

    fn row(kind: &str, bytes: u64) -> Row {
        Row {
            window_start_us: 0,
            window_secs: 10,
            owner: Arc::new(Owner::default()),
            endpoints: Endpoints {
                transport: "tcp",
                local_addr: None,
                local_port: None,
                remote_addr: None,
                remote_port: None,
            },
            label: Label::decoded(Category::Rpc, &Arc::from("jsonrpc"), &Arc::from(kind)),
            direction: Direction::Out,
            counters: Counters {
                bytes,
                ..Counters::default()
            },
        }
    }

    #[test]
    fn series_past_the_limit_fold_and_no_byte_is_lost() {
        let registry = Shared::default();
        let mut sink = MetricsSink {
            registry: Arc::clone(&registry),
        };
        let rows: Vec<Row> = (0..MAX_SERIES + 10)
            .map(|i| row(&format!("m{i}\"\n"), 1))
            .collect();
        sink.write(&rows).unwrap();
        let text = registry.lock().unwrap().render();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("wakuprof_bytes_total{"))
            .collect();
        assert_eq!(lines.len(), MAX_SERIES + 1);
        let sum: u64 = lines
            .iter()
            .map(|l| l.rsplit_once(' ').unwrap().1.parse::<u64>().unwrap())
            .sum();
        assert_eq!(sum, (MAX_SERIES + 10) as u64);
        assert!(text.contains("kind=\"_overflow\""));
        assert!(
            text.contains("kind=\"m0\\\"\\n\""),
            "label values are escaped"
        );
        assert!(text.contains("wakuprof_series_overflowed 1"));
    }
}
