//! The comparisons: which nginx `limit_req` setting faces which proxflow algorithm, and what
//! each admits.

use crate::cli::Args;

/// One comparison: an nginx server block against a proxflow configuration.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scenario {
    /// nginx `burst=b nodelay` vs token bucket of capacity `b + 1`.
    TokenBucket,
    /// nginx `burst=b` (delaying) vs leaky bucket with `burst b`.
    LeakyBucket,
}

impl Scenario {
    /// Its name in the report.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::TokenBucket => "token bucket",
            Scenario::LeakyBucket => "leaky bucket",
        }
    }
}

/// What the algorithm admits in `seconds` from a full bucket and an empty queue.
pub fn expected(args: &Args, scenario: Scenario, seconds: f64) -> f64 {
    let steady = f64::from(args.rate) * seconds;
    match scenario {
        Scenario::TokenBucket => steady + f64::from(args.burst + 1),
        Scenario::LeakyBucket => steady + 1.0,
    }
}
