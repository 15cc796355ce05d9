//! `reject: delay`: requests over the rate are held and released one per interval, in arrival
//! order per key; those that would wait longer than `max_delay` get 429 at once; one busy key
//! holds up no other. Paused tokio time: the runtime jumps from timer to timer.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use http::StatusCode;
use proxflow_core::Clock;
use proxflow_ratelimit::{Algorithm, Key, RateLimitLayer, RateLimited, Reject, Stats};
use tokio::time::{advance, Instant};

const MS: Duration = Duration::from_millis(1);

/// One finished request: which, its status, when (ms after the start), its place in the order
/// of completion.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Done {
    index: usize,
    status: u16,
    at_ms: u128,
    retry_after: Option<String>,
}

/// Sends the requests made by `peers` in that order (each reaches the limiter before the next
/// one is made), lets the held ones finish, and returns them in the order they completed.
async fn run(app: &axum::Router, peers: &[&str]) -> Vec<Done> {
    let start = Instant::now();
    let finished: Arc<Mutex<Vec<Done>>> = Arc::default();
    let mut tasks = Vec::new();
    for (index, peer) in peers.iter().enumerate() {
        let mut request = Box::pin(send(app, from(peer)));
        // One poll takes the request through the limiter: it is decided (and its slot reserved)
        // now, in this order.
        match poll_once(&mut request).await {
            Some(response) => finished.lock().unwrap().push(Done {
                index,
                status: response.status().as_u16(),
                at_ms: start.elapsed().as_millis(),
                retry_after: header(&response, "retry-after").map(str::to_owned),
            }),
            None => {
                let finished = Arc::clone(&finished);
                tasks.push(tokio::spawn(async move {
                    let response = request.await;
                    finished.lock().unwrap().push(Done {
                        index,
                        status: response.status().as_u16(),
                        at_ms: start.elapsed().as_millis(),
                        retry_after: header(&response, "retry-after").map(str::to_owned),
                    });
                }));
            }
        }
    }
    for task in tasks {
        task.await.unwrap();
    }
    Arc::try_unwrap(finished).unwrap().into_inner().unwrap()
}

fn delaying(algorithm: Algorithm, burst: u32, max_delay: Duration) -> (axum::Router, Stats) {
    let layer = RateLimitLayer::new(10, Duration::from_secs(1))
        .clock(Clock::tokio())
        .algorithm(algorithm)
        .burst(burst)
        .reject(Reject::Delay)
        .max_delay(max_delay)
        .mark_refusals(true);
    let stats = layer.stats();
    (app(layer), stats)
}

fn held_ones(done: &[Done]) -> Vec<(usize, u128)> {
    done.iter()
        .filter(|d| d.status == 200 && d.at_ms > 0)
        .map(|d| (d.index, d.at_ms))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn held_requests_leave_in_arrival_order_one_per_interval() {
    let (app, stats) = delaying(Algorithm::TokenBucket, 1, Duration::from_secs(1));
    let done = run(&app, &["192.0.2.1"; 15]).await;

    // The first goes at once; the next ten wait 100 ms, 200 ms, ... 1000 ms (= max_delay).
    let held = held_ones(&done);
    let expected: Vec<(usize, u128)> = (1..=10).map(|i| (i, 100 * i as u128)).collect();
    assert_eq!(held, expected, "completion order and times");
    let first = done.iter().find(|d| d.index == 0).unwrap();
    assert_eq!((first.status, first.at_ms), (200, 0));
    // The last four would have waited 1.1 s or more: 429 at once, with Retry-After.
    let refused: Vec<_> = done.iter().filter(|d| d.status == 429).collect();
    assert_eq!(
        refused.iter().map(|d| d.index).collect::<Vec<_>>(),
        [11, 12, 13, 14]
    );
    assert!(
        refused.iter().all(|d| d.at_ms == 0),
        "refused without waiting"
    );
    assert!(refused
        .iter()
        .all(|d| d.retry_after.as_deref().unwrap().parse::<u64>().unwrap() >= 1));

    let snapshot = stats.snapshot();
    assert_eq!(
        (snapshot.allowed, snapshot.delayed, snapshot.limited),
        (1, 10, 4)
    );
}

#[tokio::test(start_paused = true)]
async fn a_request_over_max_delay_gets_429_with_how_long_to_wait() {
    let (app, _) = delaying(Algorithm::TokenBucket, 1, 250 * MS);
    let start = Instant::now();
    let mut statuses = Vec::new();
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut request = Box::pin(send(&app, from("192.0.2.1")));
        match poll_once(&mut request).await {
            Some(response) => statuses.push(Some(response.status().as_u16())),
            None => {
                statuses.push(None);
                held.push(request);
            }
        }
    }
    assert_eq!(statuses, [Some(200), None, None], "0 ms, 100 ms and 200 ms");
    // The fourth would wait 300 ms: 50 ms too long.
    let refused = send(&app, from("192.0.2.1")).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&refused, "retry-after"), Some("1"));
    let limited = refused.extensions().get::<RateLimited>().copied();
    assert_eq!(
        limited.map(|l| l.retry_after),
        Some(50 * MS),
        "retried 50 ms later, it would wait exactly max_delay"
    );
    advance(50 * MS).await;
    let mut retried = Box::pin(send(&app, from("192.0.2.1")));
    assert!(poll_once(&mut retried).await.is_none(), "held, not refused");
    assert_eq!(retried.await.status(), StatusCode::OK);
    assert_eq!(
        start.elapsed(),
        300 * MS,
        "it took the slot after the three"
    );
    for request in held {
        assert_eq!(request.await.status(), StatusCode::OK);
    }
}

#[tokio::test(start_paused = true)]
async fn a_held_request_is_not_released_before_its_turn() {
    let (app, _) = delaying(Algorithm::TokenBucket, 1, Duration::from_secs(1));
    assert_eq!(status(&app, from("192.0.2.1")).await, StatusCode::OK);
    let mut second = Box::pin(send(&app, from("192.0.2.1")));
    let mut third = Box::pin(send(&app, from("192.0.2.1")));
    assert!(poll_once(&mut second).await.is_none());
    assert!(poll_once(&mut third).await.is_none());
    advance(99 * MS).await;
    assert!(poll_once(&mut second).await.is_none(), "99 ms: still held");
    advance(MS).await;
    let response = poll_once(&mut second).await.expect("100 ms: released");
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        header(&response, "ratelimit-policy"),
        Some("\"default\";q=10;w=1")
    );
    assert!(
        poll_once(&mut third).await.is_none(),
        "the third waits 100 ms more"
    );
    advance(100 * MS).await;
    assert!(poll_once(&mut third).await.is_some());
}

#[tokio::test(start_paused = true)]
async fn other_keys_are_not_delayed_by_a_busy_key() {
    let (app, _) = delaying(Algorithm::TokenBucket, 1, Duration::from_secs(1));
    // A fills its line; B, C and D arrive in the middle of it.
    let peers = [
        "192.0.2.1",
        "192.0.2.1",
        "192.0.2.1",
        "192.0.2.2",
        "192.0.2.1",
        "192.0.2.3",
        "192.0.2.3",
        "192.0.2.1",
        "[2001:db8::1]:1",
    ];
    let done = run(&app, &peers).await;
    let by_index = |i: usize| done.iter().find(|d| d.index == i).unwrap().clone();
    for fresh in [3, 5, 8] {
        let d = by_index(fresh);
        assert_eq!(
            (d.status, d.at_ms),
            (200, 0),
            "request {fresh} of another key"
        );
    }
    // A's line: 0 now, then 1, 2, 4, 7 at 100 ms spacing. C's second waits one interval of
    // its own, not behind A.
    assert_eq!(by_index(6).at_ms, 100);
    let a: Vec<_> = [0, 1, 2, 4, 7].map(|i| by_index(i).at_ms).to_vec();
    assert_eq!(a, [0, 100, 200, 300, 400]);
    // Completion order among A's requests is their arrival order.
    let order: Vec<usize> = done
        .iter()
        .filter(|d| peers[d.index] == "192.0.2.1")
        .map(|d| d.index)
        .collect();
    assert_eq!(order, [0, 1, 2, 4, 7]);
}

#[tokio::test(start_paused = true)]
async fn the_line_empties_and_later_requests_pass_at_once() {
    let (app, stats) = delaying(Algorithm::TokenBucket, 2, Duration::from_secs(1));
    let done = run(&app, &["192.0.2.1"; 6]).await;
    // Burst 2 at once, then 100, 200, 300, 400 ms.
    let times: Vec<_> = done.iter().map(|d| (d.index, d.at_ms)).collect();
    assert_eq!(
        times,
        [(0, 0), (1, 0), (2, 100), (3, 200), (4, 300), (5, 400)]
    );
    // The burst is back 200 ms after the last slot.
    advance(200 * MS).await;
    let done = run(&app, &["192.0.2.1"; 3]).await;
    let times: Vec<_> = done.iter().map(|d| (d.index, d.at_ms)).collect();
    assert_eq!(times, [(0, 0), (1, 0), (2, 100)]);
    assert_eq!(stats.snapshot().limited, 0);
}

#[tokio::test(start_paused = true)]
async fn leaky_bucket_delays_up_to_max_delay_too() {
    // Burst 2 alone would queue 200 ms; max_delay 500 ms lets five wait.
    let (app, stats) = delaying(Algorithm::LeakyBucket, 2, 500 * MS);
    let done = run(&app, &["192.0.2.1"; 8]).await;
    let held = held_ones(&done);
    assert_eq!(held, [(1, 100), (2, 200), (3, 300), (4, 400), (5, 500)]);
    let refused: Vec<_> = done
        .iter()
        .filter(|d| d.status == 429)
        .map(|d| (d.index, d.at_ms))
        .collect();
    assert_eq!(refused, [(6, 0), (7, 0)]);
    let snapshot = stats.snapshot();
    assert_eq!(
        (snapshot.allowed, snapshot.delayed, snapshot.limited),
        (1, 5, 2)
    );
}

#[tokio::test(start_paused = true)]
async fn leaky_bucket_holds_its_whole_line_when_longer_than_max_delay() {
    // Burst 5 queues 500 ms: `delay` with max_delay 100 ms refuses none the line would hold.
    let (app, stats) = delaying(Algorithm::LeakyBucket, 5, 100 * MS);
    let done = run(&app, &["192.0.2.1"; 7]).await;
    let held = held_ones(&done);
    assert_eq!(held, [(1, 100), (2, 200), (3, 300), (4, 400), (5, 500)]);
    let snapshot = stats.snapshot();
    assert_eq!(
        (snapshot.allowed, snapshot.delayed, snapshot.limited),
        (1, 5, 1)
    );
}

#[tokio::test(start_paused = true)]
async fn sliding_windows_answer_429_instead_of_holding_as_documented() {
    // `Reject::Delay`'s documentation: the sliding windows cannot reserve a slot and answer 429.
    for algorithm in [Algorithm::SlidingWindow, Algorithm::SlidingWindowApprox] {
        let (app, stats) = delaying(algorithm, 1, Duration::from_secs(5));
        let done = run(&app, &["192.0.2.1"; 12]).await;
        assert!(
            done.iter().all(|d| d.at_ms == 0),
            "{algorithm:?}: nothing held"
        );
        assert_eq!(
            ok_count(&done.iter().map(|d| d.status).collect::<Vec<_>>()),
            10
        );
        let snapshot = stats.snapshot();
        assert_eq!(
            (snapshot.delayed, snapshot.limited),
            (0, 2),
            "{algorithm:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn global_key_delays_everyone_in_one_line() {
    let layer = RateLimitLayer::new(10, Duration::from_secs(1))
        .clock(Clock::tokio())
        .burst(1)
        .key(Key::Global)
        .reject(Reject::Delay)
        .max_delay(Duration::from_secs(1));
    let app = app(layer);
    let done = run(&app, &["192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4"]).await;
    let times: Vec<_> = done.iter().map(|d| (d.index, d.at_ms)).collect();
    assert_eq!(times, [(0, 0), (1, 100), (2, 200), (3, 300)]);
}

#[tokio::test(start_paused = true)]
async fn shadow_mode_never_holds_a_request_it_would_delay() {
    let layer = RateLimitLayer::new(1, Duration::from_secs(1))
        .clock(Clock::tokio())
        .burst(1)
        .reject(Reject::Delay)
        .max_delay(Duration::from_secs(2))
        .shadow(true);
    let stats = layer.stats();
    let app = app(layer);
    // Limited, the second and third would wait 1 s and 2 s and the fourth get 429.
    let done = run(&app, &["192.0.2.1"; 4]).await;
    let times: Vec<_> = done.iter().map(|d| (d.index, d.status, d.at_ms)).collect();
    assert_eq!(times, [(0, 200, 0), (1, 200, 0), (2, 200, 0), (3, 200, 0)]);
    let snapshot = stats.snapshot();
    assert_eq!(
        (snapshot.allowed, snapshot.shadow_limited, snapshot.delayed),
        (1, 3, 0)
    );
}
