//! Bounded memory under a flood of distinct clients: 2,000,000 IPv4 addresses, one request
//! each, through the `RateLimit` service (no Router, for speed). The key table never holds more
//! than `max_keys` keys and costs at most nginx's 128 bytes per key.
//!
//! The floods use both cores (two threads calling one service), so they run on the real clock
//! rather than a paused runtime's; with one request per hour per key, every key stays active
//! for the whole flood (the worst case for eviction) and no decision depends on timing.

use std::convert::Infallible;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::FutureExt;
use http::{Request, Response, StatusCode};
use http_body_util::Empty;
use proxflow_core::Clock;
use proxflow_ratelimit::{ClientAddr, RateLimitLayer, StatsSnapshot};
use tower::{Layer, Service, ServiceExt};

/// nginx's `limit_req` keeps 128 bytes per key.
const NGINX_BYTES_PER_KEY: u64 = 128;

/// The floods run one at a time, so that the resident-memory figures are each flood's own.
static ONE_FLOOD_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Resident memory of this process, in bytes (Linux).
fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

fn request_from(ip: Ipv4Addr) -> Request<()> {
    let mut request = Request::new(());
    request
        .extensions_mut()
        .insert(ClientAddr(SocketAddr::new(ip.into(), 40000)));
    request
}

/// One request from `ip` through `service`: its status.
async fn call<S, B>(service: &mut S, ip: Ipv4Addr) -> StatusCode
where
    S: Service<Request<()>, Response = Response<B>>,
    S::Error: std::fmt::Debug,
{
    let response = service
        .ready()
        .await
        .unwrap()
        .call(request_from(ip))
        .await
        .unwrap();
    response.status()
}

/// Distinct addresses: 11.0.0.0 onwards (2,000,000 of them end in 11.30.x.x).
fn nth_address(n: u32) -> Ipv4Addr {
    Ipv4Addr::from(0x0B00_0000 + n)
}

fn one_per_hour() -> RateLimitLayer {
    RateLimitLayer::new(1, Duration::from_secs(3600)).burst(5)
}

/// What a flood measured.
struct Flood {
    snapshot: StatsSnapshot,
    peak_keys: u64,
    /// Resident memory at the highest checkpoint, minus before the layer was built.
    rss_growth: u64,
    seconds: f64,
}

/// One request from each of `clients` new addresses, on two threads; checks the bound every
/// 100,000 requests.
fn flood(layer: RateLimitLayer, clients: u32, bound: u64) -> Flood {
    let _one = ONE_FLOOD_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let rss_before = resident_bytes();
    let started = Instant::now();
    let stats = layer.stats();
    let service = layer.layer(tower::service_fn(|_: Request<()>| async {
        Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
    }));
    let peak_keys = AtomicU64::new(0);
    let peak_rss = AtomicU64::new(0);
    std::thread::scope(|scope| {
        for thread in 0..2 {
            let mut service = service.clone();
            let (stats, peak_keys, peak_rss) = (&stats, &peak_keys, &peak_rss);
            scope.spawn(move || {
                for (i, n) in (thread..clients).step_by(2).enumerate() {
                    // The inner service is ready at once and nothing is held (`reject: 429`).
                    let status = call(&mut service, nth_address(n))
                        .now_or_never()
                        .expect("no request waits");
                    assert_eq!(status, StatusCode::OK, "a new client is admitted");
                    if (i + 1) % 50_000 == 0 {
                        let snapshot = stats.snapshot();
                        peak_keys.fetch_max(snapshot.active_keys, Ordering::Relaxed);
                        peak_rss.fetch_max(resident_bytes(), Ordering::Relaxed);
                        assert!(
                            snapshot.active_keys <= bound,
                            "{} keys after about {} clients; max_keys {bound}",
                            snapshot.active_keys,
                            2 * (i + 1)
                        );
                    }
                }
            });
        }
    });
    let snapshot = stats.snapshot();
    assert_eq!(snapshot.allowed, u64::from(clients));
    assert_eq!(snapshot.limited, 0);
    assert!(snapshot.active_keys <= bound);
    let rss_growth = peak_rss
        .into_inner()
        .max(resident_bytes())
        .saturating_sub(rss_before);
    Flood {
        snapshot,
        peak_keys: peak_keys.into_inner(),
        rss_growth,
        seconds: started.elapsed().as_secs_f64(),
    }
}

fn report(name: &str, max_keys: u64, flood: &Flood) {
    let s = &flood.snapshot;
    eprintln!(
        "{name}: max_keys {max_keys}, 2,000,000 clients in {:.1} s: peak {} keys, {} at the end; \
         key_table_bytes {} = {:.1} bytes per key of max_keys ({:.1} per key held); resident \
         memory grew {:.1} MiB",
        flood.seconds,
        flood.peak_keys,
        s.active_keys,
        s.key_table_bytes,
        s.key_table_bytes as f64 / max_keys as f64,
        s.key_table_bytes as f64 / s.active_keys as f64,
        flood.rss_growth as f64 / 1_048_576.0,
    );
}

#[test]
fn two_million_addresses_with_max_keys_100k() {
    let flood = flood(one_per_hour().max_keys(100_000), 2_000_000, 100_000);
    report("max_keys(100_000)", 100_000, &flood);
    assert!(flood.snapshot.active_keys > 50_000, "the table was used");
    assert!(
        flood.snapshot.key_table_bytes / 100_000 <= NGINX_BYTES_PER_KEY,
        "{} bytes for 100,000 keys",
        flood.snapshot.key_table_bytes
    );
    // A check independent of the table's own figure: the process grew by less than the bound
    // allows (128 bytes x 100,000 = 12.2 MiB), far from 2,000,000 keys' worth.
    assert!(
        flood.rss_growth <= NGINX_BYTES_PER_KEY * 100_000,
        "resident memory grew {} bytes",
        flood.rss_growth
    );
}

#[test]
fn two_million_addresses_with_the_default_max_keys() {
    let layer = one_per_hour();
    assert_eq!(layer.config().max_keys, 1_000_000, "the default");
    let flood = flood(layer, 2_000_000, 1_000_000);
    report("default max_keys", 1_000_000, &flood);
    assert!(flood.snapshot.active_keys > 500_000);
    assert!(flood.snapshot.key_table_bytes / 1_000_000 <= NGINX_BYTES_PER_KEY);
    assert!(
        flood.rss_growth <= NGINX_BYTES_PER_KEY * 1_000_000,
        "resident memory grew {} bytes",
        flood.rss_growth
    );
}

#[tokio::test(start_paused = true)]
async fn a_limited_client_is_not_freed_by_a_flood_of_new_keys() {
    let layer = RateLimitLayer::new(10, Duration::from_secs(1))
        .clock(Clock::tokio())
        .burst(5)
        .max_keys(10_000);
    let stats = layer.stats();
    let mut service = layer.layer(tower::service_fn(|_: Request<()>| async {
        Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
    }));
    let attacker = Ipv4Addr::new(203, 0, 113, 66);
    for _ in 0..5 {
        assert_eq!(call(&mut service, attacker).await, StatusCode::OK);
    }
    assert_eq!(
        call(&mut service, attacker).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    // 100,000 new clients, ten times the table, each with a fresh key.
    for n in 0..100_000 {
        call(&mut service, nth_address(n)).await;
    }
    assert!(stats.snapshot().active_keys <= 10_000);
    assert_eq!(
        call(&mut service, attacker).await,
        StatusCode::TOO_MANY_REQUESTS,
        "the flood evicted the limited client's state and gave it a full bucket"
    );
}

/// `max_keys` is exact whatever its value: a count over the whole table bounds the keys, not the
/// shards' room (which is a quarter more than an even share, and need not divide `max_keys`).
#[tokio::test(start_paused = true)]
async fn max_keys_is_exact_when_not_a_multiple_of_64() {
    let layer = RateLimitLayer::new(10, Duration::from_secs(1))
        .clock(Clock::tokio())
        .max_keys(100);
    let stats = layer.stats();
    let mut service = layer.layer(tower::service_fn(|_: Request<()>| async {
        Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
    }));
    let mut peak = 0;
    for n in 0..10_000 {
        call(&mut service, nth_address(n)).await;
        peak = peak.max(stats.snapshot().active_keys);
    }
    assert!(peak <= 100, "max_keys(100) held {peak} keys");
}

fn one_per_hour_without_burst(max_keys: usize) -> RateLimitLayer {
    RateLimitLayer::new(1, Duration::from_secs(3600))
        .clock(Clock::tokio())
        .burst(1)
        .max_keys(max_keys)
}

fn service_for(
    layer: RateLimitLayer,
) -> impl Service<
    Request<()>,
    Response = Response<proxflow_ratelimit::LayerBody<Empty<Bytes>>>,
    Error = Infallible,
> {
    layer.layer(tower::service_fn(|_: Request<()>| async {
        Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
    }))
}

/// A table with room keeps every active client's state: none gets a fresh burst because its
/// key shared a small shard with others. Small bounds, one not a multiple of its shard count.
#[tokio::test(start_paused = true)]
async fn active_clients_keep_their_state_while_the_table_has_room() {
    for (max_keys, clients) in [
        (64, 16),
        (100, 40),
        (1000, 800),
        (5421, 4800),
        (10_000, 9000),
    ] {
        let mut service = service_for(one_per_hour_without_burst(max_keys));
        for n in 0..clients {
            assert_eq!(call(&mut service, nth_address(n)).await, StatusCode::OK);
        }
        let mut fresh = 0;
        for n in 0..clients {
            if call(&mut service, nth_address(n)).await == StatusCode::OK {
                fresh += 1;
            }
        }
        assert_eq!(
            fresh, 0,
            "max_keys {max_keys}, {clients} clients: {fresh} got a fresh burst"
        );
    }
}

/// A new client arriving at a full table is limited like any other: its key is stored, at the
/// cost of the key closest to idle.
#[tokio::test(start_paused = true)]
async fn a_new_client_is_limited_when_the_table_is_full() {
    for max_keys in [100, 5421] {
        let layer = one_per_hour_without_burst(max_keys);
        let stats = layer.stats();
        let mut service = service_for(layer);
        for n in 0..10 * max_keys as u32 {
            call(&mut service, nth_address(n)).await;
        }
        // Full, give or take the batch its last eviction freed.
        assert!(stats.snapshot().active_keys > max_keys as u64 * 9 / 10);
        for n in 100_000..100_200 {
            let mut admitted = 0;
            for _ in 0..5 {
                if call(&mut service, nth_address(n)).await == StatusCode::OK {
                    admitted += 1;
                }
            }
            assert_eq!(
                admitted, 1,
                "max_keys {max_keys}: a new client with burst 1 was admitted {admitted} times"
            );
        }
    }
}

/// `max_keys` bounds the whole layer: every quota of a quota resolver shares one table.
#[tokio::test(start_paused = true)]
async fn max_keys_bounds_all_quota_tiers_together() {
    let layer = RateLimitLayer::new(10, Duration::from_secs(1))
        .clock(Clock::tokio())
        .max_keys(1024)
        .quota_resolver(|request: &proxflow_ratelimit::RequestView<'_>| {
            let ClientAddr(addr) = request.extensions.get::<ClientAddr>()?;
            let tier = match addr.ip() {
                std::net::IpAddr::V4(v4) => v4.octets()[3] % 3,
                std::net::IpAddr::V6(_) => 0,
            };
            (tier > 0).then(|| proxflow_ratelimit::Quota {
                rate: 10 * u32::from(tier),
                per: Duration::from_secs(1),
                burst: 5,
            })
        });
    let stats = layer.stats();
    let mut service = layer.layer(tower::service_fn(|_: Request<()>| async {
        Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
    }));
    for n in 0..30_000 {
        call(&mut service, nth_address(n)).await;
    }
    let keys = stats.snapshot().active_keys;
    assert!(
        keys <= 1024,
        "max_keys(1024) with three quotas held {keys} keys"
    );
}
