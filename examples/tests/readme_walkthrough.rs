//! The README's "five minutes with proxflow", run as written: every shell command between its
//! `walkthrough` markers, in order, against the gateway binary on a free port, each of which
//! must succeed. A command that starts the gateway starts this package's binary in the
//! background (stopping the one before, as Ctrl-C would); the others run in `bash` with
//! `pipefail`, in a folder of the test's own.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const GATEWAY: &str = "cargo run --release -p proxflow-examples --bin gateway";

/// The shell lines of the walkthrough, in order.
fn commands(readme: &str) -> Vec<String> {
    let start = readme
        .find("<!-- walkthrough:begin -->")
        .expect("begin marker");
    let end = readme.find("<!-- walkthrough:end -->").expect("end marker");
    let mut lines = Vec::new();
    let mut in_block = false;
    for line in readme[start..end].lines() {
        match line.trim() {
            "```sh" => in_block = true,
            "```" => in_block = false,
            text if in_block && !text.is_empty() && !text.starts_with('#') => {
                lines.push(text.to_string())
            }
            _ => {}
        }
    }
    lines
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts the gateway binary with `args` on `port`, and waits until it answers `/health`.
fn start(args: &str, port: u16, dir: &Path) -> Child {
    let mut child = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(args.split_whitespace())
        .args(["-p", &port.to_string()])
        .current_dir(dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("the gateway binary");
    let started = Instant::now();
    loop {
        let health = Command::new("curl")
            .args(["-sf", &format!("http://127.0.0.1:{port}/health")])
            .stdout(Stdio::null())
            .status()
            .expect("curl");
        if health.success() {
            return child;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the gateway exited: {status}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the gateway did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Stops `child` as Ctrl-C would (SIGINT), and waits for it.
fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status();
    let status = child.wait().unwrap();
    assert!(status.success(), "the gateway stopped with {status}");
}

#[test]
fn every_command_of_the_walkthrough_works() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let commands = commands(&readme);
    assert!(commands.len() >= 10, "{commands:?}");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut gateway: Option<Child> = None;
    for command in &commands {
        let command = command.replace("127.0.0.1:3000", &format!("127.0.0.1:{port}"));
        let command = match command.strip_prefix(GATEWAY) {
            Some(rest) => {
                let args = rest.trim().trim_start_matches("--").trim();
                if !args.contains('>') {
                    // A gateway that serves: the one before stops first.
                    if let Some(previous) = gateway.take() {
                        stop(previous);
                    }
                    gateway = Some(start(args, port, dir.path()));
                    continue;
                }
                format!("{} {args}", env!("CARGO_BIN_EXE_gateway"))
            }
            None => command,
        };
        let output = Command::new("bash")
            .args(["-c", &format!("set -euo pipefail; {command}")])
            .current_dir(dir.path())
            .output()
            .expect("bash");
        assert!(
            output.status.success(),
            "{command}\nstdout: {}\nstderr: {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        println!("$ {command}\n{}", String::from_utf8_lossy(&output.stdout));
    }
    stop(gateway.expect("the walkthrough starts the gateway"));
}
