//! The command line.

use std::path::PathBuf;

use clap::Parser;

/// Command-line arguments.
#[derive(Parser)]
#[command(about = "Compare rate limiting: nginx limit_req vs proxflow ratelimit_server")]
pub struct Args {
    /// Requests per second admitted (nginx `rate=<r>r/s`, proxflow `--rate r --per 1s`).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub rate: u32,
    /// nginx `burst=b nodelay`; proxflow's token bucket gets `--burst b+1`.
    #[arg(long, default_value_t = 100)]
    pub burst: u32,
    /// Seconds of each measured wrk run.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub duration: u32,
    /// Measured rounds; the report gives medians.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub rounds: u32,
    /// Seconds of the warm-up run per server, not measured.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    pub warmup: u32,
    /// Also compare proxflow's leaky bucket with nginx `limit_req` without `nodelay`.
    #[arg(long)]
    pub leaky: bool,
    /// nginx `burst=` (no `nodelay`) and proxflow leaky bucket `--burst` of the leaky scenario;
    /// below the 32 connections, so that requests are rejected.
    #[arg(long, default_value_t = 10)]
    pub leaky_burst: u32,
    /// Which of proxflow's answers carry the `RateLimit-Policy` and `RateLimit` fields:
    /// `always` (the layer's default), `limited` or `never` (nginx sends no such fields).
    #[arg(long, default_value = "always", value_parser = ["always", "limited", "never"])]
    pub headers: String,
    /// Keep nginx's default of logging each rejected request at `error` level.
    #[arg(long)]
    pub nginx_log_rejections: bool,
    /// After the rounds, this many pairs of short token-bucket runs, nginx and proxflow back to
    /// back (the first of each pair alternating), for a confidence interval on the throughput
    /// ratio: the host's speed drifts by tens of percent over minutes, much less between two
    /// runs seconds apart. 0: none.
    #[arg(long, default_value_t = 0)]
    pub pairs: u32,
    /// Seconds of each run of `--pairs`.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    pub pair_duration: u32,
    /// Append the report to this file as well.
    #[arg(long)]
    pub markdown: Option<PathBuf>,
    /// Write the medians per scenario and server to this file as JSON as well (what
    /// `vendor_compare` plots).
    #[arg(long)]
    pub json: Option<PathBuf>,
}
