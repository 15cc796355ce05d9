//! The live dashboard: a page at the configured path (`/dashboard` by default), kept up to
//! date by Server-Sent Events, and the same figures as JSON and in the Prometheus format.
//!
//! - `<path>`: the page (self-contained: no script or style from elsewhere).
//! - `<path>/events`: Server-Sent Events. A `history` event first (every kept sample and the
//!   breakers' transitions, so that the charts fill at once), then a `sample` event every
//!   `update_interval`. The page's `EventSource` reconnects by itself (after a gateway restart
//!   too), and gets the history again.
//! - `<path>/stats`: JSON: the latest sample, the transitions kept, and each layer's raw
//!   snapshot.
//! - `/metrics`: the counters and gauges in the Prometheus text format ([`metrics`]).
//!
//! A sampler task reads every layer's counters each `update_interval` and turns the difference
//! with the previous reading into a [`Sample`]: request and error rates, latency percentiles
//! (overall and per route), each upstream's weight, predicted load, share, latency, health and
//! breaker state, the rate limiter's admissions and refusals, the cache's hit ratio. It keeps
//! the last [`HISTORY`] of them, and ends when the router is dropped.

pub mod metrics;
pub mod sample;
pub mod transitions;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures_util::stream::{self, Stream, StreamExt};
use http::header;
use proxflow_core::ConfigError;
use proxflow_lb::LoadMetric;
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

use self::sample::{wall_ms, Context, Reading};
pub use self::sample::{
    BreakerSample, CacheSample, RateLimitSample, RouteSample, Sample, UpstreamSample,
};
pub use self::transitions::{Transition, Transitions};
use super::config::DashboardConfig;
use super::traffic::Traffic;

/// How much history the dashboard keeps (and its charts show).
pub const HISTORY: Duration = Duration::from_secs(300);

/// The shortest `update_interval` accepted.
pub const MIN_INTERVAL: Duration = Duration::from_millis(50);

/// How long a disconnected page waits before it reconnects (the `retry` of the event stream).
const RETRY: Duration = Duration::from_secs(1);

/// What the dashboard reads: each layer's handle, and the gateway's own traffic figures.
#[derive(Clone)]
pub struct Sources {
    /// The rate limiter on `/api`.
    pub ratelimit: proxflow_ratelimit::Stats,
    /// The breakers, one per upstream, keyed by its address.
    pub breakers: proxflow_breaker::KeyedBreakerHandle,
    /// The breakers' changes of state (give [`Transitions::recorder`] to their layer's
    /// `on_state_change`).
    pub transitions: Transitions,
    /// The balancer.
    pub lb: proxflow_lb::LbHandle,
    /// The adaptive policy's load sample (the unit of its predicted load), when the balancer
    /// uses that policy.
    pub lb_load: Option<LoadMetric>,
    /// The cache on `/api`.
    pub cache: proxflow_cache::CacheStats,
    /// The upstreams' names by address (the balancer and the breakers know addresses).
    pub names: Vec<(String, SocketAddr)>,
    /// Requests, errors, latency and requests in flight.
    pub traffic: Traffic,
}

impl Sources {
    /// Each layer's raw figures, as `<path>/stats` shows them beside the latest sample.
    pub fn snapshot(&self) -> serde_json::Value {
        serde_json::json!({
            "traffic": self.traffic.snapshot(),
            "ratelimit": self.ratelimit.snapshot(),
            "breakers": self.breakers.snapshot(),
            "lb": self.lb.snapshot(),
            "cache": self.cache.snapshot(),
            "upstreams": self.names.iter().map(|(name, addr)| {
                serde_json::json!({"name": name, "address": addr.to_string()})
            }).collect::<Vec<_>>(),
        })
    }

    /// Every counter now; the connections seen since the last call when `take_connections`.
    fn read(&self, take_connections: bool) -> Reading {
        Reading {
            at: Instant::now(),
            wall_ms: wall_ms(),
            traffic: self.traffic.read(),
            connections: if take_connections {
                self.traffic.take_connections()
            } else {
                0
            },
            ratelimit: self.ratelimit.snapshot(),
            breakers: self.breakers.snapshot(),
            lb: self.lb.snapshot(),
            cache: self.cache.snapshot(),
        }
    }

    fn context(&self) -> Context<'_> {
        Context {
            names: &self.names,
            load: self.lb_load,
        }
    }
}

/// A sample and its JSON, written once for every page that receives it.
#[derive(Debug)]
struct Published {
    sample: Sample,
    json: String,
}

impl Published {
    fn new(sample: Sample) -> Arc<Published> {
        let json = serde_json::to_string(&sample).expect("a sample serializes");
        Arc::new(Published { sample, json })
    }
}

/// What the handlers share; the sampler holds it weakly.
struct Shared {
    sources: Sources,
    interval: Duration,
    capacity: usize,
    history: Mutex<VecDeque<Arc<Published>>>,
    /// A receiver of the sampler's updates, cloned for each event stream.
    latest: watch::Receiver<Arc<Published>>,
}

impl Shared {
    fn keep(&self, published: &Arc<Published>) {
        let mut history = self.history.lock().unwrap_or_else(PoisonError::into_inner);
        if history.len() == self.capacity {
            history.pop_front();
        }
        history.push_back(Arc::clone(published));
    }

    /// The `history` event's data (every kept sample and transition), and the number of the
    /// last sample in it.
    fn history_json(&self) -> (String, u64) {
        let history = self.history.lock().unwrap_or_else(PoisonError::into_inner);
        let last = history.back().map_or(0, |p| p.sample.seq);
        let mut json = String::with_capacity(history.iter().map(|p| p.json.len() + 1).sum());
        json.push_str("{\"interval_ms\":");
        json.push_str(&self.interval.as_millis().to_string());
        json.push_str(",\"samples\":[");
        for (i, published) in history.iter().enumerate() {
            if i > 0 {
                json.push(',');
            }
            json.push_str(&published.json);
        }
        drop(history);
        json.push_str("],\"transitions\":");
        json.push_str(&serde_json::to_string(&self.transitions()).expect("serializes"));
        json.push('}');
        (json, last)
    }

    /// The kept samples numbered after `after` and before `before`.
    fn between(&self, after: u64, before: u64) -> Vec<Arc<Published>> {
        let history = self.history.lock().unwrap_or_else(PoisonError::into_inner);
        history
            .iter()
            .filter(|p| p.sample.seq > after && p.sample.seq < before)
            .cloned()
            .collect()
    }

    fn transitions(&self) -> Vec<Transition> {
        let context = self.sources.context();
        self.sources
            .transitions
            .after(0)
            .iter()
            .map(|t| sample::named(t, &context))
            .collect()
    }
}

/// The page, its event stream, its figures as JSON, and `/metrics`; starts the sampler (a
/// task of the current runtime), which ends when the router is dropped.
///
/// # Errors
///
/// `path` is not an absolute path below `/` (`/dashboard`), or `update_interval` is shorter
/// than [`MIN_INTERVAL`].
///
/// # Panics
///
/// Outside a tokio runtime.
pub fn router(sources: Sources, config: &DashboardConfig) -> Result<Router, ConfigError> {
    let path = config.path.trim_end_matches('/').to_string();
    let plain = path
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"/-_.~".contains(&b));
    if !path.starts_with('/') || !plain || path.contains("//") || path == "/metrics" {
        return Err(ConfigError::new(
            "path",
            format!(
                "an absolute path below `/` of letters, digits and `/-_.~`, other than \
                 `/metrics`, like `/dashboard`; got {:?}",
                config.path
            ),
        ));
    }
    let interval = config.update_interval;
    if interval < MIN_INTERVAL {
        return Err(ConfigError::new(
            "update_interval",
            format!("at least {MIN_INTERVAL:?}; got {interval:?}"),
        ));
    }
    let capacity = usize::try_from(HISTORY.as_nanos().div_ceil(interval.as_nanos()))
        .unwrap_or(usize::MAX)
        .clamp(2, 100_000);

    let first = sources.read(true);
    let context = sources.context();
    let first_sample = Published::new(Sample::between(
        0,
        &first,
        &first,
        &context,
        sources
            .transitions
            .after(0)
            .iter()
            .map(|t| sample::named(t, &context))
            .collect(),
    ));
    let (sender, latest) = watch::channel(Arc::clone(&first_sample));
    let shared = Arc::new(Shared {
        sources,
        interval,
        capacity,
        history: Mutex::new(VecDeque::from([first_sample])),
        latest,
    });
    tokio::spawn(sample_every(Arc::downgrade(&shared), sender, first));

    let page = PAGE
        .replace("{{PATH}}", &path)
        .replace("{{INTERVAL_MS}}", &interval.as_millis().to_string())
        .replace("{{HISTORY_S}}", &HISTORY.as_secs().to_string());
    Ok(Router::new()
        .route(&path, get(move || async move { Html(page) }))
        .route(&format!("{path}/stats"), get(stats))
        .route(&format!("{path}/events"), get(events))
        .route("/metrics", get(prometheus))
        .with_state(shared))
}

/// Takes a sample every interval until the router (the last strong reference) is gone.
async fn sample_every(
    shared: Weak<Shared>,
    sender: watch::Sender<Arc<Published>>,
    mut before: Reading,
) {
    let Some(interval) = shared.upgrade().map(|shared| shared.interval) else {
        return;
    };
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut seq = 0;
    let mut last_transition = sender
        .borrow()
        .sample
        .transitions
        .last()
        .map_or(0, |t| t.id);
    loop {
        ticker.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let sources = &shared.sources;
        let now = sources.read(true);
        let context = sources.context();
        let transitions: Vec<Transition> = sources
            .transitions
            .after(last_transition)
            .iter()
            .map(|t| sample::named(t, &context))
            .collect();
        last_transition = transitions.last().map_or(last_transition, |t| t.id);
        seq += 1;
        let published = Published::new(Sample::between(seq, &before, &now, &context, transitions));
        shared.keep(&published);
        sender.send_replace(published);
        before = now;
    }
}

/// `<path>/stats`.
async fn stats(State(shared): State<Arc<Shared>>) -> Json<serde_json::Value> {
    let mut figures = shared.sources.snapshot();
    let latest = Arc::clone(&shared.latest.borrow());
    figures["sample"] = serde_json::to_value(&latest.sample).expect("serializes");
    figures["transitions"] = serde_json::to_value(shared.transitions()).expect("serializes");
    figures["update_interval_ms"] = (shared.interval.as_secs_f64() * 1e3).into();
    Json(figures)
}

/// `/metrics`.
async fn prometheus(State(shared): State<Arc<Shared>>) -> Response {
    let now = shared.sources.read(false);
    let latest = Arc::clone(&shared.latest.borrow());
    let text = metrics::render(&now, &latest.sample, &shared.sources.context());
    ([(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], text).into_response()
}

/// `<path>/events`.
async fn events(
    State(shared): State<Arc<Shared>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let mut latest = shared.latest.clone();
    latest.borrow_and_update();
    let (history, sent) = shared.history_json();
    let history = Event::default().event("history").retry(RETRY).data(history);
    let follow = Follow {
        latest,
        shared: Arc::downgrade(&shared),
        sent,
        stop: Box::pin(stop_signal()),
    };
    // Every sample once, in order: the watch channel keeps only the newest, so the ones a
    // slow reader missed are taken from the history.
    let updates = stream::unfold(follow, |mut follow| async move {
        let newest = loop {
            tokio::select! {
                changed = follow.latest.changed() => changed.ok()?,
                () = &mut follow.stop => return None,
            }
            let newest = Arc::clone(&follow.latest.borrow_and_update());
            // Already in the history event when it came in meanwhile.
            if newest.sample.seq > follow.sent {
                break newest;
            }
        };
        let mut batch = match follow.shared.upgrade() {
            Some(shared) if newest.sample.seq > follow.sent + 1 => {
                shared.between(follow.sent, newest.sample.seq)
            }
            _ => Vec::new(),
        };
        follow.sent = newest.sample.seq;
        batch.push(newest);
        let events = batch
            .into_iter()
            .map(|p| Ok(Event::default().event("sample").data(&p.json)));
        Some((stream::iter(events), follow))
    })
    .flatten();
    Sse::new(stream::once(async move { Ok(history) }).chain(updates))
        .keep_alive(KeepAlive::default())
}

/// What an event stream follows. It holds the router's state weakly: when the sampler ends
/// (the router is dropped), `latest` fails and the stream ends with it.
struct Follow<S> {
    latest: watch::Receiver<Arc<Published>>,
    shared: Weak<Shared>,
    /// The number of the last sample sent.
    sent: u64,
    stop: std::pin::Pin<Box<S>>,
}

/// Completes when the process is asked to stop (SIGINT, SIGTERM: what
/// [`serve`](crate::serve) stops on), so that its drain does not wait on open pages, whose
/// streams never end by themselves. Never completes where the signals cannot be listened to.
/// Listening replaces the signals' default action for the process (tokio's signal handling),
/// as `serve` does anyway; it starts with the first page that connects.
async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let (Ok(mut interrupt), Ok(mut terminate)) = (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        ) {
            tokio::select! {
                Some(()) = interrupt.recv() => return,
                Some(()) = terminate.recv() => return,
                else => {}
            }
        }
    }
    std::future::pending::<()>().await;
}

/// The page; `{{PATH}}`, `{{INTERVAL_MS}}` and `{{HISTORY_S}}` are filled in.
const PAGE: &str = include_str!("dashboard/page.html");
