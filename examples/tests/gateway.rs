//! The gateway through a real server on 127.0.0.1: the site, `/api` through every layer to the
//! demo upstreams, paths made canonical, the admin endpoint, and the dashboard's figures.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Body;
use http::{header, HeaderMap, Method, Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use proxflow_examples::gateway::config::{DemoUpstreamConfig, Loaded};
use proxflow_examples::gateway::{self};

/// Starts the gateway of `loaded` on a free port.
async fn serve(loaded: Loaded) -> SocketAddr {
    let gateway = gateway::start(&loaded).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(proxflow_examples::serve(listener, gateway.router));
    addr
}

async fn send(
    gateway: SocketAddr,
    method: Method,
    path: &str,
    body: &str,
) -> (StatusCode, HeaderMap, String) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Body>();
    let request = Request::builder()
        .method(method)
        .uri(format!("http://{gateway}{path}"))
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let response = client.request(request).await.unwrap();
    let (parts, body) = response.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (
        parts.status,
        parts.headers,
        String::from_utf8_lossy(&body).into_owned(),
    )
}

async fn get(gateway: SocketAddr, path: &str) -> (StatusCode, HeaderMap, String) {
    send(gateway, Method::GET, path, "").await
}

async fn stats(gateway: SocketAddr) -> serde_json::Value {
    let (status, _, body) = get(gateway, "/dashboard/stats").await;
    assert_eq!(status, StatusCode::OK);
    serde_json::from_str(&body).unwrap()
}

fn demo(name: &str, failure_rate: f64) -> DemoUpstreamConfig {
    DemoUpstreamConfig {
        name: name.into(),
        latency: Duration::ZERO,
        failure_rate,
    }
}

/// The embedded configuration with `demos`, and a rate limit that never refills during a test.
fn loaded(burst: u32, demos: Vec<DemoUpstreamConfig>) -> Loaded {
    let mut loaded = Loaded::embedded();
    let config = &mut loaded.config;
    config.rate_limit.rate = 1;
    config.rate_limit.per = Duration::from_secs(3600);
    config.rate_limit.burst = burst;
    config.demo_upstreams = demos;
    config.access_log.enabled = false;
    loaded
}

fn healthy() -> Vec<DemoUpstreamConfig> {
    ["fast", "slow", "flaky"]
        .map(|name| demo(name, 0.0))
        .to_vec()
}

#[tokio::test]
async fn the_site_the_api_and_the_dashboard_work_together() {
    let gateway = serve(loaded(3, healthy())).await;

    let (status, _, page) = get(gateway, "/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(page.contains("/static/css/site.css?v001"), "{page}");

    for remaining in [2, 1, 0] {
        let (status, headers, body) = get(gateway, "/api/hello?x=1").await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            answer["path"], "/api/hello",
            "the upstream sees the whole path"
        );
        assert_eq!(
            answer["gateway"]["route"], "GET /api/hello",
            "the transform's stamp"
        );
        assert_eq!(headers["x-served-by"], "proxflow-gateway");
        assert!(["fast", "slow", "flaky"].contains(&answer["upstream"].as_str().unwrap()));
        let limit = headers["ratelimit"].to_str().unwrap();
        assert!(
            limit.starts_with(&format!("\"default\";r={remaining};")),
            "{limit}"
        );
    }
    let (status, headers, _) = get(gateway, "/api/hello").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert!(headers.contains_key(header::RETRY_AFTER));

    let stats = stats(gateway).await;
    assert_eq!(stats["ratelimit"]["allowed"], 3);
    assert_eq!(stats["ratelimit"]["limited"], 1);
    assert_eq!(
        stats["ratelimit"]["missing_key"], 0,
        "every request carries its client's address"
    );
    let breakers = stats["breakers"].as_array().unwrap();
    let successes: u64 = breakers
        .iter()
        .map(|b| b["totals"]["successes"].as_u64().unwrap())
        .sum();
    assert_eq!(successes, 3, "the 429 never reached them");
    assert!(breakers.iter().all(|b| b["state"] == "closed"));
    let answered: u64 = stats["lb"]["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(answered, 3);
    assert!(stats["traffic"]["requests"].as_u64().unwrap() >= 5);

    let (status, headers, page) = get(gateway, "/dashboard").await;
    assert_eq!(status, StatusCode::OK);
    assert!(headers[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(page.contains("/dashboard/stats"));
    assert_eq!(get(gateway, "/health").await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_failing_upstream_opens_its_own_breaker_only() {
    let mut loaded = loaded(1000, vec![demo("broken", 1.0), demo("fine", 0.0)]);
    // Round robin, so that the broken upstream keeps its half (the adaptive policy would
    // starve it before its breaker saw ten calls).
    loaded.config.lb.lb_policy = proxflow_lb::Policy::RoundRobin;
    let gateway = serve(loaded).await;
    // Enough calls for the broken upstream's breaker (10 in its window, half failed).
    for _ in 0..60 {
        get(gateway, "/api/orders").await;
    }
    let stats = stats(gateway).await;
    let breakers = stats["breakers"].as_array().unwrap();
    assert_eq!(breakers.len(), 2, "one per upstream: {breakers:?}");
    let states: Vec<&str> = breakers
        .iter()
        .map(|b| b["state"].as_str().unwrap())
        .collect();
    assert!(
        states.contains(&"open") && states.contains(&"closed"),
        "{states:?}"
    );
    // With the broken one's breaker open, the balancer sends the rest to the fine one.
    let (status, _, body) = get(gateway, "/api/orders").await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test]
async fn paths_are_made_canonical_before_routing() {
    let gateway = serve(loaded(100, healthy())).await;
    let (status, _, body) = get(gateway, "/api/../static/css/site.css").await;
    assert_eq!(status, StatusCode::OK, "routed as /static/css/site.css");
    assert!(body.contains('{'), "{body}");
    for path in [
        "/api/..%2f..%2fetc%2fpasswd",
        "/api/../../etc/passwd",
        "/api/%2e%2e/%2e%2e/x",
    ] {
        let (status, _, _) = get(gateway, path).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}");
    }
    let stats = stats(gateway).await;
    let forwarded: u64 = stats["lb"]["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["requests"].as_u64().unwrap())
        .sum();
    assert_eq!(forwarded, 0, "nothing reached an upstream");
}

#[tokio::test]
async fn the_admin_endpoint_changes_an_upstream_and_forces_its_breaker() {
    let gateway = serve(loaded(1000, vec![demo("only", 0.0)])).await;
    let (status, _, body) = send(
        gateway,
        Method::POST,
        "/admin/upstreams/only",
        r#"{"failure_rate": 1.0}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        get(gateway, "/api/x").await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    send(
        gateway,
        Method::POST,
        "/admin/upstreams/only",
        r#"{"failure_rate": 0, "latency": "1ms"}"#,
    )
    .await;
    assert_eq!(get(gateway, "/api/x").await.0, StatusCode::OK);

    let (status, _, body) = send(
        gateway,
        Method::POST,
        "/admin/upstreams/only/breaker",
        r#"{"state": "open"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _, body) = get(gateway, "/api/x").await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(
        body.contains("circuit breaker open") || body.contains("no upstream"),
        "{body}"
    );
    assert_eq!(
        send(gateway, Method::POST, "/admin/upstreams/nobody", "{}")
            .await
            .0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn the_aggregated_endpoint_and_the_cache_work_through_the_gateway() {
    let gateway = serve(loaded(1000, healthy())).await;
    let (status, _, body) = get(gateway, "/api/combined").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let combined: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(combined["fast"]["upstream"], "fast");
    assert_eq!(combined["slow"]["upstream"], "slow");

    let (_, headers, _) = get(gateway, "/api/cached/item").await;
    assert!(
        headers["cache-status"].to_str().unwrap().contains("stored"),
        "{headers:?}"
    );
    let (_, headers, _) = get(gateway, "/api/cached/item").await;
    assert!(
        headers["cache-status"].to_str().unwrap().contains("hit"),
        "{headers:?}"
    );
}

/// [`loaded`] with the dashboard updated every `interval`.
fn dashboard_every(interval: Duration, demos: Vec<DemoUpstreamConfig>) -> Loaded {
    let mut loaded = loaded(100_000, demos);
    loaded.config.traffic_dashboard.update_interval = interval;
    loaded
}

/// Polls `<path>/stats` until `ready` holds (10 s at most).
async fn stats_when(
    gateway: SocketAddr,
    what: &str,
    ready: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let stats = stats(gateway).await;
        if ready(&stats) {
            return stats;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within 10 s: {what}; last: {stats:#}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_dashboard_stats_carry_rates_percentiles_upstreams_breakers_and_transitions() {
    let gateway = serve(dashboard_every(Duration::from_millis(100), healthy())).await;
    let first = stats(gateway).await;
    assert_eq!(first["update_interval_ms"], 100.0);
    assert!(first["sample"]["seq"].as_u64().is_some(), "{first:#}");

    // Traffic while samples are taken, until one sample has seen it all.
    for n in 0..60 {
        let path = if n % 3 == 0 {
            "/api/cached/item".to_string()
        } else {
            format!("/api/orders/{n}")
        };
        assert!(get(gateway, &path).await.0.is_success());
    }
    let route_total = |s: &serde_json::Value, route: &str| {
        s["sample"]["routes"]
            .as_array()
            .and_then(|routes| routes.iter().find(|r| r["route"] == route))
            .and_then(|r| r["requests_total"].as_u64())
    };
    // A sample may be taken while an answer is being counted: the one to read has them all.
    let stats = stats_when(gateway, "a sample with the traffic", |s| {
        route_total(s, "/api/orders") == Some(40)
            && route_total(s, "/api/cached") == Some(20)
            && s["sample"]["upstreams"]
                .as_array()
                .is_some_and(|u| u.iter().all(|u| !u["breaker"].is_null()))
    })
    .await;
    let sample = &stats["sample"];
    for field in ["requests_per_s", "errors_per_s", "interval_ms"] {
        assert!(sample[field].as_f64().is_some(), "{field}: {sample:#}");
    }
    assert!(sample["in_flight"].as_u64().is_some());
    assert!(sample["active_connections"].as_u64().is_some());
    let p99 = sample["latency_total"]["p99_ms"].as_f64().unwrap();
    let p50 = sample["latency_total"]["p50_ms"].as_f64().unwrap();
    assert!(p50 > 0.0 && p50 <= p99, "{p50} {p99}");

    let routes = sample["routes"].as_array().unwrap();
    let orders = routes
        .iter()
        .find(|r| r["route"] == "/api/orders")
        .unwrap_or_else(|| panic!("{routes:#?}"));
    assert_eq!(orders["requests_total"], 40, "{orders}");
    assert!(routes.iter().any(|r| r["route"] == "/api/cached"));
    assert_eq!(routes.last().unwrap()["route"], "other");

    let upstreams = sample["upstreams"].as_array().unwrap();
    let names: Vec<&str> = upstreams
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["fast", "slow", "flaky"], "by name, not by address");
    for upstream in upstreams {
        for field in ["weight", "latency_ms"] {
            assert!(upstream[field].as_f64().is_some(), "{field}: {upstream}");
        }
        assert_eq!(upstream["health"], "healthy");
        assert_eq!(upstream["breaker"], "closed");
        assert_eq!(upstream["predicted_load_unit"], "ms");
    }
    let breakers = sample["breakers"].as_array().unwrap();
    assert_eq!(breakers.len(), 3);
    assert!(breakers.iter().all(|b| b["state"] == "closed"));
    // The cache is in front of the rate limiter: its hits are not counted there.
    assert!(sample["ratelimit"]["allowed_total"].as_u64() >= Some(40));
    let hit_ratio = sample["cache"]["hit_ratio_total"].as_f64().unwrap();
    // 20 cacheable requests (one miss, 19 hits) among 60 lookups.
    assert!((hit_ratio - 19.0 / 60.0).abs() < 1e-9, "{hit_ratio}");

    // Shares over one interval add up to 1 when the balancer answered requests in it.
    let stats = stats_when(gateway, "a sample with balanced requests", |s| {
        get_share_sum(&s["sample"]).is_some()
    });
    let ((), stats) = tokio::join!(
        async {
            for n in 0..100 {
                get(gateway, &format!("/api/orders/{n}")).await;
            }
        },
        stats
    );
    let shares = get_share_sum(&stats["sample"]).unwrap();
    assert!((shares - 1.0).abs() < 1e-9, "{shares}");

    let (status, _, body) = send(
        gateway,
        Method::POST,
        "/admin/upstreams/flaky/breaker",
        r#"{"state": "open"}"#,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let stats = stats_when(gateway, "the forced breaker in a sample", |s| {
        s["sample"]["upstreams"][2]["breaker"] == "forced_open"
    })
    .await;
    let transitions = stats["transitions"].as_array().unwrap();
    let last = transitions.last().unwrap();
    assert_eq!(
        (&last["upstream"], &last["from"], &last["to"]),
        (
            &serde_json::json!("flaky"),
            &serde_json::json!("closed"),
            &serde_json::json!("forced_open")
        ),
        "{transitions:#?}"
    );
    assert!(last["at_ms"].as_u64().unwrap() > 1_600_000_000_000);
}

/// The sum of the upstreams' shares in `sample`, when it has any.
fn get_share_sum(sample: &serde_json::Value) -> Option<f64> {
    let shares: Vec<f64> = sample["upstreams"]
        .as_array()?
        .iter()
        .filter_map(|u| u["share"].as_f64())
        .collect();
    (!shares.is_empty()).then(|| shares.iter().sum())
}

#[tokio::test]
async fn metrics_are_in_the_prometheus_text_format() {
    let gateway = serve(dashboard_every(Duration::from_millis(100), healthy())).await;
    for n in 0..12 {
        get(gateway, &format!("/api/orders/{n}")).await;
    }
    get(gateway, "/api/cached/a").await;
    get(gateway, "/api/cached/a").await;
    let (status, headers, text) = get(gateway, "/metrics").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers[header::CONTENT_TYPE],
        "text/plain; version=0.0.4; charset=utf-8"
    );

    // Every sample belongs to a family declared once, HELP then TYPE, before its samples;
    // names and labels are well formed; counters end in `_total`.
    let mut families: Vec<(String, String)> = Vec::new();
    let mut values: Vec<(String, String, f64)> = Vec::new();
    let mut help: Option<String> = None;
    let valid_name = |name: &str| {
        !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    };
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap().to_string();
            assert!(
                !families.iter().any(|(f, _)| *f == name),
                "declared twice: {name}"
            );
            help = Some(name);
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert_eq!(help.take().as_deref(), Some(name), "HELP before TYPE");
            assert!(valid_name(name), "{name}");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            if kind == "counter" {
                assert!(name.ends_with("_total"), "{name}");
            } else {
                assert!(!name.ends_with("_total"), "{name}");
            }
            families.push((name.to_string(), kind.to_string()));
        } else {
            let (series, value) = line.rsplit_once(' ').unwrap();
            let value: f64 = match value {
                "+Inf" => f64::INFINITY,
                v => v.parse().unwrap_or_else(|_| panic!("{line}")),
            };
            let (name, labels) = match series.split_once('{') {
                Some((name, labels)) => (name, labels.strip_suffix('}').expect(line)),
                None => (series, ""),
            };
            let (family, kind) = families.last().expect("a family first");
            let allowed = if kind == "histogram" {
                ["_bucket", "_sum", "_count"]
                    .iter()
                    .any(|suffix| name == format!("{family}{suffix}"))
            } else {
                name == family
            };
            assert!(allowed, "{name} under {family}");
            for label in labels.split("\",").filter(|l| !l.is_empty()) {
                let (key, value) = label.split_once("=\"").expect(line);
                assert!(valid_name(key), "{line}");
                assert!(!value.trim_end_matches('"').contains('\n'));
            }
            values.push((name.to_string(), labels.to_string(), value));
        }
    }
    let value = |name: &str, labels: &str| {
        values
            .iter()
            .find(|(n, l, _)| n == name && l == labels)
            .unwrap_or_else(|| panic!("no {name}{{{labels}}}"))
            .2
    };
    assert_eq!(
        value("proxflow_gateway_requests_total", r#"route="/api/orders""#),
        12.0
    );
    assert_eq!(
        value("proxflow_gateway_requests_total", r#"route="/api/cached""#),
        2.0
    );
    let name = "proxflow_gateway_request_duration_seconds";
    let buckets: Vec<f64> = values
        .iter()
        .filter(|(n, l, _)| *n == format!("{name}_bucket") && l.contains("/api/orders"))
        .map(|(_, _, v)| *v)
        .collect();
    assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{buckets:?}");
    assert_eq!(buckets.last(), Some(&12.0), "+Inf is the count");
    assert_eq!(
        value(&format!("{name}_count"), r#"route="/api/orders""#),
        12.0
    );
    assert_eq!(
        value("proxflow_gateway_cache_lookups_total", r#"result="hit""#),
        1.0
    );
    // The cache hit never reached the rate limiter.
    assert_eq!(
        value(
            "proxflow_gateway_ratelimit_requests_total",
            r#"decision="allowed""#
        ),
        13.0
    );
    // One state of each breaker is 1.
    for upstream in ["fast", "slow", "flaky"] {
        let states: f64 = values
            .iter()
            .filter(|(n, l, _)| {
                n == "proxflow_gateway_breaker_state"
                    && l.starts_with(&format!("upstream=\"{upstream}\""))
            })
            .map(|(_, _, v)| v)
            .sum();
        let called = values.iter().any(|(n, l, v)| {
            n == "proxflow_gateway_upstream_requests_total"
                && l.starts_with(&format!("upstream=\"{upstream}\""))
                && *v > 0.0
        });
        assert_eq!(states, if called { 1.0 } else { 0.0 }, "{upstream}");
    }
}

/// Reads `<path>/events` until `events` events have come (10 s at most): (name, data) pairs.
async fn read_events(gateway: SocketAddr, events: usize) -> (HeaderMap, Vec<(String, String)>) {
    let client = Client::builder(TokioExecutor::new()).build_http::<Body>();
    let request = Request::get(format!("http://{gateway}/dashboard/events"))
        .body(Body::empty())
        .unwrap();
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let headers = response.headers().clone();
    let mut body = response.into_body();
    let mut text = String::new();
    let mut parsed = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while parsed.len() < events {
        let frame = tokio::time::timeout_at(deadline, body.frame())
            .await
            .expect("events within 10 s")
            .expect("the stream goes on")
            .unwrap();
        let Ok(data) = frame.into_data() else {
            continue;
        };
        text.push_str(std::str::from_utf8(&data).unwrap());
        parsed.extend(complete_events(&mut text));
    }
    (headers, parsed)
}

/// Takes the complete events (they end with a blank line) out of `text`: (name, data) pairs;
/// comments (keep-alives) are skipped.
fn complete_events(text: &mut String) -> Vec<(String, String)> {
    let mut parsed = Vec::new();
    while let Some(end) = text.find("\n\n") {
        let event: String = text.drain(..end + 2).collect();
        let mut name = String::new();
        let mut data = String::new();
        for line in event.lines() {
            if let Some(value) = line.strip_prefix("event: ") {
                name = value.to_string();
            } else if let Some(value) = line.strip_prefix("data: ") {
                data.push_str(value);
            }
        }
        if !name.is_empty() {
            parsed.push((name, data));
        }
    }
    parsed
}

/// A gateway whose dashboard samples every 50 ms, and its event stream read in process (so
/// only as fast as the test reads it).
async fn events_in_process() -> (gateway::Gateway, Body) {
    use tower::ServiceExt;
    let gateway = gateway::start(&dashboard_every(Duration::from_millis(50), healthy()))
        .await
        .unwrap();
    let request = Request::get("/dashboard/events")
        .body(Body::empty())
        .unwrap();
    let response = gateway.router.clone().oneshot(request).await.unwrap();
    (gateway, response.into_body())
}

#[tokio::test]
async fn a_slow_reader_of_the_event_stream_misses_no_sample() {
    let (_gateway, mut body) = events_in_process().await;
    let mut text = String::new();
    let mut events = Vec::new();
    while events.is_empty() {
        let frame = body.frame().await.unwrap().unwrap();
        text.push_str(std::str::from_utf8(frame.data_ref().unwrap()).unwrap());
        events.extend(complete_events(&mut text));
    }
    let history: serde_json::Value = serde_json::from_str(&events[0].1).unwrap();
    let mut last = history["samples"].as_array().unwrap().last().unwrap()["seq"]
        .as_u64()
        .unwrap();
    // Five updates go by unread; the channel keeps only the newest.
    tokio::time::sleep(Duration::from_millis(250)).await;
    let mut seen = 0;
    while seen < 8 {
        let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
            .await
            .expect("samples keep coming")
            .unwrap()
            .unwrap();
        let Ok(data) = frame.into_data() else {
            continue;
        };
        text.push_str(std::str::from_utf8(&data).unwrap());
        for (name, data) in complete_events(&mut text) {
            assert_eq!(name, "sample");
            let sample: serde_json::Value = serde_json::from_str(&data).unwrap();
            let seq = sample["seq"].as_u64().unwrap();
            assert_eq!(seq, last + 1, "every sample once, in order");
            last = seq;
            seen += 1;
        }
    }
}

#[tokio::test]
async fn the_event_stream_sends_the_history_then_a_sample_per_interval() {
    let gateway = serve(dashboard_every(Duration::from_millis(100), healthy())).await;
    get(gateway, "/api/orders").await;
    let (headers, events) = read_events(gateway, 4).await;
    assert_eq!(headers[header::CONTENT_TYPE], "text/event-stream");
    let (name, data) = &events[0];
    assert_eq!(name, "history");
    let history: serde_json::Value = serde_json::from_str(data).unwrap();
    assert_eq!(history["interval_ms"], 100);
    let samples = history["samples"].as_array().unwrap();
    assert!(!samples.is_empty());
    assert_eq!(samples[0]["seq"], 0, "from the first sample");
    assert!(history["transitions"].is_array());
    let mut last = samples.last().unwrap()["seq"].as_u64().unwrap();
    for (name, data) in &events[1..] {
        assert_eq!(name, "sample");
        let sample: serde_json::Value = serde_json::from_str(data).unwrap();
        let seq = sample["seq"].as_u64().unwrap();
        assert_eq!(seq, last + 1, "every update, in order");
        last = seq;
        assert!(sample["upstreams"].is_array() && sample["latency"].is_object());
    }
}

#[tokio::test]
async fn the_sampler_and_the_event_streams_end_with_the_router() {
    let (gateway, mut body) = events_in_process().await;
    let first = body.frame().await.unwrap().unwrap().into_data().unwrap();
    assert!(String::from_utf8_lossy(&first).contains("event: history"));
    drop(gateway);
    // The stream ends (no more frames) once the sampler notices, at its next update.
    let ended = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(frame) = body.frame().await {
            frame.unwrap();
        }
    })
    .await;
    assert!(ended.is_ok(), "the event stream outlived the router");
}

#[tokio::test]
async fn a_bad_dashboard_setting_names_its_field() {
    let mut loaded = loaded(10, healthy());
    loaded.config.traffic_dashboard.update_interval = Duration::ZERO;
    let error = gateway::start(&loaded).await.err().expect("refused");
    assert!(
        error
            .to_string()
            .contains("traffic_dashboard.update_interval"),
        "{error}"
    );
    let mut loaded = loaded_with_path("/");
    let error = gateway::start(&loaded).await.err().expect("refused");
    assert!(
        error.to_string().contains("traffic_dashboard.path"),
        "{error}"
    );
    loaded.config.traffic_dashboard.path = "/ops/dash/".into();
    let gateway = serve(loaded).await;
    assert_eq!(get(gateway, "/ops/dash").await.0, StatusCode::OK);
    assert_eq!(get(gateway, "/ops/dash/stats").await.0, StatusCode::OK);
}

fn loaded_with_path(path: &str) -> Loaded {
    let mut loaded = loaded(10, healthy());
    loaded.config.traffic_dashboard.path = path.into();
    loaded
}
