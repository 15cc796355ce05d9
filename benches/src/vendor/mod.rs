//! Running the programs of a vendor comparison: servers pinned to one core, wrk on the other,
//! and nginx and Varnish configured in temporary directories.

pub mod caddy;
pub mod cpu;
pub mod haproxy;
pub mod http;
pub mod interrupt;
pub mod nginx;
pub mod openloop;
pub mod process;
pub mod template;
pub mod varnish;
pub mod wrk;

use std::fs::OpenOptions;
use std::io::Write;
use std::path::Path;

/// Errors of the comparison programs: reported and fatal.
pub type Result<T> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// Debian's nginx.
pub const NGINX: &str = "/usr/sbin/nginx";
/// Debian's Varnish.
pub const VARNISHD: &str = "/usr/sbin/varnishd";
/// Debian's HAProxy.
pub const HAPROXY: &str = "/usr/sbin/haproxy";
/// Debian's Caddy.
pub const CADDY: &str = "/usr/bin/caddy";
/// util-linux's taskset, which pins every server and load generator to its core.
pub const TASKSET: &str = "/usr/bin/taskset";
/// Debian's wrk.
pub const WRK: &str = "/usr/bin/wrk";
/// The core of the server under test.
pub const SERVER_CPU: &str = "0";
/// The core of the load generator.
pub const WRK_CPU: &str = "1";
/// wrk's connections.
pub const CONNECTIONS: u32 = 32;

/// The Debian package of each program a comparison may run.
pub const PACKAGES: [(&str, &str); 6] = [
    (NGINX, "nginx"),
    (HAPROXY, "haproxy"),
    (CADDY, "caddy"),
    (VARNISHD, "varnish"),
    (WRK, "wrk"),
    (TASKSET, "util-linux"),
];

/// Fails, naming the missing Debian packages and the `apt-get install` line that adds them, if
/// any of `programs` (paths from [`PACKAGES`]) is not installed.
pub fn require(programs: &[&str]) -> Result<()> {
    let mut missing: Vec<&str> = PACKAGES
        .iter()
        .filter(|(program, _)| programs.contains(program) && !Path::new(program).is_file())
        .map(|(_, package)| *package)
        .collect();
    missing.dedup();
    if missing.is_empty() {
        return Ok(());
    }
    Err(format!(
        "missing Debian packages: {}; install them with `apt-get install {}`",
        missing.join(", "),
        missing.join(" ")
    )
    .into())
}

/// Prints a comparison's report on stdout and, with `--markdown PATH`, appends it to that file.
pub fn publish(report: &str, markdown: Option<&Path>) -> Result<()> {
    print!("{report}");
    if let Some(path) = markdown {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?
            .write_all(format!("\n{report}").as_bytes())?;
        eprintln!("appended to {}", path.display());
    }
    Ok(())
}
