//! The breaker a layer, its clones and its handles share: the builder's settings until its
//! first use, then the breaker made from them.

use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use proxflow_core::Clock;

use crate::breaker::{Breaker, OnStateChange};
use crate::config::BreakerConfig;
use crate::machine::Settings;

/// What the builder sets, besides the classifier (whose type the builder changes).
#[derive(Clone)]
pub(crate) struct Setup {
    pub(crate) config: BreakerConfig,
    pub(crate) name: Arc<str>,
    pub(crate) on_change: Option<OnStateChange>,
    pub(crate) clock: Clock,
}

impl Setup {
    pub(crate) fn new(config: BreakerConfig) -> Setup {
        Setup {
            config,
            name: Arc::from("default"),
            on_change: None,
            clock: Clock::tsc(),
        }
    }
}

/// One breaker, from the layer's construction on. Builder calls change its setup until the
/// breaker is made, at its first use (a service made, a handle read or told something), so
/// that a handle taken before them controls the breaker that serves. A service never reads the
/// setup per call: it holds the breaker itself.
pub(crate) struct Shared {
    setup: Mutex<Setup>,
    breaker: OnceLock<Arc<Breaker>>,
}

impl Shared {
    pub(crate) fn new(setup: Setup) -> Arc<Shared> {
        Arc::new(Shared {
            setup: Mutex::new(setup),
            breaker: OnceLock::new(),
        })
    }

    /// The setup, read-only once the breaker is made.
    pub(crate) fn setup(&self) -> MutexGuard<'_, Setup> {
        // Nothing panics while holding it: a poisoned setup would still be a valid one.
        self.setup
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Applies `change` to the setup for the builder method `method`.
    ///
    /// # Panics
    ///
    /// If the breaker is already made, or if the changed configuration is invalid: the message
    /// names the method and the field.
    pub(crate) fn configure(&self, method: &str, change: impl FnOnce(&mut Setup)) {
        let mut setup = self.setup();
        if self.breaker.get().is_some() {
            drop(setup);
            panic!(
                "CircuitBreakerLayer::{method} called once the breaker is in use (a service was \
                 made or a handle read it): configure the layer before that"
            );
        }
        let mut changed = setup.clone();
        change(&mut changed);
        if let Err(error) = changed.config.validate() {
            drop(setup);
            panic!("CircuitBreakerLayer::{method}: {error}");
        }
        *setup = changed;
    }

    /// The breaker, made from the setup at the first call.
    pub(crate) fn breaker(&self) -> &Arc<Breaker> {
        self.breaker.get_or_init(|| {
            let setup = self.setup();
            let breaker = Breaker::new(
                Arc::clone(&setup.name),
                Settings::new(&setup.config),
                setup.on_change.clone(),
                &setup.clock,
            );
            Arc::new(breaker)
        })
    }

    /// The breaker, if it is made.
    pub(crate) fn made(&self) -> Option<&Arc<Breaker>> {
        self.breaker.get()
    }
}
