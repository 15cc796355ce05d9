//! A tiny HTTP server behind `RateLimitLayer`: answers `200 ok` to what the limiter admits. It
//! is the proxflow side of `ratelimit_vs_nginx`, served by this package's lean server loop
//! ([`proxflow_benches::server`]).
//!
//! ```text
//! ratelimit_server -p 8080 --rate 1000 --per 1s --burst 101 --algorithm token_bucket --key ip --reject 429
//! ```
//!
//! HTTP/1.1 on 127.0.0.1, a current-thread Tokio runtime (one core), `TCP_NODELAY`, mimalloc, a
//! service per connection told its peer (`RateLimit::with_peer`) so that `--key ip` limits per
//! client address. `-p 0` picks a free port; the port is printed on stdout as
//! `listening on http://127.0.0.1:PORT`.
//! On SIGTERM or Ctrl-C it prints the layer's counters on stderr
//! (`ratelimit stats: allowed=.. limited=.. ...`) and exits.

use std::convert::Infallible;
use std::io::Write;
use std::time::Duration;

use bytes::Bytes;
use clap::{Parser, ValueEnum};
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use proxflow_benches::server::{serve_connections, Connections};
use proxflow_ratelimit::{Algorithm, LimitHeaders, RateLimitConfig, RateLimitLayer, Reject};
use tokio::net::TcpListener;
use tower::Layer;

// A server answering a flood of 429s allocates a header map per answer; mimalloc's thread-local
// free lists serve that with fewer instructions than glibc's malloc, which on this path also
// merges its fast bins again and again (`malloc_consolidate`).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The algorithms, as the configuration names them.
#[derive(Debug, Clone, Copy, ValueEnum)]
#[value(rename_all = "snake_case")]
enum AlgorithmArg {
    TokenBucket,
    LeakyBucket,
    SlidingWindow,
    SlidingWindowApprox,
}

/// What a request over the limit gets.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum RejectArg {
    /// 429 Too Many Requests.
    #[value(name = "429")]
    TooManyRequests,
    /// Hold the request until admitted (at most --max-delay), then 429.
    Delay,
    /// Close the connection without an answer.
    Drop,
}

/// Which answers carry the `RateLimit-Policy` and `RateLimit` fields.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum HeadersArg {
    /// Allowed and limited answers (the default).
    Always,
    /// Limited answers only.
    Limited,
    /// None (a 429 still carries `Retry-After`).
    Never,
}

/// Answers `200 ok` to what a rate limiter lets through.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Port to listen on (on 127.0.0.1); 0 picks a free one.
    #[arg(short = 'p', long, default_value_t = 3000)]
    port: u16,
    /// Requests per --per.
    #[arg(long, default_value_t = 10)]
    rate: u32,
    /// The period of --rate: `1s`, `500ms`, `1m`, `1h` (a bare number is seconds).
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    per: Duration,
    /// Token bucket capacity, or how many requests may wait in a leaky bucket.
    #[arg(long, default_value_t = 5)]
    burst: u32,
    /// The algorithm.
    #[arg(long, value_enum, default_value_t = AlgorithmArg::TokenBucket)]
    algorithm: AlgorithmArg,
    /// The key: `ip`, `global`, `user`, `api_key` or `header:<name>`.
    #[arg(long, default_value = "ip")]
    key: String,
    /// What a request over the limit gets.
    #[arg(long, value_enum, default_value_t = RejectArg::TooManyRequests)]
    reject: RejectArg,
    /// Which answers carry the `RateLimit-Policy` and `RateLimit` fields.
    #[arg(long, value_enum, default_value_t = HeadersArg::Always)]
    headers: HeadersArg,
    /// With `--reject delay`, the longest a request is held.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    max_delay: Duration,
    /// Serve without the rate limiter (every request gets 200): the server's own ceiling, as a
    /// benchmark baseline.
    #[arg(long)]
    no_limit: bool,
}

/// `1s`, `250ms`, `10us`, `5ns`, `2m`, `1h`, or a bare number of seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?}: expected a duration such as 1s or 500ms"))?;
    let seconds = match unit.trim() {
        "" | "s" => 1.0,
        "ms" => 1e-3,
        "us" | "µs" => 1e-6,
        "ns" => 1e-9,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        other => return Err(format!("{other:?}: unknown unit (ns, us, ms, s, m, h)")),
    };
    Duration::try_from_secs_f64(number * seconds).map_err(|e| format!("{text:?}: {e}"))
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let config = RateLimitConfig {
        algorithm: match args.algorithm {
            AlgorithmArg::TokenBucket => Algorithm::TokenBucket,
            AlgorithmArg::LeakyBucket => Algorithm::LeakyBucket,
            AlgorithmArg::SlidingWindow => Algorithm::SlidingWindow,
            AlgorithmArg::SlidingWindowApprox => Algorithm::SlidingWindowApprox,
        },
        rate: args.rate,
        per: args.per,
        burst: args.burst,
        key: args.key.clone(),
        reject: match args.reject {
            RejectArg::TooManyRequests => Reject::TooManyRequests,
            RejectArg::Delay => Reject::Delay,
            RejectArg::Drop => Reject::Drop,
        },
        max_delay: args.max_delay,
        headers: match args.headers {
            HeadersArg::Always => LimitHeaders::Always,
            HeadersArg::Limited => LimitHeaders::Limited,
            HeadersArg::Never => LimitHeaders::Never,
        },
        ..RateLimitConfig::default()
    };
    let layer = match RateLimitLayer::from_config(&config) {
        Ok(layer) => layer,
        Err(error) => {
            eprintln!("ratelimit_server: {error}");
            std::process::exit(2);
        }
    };
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(run(args.port, (!args.no_limit).then_some(layer)))
}

async fn run(port: u16, layer: Option<RateLimitLayer>) -> std::io::Result<()> {
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    // The benchmark harness waits for this line to learn the port: flush it at once.
    let mut stdout = std::io::stdout();
    writeln!(stdout, "listening on http://{}", listener.local_addr()?)?;
    stdout.flush()?;

    let ok = tower::service_fn(|_: Request<Incoming>| async {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"ok\n"))))
    });
    // Every answer, the layer's or `ok`'s, is ready in the poll that receives the request, so
    // there is no handler to cancel when a client leaves: hyper's watch for that is skipped.
    let connections = Connections { half_close: true };
    let Some(layer) = layer else {
        return serve_connections(listener, connections, |_| ok).await;
    };
    // One service per connection, told its peer: cheaper than tagging every request.
    serve_connections(listener, connections, |peer| {
        layer.layer(ok).with_peer(peer)
    })
    .await?;
    let s = layer.stats().snapshot();
    eprintln!(
        "ratelimit stats: allowed={} limited={} delayed={} dropped={} active_keys={}",
        s.allowed, s.limited, s.delayed, s.dropped, s.active_keys
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("1m"), Ok(Duration::from_secs(60)));
        assert!(parse_duration("1 fortnight").is_err());
        assert!(parse_duration("s").is_err());
    }
}
