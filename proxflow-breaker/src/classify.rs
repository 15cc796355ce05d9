//! What counts as a failure.

use http::Response;

use crate::config::STATUSES;
use crate::machine::Outcome;

/// Judges the result of a call. Slowness is judged apart, from `latency_threshold`.
///
/// Closures work: `|result: Result<&Response<B>, &E>| ...`. The default for HTTP is
/// [`StatusClassifier`] (inner errors and 5xx fail); [`ErrorClassifier`] is the default of the
/// generic form (only errors fail).
///
/// ```
/// use http::{Response, StatusCode};
/// use proxflow_breaker::{CircuitBreakerLayer, Outcome};
///
/// // A 429 says nothing about the backend's health; a 503 does.
/// let layer = CircuitBreakerLayer::new().classify(
///     |result: Result<&Response<axum::body::Body>, &std::convert::Infallible>| match result {
///         Ok(response) if response.status() == StatusCode::TOO_MANY_REQUESTS => Outcome::Ignored,
///         Ok(response) if response.status().is_server_error() => Outcome::Failure,
///         Ok(_) => Outcome::Success,
///         Err(_) => Outcome::Failure,
///     },
/// );
/// # let _ = layer;
/// ```
pub trait Classify<R, E>: Send + Sync + 'static {
    /// The outcome of one call.
    fn classify(&self, result: Result<&R, &E>) -> Outcome;
}

impl<R, E, F> Classify<R, E> for F
where
    F: Fn(Result<&R, &E>) -> Outcome + Send + Sync + 'static,
{
    fn classify(&self, result: Result<&R, &E>) -> Outcome {
        self(result)
    }
}

/// HTTP: an error of the inner service or a status in the failure set fails; any other
/// answer succeeds.
#[derive(Debug, Clone)]
pub struct StatusClassifier {
    /// One bit per status 0..1024.
    failures: [u64; 16],
}

impl StatusClassifier {
    /// Fails on the given statuses.
    ///
    /// # Panics
    ///
    /// If a status is outside 100..=999.
    pub fn new(statuses: impl IntoIterator<Item = u16>) -> Self {
        let mut failures = [0u64; 16];
        for status in statuses {
            assert!(
                STATUSES.contains(&status),
                "StatusClassifier::new: {status} is not an HTTP status (100..=999)"
            );
            failures[usize::from(status / 64)] |= 1 << (status % 64);
        }
        StatusClassifier { failures }
    }

    /// Whether `status` is in the failure set.
    pub fn is_failure(&self, status: http::StatusCode) -> bool {
        let status = status.as_u16();
        self.failures[usize::from(status / 64) % 16] & (1 << (status % 64)) != 0
    }
}

impl Default for StatusClassifier {
    /// Every 5xx.
    fn default() -> Self {
        StatusClassifier::new(500..600)
    }
}

impl<B, E> Classify<Response<B>, E> for StatusClassifier
where
    B: 'static,
    E: 'static,
{
    fn classify(&self, result: Result<&Response<B>, &E>) -> Outcome {
        match result {
            Ok(response) if !self.is_failure(response.status()) => Outcome::Success,
            _ => Outcome::Failure,
        }
    }
}

/// Generic form: an error fails, any response succeeds.
#[derive(Debug, Clone, Copy, Default)]
pub struct ErrorClassifier;

impl<R, E> Classify<R, E> for ErrorClassifier {
    fn classify(&self, result: Result<&R, &E>) -> Outcome {
        match result {
            Ok(_) => Outcome::Success,
            Err(_) => Outcome::Failure,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    #[test]
    fn statuses_in_the_set_fail() {
        let default = StatusClassifier::default();
        assert!(default.is_failure(StatusCode::BAD_GATEWAY));
        assert!(!default.is_failure(StatusCode::TOO_MANY_REQUESTS));
        let custom = StatusClassifier::new([429, 503]);
        assert!(custom.is_failure(StatusCode::TOO_MANY_REQUESTS));
        assert!(!custom.is_failure(StatusCode::INTERNAL_SERVER_ERROR));
        let response = Response::builder().status(503).body(()).unwrap();
        assert_eq!(
            Classify::<_, ()>::classify(&custom, Ok(&response)),
            Outcome::Failure
        );
        assert_eq!(
            Classify::<Response<()>, _>::classify(&custom, Err(&())),
            Outcome::Failure
        );
    }

    #[test]
    #[should_panic(expected = "StatusClassifier::new: 5000 is not an HTTP status (100..=999)")]
    fn a_status_out_of_range_is_refused() {
        StatusClassifier::new([503, 5000]);
    }
}
