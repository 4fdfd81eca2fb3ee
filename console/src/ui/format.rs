//! Number formatting for narrow columns: binary units, compact durations, relative times.

/// `1536` -> `1.5K`, with binary multiples (K = KiB) to keep columns narrow.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "K", "M", "G", "T", "P"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    let suffix = UNITS.get(unit).copied().unwrap_or("?");
    if unit == 0 {
        format!("{n}B")
    } else if value < 10.0 {
        format!("{value:.1}{suffix}")
    } else {
        format!("{value:.0}{suffix}")
    }
}

/// Microseconds -> `850us`, `1.2ms`, `3.4s`.
pub fn duration_us(us: u64) -> String {
    if us < 1_000 {
        format!("{us}us")
    } else if us < 1_000_000 {
        format!("{:.1}ms", us as f64 / 1_000.0)
    } else {
        format!("{:.1}s", us as f64 / 1_000_000.0)
    }
}

/// Seconds -> `45s`, `12m`, `3h05m`, `2d4h`.
pub fn duration_s(s: u64) -> String {
    if s < 60 {
        format!("{s}s")
    } else if s < 3_600 {
        format!("{}m", s / 60)
    } else if s < 86_400 {
        format!("{}h{:02}m", s / 3_600, (s % 3_600) / 60)
    } else {
        format!("{}d{}h", s / 86_400, (s % 86_400) / 3_600)
    }
}

/// An epoch time relative to `now`: `in 2h05m`, `3m ago`.
pub fn relative(at_s: u64, now_s: u64) -> String {
    if at_s >= now_s {
        format!("in {}", duration_s(at_s - now_s))
    } else {
        format!("{} ago", duration_s(now_s - at_s))
    }
}

/// Epoch seconds -> `HH:MM:SS` UTC.
pub fn clock(at_s: u64) -> String {
    let s = at_s % 86_400;
    format!("{:02}:{:02}:{:02}", s / 3_600, (s % 3_600) / 60, s % 60)
}

/// Rates: `950`, `12.3k`, `4.5M`.
pub fn rate(per_s: f64) -> String {
    // A rate is never negative; this also turns -0.0 (an empty float sum) into "0".
    let per_s = if per_s > 0.0 { per_s } else { 0.0 };
    if per_s < 1_000.0 {
        format!("{per_s:.0}")
    } else if per_s < 1_000_000.0 {
        format!("{:.1}k", per_s / 1_000.0)
    } else {
        format!("{:.1}M", per_s / 1_000_000.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_are_compact_and_exact_at_boundaries() {
        assert_eq!(bytes(0), "0B");
        assert_eq!(bytes(1023), "1023B");
        assert_eq!(bytes(1536), "1.5K");
        assert_eq!(bytes(10 << 30), "10G");
        assert_eq!(duration_us(850), "850us");
        assert_eq!(duration_us(1_250), "1.2ms");
        assert_eq!(duration_us(3_400_000), "3.4s");
        assert_eq!(duration_s(7_500), "2h05m");
        assert_eq!(relative(100, 40), "in 1m");
        assert_eq!(relative(40, 100), "1m ago");
        assert_eq!(clock(86_400 + 3_661), "01:01:01");
        assert_eq!(rate(12_345.0), "12.3k");
        assert_eq!(rate(-0.0), "0");
        assert_eq!(rate(f64::NAN), "0");
    }
}
