//! The report as one self-contained HTML page: inline CSS, charts as inline SVG drawn here (a
//! few primitives: stacked areas, bars, lines), tables sortable by a small inline script. No
//! request leaves the page when it is viewed, so it works as an e-mail attachment.

use std::fmt::Write as _;

use super::text::{duration, size};
use super::{Named, Report};
use crate::account::record::Category;

/// Width and height of the time charts, in SVG units (the page scales them to its width).
const W: f64 = 1160.0;
const H: f64 = 300.0;
/// Plot margins: left (axis labels), right, top, bottom.
const ML: f64 = 90.0;
const MR: f64 = 20.0;
const MT: f64 = 16.0;
const MB: f64 = 34.0;

/// Colours of the categories, in [`Category::ALL`] order (legible in grey print too).
const COLOURS: [&str; 8] = [
    "#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#7f7f7f",
];
/// Colours of the lines of the mesh chart.
const LINES: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf",
];

const STYLE: &str = "body{font:14px/1.4 system-ui,sans-serif;color:#222;max-width:1200px;margin:0 auto;padding:16px}\
h1{font-size:22px;margin:0 0 8px}h2{font-size:17px;margin:24px 0 6px;border-bottom:1px solid #ccc}\
.headline{font-size:19px;font-weight:600;background:#fff6d5;border-left:5px solid #e0a800;padding:8px 12px}\
.findings li{margin:4px 0}.rule{font-family:monospace;color:#555}\
figure{margin:12px 0;break-inside:avoid}figcaption{font-weight:600;margin-bottom:4px}\
svg{width:100%;height:auto;font:12px system-ui,sans-serif}svg text{fill:#333}\
.legend span{display:inline-block;margin-right:14px}.legend i{display:inline-block;width:11px;height:11px;margin-right:4px;vertical-align:-1px}\
table{border-collapse:collapse;margin:6px 0;min-width:50%}th,td{padding:3px 8px;border-bottom:1px solid #e3e3e3;text-align:left}\
td.n,th.n{text-align:right;font-variant-numeric:tabular-nums}th{cursor:pointer;background:#f4f4f4;user-select:none}\
th.asc:after{content:' \\25B2'}th.desc:after{content:' \\25BC'}.muted{color:#666}\
@media print{body{max-width:none;padding:0}th{cursor:auto}h2{break-after:avoid}table{break-inside:auto}}";

/// Sorts a table by the clicked header: numbers by their `data-v`, text otherwise.
const SCRIPT: &str = "document.querySelectorAll('table.sortable th').forEach(function(th,i){th.addEventListener('click',function(){\
var t=th.closest('table'),b=t.tBodies[0],rows=Array.prototype.slice.call(b.rows),asc=!th.classList.contains('asc');\
t.querySelectorAll('th').forEach(function(h){h.classList.remove('asc','desc')});th.classList.add(asc?'asc':'desc');\
rows.sort(function(x,y){var a=x.cells[i],c=y.cells[i],u=a.dataset.v,v=c.dataset.v;\
var r=(u!==undefined&&v!==undefined)?(parseFloat(u)-parseFloat(v)):a.textContent.localeCompare(c.textContent);return asc?r:-r});\
rows.forEach(function(r){b.appendChild(r)})})});";

/// Escapes text for HTML and SVG.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A UTC time of day (or date and time when the chart spans days) for an axis.
fn tick_time(secs: i64, span: i64) -> String {
    let t = crate::forward::spool::utc(secs * 1_000_000);
    if span > 2 * 86_400 {
        format!("{} {}", &t[5..10], &t[11..16])
    } else if span > 600 {
        t[11..16].to_string()
    } else {
        t[11..19].to_string()
    }
}

/// A round step for about `n` ticks up to `max`.
fn nice_step(max: f64, n: f64) -> f64 {
    let raw = (max / n).max(1e-9);
    let mag = 10f64.powf(raw.log10().floor());
    let f = raw / mag;
    let nice = if f <= 1.0 {
        1.0
    } else if f <= 2.0 {
        2.0
    } else if f <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * mag
}

/// The frame of a time chart: y grid with labels by `label`, x ticks over [t0, t1].
fn axes(s: &mut String, ymax: f64, t0: i64, t1: i64, label: impl Fn(f64) -> String) {
    let step = nice_step(ymax, 4.0);
    let mut v = 0.0;
    while v <= ymax * 1.0001 {
        let y = MT + (H - MT - MB) * (1.0 - v / ymax);
        let _ = write!(
            s,
            "<line x1='{ML}' x2='{}' y1='{y:.1}' y2='{y:.1}' stroke='#ddd'/><text x='{}' y='{:.1}' text-anchor='end'>{}</text>",
            W - MR,
            ML - 6.0,
            y + 4.0,
            esc(&label(v))
        );
        v += step;
    }
    let span = (t1 - t0).max(1);
    for i in 0..=5 {
        let t = t0 + span * i / 5;
        let x = ML + (W - ML - MR) * (t - t0) as f64 / span as f64;
        let _ = write!(
            s,
            "<line x1='{x:.1}' x2='{x:.1}' y1='{}' y2='{}' stroke='#999'/><text x='{x:.1}' y='{}' text-anchor='{}'>{}</text>",
            H - MB,
            H - MB + 4.0,
            H - MB + 18.0,
            if i == 5 { "end" } else { "middle" },
            tick_time(t, span)
        );
    }
}

fn legend(s: &mut String, items: &[(&str, &str)]) {
    s.push_str("<div class='legend'>");
    for (name, colour) in items {
        let _ = write!(
            s,
            "<span><i style='background:{colour}'></i>{}</span>",
            esc(name)
        );
    }
    s.push_str("</div>");
}

/// Bandwidth over time, stacked by category (bytes per second of each bucket).
fn bandwidth_chart(s: &mut String, r: &Report) {
    let series = &r.series;
    let bucket = series.bucket_secs.max(1);
    let t0 = series.starts.first().copied().unwrap_or(0);
    let t1 = series.starts.last().map_or(t0 + 1, |t| t + bucket);
    let rate = |b: u64| b as f64 / bucket as f64;
    let ymax = series
        .bytes
        .iter()
        .map(|b| rate(b.iter().sum()))
        .fold(0.0, f64::max)
        .max(1.0);
    let x = |t: i64| ML + (W - ML - MR) * (t - t0) as f64 / (t1 - t0).max(1) as f64;
    let y = |v: f64| MT + (H - MT - MB) * (1.0 - v / ymax);
    let _ = write!(
        s,
        "<svg viewBox='0 0 {W} {H}' role='img' aria-label='bandwidth over time'>"
    );
    axes(s, ymax, t0, t1, |v| format!("{}/s", size(v as u64)));
    let mut below = vec![0.0f64; series.starts.len()];
    let mut used = Vec::new();
    for (ci, cat) in Category::ALL.iter().enumerate() {
        let total: u64 = series.bytes.iter().map(|b| b[ci]).sum();
        if total == 0 {
            continue;
        }
        used.push((cat.as_str(), COLOURS[ci]));
        let above: Vec<f64> = below
            .iter()
            .zip(&series.bytes)
            .map(|(lo, b)| lo + rate(b[ci]))
            .collect();
        let mut d = String::new();
        for (i, t) in series.starts.iter().enumerate() {
            let cmd = if i == 0 { 'M' } else { 'L' };
            let _ = write!(
                d,
                "{cmd}{:.1},{:.1}L{:.1},{:.1}",
                x(*t),
                y(above[i]),
                x(t + bucket),
                y(above[i])
            );
        }
        for (i, t) in series.starts.iter().enumerate().rev() {
            let _ = write!(
                d,
                "L{:.1},{:.1}L{:.1},{:.1}",
                x(t + bucket),
                y(below[i]),
                x(*t),
                y(below[i])
            );
        }
        let _ = write!(
            s,
            "<path class='series' data-category='{}' data-v='{total}' d='{d}Z' fill='{}' fill-opacity='0.85'/>",
            cat.as_str(),
            COLOURS[ci]
        );
        below = above;
    }
    s.push_str("</svg>");
    legend(s, &used);
}

/// One bar of a bar chart: its label and segments (value, colour, what the value reads as).
struct Bar {
    label: String,
    segments: Vec<(f64, &'static str, String)>,
}

/// Horizontal bars, stacked when a bar has several segments; `rule` draws a dashed line at a
/// value (e.g. 2× amplification).
fn bar_chart(s: &mut String, bars: &[Bar], rule: Option<(f64, &str)>) {
    const ROW: f64 = 24.0;
    const LABEL: f64 = 300.0;
    const VALUE: f64 = 280.0;
    let h = MT + ROW * bars.len().max(1) as f64 + 10.0;
    let max = bars
        .iter()
        .map(|b| b.segments.iter().map(|x| x.0).sum::<f64>())
        .chain(rule.map(|r| r.0))
        .fold(0.0, f64::max)
        .max(1e-9);
    let width = W - LABEL - VALUE;
    let _ = write!(s, "<svg viewBox='0 0 {W} {h}' role='img'>");
    if bars.is_empty() {
        let _ = write!(
            s,
            "<text class='empty' x='{LABEL}' y='{}'>no data</text>",
            MT + 12.0
        );
    }
    for (i, b) in bars.iter().enumerate() {
        let y = MT + ROW * i as f64;
        let _ = write!(
            s,
            "<text x='{}' y='{:.1}' text-anchor='end'>{}</text>",
            LABEL - 8.0,
            y + 15.0,
            esc(&b.label)
        );
        let mut x = LABEL;
        let mut said = Vec::new();
        for (v, colour, text) in &b.segments {
            let w = width * v / max;
            let _ = write!(
                s,
                "<rect class='bar' data-v='{v}' x='{x:.1}' y='{:.1}' width='{w:.1}' height='{}' fill='{colour}'><title>{}</title></rect>",
                y + 3.0,
                ROW - 6.0,
                esc(text)
            );
            x += w;
            said.push(text.as_str());
        }
        let _ = write!(
            s,
            "<text x='{:.1}' y='{:.1}'>{}</text>",
            x + 6.0,
            y + 15.0,
            esc(&said.join(" + "))
        );
    }
    if let Some((v, text)) = rule {
        let x = LABEL + width * v / max;
        let _ = write!(
            s,
            "<line x1='{x:.1}' x2='{x:.1}' y1='{}' y2='{:.1}' stroke='#d62728' stroke-dasharray='5 4'/><text x='{:.1}' y='{}' fill='#d62728'>{}</text>",
            MT - 4.0,
            h - 6.0,
            x + 4.0,
            MT + 6.0,
            esc(text)
        );
    }
    s.push_str("</svg>");
}

fn named_bars(items: &[Named], colour: &'static str) -> Vec<Bar> {
    items
        .iter()
        .map(|n| Bar {
            label: n.name.clone(),
            segments: vec![(
                n.bytes as f64,
                colour,
                format!("{} ({:.1} %)", size(n.bytes), n.percent),
            )],
        })
        .collect()
}

/// Mesh peers (or peers listed, node-api) per shard over time, with D_low dashed.
fn mesh_chart(s: &mut String, r: &Report, d_low: u32) {
    let points = r.mesh.iter().flat_map(|m| m.series.iter());
    let t0 = points.clone().map(|p| p.0).min().unwrap_or(0);
    let t1 = points.clone().map(|p| p.0).max().unwrap_or(0).max(t0 + 1);
    let ymax = points
        .map(|p| f64::from(p.1))
        .fold(f64::from(d_low) + 1.0, f64::max);
    let x = |t: i64| ML + (W - ML - MR) * (t - t0) as f64 / (t1 - t0) as f64;
    let y = |v: f64| MT + (H - MT - MB) * (1.0 - v / ymax);
    let _ = write!(
        s,
        "<svg viewBox='0 0 {W} {H}' role='img' aria-label='mesh peers per shard'>"
    );
    axes(s, ymax, t0, t1, |v| format!("{v:.0}"));
    let _ = write!(
        s,
        "<line x1='{ML}' x2='{}' y1='{y:.1}' y2='{y:.1}' stroke='#d62728' stroke-dasharray='5 4'/><text x='{}' y='{:.1}' fill='#d62728'>D_low {d_low}</text>",
        W - MR,
        ML + 4.0,
        y(f64::from(d_low)) - 4.0,
        y = y(f64::from(d_low))
    );
    let mut used = Vec::new();
    let names: Vec<String> = r.mesh.iter().map(|m| m.name()).collect();
    for (i, m) in r.mesh.iter().enumerate() {
        if m.series.is_empty() {
            continue;
        }
        let colour = LINES[i % LINES.len()];
        let mut d = String::new();
        for (j, (t, n)) in m.series.iter().enumerate() {
            let cmd = if j == 0 { 'M' } else { 'L' };
            let _ = write!(d, "{cmd}{:.1},{:.1}", x(*t), y(f64::from(*n)));
        }
        if m.series.len() == 1 {
            let _ = write!(d, "h4");
        }
        let _ = write!(
            s,
            "<path class='series' data-v='{}' d='{d}' fill='none' stroke='{colour}' stroke-width='2'/>",
            m.series.len()
        );
        used.push((names[i].as_str(), colour));
    }
    if used.is_empty() {
        let _ = write!(
            s,
            "<text class='empty' x='{}' y='{}'>no mesh data (give analyze/live --mesh, or a capture with decoded relay)</text>",
            ML + 10.0,
            MT + 20.0
        );
    }
    s.push_str("</svg>");
    legend(s, &used);
}

/// A sortable table: headers (name, numeric) and rows of (text, sort value).
fn table(s: &mut String, id: &str, head: &[(&str, bool)], rows: &[Vec<(String, Option<f64>)>]) {
    let _ = write!(s, "<table class='sortable' id='{id}'><thead><tr>");
    for (h, num) in head {
        let class = if *num { " class='n'" } else { "" };
        let _ = write!(s, "<th{class}>{}</th>", esc(h));
    }
    s.push_str("</tr></thead><tbody>");
    for row in rows {
        s.push_str("<tr>");
        for (text, v) in row {
            match v {
                Some(v) => {
                    let _ = write!(s, "<td class='n' data-v='{v}'>{}</td>", esc(text));
                }
                None => {
                    let _ = write!(s, "<td>{}</td>", esc(text));
                }
            }
        }
        s.push_str("</tr>");
    }
    s.push_str("</tbody></table>");
}

fn bytes_cell(b: u64) -> (String, Option<f64>) {
    (size(b), Some(b as f64))
}

fn pct_cell(p: f64) -> (String, Option<f64>) {
    (format!("{p:.1} %"), Some(p))
}

fn txt(s: impl Into<String>) -> (String, Option<f64>) {
    (s.into(), None)
}

fn num(v: f64, text: String) -> (String, Option<f64>) {
    (text, Some(v))
}

fn figure(s: &mut String, id: &str, caption: &str, draw: impl FnOnce(&mut String)) {
    let _ = write!(
        s,
        "<figure class='chart' id='{id}'><figcaption>{}</figcaption>",
        esc(caption)
    );
    draw(s);
    s.push_str("</figure>");
}

/// The report as one HTML page.
pub fn render(r: &Report, d_low: u32) -> String {
    let mut s = String::with_capacity(64 * 1024);
    let _ = write!(
        s,
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><meta name='viewport' content='width=device-width,initial-scale=1'><title>wakuprof report {}</title><style>{STYLE}</style></head><body>",
        esc(&r.first)
    );
    let h = &r.headline;
    let _ = write!(
        s,
        "<h1>wakuprof report</h1><p class='headline' id='headline' data-total-bytes='{}' data-bytes='{}' data-category='{}' data-shard='{}' data-kind='{}' data-kind-bytes='{}'>{}</p>",
        h.total_bytes,
        h.bytes,
        h.category,
        h.shard.map_or_else(String::new, |x| x.to_string()),
        esc(h.kind.as_deref().unwrap_or_default()),
        h.kind_bytes,
        esc(&h.text)
    );
    let hosts = if r.hosts.is_empty() {
        "-".to_string()
    } else {
        r.hosts.join(", ")
    };
    let _ = write!(
        s,
        "<p class='muted' id='scope'>{} → {} ({}), hosts {}, {} rows. Total <b id='total'>{}</b> (in {} / out {}), {} packets; <b>{}/day</b>.</p>",
        esc(&r.first),
        esc(&r.last),
        duration(r.span_secs),
        esc(&hosts),
        r.rows,
        size(r.bytes),
        size(r.bytes_in),
        size(r.bytes_out),
        r.packets,
        size(h.bytes_per_day as u64)
    );
    s.push_str("<h2>Findings</h2><ul class='findings' id='findings'>");
    if r.findings.is_empty() {
        s.push_str("<li>None of the rules fired.</li>");
    }
    for f in &r.findings {
        let _ = write!(
            s,
            "<li data-rule='{}'><span class='rule'>{}</span>: {}</li>",
            f.rule,
            f.rule,
            esc(&f.text)
        );
    }
    s.push_str("</ul><h2>Bandwidth</h2>");
    figure(
        &mut s,
        "chart-bandwidth",
        "Bandwidth over time by category",
        |s| bandwidth_chart(s, r),
    );
    let shard_bars: Vec<Bar> = r
        .relay_shards
        .iter()
        .map(|x| Bar {
            label: x
                .shard
                .map_or_else(|| "no shard".into(), |n| format!("shard {n}")),
            segments: vec![
                (
                    x.control_bytes as f64,
                    COLOURS[0],
                    format!("control {}", size(x.control_bytes)),
                ),
                (
                    x.chat_bytes as f64,
                    COLOURS[1],
                    format!("chat {}", size(x.chat_bytes)),
                ),
            ],
        })
        .collect();
    figure(
        &mut s,
        "chart-shards",
        "Relay control vs chat per shard",
        |s| {
            bar_chart(s, &shard_bars, None);
            legend(
                s,
                &[("relay control", COLOURS[0]), ("relay chat", COLOURS[1])],
            );
        },
    );
    let kinds: Vec<Named> = r
        .categories
        .iter()
        .filter(|c| c.category == "relay_control")
        .flat_map(|c| c.kinds.clone())
        .collect();
    figure(
        &mut s,
        "chart-control-kinds",
        "Relay control by kind",
        |s| {
            bar_chart(s, &named_bars(&kinds, COLOURS[0]), None);
        },
    );
    let procs: Vec<Named> = r
        .processes
        .iter()
        .map(|p| Named {
            name: p.name.clone(),
            bytes: p.bytes,
            percent: p.percent,
        })
        .collect();
    figure(&mut s, "chart-processes", "Top processes", |s| {
        bar_chart(s, &named_bars(&procs, COLOURS[3]), None);
    });
    figure(&mut s, "chart-peers", "Top peers (remote addresses)", |s| {
        bar_chart(s, &named_bars(&r.peers, COLOURS[4]), None);
    });
    let dup_bars: Vec<Bar> = r
        .relay_shards
        .iter()
        .filter_map(|x| {
            let a = x.amplification()?;
            Some(Bar {
                label: x
                    .shard
                    .map_or_else(|| "no shard".into(), |n| format!("shard {n}")),
                segments: vec![(
                    a,
                    COLOURS[2],
                    format!(
                        "{a:.2}× ({} duplicates of {} messages)",
                        x.duplicates, x.messages
                    ),
                )],
            })
        })
        .collect();
    figure(
        &mut s,
        "chart-duplicates",
        "Deliveries per message per shard (amplification)",
        |s| {
            bar_chart(s, &dup_bars, Some((super::findings::AMPLIFICATION, "2×")));
        },
    );
    figure(
        &mut s,
        "chart-mesh",
        "Mesh peers per shard over time",
        |s| mesh_chart(s, r, d_low),
    );
    tables(&mut s, r, d_low);
    let _ = writeln!(s, "<script>{SCRIPT}</script></body></html>");
    s
}

/// The tables under the charts.
fn tables(s: &mut String, r: &Report, d_low: u32) {
    s.push_str("<h2>Categories → kinds → shards</h2>");
    let rows: Vec<Vec<(String, Option<f64>)>> = r
        .categories
        .iter()
        .flat_map(|c| {
            c.kinds.iter().map(move |k| {
                vec![
                    txt(c.category),
                    txt(&k.name),
                    bytes_cell(k.bytes),
                    pct_cell(k.percent),
                ]
            })
        })
        .collect();
    table(
        s,
        "t-kinds",
        &[
            ("category", false),
            ("kind", false),
            ("bytes", true),
            ("share", true),
        ],
        &rows,
    );
    let rows: Vec<Vec<(String, Option<f64>)>> = r
        .categories
        .iter()
        .flat_map(|c| {
            c.shards.iter().map(move |k| {
                vec![
                    txt(c.category),
                    txt(&k.name),
                    bytes_cell(k.bytes),
                    pct_cell(k.percent),
                ]
            })
        })
        .collect();
    table(
        s,
        "t-shards",
        &[
            ("category", false),
            ("shard", false),
            ("bytes", true),
            ("share", true),
        ],
        &rows,
    );
    s.push_str("<h2>Top processes</h2>");
    let rows: Vec<_> = r
        .processes
        .iter()
        .map(|p| {
            vec![
                txt(&p.name),
                bytes_cell(p.bytes),
                pct_cell(p.percent),
                bytes_cell(p.relay_bytes),
            ]
        })
        .collect();
    table(
        s,
        "t-processes",
        &[
            ("process", false),
            ("bytes", true),
            ("share", true),
            ("relay", true),
        ],
        &rows,
    );
    s.push_str("<h2>Top peers</h2>");
    let named_rows = |v: &[Named]| -> Vec<Vec<(String, Option<f64>)>> {
        v.iter()
            .map(|n| vec![txt(&n.name), bytes_cell(n.bytes), pct_cell(n.percent)])
            .collect()
    };
    table(
        s,
        "t-peers",
        &[("peer", false), ("bytes", true), ("share", true)],
        &named_rows(&r.peers),
    );
    s.push_str("<h2>Relay per shard</h2>");
    let rows: Vec<_> = r
        .relay_shards
        .iter()
        .map(|x| {
            let a = x.amplification();
            vec![
                txt(x.shard.map_or_else(|| "-".into(), |n| n.to_string())),
                bytes_cell(x.control_bytes),
                bytes_cell(x.chat_bytes),
                pct_cell(x.control_percent()),
                num(x.messages as f64, x.messages.to_string()),
                num(x.duplicates as f64, x.duplicates.to_string()),
                num(
                    a.unwrap_or(0.0),
                    a.map_or_else(|| "-".into(), |a| format!("{a:.2}×")),
                ),
            ]
        })
        .collect();
    table(
        s,
        "t-relay",
        &[
            ("shard", false),
            ("control", true),
            ("chat", true),
            ("control share", true),
            ("messages", true),
            ("duplicates", true),
            ("amplification", true),
        ],
        &rows,
    );
    let _ = write!(s, "<h2>Mesh health per shard (D_low {d_low})</h2>");
    let rows: Vec<_> = r
        .mesh
        .iter()
        .map(|m| {
            let opt = |v: Option<u32>| {
                num(
                    f64::from(v.unwrap_or(0)),
                    v.map_or_else(|| "-".into(), |v| v.to_string()),
                )
            };
            vec![
                txt(m.name()),
                num(m.subscribed_secs, duration(m.subscribed_secs)),
                num(
                    f64::from(m.peers_subscribed),
                    m.peers_subscribed.to_string(),
                ),
                opt(m.mesh_peers),
                opt(m.mesh_peers_min),
                num(m.secs_below_d_low, duration(m.secs_below_d_low)),
                num(m.grafts as f64, m.grafts.to_string()),
                num(m.prunes as f64, m.prunes.to_string()),
                num(
                    f64::from(m.unsubscribed_senders),
                    m.unsubscribed_senders.to_string(),
                ),
            ]
        })
        .collect();
    table(
        s,
        "t-mesh",
        &[
            ("node and shard", false),
            ("subscribed", true),
            ("peers subscribed", true),
            ("mesh peers", true),
            ("min", true),
            ("below D_low", true),
            ("GRAFT", true),
            ("PRUNE", true),
            ("unsubscribed senders", true),
        ],
        &rows,
    );
    if let Some(node) = &r.node {
        let _ = write!(
            s,
            "<h2>App vs wire (the node's own counters)</h2><pre>{}</pre>",
            esc(&node.table())
        );
    }
    s.push_str("<h2>How the labels were obtained</h2>");
    let rows: Vec<_> = r
        .methods
        .iter()
        .map(|m| {
            vec![
                txt(m.method),
                bytes_cell(m.bytes),
                bytes_cell(m.relay_bytes),
                num(m.confidence, format!("{:.2}", m.confidence)),
            ]
        })
        .collect();
    table(
        s,
        "t-methods",
        &[
            ("method", false),
            ("bytes", true),
            ("relay bytes", true),
            ("confidence", true),
        ],
        &rows,
    );
    let _ = write!(
        s,
        "<p>Relay bytes not decoded: <b>{:.1} %</b>.</p><h2>Per day and hour (UTC)</h2>",
        r.relay_undecoded_percent
    );
    table(
        s,
        "t-days",
        &[("day", false), ("bytes", true), ("share", true)],
        &named_rows(&r.days),
    );
    table(
        s,
        "t-hours",
        &[("hour", false), ("bytes", true), ("share", true)],
        &named_rows(&r.hours),
    );
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::account::mesh::{MeshRow, WIRE};
    use crate::account::record::{Counters, Direction, Endpoints, Label, Owner, Row};
    use crate::report::{Collector, Filter};
    use crate::sink::Sink;

    /// A day of 10-s windows of a busy node: every category, 16 kinds on 8 shards, 200 peers,
    /// 12 processes, and mesh rows of 8 shards.
    #[test]
    fn a_busy_day_of_ten_second_windows_stays_under_two_megabytes() {
        let mut c = Collector::new(Filter::default());
        let kinds: Vec<Arc<str>> = (0..16).map(|k| Arc::from(format!("kind{k}"))).collect();
        let owners: Vec<Arc<Owner>> = (0..12)
            .map(|p| {
                Arc::new(Owner {
                    host: Some(Arc::from("node1")),
                    pid: Some(100 + p),
                    comm: Some(Arc::from(format!("proc{p}"))),
                    ..Owner::default()
                })
            })
            .collect();
        let day0 = 1_700_006_400_000_000i64;
        for w in 0..8640i64 {
            let mut rows = Vec::new();
            let mut mesh = Vec::new();
            for i in 0..64u64 {
                let cat = Category::ALL[(i % 8) as usize];
                let mut label = Label::decoded(cat, &Arc::from("p"), &kinds[(i % 16) as usize]);
                label.shard = Some((i % 8) as u16);
                rows.push(Row {
                    window_start_us: day0 + w * 10_000_000,
                    window_secs: 10,
                    owner: Arc::clone(&owners[(i % 12) as usize]),
                    endpoints: Endpoints {
                        transport: "tcp",
                        local_addr: None,
                        local_port: None,
                        remote_addr: Some(std::net::IpAddr::from([
                            10,
                            0,
                            (i % 4) as u8,
                            (w % 50) as u8,
                        ])),
                        remote_port: Some(60000),
                    },
                    label,
                    direction: Direction::In,
                    counters: Counters {
                        bytes: 1000 + (w as u64 * 7 + i * 13) % 5000,
                        messages: 3,
                        duplicates: 1,
                        ..Counters::default()
                    },
                });
            }
            for shard in 0..8u16 {
                mesh.push(MeshRow {
                    window_start_us: day0 + w * 10_000_000,
                    window_secs: 10,
                    local_addr: None,
                    cluster_id: Some(16),
                    shard: Some(shard),
                    pubsub_topic: Some(Arc::from(format!("/waku/2/rs/16/{shard}"))),
                    source: WIRE,
                    subscribed: Some(true),
                    peers_subscribed: 8,
                    mesh_peers: Some((w % 9) as u32),
                    mesh_peers_min: Some(0),
                    d_low: 4,
                    secs_below_d_low: Some(1.0),
                    grafts: 1,
                    prunes: 1,
                    unsubscribed_senders: 0,
                });
            }
            c.write(&rows).unwrap();
            c.mesh(&mesh).unwrap();
        }
        let page = render(&c.report(None, 4), 4);
        assert!(page.len() < 2_000_000, "{} bytes", page.len());
        assert!(page.contains("id='chart-mesh'"));
    }
}
