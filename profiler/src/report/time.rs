//! The times `--since` and `--until` take: `YYYY-MM-DD`, `YYYY-MM-DDTHH:MM[:SS][Z]` (or a space
//! for the `T`), UTC.

/// µs since the epoch of a UTC date or date and time, or why not.
pub fn parse_utc(s: &str) -> Result<i64, String> {
    let bad = || {
        format!("'{s}' is not a UTC time (e.g. 2026-12-06, 2026-12-06T15:30, 2026-12-06 15:30:00Z)")
    };
    let t = s.trim().trim_end_matches('Z');
    let (date, clock) = match t.split_once(['T', ' ']) {
        Some((d, c)) => (d, Some(c)),
        None => (t, None),
    };
    let num = |x: &str| x.parse::<i64>().map_err(|_| bad());
    let d: Vec<&str> = date.split('-').collect();
    let [y, m, day] = d.as_slice() else {
        return Err(bad());
    };
    let (y, m, day) = (num(y)?, num(m)?, num(day)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) {
        return Err(bad());
    }
    let mut secs = days_from_civil(y, m, day) * 86_400;
    if let Some(c) = clock {
        let parts: Vec<&str> = c.split(':').collect();
        let (h, min, sec) = match parts.as_slice() {
            [h, m] => (num(h)?, num(m)?, 0),
            [h, m, s] => (num(h)?, num(m)?, num(s)?),
            _ => return Err(bad()),
        };
        if h > 23 || min > 59 || sec > 60 {
            return Err(bad());
        }
        secs += h * 3600 + min * 60 + sec;
    }
    Ok(secs * 1_000_000)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_times_round_trip_with_the_partitions() {
        let us = parse_utc("2024-10-18T19:53:42Z").unwrap();
        assert_eq!(us, 1_729_281_222_000_000);
        assert_eq!(crate::forward::spool::utc(us), "2024-10-18T19:53:42Z");
        assert_eq!(parse_utc("2000-02-29").unwrap(), 951_782_400_000_000);
        assert_eq!(parse_utc("2000-02-29 00:01").unwrap(), 951_782_460_000_000);
        assert!(parse_utc("yesterday").is_err());
        assert!(parse_utc("2024-13-01").is_err());
    }
}
