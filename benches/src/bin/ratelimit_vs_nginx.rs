//! Vendor comparison for rate limiting: nginx `limit_req` vs proxflow's `ratelimit_server`
//! (`RateLimitLayer`), same rate and burst, same load, same core.
//!
//! Both servers are pinned to CPU 0 and wrk to CPU 1 (`wrk -t1 -c32 -dDs`, 32 connections from
//! 127.0.0.1, so one key). The rate is far below what the load offers, so almost every request
//! is rejected: the throughput measured is that of the rejection path, and the admitted count
//! is that of the algorithm.
//!
//! Equivalences (nginx 1.22 `ngx_http_limit_req_module`, checked by `check_statuses` and in the
//! report): nginx keeps an "excess" per key, in thousandths of a request, which leaks at the
//! rate; a request is admitted if the excess it would leave is at most `burst`, and the first
//! request of a key leaves 0. So `burst=b nodelay` admits `b + 1` at once and then one per
//! `1/rate`: a token bucket of capacity `b + 1` (`--algorithm token_bucket --burst b+1`), and
//! over a run of `D` seconds from a full bucket both admit `b + 1 + rate x D`. Without
//! `nodelay` the admitted requests wait their turn (one per `1/rate`, up to `b` waiting, the
//! rest rejected): `--algorithm leaky_bucket --burst b`, admitting about `1 + rate x D` in `D`
//! seconds (up to `b` still waiting at the end are not counted by wrk).
//!
//! nginx applies `limit_req` in its preaccess phase, after the rewrite phase in which `return`
//! answers: `location / { limit_req ...; return 200 "ok\n"; }` never limits anything. The
//! limited location therefore answers from the content phase: `try_files /nonexistent @ok`,
//! and `location @ok { return 200 "ok\n"; }`.
//!
//! nginx logs every rejected request at `error` level by default (`limit_req_log_level`); the
//! proxflow layer logs them at `debug`, which the server filters out. For like with like,
//! nginx gets `limit_req_log_level info` under `error_log ... warn`, so neither logs per
//! request; `--nginx-log-rejections` keeps nginx's default instead.
//!
//! Admitted and rejected requests are counted by wrk itself (`N requests`, `Non-2xx or 3xx
//! responses: M`): before loading, `check_statuses` makes sure each server answers only 200
//! (`ok\n`) or 429, so `N - M` are the 200s. No Lua script: a `response()` callback would make
//! wrk, on its one core, the bottleneck. wrk stops within 100 ms after the duration (it checks
//! its stop flag on a 100 ms timer), so a 10 s run lasts 10.0 to 10.1 s, which alone moves a
//! count by up to 1%: the counts are compared per unit of run length (admitted / expected, where
//! expected is `burst + rate x` the run length wrk reports), and the raw counts are shown too.
//!
//! Besides wall-clock req/s, each run records the CPU time the server used (user + system, from
//! `/proc/PID/stat`; nginx's worker), and reports requests per server CPU-second: on a shared
//! machine where other programs take the server's core now and then, this moves much less than
//! req/s. A third server, `ratelimit_server --no-limit` (the same program without the layer,
//! every request answered 200), shows the server's own ceiling, so that the layer's share of
//! any gap to nginx can be told from hyper's.
//!
//! Each run also records where the time went: the server's CPU time split into user and kernel
//! (on loopback most of it is the kernel's, and it is the same work for both servers), and from
//! `/proc/stat` how busy each of the two cores was and how much of it the hypervisor took for
//! other guests ("stolen": the host's noise, made visible). wrk saturates its core against
//! either server, so req/s is bounded by the client as much as by the server; requests per
//! server CPU-second is the figure that measures the server alone.
//!
//! ```text
//! cargo build --release -p proxflow-benches
//! target/release/ratelimit_vs_nginx --rate 1000 --burst 100 --duration 10 --rounds 3 --leaky
//! target/release/ratelimit_vs_nginx --rate 1000 --burst 100 --duration 10 --rounds 1 --pairs 30
//! ```

use proxflow_benches::vendor::{
    free_port, http_get, median, pinned, run_wrk, start_printing_port, Response, Result, Server,
    CONNECTIONS, NGINX, SERVER_CPU, WRK_CPU,
};
use proxflow_benches::{command_output, shell_quote, thousands, utc_now};
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use clap::Parser;

/// The reference server: `ratelimit_server --no-limit`, the same hyper server without the layer.
const NO_LIMIT: &str = "no limiter";

/// Command-line arguments.
#[derive(Parser)]
#[command(about = "Compare rate limiting: nginx limit_req vs proxflow ratelimit_server")]
struct Args {
    /// Requests per second admitted (nginx `rate=<r>r/s`, proxflow `--rate r --per 1s`).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    rate: u32,
    /// nginx `burst=b nodelay`; proxflow's token bucket gets `--burst b+1`.
    #[arg(long, default_value_t = 100)]
    burst: u32,
    /// Seconds of each measured wrk run.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    duration: u32,
    /// Measured rounds; the report gives medians.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    rounds: u32,
    /// Seconds of the warm-up run per server, not measured.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    warmup: u32,
    /// Also compare proxflow's leaky bucket with nginx `limit_req` without `nodelay`.
    #[arg(long)]
    leaky: bool,
    /// nginx `burst=` (no `nodelay`) and proxflow leaky bucket `--burst` of the leaky scenario;
    /// below the 32 connections, so that requests are rejected.
    #[arg(long, default_value_t = 10)]
    leaky_burst: u32,
    /// Which of proxflow's answers carry the `RateLimit-Policy` and `RateLimit` fields:
    /// `always` (the layer's default), `limited` or `never` (nginx sends no such fields).
    #[arg(long, default_value = "always", value_parser = ["always", "limited", "never"])]
    headers: String,
    /// Keep nginx's default of logging each rejected request at `error` level.
    #[arg(long)]
    nginx_log_rejections: bool,
    /// After the rounds, this many pairs of short token-bucket runs, nginx and proxflow back to
    /// back (the first of each pair alternating), for a confidence interval on the throughput
    /// ratio: the host's speed drifts by tens of percent over minutes, much less between two
    /// runs seconds apart. 0: none.
    #[arg(long, default_value_t = 0)]
    pairs: u32,
    /// Seconds of each run of `--pairs`.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    pair_duration: u32,
    /// Append the report to this file as well.
    #[arg(long)]
    markdown: Option<PathBuf>,
}

/// One comparison: an nginx server block against a proxflow configuration.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Scenario {
    /// nginx `burst=b nodelay` vs token bucket of capacity `b + 1`.
    TokenBucket,
    /// nginx `burst=b` (delaying) vs leaky bucket with `burst b`.
    LeakyBucket,
}

impl Scenario {
    fn name(self) -> &'static str {
        match self {
            Scenario::TokenBucket => "token bucket",
            Scenario::LeakyBucket => "leaky bucket",
        }
    }
}

/// What one wrk run counted.
#[derive(Clone, Copy)]
struct Run {
    rps: f64,
    requests: u64,
    non_2xx: u64,
    seconds: f64,
    /// CPU time (user + system) the server's processes used during the run.
    cpu_seconds: f64,
    /// The part of it spent in the kernel (system time).
    kernel_seconds: f64,
    /// What the server's core and wrk's core did meanwhile.
    server_core: CoreUse,
    load_core: CoreUse,
}

impl Run {
    fn admitted(&self) -> u64 {
        self.requests - self.non_2xx
    }

    /// Requests answered per second of the server's CPU time: what one dedicated core would
    /// serve, less disturbed than wall-clock req/s by other programs taking the core.
    fn per_cpu_second(&self) -> f64 {
        self.requests as f64 / self.cpu_seconds.max(1e-9)
    }

    fn kernel_share(&self) -> f64 {
        self.kernel_seconds / self.cpu_seconds.max(1e-9)
    }

    /// Where the run's time went, in a few words.
    fn time_split(&self) -> String {
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
struct CoreUse {
    /// Running anything (user, system, interrupts).
    busy: f64,
    /// Taken by the hypervisor for other guests: the host's noise, visible.
    stolen: f64,
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

fn main() {
    // `run` returns before we exit, so every server guard has been dropped (and its process
    // stopped) by then; `process::exit` itself would skip destructors.
    if let Err(err) = run(Args::parse()) {
        eprintln!("error: {err}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let bin_dir = std::env::current_exe()?
        .parent()
        .ok_or("executable has no parent directory")?
        .to_path_buf();
    let proxflow_bin = bin_dir.join("ratelimit_server");
    if !proxflow_bin.is_file() {
        return Err(format!(
            "{} not found: build it with `cargo build --release -p proxflow-benches --bin ratelimit_server`",
            proxflow_bin.display()
        )
        .into());
    }
    let scenarios: Vec<Scenario> = if args.leaky {
        vec![Scenario::TokenBucket, Scenario::LeakyBucket]
    } else {
        vec![Scenario::TokenBucket]
    };

    let (nginx, nginx_ports) = start_nginx(tmp.path(), &args)?;
    let rate = args.rate.to_string();
    let tb_burst = (args.burst + 1).to_string();
    let lb_burst = args.leaky_burst.to_string();
    let mut proxflow = BTreeMap::new();
    for &scenario in &scenarios {
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
        let server = start_printing_port("proxflow", &proxflow_bin, &server_args, tmp.path())?;
        proxflow.insert(scenario, (server, server_args.join(" ")));
    }

    // The server's own ceiling: the same program without the layer (every request 200).
    let baseline = start_printing_port(
        NO_LIMIT,
        &proxflow_bin,
        &["-p", "0", "--no-limit"],
        tmp.path(),
    )?;

    // (scenario, server name, port, the processes whose CPU time counts: nginx's worker)
    let nginx_workers = children_of(nginx.child.id());
    if nginx_workers.is_empty() {
        return Err("cannot find nginx's worker process in /proc".into());
    }
    let mut targets: Vec<(Scenario, &str, u16, Vec<u32>)> = Vec::new();
    for &scenario in &scenarios {
        targets.push((
            scenario,
            "nginx",
            nginx_ports[&scenario],
            nginx_workers.clone(),
        ));
        let server = &proxflow[&scenario].0;
        targets.push((scenario, "proxflow", server.port, vec![server.child.id()]));
    }
    targets.push((
        Scenario::TokenBucket,
        NO_LIMIT,
        baseline.port,
        vec![baseline.child.id()],
    ));
    for (scenario, name, port, _) in &targets {
        let (scenario, name, port) = (*scenario, *name, *port);
        let seen = check_statuses(port, name != NO_LIMIT)
            .map_err(|e| format!("{name} ({}): {e}", scenario.name()))?;
        eprintln!(
            "{name} ({}): {} x 200 ok, {} x 429 in a burst of concurrent requests",
            scenario.name(),
            seen.0,
            seen.1
        );
    }
    let refill = Duration::from_secs(1)
        + Duration::from_secs_f64(
            f64::from(args.burst.max(args.leaky_burst) + 1) / f64::from(args.rate),
        );
    for (scenario, name, port, pids) in &targets {
        thread::sleep(refill);
        wrk(*port, args.warmup, pids)
            .map_err(|e| format!("{name} ({}) warm-up: {e}", scenario.name()))?;
    }

    let mut runs: BTreeMap<(Scenario, &str), Vec<Run>> = BTreeMap::new();
    for round in 0..args.rounds {
        for &scenario in &scenarios {
            let pair: Vec<_> = targets.iter().filter(|t| t.0 == scenario).collect();
            for i in 0..pair.len() {
                // Alternate which server goes first, to spread drift over both.
                let (_, name, port, pids) = pair[(i + round as usize) % pair.len()];
                let (name, port) = (*name, *port);
                // Long enough for the bucket to be full again (and the leaky queue empty).
                thread::sleep(refill);
                let result = wrk(port, args.duration, pids)
                    .map_err(|e| format!("{name} ({}): {e}", scenario.name()))?;
                eprintln!(
                    "round {}/{} {:<12} {:<10} {:>8} req/s {:>8} req/CPU-s  {:>9} requests in {:.2} s  {:>7} x 200  {:>9} x 429  {}",
                    round + 1,
                    args.rounds,
                    scenario.name(),
                    name,
                    thousands(result.rps),
                    thousands(result.per_cpu_second()),
                    result.requests,
                    result.seconds,
                    result.admitted(),
                    result.non_2xx,
                    result.time_split(),
                );
                runs.entry((scenario, name)).or_default().push(result);
            }
        }
    }

    // (nginx, proxflow) per pair.
    let mut pairs = Vec::new();
    let pick = |name: &str| {
        targets
            .iter()
            .find(|t| t.0 == Scenario::TokenBucket && t.1 == name)
            .map(|t| (t.2, &t.3))
    };
    if let (Some(ng), Some(pf), true) = (pick("nginx"), pick("proxflow"), args.pairs > 0) {
        let run = |(port, pids): (u16, &Vec<u32>)| wrk(port, args.pair_duration, pids);
        for pair in 0..args.pairs {
            let (n, p) = if pair % 2 == 0 {
                let n = run(ng)?;
                (n, run(pf)?)
            } else {
                let p = run(pf)?;
                (run(ng)?, p)
            };
            eprintln!(
                "pair {}/{}: proxflow / nginx {:.3}x req/s, {:.3}x per server CPU-second",
                pair + 1,
                args.pairs,
                p.rps / n.rps,
                p.per_cpu_second() / n.per_cpu_second()
            );
            pairs.push((n, p));
        }
    }

    drop(nginx);
    drop(baseline);
    // Stopped with SIGTERM, ratelimit_server prints its counters on stderr.
    let mut configs = BTreeMap::new();
    let mut server_counts = Vec::new();
    for (scenario, (server, server_args)) in proxflow {
        let log = server.log.clone();
        drop(server);
        let text = fs::read_to_string(&log).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.starts_with("ratelimit stats:")) {
            server_counts.push(format!("{}: {line}", scenario.name()));
        }
        let config = server_args.trim_start_matches("-p 0 ").to_string();
        configs.insert(scenario, config);
    }
    let report = report(&args, &scenarios, &runs, &pairs, &configs, &server_counts);
    print!("{report}");
    if let Some(path) = &args.markdown {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?
            .write_all(format!("\n{report}").as_bytes())?;
        eprintln!("appended to {}", path.display());
    }
    Ok(())
}

/// One nginx (one worker) with a server block per scenario; returns the port of each.
fn start_nginx(tmp: &Path, args: &Args) -> Result<(Server, BTreeMap<Scenario, u16>)> {
    let dir = tmp.join("nginx");
    fs::create_dir(&dir)?;
    fs::create_dir(dir.join("www"))?;
    let tb_port = free_port()?;
    let lb_port = free_port()?;
    let error_log = dir.join("error.log");
    let log_level = if args.nginx_log_rejections {
        "# limit_req_log_level error (the default): one error-log line per rejected request"
    } else {
        "limit_req_log_level info; # below error_log's level: rejections are not logged"
    };
    // `user root` keeps the worker able to read the private temp dir when we run as root (nginx
    // ignores it otherwise); the temp paths keep nginx out of /var/lib/nginx. `try_files` moves
    // the answer to the content phase, after limit_req (see the module docs).
    let config = format!(
        r#"daemon off;
worker_processes 1;
user root;
pid {dir}/nginx.pid;
error_log {error_log} warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    root {dir}/www;
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
}}
"#,
        dir = dir.display(),
        error_log = error_log.display(),
        rate = args.rate,
        burst = args.burst,
        leaky_burst = args.leaky_burst,
    );
    let conf = dir.join("nginx.conf");
    fs::write(&conf, config)?;

    let child = pinned(SERVER_CPU, Path::new(NGINX))
        .arg("-p")
        .arg(&dir)
        .arg("-c")
        .arg(&conf)
        .arg("-e")
        .arg(&error_log)
        .stdout(File::create(dir.join("stdout.log"))?)
        .stderr(File::create(dir.join("stderr.log"))?)
        .spawn()
        .map_err(|e| format!("cannot start {NGINX}: {e}"))?;
    let mut server = Server {
        name: "nginx",
        port: tb_port,
        child,
        log: error_log,
    };
    // nginx prints nothing on start; poll the ports, watching for an early exit (bad config).
    let deadline = Instant::now() + Duration::from_secs(5);
    for port in [tb_port, lb_port] {
        loop {
            if let Some(status) = server.child.try_wait()? {
                return Err(
                    format!("nginx exited at start ({status}){}", server.log_tail()).into(),
                );
            }
            if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{} not accepting on port {port} after 5 s{}",
                    server.name,
                    server.log_tail()
                )
                .into());
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
    let ports = BTreeMap::from([
        (Scenario::TokenBucket, tb_port),
        (Scenario::LeakyBucket, lb_port),
    ]);
    Ok((server, ports))
}

/// Before any load: a burst of concurrent requests (32 clients x 20) gets only `200 ok\n` and
/// `429`, and both if `limited` (only 200s otherwise). Returns (200s, 429s).
fn check_statuses(port: u16, limited_expected: bool) -> Result<(usize, usize)> {
    let statuses: Vec<Result<Response>> = thread::scope(|scope| {
        let handles: Vec<_> = (0..CONNECTIONS)
            .map(|_| {
                scope.spawn(move || {
                    (0..20)
                        .map(|_| http_get(port, "").map_err(|e| e.to_string()))
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

/// One wrk run on the load core. wrk counts non-2xx responses itself; socket errors fail the
/// benchmark.
fn wrk(port: u16, secs: u32, server_pids: &[u32]) -> Result<Run> {
    let [user_before, system_before] = cpu_seconds(server_pids)?;
    let cores_before = (core_ticks(SERVER_CPU)?, core_ticks(WRK_CPU)?);
    let text = run_wrk(&format!("http://127.0.0.1:{port}/"), secs, &[])?;
    let cores_after = (core_ticks(SERVER_CPU)?, core_ticks(WRK_CPU)?);
    let [user, system] = cpu_seconds(server_pids)?;
    let kernel_seconds = system - system_before;
    let cpu_seconds = user - user_before + kernel_seconds;
    let (mut rps, mut requests, mut seconds, mut non_2xx) = (None, None, None, 0);
    for line in text.lines().map(str::trim) {
        if let Some(value) = line.strip_prefix("Requests/sec:") {
            rps = value.trim().parse().ok();
        } else if let Some(value) = line.strip_prefix("Non-2xx or 3xx responses:") {
            non_2xx = value.trim().parse()?;
        } else if let Some((count, rest)) = line.split_once(" requests in ") {
            // "1234567 requests in 10.00s, 123.45MB read"
            requests = count.trim().parse().ok();
            seconds = rest
                .split(',')
                .next()
                .and_then(|d| parse_wrk_duration(d.trim()));
        }
    }
    Ok(Run {
        rps: rps.ok_or_else(|| format!("no Requests/sec in wrk output:\n{text}"))?,
        requests: requests.ok_or_else(|| format!("no request count in wrk output:\n{text}"))?,
        seconds: seconds.ok_or_else(|| format!("no duration in wrk output:\n{text}"))?,
        non_2xx,
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
fn children_of(pid: u32) -> Vec<u32> {
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

/// wrk's durations: `10.00s`, `1.00m`, `500.00ms`.
fn parse_wrk_duration(text: &str) -> Option<f64> {
    let (number, scale) = if let Some(n) = text.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = text.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('m') {
        (n, 60.0)
    } else {
        (text, 1.0)
    };
    number.parse::<f64>().ok().map(|n| n * scale)
}

/// The median of `values` and a distribution-free interval that holds it with at least 95%
/// confidence: the order statistics `k` and `n + 1 - k`, for the largest `k` with
/// `P(Binomial(n, 1/2) < k) <= 2.5%`. `None` below six values, where no such `k` exists.
fn median_interval(values: &[f64]) -> Option<(f64, f64, f64)> {
    let mut sorted = values.to_vec();
    let mid = median(&mut sorted);
    let n = sorted.len();
    // P(B = i) for i = 0, 1, ..., accumulated while the tail stays within 2.5%.
    let mut probability = 0.5f64.powi(i32::try_from(n).ok()?);
    let (mut tail, mut k) = (0.0, 0);
    while k < n / 2 && tail + probability <= 0.025 {
        tail += probability;
        probability *= (n - k) as f64 / (k + 1) as f64;
        k += 1;
    }
    (k > 0).then(|| (sorted[k - 1], mid, sorted[n - k]))
}

/// What the algorithm admits in `seconds` from a full bucket and an empty queue.
fn expected(args: &Args, scenario: Scenario, seconds: f64) -> f64 {
    let steady = f64::from(args.rate) * seconds;
    match scenario {
        Scenario::TokenBucket => steady + f64::from(args.burst + 1),
        Scenario::LeakyBucket => steady + 1.0,
    }
}

fn report(
    args: &Args,
    scenarios: &[Scenario],
    runs: &BTreeMap<(Scenario, &str), Vec<Run>>,
    pairs: &[(Run, Run)],
    configs: &BTreeMap<Scenario, String>,
    server_counts: &[String],
) -> String {
    let command: Vec<String> = std::env::args().map(|a| shell_quote(&a)).collect();
    let mut out = String::from("### Rate limiting: nginx limit_req vs proxflow RateLimitLayer\n\n");
    out += &format!("Command: `{}` ({})\n\n", command.join(" "), utc_now());
    out += &format!(
        "Servers pinned to CPU {SERVER_CPU}, wrk to CPU {WRK_CPU}: `wrk -t1 -c{CONNECTIONS} -d{}s` \
         (one client address, so one key), median of {} round(s) after a {} s warm-up, servers \
         interleaved, the bucket refilled before each run. {}, 1 worker, access_log off, \
         keepalive_requests 1000000, {}; proxflow `ratelimit_server` (hyper HTTP/1.1, mimalloc, \
         current-thread runtime, TCP_NODELAY). Admitted = wrk's requests minus its `Non-2xx` \
         count (both servers answer only 200 or 429, checked first).\n",
        args.duration,
        args.rounds,
        args.warmup,
        command_output(NGINX, &["-v"]).unwrap_or_else(|| "nginx".into()),
        if args.nginx_log_rejections {
            "rejections logged at error level (nginx's default)"
        } else {
            "`limit_req_log_level info` under `error_log warn` (rejections not logged, as proxflow)"
        },
    );

    out += "\n| scenario | server | configuration | req/s | req per server CPU-second | admitted (200) | rejected (429) | expected admitted | admitted / expected |\n";
    out += "|---|---|---|--:|--:|--:|--:|--:|--:|\n";
    let mut targets = Vec::new();
    for &scenario in scenarios {
        let mut medians = BTreeMap::new();
        let mut per_cpu_medians = BTreeMap::new();
        for name in ["nginx", "proxflow", NO_LIMIT] {
            let Some(list) = runs.get(&(scenario, name)) else {
                continue;
            };
            if name == NO_LIMIT {
                let rps = median(&mut list.iter().map(|r| r.rps).collect::<Vec<_>>());
                let per_cpu = median(&mut list.iter().map(Run::per_cpu_second).collect::<Vec<_>>());
                out += &format!(
                    "| {} | {name} | `ratelimit_server --no-limit`: the same server without the layer; every request 200 | {} | {} | | | | |\n",
                    scenario.name(),
                    thousands(rps),
                    thousands(per_cpu),
                );
                medians.insert(name, rps);
                per_cpu_medians.insert(name, per_cpu);
                continue;
            }
            let pick =
                |f: &dyn Fn(&Run) -> f64| median(&mut list.iter().map(f).collect::<Vec<_>>());
            let rps = pick(&|r| r.rps);
            let per_cpu = pick(&|r| r.per_cpu_second());
            let admitted = pick(&|r| r.admitted() as f64);
            let rejected = pick(&|r| r.non_2xx as f64);
            let expect = pick(&|r| expected(args, scenario, r.seconds));
            let ratio = pick(&|r| r.admitted() as f64 / expected(args, scenario, r.seconds));
            let config = match (name, scenario) {
                ("nginx", Scenario::TokenBucket) => format!(
                    "`limit_req_zone ... rate={}r/s; limit_req ... burst={} nodelay;`",
                    args.rate, args.burst
                ),
                ("nginx", Scenario::LeakyBucket) => format!(
                    "`limit_req_zone ... rate={}r/s; limit_req ... burst={};`",
                    args.rate, args.leaky_burst
                ),
                _ => format!("`{}`", configs[&scenario]),
            };
            out += &format!(
                "| {} | {name} | {config} | {} | {} | {} | {} | {} | {:.4} |\n",
                scenario.name(),
                thousands(rps),
                thousands(per_cpu),
                thousands(admitted),
                thousands(rejected),
                thousands(expect),
                ratio,
            );
            medians.insert(name, rps);
            per_cpu_medians.insert(name, per_cpu);
        }
        let (Some(ng), Some(pf)) = (
            runs.get(&(scenario, "nginx")),
            runs.get(&(scenario, "proxflow")),
        ) else {
            continue;
        };
        // Per round: |proxflow - nginx| / nginx of the admitted counts, median over rounds.
        let mut diffs: Vec<f64> = ng
            .iter()
            .zip(pf)
            .map(|(n, p)| (p.admitted() as f64 - n.admitted() as f64).abs() / n.admitted() as f64)
            .collect();
        let diff = median(&mut diffs);
        let worst = diffs.iter().copied().fold(0.0, f64::max);
        // The same after dividing each count by its run's expected count (rate x run length +
        // burst), which takes out the runs' different lengths.
        let mut normalized: Vec<f64> = ng
            .iter()
            .zip(pf)
            .map(|(n, p)| {
                let rn = n.admitted() as f64 / expected(args, scenario, n.seconds);
                let rp = p.admitted() as f64 / expected(args, scenario, p.seconds);
                (rp - rn).abs() / rn
            })
            .collect();
        let normalized = median(&mut normalized);
        let throughput = medians["proxflow"] / medians["nginx"];
        let per_round: Vec<String> = ng
            .iter()
            .zip(pf)
            .map(|(n, p)| format!("{:.2}", p.rps / n.rps))
            .collect();
        let (tag, strict) = match scenario {
            Scenario::TokenBucket => ("", true),
            Scenario::LeakyBucket => (" (leaky)", false),
        };
        // The verdict compares counts per unit of run length: wrk checks its stop flag every
        // 100 ms, so a "10 s" run lasts 10.0 or 10.1 s, and two identical limiters can differ
        // by 1% in raw counts (rate x 0.1 s out of rate x 10 s).
        targets.push((
            format!(
                "admitted counts agree within 1%{tag}: abs(proxflow - nginx) / nginx of admitted / expected, median over rounds"
            ),
            format!("{:.2}%", normalized * 100.0),
            if normalized <= 0.01 { "PASS" } else { "FAIL" },
        ));
        targets.push((
            format!(
                "the same on raw counts{tag} (runs last {d} to {d}.1 s; worst round {:.2}%)",
                worst * 100.0,
                d = args.duration
            ),
            format!("{:.2}%", diff * 100.0),
            "info",
        ));
        targets.push((
            format!(
                "proxflow req/s >= nginx req/s{tag} (medians; per round: {})",
                per_round.join(", ")
            ),
            // Three places: a ratio of 0.997 shown as "1.00x" next to FAIL reads as a bug.
            format!("{throughput:.3}x"),
            match (strict, throughput >= 1.0) {
                (true, true) => "PASS",
                (true, false) => "FAIL",
                (false, true) => "PASS (info)",
                (false, false) => "FAIL (info)",
            },
        ));
        targets.push((
            format!("proxflow / nginx in requests per server CPU-second{tag}"),
            format!(
                "{:.2}x",
                per_cpu_medians["proxflow"] / per_cpu_medians["nginx"]
            ),
            "info",
        ));
        if let Some(ceiling) = medians.get(NO_LIMIT) {
            targets.push((
                "the same server without the layer / nginx (the server's ceiling)".to_string(),
                format!("{:.2}x", ceiling / medians["nginx"]),
                "info",
            ));
            targets.push((
                "proxflow with the layer / without (what the layer costs end to end)".to_string(),
                format!("{:.2}x", medians["proxflow"] / ceiling),
                "info",
            ));
            let cpu_ceiling = per_cpu_medians[NO_LIMIT];
            targets.push((
                "the same two ratios in requests per server CPU-second".to_string(),
                format!(
                    "{:.2}x, {:.2}x",
                    cpu_ceiling / per_cpu_medians["nginx"],
                    per_cpu_medians["proxflow"] / cpu_ceiling
                ),
                "info",
            ));
        }
    }
    if !pairs.is_empty() {
        let ratios = |f: &dyn Fn(&Run) -> f64| -> Vec<f64> {
            pairs.iter().map(|(n, p)| f(p) / f(n)).collect()
        };
        for (what, values) in [
            ("req/s", ratios(&|r| r.rps)),
            (
                "requests per server CPU-second",
                ratios(&Run::per_cpu_second),
            ),
        ] {
            let (measured, reading) = match median_interval(&values) {
                Some((low, mid, high)) => (
                    format!("{mid:.3}x [{low:.3}, {high:.3}]"),
                    if low >= 1.0 {
                        "proxflow faster (info)"
                    } else if high < 1.0 {
                        "nginx faster (info)"
                    } else {
                        "no difference the runs resolve (info)"
                    },
                ),
                None => (
                    format!("{:.3}x", median(&mut values.clone())),
                    "too few pairs for an interval (info)",
                ),
            };
            targets.push((
                format!(
                    "proxflow / nginx {what}, {} pairs of {} s runs back to back: median of the pairs' ratios [95% interval of the median]",
                    pairs.len(),
                    args.pair_duration
                ),
                measured,
                reading,
            ));
        }
    }
    out += "\n| target | measured | result |\n|---|--:|---|\n";
    for (what, measured, verdict) in targets {
        out += &format!("| {what} | {measured} | {verdict} |\n");
    }

    out += "\nWhere the time went (medians over rounds; a core's time is busy, stolen by the \
        hypervisor, or idle). When wrk's core is busy or stolen nearly all the time, req/s is the \
        client's ceiling as much as the server's, and requests per server CPU-second is the \
        comparison that still measures the server:\n\n";
    out += "| scenario | server | server CPU in the kernel | server core busy | server core stolen | wrk core busy | wrk core stolen |\n";
    out += "|---|---|--:|--:|--:|--:|--:|\n";
    for (&(scenario, name), list) in runs {
        let pick = |f: &dyn Fn(&Run) -> f64| {
            let value = median(&mut list.iter().map(f).collect::<Vec<_>>());
            format!("{:.0}%", value * 100.0)
        };
        out += &format!(
            "| {} | {name} | {} | {} | {} | {} | {} |\n",
            scenario.name(),
            pick(&Run::kernel_share),
            pick(&|r| r.server_core.busy),
            pick(&|r| r.server_core.stolen),
            pick(&|r| r.load_core.busy),
            pick(&|r| r.load_core.stolen),
        );
    }

    out += "\nPer round (req/s, requests per server CPU-second, admitted):\n";
    for (&(scenario, name), list) in runs {
        let cells: Vec<String> = list
            .iter()
            .map(|r| {
                format!(
                    "{} / {} / {}",
                    thousands(r.rps),
                    thousands(r.per_cpu_second()),
                    r.admitted()
                )
            })
            .collect();
        out += &format!("- {} {name}: {}\n", scenario.name(), cells.join(", "));
    }
    if !server_counts.is_empty() {
        out += "\nproxflow's own counters over all its runs (checks and warm-up included):\n";
        for line in server_counts {
            out += &format!("- {line}\n");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{core_use, median_interval, parse_core_ticks, parse_wrk_duration};

    #[test]
    fn median_intervals_use_the_binomial_order_statistics() {
        // Five values cannot give 95%: even the extremes hold the median with 1 - 2/32.
        assert_eq!(median_interval(&[1.0, 2.0, 3.0, 4.0, 5.0]), None);
        // Six: the extremes, 1 - 2/64 = 96.9%.
        let six = [6.0, 1.0, 5.0, 2.0, 4.0, 3.0];
        assert_eq!(median_interval(&six), Some((1.0, 3.5, 6.0)));
        // Thirty: the 10th and 21st values (P(B <= 9) = 2.14%, P(B <= 10) = 4.94%).
        let thirty: Vec<f64> = (1..=30).rev().map(f64::from).collect();
        assert_eq!(median_interval(&thirty), Some((10.0, 15.5, 21.0)));
    }

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
    fn wrk_durations() {
        assert_eq!(parse_wrk_duration("10.01s"), Some(10.01));
        assert_eq!(parse_wrk_duration("1.00m"), Some(60.0));
        assert_eq!(parse_wrk_duration("500.00ms"), Some(0.5));
    }
}
