//! The simulations' runs, spread over threads.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Runs `run` once for each of `jobs` on `threads` threads (the cores this process may use
/// when `None`), each thread taking the next job when it is done with one, and returns the
/// results in the jobs' order. After each job it prints `N/M runs` and `describe(job)` on one
/// line of standard error, rewritten in place.
pub fn run_jobs<J, R>(
    jobs: &[J],
    threads: Option<usize>,
    run: impl Fn(&J) -> R + Sync,
    describe: impl Fn(&J) -> String + Sync,
) -> Vec<R>
where
    J: Sync,
    R: Send,
{
    let threads = threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<R>>> = Mutex::new((0..jobs.len()).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(job) = jobs.get(i) else {
                    break;
                };
                let result = run(job);
                results.lock().unwrap_or_else(|e| e.into_inner())[i] = Some(result);
                let finished = done.fetch_add(1, Ordering::Relaxed) + 1;
                eprint!(
                    "\r{finished}/{} runs {}          ",
                    jobs.len(),
                    describe(job)
                );
            });
        }
    });
    eprintln!();
    results
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .into_iter()
        .map(|result| result.expect("every job ran"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::run_jobs;

    #[test]
    fn every_job_runs_once_and_results_keep_the_jobs_order() {
        let jobs: Vec<u64> = (0..100).collect();
        let results = run_jobs(&jobs, Some(4), |&j| j * j, |j| format!("({j})"));
        assert_eq!(results, jobs.iter().map(|j| j * j).collect::<Vec<_>>());
    }
}
