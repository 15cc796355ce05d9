//! The servers compared: nginx with a server block per scenario, `ratelimit_server` per
//! scenario, and `ratelimit_server --no-limit`; and the check that each answers as expected
//! before it is loaded.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::thread;

use proxflow_benches::vendor::http::{self, Response};
use proxflow_benches::vendor::process::{free_port, start_printing_port, Server};
use proxflow_benches::vendor::{nginx, Result, CONNECTIONS};

use crate::cli::Args;
use crate::scenario::Scenario;

/// The reference server: `ratelimit_server --no-limit`, the same hyper server without the layer.
pub const NO_LIMIT: &str = "no limiter";

/// A server under load in one scenario.
pub struct Target {
    /// The scenario it serves.
    pub scenario: Scenario,
    /// `nginx`, `proxflow` or [`NO_LIMIT`].
    pub name: &'static str,
    /// Where it listens on 127.0.0.1.
    pub port: u16,
    /// The processes whose CPU time counts (nginx's worker, not its master).
    pub pids: Vec<u32>,
}

/// One nginx (one worker) with a server block per scenario; returns the port of each.
///
/// nginx applies `limit_req` in its preaccess phase, after the rewrite phase in which `return`
/// answers, so `try_files` moves the answer to the content phase (see the program's docs).
pub fn start_nginx(tmp: &Path, args: &Args) -> Result<(Server, BTreeMap<Scenario, u16>)> {
    let dir = tmp.join("nginx");
    fs::create_dir_all(dir.join("www"))?;
    let tb_port = free_port()?;
    let lb_port = free_port()?;
    let log_level = if args.nginx_log_rejections {
        "# limit_req_log_level error (the default): one error-log line per rejected request"
    } else {
        "limit_req_log_level info; # below error_log's level: rejections are not logged"
    };
    let http = format!(
        r#"    root {dir}/www;
    limit_req_zone $binary_remote_addr zone=tb:10m rate={rate}r/s;
    limit_req_zone $binary_remote_addr zone=lb:10m rate={rate}r/s;
    limit_req_status 429;
    {log_level}
    server {{
        listen 127.0.0.1:{tb_port};
        location / {{
            limit_req zone=tb burst={burst} nodelay;
            try_files /nonexistent @ok;
        }}
        location @ok {{ return 200 "ok\n"; }}
    }}
    server {{
        listen 127.0.0.1:{lb_port};
        location / {{
            limit_req zone=lb burst={leaky_burst};
            try_files /nonexistent @ok;
        }}
        location @ok {{ return 200 "ok\n"; }}
    }}
"#,
        dir = dir.display(),
        rate = args.rate,
        burst = args.burst,
        leaky_burst = args.leaky_burst,
    );
    let server = nginx::start(&dir, &http, &[tb_port, lb_port])?;
    let ports = BTreeMap::from([
        (Scenario::TokenBucket, tb_port),
        (Scenario::LeakyBucket, lb_port),
    ]);
    Ok((server, ports))
}

/// `ratelimit_server` (the program at `program`) for each scenario, with the arguments it was
/// started with.
pub fn start_proxflow(
    program: &Path,
    args: &Args,
    scenarios: &[Scenario],
    tmp: &Path,
) -> Result<BTreeMap<Scenario, (Server, String)>> {
    let rate = args.rate.to_string();
    let tb_burst = (args.burst + 1).to_string();
    let lb_burst = args.leaky_burst.to_string();
    let mut proxflow = BTreeMap::new();
    for &scenario in scenarios {
        let (algorithm, burst) = match scenario {
            Scenario::TokenBucket => ("token_bucket", tb_burst.as_str()),
            Scenario::LeakyBucket => ("leaky_bucket", lb_burst.as_str()),
        };
        let server_args = [
            "-p",
            "0",
            "--rate",
            &rate,
            "--per",
            "1s",
            "--burst",
            burst,
            "--algorithm",
            algorithm,
            "--key",
            "ip",
            "--reject",
            "429",
            "--headers",
            &args.headers,
        ];
        let server = start_printing_port("proxflow", program, &server_args, tmp)?;
        proxflow.insert(scenario, (server, server_args.join(" ")));
    }
    Ok(proxflow)
}

/// Before any load: a burst of concurrent requests (32 clients x 20) gets only `200 ok\n` and
/// `429`, and both if `limited` (only 200s otherwise). Returns (200s, 429s).
pub fn check_statuses(port: u16, limited_expected: bool) -> Result<(usize, usize)> {
    let statuses: Vec<Result<Response>> = thread::scope(|scope| {
        let handles: Vec<_> = (0..CONNECTIONS)
            .map(|_| {
                scope.spawn(move || {
                    (0..20)
                        .map(|_| http::get(port, "").map_err(|e| e.to_string()))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_default())
            .map(|r| r.map_err(Into::into))
            .collect()
    });
    let (mut ok, mut limited) = (0, 0);
    for result in statuses {
        let response = result?;
        match (response.status, response.body) {
            (200, body) if body == b"ok\n" => ok += 1,
            (200, body) => {
                return Err(format!("200 with body {:?}", String::from_utf8_lossy(&body)).into())
            }
            (429, _) => limited += 1,
            (status, _) => return Err(format!("unexpected status {status}").into()),
        }
    }
    if !limited_expected && limited > 0 {
        return Err(format!("{limited} x 429 from a server without a limit").into());
    }
    if limited_expected && (ok == 0 || limited == 0) {
        return Err(format!(
            "{ok} x 200 and {limited} x 429: the limit does not apply; not benchmarking"
        )
        .into());
    }
    Ok((ok, limited))
}
