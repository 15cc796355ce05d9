//! The policies' arithmetic, one module each, with no clock, no lock and no I/O: the pool
//! passes the weights, the loads and the time in.
//!
//! - [`round_robin`]: `round_robin` and `weighted_round_robin`, nginx's smooth weighted round
//!   robin over the weights now.
//! - [`random`]: the seeded generator, a draw by weight, and the power of two choices that
//!   `least_request`, `peak_ewma` and `adaptive` compare with.
//! - [`least_request`]: fewer requests in flight per unit of weight.
//! - [`peak_ewma`]: the peak-EWMA latency estimate and its cost.
//! - [`hash`]: weighted rendezvous hashing for `ip_hash` and `header_hash`.
//! - [`adaptive`]: the origin's load samples, smoothed history and inverse-load weights.

pub(crate) mod adaptive;
pub(crate) mod hash;
pub(crate) mod least_request;
pub(crate) mod peak_ewma;
pub(crate) mod random;
pub(crate) mod round_robin;

/// Nanoseconds since a pool's origin, as picks read the time.
pub(crate) type Nanos = u64;

#[cfg(test)]
pub(crate) mod testing {
    use proptest::test_runner::{Config, RngSeed};

    /// Seeded, so that a run is the same on every machine, and nothing is written beside the
    /// sources on failure (the failing case is in the message).
    pub(crate) fn config(seed: u64) -> Config {
        Config {
            rng_seed: RngSeed::Fixed(seed),
            failure_persistence: None,
            ..Config::default()
        }
    }
}
