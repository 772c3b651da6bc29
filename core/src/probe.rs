//! The box's system probe: CPU, memory, the data directory's disk and network
//! interface rates, as the heartbeat's `SYSTEM_INFO` reports them.
//!
//! It keeps one `sysinfo::System` and one `Networks` between calls, because CPU
//! usage and interface rates are differences between two readings; and it only
//! asks sysinfo for CPU, memory and networks, never the process table, which is
//! the expensive part on a household device. Disk space comes from one `statvfs`
//! of the data directory, which is exact for the filesystem files are stored on.

use std::path::{Path, PathBuf};
use std::time::Instant;

use sysinfo::{CpuRefreshKind, MemoryRefreshKind, Networks, RefreshKind, System};

use crate::protocol::SystemInfo;

/// Keeps the previous readings that usage and rates are computed from.
#[derive(Debug)]
pub struct Probe {
    system: Option<System>,
    networks: Option<Networks>,
    last_network: Instant,
    disk_path: PathBuf,
}

impl Probe {
    /// A probe whose disk figures are for the filesystem holding `disk_path`.
    /// A platform sysinfo cannot read leaves those figures out rather than failing.
    pub fn new(disk_path: &Path) -> Probe {
        let system = System::new_with_specifics(
            RefreshKind::nothing()
                .with_cpu(CpuRefreshKind::nothing().with_usage())
                .with_memory(MemoryRefreshKind::nothing().with_ram()),
        )
        .ok();
        Probe {
            system,
            networks: Networks::new_with_refreshed_list().ok(),
            last_network: Instant::now(),
            disk_path: disk_path.to_owned(),
        }
    }

    /// Reads everything once. The first call's CPU usage and network rates are 0:
    /// they are differences since the previous call.
    pub fn sample(&mut self) -> SystemInfo {
        let mut info = SystemInfo::default();
        if let Some(system) = &mut self.system {
            system.refresh_cpu_usage();
            system.refresh_memory();
            info.cpu_cores = u32::try_from(system.cpus().len()).ok();
            info.cpu_usage = Some(f64::from(system.global_cpu_usage()));
            info.mem_total = Some(system.total_memory());
            info.mem_available = Some(system.available_memory());
        }
        if let Ok(load) = System::load_average() {
            info.load_avg = Some([load.one, load.five, load.fifteen]);
        }
        if let Some((total, available)) = disk_space(&self.disk_path) {
            info.disk_total = Some(total);
            info.disk_available = Some(available);
        }
        if let Some(networks) = &mut self.networks {
            networks.refresh(true);
            let elapsed = self.last_network.elapsed().as_secs_f64().max(0.001);
            self.last_network = Instant::now();
            let (mut tx, mut rx) = (0u64, 0u64);
            for (name, data) in networks.iter() {
                // Loopback traffic is not the household's uplink.
                if name == "lo" {
                    continue;
                }
                tx = tx.saturating_add(data.transmitted());
                rx = rx.saturating_add(data.received());
            }
            info.net_tx_rate = Some(per_second(tx, elapsed));
            info.net_rx_rate = Some(per_second(rx, elapsed));
        }
        info
    }
}

/// Total and available (to unprivileged users) bytes of the filesystem holding `path`.
pub fn disk_space(path: &Path) -> Option<(u64, u64)> {
    let stat = rustix::fs::statvfs(path).ok()?;
    Some((
        stat.f_blocks.saturating_mul(stat.f_frsize),
        stat.f_bavail.saturating_mul(stat.f_frsize),
    ))
}

/// The process's soft limit on open file descriptors (`ulimit -n`,
/// systemd's `LimitNOFILE`), if it has one: connection caps stay below it.
pub fn open_files_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
}

fn per_second(bytes: u64, secs: f64) -> u64 {
    // Rates are reported in whole bytes per second; precision below that is noise.
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        clippy::cast_precision_loss
    )]
    let rate = (bytes as f64 / secs) as u64;
    rate
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sample_has_cpu_memory_and_disk() {
        let dir = std::env::temp_dir();
        let mut probe = Probe::new(&dir);
        let info = probe.sample();
        assert!(info.cpu_cores.unwrap_or(0) >= 1, "{info:?}");
        assert!(info.mem_total.unwrap_or(0) > 0, "{info:?}");
        let (total, available) = (
            info.disk_total.unwrap_or(0),
            info.disk_available.unwrap_or(0),
        );
        assert!(total > 0 && available <= total, "{info:?}");
        assert!(info.net_tx_rate.is_some());
    }
}
