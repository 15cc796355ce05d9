//! `RateLimitConfig` from JSON, YAML and TOML with the origin's names, the layer it builds, and
//! bad values: each refused with a `ConfigError` that names the field.

mod common;

use std::time::Duration;

use common::*;
use http::StatusCode;
use proxflow_core::Clock;
use proxflow_ratelimit::{
    Algorithm, ConfigError, DistributedConfig, ForwardedHeader, Key, LimitHeaders, MissingKey,
    OnUnavailable, RateLimitConfig, RateLimitLayer, Reject,
};
use tokio::time::advance;

const ORIGIN_JSON: &str = r#"{
    "algorithm": "token_bucket",
    "rate": 10,
    "per": "1s",
    "burst": 5,
    "key": "ip",
    "reject": "429"
}"#;

const ORIGIN_YAML: &str = "
algorithm: token_bucket
rate: 10
per: 1s
burst: 5
key: ip
reject: \"429\"
";

const ORIGIN_TOML: &str = r#"
algorithm = "token_bucket"
rate = 10
per = "1s"
burst = 5
key = "ip"
reject = "429"
"#;

#[test]
fn the_origin_example_reads_the_same_from_json_yaml_and_toml() {
    let json: RateLimitConfig = serde_json::from_str(ORIGIN_JSON).unwrap();
    let yaml: RateLimitConfig = serde_yaml::from_str(ORIGIN_YAML).unwrap();
    let toml: RateLimitConfig = toml::from_str(ORIGIN_TOML).unwrap();
    assert_eq!(json, yaml);
    assert_eq!(json, toml);
    assert_eq!(json.algorithm, Algorithm::TokenBucket);
    assert_eq!(
        (json.rate, json.per, json.burst),
        (10, Duration::from_secs(1), 5)
    );
    assert_eq!(json.key, "ip");
    assert_eq!(json.reject, Reject::TooManyRequests);
    json.validate().unwrap();
}

#[test]
fn every_field_reads_from_each_format() {
    let json = r#"{
        "algorithm": "leaky_bucket", "rate": 100, "per": "1m", "burst": 20,
        "key": "header:x-tenant", "reject": "delay", "max_delay": "250ms",
        "trusted_proxies": ["10.0.0.0/8", "2001:db8::/32"], "forwarded_header": "forwarded",
        "ipv6_prefix": 56,
        "user_header": "x-user", "api_key_header": "x-key", "api_key_query": "token",
        "missing_key": "reject", "max_keys": 5000, "shadow": true, "headers": "limited",
        "legacy_headers": true, "mark_refusals": true,
        "policy_name": "tier-a"
    }"#;
    let yaml = "
algorithm: leaky_bucket
rate: 100
per: 1m
burst: 20
key: header:x-tenant
reject: delay
max_delay: 250ms
trusted_proxies: [10.0.0.0/8, 2001:db8::/32]
forwarded_header: forwarded
ipv6_prefix: 56
user_header: x-user
api_key_header: x-key
api_key_query: token
missing_key: reject
max_keys: 5000
shadow: true
headers: limited
legacy_headers: true
mark_refusals: true
policy_name: tier-a
";
    let toml = r#"
algorithm = "leaky_bucket"
rate = 100
per = "1m"
burst = 20
key = "header:x-tenant"
reject = "delay"
max_delay = "250ms"
trusted_proxies = ["10.0.0.0/8", "2001:db8::/32"]
forwarded_header = "forwarded"
ipv6_prefix = 56
user_header = "x-user"
api_key_header = "x-key"
api_key_query = "token"
missing_key = "reject"
max_keys = 5000
shadow = true
headers = "limited"
legacy_headers = true
mark_refusals = true
policy_name = "tier-a"
"#;
    let expected = RateLimitConfig {
        algorithm: Algorithm::LeakyBucket,
        rate: 100,
        per: Duration::from_secs(60),
        burst: 20,
        key: "header:x-tenant".into(),
        reject: Reject::Delay,
        max_delay: Duration::from_millis(250),
        trusted_proxies: vec!["10.0.0.0/8".into(), "2001:db8::/32".into()],
        forwarded_header: ForwardedHeader::Forwarded,
        ipv6_prefix: 56,
        user_header: Some("x-user".into()),
        api_key_header: "x-key".into(),
        api_key_query: Some("token".into()),
        missing_key: MissingKey::Reject,
        max_keys: 5000,
        shadow: true,
        headers: LimitHeaders::Limited,
        legacy_headers: true,
        mark_refusals: true,
        policy_name: "tier-a".into(),
        distributed: None,
    };
    assert_eq!(
        serde_json::from_str::<RateLimitConfig>(json).unwrap(),
        expected
    );
    assert_eq!(
        serde_yaml::from_str::<RateLimitConfig>(yaml).unwrap(),
        expected
    );
    assert_eq!(toml::from_str::<RateLimitConfig>(toml).unwrap(), expected);
    expected.validate().unwrap();
    // And back: what serializes reads again.
    let text = serde_json::to_string(&expected).unwrap();
    assert_eq!(
        serde_json::from_str::<RateLimitConfig>(&text).unwrap(),
        expected
    );
}

#[test]
fn an_empty_config_is_the_documented_default() {
    let empty: RateLimitConfig = serde_json::from_str("{}").unwrap();
    assert_eq!(empty, RateLimitConfig::default());
    assert_eq!(empty.algorithm, Algorithm::TokenBucket);
    assert_eq!(
        (empty.rate, empty.per, empty.burst),
        (10, Duration::from_secs(1), 5)
    );
    assert_eq!(empty.key, "ip");
    assert_eq!(empty.reject, Reject::TooManyRequests);
    assert_eq!(empty.max_delay, Duration::from_secs(1));
    assert!(empty.trusted_proxies.is_empty());
    assert_eq!(empty.forwarded_header, ForwardedHeader::XForwardedFor);
    assert_eq!(empty.ipv6_prefix, 64);
    assert_eq!(empty.user_header, None);
    assert_eq!(empty.api_key_header, "x-api-key");
    assert_eq!(empty.api_key_query.as_deref(), Some("api_key"));
    assert_eq!(empty.missing_key, MissingKey::Shared);
    assert_eq!(empty.max_keys, 1_000_000);
    assert!(!empty.shadow && !empty.legacy_headers && !empty.mark_refusals);
    assert_eq!(empty.policy_name, "default");
    empty.validate().unwrap();
    // The builder starts from the same defaults.
    let built = RateLimitLayer::new(10, Duration::from_secs(1));
    assert_eq!(built.config(), &empty);
}

#[test]
fn durations_read_as_text() {
    for (text, expected) in [
        ("1s", Duration::from_secs(1)),
        ("1m", Duration::from_secs(60)),
        ("250ms", Duration::from_millis(250)),
        ("1h 30m", Duration::from_secs(5400)),
        ("1day", Duration::from_secs(86400)),
    ] {
        let config: RateLimitConfig =
            serde_json::from_str(&format!(r#"{{"per": "{text}"}}"#)).unwrap();
        assert_eq!(config.per, expected, "{text}");
    }
}

#[tokio::test(start_paused = true)]
async fn the_origin_example_builds_a_working_layer() {
    for text in [ORIGIN_JSON, ORIGIN_YAML, ORIGIN_TOML] {
        let config: RateLimitConfig = serde_json::from_str(text)
            .or_else(|_| serde_yaml::from_str(text))
            .or_else(|_| toml::from_str(text))
            .unwrap();
        let layer = RateLimitLayer::from_config(&config)
            .unwrap()
            .clock(Clock::tokio());
        let app = app(layer);
        let client = || from("192.0.2.1");
        assert_eq!(
            statuses(&app, 7, client).await,
            [200, 200, 200, 200, 200, 429, 429]
        );
        advance(Duration::from_millis(100)).await;
        assert_eq!(statuses(&app, 2, client).await, [200, 429]);
        assert_eq!(status(&app, from("192.0.2.2")).await, StatusCode::OK);
    }
}

#[tokio::test(start_paused = true)]
async fn reject_delay_and_drop_from_config() {
    let delay: RateLimitConfig =
        serde_yaml::from_str("rate: 10\nper: 1s\nburst: 1\nreject: delay\nmax_delay: 1s\n")
            .unwrap();
    let app = app(RateLimitLayer::from_config(&delay)
        .unwrap()
        .clock(Clock::tokio()));
    assert_eq!(status(&app, from("192.0.2.1")).await, StatusCode::OK);
    let mut held = Box::pin(send(&app, from("192.0.2.1")));
    assert!(poll_once(&mut held).await.is_none(), "held");
    advance(Duration::from_millis(100)).await;
    assert_eq!(poll_once(&mut held).await.unwrap().status(), StatusCode::OK);

    let drop: RateLimitConfig =
        toml::from_str("rate = 1\nper = \"1h\"\nburst = 1\nreject = \"drop\"\n").unwrap();
    let layer = RateLimitLayer::from_config(&drop)
        .unwrap()
        .clock(Clock::tokio());
    let stats = layer.stats();
    let dropping = common::app(layer);
    assert_eq!(status(&dropping, from("192.0.2.1")).await, StatusCode::OK);
    let dropped = send(&dropping, from("192.0.2.1")).await;
    use http_body_util::BodyExt;
    assert!(dropped.into_body().collect().await.is_err(), "no body");
    assert_eq!(stats.snapshot().dropped, 1);
}

#[tokio::test(start_paused = true)]
async fn leaky_bucket_burst_zero_is_nginx_without_burst() {
    let config: RateLimitConfig =
        serde_json::from_str(r#"{"algorithm": "leaky_bucket", "rate": 10, "burst": 0}"#).unwrap();
    let app = app(RateLimitLayer::from_config(&config)
        .unwrap()
        .clock(Clock::tokio()));
    assert_eq!(
        statuses(&app, 3, || from("192.0.2.1")).await,
        [200, 429, 429]
    );
    advance(Duration::from_millis(100)).await;
    assert_eq!(statuses(&app, 2, || from("192.0.2.1")).await, [200, 429]);
}

fn field_of(result: Result<RateLimitLayer, ConfigError>) -> (&'static str, String) {
    match result {
        Ok(layer) => panic!("accepted: {:?}", layer.config()),
        Err(error) => {
            let ConfigError {
                field, ref reason, ..
            } = error;
            assert!(!reason.is_empty());
            assert!(
                error.to_string().contains(&format!("`{field}`")),
                "{error} names the field"
            );
            (field, reason.clone())
        }
    }
}

#[test]
fn bad_values_are_refused_naming_the_field() {
    let cases: &[(&str, &str)] = &[
        (r#"{"rate": 0}"#, "rate"),
        (r#"{"per": "0s"}"#, "per"),
        (r#"{"rate": 10, "per": "5ns"}"#, "rate"),
        (r#"{"burst": 0}"#, "burst"),
        (r#"{"key": "cookie"}"#, "key"),
        (r#"{"key": "header:bad name"}"#, "key"),
        (r#"{"key": "header:"}"#, "key"),
        (r#"{"ipv6_prefix": 129}"#, "ipv6_prefix"),
        (r#"{"max_keys": 0}"#, "max_keys"),
        (r#"{"api_key_header": "bad header"}"#, "api_key_header"),
        (r#"{"user_header": "x:y"}"#, "user_header"),
        (r#"{"policy_name": ""}"#, "policy_name"),
        (r#"{"policy_name": "a b"}"#, "policy_name"),
        (r#"{"policy_name": "a\"b"}"#, "policy_name"),
        (r#"{"trusted_proxies": ["10.0.0.1/8"]}"#, "trusted_proxies"),
        (r#"{"trusted_proxies": ["nonsense"]}"#, "trusted_proxies"),
        (r#"{"trusted_proxies": ["10.0.0.0/33"]}"#, "trusted_proxies"),
        (r#"{"trusted_proxies": [""]}"#, "trusted_proxies"),
    ];
    for (json, expected) in cases {
        let config: RateLimitConfig = serde_json::from_str(json).unwrap();
        assert!(config.validate().is_err(), "{json}");
        let (field, reason) = field_of(RateLimitLayer::from_config(&config));
        assert_eq!(field, *expected, "{json}: {reason}");
    }
    // The trusted proxy error repeats the entry and says what to write.
    let config: RateLimitConfig =
        serde_json::from_str(r#"{"trusted_proxies": ["10.0.0.0/8", "10.0.0.1/8"]}"#).unwrap();
    let (_, reason) = field_of(RateLimitLayer::from_config(&config));
    assert!(
        reason.contains("10.0.0.1/8") && reason.contains("10.0.0.0/8"),
        "{reason}"
    );
    // A leaky bucket may have no line at all; a sliding window has no burst.
    for algorithm in ["leaky_bucket", "sliding_window", "sliding_window_approx"] {
        let config: RateLimitConfig =
            serde_json::from_str(&format!(r#"{{"algorithm": "{algorithm}", "burst": 0}}"#))
                .unwrap();
        config.validate().unwrap();
    }
}

#[test]
fn keys_read_from_text_refuse_the_same_values() {
    for bad in ["cookie", "header:a b", "header:"] {
        let error = bad.parse::<Key>().expect_err(bad);
        assert_eq!(error.field, "key", "{bad}");
        assert!(error.to_string().starts_with("`key`: "), "{error}");
    }
    assert!(
        matches!("header:X-Tenant".parse::<Key>(), Ok(Key::Header(name)) if name == "x-tenant")
    );
}

#[test]
fn the_builder_takes_typed_values_and_the_config_follows() {
    let layer = RateLimitLayer::new(10, Duration::from_secs(1))
        .key(Key::Header(http::HeaderName::from_static("x-tenant")))
        .trusted_proxies(["10.0.0.0/8".parse().unwrap(), "::1/128".parse().unwrap()])
        .ipv6_prefix(48)
        .policy_name("tier-a");
    let config = layer.config();
    assert_eq!(config.key, "header:x-tenant");
    assert_eq!(config.trusted_proxies, ["10.0.0.0/8", "::1/128"]);
    config.validate().unwrap();
    // What the builder made, a config makes too.
    let again = RateLimitLayer::from_config(config).unwrap();
    assert_eq!(again.config(), config);
    // Host bits are cleared, as `TrustedProxies::new` does; the config says what is trusted.
    let layer = RateLimitLayer::new(10, Duration::from_secs(1))
        .trusted_proxies(["10.1.2.3/8".parse().unwrap()]);
    assert_eq!(layer.config().trusted_proxies, ["10.0.0.0/8"]);
    // A custom key has no spelling in a config, which keeps its key.
    let custom = RateLimitLayer::new(10, Duration::from_secs(1))
        .key(Key::User)
        .key_extractor(|_: &proxflow_ratelimit::RequestView<'_>| None);
    assert_eq!(custom.config().key, "user");
}

#[test]
#[should_panic(expected = "RateLimitLayer::ipv6_prefix: `ipv6_prefix`: must be between 0 and 128")]
fn the_builder_panics_on_a_prefix_over_128() {
    let _ = RateLimitLayer::new(10, Duration::from_secs(1)).ipv6_prefix(129);
}

#[test]
#[should_panic(expected = "RateLimitLayer::max_keys: `max_keys`: must be at least 1")]
fn the_builder_panics_on_no_keys() {
    let _ = RateLimitLayer::new(10, Duration::from_secs(1)).max_keys(0);
}

#[test]
#[should_panic(expected = "RateLimitLayer::policy_name: `policy_name`: must be a non-empty token")]
fn the_builder_panics_on_a_policy_name_that_is_no_token() {
    let _ = RateLimitLayer::new(10, Duration::from_secs(1)).policy_name("a b");
}

#[test]
#[should_panic(
    expected = "RateLimitLayer::burst: `burst`: burst × per / rate must be at most 100 years"
)]
fn the_builder_panics_on_a_burst_beyond_100_years() {
    let _ = RateLimitLayer::new(1, Duration::from_secs(365 * 24 * 3600)).burst(101);
}

#[test]
#[should_panic(expected = "RateLimitLayer::new: `rate`: must be at least 1")]
fn the_builder_panics_on_a_zero_rate() {
    let _ = RateLimitLayer::new(0, Duration::from_secs(1));
}

#[test]
#[should_panic(expected = "RateLimitLayer::new: `per`: must be a positive duration")]
fn the_builder_panics_on_a_zero_period() {
    let _ = RateLimitLayer::new(10, Duration::ZERO);
}

#[test]
#[should_panic(expected = "RateLimitLayer::new: `rate`: more than one request per nanosecond")]
fn the_builder_panics_on_a_rate_it_cannot_time() {
    let _ = RateLimitLayer::new(10, Duration::from_nanos(5));
}

#[tokio::test(start_paused = true)]
async fn token_bucket_burst_zero_from_the_builder_is_a_capacity_of_one() {
    let app = app(RateLimitLayer::new(10, Duration::from_secs(1))
        .clock(Clock::tokio())
        .burst(0));
    let first = send(&app, from("192.0.2.1")).await;
    assert_eq!(first.status(), StatusCode::OK);
    // The next token is 100 ms away, which the field reports (rounded up to a second).
    assert_eq!(header(&first, "ratelimit"), Some("\"default\";r=0;t=1"));
    assert_eq!(status(&app, from("192.0.2.1")).await, 429);
    advance(Duration::from_millis(100)).await;
    assert_eq!(statuses(&app, 2, || from("192.0.2.1")).await, [200, 429]);
}

#[test]
fn format_errors_say_what_is_allowed() {
    // Unknown fields are refused, with the list of known ones.
    let error = serde_json::from_str::<RateLimitConfig>(r#"{"rate_limit": 5}"#).unwrap_err();
    assert!(error.to_string().contains("`burst`"), "{error}");
    // An unknown algorithm lists the algorithms; YAML and TOML point at the field.
    let error = serde_json::from_str::<RateLimitConfig>(r#"{"algorithm": "fast"}"#).unwrap_err();
    assert!(
        error.to_string().contains("`sliding_window_approx`"),
        "{error}"
    );
    let error = serde_yaml::from_str::<RateLimitConfig>("algorithm: fast").unwrap_err();
    assert!(error.to_string().starts_with("algorithm: "), "{error}");
    let error = toml::from_str::<RateLimitConfig>("algorithm = \"fast\"").unwrap_err();
    assert!(
        error.to_string().contains("algorithm = \"fast\""),
        "{error}"
    );
    let error = serde_json::from_str::<RateLimitConfig>(r#"{"missing_key": "deny"}"#).unwrap_err();
    assert!(error.to_string().contains("expected one of"), "{error}");
    let error = serde_yaml::from_str::<RateLimitConfig>("forwarded_header: x-real-ip").unwrap_err();
    assert!(
        error.to_string().starts_with("forwarded_header: ")
            && error.to_string().contains("`x_forwarded_for`"),
        "{error}"
    );
    for text in [
        r#"{"reject": "430"}"#,
        r#"{"reject": 430}"#,
        r#"{"reject": true}"#,
    ] {
        let error = serde_json::from_str::<RateLimitConfig>(text).unwrap_err();
        assert!(
            error.to_string().contains("`reject`") && error.to_string().contains("`delay`"),
            "{error}"
        );
    }
    let error = serde_yaml::from_str::<RateLimitConfig>("per: 1 parsec").unwrap_err();
    assert!(error.to_string().starts_with("per: "), "{error}");
    // YAML reads an unquoted 429 as the origin writes it.
    let config: RateLimitConfig = serde_yaml::from_str("reject: 429").unwrap();
    assert_eq!(config.reject, Reject::TooManyRequests);
}

/// The origin writes `reject 429`: JSON's `"reject": 429` and TOML's `reject = 429` read as the
/// 429 policy, like YAML's unquoted `reject: 429`.
#[test]
fn reject_429_reads_as_a_number_in_json_and_toml() {
    let json = serde_json::from_str::<RateLimitConfig>(r#"{"reject": 429}"#)
        .map(|c| c.reject)
        .map_err(|e| e.to_string());
    let toml = toml::from_str::<RateLimitConfig>("reject = 429")
        .map(|c| c.reject)
        .map_err(|e| e.to_string());
    for (format, result) in [("JSON", json), ("TOML", toml)] {
        match result {
            Ok(reject) => assert_eq!(reject, Reject::TooManyRequests, "{format}"),
            Err(error) => assert!(
                error.contains("`429`") && error.contains("delay"),
                "{format}: `reject: 429` refused with {error:?}, which says nothing of what \
                 `reject` allows"
            ),
        }
    }
}

/// Quotas whose arithmetic in nanoseconds would overflow (burst × per / rate, or per, beyond
/// 100 years) are refused naming the field, or work: never a panic or a wrapped value.
#[tokio::test(start_paused = true)]
async fn overlong_quotas_are_refused_or_work() {
    let cases = [
        r#"{"algorithm": "token_bucket", "rate": 1, "per": "1day", "burst": 1000000}"#,
        r#"{"algorithm": "leaky_bucket", "rate": 1, "per": "1day", "burst": 1000000}"#,
        r#"{"algorithm": "leaky_bucket", "rate": 1, "per": "500years", "burst": 1}"#,
    ];
    let mut failures = Vec::new();
    for json in cases {
        let config: RateLimitConfig = serde_json::from_str(json).unwrap();
        let layer = match RateLimitLayer::from_config(&config) {
            Err(ConfigError { field, .. }) => {
                assert!(["rate", "per", "burst"].contains(&field), "{json}: {field}");
                continue;
            }
            Ok(layer) => layer.clock(Clock::tokio()),
        };
        let outcome = tokio::spawn(async move {
            let app = app(layer);
            let first = status(&app, from("192.0.2.1")).await;
            advance(Duration::from_secs(1)).await;
            let second = status(&app, from("192.0.2.1")).await;
            (first, second)
        })
        .await;
        match outcome {
            Ok((first, _)) => assert_eq!(first, StatusCode::OK, "{json}"),
            Err(panic) => failures.push(format!("{json}: {panic}")),
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn stats_snapshot_serializes_for_a_dashboard() {
    let layer = RateLimitLayer::new(10, Duration::from_secs(1));
    let json = serde_json::to_value(layer.stats().snapshot()).unwrap();
    for field in [
        "allowed",
        "limited",
        "delayed",
        "dropped",
        "shadow_limited",
        "missing_key",
        "no_client_address",
        "active_keys",
        "key_table_bytes",
    ] {
        assert_eq!(json[field], 0, "{field}");
    }
}

/// The origin's `distributed { redis { address localhost:6379  password secret  db 0 }
/// sync_interval 30s }`, in each format.
const DISTRIBUTED_YAML: &str = "
rate: 100
distributed:
  redis:
    address: localhost:6379
    password: secret
    db: 0
  on_unavailable: fail_closed
  timeout: 20ms
";

#[test]
fn the_distributed_section_reads_from_each_format() {
    let json = r#"{"rate": 100, "distributed": {
        "redis": {"address": "localhost:6379", "password": "secret", "db": 0},
        "on_unavailable": "fail_closed", "timeout": "20ms"}}"#;
    let toml = r#"
rate = 100
[distributed]
on_unavailable = "fail_closed"
timeout = "20ms"
[distributed.redis]
address = "localhost:6379"
password = "secret"
db = 0
"#;
    let yaml: RateLimitConfig = serde_yaml::from_str(DISTRIBUTED_YAML).unwrap();
    assert_eq!(serde_json::from_str::<RateLimitConfig>(json).unwrap(), yaml);
    assert_eq!(toml::from_str::<RateLimitConfig>(toml).unwrap(), yaml);
    let distributed = yaml.distributed.as_ref().unwrap();
    assert_eq!(distributed.redis.address, "localhost:6379");
    assert_eq!(distributed.redis.password.as_deref(), Some("secret"));
    assert_eq!(distributed.redis.db, Some(0));
    assert_eq!(distributed.on_unavailable, OnUnavailable::FailClosed);
    assert_eq!(distributed.timeout, Duration::from_millis(20));
    assert_eq!(distributed.sync_interval, None);
    assert!(
        !format!("{distributed:?}").contains("secret"),
        "Debug hides the password"
    );
    // The defaults: fail_open, 50 ms, prefix `rl:`.
    let bare: RateLimitConfig =
        serde_yaml::from_str("distributed:\n  redis:\n    address: localhost:6379\n").unwrap();
    let bare = bare.distributed.unwrap();
    assert_eq!(bare, DistributedConfig::new("localhost:6379"));
    assert_eq!(bare.on_unavailable, OnUnavailable::FailOpen);
    assert_eq!(bare.timeout, Duration::from_millis(50));
    assert_eq!(bare.key_prefix, "rl:");
}

fn distributed_error(yaml: &str) -> ConfigError {
    let config: RateLimitConfig = serde_yaml::from_str(yaml).unwrap();
    RateLimitLayer::from_config(&config).unwrap_err()
}

/// The origin's `sync_interval 30s`: the synced mode, read from each format.
#[test]
fn the_sync_interval_reads_from_each_format() {
    let yaml: RateLimitConfig = serde_yaml::from_str(
        "distributed:\n  redis: { address: localhost:6379 }\n  sync_interval: 30s\n",
    )
    .unwrap();
    let json: RateLimitConfig = serde_json::from_str(
        r#"{"distributed": {"redis": {"address": "localhost:6379"}, "sync_interval": "30s"}}"#,
    )
    .unwrap();
    let toml: RateLimitConfig = toml::from_str(
        "[distributed]\nsync_interval = \"30s\"\n[distributed.redis]\naddress = \"localhost:6379\"\n",
    )
    .unwrap();
    assert_eq!(json, yaml);
    assert_eq!(toml, yaml);
    let distributed = yaml.distributed.as_ref().unwrap();
    assert_eq!(distributed.sync_interval, Some(Duration::from_secs(30)));
    #[cfg(feature = "redis")]
    assert_eq!(RateLimitLayer::from_config(&yaml).unwrap().config(), &yaml);
}

#[test]
fn a_sync_interval_under_1ms_or_with_fail_closed_is_refused() {
    let error = distributed_error(
        "distributed:\n  redis: { address: localhost:6379 }\n  sync_interval: 500us\n",
    );
    assert_eq!(error.field, "distributed.sync_interval");
    assert!(error.reason.contains("at least 1ms"), "{error}");
    let error = distributed_error(
        "distributed:\n  redis: { address: localhost:6379 }\n  sync_interval: 100ms\n  on_unavailable: fail_closed\n",
    );
    assert_eq!(error.field, "distributed.on_unavailable");
    assert!(error.reason.contains("exact mode only"), "{error}");
}

#[test]
fn sentinel_and_cluster_addresses_are_refused_with_a_clear_error() {
    for (address, what) in [
        ("redis+sentinel://localhost:26379/mymaster", "Sentinel"),
        ("sentinel://localhost:26379", "Sentinel"),
        ("redis://a:6379,b:6379,c:6379", "Cluster"),
        ("a:7000, b:7001", "Cluster"),
        ("redis+cluster://localhost:7000", "Cluster"),
    ] {
        let error = distributed_error(&format!(
            "distributed:\n  redis: {{ address: \"{address}\" }}\n"
        ));
        assert_eq!(error.field, "distributed.redis.address", "{address}");
        assert!(
            error.reason.contains(what) && error.reason.contains("not supported"),
            "{address}: {error}"
        );
    }
}

#[test]
fn a_distributed_timeout_of_zero_is_refused() {
    let error =
        distributed_error("distributed:\n  redis: { address: localhost:6379 }\n  timeout: 0s\n");
    assert_eq!(error.field, "distributed.timeout");
}

#[cfg(not(feature = "redis"))]
#[test]
fn without_the_redis_feature_the_distributed_section_is_refused() {
    let error = distributed_error(DISTRIBUTED_YAML);
    assert_eq!(error.field, "distributed");
    assert!(error.reason.contains("`redis` feature"), "{error}");
}

#[cfg(feature = "redis")]
#[test]
fn with_the_redis_feature_the_layer_is_built_and_its_config_kept() {
    let config: RateLimitConfig = serde_yaml::from_str(DISTRIBUTED_YAML).unwrap();
    let layer = RateLimitLayer::from_config(&config).unwrap();
    assert_eq!(layer.config(), &config);
    assert!(
        distributed_error("distributed:\n  redis: { address: \"http://x\" }\n")
            .reason
            .contains("expected host:port")
    );
    let error = distributed_error("distributed:\n  redis: { address: localhost, db: -1 }\n");
    assert_eq!(error.field, "distributed.redis.db");
}

#[cfg(feature = "redis")]
#[test]
fn the_redis_builder_methods_write_the_distributed_section() {
    use proxflow_ratelimit::redis;
    let layer = RateLimitLayer::new(100, Duration::from_secs(1))
        .redis(redis::Client::open("redis://:secret@localhost:6379/2").unwrap())
        .on_unavailable(OnUnavailable::FailClosed)
        .redis_timeout(Duration::from_millis(20))
        .redis_key_prefix("api:");
    let distributed = layer.config().distributed.clone().unwrap();
    assert_eq!(distributed.redis.address, "localhost:6379");
    assert_eq!(distributed.redis.password.as_deref(), Some("secret"));
    assert_eq!(distributed.redis.db, Some(2));
    assert_eq!(distributed.on_unavailable, OnUnavailable::FailClosed);
    assert_eq!(distributed.timeout, Duration::from_millis(20));
    assert_eq!(distributed.key_prefix, "api:");
    // The config builds the same layer.
    let again = RateLimitLayer::from_config(layer.config()).unwrap();
    assert_eq!(again.config(), layer.config());

    let synced = RateLimitLayer::new(100, Duration::from_secs(1))
        .redis(redis::Client::open("redis://localhost:6379").unwrap())
        .sync_interval(Duration::from_millis(100));
    let distributed = synced.config().distributed.clone().unwrap();
    assert_eq!(distributed.sync_interval, Some(Duration::from_millis(100)));
    assert_eq!(
        RateLimitLayer::from_config(synced.config())
            .unwrap()
            .config(),
        synced.config()
    );
}

#[cfg(feature = "redis")]
#[test]
#[should_panic(expected = "`fail_closed` applies to exact mode only")]
fn fail_closed_panics_in_synced_mode() {
    let _ = RateLimitLayer::new(100, Duration::from_secs(1))
        .sync_interval(Duration::from_millis(100))
        .on_unavailable(OnUnavailable::FailClosed);
}

#[cfg(feature = "redis")]
#[test]
#[should_panic(expected = "at least 1ms")]
fn a_sync_interval_under_1ms_panics() {
    let _ = RateLimitLayer::new(100, Duration::from_secs(1)).sync_interval(Duration::ZERO);
}
