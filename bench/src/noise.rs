//! CPU accounting for a measurement: how much of the machine something else
//! used, and how much CPU the servers and the load generator spent.
//!
//! The machines are shared: another engineer's build can take a core in the
//! middle of a run. Each run records the CPU share used by processes outside
//! this bench's own tree (itself and the servers it started), from
//! `/proc/stat` and `/proc/<pid>/stat`, so a reader can tell a slow store
//! from a busy machine. CPU time per operation is also far less sensitive to
//! such noise than throughput, so it is reported too.

use std::fs;

/// CPU counters at one instant, in clock ticks.
#[derive(Clone, Copy, Debug, Default)]
pub struct CpuSample {
    total: u64,
    busy: u64,
    /// This process (the load generator).
    own_self: u64,
    /// Its child processes (the servers it started).
    own_children: u64,
}

/// Linux reports process and system times in USER_HZ ticks, which the kernel
/// ABI fixes at 100 per second whatever the kernel's own tick rate.
const TICKS_PER_SECOND: f64 = 100.0;

impl CpuSample {
    /// `None` where /proc is not readable (not Linux).
    pub fn now() -> Option<Self> {
        let stat = fs::read_to_string("/proc/stat").ok()?;
        let fields: Vec<u64> = stat
            .lines()
            .next()?
            .split_whitespace()
            .skip(1)
            .filter_map(|f| f.parse().ok())
            .collect();
        let total: u64 = fields.iter().take(8).sum();
        // Fields: user nice system idle iowait irq softirq steal. Not busy:
        // idle and iowait. Also left out: irq and softirq, because the kernel
        // charges interrupt time to no process, and during a run it is mostly
        // this bench's own loopback traffic being delivered; counting it as
        // foreign would blame the machine for our own packets. Steal (the
        // hypervisor running someone else) stays in: that is real noise.
        let field = |i: usize| fields.get(i).copied().unwrap_or(0);
        let idle = field(3) + field(4) + field(5) + field(6);
        let me = std::process::id();
        let own_self = process_ticks(me).unwrap_or(0);
        let mut own_children = 0;
        for entry in fs::read_dir("/proc").ok()?.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if pid != me && parent(pid) == Some(me) {
                own_children += process_ticks(pid).unwrap_or(0);
            }
        }
        Some(CpuSample {
            total,
            busy: total - idle,
            own_self,
            own_children,
        })
    }

    /// Percent of all CPU time between `self` and `later` used by processes
    /// outside the bench's tree. A child that exited in between takes its
    /// ticks with it, so this errs on the high side in that case.
    pub fn foreign_pct(&self, later: &CpuSample) -> f64 {
        let total = later.total.saturating_sub(self.total).max(1) as f64;
        let busy = later.busy.saturating_sub(self.busy) as f64;
        let own = (later.own_self + later.own_children)
            .saturating_sub(self.own_self + self.own_children) as f64;
        ((busy - own).max(0.0) / total * 100.0).min(100.0)
    }

    /// CPU seconds the child processes (servers) used between the two samples.
    pub fn children_cpu_s(&self, later: &CpuSample) -> f64 {
        later.own_children.saturating_sub(self.own_children) as f64 / TICKS_PER_SECOND
    }

    /// CPU seconds this process (the load generator) used between the two samples.
    pub fn self_cpu_s(&self, later: &CpuSample) -> f64 {
        later.own_self.saturating_sub(self.own_self) as f64 / TICKS_PER_SECOND
    }
}

/// Fields of `/proc/<pid>/stat` after the command name (which may contain
/// spaces, so split after its closing parenthesis).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

fn parent(pid: u32) -> Option<u32> {
    stat_fields(pid)?.get(1)?.parse().ok()
}

/// utime + stime of a process, all its threads included.
fn process_ticks(pid: u32) -> Option<u64> {
    let f = stat_fields(pid)?;
    // utime and stime are fields 14 and 15 of stat, i.e. 11 and 12 after the name.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// The machine's load averages as `/proc/loadavg` states them (1, 5 and 15
/// minutes, then runnable/total tasks and the last pid), recorded beside a
/// result so that a reader can tell a busy machine; `None` off Linux.
pub fn load_average_line() -> Option<String> {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|line| line.trim().to_string())
}

/// The 1-minute load average; `None` off Linux.
pub fn load_average() -> Option<f64> {
    load_average_line()?.split_whitespace().next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn foreign_share_is_a_percentage() {
        let a = CpuSample::now().expect("/proc is readable on Linux");
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_add(i * i);
        }
        assert!(x > 0);
        let b = CpuSample::now().unwrap();
        let pct = a.foreign_pct(&b);
        assert!((0.0..=100.0).contains(&pct));
    }
}
