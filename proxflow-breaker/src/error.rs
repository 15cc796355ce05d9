//! The error of the generic form.

use std::fmt;
use std::time::Duration;

use crate::machine::Refusal;

/// The error of the generic (non-HTTP) form: the breaker's refusal, its timeout, or the inner
/// service's own error.
#[derive(Debug)]
pub enum BreakerError<E> {
    /// Not called: the breaker refused.
    Open(Refusal),
    /// The call ran longer than `timeout`; it was dropped and counted as a failure.
    Timeout(Duration),
    /// The inner service failed.
    Inner(E),
}

impl<E: fmt::Display> fmt::Display for BreakerError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BreakerError::Open(refusal) => refusal.fmt(f),
            BreakerError::Timeout(after) => write!(f, "call timed out after {after:?}"),
            BreakerError::Inner(error) => error.fmt(f),
        }
    }
}

impl<E: std::error::Error + 'static> std::error::Error for BreakerError<E> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            BreakerError::Inner(error) => Some(error),
            _ => None,
        }
    }
}
