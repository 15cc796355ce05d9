//! Predictive warming's evaluation (issue 19): proxflow-cache's `warming` against no warming
//! and against refresh-on-access, by discrete-event simulation on virtual time.
//!
//! ```text
//! cargo build --release -p proxflow-simulation --bin cache_warming
//! target/release/cache_warming                 # 5 seeds, one hour each, every workload
//! target/release/cache_warming --quick         # 1 seed, 5 minutes: a smoke run
//! ```
//!
//! The model:
//!
//! - **Time.** Virtual, in nanoseconds: the loop jumps from event to event (a request, a
//!   fetch completing, a refresh falling due). Nothing sleeps; a run is deterministic for its
//!   seed, and every policy sees the same requests for a seed.
//! - **Cache.** Unbounded, every response storable with a lifetime of 60 s from the moment it
//!   is stored (the `ttl`). A request is a hit when a fresh entry is stored.
//! - **Origin.** Every fetch takes 50 ms. A request for a key whose fetch is in flight waits
//!   for it (coalesced, as the cache layer does): it counts as a miss but makes no origin
//!   request, and a warm fetch it waits for counts as used.
//! - **W1.** Poisson arrivals at 1000 requests/s, keys drawn from a Zipf law over 100k keys
//!   (exponent 0.8, 1.0, 1.2), clients uniform over 10k.
//! - **W2.** W1 at exponent 1.0 whose requests are lists: list `i` names three details of its
//!   own, and the client requests each with probability 0.7, at a uniform time within the 2 s
//!   after the list (1 to 3 detail requests, 2.1 per list on average, none 2.7% of the time).
//!   This reads the issue's "1-3 detail requests picked from that list with probability 0.7"
//!   as the probability that a detail on the list follows it.
//! - **W2u.** The other reading: lists of ten details, and with probability 0.7 the client
//!   requests 1 to 3 distinct ones, uniformly (a given detail follows its list 14% of the
//!   time). Shown for what prefetching can do when no single detail is likely.
//! - **Policies.** (a) none; (b) refresh-on-access: a hit after 80% of the entry's life
//!   starts a background refresh, as Caffeine's `refreshAfterWrite` does; predictive:
//!   `proxflow_cache::warming::Warming` at its defaults, driven as the layer drives it
//!   (`on_request` for each request, `on_stored` for each stored response, `due_refreshes`
//!   when `next_due` comes, at most 64 refreshes in flight, a prefetch or refresh skipped
//!   when the key is stored or being fetched).
//! - **Prefetch oracle.** On W2 only: after each list, its three details (each follows it
//!   with probability 0.7) are prefetched when not stored, known rather than learned, with no
//!   refreshes: what a perfect follower model would reach, a ceiling for the learned one.
//! - **Figures.** Medians over seeds of each figure. Expiry misses: misses of a key that was
//!   stored before. Prefetch precision: prefetched entries requested while fresh (or while
//!   being fetched) over prefetches. The hour includes the start from an empty cache.
//! - **Bound.** Under Poisson arrivals no policy that cannot see the future removes more
//!   expiry misses per extra origin request than refreshing the keys of highest rate at
//!   every expiry; the W1 targets' line shows what that removes at +10% origin requests,
//!   from the true rates.
//! - **Cost.** The report gives predictive warming's tables at the end of a run (keys
//!   tracked, bytes) and the wall time per simulated request with warming and without: their
//!   difference is about what warming's calls cost a request (mostly cache misses in its
//!   tables), plus the simulator's own checks of the prefetched keys.

mod report;
mod sim;
mod workload;

use std::time::{Duration, Instant};

use clap::Parser;
use proxflow_benches::exit_on_error;
use proxflow_benches::parallel::run_jobs;
use proxflow_benches::vendor::publish;
use proxflow_cache::warming::WarmingConfig;

use report::{report, summary, Row};
use sim::{run, Counts, Policy};
use workload::Workload;

/// Command-line arguments.
#[derive(Parser)]
#[command(about = "Predictive warming against no warming and refresh-on-access, simulated")]
struct Args {
    /// Seeds per workload and policy (seeds 1..=N).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
    seeds: u64,
    /// Virtual seconds per run.
    #[arg(long, default_value_t = 3600, value_parser = clap::value_parser!(u64).range(1..))]
    seconds: u64,
    /// A smoke run: one seed, 300 s.
    #[arg(long)]
    quick: bool,
    /// Workloads to run, comma-separated (W1-0.8, W1-1.0, W1-1.2, W2, W2u).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "W1-0.8,W1-1.0,W1-1.2,W2,W2u"
    )]
    workloads: Vec<String>,
    /// Worker threads (each run is single-threaded). Default: the number of CPUs.
    #[arg(long)]
    threads: Option<usize>,
    /// Also append the markdown report to this file.
    #[arg(long)]
    markdown: Option<std::path::PathBuf>,
    /// Exploration: warming's `min_hits_per_fetch`.
    #[arg(long)]
    kappa: Option<f64>,
    /// Exploration: warming's `rate_window` in seconds.
    #[arg(long)]
    rate_window: Option<u64>,
    /// Exploration: warming's `max_keys`.
    #[arg(long)]
    max_keys: Option<usize>,
    /// Exploration: warming's `refresh_lead` in milliseconds.
    #[arg(long)]
    lead_ms: Option<u64>,
    /// Exploration: warming's `budget`.
    #[arg(long)]
    budget: Option<f64>,
    /// Exploration: warming's `follow_memory`.
    #[arg(long)]
    follow_memory: Option<u32>,
}

fn parse_workload(name: &str) -> Result<Workload, String> {
    Workload::all()
        .into_iter()
        .find(|w| w.name().replace(" s=", "-").eq_ignore_ascii_case(name))
        .ok_or_else(|| format!("unknown workload {name} (W1-0.8, W1-1.0, W1-1.2, W2, W2u)"))
}

fn main() {
    exit_on_error(real_main(Args::parse()));
}

fn real_main(mut args: Args) -> proxflow_benches::vendor::Result<()> {
    let wall = Instant::now();
    if args.quick {
        args.seeds = 1;
        args.seconds = 300;
    }
    let workloads = args
        .workloads
        .iter()
        .map(|w| parse_workload(w))
        .collect::<Result<Vec<_>, _>>()?;
    let mut config = WarmingConfig::default();
    if let Some(kappa) = args.kappa {
        config.min_hits_per_fetch = kappa;
    }
    if let Some(window) = args.rate_window {
        config.rate_window = Duration::from_secs(window);
    }
    if let Some(max) = args.max_keys {
        config.max_keys = max;
    }
    if let Some(budget) = args.budget {
        config.budget = budget;
    }
    if let Some(memory) = args.follow_memory {
        config.follow_memory = memory;
    }
    if let Some(lead) = args.lead_ms {
        config.refresh_lead = Duration::from_millis(lead);
    }
    let policies = [
        Policy::None,
        Policy::OnAccess,
        Policy::Predictive(config),
        Policy::Oracle,
    ];
    let mut jobs = Vec::new();
    for (w, workload) in workloads.iter().enumerate() {
        for (p, policy) in policies.iter().enumerate() {
            if matches!(policy, Policy::Oracle) && workload.likely_followers(0).next().is_none() {
                continue;
            }
            for seed in 1..=args.seeds {
                jobs.push((w, p, seed));
            }
        }
    }
    // The heaviest first (the predictive runs, then the sessions), so that threads end
    // together.
    jobs.sort_by_key(|&(w, p, _)| std::cmp::Reverse((p == 2, workloads[w].has_sessions())));
    let results = run_jobs(
        &jobs,
        args.threads,
        |&(w, p, seed)| run(workloads[w], &policies[p], seed, args.seconds),
        |&(w, p, seed)| {
            format!(
                "({} {} seed {seed})",
                workloads[w].name(),
                policies[p].name()
            )
        },
    );
    let runs = |w: usize, p: usize| -> Vec<Counts> {
        jobs.iter()
            .zip(&results)
            .filter(|((jw, jp, _), _)| *jw == w && *jp == p)
            .map(|(_, c)| *c)
            .collect()
    };
    let rows: Vec<Row> = workloads
        .iter()
        .enumerate()
        .map(|(w, &workload)| Row {
            workload,
            none: summary(&runs(w, 0)),
            on_access: summary(&runs(w, 1)),
            predictive: summary(&runs(w, 2)),
            oracle: Some(runs(w, 3))
                .filter(|r| !r.is_empty())
                .map(|r| summary(&r)),
            // Jobs are in seed order within a workload and policy.
            seeds: runs(w, 0)
                .iter()
                .zip(runs(w, 1))
                .zip(runs(w, 2))
                .map(|((a, b), p)| {
                    (
                        summary(std::slice::from_ref(a)),
                        summary(&[b]),
                        summary(&[p]),
                    )
                })
                .collect(),
        })
        .collect();
    let md = report(&rows, args.seeds, args.seconds, wall.elapsed());
    publish(&md, args.markdown.as_deref())?;
    eprintln!("wall time {:.0} s", wall.elapsed().as_secs_f64());
    Ok(())
}
