//! Numbers as operators read them: sizes, rates, ages, and text sparklines that
//! fit in a table cell.

/// `1.5 MB`, in SI units like the rest of Dandelion's output.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["kB", "MB", "GB", "TB", "PB"];
    if n < 1000 {
        return format!("{n} B");
    }
    #[allow(clippy::cast_precision_loss)] // a display value
    let mut v = n as f64 / 1000.0;
    let mut unit = 0;
    while v >= 1000.0 && unit < UNITS.len() - 1 {
        v /= 1000.0;
        unit += 1;
    }
    if v < 10.0 {
        format!("{v:.1} {}", UNITS[unit])
    } else {
        format!("{v:.0} {}", UNITS[unit])
    }
}

pub fn opt_bytes(n: Option<u64>) -> String {
    n.map_or_else(|| "-".into(), bytes)
}

pub fn rate(n: Option<u64>) -> String {
    n.map_or_else(|| "-".into(), |n| format!("{}/s", bytes(n)))
}

/// `42s`, `3m`, `5h`, `2d`.
pub fn age(seconds: f64) -> String {
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // clamped ≥ 0
    let s = seconds.max(0.0) as u64;
    match s {
        0..=119 => format!("{s}s"),
        120..=7199 => format!("{}m", s / 60),
        7200..=172_799 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

/// `1:05` for a TTL countdown.
pub fn countdown(seconds: u64) -> String {
    if seconds >= 3600 {
        format!("{}h{:02}m", seconds / 3600, (seconds % 3600) / 60)
    } else {
        format!("{}:{:02}", seconds / 60, seconds % 60)
    }
}

/// The newest `width` readings as block characters, scaled to `max` (or to the
/// largest reading when there is no cap).
pub fn sparkline(
    values: impl DoubleEndedIterator<Item = u64>,
    width: usize,
    max: Option<u64>,
) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let mut newest: Vec<u64> = values.rev().take(width).collect();
    newest.reverse();
    let top = max
        .filter(|m| *m > 0)
        .or_else(|| newest.iter().copied().max())
        .unwrap_or(0)
        .max(1);
    let line: String = newest
        .iter()
        .map(|v| {
            let level = (v.min(&top) * 7 + top / 2) / top;
            BARS[usize::try_from(level).unwrap_or(7).min(7)]
        })
        .collect();
    format!("{line:<width$}")
}

/// `of 2.0 MB/s`, or `(no cap)` when there is no limit to compare with.
pub fn of_limit(limit: Option<String>, none: &str) -> String {
    limit.map_or_else(|| format!("({none})"), |l| format!("of {l}"))
}

/// A short form of a long ID: `box-a574f1dc…`.
pub fn short_id(id: &str, keep: usize) -> String {
    if id.chars().count() <= keep {
        id.to_owned()
    } else {
        let mut s: String = id.chars().take(keep.saturating_sub(1)).collect();
        s.push('…');
        s
    }
}

/// A text bar for a share, like `[#####.....]`.
pub fn bar(done: u64, total: u64, width: usize) -> String {
    let total = total.max(1);
    let filled = usize::try_from(done.min(total) * width as u64 / total).unwrap_or(width);
    format!("{}{}", "█".repeat(filled), "░".repeat(width - filled))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_ages_and_sparklines() {
        assert_eq!(bytes(999), "999 B");
        assert_eq!(bytes(1_500_000), "1.5 MB");
        assert_eq!(bytes(73_400_320), "73 MB");
        assert_eq!(age(42.4), "42s");
        assert_eq!(age(-3.0), "0s");
        assert_eq!(age(600.0), "10m");
        assert_eq!(countdown(65), "1:05");
        assert_eq!(sparkline([0, 50, 100].into_iter(), 3, Some(100)), "▁▅█");
        assert_eq!(sparkline([100].into_iter(), 3, None), "█  ");
        assert_eq!(short_id("box-0123456789", 8), "box-012…");
        assert_eq!(bar(1, 4, 8), "██░░░░░░");
    }
}
