//! Graceful shutdown for the connections a server spawns.
//!
//! hyper-util's `GracefulShutdown` polls a `watch` channel every time a connection's task wakes:
//! about 160 of the 9,800 instructions a request costs `ratelimit_server` under `wrk -c1`
//! (callgrind). Here a connection registers its task's waker once and, on later wakes, reads
//! one flag.

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

#[cfg(test)]
mod tests {
    use std::future::poll_fn;
    use std::sync::atomic::AtomicUsize;
    use std::task::Poll;
    use std::time::Duration;

    use tokio::time::Instant;

    use super::*;

    /// A connection's task: pending until told to close, then `finish` more of work.
    fn connection(
        mut watcher: Watcher,
        finish: Duration,
        polls: Arc<AtomicUsize>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            poll_fn(|cx| {
                polls.fetch_add(1, Ordering::SeqCst);
                if watcher.poll_closing(cx) {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            })
            .await;
            let told_again = poll_fn(|cx| Poll::Ready(watcher.poll_closing(cx))).await;
            assert!(!told_again, "told once only");
            tokio::time::sleep(finish).await;
            drop(watcher);
        })
    }

    /// Shuts down, failing instead of hanging if a connection is never told or never counted
    /// out (paused time jumps to the limit when nothing else can run).
    async fn shut_down(shutdown: Shutdown) {
        tokio::time::timeout(Duration::from_secs(60), shutdown.shutdown())
            .await
            .expect("every connection was told and has ended");
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_wakes_idle_connections_and_waits_for_the_slowest() {
        let shutdown = Shutdown::new();
        let polls = Arc::new(AtomicUsize::new(0));
        let fast = connection(shutdown.watcher(), Duration::from_secs(1), polls.clone());
        let slow = connection(shutdown.watcher(), Duration::from_secs(3), polls.clone());
        tokio::task::yield_now().await;
        assert_eq!(
            polls.load(Ordering::SeqCst),
            2,
            "each polled once, then idle"
        );
        assert_eq!(shutdown.open_connections(), 2);

        let started = Instant::now();
        shut_down(shutdown).await;
        assert_eq!(started.elapsed(), Duration::from_secs(3));
        assert_eq!(
            polls.load(Ordering::SeqCst),
            4,
            "each woken once by the shutdown"
        );
        fast.await.unwrap();
        slow.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_not_yet_polled_is_waited_for_and_told_at_once() {
        let shutdown = Shutdown::new();
        let watcher = shutdown.watcher();
        let polls = Arc::new(AtomicUsize::new(0));
        let started = Instant::now();
        let closing = shut_down(shutdown);
        // Spawned after shutdown began: its first poll sees the flag.
        let task = connection(watcher, Duration::from_secs(2), polls.clone());
        closing.await;
        assert_eq!(started.elapsed(), Duration::from_secs(2));
        assert_eq!(polls.load(Ordering::SeqCst), 1);
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_changed_waker_is_the_one_woken() {
        let shutdown = Shutdown::new();
        let mut watcher = shutdown.watcher();
        // Polled first from this task, then moved to another one.
        let told = poll_fn(|cx| Poll::Ready(watcher.poll_closing(cx))).await;
        assert!(!told);
        let polls = Arc::new(AtomicUsize::new(0));
        let task = connection(watcher, Duration::ZERO, polls.clone());
        tokio::task::yield_now().await;
        shut_down(shutdown).await;
        assert_eq!(polls.load(Ordering::SeqCst), 2);
        task.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_without_connections_returns_at_once() {
        let started = Instant::now();
        shut_down(Shutdown::new()).await;
        let shutdown = Shutdown::new();
        drop(shutdown.watcher());
        assert_eq!(shutdown.open_connections(), 0);
        shut_down(shutdown).await;
        assert_eq!(started.elapsed(), Duration::ZERO);
    }
}
