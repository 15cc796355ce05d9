//! The handles on a layer's breakers: their figures, and manual control.

use std::sync::Arc;

use crate::breaker::{Breaker, BreakerSnapshot};
use crate::keyed::Registry;
use crate::machine::State;
use crate::shared::Shared;

/// A handle on one breaker: its figures, and manual control. Cheap to clone.
///
/// A handle taken from a layer controls the breaker that layer's services use, whatever
/// builder calls come after it; the breaker is made at the first use of either.
#[derive(Clone)]
pub struct BreakerHandle {
    target: Target,
}

#[derive(Clone)]
enum Target {
    /// A layer's breaker, made at its first use.
    Layer(Arc<Shared>),
    /// A key's breaker in the keyed form.
    Key(Arc<Breaker>),
}

impl BreakerHandle {
    pub(crate) fn of_layer(shared: Arc<Shared>) -> BreakerHandle {
        BreakerHandle {
            target: Target::Layer(shared),
        }
    }

    fn breaker(&self) -> &Breaker {
        match &self.target {
            Target::Layer(shared) => shared.breaker(),
            Target::Key(breaker) => breaker,
        }
    }

    /// The state now.
    pub fn state(&self) -> State {
        self.breaker().state()
    }

    /// Its figures now.
    pub fn snapshot(&self) -> BreakerSnapshot {
        self.breaker().snapshot()
    }

    /// Refuses every call until [`Self::reset`].
    pub fn force_open(&self) {
        self.breaker().force(State::ForcedOpen);
    }

    /// Lets every call through, judging none, until [`Self::reset`].
    pub fn force_closed(&self) {
        self.breaker().force(State::ForcedClosed);
    }

    /// Back to closed, with an empty window and no backoff.
    pub fn reset(&self) {
        self.breaker().reset();
    }
}

impl std::fmt::Debug for BreakerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.target {
            Target::Key(breaker) => breaker.snapshot().fmt(f),
            Target::Layer(shared) => match shared.made() {
                Some(breaker) => breaker.snapshot().fmt(f),
                // Printing a handle does not make its breaker, which would end its setup.
                None => f
                    .debug_struct("BreakerHandle")
                    .field("breaker", &shared.setup().name)
                    .field("in_use", &false)
                    .finish(),
            },
        }
    }
}

/// A handle on the breakers of a keyed layer. Cheap to clone.
#[derive(Clone)]
pub struct KeyedBreakerHandle {
    breakers: Arc<dyn Registry>,
}

impl KeyedBreakerHandle {
    pub(crate) fn new(breakers: Arc<dyn Registry>) -> KeyedBreakerHandle {
        KeyedBreakerHandle { breakers }
    }

    /// The breaker of `key`, if it has one now.
    pub fn get(&self, key: &str) -> Option<BreakerHandle> {
        let breaker = self.breakers.get(key)?;
        Some(BreakerHandle {
            target: Target::Key(breaker),
        })
    }

    /// Every breaker's figures, sorted by key.
    pub fn snapshot(&self) -> Vec<BreakerSnapshot> {
        let mut all: Vec<BreakerSnapshot> = self
            .breakers
            .all()
            .iter()
            .map(|breaker| breaker.snapshot())
            .collect();
        all.sort_by(|a, b| a.breaker.cmp(&b.breaker));
        all
    }
}

impl std::fmt::Debug for KeyedBreakerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.snapshot()).finish()
    }
}
