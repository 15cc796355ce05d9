//! The static-file comparison's files, nginx's configuration, and the check that a server
//! sends each file's exact bytes: shared by `static_vs_nginx` and `vendor_compare`.

use std::fs;
use std::path::Path;

use crate::vendor::http::{self, Response};
use crate::vendor::process::{free_port, Server};
use crate::vendor::template::{self, CADDY_STATIC, NGINX_STATIC};
use crate::vendor::{caddy, nginx, Result};

/// Files served, with their sizes. The extensions map to types nobody compresses by default, and
/// wrk sends no `Accept-Encoding`, so every server sends the bytes as they are.
pub const FILES: [(&str, usize); 2] = [("1k.txt", 1024), ("100k.bin", 100 * 1024)];

/// Writes [`FILES`] into `docroot` (made if missing).
pub fn write_files(docroot: &Path) -> Result<()> {
    fs::create_dir_all(docroot)?;
    for (name, len) in FILES {
        fs::write(docroot.join(name), file_contents(name, len))?;
    }
    Ok(())
}

/// Deterministic contents: printable lines for the text file, pseudo-random bytes for the binary.
pub fn file_contents(name: &str, len: usize) -> Vec<u8> {
    if name.ends_with(".txt") {
        b"proxflow static file benchmark, line of text 0123456789\n"
            .iter()
            .copied()
            .cycle()
            .take(len)
            .collect()
    } else {
        let mut x: u32 = 0x9e37_79b9;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect()
    }
}

/// nginx serving `docroot` with sendfile and its open-file cache
/// (`benches/vendor_configs/nginx/static.conf`); its files in `tmp/nginx`.
pub fn start_nginx(tmp: &Path, docroot: &Path) -> Result<Server> {
    let port = free_port()?;
    let http = template::render(
        NGINX_STATIC,
        &[
            ("port", &port.to_string()),
            ("docroot", &docroot.display().to_string()),
        ],
    )?;
    nginx::start(&tmp.join("nginx"), &http, &[port])
}

/// Caddy `file_server` on `docroot` (`benches/vendor_configs/caddy/static.Caddyfile`); its
/// files in `tmp/caddy`.
pub fn start_caddy(tmp: &Path, docroot: &Path) -> Result<Server> {
    let port = free_port()?;
    let config = template::render(
        CADDY_STATIC,
        &[
            ("port", &port.to_string()),
            ("docroot", &docroot.display().to_string()),
        ],
    )?;
    caddy::start(&tmp.join("caddy"), &config, port)
}

/// Before any load: 200, no content coding, and exactly the bytes on disk, for every file.
pub fn check_responses(server: &Server, docroot: &Path) -> Result<()> {
    for (file, _) in FILES {
        let expected = fs::read(docroot.join(file))?;
        let Response {
            status,
            headers,
            body,
        } = http::get(server.port, file)
            .map_err(|e| format!("{} GET /{file}: {e}{}", server.name, server.log_tail()))?;
        let problem = if status != 200 {
            format!("status {status}")
        } else if let Some((_, coding)) = headers.iter().find(|(n, _)| n == "content-encoding") {
            format!("content-encoding {coding}")
        } else if body != expected {
            format!(
                "body differs from the file ({} bytes, expected {})",
                body.len(),
                expected.len()
            )
        } else {
            continue;
        };
        return Err(format!("{} GET /{file}: {problem}; not benchmarking", server.name).into());
    }
    Ok(())
}
