//! Stopping what the program started when a signal ends it: the servers' guards stop them when
//! `run` returns, but Ctrl-C, SIGTERM or SIGHUP would end the process without destructors.

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use super::cpu::process_tree;
use super::Result;
use tokio::runtime::Runtime;
use tokio::signal::unix::{signal, SignalKind};

/// On Ctrl-C, SIGTERM or SIGHUP: stops every process below this one (the servers, and wrk if
/// it runs), removes `tmp` and exits with status 130.
///
/// The handlers are installed before this returns, so no signal finds the default action
/// (which ends the process at once) from then on.
pub fn stop_children_on_signal(runtime: &Runtime, tmp: PathBuf) -> Result<()> {
    let _context = runtime.enter();
    let mut signals = [
        SignalKind::interrupt(),
        SignalKind::terminate(),
        SignalKind::hangup(),
    ]
    .map(signal);
    for kind in &mut signals {
        if let Err(error) = kind {
            return Err(format!("cannot handle signals: {error}").into());
        }
    }
    let [Ok(mut interrupt), Ok(mut terminate), Ok(mut hangup)] = signals else {
        unreachable!("every handler was installed");
    };
    runtime.spawn(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
            _ = hangup.recv() => {}
        }
        eprintln!("interrupted: stopping the servers");
        stop_children();
        let _ = fs::remove_dir_all(&tmp);
        std::process::exit(130);
    });
    Ok(())
}

/// SIGTERM to each process below this one (the servers, and the comparison programs this one
/// runs with theirs), up to 3 s for them to exit, then SIGKILL to those left. The whole tree is
/// listed before any signal: a process whose parent exits is adopted elsewhere and would no
/// longer be found below this one.
fn stop_children() {
    let me = std::process::id();
    let descendants: Vec<u32> = process_tree(me)
        .into_iter()
        .filter(|&pid| pid != me)
        .collect();
    signal_each("-TERM", &live(&descendants));
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline && !live(&descendants).is_empty() {
        thread::sleep(Duration::from_millis(20));
    }
    signal_each("-KILL", &live(&descendants));
}

fn signal_each(signal: &str, pids: &[u32]) {
    for pid in pids {
        // `unsafe` (for libc::kill) is forbidden in this workspace, hence the `kill` program.
        let _ = Command::new("kill")
            .args([signal, &pid.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Those of `pids` that have not exited (zombies have).
fn live(pids: &[u32]) -> Vec<u32> {
    pids.iter()
        .copied()
        .filter(|pid| {
            let Ok(stat) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // "pid (command) state ...": the command may hold spaces and parentheses.
            let state = stat
                .rsplit_once(')')
                .map_or("", |(_, rest)| rest)
                .split_whitespace()
                .next();
            state != Some("Z") && state != Some("X")
        })
        .collect()
}
