//! What a server and the two cores did during a run, from `/proc`: the CPU time of a server's
//! processes (nginx's worker, Varnish's cache process, every thread), and how busy each core
//! was and how much of it the hypervisor took for other guests.

use std::fs;

use super::Result;

/// The fields of `/proc/PID/stat` after the command name (which may hold spaces): index 0 is
/// the state, 1 the parent pid, 11 and 12 the user and system CPU time in clock ticks.
fn proc_stat(pid: u32) -> Option<Vec<String>> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// `pid` and every process below it (nginx's master and worker, varnishd's manager and cache
/// process).
pub fn process_tree(pid: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return vec![pid];
    };
    let parents: Vec<(u32, u32)> = entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|child| {
            let parent = proc_stat(child)?.get(1)?.parse().ok()?;
            Some((child, parent))
        })
        .collect();
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(
            parents
                .iter()
                .filter(|(_, p)| *p == parent)
                .map(|(child, _)| *child),
        );
        i += 1;
    }
    tree
}

/// User and system CPU time of the processes (all their threads), in seconds; processes gone
/// meanwhile count nothing.
pub fn cpu_seconds(pids: &[u32]) -> [f64; 2] {
    let mut ticks = [0u64; 2];
    for &pid in pids {
        let Some(fields) = proc_stat(pid) else {
            continue;
        };
        for (sum, index) in ticks.iter_mut().zip([11, 12]) {
            *sum += fields
                .get(index)
                .and_then(|t| t.parse::<u64>().ok())
                .unwrap_or(0);
        }
    }
    // Linux reports clock ticks of 1/100 s.
    ticks.map(|t| t as f64 / 100.0)
}

/// One core's time over a run, as fractions of the run.
#[derive(Debug, Clone, Copy, Default)]
pub struct CoreUse {
    /// Running anything (user, system, interrupts).
    pub busy: f64,
    /// Taken by the hypervisor for other guests: the host's noise, made visible.
    pub stolen: f64,
}

/// Cumulative (busy, stolen, total) ticks of CPU `cpu`.
pub fn core_ticks(cpu: &str) -> Result<[u64; 3]> {
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

/// The use of a core between two readings of [`core_ticks`].
pub fn core_use(before: [u64; 3], after: [u64; 3]) -> CoreUse {
    let [busy, stolen, total] = [0, 1, 2].map(|i| after[i].saturating_sub(before[i]) as f64);
    CoreUse {
        busy: busy / total.max(1.0),
        stolen: stolen / total.max(1.0),
    }
}

/// The machine in a few words: the CPU model and the number of cores.
pub fn machine() -> String {
    let model = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|line| line.starts_with("model name"))
                .and_then(|line| line.split_once(':'))
                .map(|(_, model)| model.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    // Counted from /proc/cpuinfo: a process pinned by taskset sees one core in
    // `available_parallelism`.
    let cores = fs::read_to_string("/proc/cpuinfo")
        .map(|info| info.lines().filter(|l| l.starts_with("processor")).count())
        .unwrap_or(0);
    format!("{model}, {cores} cores")
}

/// The 1-minute load average (`/proc/loadavg`), or `None`.
pub fn load_average() -> Option<f64> {
    fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::{core_use, parse_core_ticks, process_tree};

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

    #[test]
    fn a_process_tree_holds_the_children() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .unwrap();
        let tree = process_tree(std::process::id());
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(tree[0], std::process::id());
        assert!(tree.contains(&child.id()));
    }
}
