//! The breakers' changes of state, as their `on_state_change` callback reports them: each with
//! its time, in a bounded log.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};

use proxflow_breaker::{State, StateChange};
use serde::Serialize;

use super::sample::wall_ms;

/// How many changes the log keeps (the oldest go first).
pub const KEPT: usize = 200;

/// One change of state of one breaker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Transition {
    /// Its number, from 1, one more per change.
    pub id: u64,
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// The upstream's name (its address when it has none).
    pub upstream: Arc<str>,
    /// The breaker's key: the upstream's `host:port`.
    pub key: Arc<str>,
    /// The state left.
    pub from: State,
    /// The state entered.
    pub to: State,
}

/// The log, shared by the breakers' callback and the dashboard. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Transitions {
    log: Arc<Mutex<Log>>,
}

#[derive(Debug, Default)]
struct Log {
    last_id: u64,
    kept: VecDeque<Transition>,
}

impl Transitions {
    /// The callback to give the breakers' layer (`CircuitBreakerLayer::on_state_change`).
    pub fn recorder(&self) -> impl Fn(&StateChange) + Send + Sync + 'static {
        let transitions = self.clone();
        move |change| transitions.push(change)
    }

    /// Adds `change`, timed now.
    pub fn push(&self, change: &StateChange) {
        let mut log = self.lock();
        log.last_id += 1;
        let transition = Transition {
            id: log.last_id,
            at_ms: wall_ms(),
            upstream: Arc::clone(&change.breaker),
            key: Arc::clone(&change.breaker),
            from: change.from,
            to: change.to,
        };
        if log.kept.len() == KEPT {
            log.kept.pop_front();
        }
        log.kept.push_back(transition);
    }

    /// The kept changes numbered after `id` (0 for all), oldest first.
    pub fn after(&self, id: u64) -> Vec<Transition> {
        self.lock()
            .kept
            .iter()
            .filter(|t| t.id > id)
            .cloned()
            .collect()
    }

    /// The number of the latest change (0 before the first).
    pub fn last_id(&self) -> u64 {
        self.lock().last_id
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_is_bounded_and_numbered() {
        let transitions = Transitions::default();
        let record = transitions.recorder();
        for n in 0..KEPT + 10 {
            let (from, to) = if n % 2 == 0 {
                (State::Closed, State::Open)
            } else {
                (State::Open, State::HalfOpen)
            };
            record(&StateChange {
                breaker: Arc::from("127.0.0.1:1"),
                from,
                to,
            });
        }
        assert_eq!(transitions.last_id(), (KEPT + 10) as u64);
        let all = transitions.after(0);
        assert_eq!(all.len(), KEPT);
        assert_eq!(all[0].id, 11);
        assert_eq!(transitions.after(transitions.last_id() - 2).len(), 2);
    }
}
