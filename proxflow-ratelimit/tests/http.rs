//! The layer through a real axum `Router`: status codes, the `RateLimit` header fields, each
//! algorithm, shadow mode, missing keys, quota tiers and every kind of key. Time is tokio's
//! paused clock throughout.

mod common;

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::routing::get;
use common::*;
use http::{Request, StatusCode};
use proxflow_core::Clock;
use proxflow_ratelimit::{
    Algorithm, Key, LimitHeaders, MissingKey, Quota, RateLimitConfig, RateLimitLayer, RateLimited,
    RequestView, UserId,
};
use tokio::time::advance;
use tower::{Layer, Service, ServiceExt};

const MS: Duration = Duration::from_millis(1);

fn assert_fields(response: &http::Response<Body>, policy: &str, limit: &str) {
    assert_eq!(
        header(response, "ratelimit-policy"),
        Some(policy),
        "RateLimit-Policy"
    );
    assert_eq!(header(response, "ratelimit"), Some(limit), "RateLimit");
}

#[tokio::test(start_paused = true)]
async fn allowed_and_limited_responses_carry_the_ietf_fields() {
    // 60 per minute, burst 10: one token per second.
    let layer = RateLimitLayer::new(60, Duration::from_secs(60))
        .clock(Clock::tokio())
        .burst(10)
        .mark_refusals(true);
    let app = app(layer);
    for k in 1..=10u32 {
        let response = send(&app, from("198.51.100.7")).await;
        assert_eq!(response.status(), StatusCode::OK, "request {k}");
        // `r`: what is left of the burst; `t`: seconds until the bucket is full again.
        assert_fields(
            &response,
            "\"default\";q=60;w=60",
            &format!("\"default\";r={};t={k}", 10 - k),
        );
        assert_eq!(header(&response, "retry-after"), None);
        assert_eq!(body_text(response).await, "hello");
    }
    let response = send(&app, from("198.51.100.7")).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&response, "retry-after"), Some("1"));
    // On a refusal `t` is the time until the next request is admitted, as `Retry-After` says: the
    // draft's effective window, within which the client can use no more than `r=0`.
    assert_fields(&response, "\"default\";q=60;w=60", "\"default\";r=0;t=1");
    // Outer layers and logs get the same facts as data.
    assert_eq!(
        response.extensions().get::<RateLimited>(),
        Some(&RateLimited {
            retry_after: Duration::from_secs(1),
            rate: 60,
            per: Duration::from_secs(60),
        })
    );
    assert_eq!(
        header(&response, "content-type"),
        Some("text/plain; charset=utf-8")
    );
    for legacy in [
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
    ] {
        assert_eq!(
            header(&response, legacy),
            None,
            "{legacy} is off by default"
        );
    }
    assert_eq!(body_text(response).await, "too many requests\n");
}

#[tokio::test(start_paused = true)]
async fn refusals_carry_their_own_fields_and_none_of_the_request() {
    // Exactly the refusal's own fields (and axum's `content-length`): nothing of the request,
    // whose credentials a client must not see echoed.
    let app = app(RateLimitLayer::new(1, Duration::from_secs(1))
        .clock(Clock::tokio())
        .burst(1));
    let secret = [
        ("authorization", "Bearer secret"),
        ("cookie", "session=secret"),
        ("x-custom", "echo"),
    ];
    assert_eq!(status(&app, from("192.0.2.1")).await, StatusCode::OK);
    let limited = send(&app, from_with("192.0.2.1", &secret)).await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    let mut names: Vec<&str> = limited.headers().keys().map(|n| n.as_str()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "content-length",
            "content-type",
            "ratelimit",
            "ratelimit-policy",
            "retry-after"
        ]
    );
    // A 400 for a missing key, the other answer the layer makes itself.
    let app = common::app(by_user(MissingKey::Reject));
    let refused = send(&app, from_with("192.0.2.1", &secret)).await;
    assert_eq!(refused.status(), StatusCode::BAD_REQUEST);
    let mut names: Vec<&str> = refused.headers().keys().map(|n| n.as_str()).collect();
    names.sort_unstable();
    assert_eq!(names, ["content-length", "content-type"]);
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_whole_seconds_rounded_up_and_at_least_one() {
    let app = app(RateLimitLayer::new(1, Duration::from_secs(90))
        .clock(Clock::tokio())
        .burst(1));
    assert_eq!(status(&app, from("192.0.2.1")).await, StatusCode::OK);
    let limited = send(&app, from("192.0.2.1")).await;
    assert_eq!(header(&limited, "retry-after"), Some("90"));
    assert_eq!(
        limited.extensions().get::<RateLimited>(),
        None,
        "marked only with mark_refusals"
    );

    advance(Duration::from_millis(89_500)).await;
    let limited = send(&app, from("192.0.2.1")).await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        header(&limited, "retry-after"),
        Some("1"),
        "0.5 s rounds up"
    );
    advance(Duration::from_millis(500)).await;
    assert_eq!(
        status(&app, from("192.0.2.1")).await,
        StatusCode::OK,
        "admitted exactly when Retry-After said"
    );

    // Sub-second intervals still say at least 1.
    let fast = common::app(
        RateLimitLayer::new(1000, Duration::from_secs(1))
            .clock(Clock::tokio())
            .burst(1),
    );
    assert_eq!(status(&fast, from("192.0.2.1")).await, StatusCode::OK);
    let limited = send(&fast, from("192.0.2.1")).await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&limited, "retry-after"), Some("1"));
}

#[tokio::test(start_paused = true)]
async fn limit_fields_on_limited_answers_only_or_never() {
    for (headers, on_limited) in [(LimitHeaders::Limited, true), (LimitHeaders::Never, false)] {
        let app = app(RateLimitLayer::new(10, Duration::from_secs(1))
            .clock(Clock::tokio())
            .burst(1)
            .legacy_headers(true)
            .headers(headers));
        let allowed = send(&app, from("192.0.2.10")).await;
        assert_eq!(allowed.status(), StatusCode::OK);
        for name in ["ratelimit-policy", "ratelimit", "x-ratelimit-remaining"] {
            assert_eq!(header(&allowed, name), None, "{headers:?}: {name}");
        }
        let limited = send(&app, from("192.0.2.10")).await;
        assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(header(&limited, "retry-after"), Some("1"), "{headers:?}");
        assert_eq!(
            header(&limited, "ratelimit").is_some(),
            on_limited,
            "{headers:?}"
        );
        assert_eq!(
            header(&limited, "x-ratelimit-remaining").is_some(),
            on_limited,
            "{headers:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_period_shorter_than_a_second_is_advertised_per_second() {
    // 1 per 100 ms: 10 a second are admitted, and the policy says so.
    let app = app(RateLimitLayer::new(1, 100 * MS)
        .clock(Clock::tokio())
        .burst(1));
    let mut admitted = 0;
    let mut policy = String::new();
    for _ in 0..10 {
        let response = send(&app, from("192.0.2.1")).await;
        admitted += usize::from(response.status() == StatusCode::OK);
        policy = header(&response, "ratelimit-policy").unwrap().to_owned();
        advance(100 * MS).await;
    }
    assert_eq!(admitted, 10);
    assert_eq!(policy, "\"default\";q=10;w=1");
}

#[tokio::test(start_paused = true)]
async fn the_inner_services_limit_fields_are_kept_beside_the_layers() {
    let layer = RateLimitLayer::new(10, Duration::from_secs(1))
        .clock(Clock::tokio())
        .legacy_headers(true);
    let app = axum::Router::new()
        .route(
            "/",
            get(|| async {
                (
                    [
                        ("ratelimit-policy", "\"upstream\";q=100;w=60"),
                        ("ratelimit", "\"upstream\";r=3;t=7"),
                        ("x-ratelimit-limit", "100"),
                    ],
                    "hello",
                )
            }),
        )
        .layer(layer);
    let response = send(&app, from("192.0.2.1")).await;
    let all = |name: &str| -> Vec<&str> {
        response
            .headers()
            .get_all(name)
            .iter()
            .map(|value| value.to_str().unwrap())
            .collect()
    };
    assert_eq!(
        all("ratelimit-policy"),
        ["\"upstream\";q=100;w=60", "\"default\";q=10;w=1"]
    );
    assert_eq!(
        all("ratelimit"),
        ["\"upstream\";r=3;t=7", "\"default\";r=4;t=1"]
    );
    // Not a list: the layer's value replaces the inner one.
    assert_eq!(all("x-ratelimit-limit"), ["10"]);
}

#[tokio::test(start_paused = true)]
async fn legacy_headers_only_when_enabled() {
    let app = app(RateLimitLayer::new(10, Duration::from_secs(1))
        .clock(Clock::tokio())
        .burst(2)
        .legacy_headers(true));
    let first = send(&app, from("192.0.2.9")).await;
    assert_eq!(first.status(), StatusCode::OK);
    assert_eq!(header(&first, "x-ratelimit-limit"), Some("10"));
    assert_eq!(header(&first, "x-ratelimit-remaining"), Some("1"));
    assert_eq!(header(&first, "x-ratelimit-reset"), Some("1"));
    assert_fields(&first, "\"default\";q=10;w=1", "\"default\";r=1;t=1");
    send(&app, from("192.0.2.9")).await;
    let limited = send(&app, from("192.0.2.9")).await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(header(&limited, "x-ratelimit-limit"), Some("10"));
    assert_eq!(header(&limited, "x-ratelimit-remaining"), Some("0"));
    assert_eq!(header(&limited, "x-ratelimit-reset"), Some("1"));
}

#[tokio::test(start_paused = true)]
async fn policy_name_comes_from_the_config() {
    let config: RateLimitConfig =
        serde_json::from_str(r#"{"rate": 5, "per": "10s", "burst": 1, "policy_name": "api.v1"}"#)
            .unwrap();
    let app = app(RateLimitLayer::from_config(&config)
        .unwrap()
        .clock(Clock::tokio()));
    let response = send(&app, from("192.0.2.9")).await;
    assert_fields(&response, "\"api.v1\";q=5;w=10", "\"api.v1\";r=0;t=2");
}

#[tokio::test(start_paused = true)]
async fn token_bucket_admits_the_burst_then_one_per_interval() {
    let layer = RateLimitLayer::new(10, Duration::from_secs(1))
        .clock(Clock::tokio())
        .burst(5)
        .algorithm(Algorithm::TokenBucket);
    let stats = layer.stats();
    let app = app(layer);
    let client = || from("203.0.113.5");

    assert_eq!(
        statuses(&app, 8, client).await,
        [200, 200, 200, 200, 200, 429, 429, 429]
    );
    advance(100 * MS).await;
    assert_eq!(
        statuses(&app, 2, client).await,
        [200, 429],
        "one token back"
    );
    advance(99 * MS).await;
    assert_eq!(statuses(&app, 1, client).await, [429], "not yet");
    advance(MS).await;
    assert_eq!(statuses(&app, 2, client).await, [200, 429]);
    // A long pause refills the bucket to `burst`, not more.
    advance(Duration::from_secs(10)).await;
    assert_eq!(
        statuses(&app, 7, client).await,
        [200, 200, 200, 200, 200, 429, 429]
    );
    // Another client is untouched.
    assert_eq!(status(&app, from("203.0.113.6")).await, StatusCode::OK);

    let snapshot = stats.snapshot();
    assert_eq!(snapshot.allowed, 5 + 1 + 1 + 5 + 1);
    assert_eq!(snapshot.limited, 3 + 1 + 1 + 1 + 2);
    assert_eq!(snapshot.delayed, 0);
    assert_eq!(snapshot.active_keys, 2);
}

#[tokio::test(start_paused = true)]
async fn leaky_bucket_holds_queued_requests_until_their_turn() {
    // nginx `limit_req rate=10r/s burst=3` without nodelay: one goes now, three wait 100, 200
    // and 300 ms, the fifth is refused.
    let layer = RateLimitLayer::new(10, Duration::from_secs(1))
        .clock(Clock::tokio())
        .burst(3)
        .algorithm(Algorithm::LeakyBucket);
    let stats = layer.stats();
    let app = app(layer);
    let mut requests: Vec<_> = (0..5)
        .map(|_| Box::pin(send(&app, from("203.0.113.9"))))
        .collect();
    let mut done = Vec::new();
    for request in &mut requests {
        done.push(poll_once(request).await.map(|r| r.status().as_u16()));
    }
    assert_eq!(done, [Some(200), None, None, None, Some(429)]);
    assert_eq!(stats.snapshot().delayed, 3);

    let mut held: Vec<_> = requests.drain(1..4).collect();
    for i in 0..held.len() {
        advance(99 * MS).await;
        assert!(
            poll_once(&mut held[i]).await.is_none(),
            "request {} left before its turn",
            i + 1
        );
        advance(MS).await;
        let response = poll_once(&mut held[i]).await.expect("released on its turn");
        assert_eq!(response.status(), StatusCode::OK);
        // A held request carries the fields too.
        assert_eq!(
            header(&response, "ratelimit-policy"),
            Some("\"default\";q=10;w=1")
        );
        assert!(header(&response, "ratelimit").is_some());
        for later in &mut held[i + 1..] {
            assert!(poll_once(later).await.is_none(), "released out of turn");
        }
    }
    let snapshot = stats.snapshot();
    assert_eq!(
        (snapshot.allowed, snapshot.delayed, snapshot.limited),
        (1, 3, 1)
    );
}

#[tokio::test(start_paused = true)]
async fn leaky_bucket_output_is_one_per_interval() {
    let layer = RateLimitLayer::new(10, Duration::from_secs(1))
        .clock(Clock::tokio())
        .burst(3)
        .algorithm(Algorithm::LeakyBucket);
    let app = app(layer);
    let start = tokio::time::Instant::now();
    let mut handles = Vec::new();
    for _ in 0..4 {
        let app = app.clone();
        handles.push(tokio::spawn(async move {
            let status = send(&app, from("203.0.113.10")).await.status();
            (status, start.elapsed())
        }));
        tokio::task::yield_now().await;
    }
    let mut finished = Vec::new();
    for handle in handles {
        finished.push(handle.await.unwrap());
    }
    let times: Vec<_> = finished.iter().map(|(_, at)| at.as_millis()).collect();
    assert!(finished.iter().all(|(s, _)| *s == StatusCode::OK));
    assert_eq!(times, [0, 100, 200, 300]);
}

/// Sends `n` requests at the current time; how many were admitted.
async fn admitted_now(app: &axum::Router, n: usize) -> usize {
    ok_count(&statuses(app, n, || from("198.51.100.20")).await)
}

// The window tests start with one request at time zero: that is when the limiter's clock and
// the approximation's fixed windows start, whether the limiter was built at that moment or on
// its first request.

#[tokio::test(start_paused = true)]
async fn sliding_window_exact_counts_every_window() {
    let app = app(RateLimitLayer::new(4, Duration::from_secs(1))
        .clock(Clock::tokio())
        .algorithm(Algorithm::SlidingWindow));
    assert_eq!(admitted_now(&app, 1).await, 1, "at 0 s");
    advance(900 * MS).await;
    assert_eq!(admitted_now(&app, 5).await, 3, "at 0.9 s");
    advance(100 * MS).await;
    assert_eq!(
        admitted_now(&app, 3).await,
        1,
        "at 1 s the first one left the window"
    );
    advance(500 * MS).await;
    let response = send(&app, from("198.51.100.20")).await;
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS, "at 1.5 s");
    // The three of 0.9 s leave the window at 1.9 s.
    assert_eq!(header(&response, "retry-after"), Some("1"));
    assert_eq!(header(&response, "ratelimit"), Some("\"default\";r=0;t=1"));
    advance(399 * MS).await;
    assert_eq!(admitted_now(&app, 1).await, 0, "at 1.899 s");
    advance(MS).await;
    assert_eq!(admitted_now(&app, 5).await, 3, "at 1.9 s");
}

#[tokio::test(start_paused = true)]
async fn sliding_window_approx_weighs_the_previous_window() {
    let app = app(RateLimitLayer::new(4, Duration::from_secs(1))
        .clock(Clock::tokio())
        .algorithm(Algorithm::SlidingWindowApprox));
    assert_eq!(admitted_now(&app, 1).await, 1, "at 0 s");
    advance(900 * MS).await;
    assert_eq!(admitted_now(&app, 5).await, 3, "at 0.9 s");
    advance(100 * MS).await;
    // The previous fixed window's 4 all count at its end: where the exact log admits one.
    assert_eq!(admitted_now(&app, 3).await, 0, "at 1 s");
    advance(500 * MS).await;
    // Half of the previous window's 4 still counts: 2 + 0 and 2 + 1 are admitted, 2 + 2 is not.
    assert_eq!(admitted_now(&app, 5).await, 2, "at 1.5 s");
    advance(400 * MS).await;
    // 0.4 + 2 and 0.4 + 3 are under 4; 0.4 + 4 is not.
    assert_eq!(admitted_now(&app, 5).await, 2, "at 1.9 s");
}

#[tokio::test(start_paused = true)]
async fn approx_never_admits_more_than_twice_the_rate_in_a_window() {
    // The worst case: the previous window's requests all at its very end.
    let app = app(RateLimitLayer::new(5, Duration::from_secs(1))
        .clock(Clock::tokio())
        .algorithm(Algorithm::SlidingWindowApprox));
    assert_eq!(admitted_now(&app, 1).await, 1);
    advance(998 * MS).await;
    let mut admitted = admitted_now(&app, 10).await;
    assert_eq!(admitted, 4);
    for _ in 0..999 {
        advance(MS).await;
        admitted += admitted_now(&app, 3).await;
    }
    // Requests from 0.998 s to 1.997 s lie in one window of length 1 s.
    assert!(admitted <= 10, "{admitted} in one window of 1 s, rate 5");
    assert!(
        admitted > 5,
        "the approximation did overshoot here: {admitted}"
    );
}

#[tokio::test(start_paused = true)]
async fn shadow_mode_lets_everything_pass_and_counts() {
    let layer = RateLimitLayer::new(10, Duration::from_secs(1))
        .clock(Clock::tokio())
        .burst(2)
        .shadow(true);
    let stats = layer.stats();
    let app = app(layer);
    let all = statuses(&app, 10, || from("192.0.2.50")).await;
    assert_eq!(all, [200; 10]);
    let last = send(&app, from("192.0.2.50")).await;
    assert_eq!(last.status(), StatusCode::OK);
    assert_eq!(header(&last, "ratelimit"), Some("\"default\";r=0;t=1"));
    assert_eq!(header(&last, "retry-after"), None);
    let snapshot = stats.snapshot();
    assert_eq!(snapshot.allowed, 2);
    assert_eq!(snapshot.shadow_limited, 9);
    assert_eq!(snapshot.limited, 0);
}

#[tokio::test(start_paused = true)]
async fn shadow_mode_never_holds_a_leaky_bucket_request() {
    let layer = RateLimitLayer::new(1, Duration::from_secs(1))
        .clock(Clock::tokio())
        .algorithm(Algorithm::LeakyBucket)
        .burst(2)
        .shadow(true);
    let stats = layer.stats();
    let app = app(layer);
    // Limited, the second and third would wait in line and the fourth get 429.
    for i in 0..4 {
        let mut request = Box::pin(send(&app, from("192.0.2.51")));
        let response = poll_once(&mut request).await;
        assert_eq!(
            response.map(|r| r.status()),
            Some(StatusCode::OK),
            "request {i} was held"
        );
    }
    let snapshot = stats.snapshot();
    assert_eq!(
        (snapshot.allowed, snapshot.shadow_limited, snapshot.delayed),
        (1, 3, 0)
    );
}

fn by_user(missing: MissingKey) -> RateLimitLayer {
    RateLimitLayer::new(1, Duration::from_secs(3600))
        .clock(Clock::tokio())
        .burst(2)
        .key(Key::User)
        .missing_key(missing)
}

fn with_user(peer: &str, user: &str) -> Request<Body> {
    let mut request = from(peer);
    request.extensions_mut().insert(UserId(user.into()));
    request
}

#[tokio::test(start_paused = true)]
async fn missing_key_shares_one_bucket_by_default() {
    let layer = by_user(MissingKey::Shared);
    let stats = layer.stats();
    let app = app(layer);
    // Anonymous requests from three addresses share one bucket of 2.
    assert_eq!(status(&app, from("192.0.2.1")).await, StatusCode::OK);
    assert_eq!(status(&app, from("192.0.2.2")).await, StatusCode::OK);
    assert_eq!(
        status(&app, from("192.0.2.3")).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    // A user is not in that bucket.
    assert_eq!(
        status(&app, with_user("192.0.2.3", "alice")).await,
        StatusCode::OK
    );
    assert_eq!(stats.snapshot().missing_key, 3);
    // The default is `shared`.
    assert_eq!(RateLimitConfig::default().missing_key, MissingKey::Shared);
}

#[tokio::test(start_paused = true)]
async fn missing_key_can_be_refused_with_400() {
    let layer = by_user(MissingKey::Reject);
    let stats = layer.stats();
    let app = app(layer);
    let response = send(&app, from("192.0.2.1")).await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(body_text(response).await, "missing rate limit key\n");
    assert_eq!(
        status(&app, with_user("192.0.2.1", "alice")).await,
        StatusCode::OK
    );
    let snapshot = stats.snapshot();
    assert_eq!((snapshot.missing_key, snapshot.allowed), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn missing_key_can_pass_unlimited() {
    let layer = by_user(MissingKey::Allow);
    let stats = layer.stats();
    let app = app(layer);
    let response = send(&app, from("192.0.2.1")).await;
    assert_eq!(header(&response, "ratelimit"), None, "no limit applies");
    assert_eq!(statuses(&app, 20, || from("192.0.2.1")).await, [200; 20]);
    assert_eq!(stats.snapshot().missing_key, 21);
    // Users are still limited.
    let alice = statuses(&app, 3, || with_user("192.0.2.1", "alice")).await;
    assert_eq!(alice, [200, 200, 429]);
}

#[tokio::test(start_paused = true)]
async fn ip_key_without_a_peer_address_is_a_missing_key() {
    let layer = RateLimitLayer::new(1, Duration::from_secs(3600))
        .clock(Clock::tokio())
        .burst(1)
        .missing_key(MissingKey::Reject);
    let app = app(layer);
    let bare = Request::new(Body::empty());
    assert_eq!(status(&app, bare).await, StatusCode::BAD_REQUEST);
}

#[tokio::test(start_paused = true)]
async fn quota_resolver_gives_tiers_their_own_quota() {
    let layer = RateLimitLayer::new(10, Duration::from_secs(1))
        .clock(Clock::tokio())
        .burst(5)
        .quota_resolver(|request: &RequestView<'_>| {
            (request.headers.get("x-tier")? == "gold").then_some(Quota {
                rate: 100,
                per: Duration::from_secs(1),
                burst: 20,
            })
        });
    let stats = layer.stats();
    let app = app(layer);
    let gold = || from_with("192.0.2.1", &[("x-tier", "gold")]);
    let silver = || from_with("192.0.2.2", &[("x-tier", "silver")]);
    let plain = || from("192.0.2.3");

    let gold_statuses = statuses(&app, 22, gold).await;
    assert_eq!(ok_count(&gold_statuses), 20);
    assert_eq!(&gold_statuses[20..], [429, 429]);
    assert_eq!(ok_count(&statuses(&app, 8, silver).await), 5);
    assert_eq!(ok_count(&statuses(&app, 8, plain).await), 5);

    let gold = send(&app, gold()).await;
    assert_eq!(
        header(&gold, "ratelimit-policy"),
        Some("\"default\";q=100;w=1")
    );
    let silver = send(&app, silver()).await;
    assert_eq!(
        header(&silver, "ratelimit-policy"),
        Some("\"default\";q=10;w=1")
    );
    // Gold refills at 100 per second: 10 ms brings one back; silver needs 100 ms.
    advance(10 * MS).await;
    assert_eq!(statuses(&app, 2, gold_fn()).await, [200, 429]);
    assert_eq!(status(&app, from_with("192.0.2.2", &[])).await, 429);
    assert_eq!(stats.snapshot().active_keys, 3);
}

/// A resolved quota the algorithms cannot time (what `from_config` refuses) is not clamped into
/// another: the layer's own quota applies.
#[tokio::test(start_paused = true)]
async fn a_resolved_quota_of_rate_or_per_zero_falls_back_to_the_layers() {
    const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);
    for bad in [
        Quota {
            rate: 0,
            per: Duration::from_secs(1),
            burst: 3,
        },
        Quota {
            rate: 5,
            per: Duration::ZERO,
            burst: 3,
        },
        Quota {
            rate: 1,
            per: YEAR * 101,
            burst: 3,
        },
        Quota {
            rate: 1,
            per: YEAR,
            burst: 101,
        },
        Quota {
            rate: 1_000,
            per: Duration::from_nanos(999),
            burst: 3,
        },
    ] {
        let layer = RateLimitLayer::new(10, Duration::from_secs(1))
            .clock(Clock::tokio())
            .burst(2)
            .quota_resolver(move |_: &RequestView<'_>| Some(bad));
        let app = app(layer);
        let all = statuses(&app, 5, || from("192.0.2.1")).await;
        assert_eq!(all, [200, 200, 429, 429, 429], "{bad:?}");
        let refused = send(&app, from("192.0.2.1")).await;
        assert_eq!(
            header(&refused, "ratelimit-policy"),
            Some("\"default\";q=10;w=1"),
            "{bad:?}"
        );
    }
}

fn gold_fn() -> impl FnMut() -> Request<Body> {
    || from_with("192.0.2.1", &[("x-tier", "gold")])
}

#[tokio::test(start_paused = true)]
async fn custom_key_extractor_groups_requests() {
    let layer = RateLimitLayer::new(1, Duration::from_secs(3600))
        .clock(Clock::tokio())
        .burst(2)
        .key_extractor(|request: &RequestView<'_>| {
            let tenant = request.headers.get("x-tenant")?;
            Some(tenant.as_bytes().to_ascii_lowercase())
        })
        .missing_key(MissingKey::Reject);
    let app = app(layer);
    // One tenant over several addresses and spellings shares a bucket.
    assert_eq!(
        status(&app, from_with("192.0.2.1", &[("x-tenant", "acme")])).await,
        200
    );
    assert_eq!(
        status(&app, from_with("192.0.2.2", &[("x-tenant", "ACME")])).await,
        200
    );
    assert_eq!(
        status(&app, from_with("192.0.2.3", &[("x-tenant", "Acme")])).await,
        429
    );
    assert_eq!(
        status(&app, from_with("192.0.2.3", &[("x-tenant", "globex")])).await,
        200
    );
    assert_eq!(status(&app, from("192.0.2.3")).await, 400, "no tenant");
}

fn one_per_hour(key: Key) -> RateLimitLayer {
    RateLimitLayer::new(1, Duration::from_secs(3600))
        .clock(Clock::tokio())
        .burst(1)
        .key(key)
        .missing_key(MissingKey::Reject)
}

#[tokio::test(start_paused = true)]
async fn api_key_from_header_or_query() {
    let app = app(one_per_hour(Key::ApiKey));
    assert_eq!(
        status(&app, from_with("192.0.2.1", &[("x-api-key", "k-1")])).await,
        200
    );
    // The same key in the query string from elsewhere is the same bucket.
    assert_eq!(
        status(&app, with_query("192.0.2.2", "page=2&api_key=k-1")).await,
        429
    );
    assert_eq!(
        status(&app, with_query("192.0.2.2", "api_key=k-2")).await,
        200
    );
    assert_eq!(
        status(&app, from_with("192.0.2.1", &[("x-api-key", "k-2")])).await,
        429
    );
    assert_eq!(status(&app, with_query("192.0.2.2", "api_key=")).await, 400);
    assert_eq!(status(&app, with_query("192.0.2.2", "key=k-3")).await, 400);
    assert_eq!(
        status(&app, from_with("192.0.2.1", &[("x-api-key", "")])).await,
        400,
        "an empty key is no key"
    );
}

fn with_query(peer: &str, query: &str) -> Request<Body> {
    let mut request = from(peer);
    *request.uri_mut() = format!("/?{query}").parse().unwrap();
    request
}

/// Every spelling of one key in the query string is one bucket, the header's: a client cannot
/// get a fresh bucket by percent-encoding its key, nor hide it by encoding the name.
#[tokio::test(start_paused = true)]
async fn api_key_in_the_query_is_decoded_before_it_is_counted() {
    let app = app(one_per_hour(Key::ApiKey));
    assert_eq!(
        status(&app, with_query("192.0.2.1", "api_key=k1")).await,
        200
    );
    for query in [
        "api_key=k%31",
        "api_key=%6B1",
        "api_key=%6b%31",
        "x=&api_key=k1",
        "api%5Fkey=k1",
        "api%5fkey=%6B%31",
    ] {
        assert_eq!(
            status(&app, with_query("192.0.2.2", query)).await,
            429,
            "{query} is the key k1"
        );
    }
    assert_eq!(
        status(&app, from_with("192.0.2.2", &[("x-api-key", "k1")])).await,
        429
    );
    // `+` is a space, as in a form.
    assert_eq!(
        status(&app, with_query("192.0.2.1", "api_key=a+b")).await,
        200
    );
    assert_eq!(
        status(&app, with_query("192.0.2.2", "api_key=a%20b")).await,
        429
    );
    assert_eq!(
        status(&app, from_with("192.0.2.2", &[("x-api-key", "a b")])).await,
        429
    );
}

/// An empty header is no key: the query's key counts, so sending an empty header next to it
/// gains nothing.
#[tokio::test(start_paused = true)]
async fn an_empty_api_key_header_does_not_hide_the_query_key() {
    let app = app(one_per_hour(Key::ApiKey));
    assert_eq!(
        status(&app, with_query("192.0.2.1", "api_key=k1")).await,
        200
    );
    let mut request = with_query("192.0.2.2", "api_key=k1");
    request
        .headers_mut()
        .insert("x-api-key", http::HeaderValue::from_static(""));
    assert_eq!(status(&app, request).await, 429);
}

#[tokio::test(start_paused = true)]
async fn api_key_header_and_query_names_are_configurable() {
    let config: RateLimitConfig = serde_json::from_str(
        r#"{"rate": 1, "per": "1h", "burst": 1, "key": "api_key",
            "api_key_header": "authorization-key", "api_key_query": "token",
            "missing_key": "reject"}"#,
    )
    .unwrap();
    let app = app(RateLimitLayer::from_config(&config)
        .unwrap()
        .clock(Clock::tokio()));
    assert_eq!(
        status(&app, from_with("192.0.2.1", &[("authorization-key", "a")])).await,
        200
    );
    let mut by_query = from("192.0.2.2");
    *by_query.uri_mut() = "/?token=a".parse().unwrap();
    assert_eq!(status(&app, by_query).await, 429);
    assert_eq!(
        status(&app, from_with("192.0.2.1", &[("x-api-key", "b")])).await,
        400,
        "the default header is no longer read"
    );
}

#[tokio::test(start_paused = true)]
async fn user_from_the_extension_or_a_header() {
    let config: RateLimitConfig = serde_yaml::from_str(
        "rate: 1\nper: 1h\nburst: 1\nkey: user\nuser_header: x-user\nmissing_key: reject\n",
    )
    .unwrap();
    let app = app(RateLimitLayer::from_config(&config)
        .unwrap()
        .clock(Clock::tokio()));
    assert_eq!(status(&app, with_user("192.0.2.1", "alice")).await, 200);
    assert_eq!(
        status(&app, from_with("192.0.2.2", &[("x-user", "alice")])).await,
        429,
        "the header names the same user"
    );
    assert_eq!(
        status(&app, from_with("192.0.2.2", &[("x-user", "bob")])).await,
        200
    );
    assert_eq!(status(&app, with_user("192.0.2.1", "bob")).await, 429);
    assert_eq!(status(&app, from("192.0.2.1")).await, 400);

    // Without `user_header`, only the extension counts.
    let app = common::app(one_per_hour(Key::User));
    assert_eq!(
        status(&app, from_with("192.0.2.2", &[("x-user", "bob")])).await,
        400
    );
}

#[tokio::test(start_paused = true)]
async fn header_key() {
    let app = app(one_per_hour("header:X-Tenant".parse().unwrap()));
    assert_eq!(
        status(&app, from_with("192.0.2.1", &[("x-tenant", "acme")])).await,
        200
    );
    assert_eq!(
        status(&app, from_with("192.0.2.2", &[("x-tenant", "acme")])).await,
        429
    );
    assert_eq!(
        status(&app, from_with("192.0.2.2", &[("x-tenant", "globex")])).await,
        200
    );
    assert_eq!(status(&app, from("192.0.2.2")).await, 400);
}

/// A key given twice counts by its first value, in every header kind and in the query (the
/// documented rule: a backend reading another value needs a key extractor of its own).
#[tokio::test(start_paused = true)]
async fn a_repeated_key_counts_its_first_value() {
    let user = RateLimitLayer::new(1, Duration::from_secs(3600))
        .clock(Clock::tokio())
        .burst(1)
        .key(Key::User)
        .user_header(http::HeaderName::from_static("x-user"));
    for (layer, name) in [
        (
            one_per_hour(Key::Header(http::HeaderName::from_static("x-tenant"))),
            "x-tenant",
        ),
        (one_per_hour(Key::ApiKey), "x-api-key"),
        (user, "x-user"),
    ] {
        let app = app(layer);
        assert_eq!(
            status(&app, from_with("192.0.2.1", &[(name, "a"), (name, "b")])).await,
            200
        );
        assert_eq!(
            status(&app, from_with("192.0.2.2", &[(name, "a"), (name, "c")])).await,
            429,
            "{name}: the first value is the key"
        );
        assert_eq!(
            status(&app, from_with("192.0.2.2", &[(name, "b"), (name, "a")])).await,
            200,
            "{name}: the second value is not"
        );
    }
    let app = app(one_per_hour(Key::ApiKey));
    assert_eq!(
        status(&app, with_query("192.0.2.1", "api_key=a&api_key=b")).await,
        200
    );
    assert_eq!(
        status(&app, with_query("192.0.2.2", "api_key=a&api_key=c")).await,
        429
    );
    assert_eq!(
        status(&app, with_query("192.0.2.2", "api_key=b&api_key=a")).await,
        200
    );
}

#[tokio::test(start_paused = true)]
async fn global_key_is_one_bucket_for_everyone() {
    let layer = RateLimitLayer::new(10, Duration::from_secs(1))
        .clock(Clock::tokio())
        .burst(3)
        .key(Key::Global);
    let stats = layer.stats();
    let app = app(layer);
    let peers = ["192.0.2.1", "198.51.100.1", "[2001:db8::1]:1", "192.0.2.2"];
    let mut results = Vec::new();
    for peer in peers {
        results.push(status(&app, from(peer)).await.as_u16());
    }
    assert_eq!(results, [200, 200, 200, 429]);
    // Even a request without any address is counted in the one bucket, not as missing.
    assert_eq!(
        status(&app, Request::new(Body::empty())).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    advance(100 * MS).await;
    assert_eq!(status(&app, from("203.0.113.1")).await, StatusCode::OK);
    let snapshot = stats.snapshot();
    assert_eq!(snapshot.missing_key, 0);
    assert_eq!((snapshot.allowed, snapshot.limited), (4, 2));
}

#[tokio::test(start_paused = true)]
async fn client_address_from_each_kind_of_extension() {
    let app = app(RateLimitLayer::new(1, Duration::from_secs(3600))
        .clock(Clock::tokio())
        .burst(1)
        .missing_key(MissingKey::Reject));
    let peer: std::net::SocketAddr = "192.0.2.77:5000".parse().unwrap();
    let mut client_addr = Request::new(Body::empty());
    client_addr
        .extensions_mut()
        .insert(proxflow_ratelimit::ClientAddr(peer));
    let mut bare = Request::new(Body::empty());
    bare.extensions_mut().insert(peer);
    assert_eq!(status(&app, client_addr).await, 200);
    assert_eq!(status(&app, bare).await, 429, "same address, same bucket");
    assert_eq!(status(&app, from("192.0.2.77:6000")).await, 429);
}

/// `GET /` answers `hello`: the inner service of the tests that make a service per connection.
fn hello() -> impl Service<Request<Body>, Response = http::Response<Body>, Error = Infallible> + Copy
{
    tower::service_fn(|_: Request<Body>| async {
        Ok::<_, Infallible>(http::Response::new(Body::from("hello")))
    })
}

/// The statuses of `requests`, each sent through a clone of `service` (clones share its
/// limiter and its peer).
async fn statuses_through<S, B>(
    service: &S,
    requests: impl IntoIterator<Item = Request<Body>>,
) -> Vec<u16>
where
    S: Service<Request<Body>, Response = http::Response<B>, Error = Infallible> + Clone,
{
    let mut statuses = Vec::new();
    for request in requests {
        let response = service.clone().oneshot(request).await.expect("infallible");
        statuses.push(response.status().as_u16());
    }
    statuses
}

#[tokio::test(start_paused = true)]
async fn a_service_told_its_peer_counts_untagged_requests_under_it() {
    let layer = RateLimitLayer::new(1, Duration::from_secs(3600))
        .clock(Clock::tokio())
        .burst(1)
        .missing_key(MissingKey::Reject);
    let connection = |peer: &str| layer.layer(hello()).with_peer(addr(peer));
    let bare = || Request::new(Body::empty());
    assert_eq!(
        statuses_through(&connection("192.0.2.1:5000"), [bare()]).await,
        [200]
    );
    assert_eq!(
        statuses_through(&connection("192.0.2.1:6000"), [bare()]).await,
        [429],
        "another connection of the same client shares its bucket"
    );
    assert_eq!(
        statuses_through(&connection("192.0.2.2:5000"), [bare()]).await,
        [200]
    );
    // An address in the request's extensions wins over the connection's.
    assert_eq!(
        statuses_through(&connection("192.0.2.3:5000"), [from("192.0.2.1")]).await,
        [429]
    );
    assert_eq!(
        statuses_through(&layer.layer(hello()), [bare()]).await,
        [400],
        "without a peer, a request has no ip key"
    );
}

#[tokio::test(start_paused = true)]
async fn a_connection_from_a_trusted_proxy_is_keyed_per_forwarded_client() {
    let layer = RateLimitLayer::new(1, Duration::from_secs(3600))
        .clock(Clock::tokio())
        .burst(1)
        .trusted_proxies(["10.0.0.0/8".parse().unwrap()]);
    let forwarded_for = |clients: &[&str]| {
        clients
            .iter()
            .map(|client| {
                Request::builder()
                    .header("x-forwarded-for", *client)
                    .body(Body::empty())
                    .unwrap()
            })
            .collect::<Vec<_>>()
    };
    let proxy = layer.layer(hello()).with_peer(addr("10.0.0.1:5000"));
    assert_eq!(
        statuses_through(
            &proxy,
            forwarded_for(&["192.0.2.1", "192.0.2.2", "192.0.2.1"])
        )
        .await,
        [200, 200, 429],
        "one bucket per forwarded client"
    );
    // A client that is not a trusted proxy cannot choose its key with the header.
    let client = layer.layer(hello()).with_peer(addr("192.0.2.9:5000"));
    assert_eq!(
        statuses_through(&client, forwarded_for(&["198.51.100.1", "198.51.100.2"])).await,
        [200, 429],
        "one bucket for the connection's client"
    );
}

/// A quota resolver's answer cannot be refused like a config: an overlong period or burst is
/// clamped to 100 years instead of overflowing the nanosecond arithmetic.
#[tokio::test(start_paused = true)]
async fn a_quota_resolver_with_an_overlong_period_is_clamped() {
    let mut failures = Vec::new();
    for algorithm in [Algorithm::TokenBucket, Algorithm::LeakyBucket] {
        let layer = RateLimitLayer::new(10, Duration::from_secs(1))
            .clock(Clock::tokio())
            .algorithm(algorithm)
            .quota_resolver(|_: &RequestView<'_>| {
                Some(Quota {
                    rate: 1,
                    per: Duration::MAX,
                    burst: 3,
                })
            });
        let outcome = tokio::spawn(async move {
            let app = app(layer);
            status(&app, from("192.0.2.1")).await
        })
        .await;
        match outcome {
            Ok(first) => assert_eq!(first, StatusCode::OK),
            Err(panic) => failures.push(format!("{algorithm:?}: {panic}")),
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// A stats handle taken before the builder calls reads the traffic of the layer they made: the
/// counters are made with the layer and kept through its builder calls.
#[tokio::test(start_paused = true)]
async fn a_handle_taken_first_sees_the_configured_layers_traffic() {
    let layer = RateLimitLayer::new(1, Duration::from_secs(3600));
    let stats = layer.stats();
    let layer = layer
        .clock(Clock::tokio())
        .burst(2)
        .key(Key::Header(http::HeaderName::from_static("x-tenant")))
        .missing_key(MissingKey::Reject)
        .legacy_headers(true);
    let tenant = |name| from_with("192.0.2.1", &[("x-tenant", name)]);
    let app = app(layer);
    assert_eq!(statuses(&app, 3, || tenant("acme")).await, [200, 200, 429]);
    assert_eq!(status(&app, tenant("globex")).await, 200);
    assert_eq!(status(&app, from("192.0.2.1")).await, 400);
    let snapshot = stats.snapshot();
    assert_eq!(
        (snapshot.allowed, snapshot.limited, snapshot.missing_key),
        (3, 1, 1)
    );
    assert_eq!(snapshot.active_keys, 2, "the configured layer's keys");
    assert!(snapshot.key_table_bytes > 0);
}
