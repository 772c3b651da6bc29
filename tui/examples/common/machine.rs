//! What the benchmarks print about the machine before they measure: it is
//! shared and noisy, so every figure says how busy it was.

use std::time::Duration;

/// The load average and how busy all CPUs were over the last half second.
pub fn machine_load() -> String {
    let busy = || -> Option<(u64, u64)> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let cpu: Vec<u64> = stat
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .filter_map(|v| v.parse().ok())
            .collect();
        let idle = cpu.get(3)? + cpu.get(4).unwrap_or(&0);
        Some((cpu.iter().sum(), idle))
    };
    let loadavg = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let before = busy();
    std::thread::sleep(Duration::from_millis(500));
    let pressure = match (before, busy()) {
        (Some((t0, i0)), Some((t1, i1))) if t1 > t0 => {
            #[allow(clippy::cast_precision_loss)] // jiffies
            let p = 100.0 * (1.0 - (i1 - i0) as f64 / (t1 - t0) as f64);
            format!("{p:.0} %")
        }
        _ => "unknown".into(),
    };
    format!(
        "machine: {cpus} CPUs, load average {}, all CPUs {pressure} busy over 0.5 s before the run",
        loadavg
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    )
}
