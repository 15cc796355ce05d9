//! The call of a protected service: admitted or refused, timed, judged when it ends.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::time::Sleep;
use tower_service::Service;

use proxflow_core::Moment;

use crate::breaker::{Ending, Holder};
use crate::classify::Classify;
use crate::machine::{Admission, Outcome, Permit, Refusal};

/// An admitted call, until it is judged. Dropped before (the caller went away), it counts as
/// ignored, which also frees its place if it was a half-open probe.
pub(crate) struct Guard<C>(Option<Leave<C>>);

/// What judging an admitted call takes.
struct Leave<C> {
    breaker: Arc<Holder<C>>,
    permit: Permit,
    start: Moment,
}

impl<C> Guard<C> {
    /// Asks `breaker` for leave now.
    #[inline]
    pub(crate) fn acquire(breaker: &Arc<Holder<C>>) -> Result<Guard<C>, Refusal> {
        let start = breaker.now();
        match breaker.acquire(start) {
            Admission::Admit(permit) => Ok(Guard(Some(Leave {
                breaker: Arc::clone(breaker),
                permit,
                start,
            }))),
            Admission::Refuse(refusal) => Err(refusal),
        }
    }

    /// The call starts now (in readiness mode leave is taken in `poll_ready`, earlier).
    pub(crate) fn restart(&mut self) {
        if let Some(leave) = &mut self.0 {
            leave.start = leave.breaker.now();
        }
    }

    /// Judges the call by its result.
    fn judge<R, E>(&mut self, result: Result<&R, &E>)
    where
        C: Classify<R, E>,
    {
        if let Some(leave) = self.0.take() {
            let outcome = leave.breaker.classifier().classify(result);
            leave.end(outcome, false);
        }
    }

    fn time_out(&mut self) {
        if let Some(leave) = self.0.take() {
            leave.end(Outcome::Failure, true);
        }
    }
}

impl<C> Leave<C> {
    fn end(self, outcome: Outcome, timed_out: bool) {
        let now = self.breaker.now();
        let ending = Ending {
            outcome,
            latency: self.breaker.nanos_between(self.start, now),
            timed_out,
        };
        self.breaker.record(now, self.permit, ending);
    }
}

impl<C> Drop for Guard<C> {
    /// A call dropped before its end (a timeout outside the breaker, a client that went away)
    /// that ran at least `latency_threshold` counts as a timeout, a failure: a backend that
    /// stalls must not look healthy because its callers give up first. A shorter one is
    /// ignored, as the caller's choice rather than the backend's doing.
    fn drop(&mut self) {
        if let Some(leave) = self.0.take() {
            let latency = leave
                .breaker
                .nanos_between(leave.start, leave.breaker.now());
            if latency >= leave.breaker.latency_threshold() {
                leave.end(Outcome::Failure, true);
            } else {
                leave.end(Outcome::Ignored, false);
            }
        }
    }
}

/// Why a call did not reach its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stopped {
    /// Not admitted.
    Refused(Refusal),
    /// Still running after the timeout; counted as a failure.
    TimedOut(Duration),
}

pin_project! {
    /// The call, generic over what it returns; the HTTP and generic futures map its output.
    #[project = CallProj]
    pub(crate) enum Call<F, C> {
        Refused { stopped: Stopped },
        Running {
            #[pin]
            future: F,
            // Boxed: only calls with a timeout pay for a timer.
            timeout: Option<(Pin<Box<Sleep>>, Duration)>,
            // Its holder has the classifier.
            guard: Guard<C>,
        },
    }
}

impl<F, C> Call<F, C> {
    /// With leave, calls `inner`; without, the refusal.
    pub(crate) fn start<S, R>(
        leave: Result<Guard<C>, Refusal>,
        inner: &mut S,
        request: R,
        timeout: Option<Duration>,
    ) -> Self
    where
        S: Service<R, Future = F>,
    {
        match leave {
            Ok(guard) => Call::Running {
                future: inner.call(request),
                timeout: timeout.map(|after| (Box::pin(tokio::time::sleep(after)), after)),
                guard,
            },
            Err(refusal) => Call::Refused {
                stopped: Stopped::Refused(refusal),
            },
        }
    }
}

impl<F, C> Call<F, C> {
    /// Polls the call; its result becomes the caller's output through `done`, the breaker's
    /// refusal or timeout through `stopped`. Not a `Future` of its own, so that each form maps
    /// the result once: an output nesting it, mapped again by each form, would copy the
    /// response once more per call.
    pub(crate) fn poll_into<R, E, T>(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        done: impl FnOnce(Result<R, E>) -> T,
        stopped: impl FnOnce(Stopped) -> T,
    ) -> Poll<T>
    where
        F: Future<Output = Result<R, E>>,
        C: Classify<R, E>,
    {
        match self.project() {
            CallProj::Refused { stopped: refused } => Poll::Ready(stopped(*refused)),
            CallProj::Running {
                future,
                timeout,
                guard,
            } => {
                if let Poll::Ready(result) = future.poll(cx) {
                    guard.judge(result.as_ref());
                    return Poll::Ready(done(result));
                }
                if let Some((sleep, after)) = timeout {
                    if sleep.as_mut().poll(cx).is_ready() {
                        guard.time_out();
                        return Poll::Ready(stopped(Stopped::TimedOut(*after)));
                    }
                }
                Poll::Pending
            }
        }
    }
}
