//! Running the programs of a vendor comparison: servers pinned to one core, wrk on the other,
//! and nginx and Varnish configured in temporary directories.

pub mod http;
pub mod nginx;
pub mod process;
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
/// Debian's wrk.
pub const WRK: &str = "/usr/bin/wrk";
/// The core of the server under test.
pub const SERVER_CPU: &str = "0";
/// The core of the load generator.
pub const WRK_CPU: &str = "1";
/// wrk's connections.
pub const CONNECTIONS: u32 = 32;

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
