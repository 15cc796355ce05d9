//! The three caches, each in front of its own origin, and the check that `/1k` is a hit in each
//! before it is loaded.

use std::path::Path;
use std::thread;
use std::time::Duration;

use super::origin::{self, Origin};
use crate::vendor::http::{self, Response};
use crate::vendor::process::{free_port, sibling_binary, start_printing_port, Server};
use crate::vendor::template::{self, NGINX_CACHE, VARNISH_CACHE};
use crate::vendor::{nginx, varnish, Result};

/// proxflow's cache, by its program's name.
pub const CACHING_PROXY: &str = "caching_proxy";
/// nginx with `proxy_cache`.
pub const NGINX: &str = "nginx";
/// Varnish.
pub const VARNISH: &str = "varnish";

/// varnishd's runtime parameters.
pub const VARNISH_PARAMS: [&str; 4] = [
    // In memory, 256 MB.
    "-s",
    "malloc,256m",
    // One pool of worker threads for one core (the default is two): the pool's size is left
    // to Varnish, which needs a thread per busy connection; taskset keeps them all on the
    // server core.
    "-p",
    "thread_pools=1",
];

/// `caching_proxy` built next to this program, with its default configuration.
pub fn start_caching_proxy(tmp: &Path, origin: &Origin) -> Result<Server> {
    let path = sibling_binary(CACHING_PROXY)?;
    if !path.is_file() {
        return Err(format!(
            "{} not found (build it: `cargo build --release -p proxflow-examples --bin caching_proxy`)",
            path.display()
        )
        .into());
    }
    let upstream = origin.url();
    start_printing_port(
        CACHING_PROXY,
        &path,
        &["--upstream", &upstream, "--listen", "127.0.0.1:0"],
        tmp,
    )
}

/// nginx with `proxy_cache` (`benches/vendor_configs/nginx/cache.conf`), one worker (see
/// `vendor::nginx` for what every comparison shares: no access log, unlimited keep-alive
/// requests, temporary paths in `tmp`).
pub fn start_nginx(tmp: &Path, origin: &Origin) -> Result<Server> {
    let dir = tmp.join("nginx");
    let port = free_port()?;
    let http = template::render(
        NGINX_CACHE,
        &[
            ("dir", &dir.display().to_string()),
            ("origin", &origin.port.to_string()),
            ("port", &port.to_string()),
        ],
    )?;
    nginx::start(&dir, &http, &[port])
}

/// Varnish with the built-in VCL in front of `origin` (`benches/vendor_configs/varnish/cache.vcl`),
/// and [`VARNISH_PARAMS`].
pub fn start_varnish(tmp: &Path, origin: &Origin) -> Result<Server> {
    let vcl = template::render(VARNISH_CACHE, &[("origin", &origin.port.to_string())])?;
    varnish::start(&tmp.join("varnish"), &vcl, free_port()?, &VARNISH_PARAMS)
}

/// Whether an answer of `server` says it came from the cache without asking the origin:
/// `Cache-Status: proxflow; hit` (RFC 9211; `fwd` would mean the origin was asked),
/// nginx's `X-Cache-Status: HIT`, Varnish's `X-Varnish` with two ids (this request's and that
/// of the request that stored the object). `None` if the header is missing.
fn is_hit(server: &str, response: &Response) -> Option<bool> {
    let header = |name: &str| {
        response
            .headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    };
    match server {
        CACHING_PROXY => header("cache-status").map(|value| {
            let params: Vec<&str> = value.split(';').map(str::trim).collect();
            params.contains(&"hit") && !params.iter().any(|p| p.starts_with("fwd"))
        }),
        NGINX => header("x-cache-status").map(|value| value == "HIT"),
        VARNISH => header("x-varnish").map(|value| value.split_whitespace().count() == 2),
        _ => None,
    }
}

/// The first `GET /1k` must be a miss and a later one a hit, both 200 with the origin's bytes.
/// Returns the hit's headers, for the record.
pub fn check_hit(server: &Server) -> Result<String> {
    let expected = origin::body();
    let get = || -> Result<Response> {
        let response = http::get(server.port, origin::FILE).map_err(|e| {
            format!(
                "{} GET /{}: {e}{}",
                server.name,
                origin::FILE,
                server.log_tail()
            )
        })?;
        if response.status != 200 || response.body != expected {
            return Err(format!(
                "{} GET /{}: status {}, {} bytes (expected 200 and the origin's {} bytes)",
                server.name,
                origin::FILE,
                response.status,
                response.body.len(),
                expected.len()
            )
            .into());
        }
        Ok(response)
    };
    let missing = || format!("{}: no cache status header in its answer", server.name);

    let first = get()?;
    if is_hit(server.name, &first).ok_or_else(missing)? {
        return Err(format!("{}: the first GET was already a hit", server.name).into());
    }
    // A cache may finish storing just after it has sent the first answer: a few tries.
    for _ in 0..20 {
        let later = get()?;
        if is_hit(server.name, &later).ok_or_else(missing)? {
            let headers: Vec<String> = later
                .headers
                .iter()
                .map(|(name, value)| format!("{name}: {value}"))
                .collect();
            return Ok(headers.join(" | "));
        }
        thread::sleep(Duration::from_millis(50));
    }
    Err(format!(
        "{}: /{} is not a hit after 20 GETs",
        server.name,
        origin::FILE
    )
    .into())
}

#[cfg(test)]
mod tests {
    use super::{is_hit, CACHING_PROXY, NGINX, VARNISH};
    use crate::vendor::http::Response;

    fn with(name: &str, value: &str) -> Response {
        Response {
            status: 200,
            headers: vec![(name.into(), value.into())],
            body: Vec::new(),
        }
    }

    #[test]
    fn hits_and_misses_as_each_cache_tells_them() {
        let cases = [
            (
                CACHING_PROXY,
                "cache-status",
                "proxflow; hit; ttl=3600",
                true,
            ),
            (
                CACHING_PROXY,
                "cache-status",
                "proxflow; fwd=uri-miss; stored",
                false,
            ),
            (
                CACHING_PROXY,
                "cache-status",
                "proxflow; hit; fwd=stale; detail=stale-if-error",
                false,
            ),
            (NGINX, "x-cache-status", "HIT", true),
            (NGINX, "x-cache-status", "MISS", false),
            (VARNISH, "x-varnish", "32773 32771", true),
            (VARNISH, "x-varnish", "32771", false),
        ];
        for (server, name, value, hit) in cases {
            assert_eq!(
                is_hit(server, &with(name, value)),
                Some(hit),
                "{server} {value}"
            );
        }
        assert_eq!(is_hit(NGINX, &with("cache-status", "HIT")), None);
    }
}
