//! The report as text for the terminal: the headline first, then the numbers behind it.

use std::fmt::Write as _;

use super::{Named, Report};

/// A byte count for people: `1.9 GB`, `812 kB`, `97 B` (powers of 1000).
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["kB", "MB", "GB", "TB", "PB"];
    if bytes < 1000 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1000.0;
    let mut unit = 0;
    while v >= 999.5 && unit + 1 < UNITS.len() {
        v /= 1000.0;
        unit += 1;
    }
    if v < 9.95 {
        format!("{v:.1} {}", UNITS[unit])
    } else {
        format!("{v:.0} {}", UNITS[unit])
    }
}

/// A duration for people: `50 s`, `12 min`, `3.5 h`, `2.0 days`.
pub fn duration(secs: f64) -> String {
    if secs < 120.0 {
        format!("{secs:.0} s")
    } else if secs < 7200.0 {
        format!("{:.0} min", secs / 60.0)
    } else if secs < 172_800.0 {
        format!("{:.1} h", secs / 3600.0)
    } else {
        format!("{:.1} days", secs / 86_400.0)
    }
}

fn list(s: &mut String, title: &str, lines: &[Named]) {
    if lines.is_empty() {
        return;
    }
    let _ = writeln!(s, "\n{title}");
    for l in lines {
        let _ = writeln!(
            s,
            "  {:<40} {:>10} {:>6.1} %",
            l.name,
            size(l.bytes),
            l.percent
        );
    }
}

/// The report as text.
pub fn render(r: &Report, d_low: u32) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{}\n", r.headline.text);
    let hosts = if r.hosts.is_empty() {
        "-".to_string()
    } else {
        r.hosts.join(", ")
    };
    let windows: Vec<String> = r.window_secs.iter().map(|w| format!("{w} s")).collect();
    let _ = writeln!(
        s,
        "{} → {} ({}), windows {}, hosts {hosts}, {} rows",
        r.first,
        r.last,
        duration(r.span_secs),
        windows.join("/"),
        r.rows
    );
    let _ = writeln!(
        s,
        "total {} (in {} / out {}), {} packets; {}/day, {}/hour",
        size(r.bytes),
        size(r.bytes_in),
        size(r.bytes_out),
        r.packets,
        size(r.headline.bytes_per_day as u64),
        size((r.headline.bytes_per_day / 24.0) as u64)
    );
    list(&mut s, "per day (UTC):", &r.days);
    list(&mut s, "per hour (UTC):", &r.hours);
    if !r.processes.is_empty() {
        let _ = writeln!(s, "\ntop processes:");
        for p in &r.processes {
            let _ = writeln!(
                s,
                "  {:<40} {:>10} {:>6.1} %  relay {}",
                p.name,
                size(p.bytes),
                p.percent,
                size(p.relay_bytes)
            );
        }
    }
    let _ = writeln!(s, "\ncategories → kinds → shards:");
    for c in &r.categories {
        let _ = writeln!(
            s,
            "  {:<40} {:>10} {:>6.1} %",
            c.category,
            size(c.bytes),
            c.percent
        );
        let kinds: Vec<String> = c
            .kinds
            .iter()
            .map(|k| format!("{} {}", k.name, size(k.bytes)))
            .collect();
        let _ = writeln!(s, "    kinds: {}", kinds.join(", "));
        if c.shards.iter().any(|x| x.name != "-") {
            let shards: Vec<String> = c
                .shards
                .iter()
                .map(|k| format!("{} {}", k.name, size(k.bytes)))
                .collect();
            let _ = writeln!(s, "    shards: {}", shards.join(", "));
        }
    }
    list(&mut s, "top peers:", &r.peers);
    if !r.relay_shards.is_empty() {
        let _ = writeln!(s, "\nrelay per shard (duplicates and amplification):");
        for sh in &r.relay_shards {
            let _ = writeln!(s, "  {}", sh.sentence());
        }
    }
    if let Some(node) = &r.node {
        let _ = write!(
            s,
            "\napp vs wire (the node's own counters):\n{}",
            node.table()
        );
    }
    let _ = writeln!(s, "\nhow the labels were obtained:");
    for m in &r.methods {
        let _ = writeln!(
            s,
            "  {:<12} {:>10} {:>6.1} %  relay {:>10}  confidence {:.2}",
            m.method,
            size(m.bytes),
            100.0 * m.bytes as f64 / r.bytes.max(1) as f64,
            size(m.relay_bytes),
            m.confidence
        );
    }
    let _ = writeln!(
        s,
        "  relay bytes not decoded (inferred, heuristic, port, unsampled): {:.1} %",
        r.relay_undecoded_percent
    );
    if !r.mesh.is_empty() {
        let _ = writeln!(s, "\nmesh health per shard (D_low {d_low}):");
        for m in &r.mesh {
            let _ = write!(s, "  {}: ", m.name());
            match m.mesh_peers {
                Some(mesh) => {
                    let _ = writeln!(
                        s,
                        "subscribed {} of {}, {} peers subscribed, mesh {mesh} (min {}, mean {:.1}), below D_low {}, {} GRAFT / {} PRUNE, {} peers sending unsubscribed",
                        duration(m.subscribed_secs),
                        duration(m.secs),
                        m.peers_subscribed,
                        m.mesh_peers_min.unwrap_or(0),
                        m.mesh_peers_mean.unwrap_or(0.0),
                        duration(m.secs_below_d_low),
                        m.grafts,
                        m.prunes,
                        m.unsubscribed_senders
                    );
                }
                None => {
                    let _ = writeln!(
                        s,
                        "{} peers listed on the shard; fewer than D_low for {} of {}",
                        m.peers_subscribed,
                        duration(m.secs_below_d_low),
                        duration(m.secs)
                    );
                }
            }
        }
    }
    let _ = writeln!(s, "\nfindings:");
    if r.findings.is_empty() {
        let _ = writeln!(s, "  none of the rules fired");
    }
    for f in &r.findings {
        let _ = writeln!(s, "  - [{}] {}", f.rule, f.text);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_people_write_them() {
        assert_eq!(size(97), "97 B");
        assert_eq!(size(1_900), "1.9 kB");
        assert_eq!(size(812_000), "812 kB");
        assert_eq!(size(1_900_000_000), "1.9 GB");
        assert_eq!(duration(50.0), "50 s");
        assert_eq!(duration(86_400.0), "24.0 h");
    }
}
