//! What the tests of the programs share.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

/// Starts `program` (a `CARGO_BIN_EXE_*` path) with `args` and waits for its first line,
/// `listening on http://ADDR`; returns the process and `ADDR`.
pub fn start(program: &str, args: &[&str]) -> (Child, String) {
    start_with_stderr(program, args, Stdio::null())
}

/// As [`start`], with the program's stderr sent to `stderr` (`Stdio::piped()` to read its log).
pub fn start_with_stderr(program: &str, args: &[&str], stderr: Stdio) -> (Child, String) {
    let mut child = Command::new(program)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let address = line
        .trim()
        .strip_prefix("listening on http://")
        .expect(&line)
        .to_string();
    (child, address)
}
