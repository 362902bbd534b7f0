//! The sweep chart: per-node bytes/s in + out by kind against the swept parameter, one stacked
//! bar per value, as a self-contained SVG.

use std::fmt::Write as _;

use crate::sweep::{KINDS, NON_RELAY, RELAY_OTHER, SweepReport};

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 420.0;
/// Plot area: left, top, right and bottom edges.
const LEFT: f64 = 80.0;
const TOP: f64 = 40.0;
const RIGHT: f64 = 600.0;
const BOTTOM: f64 = 370.0;
/// One colour per stacked kind, in [`KINDS`] order, then other relay and non-relay.
const COLOURS: [&str; 9] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22",
    "#7f7f7f",
];

/// A round axis maximum at or above `max` (1, 2 or 5 times a power of ten).
fn nice_ceiling(max: f64) -> f64 {
    if max <= 0.0 {
        return 1.0;
    }
    let power = 10f64.powf(max.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * power)
        .find(|v| *v >= max)
        .unwrap_or(10.0 * power)
}

/// The chart of `r` as SVG text.
pub fn svg(r: &SweepReport) -> String {
    let kinds: Vec<&str> = KINDS
        .iter()
        .chain(&[RELAY_OTHER, NON_RELAY])
        .copied()
        .collect();
    let stack = |row: &crate::sweep::Row| -> Vec<f64> {
        kinds
            .iter()
            .map(|k| row.per_node_bps.get(*k).copied().unwrap_or(0.0))
            .collect()
    };
    let top = nice_ceiling(
        r.rows
            .iter()
            .map(|row| stack(row).iter().sum::<f64>())
            .fold(0.0, f64::max),
    );
    let y = |v: f64| BOTTOM - (BOTTOM - TOP) * v / top;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        out,
        r#"<text x="{LEFT}" y="20" font-size="14">Per-node bytes/s (in + out) by kind vs {}, {:?}</text>"#,
        r.param.name(),
        r.transport
    );
    for i in 0..=5 {
        let v = top * f64::from(i) / 5.0;
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT}" x2="{RIGHT}" y1="{0:.1}" y2="{0:.1}" stroke="#ddd"/><text x="{1}" y="{2:.1}" text-anchor="end">{v:.0}</text>"##,
            y(v),
            LEFT - 6.0,
            y(v) + 4.0
        );
    }
    let slot = (RIGHT - LEFT) / r.rows.len().max(1) as f64;
    for (i, row) in r.rows.iter().enumerate() {
        let x = LEFT + slot * (i as f64 + 0.2);
        let mut base = 0.0;
        for (value, colour) in stack(row).iter().zip(COLOURS) {
            let _ = writeln!(
                out,
                r#"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="{colour}"/>"#,
                y(base + value),
                slot * 0.6,
                y(base) - y(base + value)
            );
            base += value;
        }
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
            x + slot * 0.3,
            BOTTOM + 16.0,
            row.value
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{}" text-anchor="middle">{}</text>"#,
        (LEFT + RIGHT) / 2.0,
        BOTTOM + 36.0,
        r.param.name()
    );
    for (i, (kind, colour)) in kinds.iter().zip(COLOURS).enumerate() {
        let ly = TOP + 20.0 * i as f64;
        let _ = writeln!(
            out,
            r#"<rect x="{}" y="{ly}" width="12" height="12" fill="{colour}"/><text x="{}" y="{}">{kind}</text>"#,
            RIGHT + 20.0,
            RIGHT + 38.0,
            ly + 10.0
        );
    }
    out.push_str("</svg>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::nice_ceiling;

    #[test]
    fn axis_tops_are_round() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(3.2), 5.0);
        assert_eq!(nice_ceiling(1234.0), 2000.0);
        assert_eq!(nice_ceiling(50_000.0), 50_000.0);
    }
}
