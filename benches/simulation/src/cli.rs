//! The command line.

use std::path::PathBuf;

use clap::{Parser, ValueEnum};

use crate::backends::Placement;

/// Where the 1 s timeout is, on the command line.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Timeout {
    /// Around the balancer call (its future is dropped after 1 s).
    Outside,
    /// In the client (the balancer sees an error 1 s after its send).
    Inside,
    /// Both, each a row of its own.
    Both,
}

/// Command-line arguments.
#[derive(Parser)]
#[command(about = "Deterministic load-balancing simulation: proxflow-lb vs tower p2c")]
pub struct Args {
    /// Seeds per scenario, policy and timeout placement (seeds 1..=N).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub seeds: u64,
    /// Scenarios to run, comma-separated.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "S1,S2,S2L,S3,S4,S5,S6,S7,S8"
    )]
    pub scenarios: Vec<String>,
    /// Run only the policies whose name contains one of these, comma-separated; this can name
    /// the ones left out by default (`adaptive/requests`, `adaptive/concurrency`, the classic
    /// policies' `+ejection` variants).
    #[arg(long, value_delimiter = ',')]
    pub policies: Vec<String>,
    /// Where the 1 s timeout is.
    #[arg(long, value_enum, default_value_t = Timeout::Both)]
    pub timeout: Timeout,
    /// Worker threads (each run is single-threaded). Default: the number of CPUs.
    #[arg(long)]
    pub threads: Option<usize>,
    /// Exploration: the adaptive policy's `update_interval` in milliseconds. Default: the
    /// policy's default (the report's setting).
    #[arg(long)]
    pub update_interval_ms: Option<u64>,
    /// Exploration: the adaptive policy's `alpha`. Default: the policy's default.
    #[arg(long)]
    pub alpha: Option<f64>,
    /// Exploration: the adaptive policy's `failure_penalty`. Default: the policy's default.
    #[arg(long)]
    pub failure_penalty: Option<f64>,
    /// Run length in seconds for every scenario, to try things out. Default: each scenario's
    /// own (S2L 300 s, the others 60 s). Events past the end do not happen; the watched
    /// figures cover the part of the watched period that ran ("-" if none).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub duration: Option<u32>,
    /// Also append the markdown report to this file.
    #[arg(long)]
    pub markdown: Option<PathBuf>,
    /// Where the SVG plot goes. Default: benches/lb_simulation.svg.
    #[arg(long)]
    pub svg: Option<PathBuf>,
}

impl Args {
    /// The timeout placements to run, in the report's order.
    pub fn placements(&self) -> Vec<Placement> {
        match self.timeout {
            Timeout::Outside => vec![Placement::Outside],
            Timeout::Inside => vec![Placement::Inside],
            Timeout::Both => vec![Placement::Outside, Placement::Inside],
        }
    }
}
