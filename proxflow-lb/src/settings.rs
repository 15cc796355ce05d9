//! What a balancer's builder sets, and the settings in force once it serves.
//!
//! The builder writes a draft; the first `layer`, or the first pick (of the generic form or
//! [`LbHandle::pick`](crate::LbHandle::pick)), fixes it for good, so that every service and
//! handle of one balancer read the same settings without a lock.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use http::HeaderName;
use proxflow_core::clock::nanos;
use proxflow_core::{Clock, Moment};

use crate::config::{ActiveHealth, AdaptiveConfig, HostHeader, LbConfig, PassiveHealth, Policy};
use crate::policy::Nanos;

/// What the builder sets: [`LbConfig`] without the upstreams, and the clock.
#[derive(Debug, Clone)]
pub(crate) struct Draft {
    pub(crate) policy: Policy,
    pub(crate) host: HostHeader,
    pub(crate) forwarded_headers: bool,
    pub(crate) retries: u32,
    pub(crate) slow_start: Duration,
    pub(crate) passive: PassiveHealth,
    pub(crate) health_check: Option<ActiveHealth>,
    pub(crate) panic_mode: bool,
    pub(crate) seed: Option<u64>,
    pub(crate) clock: Clock,
}

impl Draft {
    /// A validated configuration's settings, on the TSC clock.
    pub(crate) fn new(config: &LbConfig) -> Draft {
        Draft {
            policy: config.lb_policy.clone(),
            host: config.host,
            forwarded_headers: config.forwarded_headers,
            retries: config.retries,
            slow_start: config.slow_start,
            passive: config.passive_health.clone(),
            health_check: config.health_check.clone(),
            panic_mode: config.panic_mode,
            seed: config.seed,
            clock: Clock::default(),
        }
    }

    /// The peak-EWMA decay: the policy's, or 10 s for the latency that snapshots show.
    pub(crate) fn decay(&self) -> Duration {
        match &self.policy {
            Policy::PeakEwma { decay } => *decay,
            _ => Duration::from_secs(10),
        }
    }
}

/// The settings in force: fixed when the balancer first serves.
#[derive(Debug)]
pub(crate) struct Running {
    pub(crate) draft: Draft,
    /// The time picks count from: the moment the settings were fixed.
    origin: Moment,
    /// The peak-EWMA decay in nanoseconds.
    pub(crate) decay_nanos: f64,
    /// Header hashing: the header, parsed once.
    pub(crate) hash_header: Option<HeaderName>,
    /// SplitMix64's state over an atomic counter: seeded, lock-free.
    rng: AtomicU64,
    /// Adaptive: when the next sample is due.
    pub(crate) next_update: AtomicU64,
}

impl Running {
    fn new(draft: Draft) -> Running {
        let origin = draft.clock.now();
        let hash_header = match &draft.policy {
            Policy::HeaderHash { header } => HeaderName::try_from(header.as_str()).ok(),
            _ => None,
        };
        let first_update = draft
            .adaptive()
            .map_or(Nanos::MAX, |adaptive| nanos(adaptive.update_interval));
        Running {
            origin,
            decay_nanos: nanos(draft.decay()).max(1) as f64,
            hash_header,
            rng: AtomicU64::new(draft.seed.unwrap_or_else(|| fastrand::u64(..))),
            next_update: AtomicU64::new(first_update),
            draft,
        }
    }

    /// Nanoseconds from the origin to `at`.
    #[inline]
    pub(crate) fn nanos(&self, at: Moment) -> Nanos {
        self.draft.clock.nanos_between(self.origin, at)
    }

    /// Nanoseconds from the origin to now.
    #[inline]
    pub(crate) fn now(&self) -> Nanos {
        self.nanos(self.draft.clock.now())
    }

    /// Takes `draws` states of the generator at once and returns the first; the others
    /// follow by [`crate::policy::random::GOLDEN`] steps, as if drawn one by one.
    #[inline]
    pub(crate) fn draw(&self, draws: u64) -> u64 {
        crate::policy::random::advance(&self.rng, draws)
    }
}

impl Draft {
    pub(crate) fn adaptive(&self) -> Option<&AdaptiveConfig> {
        match &self.policy {
            Policy::Adaptive(adaptive) => Some(adaptive),
            _ => None,
        }
    }
}

/// A balancer's settings: the draft until it serves, then the settings in force. Shared by
/// the pool and each of its upstreams, so that an answer is accounted for with its upstream
/// alone.
#[derive(Debug)]
pub(crate) struct Settings {
    draft: Mutex<Draft>,
    running: OnceLock<Running>,
    /// Counts the changes of the upstream list and of anything a weight depends on but the
    /// clock, so that weights cached between changes are known to be current.
    pub(crate) version: AtomicU64,
}

impl Settings {
    pub(crate) fn new(draft: Draft) -> Settings {
        Settings {
            draft: Mutex::new(draft),
            running: OnceLock::new(),
            version: AtomicU64::new(0),
        }
    }

    /// The settings in force, fixed now if they are not yet.
    #[inline]
    pub(crate) fn running(&self) -> &Running {
        match self.running.get() {
            Some(running) => running,
            None => self.fix(),
        }
    }

    #[cold]
    fn fix(&self) -> &Running {
        // Under the draft's lock, so that a builder call either lands before or panics.
        let draft = self.lock();
        self.running.get_or_init(|| Running::new(draft.clone()))
    }

    /// The settings in force, if the balancer serves already.
    pub(crate) fn get(&self) -> Option<&Running> {
        self.running.get()
    }

    /// A copy of the draft (the settings in force, once fixed).
    pub(crate) fn draft(&self) -> Draft {
        self.lock().clone()
    }

    /// Changes the draft.
    ///
    /// # Panics
    ///
    /// If the settings are fixed already: `method` (`AdaptiveLb::policy`) is named in the
    /// message.
    pub(crate) fn change(&self, method: &str, change: impl FnOnce(&mut Draft)) {
        let mut draft = self.lock();
        if self.running.get().is_some() {
            drop(draft);
            panic!(
                "{method}: the balancer serves already (a service was made, or a pick taken); \
                 configure it before"
            );
        }
        change(&mut draft);
    }

    /// Now, as picks count it; the origin while the balancer does not serve yet.
    pub(crate) fn now_or_origin(&self) -> Nanos {
        self.running.get().map_or(0, Running::now)
    }

    /// After the change is stored, so that a reader of the new version sees it.
    pub(crate) fn changed(&self) {
        self.version.fetch_add(1, Ordering::Release);
    }

    fn lock(&self) -> MutexGuard<'_, Draft> {
        // Nothing panics while holding it.
        self.draft
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
