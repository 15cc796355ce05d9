//! What proxflow-ratelimit's Redis modes cost against its local limiter (issue 21): the latency
//! the exact mode adds to one request on loopback, and the decisions per second of three
//! instances sharing one Redis, beside three local limiters; the synced mode
//! (`sync_interval: 100ms`) beside both.
//!
//! **Needs a redis-server**, named by `PROXFLOW_REDIS_URL` (the program stops with a message
//! without it), and the `redis` feature of this package:
//!
//! ```text
//! redis-server --port 6390 --save '' --appendonly no &
//! PROXFLOW_REDIS_URL=redis://127.0.0.1:6390 \
//!     cargo run --release -p proxflow-benches --features redis --bin ratelimit_redis
//! ```
//!
//! The handbook's pinning applies: Redis on one core, this program on the other
//! (`taskset -c 1 redis-server ...`, `taskset -c 0 target/release/ratelimit_redis`); the tokio
//! runtime has as many workers as the program may use cores.
//!
//! Both parts call the layer's service as a server does, inside a multi-threaded tokio runtime:
//! `ready`, `call`, await the response. The inner service is the benches' no-op (an axum
//! handler's answer). The quota is the same in every mode and the exact mode's timeout is 1 s,
//! so that Redis decides every request (the program checks that no request failed open, and
//! that the synced instances synced).
//!
//! - **Latency**: one request at a time, `key: header:x-tenant` with one tenant, a token bucket
//!   of 10^6 per second (burst 1000) that admits every request: the allowed path. The local,
//!   synced and exact layers and a bare `PING` on a multiplexed connection of the same client
//!   (the round trip any Redis mode pays) alternate in stretches of 500, so that all four see
//!   the same state of the host. Each request is timed alone; the table gives medians and tails
//!   and the difference of the medians, exact minus local.
//! - **Throughput**: three layers (three instances, each with its own connection to Redis) in one
//!   process; `N` tasks per instance each send one request after another for the run's
//!   duration, so that each instance has `N` requests in flight. Keys: 1000 tenants (each task
//!   walks them from its own offset), a token bucket of 10 per second with a burst of 10 per
//!   tenant (10,000 admissions a second in all, once the bursts are spent), so that most requests
//!   are refused and both paths are taken. The figure is decisions (admitted and refused) per second of wall time, the median of
//!   the rounds. The redis crate's multiplexed connection, which the layer's connection manager
//!   wraps, writes the requests of concurrent callers onto the one socket without waiting for the
//!   replies before it, and matches the replies in order: the `N` requests in flight of an
//!   instance are pipelined without any batching in the layer. The same harness runs three local
//!   layers (which do not share their counts: each admits its own quota) and three synced ones
//!   (each syncs its 1000 tracked keys every 100 ms, in pipelines of 512 scripts). Redis's CPU share is
//!   read from `INFO cpu` around each run, the program's own from `/proc/self/stat`: they say
//!   which side bounds the throughput.
//!
//! Prints a markdown report: the command, the machine's state, the two tables.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use http::{HeaderValue, Request, StatusCode};
use proxflow_benches::{command_line, exit_on_error, noop, thousands, utc_now};
use proxflow_ratelimit::redis;
use proxflow_ratelimit::{Algorithm, DistributedConfig, RateLimitConfig, RateLimitLayer, Stats};
use tower::{Layer, Service, ServiceExt};

/// Command-line arguments.
#[derive(Parser)]
#[command(
    about = "proxflow-ratelimit's exact Redis mode against its local limiter: latency and throughput (needs PROXFLOW_REDIS_URL)"
)]
struct Args {
    /// Requests timed per mode in the latency part.
    #[arg(long, default_value_t = 30_000)]
    requests: usize,
    /// Seconds per run of the throughput part.
    #[arg(long, default_value_t = 3.0)]
    duration: f64,
    /// Requests in flight per instance in the throughput part.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 16, 64])]
    concurrency: Vec<usize>,
    /// Rounds of the throughput part (each runs every mode at every concurrency once).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Worker threads of the runtime. Default: the cores this program may use.
    #[arg(long)]
    workers: Option<usize>,
}

/// The instances of the throughput part.
const INSTANCES: usize = 3;
/// Tenants of the throughput part.
const TENANTS: usize = 1000;
/// Requests per stretch of the latency part, each mode in turn.
const STRETCH: usize = 500;
/// Requests per mode before the latency part is timed (connections made, scripts loaded).
const WARM_UP: usize = 2000;

/// The quota of the latency part, per second: every request admitted.
const LATENCY_QUOTA: (u32, u32) = (1_000_000, 1000);
/// The quota of the throughput part, per second and tenant: most requests refused once the
/// bursts are spent.
const THROUGHPUT_QUOTA: (u32, u32) = (10, 10);

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Local,
    Synced,
    Exact,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Local => "local",
            Mode::Synced => "synced (Redis, 100 ms)",
            Mode::Exact => "exact (Redis)",
        }
    }
}

/// The modes, in the tables' order.
const MODES: [Mode; 3] = [Mode::Local, Mode::Synced, Mode::Exact];

/// The synced mode's interval.
const SYNC_INTERVAL: Duration = Duration::from_millis(100);

fn main() {
    let args = Args::parse();
    let Ok(url) = std::env::var("PROXFLOW_REDIS_URL") else {
        eprintln!(
            "error: PROXFLOW_REDIS_URL is not set. This benchmark needs a redis-server: start one \
             (`redis-server --port 6390 --save '' --appendonly no`) and run \
             `PROXFLOW_REDIS_URL=redis://127.0.0.1:6390 cargo run --release -p proxflow-benches \
             --features redis --bin ratelimit_redis`"
        );
        std::process::exit(2);
    };
    let workers = args.workers.unwrap_or_else(|| {
        std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("a tokio runtime");
    exit_on_error(runtime.block_on(run(args, url, workers)));
}

async fn run(args: Args, url: String, workers: usize) -> Result<(), String> {
    let client = redis::Client::open(url.as_str()).map_err(|e| format!("{url}: {e}"))?;
    let mut admin = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| format!("cannot reach Redis at {url}: {e}"))?;
    let version = info_field(&mut admin, "server", "redis_version").await?;
    let mut out = String::from(
        "## proxflow-ratelimit: the Redis modes (exact and synced) against the local limiter\n\n",
    );
    out += &format!("```sh\n{}\n```\n\n", command_line());
    out += &format!(
        "{}; Redis {version} at {url}; this program on CPUs {} ({workers} runtime workers); at \
         the start: load average {}, {} compilers running\n\n",
        utc_now(),
        cpus_allowed(),
        load_average(),
        compilers(),
    );
    eprintln!("latency: {} requests per mode", args.requests);
    out += &latency(&args, &url, &mut admin).await?;
    eprintln!("throughput: {:?} in flight per instance", args.concurrency);
    out += &throughput(&args, &url, &mut admin).await?;
    out += &format!(
        "\nAt the end: load average {}, {} compilers running.\n",
        load_average(),
        compilers()
    );
    println!("{out}");
    Ok(())
}

/// A token bucket of `rate` per second with `burst`, keyed by `x-tenant`: local, or deciding
/// through the Redis at `url` under `prefix`.
fn layer(mode: Mode, (rate, burst): (u32, u32), url: &str, prefix: &str) -> RateLimitLayer {
    let mut config = RateLimitConfig {
        algorithm: Algorithm::TokenBucket,
        rate,
        per: Duration::from_secs(1),
        burst,
        key: "header:x-tenant".into(),
        ..RateLimitConfig::default()
    };
    if mode != Mode::Local {
        let mut distributed = DistributedConfig::new(url);
        distributed.key_prefix = prefix.into();
        // Redis decides every request: a loaded machine must not turn a slow answer into a
        // local decision.
        distributed.timeout = Duration::from_secs(1);
        if mode == Mode::Synced {
            distributed.sync_interval = Some(SYNC_INTERVAL);
        }
        config.distributed = Some(distributed);
    }
    RateLimitLayer::from_config(&config).expect("a valid config")
}

/// A key prefix no other run uses.
fn prefix(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("bench:{name}:{}:{nanos}:", std::process::id())
}

fn request(tenant: &HeaderValue) -> Request<()> {
    let mut request = Request::new(());
    request.headers_mut().insert("x-tenant", tenant.clone());
    request
}

/// One request through `service`: its status.
async fn call<S, B>(service: &mut S, tenant: &HeaderValue) -> StatusCode
where
    S: Service<Request<()>, Response = http::Response<B>, Error = Infallible>,
{
    let Ok(ready) = service.ready().await;
    let Ok(response) = ready.call(request(tenant)).await;
    response.status()
}

async fn latency(
    args: &Args,
    url: &str,
    admin: &mut redis::aio::MultiplexedConnection,
) -> Result<String, String> {
    let tenant = HeaderValue::from_static("t0");
    let layers = MODES.map(|mode| layer(mode, LATENCY_QUOTA, url, &prefix("latency")));
    let exact_stats = layers[2].stats();
    let mut services = layers.each_ref().map(|layer| layer.layer(noop()));
    let mut ping = admin.clone();
    for _ in 0..WARM_UP {
        for service in &mut services {
            assert_eq!(call(service, &tenant).await, StatusCode::OK);
        }
        ping_once(&mut ping).await?;
    }
    // local, synced, exact, PING.
    let mut times: [Vec<Duration>; 4] = Default::default();
    let mut done = 0;
    let mut turn = 0;
    while done < args.requests {
        let stretch = STRETCH.min(args.requests - done);
        // Which side goes first turns with each stretch.
        for side in (0..4).map(|i| (i + turn) % 4) {
            for _ in 0..stretch {
                let start = Instant::now();
                if side < 3 {
                    let status = call(&mut services[side], &tenant).await;
                    times[side].push(start.elapsed());
                    assert_eq!(
                        status,
                        StatusCode::OK,
                        "{:?}: the allowed path",
                        MODES[side]
                    );
                } else {
                    ping_once(&mut ping).await?;
                    times[3].push(start.elapsed());
                }
            }
        }
        done += stretch;
        turn += 1;
    }
    check_no_fail_open(&exact_stats)?;
    let synced = layers[1].stats().snapshot();
    if synced.syncs == 0 {
        return Err("the synced layer never synced with Redis".into());
    }
    let [local, synced, exact, ping] = times.map(|mut t| {
        t.sort();
        t
    });
    let mut out = format!(
        "### Latency of one request, allowed path ({} requests per row, one at a time, \
         alternating in stretches of {STRETCH})\n\n",
        args.requests
    );
    out += "| path | median | p90 | p99 | p99.9 | mean |\n|---|--:|--:|--:|--:|--:|\n";
    for (name, times) in [
        ("local limiter", &local),
        ("synced mode (local decision, synced every 100 ms)", &synced),
        ("exact mode (one Lua script on Redis per request)", &exact),
        ("bare `PING` round trip (a multiplexed connection)", &ping),
    ] {
        out += &format!(
            "| {name} | {} | {} | {} | {} | {} |\n",
            us(quantile(times, 0.5)),
            us(quantile(times, 0.9)),
            us(quantile(times, 0.99)),
            us(quantile(times, 0.999)),
            us(mean(times)),
        );
    }
    let median = |times: &[Duration]| quantile(times, 0.5).as_secs_f64();
    let (l, s, e, p) = (
        median(&local),
        median(&synced),
        median(&exact),
        median(&ping),
    );
    out += &format!(
        "\nAdded by the exact mode (difference of medians, exact - local): **{}**; of it, beyond \
         a bare round trip (exact - local - PING): {}. Added by the synced mode (synced - \
         local): {:+.3} µs.\n\n",
        us_signed(e - l),
        us_signed(e - l - p),
        (s - l) * 1e6,
    );
    Ok(out)
}

async fn ping_once(connection: &mut redis::aio::MultiplexedConnection) -> Result<(), String> {
    redis::cmd("PING")
        .query_async::<String>(connection)
        .await
        .map(drop)
        .map_err(|e| format!("PING: {e}"))
}

/// One run of the throughput part: its decisions, wall time, Redis's and this program's CPU.
struct Run {
    admitted: u64,
    refused: u64,
    seconds: f64,
    redis_cpu: f64,
    own_cpu: f64,
    /// Why the run is left out of the medians, if it is: in exact mode, requests decided
    /// locally because Redis did not answer within 1 s; in synced mode, no sync at all (a
    /// stalled machine either way).
    left_out: Option<String>,
}

impl Run {
    fn per_second(&self) -> f64 {
        (self.admitted + self.refused) as f64 / self.seconds
    }
}

async fn throughput(
    args: &Args,
    url: &str,
    admin: &mut redis::aio::MultiplexedConnection,
) -> Result<String, String> {
    let tenants: Arc<[HeaderValue]> = (0..TENANTS)
        .map(|i| HeaderValue::from_str(&format!("t{i}")).expect("a header value"))
        .collect();
    // runs[concurrency][mode]: one run per round.
    let mut left_out = 0;
    let mut runs: Vec<[Vec<Run>; 3]> = args
        .concurrency
        .iter()
        .map(|_| Default::default())
        .collect();
    for round in 0..args.rounds {
        for (c, &in_flight) in args.concurrency.iter().enumerate() {
            for (m, &mode) in MODES.iter().enumerate() {
                let run = run_once(mode, in_flight, args.duration, url, &tenants, admin).await?;
                eprintln!(
                    "round {round}, {in_flight} in flight per instance, {}: {} decisions/s, {} \
                     admitted/s (Redis CPU {:.0}%, this program {:.0}%)",
                    mode.name(),
                    thousands(run.per_second()),
                    thousands(run.admitted as f64 / run.seconds),
                    run.redis_cpu * 100.0,
                    run.own_cpu * 100.0
                );
                if let Some(reason) = &run.left_out {
                    eprintln!("  left out: {reason}");
                    left_out += 1;
                    continue;
                }
                runs[c][m].push(run);
            }
        }
    }
    let mut out = format!(
        "### Throughput: {INSTANCES} instances in one process, decisions (admitted + refused) per \
         second, median of {} rounds of {} s\n\n",
        args.rounds, args.duration
    );
    out += "| in flight per instance | local | synced, one Redis | exact, one Redis | exact / \
            local | exact: best round | admitted/s: local, synced, exact | Redis CPU: synced, \
            exact | this program's CPU: local, synced, exact |\n\
            |--:|--:|--:|--:|--:|--:|--:|--:|--:|\n";
    for (c, &in_flight) in args.concurrency.iter().enumerate() {
        let [local, synced, exact] = &runs[c];
        let of = |runs: &[Run], f: fn(&Run) -> f64| median(runs.iter().map(f).collect());
        let rate = |runs: &[Run]| of(runs, Run::per_second);
        let admitted = |runs: &[Run]| thousands(of(runs, |r| r.admitted as f64 / r.seconds));
        let cpu = |runs: &[Run], f: fn(&Run) -> f64| format!("{:.0}%", of(runs, f) * 100.0);
        out += &format!(
            "| {in_flight} | {} | {} | {} | {:.2}% | {} | {}, {}, {} | {}, {} | {}, {}, {} |\n",
            thousands(rate(local)),
            thousands(rate(synced)),
            thousands(rate(exact)),
            rate(exact) / rate(local) * 100.0,
            thousands(exact.iter().map(Run::per_second).fold(0.0, f64::max)),
            admitted(local),
            admitted(synced),
            admitted(exact),
            cpu(synced, |r| r.redis_cpu),
            cpu(exact, |r| r.redis_cpu),
            cpu(local, |r| r.own_cpu),
            cpu(synced, |r| r.own_cpu),
            cpu(exact, |r| r.own_cpu),
        );
    }
    out += "\nCPU shares are of one core (100% = one core busy for the run's duration): \
            Redis near 100% bounds the exact mode; both sides well under it mean that other \
            programs had the cores. The best round shows what the machine gives when the others \
            leave it alone. The three local limiters do not share their counts, so between them \
            they admit three times the quota (10 a second per tenant, 1000 tenants); the exact \
            and synced ones admit it once.\n";
    if left_out > 0 {
        out += &format!(
            "\n{left_out} runs were left out of the medians: the machine stalled (requests \
             failed open in exact mode, or a synced instance never synced).\n"
        );
    }
    Ok(out)
}

async fn run_once(
    mode: Mode,
    in_flight: usize,
    duration: f64,
    url: &str,
    tenants: &Arc<[HeaderValue]>,
    admin: &mut redis::aio::MultiplexedConnection,
) -> Result<Run, String> {
    let prefix = prefix("throughput");
    let layers: Vec<RateLimitLayer> = (0..INSTANCES)
        .map(|_| layer(mode, THROUGHPUT_QUOTA, url, &prefix))
        .collect();
    let stats: Vec<Stats> = layers.iter().map(RateLimitLayer::stats).collect();
    let mut services: Vec<_> = layers.iter().map(|layer| layer.layer(noop())).collect();
    // Connected (and the script loaded) before the clock starts.
    for service in &mut services {
        call(service, &tenants[0]).await;
    }
    let start = tokio::time::Instant::now() + Duration::from_millis(50);
    let deadline = start + Duration::from_secs_f64(duration);
    let mut tasks = Vec::new();
    for (instance, service) in services.iter().enumerate() {
        for task in 0..in_flight {
            let mut service = service.clone();
            let tenants = Arc::clone(tenants);
            let offset = (instance * in_flight + task) * 7919;
            tasks.push(tokio::spawn(async move {
                tokio::time::sleep_until(start).await;
                let (mut admitted, mut refused) = (0u64, 0u64);
                let mut last = Instant::now();
                let mut i = offset;
                while tokio::time::Instant::now() < deadline {
                    match call(&mut service, &tenants[i % TENANTS]).await {
                        StatusCode::OK => admitted += 1,
                        StatusCode::TOO_MANY_REQUESTS => refused += 1,
                        other => panic!("unexpected status {other}"),
                    }
                    last = Instant::now();
                    i += 1;
                    // A local decision never waits: let the other tasks of the worker run.
                    if i.is_multiple_of(256) {
                        tokio::task::yield_now().await;
                    }
                }
                (admitted, refused, last)
            }));
        }
    }
    let redis_before = redis_cpu(admin).await?;
    let own_before = own_cpu();
    tokio::time::sleep_until(start).await;
    let started = Instant::now();
    let (mut admitted, mut refused, mut last) = (0, 0, started);
    for task in tasks {
        let (a, r, at) = task.await.map_err(|e| format!("a task failed: {e}"))?;
        admitted += a;
        refused += r;
        last = last.max(at);
    }
    let seconds = last.duration_since(started).as_secs_f64();
    let redis_cpu = (redis_cpu(admin).await? - redis_before) / seconds;
    let own_cpu = (own_cpu() - own_before) / seconds;
    let snapshots: Vec<_> = stats.iter().map(Stats::snapshot).collect();
    let fail_open: u64 = snapshots.iter().map(|s| s.fail_open).sum();
    let left_out = if fail_open > 0 {
        Some(format!(
            "{fail_open} requests failed open (Redis did not answer within 1 s)"
        ))
    } else if mode == Mode::Synced && snapshots.iter().any(|s| s.syncs == 0) {
        Some("an instance never synced".to_string())
    } else {
        None
    };
    Ok(Run {
        admitted,
        refused,
        seconds,
        redis_cpu,
        own_cpu,
        left_out,
    })
}

fn check_no_fail_open(stats: &Stats) -> Result<(), String> {
    let snapshot = stats.snapshot();
    if snapshot.fail_open > 0 {
        return Err(format!(
            "{} requests were decided locally (Redis did not answer within 1 s): the figures \
             would mix the two modes",
            snapshot.fail_open
        ));
    }
    Ok(())
}

async fn info_field(
    connection: &mut redis::aio::MultiplexedConnection,
    section: &str,
    field: &str,
) -> Result<String, String> {
    let info: String = redis::cmd("INFO")
        .arg(section)
        .query_async(connection)
        .await
        .map_err(|e| format!("INFO {section}: {e}"))?;
    info.lines()
        .find_map(|line| line.strip_prefix(&format!("{field}:")))
        .map(|value| value.trim().to_string())
        .ok_or_else(|| format!("INFO {section} has no {field}"))
}

/// Seconds of CPU Redis has used (user and system, its main thread and the others).
async fn redis_cpu(connection: &mut redis::aio::MultiplexedConnection) -> Result<f64, String> {
    let mut total = 0.0;
    for field in ["used_cpu_user", "used_cpu_sys"] {
        let value = info_field(connection, "cpu", field).await?;
        total += value
            .parse::<f64>()
            .map_err(|e| format!("{field} {value:?}: {e}"))?;
    }
    Ok(total)
}

/// Seconds of CPU this process has used (user and system), from `/proc/self/stat` in clock
/// ticks of 1/100 s (Linux's `USER_HZ`).
fn own_cpu() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return f64::NAN;
    };
    // The fields after the command's closing parenthesis: state is the first, utime the 12th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok());
    match (ticks(11), ticks(12)) {
        (Some(user), Some(system)) => (user + system) / 100.0,
        _ => f64::NAN,
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg").map_or("unknown".into(), |text| {
        text.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    })
}

/// Processes named `rustc` now: the builds that share the machine.
fn compilers() -> usize {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter(|entry| {
            std::fs::read_to_string(entry.path().join("comm"))
                .is_ok_and(|name| name.trim() == "rustc")
        })
        .count()
}

fn cpus_allowed() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status.lines().find_map(|line| {
                line.strip_prefix("Cpus_allowed_list:")
                    .map(|v| v.trim().to_string())
            })
        })
        .unwrap_or_else(|| "unknown".into())
}

/// The `q` quantile of sorted times (nearest rank).
fn quantile(sorted: &[Duration], q: f64) -> Duration {
    let rank = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn mean(times: &[Duration]) -> Duration {
    times.iter().sum::<Duration>() / times.len().max(1) as u32
}

/// The median, or NaN (printed as such) when every run was left out.
fn median(mut values: Vec<f64>) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    proxflow_benches::stats::median(&mut values)
}

fn us(time: Duration) -> String {
    format!("{:.1} µs", time.as_secs_f64() * 1e6)
}

fn us_signed(seconds: f64) -> String {
    format!("{:+.1} µs", seconds * 1e6)
}
