//! The `ip` key behind reverse proxies, through the layer: with `10.0.0.0/8` trusted, the
//! client is the rightmost address that no trusted proxy wrote in the one header the proxies
//! write (`X-Forwarded-For`, or `Forwarded` when so configured), the other header never read; an untrusted peer's headers are ignored; nothing a client writes to the left of what
//! the proxies appended can change its bucket; IPv6 clients are grouped by /64.

mod common;

use std::time::Duration;

use axum::body::Body;
use axum::Router;
use common::*;
use http::{HeaderName, HeaderValue, Request};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, RngSeed};
use proxflow_core::Clock;
use proxflow_ratelimit::{ForwardedHeader, RateLimitLayer};

const PROXY: &str = "10.0.0.1";

/// One request per hour, by client address, `10.0.0.0/8` trusted.
fn behind_proxies() -> Router {
    app(RateLimitLayer::new(1, Duration::from_secs(3600))
        .clock(Clock::tokio())
        .burst(1)
        .trusted_proxies(["10.0.0.0/8".parse().unwrap()]))
}

/// The same, behind proxies that write only `Forwarded`.
fn behind_forwarded_proxies() -> Router {
    app(RateLimitLayer::new(1, Duration::from_secs(3600))
        .clock(Clock::tokio())
        .burst(1)
        .trusted_proxies(["10.0.0.0/8".parse().unwrap()])
        .forwarded_header(ForwardedHeader::Forwarded))
}

/// A request from `peer` whose forwarding headers are the given raw lines.
fn forwarded(peer: &str, lines: &[(&str, &[u8])]) -> Request<Body> {
    let mut request = from(peer);
    for (name, value) in lines {
        request.headers_mut().append(
            HeaderName::from_bytes(name.as_bytes()).unwrap(),
            HeaderValue::from_bytes(value).expect("a valid header value"),
        );
    }
    request
}

fn xff(peer: &str, value: &str) -> Request<Body> {
    forwarded(peer, &[("x-forwarded-for", value.as_bytes())])
}

#[tokio::test(start_paused = true)]
async fn clients_behind_a_trusted_proxy_are_limited_separately() {
    let app = behind_proxies();
    assert_eq!(status(&app, xff(PROXY, "203.0.113.1")).await, 200);
    assert_eq!(status(&app, xff(PROXY, "203.0.113.2")).await, 200);
    assert_eq!(status(&app, xff(PROXY, "203.0.113.1")).await, 429);
    assert_eq!(status(&app, xff(PROXY, "203.0.113.2")).await, 429);
    // Through a second trusted hop, and written with a port, it is the same client.
    assert_eq!(
        status(&app, xff("10.9.9.9", "203.0.113.1:5555, 10.0.0.5")).await,
        429
    );
    // The proxy itself, with no header, is a client of its own.
    assert_eq!(status(&app, from(PROXY)).await, 200);
    assert_eq!(status(&app, xff(PROXY, "203.0.113.3")).await, 200);
}

#[tokio::test(start_paused = true)]
async fn forwarded_is_read_behind_proxies_that_write_it() {
    let app = behind_forwarded_proxies();
    let fwd = |value: &str| forwarded(PROXY, &[("forwarded", value.as_bytes())]);
    assert_eq!(status(&app, fwd("for=203.0.113.1;proto=https")).await, 200);
    assert_eq!(
        status(&app, fwd("for=203.0.113.1, for=10.0.0.7")).await,
        429,
        "same client, one more hop"
    );
    assert_eq!(
        status(&app, fwd("for=\"[2001:db8::1]:4711\", for=10.0.0.7")).await,
        200
    );
    assert_eq!(
        status(&app, fwd("for=\"[2001:db8::2]\"")).await,
        429,
        "same /64"
    );
}

/// A trusted proxy writes one forwarding header and passes the other on as the client sent
/// it. Whichever the proxies write, a client cannot choose its key with the other one.
#[tokio::test(start_paused = true)]
async fn a_client_cannot_choose_its_key_with_the_header_the_proxies_do_not_write() {
    // The proxy writes `Forwarded`; the client adds an `X-Forwarded-For` of its choosing.
    let app = behind_forwarded_proxies();
    let mut got = Vec::new();
    for i in 0..4 {
        let spoof = format!("6.6.6.{i}");
        let request = forwarded(
            PROXY,
            &[
                ("x-forwarded-for", spoof.as_bytes()),
                ("forwarded", b"for=203.0.113.7"),
            ],
        );
        got.push(status(&app, request).await.as_u16());
    }
    assert_eq!(
        got,
        [200, 429, 429, 429],
        "the client's X-Forwarded-For was read"
    );

    // The proxy writes `X-Forwarded-For` (the default); the client adds a `Forwarded`.
    let app = behind_proxies();
    let mut got = Vec::new();
    for i in 0..4 {
        let spoof = format!("for=6.6.6.{i}");
        let request = forwarded(
            PROXY,
            &[
                ("forwarded", spoof.as_bytes()),
                ("x-forwarded-for", b"203.0.113.7"),
            ],
        );
        got.push(status(&app, request).await.as_u16());
    }
    assert_eq!(got, [200, 429, 429, 429], "the client's Forwarded was read");
    // Nor does a `Forwarded` alone name a client: these proxies do not write it.
    let only_forwarded = forwarded(PROXY, &[("forwarded", b"for=198.51.100.9")]);
    assert_eq!(
        status(&app, only_forwarded).await,
        200,
        "the proxy's own key"
    );
    let only_forwarded = forwarded(PROXY, &[("forwarded", b"for=198.51.100.10")]);
    assert_eq!(
        status(&app, only_forwarded).await,
        429,
        "the proxy's own key"
    );
}

#[tokio::test(start_paused = true)]
async fn a_spoofed_leftmost_entry_cannot_give_a_fresh_bucket() {
    let app = behind_proxies();
    assert_eq!(status(&app, xff(PROXY, "203.0.113.1")).await, 200);
    // The client writes its own X-Forwarded-For; the proxy appends the real address.
    for spoof in [
        "1.2.3.4",
        "10.0.0.2",
        "127.0.0.1",
        "::1",
        "unknown",
        "1.2.3.4, 5.6.7.8",
        "not an address",
        "",
    ] {
        let value = format!("{spoof}, 203.0.113.1");
        assert_eq!(status(&app, xff(PROXY, &value)).await, 429, "{value:?}");
    }
    // Or a header line of its own, before the proxy's.
    let two_lines = forwarded(
        PROXY,
        &[
            ("x-forwarded-for", b"198.51.100.99"),
            ("x-forwarded-for", b"203.0.113.1"),
        ],
    );
    assert_eq!(status(&app, two_lines).await, 429);
    // Or a Forwarded header, which these proxies do not write: never read.
    let both = forwarded(
        PROXY,
        &[
            ("forwarded", b"for=198.51.100.98"),
            ("x-forwarded-for", b"203.0.113.1"),
        ],
    );
    assert_eq!(status(&app, both).await, 429);
}

#[tokio::test(start_paused = true)]
async fn untrusted_peers_headers_are_ignored() {
    let app = behind_proxies();
    let peer = "198.51.100.1";
    assert_eq!(status(&app, xff(peer, "203.0.113.1")).await, 200);
    assert_eq!(status(&app, xff(peer, "203.0.113.2")).await, 429);
    assert_eq!(
        status(&app, forwarded(peer, &[("forwarded", b"for=203.0.113.3")])).await,
        429
    );
    assert_eq!(status(&app, from(peer)).await, 429);
    // ... and do not touch the bucket of the address they name.
    assert_eq!(status(&app, xff(PROXY, "203.0.113.1")).await, 200);
    // Without trusted proxies nothing is believed, even from 10.0.0.1.
    let plain = app_without_proxies();
    assert_eq!(status(&plain, xff(PROXY, "203.0.113.1")).await, 200);
    assert_eq!(status(&plain, xff(PROXY, "203.0.113.2")).await, 429);
}

fn app_without_proxies() -> Router {
    app(RateLimitLayer::new(1, Duration::from_secs(3600))
        .clock(Clock::tokio())
        .burst(1))
}

#[tokio::test(start_paused = true)]
async fn ipv6_clients_in_one_prefix_share_a_bucket() {
    let app = app_without_proxies();
    assert_eq!(status(&app, from("[2001:db8:1:2::1]:1000")).await, 200);
    assert_eq!(
        status(&app, from("[2001:db8:1:2:ffff:ffff:ffff:fffe]:1000")).await,
        429,
        "same /64"
    );
    assert_eq!(
        status(&app, from("[2001:db8:1:3::1]:1000")).await,
        200,
        "next /64"
    );
    // IPv4-mapped addresses are their IPv4 address.
    assert_eq!(status(&app, from("192.0.2.1")).await, 200);
    assert_eq!(status(&app, from("[::ffff:192.0.2.1]:1000")).await, 429);
    // Behind a proxy too.
    let app = behind_proxies();
    assert_eq!(status(&app, xff(PROXY, "2001:db8:5:5::1")).await, 200);
    assert_eq!(
        status(&app, xff(PROXY, "[2001:db8:5:5::abcd]:443")).await,
        429
    );
}

#[tokio::test(start_paused = true)]
async fn the_prefix_is_configurable() {
    let per_address = app(RateLimitLayer::new(1, Duration::from_secs(3600))
        .clock(Clock::tokio())
        .burst(1)
        .ipv6_prefix(128));
    assert_eq!(status(&per_address, from("[2001:db8::1]:1")).await, 200);
    assert_eq!(status(&per_address, from("[2001:db8::2]:1")).await, 200);
    let per_48 = app(RateLimitLayer::new(1, Duration::from_secs(3600))
        .clock(Clock::tokio())
        .burst(1)
        .ipv6_prefix(48));
    assert_eq!(status(&per_48, from("[2001:db8:1:1::1]:1")).await, 200);
    assert_eq!(status(&per_48, from("[2001:db8:1:ffff::1]:1")).await, 429);
}

// --- Hostile headers, property-tested through the Router ------------------------------------

/// Pieces a hostile header is made of: addresses (some trusted), the syntax of both headers,
/// and stray bytes (non-ASCII included).
fn piece() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        any::<[u8; 4]>().prop_map(|o| format!("{}.{}.{}.{}", o[0], o[1], o[2], o[3]).into_bytes()),
        (0u8..=255, 0u8..=255).prop_map(|(a, b)| format!("10.0.{a}.{b}").into_bytes()),
        any::<[u16; 8]>().prop_map(|s| {
            std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7])
                .to_string()
                .into_bytes()
        }),
        prop::sample::select(vec![
            "for=",
            "For=",
            "by=",
            ";",
            ",",
            ", ",
            "\"",
            "[",
            "]",
            ":",
            ":80",
            ":_hidden",
            "%eth0",
            "unknown",
            "_obf",
            " ",
            "\t",
            "::ffff:",
            "0x7f000001",
            "1e3",
            "=",
            ",,",
            "for=\"[",
            "::",
            ".",
            "/",
            "-1",
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
        prop::collection::vec(prop_oneof![0x20u8..=0x7e, 0x80u8..=0xff, Just(b'\t')], 1..6),
    ]
}

/// A header value a client could send.
fn hostile() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(piece(), 0..12).prop_map(|pieces| pieces.concat())
}

/// Real clients: any IPv4 address outside 10.0.0.0/8.
fn client_v4() -> impl Strategy<Value = String> {
    any::<[u8; 4]>()
        .prop_filter("not a trusted proxy", |o| o[0] != 10)
        .prop_map(|o| format!("{}.{}.{}.{}", o[0], o[1], o[2], o[3]))
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 256,
        rng_seed: RngSeed::Fixed(0x7072_6f78_666c_6f77),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(config())]

    /// Whatever a client writes to the left of what the trusted proxy appended, it stays in
    /// the bucket of its real address.
    #[test]
    fn garbage_left_of_the_proxies_never_yields_a_fresh_bucket(
        garbage in hostile(),
        client in client_v4(),
        as_line in any::<bool>(),
        hops in 0usize..3,
    ) {
        let runtime = paused_runtime();
        runtime.block_on(async {
            let app = behind_proxies();
            let proxies: String = (0..hops).map(|i| format!(", 10.1.1.{i}")).collect();
            let honest = format!("{client}{proxies}");
            prop_assert_eq!(status(&app, xff(PROXY, &honest)).await, 200);

            let mut appended = garbage.clone();
            let request = if as_line {
                forwarded(PROXY, &[("x-forwarded-for", &garbage), ("x-forwarded-for", honest.as_bytes())])
            } else {
                appended.extend_from_slice(b", ");
                appended.extend_from_slice(honest.as_bytes());
                forwarded(PROXY, &[("x-forwarded-for", &appended)])
            };
            prop_assert_eq!(status(&app, request).await, 429);

            // The same through `Forwarded`.
            let app = behind_forwarded_proxies();
            let honest: String = std::iter::once(format!("for={client}"))
                .chain((0..hops).map(|i| format!("for=10.1.1.{i};proto=https")))
                .collect::<Vec<_>>()
                .join(", ");
            let plain = forwarded(PROXY, &[("forwarded", honest.as_bytes())]);
            prop_assert_eq!(status(&app, plain).await, 200);
            let mut appended = garbage.clone();
            appended.extend_from_slice(b", ");
            appended.extend_from_slice(honest.as_bytes());
            prop_assert_eq!(status(&app, forwarded(PROXY, &[("forwarded", &appended)])).await, 429);
            Ok(())
        })?;
    }

    /// An untrusted peer is its own bucket whatever its headers say.
    #[test]
    fn an_untrusted_peer_cannot_choose_its_key(xff_value in hostile(), forwarded_value in hostile()) {
        let runtime = paused_runtime();
        runtime.block_on(async {
            let app = behind_proxies();
            prop_assert_eq!(status(&app, from("198.51.100.1")).await, 200);
            let request = forwarded(
                "198.51.100.1",
                &[("x-forwarded-for", &xff_value), ("forwarded", &forwarded_value)],
            );
            prop_assert_eq!(status(&app, request).await, 429);
            Ok(())
        })?;
    }

    /// Any headers from a trusted peer: no panic, an answer of the limiter's.
    #[test]
    fn hostile_headers_from_a_proxy_never_panic(
        lines in prop::collection::vec((any::<bool>(), hostile()), 0..4),
    ) {
        let runtime = paused_runtime();
        runtime.block_on(async {
            let app = behind_proxies();
            let lines: Vec<(&str, &[u8])> = lines
                .iter()
                .map(|(x, v)| (if *x { "x-forwarded-for" } else { "forwarded" }, v.as_slice()))
                .collect();
            let first = status(&app, forwarded(PROXY, &lines)).await;
            let second = status(&app, forwarded(PROXY, &lines)).await;
            prop_assert_eq!((first.as_u16(), second.as_u16()), (200, 429));
            Ok(())
        })?;
    }
}
