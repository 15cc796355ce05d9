//! hyper's timer for one connection, with one tokio timer for the life of the connection.
//!
//! hyper arms its header-read timeout for every request head it waits for and drops it once the
//! head is read. With hyper-util's `TokioTimer` that is a new tokio timer per request, put into
//! the runtime's timer wheel when the connection waits and taken out again when the head
//! arrives: a sizeable share of the instructions of a small request. nginx keeps its timers
//! lazily instead (it does not move a timer that would change by less than 300 ms), and so does
//! this one: every deadline of a connection shares one tokio timer, which is moved only when it
//! fires before the deadline that is waited for, at most once per timeout, not once per request.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use hyper::rt::{Sleep, Timer};

/// A [`Timer`] for one connection (make one per connection): its sleeps share one tokio timer.
#[derive(Clone, Debug)]
pub struct ConnectionTimer {
    alarm: Arc<Mutex<Alarm>>,
}

/// The connection's one tokio timer.
#[derive(Debug)]
struct Alarm {
    sleep: Pin<Box<tokio::time::Sleep>>,
    /// The waker the timer holds since it was last set, if it has been polled since: polling
    /// it again with the same waker, before it rings, changes nothing, so that poll is skipped
    /// (it is most of what a deadline's poll costs, once per request).
    waker: Option<Waker>,
}

impl Alarm {
    fn set(&mut self, deadline: tokio::time::Instant) {
        self.sleep.as_mut().reset(deadline);
        self.waker = None;
    }
}

impl ConnectionTimer {
    /// A timer not yet armed. Must be made inside a tokio runtime with time enabled.
    pub fn new() -> Self {
        let idle = tokio::time::sleep(Duration::from_secs(86_400 * 365));
        ConnectionTimer {
            alarm: Arc::new(Mutex::new(Alarm {
                sleep: Box::pin(idle),
                waker: None,
            })),
        }
    }
}

impl Default for ConnectionTimer {
    fn default() -> Self {
        ConnectionTimer::new()
    }
}

impl Timer for ConnectionTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Sleep>> {
        self.sleep_until(self.now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Sleep>> {
        Box::pin(Deadline {
            deadline: deadline.into(),
            alarm: Arc::clone(&self.alarm),
        })
    }

    // Tokio's clock, so that paused time (tests) drives hyper's deadlines too.
    fn now(&self) -> Instant {
        tokio::time::Instant::now().into_std()
    }
}

/// One deadline of a connection.
struct Deadline {
    deadline: tokio::time::Instant,
    alarm: Arc<Mutex<Alarm>>,
}

impl Sleep for Deadline {}

impl Future for Deadline {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut alarm = self
            .alarm
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        // The alarm rings at or before this deadline. Earlier is fine: it rang for a deadline
        // of an earlier request, and moves here then (once per timeout, not once per request).
        if alarm.sleep.deadline() > self.deadline {
            alarm.set(self.deadline);
        }
        let armed_for_this_task = alarm
            .waker
            .as_ref()
            .is_some_and(|waker| waker.will_wake(cx.waker()));
        if armed_for_this_task && !alarm.sleep.is_elapsed() {
            return Poll::Pending;
        }
        loop {
            match alarm.sleep.as_mut().poll(cx) {
                Poll::Pending => {
                    alarm.waker = Some(cx.waker().clone());
                    return Poll::Pending;
                }
                Poll::Ready(()) if alarm.sleep.deadline() == self.deadline => {
                    return Poll::Ready(())
                }
                Poll::Ready(()) => alarm.set(self.deadline),
            }
        }
    }
}
