//! One wrk run against one server, and what the server and the two cores did meanwhile.

use std::fs;

use proxflow_benches::vendor::{wrk, Result, SERVER_CPU, WRK_CPU};

/// What one wrk run counted.
#[derive(Clone, Copy)]
pub struct Run {
    pub rps: f64,
    pub requests: u64,
    pub non_2xx: u64,
    pub seconds: f64,
    /// CPU time (user + system) the server's processes used during the run.
    pub cpu_seconds: f64,
    /// The part of it spent in the kernel (system time).
    pub kernel_seconds: f64,
    /// What the server's core and wrk's core did meanwhile.
    pub server_core: CoreUse,
    pub load_core: CoreUse,
}

impl Run {
    /// The requests answered 200.
    pub fn admitted(&self) -> u64 {
        self.requests - self.non_2xx
    }

    /// Requests answered per second of the server's CPU time: what one dedicated core would
    /// serve, less disturbed than wall-clock req/s by other programs taking the core.
    pub fn per_cpu_second(&self) -> f64 {
        self.requests as f64 / self.cpu_seconds.max(1e-9)
    }

    /// The share of the server's CPU time spent in the kernel.
    pub fn kernel_share(&self) -> f64 {
        self.kernel_seconds / self.cpu_seconds.max(1e-9)
    }

    /// Where the run's time went, in a few words.
    pub fn time_split(&self) -> String {
        format!(
            "server {:.0}% in the kernel; server core {:.0}% busy, {:.0}% stolen; wrk core {:.0}% busy, {:.0}% stolen",
            self.kernel_share() * 100.0,
            self.server_core.busy * 100.0,
            self.server_core.stolen * 100.0,
            self.load_core.busy * 100.0,
            self.load_core.stolen * 100.0,
        )
    }
}

/// One core's time over a run, from the `cpuN` line of `/proc/stat`, as fractions of the run.
#[derive(Clone, Copy, Default)]
pub struct CoreUse {
    /// Running anything (user, system, interrupts).
    pub busy: f64,
    /// Taken by the hypervisor for other guests: the host's noise, visible.
    pub stolen: f64,
}

/// Cumulative (busy, stolen, total) ticks of CPU `cpu`.
fn core_ticks(cpu: &str) -> Result<[u64; 3]> {
    parse_core_ticks(&fs::read_to_string("/proc/stat")?, cpu)
}

fn parse_core_ticks(stat: &str, cpu: &str) -> Result<[u64; 3]> {
    let name = format!("cpu{cpu}");
    let line = stat
        .lines()
        .find(|line| line.split_whitespace().next() == Some(name.as_str()))
        .ok_or_else(|| format!("no {name} in /proc/stat"))?;
    // user nice system idle iowait irq softirq steal (guest time is counted in user already).
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(str::parse)
        .collect::<std::result::Result<_, _>>()?;
    let [user, nice, system, idle, iowait, irq, softirq, steal] = ticks[..] else {
        return Err(format!("short {name} line in /proc/stat: {line}").into());
    };
    let busy = user + nice + system + irq + softirq;
    Ok([busy, steal, busy + steal + idle + iowait])
}

fn core_use(before: [u64; 3], after: [u64; 3]) -> CoreUse {
    let [busy, stolen, total] = [0, 1, 2].map(|i| after[i].saturating_sub(before[i]) as f64);
    CoreUse {
        busy: busy / total.max(1.0),
        stolen: stolen / total.max(1.0),
    }
}

/// One wrk run on the load core. wrk counts non-2xx responses itself; socket errors fail the
/// benchmark.
pub fn wrk(port: u16, secs: u32, server_pids: &[u32]) -> Result<Run> {
    let [user_before, system_before] = cpu_seconds(server_pids)?;
    let cores_before = (core_ticks(SERVER_CPU)?, core_ticks(WRK_CPU)?);
    let report = wrk::run(&format!("http://127.0.0.1:{port}/"), secs, &[])?;
    let cores_after = (core_ticks(SERVER_CPU)?, core_ticks(WRK_CPU)?);
    let [user, system] = cpu_seconds(server_pids)?;
    let kernel_seconds = system - system_before;
    let cpu_seconds = user - user_before + kernel_seconds;
    Ok(Run {
        rps: report.rps,
        requests: report.requests,
        seconds: report.seconds,
        non_2xx: report.non_2xx,
        cpu_seconds,
        kernel_seconds,
        server_core: core_use(cores_before.0, cores_after.0),
        load_core: core_use(cores_before.1, cores_after.1),
    })
}

/// The fields of `/proc/PID/stat` after the command name (which may hold spaces): index 0 is
/// the state, 1 the parent pid, 11 and 12 the user and system CPU time in clock ticks.
fn proc_stat(pid: u32) -> Option<Vec<String>> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// The processes whose parent is `pid` (nginx's workers).
pub fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&child| {
            proc_stat(child)
                .is_some_and(|fields| fields.get(1).map(String::as_str) == Some(&pid.to_string()))
        })
        .collect()
}

/// User and system CPU time of the processes, in seconds (Linux reports clock ticks of 1/100
/// s).
fn cpu_seconds(pids: &[u32]) -> Result<[f64; 2]> {
    let mut ticks = [0u64; 2];
    for &pid in pids {
        let fields = proc_stat(pid).ok_or_else(|| format!("process {pid} is gone"))?;
        for (sum, index) in ticks.iter_mut().zip([11, 12]) {
            *sum += fields
                .get(index)
                .and_then(|t| t.parse::<u64>().ok())
                .ok_or_else(|| format!("bad /proc/{pid}/stat"))?;
        }
    }
    Ok(ticks.map(|t| t as f64 / 100.0))
}

#[cfg(test)]
mod tests {
    use super::{core_use, parse_core_ticks};

    #[test]
    fn core_ticks_from_proc_stat() {
        let stat = "cpu  30 0 6 40 2 0 2 4 0 0\n\
                    cpu1 10 0 2 20 1 0 1 2 7 0\n\
                    cpu10 5 0 1 9 0 0 0 1 0 0\n";
        // busy = user + nice + system + irq + softirq; guest (7) is inside user already.
        assert_eq!(parse_core_ticks(stat, "1").unwrap(), [13, 2, 36]);
        assert_eq!(parse_core_ticks(stat, "10").unwrap(), [6, 1, 16]);
        assert!(parse_core_ticks(stat, "2").is_err());
        let used = core_use([13, 2, 36], [53, 12, 136]);
        assert_eq!((used.busy, used.stolen), (0.4, 0.1));
    }
}
