//! An open-loop load generator: requests sent at a constant rate whatever the server does, and
//! each one's latency measured from the time it was scheduled to be sent.
//!
//! A closed-loop generator (wrk) sends a connection's next request only when the previous answer
//! has come, so a server that stalls is asked less and its stall is counted once; the requests
//! that would have arrived meanwhile, and waited, are never measured ("coordinated omission").
//! Here request `i` is due at `start + i / rate`. A pacer thread releases each request when it
//! is due; a fixed set of keep-alive connections takes the released requests in order, and each
//! answer's latency runs from its request's due time to the end of its body. A request released
//! while every connection is busy waits, and its wait counts, as it would for a user.
//!
//! The pacer sleeps on the OS's high-resolution timers (tokio's timer wheel has a 1 ms grain,
//! which would show as up to a millisecond of latency); how late it ever released a request is
//! reported ([`Outcome::pacer_late_max`]), so that a generator starved of its core shows.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http::{header, Request};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use super::Result;

/// How long after the last due time answers are still waited for.
const DRAIN: Duration = Duration::from_secs(2);

/// The histogram's highest trackable latency, in microseconds (an hour).
const HIGHEST_US: u64 = 3_600_000_000;

/// What to send.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    /// Requests per second.
    pub rate: f64,
    /// How long requests are sent for.
    pub duration: Duration,
    /// Keep-alive connections that carry them (requests wait when all are busy).
    pub connections: usize,
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Latency of the answered requests (any status), in microseconds from the request's due
    /// time to the end of its answer. Requests still unanswered at the end count with the time
    /// they had waited by then (a lower bound of their latency).
    pub latency: Histogram<u64>,
    /// Requests due in the run.
    pub scheduled: u64,
    /// Requests answered (any status).
    pub answered: u64,
    /// Answers whose status was not 2xx or 3xx.
    pub non_2xx: u64,
    /// Requests that failed on the connection (refused, reset, a malformed answer).
    pub errors: u64,
    /// Requests not answered within two seconds of the last due time.
    pub unfinished: u64,
    /// The longest a request was released after its due time: the generator's own lateness.
    pub pacer_late_max: Duration,
}

impl Outcome {
    /// The latency at `quantile` (0.5 for the median), in milliseconds.
    pub fn ms(&self, quantile: f64) -> f64 {
        self.latency.value_at_quantile(quantile) as f64 / 1000.0
    }

    /// Whether every request was answered, with a 2xx or 3xx, in time.
    pub fn clean(&self) -> bool {
        self.non_2xx == 0 && self.errors == 0 && self.unfinished == 0
    }
}

/// What the workers share.
struct Shared {
    start: Instant,
    rate: f64,
    total: u64,
    /// One permit per released request (and, at the end, one per worker to let it stop).
    released: Semaphore,
    /// The index of the next request to take.
    next: AtomicU64,
}

impl Shared {
    fn due(&self, index: u64) -> Instant {
        self.start + Duration::from_secs_f64(index as f64 / self.rate)
    }
}

/// One worker's counts.
struct Counts {
    latency: Histogram<u64>,
    answered: u64,
    non_2xx: u64,
    errors: u64,
    unfinished: u64,
}

/// Sends `GET path` to 127.0.0.1:`port` on `schedule`, on the current tokio runtime (the
/// pacer is a thread of its own), and returns what it measured. Fails only if the connections
/// cannot be opened at the start.
pub async fn run(port: u16, path: &str, schedule: Schedule) -> Result<Outcome> {
    if !schedule.rate.is_finite() || schedule.rate <= 0.0 || schedule.connections == 0 {
        return Err("an open-loop run needs a positive rate and at least one connection".into());
    }
    let total = (schedule.rate * schedule.duration.as_secs_f64()).round() as u64;
    let mut senders = Vec::with_capacity(schedule.connections);
    for _ in 0..schedule.connections {
        senders.push(connect(port).await?);
    }
    // The first request is due shortly after every worker has started waiting.
    let shared = Arc::new(Shared {
        start: Instant::now() + Duration::from_millis(20),
        rate: schedule.rate,
        total,
        released: Semaphore::new(0),
        next: AtomicU64::new(0),
    });
    let deadline = shared.due(total) + DRAIN;
    let workers: Vec<_> = senders
        .into_iter()
        .map(|sender| {
            let shared = Arc::clone(&shared);
            let path = path.to_string();
            tokio::spawn(worker(shared, port, path, sender, deadline))
        })
        .collect();
    let pacer = {
        let shared = Arc::clone(&shared);
        let workers = schedule.connections;
        thread::spawn(move || pace(&shared, workers))
    };

    let mut outcome = Outcome {
        latency: histogram(),
        scheduled: total,
        answered: 0,
        non_2xx: 0,
        errors: 0,
        unfinished: 0,
        pacer_late_max: Duration::ZERO,
    };
    for worker in workers {
        let counts = worker.await?;
        outcome.latency.add(&counts.latency)?;
        outcome.answered += counts.answered;
        outcome.non_2xx += counts.non_2xx;
        outcome.errors += counts.errors;
        outcome.unfinished += counts.unfinished;
    }
    outcome.pacer_late_max = pacer.join().map_err(|_| "the pacer thread panicked")?;
    // Requests never taken by a worker (all were busy until the deadline) waited at least
    // until the deadline.
    let taken = shared.next.load(Ordering::Relaxed).min(total);
    for index in taken..total {
        let waited = deadline.saturating_duration_since(shared.due(index));
        outcome.latency.saturating_record(micros(waited));
        outcome.unfinished += 1;
    }
    Ok(outcome)
}

/// The pacer: releases each request at its due time, then one permit per worker so that each
/// sees the end. Returns how late it released a request at worst.
fn pace(shared: &Shared, workers: usize) -> Duration {
    let mut released = 0u64;
    let mut late_max = Duration::ZERO;
    while released < shared.total {
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(shared.start).as_secs_f64();
        let due = if now < shared.start {
            0
        } else {
            ((elapsed * shared.rate).floor() as u64 + 1).min(shared.total)
        };
        if due > released {
            late_max = late_max.max(now.saturating_duration_since(shared.due(released)));
            shared
                .released
                .add_permits(usize::try_from(due - released).unwrap_or(usize::MAX));
            released = due;
        }
        if released < shared.total {
            let next = shared.due(released);
            // Wakes at the next due time, or every millisecond at the latest.
            let wait = next
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(1));
            if !wait.is_zero() {
                thread::sleep(wait);
            }
        }
    }
    shared.released.add_permits(workers);
    late_max
}

/// One connection's loop: takes the next released request, sends it, records its latency.
async fn worker(
    shared: Arc<Shared>,
    port: u16,
    path: String,
    sender: SendRequest<Empty<Bytes>>,
    deadline: Instant,
) -> Counts {
    let mut counts = Counts {
        latency: histogram(),
        answered: 0,
        non_2xx: 0,
        errors: 0,
        unfinished: 0,
    };
    let host = format!("127.0.0.1:{port}");
    let mut sender = Some(sender);
    loop {
        match shared.released.acquire().await {
            Ok(permit) => permit.forget(),
            Err(_) => break,
        }
        let index = shared.next.fetch_add(1, Ordering::Relaxed);
        if index >= shared.total {
            break;
        }
        let due = shared.due(index);
        let exchange = exchange(&mut sender, port, &path, &host);
        match tokio::time::timeout_at(deadline.into(), exchange).await {
            Ok(Ok(status)) => {
                counts.answered += 1;
                if !(status.is_success() || status.is_redirection()) {
                    counts.non_2xx += 1;
                }
                counts
                    .latency
                    .saturating_record(micros(Instant::now().saturating_duration_since(due)));
            }
            Ok(Err(_)) => {
                counts.errors += 1;
                sender = None;
            }
            Err(_) => {
                counts.unfinished += 1;
                counts
                    .latency
                    .saturating_record(micros(deadline.saturating_duration_since(due)));
                break;
            }
        }
    }
    counts
}

/// One request on the worker's connection (opened again if it was lost), its body read to the
/// end; the answer's status.
async fn exchange(
    sender: &mut Option<SendRequest<Empty<Bytes>>>,
    port: u16,
    path: &str,
    host: &str,
) -> Result<http::StatusCode> {
    let mut connection = match sender.take() {
        Some(connection) => connection,
        None => connect(port).await?,
    };
    connection.ready().await?;
    let request = Request::get(path)
        .header(header::HOST, host)
        .body(Empty::<Bytes>::new())?;
    let response = connection.send_request(request).await?;
    let status = response.status();
    response.into_body().collect().await?;
    *sender = Some(connection);
    Ok(status)
}

/// A keep-alive HTTP/1.1 connection to 127.0.0.1:`port`, `TCP_NODELAY` on (as wrk's).
async fn connect(port: u16) -> Result<SendRequest<Empty<Bytes>>> {
    let stream = TcpStream::connect(("127.0.0.1", port)).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        // The connection ends when its sender is dropped or the server closes it; a worker
        // that loses it opens another.
        let _ = connection.await;
    });
    Ok(sender)
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIGHEST_US, 3).expect("valid histogram bounds")
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros())
        .unwrap_or(u64::MAX)
        .max(1)
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::time::{Duration, Instant};

    use bytes::Bytes;
    use http_body_util::Full;
    use hyper::server::conn::http1;
    use hyper_util::rt::TokioIo;
    use tokio::net::TcpListener;

    use super::{run, Schedule};

    /// A server that answers after `delay`.
    async fn server(delay: Duration) -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |_| async move {
                        tokio::time::sleep(delay).await;
                        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from("ok"))))
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        port
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn sends_on_schedule_and_counts_every_request() {
        let port = server(Duration::ZERO).await;
        let schedule = Schedule {
            rate: 1000.0,
            duration: Duration::from_millis(500),
            connections: 4,
        };
        let start = Instant::now();
        let outcome = run(port, "/", schedule).await.unwrap();
        assert_eq!(outcome.scheduled, 500);
        assert_eq!(outcome.answered, 500);
        assert!(outcome.clean());
        // Sent over half a second, not at once.
        assert!(start.elapsed() >= Duration::from_millis(480));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waiting_for_a_busy_connection_counts_as_latency() {
        // One connection, answers after 20 ms, a request due every 10 ms: the queue grows by
        // one request every 20 ms, so the last of 20 has waited about 200 ms.
        let port = server(Duration::from_millis(20)).await;
        let schedule = Schedule {
            rate: 100.0,
            duration: Duration::from_millis(200),
            connections: 1,
        };
        let outcome = run(port, "/", schedule).await.unwrap();
        assert_eq!(outcome.answered, 20);
        assert!(outcome.ms(1.0) >= 180.0, "max {} ms", outcome.ms(1.0));
        assert!(outcome.ms(0.0) >= 19.0, "min {} ms", outcome.ms(0.0));
    }
}
