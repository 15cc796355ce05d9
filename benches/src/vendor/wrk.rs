//! wrk on the load core, and what its report says.

use std::path::Path;

use super::process::pinned;
use super::{Result, CONNECTIONS, WRK, WRK_CPU};

/// What one wrk run reported.
pub struct Report {
    /// `Requests/sec`.
    pub rps: f64,
    /// The requests completed (`N requests in ...`).
    pub requests: u64,
    /// How long the run lasted, in seconds (`... in 10.01s`): wrk checks its stop flag every
    /// 100 ms, so a run lasts up to 0.1 s longer than asked.
    pub seconds: f64,
    /// The answers that were neither 2xx nor 3xx (`Non-2xx or 3xx responses`).
    pub non_2xx: u64,
    /// The median latency as wrk prints it (`1.23ms`), with `--latency`; empty without.
    pub p50: String,
    /// The 99th percentile latency, likewise.
    pub p99: String,
    /// wrk's whole report, for error messages.
    pub text: String,
}

/// Runs `wrk -t1 -c32 -d<secs>s <extra> <url>` on the load core and reads its report; fails if
/// wrk fails or saw socket errors.
pub fn run(url: &str, secs: u32, extra: &[&str]) -> Result<Report> {
    let output = pinned(WRK_CPU, Path::new(WRK))
        .args(["-t1", &format!("-c{CONNECTIONS}"), &format!("-d{secs}s")])
        .args(extra)
        .arg(url)
        .output()
        .map_err(|e| format!("cannot run {WRK}: {e}"))?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(format!("wrk failed ({}):\n{text}{stderr}", output.status).into());
    }
    let socket_errors = text
        .lines()
        .filter_map(|line| line.trim().strip_prefix("Socket errors:"))
        // "connect 0, read 0, write 0, timeout 0"
        .flat_map(|counts| counts.split(','))
        .filter_map(|kv| kv.split_whitespace().nth(1))
        .any(|n| n != "0");
    if socket_errors {
        return Err(format!("wrk saw socket errors:\n{text}").into());
    }
    parse(text)
}

/// Reads wrk's report.
fn parse(text: String) -> Result<Report> {
    let (mut rps, mut requests, mut seconds, mut non_2xx) = (None, None, None, 0);
    let (mut p50, mut p99) = (String::new(), String::new());
    for line in text.lines().map(str::trim) {
        if let Some(value) = line.strip_prefix("Requests/sec:") {
            rps = value.trim().parse().ok();
        } else if let Some(value) = line.strip_prefix("Non-2xx or 3xx responses:") {
            non_2xx = value.trim().parse()?;
        } else if let Some(value) = line.strip_prefix("50%") {
            p50 = value.trim().to_string();
        } else if let Some(value) = line.strip_prefix("99%") {
            p99 = value.trim().to_string();
        } else if let Some((count, rest)) = line.split_once(" requests in ") {
            // "1234567 requests in 10.00s, 123.45MB read"
            requests = count.trim().parse().ok();
            seconds = rest
                .split(',')
                .next()
                .and_then(|d| parse_duration(d.trim()));
        }
    }
    Ok(Report {
        rps: rps.ok_or_else(|| format!("no Requests/sec in wrk output:\n{text}"))?,
        requests: requests.ok_or_else(|| format!("no request count in wrk output:\n{text}"))?,
        seconds: seconds.ok_or_else(|| format!("no duration in wrk output:\n{text}"))?,
        non_2xx,
        p50,
        p99,
        text,
    })
}

/// wrk's durations: `10.00s`, `1.00m`, `500.00ms`.
fn parse_duration(text: &str) -> Option<f64> {
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

#[cfg(test)]
mod tests {
    use super::{parse, parse_duration};

    #[test]
    fn wrk_durations() {
        assert_eq!(parse_duration("10.01s"), Some(10.01));
        assert_eq!(parse_duration("1.00m"), Some(60.0));
        assert_eq!(parse_duration("500.00ms"), Some(0.5));
    }

    #[test]
    fn a_report_with_latencies_and_errors() {
        let text = "Running 10s test @ http://127.0.0.1:8080/
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   312.45us   50.12us   2.10ms   90.00%
    Req/Sec   101.23k     2.01k  105.00k    70.00%
  Latency Distribution
     50%  305.00us
     75%  330.00us
     90%  360.00us
     99%  480.00us
  1012345 requests in 10.01s, 80.12MB read
  Non-2xx or 3xx responses: 1001234
Requests/sec: 101133.87
Transfer/sec:      8.00MB
";
        let report = parse(text.to_string()).unwrap();
        assert_eq!(report.rps, 101_133.87);
        assert_eq!(report.requests, 1_012_345);
        assert_eq!(report.seconds, 10.01);
        assert_eq!(report.non_2xx, 1_001_234);
        assert_eq!(
            (report.p50.as_str(), report.p99.as_str()),
            ("305.00us", "480.00us")
        );
        assert!(parse("nothing".to_string()).is_err());
    }
}
