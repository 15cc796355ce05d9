//! Helpers shared by the vendor comparison programs and the criterion benches, and the server
//! loop of the benchmark servers.

pub mod compare;
pub mod parallel;
pub mod plot;
pub mod server;
pub mod stats;
pub mod vendor;

use std::future::Future;
use std::path::PathBuf;
use std::pin::pin;
use std::sync::{Barrier, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant, SystemTime};

use tower::Service;

/// Ends a program's `main`: on an error, prints it on stderr and exits with status 1. Call it
/// with what the program's work returned, so that everything that work held (servers to stop,
/// files to flush) is dropped before the exit, which would skip destructors.
pub fn exit_on_error<E: std::fmt::Display>(outcome: Result<(), E>) {
    if let Err(error) = outcome {
        eprintln!("error: {error}");
        std::process::exit(1);
    }
}

/// The current time as `YYYY-MM-DD HH:MM UTC`, from the system clock.
pub fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (year, month, day) = civil_from_days(secs / 86_400);
    let minutes = secs % 86_400 / 60;
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        minutes / 60,
        minutes % 60
    )
}

/// (year, month, day) of the given day count since 1970-01-01 in the proleptic Gregorian
/// calendar (Howard Hinnant's `civil_from_days`, for days on or after the epoch).
pub fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468; // days since 0000-03-01
    let era = z / 146_097;
    let doe = z % 146_097; // day of the 400-year era, [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of the March-based year
    let mp = (5 * doy + 2) / 153; // March = 0
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = era * 400 + yoe + u64::from(month <= 2);
    (year, month, day)
}

/// `arg` as a shell word: as it is when safe, else single-quoted.
pub fn shell_quote(arg: &str) -> String {
    let plain = !arg.is_empty()
        && arg
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain {
        arg.to_string()
    } else {
        format!("'{}'", arg.replace('\'', r"'\''"))
    }
}

/// The command line this program was started with, each argument as a shell word.
pub fn command_line() -> String {
    let words: Vec<String> = std::env::args().map(|arg| shell_quote(&arg)).collect();
    words.join(" ")
}

/// A whole number with thousands separators: `123,456`.
pub fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value);
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

// What the criterion benches share.

/// `poll_ready`, `call`, one poll of the future with a no-op waker. Panics if anything is
/// pending: on the paths measured here nothing may wait.
pub fn call_now<S, R>(service: &mut S, request: R) -> S::Response
where
    S: Service<R>,
    S::Error: std::fmt::Debug,
{
    let mut cx = Context::from_waker(Waker::noop());
    match service.poll_ready(&mut cx) {
        Poll::Ready(Ok(())) => {}
        other => panic!("service not ready: {other:?}"),
    }
    let mut future = pin!(service.call(request));
    match future.as_mut().poll(&mut cx) {
        Poll::Ready(Ok(response)) => response,
        Poll::Ready(Err(error)) => panic!("service failed: {error:?}"),
        Poll::Pending => panic!("response future pending: nothing may wait on the paths measured"),
    }
}

/// One call of `service` with a fresh `Request::new(())`, as the benchmarks' loops make it:
/// [`call_now`], `black_box` on the request and the response, the response dropped.
#[inline]
pub fn call_once<S>(service: &mut S)
where
    S: Service<http::Request<()>>,
    S::Error: std::fmt::Debug,
{
    drop(std::hint::black_box(call_now(
        service,
        std::hint::black_box(http::Request::new(())),
    )));
}

/// Calls per stretch of [`paired`]: long enough that the two clock readings per stretch cost
/// little per call, short enough that both sides see the same state of the host.
pub const STRETCH: u64 = 1000;

/// The paired measurement: `iters` calls of `measured` and `iters` of `baseline`, alternating in
/// stretches of [`STRETCH`] (which goes first alternates too), and the time of the first minus
/// that of the second. Each sample so holds both under the same conditions of the host,
/// instead of two medians of runs taken seconds apart (on a shared machine the no-op alone
/// moves between runs by as much as the differences measured).
pub fn paired(iters: u64, measured: impl FnMut(), baseline: impl FnMut()) -> Duration {
    let (measured_time, baseline_time) = alternating(iters, measured, baseline);
    measured_time.saturating_sub(baseline_time)
}

/// The times of `iters` calls of `measured` and `iters` of `baseline`, alternating as in
/// [`paired`]: for a ratio taken under the same conditions of the host.
pub fn alternating(
    iters: u64,
    mut measured: impl FnMut(),
    mut baseline: impl FnMut(),
) -> (Duration, Duration) {
    let (mut measured_time, mut baseline_time) = (Duration::ZERO, Duration::ZERO);
    let mut left = iters;
    let mut baseline_first = true;
    while left > 0 {
        let stretch = left.min(STRETCH);
        for baseline_now in [baseline_first, !baseline_first] {
            let start = Instant::now();
            if baseline_now {
                for _ in 0..stretch {
                    baseline();
                }
                baseline_time += start.elapsed();
            } else {
                for _ in 0..stretch {
                    measured();
                }
                measured_time += start.elapsed();
            }
        }
        baseline_first = !baseline_first;
        left -= stretch;
    }
    (measured_time, baseline_time)
}

/// Runs `work(thread, iters)` on `threads` threads at once; the wall time from the first
/// thread's start until the last one is done. Each thread starts at `start.wait()`, so set-up
/// inside `work` before it is not timed. The threads read the clock themselves: a timer kept by
/// the spawning thread would start late whenever that thread lost its core at the start, and
/// with as many bench threads as cores it often does.
pub fn on_threads<W>(threads: usize, iters: u64, work: W) -> Duration
where
    W: Fn(usize, u64, &StartLine) + Sync,
{
    let start = StartLine {
        barrier: Barrier::new(threads),
        starts: Mutex::new(Vec::with_capacity(threads)),
    };
    let ends: Vec<Instant> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|thread| {
                let (work, start) = (&work, &start);
                scope.spawn(move || {
                    work(thread, iters, start);
                    Instant::now()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().expect("bench thread panicked"))
            .collect()
    });
    let starts = start.starts.into_inner().expect("no thread panicked");
    let first = starts.iter().min().expect("every thread started");
    let last = ends.iter().max().expect("at least one thread");
    last.duration_since(*first)
}

/// Where the threads of [`on_threads`] wait for each other, and note when they started.
pub struct StartLine {
    barrier: Barrier,
    starts: Mutex<Vec<Instant>>,
}

impl StartLine {
    /// Waits for the other threads, then notes this thread's start.
    pub fn wait(&self) {
        self.barrier.wait();
        let now = Instant::now();
        self.starts.lock().expect("no thread panicked").push(now);
    }
}

/// Where criterion writes its estimates, found as criterion finds it: `$CRITERION_HOME`, else
/// `criterion/` in `$CARGO_TARGET_DIR`, else in the target directory `cargo metadata` reports.
pub fn criterion_dir() -> Option<PathBuf> {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return Some(home.into());
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return Some(PathBuf::from(target).join("criterion"));
    }
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let output = std::process::Command::new(cargo)
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .output()
        .ok()?;
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).ok()?;
    Some(PathBuf::from(metadata["target_directory"].as_str()?).join("criterion"))
}

/// The median time per iteration (ns) of a benchmark this process measured (its estimates are
/// newer than `since`), or `None`.
pub fn median_ns(dir: &std::path::Path, since: SystemTime, id: &str) -> Option<f64> {
    let path = dir.join(id).join("new").join("estimates.json");
    let modified = std::fs::metadata(&path).ok()?.modified().ok()?;
    if modified < since {
        return None;
    }
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).ok()?).ok()?;
    json["median"]["point_estimate"].as_f64()
}

/// A median in nanoseconds as the benches' summaries print it: `12.3 ns`, or `n/a` when it was
/// not measured.
pub fn ns(median: Option<f64>) -> String {
    median.map_or("n/a".to_string(), |v| format!("{v:.1} ns"))
}

/// A target's verdict in the benches' summaries: `PASS`, `FAIL`, or `not measured`.
pub fn verdict(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "PASS",
        Some(false) => "FAIL",
        None => "not measured",
    }
}

/// The no-op service of the criterion benches: the answer of an axum handler returning a
/// `&'static str`, minus the body (200 with `content-type: text/plain; charset=utf-8`, so its
/// header map is allocated, as every real response's is).
pub fn noop() -> impl Service<
    http::Request<()>,
    Response = http::Response<()>,
    Error = std::convert::Infallible,
    Future: Send + 'static,
> + Clone
       + Send
       + 'static {
    tower::service_fn(|_| async { Ok::<_, std::convert::Infallible>(text_response()) })
}

/// The no-op service's answer.
pub fn text_response() -> http::Response<()> {
    let mut response = http::Response::new(());
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::civil_from_days;

    #[test]
    fn civil_from_days_known_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(59), (1970, 3, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(11_017), (2000, 3, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    }
}
