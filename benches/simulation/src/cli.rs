//! The command line.

use std::path::PathBuf;

use clap::Parser;

/// Command-line arguments.
#[derive(Parser)]
#[command(about = "Deterministic load-balancing simulation: proxflow-lb vs tower p2c")]
pub struct Args {
    /// Seeds per scenario and policy (seeds 1..=N).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    pub seeds: u64,
    /// Scenarios to run, comma-separated (S1..S6).
    #[arg(long, value_delimiter = ',', default_value = "S1,S2,S3,S4,S5,S6")]
    pub scenarios: Vec<String>,
    /// Run only the policies whose name contains one of these, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub policies: Vec<String>,
    /// Worker threads (each run is single-threaded). Default: the number of CPUs.
    #[arg(long)]
    pub threads: Option<usize>,
    /// The adaptive policy's `failure_penalty` (exploration; the report uses the default 4).
    #[arg(long, default_value_t = 4.0)]
    pub failure_penalty: f64,
    /// The adaptive policy's `update_interval` in milliseconds (exploration).
    #[arg(long, default_value_t = 1000)]
    pub update_interval_ms: u64,
    /// The adaptive policy's `alpha` (exploration).
    #[arg(long, default_value_t = 0.3)]
    pub alpha: f64,
    /// Run length in seconds (60 for the report; shorter only to try things out).
    #[arg(long, default_value_t = 60)]
    pub duration: u32,
    /// Also append the markdown report to this file.
    #[arg(long)]
    pub markdown: Option<PathBuf>,
    /// Where the SVG plot goes. Default: benches/lb_simulation.svg.
    #[arg(long)]
    pub svg: Option<PathBuf>,
}
