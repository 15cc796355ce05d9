//! Graceful shutdown for the connections a server spawns.
//!
//! hyper-util's `GracefulShutdown` polls a `watch` channel every time a connection's task wakes,
//! once or more per request. Here a connection registers its task's waker once and, on later
//! wakes, reads one flag.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Waker};

use tokio::sync::Notify;

/// The server's side: tells every watched connection to finish, then waits for them.
#[derive(Debug, Default)]
pub struct Shutdown {
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    closing: AtomicBool,
    open: Mutex<Open>,
    /// Signalled when the last connection goes after `closing` is set.
    drained: Notify,
}

/// The open connections: each one's task waker, `None` until its first poll.
#[derive(Debug, Default)]
struct Open {
    next_id: u64,
    wakers: HashMap<u64, Option<Waker>>,
}

impl Shared {
    fn open(&self) -> MutexGuard<'_, Open> {
        // Nothing panics while holding the lock; a poisoned one is still consistent.
        self.open
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Shutdown {
    /// Nothing watched, not closing.
    pub fn new() -> Self {
        Shutdown::default()
    }

    /// A watcher for one connection, counted as open until it is dropped. Make it before
    /// spawning the connection's task, so that a task not yet run is waited for too.
    pub fn watcher(&self) -> Watcher {
        let mut open = self.shared.open();
        let id = open.next_id;
        open.next_id += 1;
        open.wakers.insert(id, None);
        Watcher {
            shared: Arc::clone(&self.shared),
            id,
            registered: None,
            told: false,
        }
    }

    /// Connections whose watcher is alive.
    pub fn open_connections(&self) -> usize {
        self.shared.open().wakers.len()
    }

    /// Tells every connection to finish (each learns it the next time its task is polled,
    /// which this wakes), then waits until all watchers are dropped.
    pub async fn shutdown(self) {
        self.shared.closing.store(true, Ordering::SeqCst);
        for waker in self.shared.open().wakers.values().flatten() {
            waker.wake_by_ref();
        }
        loop {
            if self.shared.open().wakers.is_empty() {
                return;
            }
            // A connection that ends between the check and here leaves a permit behind.
            self.shared.drained.notified().await;
        }
    }
}

/// A connection's side, held by its task for the connection's life.
#[derive(Debug)]
pub struct Watcher {
    shared: Arc<Shared>,
    id: u64,
    /// The waker last registered: an unchanged one is not registered again.
    registered: Option<Waker>,
    told: bool,
}

impl Watcher {
    /// Whether the connection should start its graceful shutdown now: `true` once, on the first
    /// poll after [`Shutdown::shutdown`] began. Call it on every poll of the connection's task,
    /// so that the task is woken when shutdown begins.
    pub fn poll_closing(&mut self, cx: &Context<'_>) -> bool {
        if self.told {
            return false;
        }
        if !self
            .registered
            .as_ref()
            .is_some_and(|waker| waker.will_wake(cx.waker()))
        {
            let waker = cx.waker().clone();
            self.shared
                .open()
                .wakers
                .insert(self.id, Some(waker.clone()));
            self.registered = Some(waker);
        }
        // After the registration: a shutdown that began before it is seen here; one that
        // begins after it wakes the registered waker.
        self.told = self.shared.closing.load(Ordering::SeqCst);
        self.told
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        let mut open = self.shared.open();
        open.wakers.remove(&self.id);
        if open.wakers.is_empty() && self.shared.closing.load(Ordering::SeqCst) {
            self.shared.drained.notify_one();
        }
    }
}
