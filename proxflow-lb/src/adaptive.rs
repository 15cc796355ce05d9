//! The adaptive policy's arithmetic: one load sample per upstream per interval, a history of
//! samples, the exponentially smoothed prediction, and weights inversely proportional to it.
//! No clock, no I/O: the pool passes the measurements in.

use std::collections::VecDeque;
use std::time::Duration;

use crate::config::{AdaptiveConfig, LoadMetric};

/// What an upstream did during one interval.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Interval {
    /// Answers (of any kind) received.
    pub(crate) answered: u64,
    /// Of which failures (connection errors, failure statuses).
    pub(crate) failed: u64,
    /// Sum of the answers' latencies.
    pub(crate) busy: Duration,
    /// Sum of the successful answers' latencies: fast failures must not make an upstream
    /// look fast.
    pub(crate) busy_succeeded: Duration,
}

impl Interval {
    pub(crate) fn add(&mut self, latency: Duration, failed: bool) {
        self.answered += 1;
        self.failed += u64::from(failed);
        self.busy += latency;
        if !failed {
            self.busy_succeeded += latency;
        }
    }
}

/// The load sample of one interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Sample {
    Load(f64),
    /// No answers: nothing to say (a zero load would be an infinite weight).
    Unobserved,
    /// Latency metric, every answer failed: no latency of its own; as bad as the pool's mean
    /// with the full penalty (the caller knows the mean).
    AllFailed,
}

pub(crate) fn sample(config: &AdaptiveConfig, interval: &Interval, length: Duration) -> Sample {
    if interval.answered == 0 {
        return Sample::Unobserved;
    }
    let failure_ratio = interval.failed as f64 / interval.answered as f64;
    let penalty = 1.0 + config.failure_penalty * failure_ratio;
    let base = match config.load {
        LoadMetric::Requests => interval.answered as f64,
        LoadMetric::Concurrency => interval.busy.as_secs_f64() / length.as_secs_f64().max(1e-9),
        LoadMetric::Latency => {
            let succeeded = interval.answered - interval.failed;
            if succeeded == 0 {
                return Sample::AllFailed;
            }
            interval.busy_succeeded.as_secs_f64() / succeeded as f64
        }
    };
    Sample::Load(base * penalty)
}

/// The last `history_length` samples of one upstream.
#[derive(Debug, Clone, Default)]
pub(crate) struct History {
    samples: VecDeque<f64>,
}

impl History {
    pub(crate) fn push(&mut self, sample: f64, length: usize) {
        if self.samples.len() == length {
            self.samples.pop_front();
        }
        self.samples.push_back(sample);
    }

    pub(crate) fn clear(&mut self) {
        self.samples.clear();
    }

    pub(crate) fn samples(&self) -> impl Iterator<Item = f64> + '_ {
        self.samples.iter().copied()
    }

    /// Exponential smoothing from the oldest sample to the newest: s = α·x + (1 − α)·s.
    pub(crate) fn predict(&self, alpha: f64) -> Option<f64> {
        let mut samples = self.samples.iter();
        let first = *samples.next()?;
        Some(samples.fold(first, |smoothed, &x| alpha * x + (1.0 - alpha) * smoothed))
    }
}

/// Normalised weights stay within this factor of the mean, so that no upstream is starved of
/// the traffic that would show it has recovered, and none takes everything.
const WEIGHT_RANGE: f64 = 100.0;

/// Weights inversely proportional to the predicted loads, normalised to a mean of 1 over the
/// upstreams with a prediction. `None` in, `None` out (no history: the caller gives those the
/// mean weight, ramped).
pub(crate) fn weights(predicted: &[Option<f64>]) -> Vec<Option<f64>> {
    // A load of zero (no requests in the interval) would be an infinite weight.
    let floor = predicted
        .iter()
        .flatten()
        .copied()
        .filter(|load| *load > 0.0)
        .fold(f64::INFINITY, f64::min);
    let floor = if floor.is_finite() {
        floor / WEIGHT_RANGE
    } else {
        1.0
    };
    let inverse: Vec<Option<f64>> = predicted
        .iter()
        .map(|load| load.map(|load| 1.0 / load.max(floor)))
        .collect();
    let known: Vec<f64> = inverse.iter().flatten().copied().collect();
    if known.is_empty() {
        return inverse;
    }
    let mean = known.iter().sum::<f64>() / known.len() as f64;
    inverse
        .into_iter()
        .map(|w| w.map(|w| (w / mean).clamp(1.0 / WEIGHT_RANGE, WEIGHT_RANGE)))
        .collect()
}

/// The share of its weight an upstream gets `age` after it joined (or came back): 10 % at
/// once, all of it after `slow_start`, linear between.
pub(crate) fn slow_start_factor(age: Duration, slow_start: Duration) -> f64 {
    if slow_start.is_zero() || age >= slow_start {
        return 1.0;
    }
    0.1 + 0.9 * age.as_secs_f64() / slow_start.as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn config(load: LoadMetric) -> AdaptiveConfig {
        AdaptiveConfig {
            load,
            ..AdaptiveConfig::default()
        }
    }

    #[test]
    fn samples_by_metric_with_the_failure_penalty() {
        let mut interval = Interval::default();
        for i in 0..10 {
            interval.add(100 * MS, i < 2);
        }
        let second = Duration::from_secs(1);
        let load = |metric, interval: &Interval| match sample(&config(metric), interval, second) {
            Sample::Load(load) => load,
            other => panic!("{other:?}"),
        };
        // 10 answers, 20 % failed, penalty 4: x1.8.
        assert!((load(LoadMetric::Requests, &interval) - 18.0).abs() < 1e-9);
        assert!(
            (load(LoadMetric::Concurrency, &interval) - 1.8).abs() < 1e-9,
            "1 s busy in 1 s"
        );
        // The latency of the 8 successes, x1.8.
        assert!((load(LoadMetric::Latency, &interval) - 0.18).abs() < 1e-9);
        // Fast failures do not lower the latency sample: 8 of 20 succeeded in 100 ms, x3.4.
        let mut fast_failures = interval;
        for _ in 0..10 {
            fast_failures.add(MS, true);
        }
        let latency = load(LoadMetric::Latency, &fast_failures);
        assert!((latency - 0.1 * 3.4).abs() < 1e-9, "{latency}");
        for metric in [
            LoadMetric::Requests,
            LoadMetric::Concurrency,
            LoadMetric::Latency,
        ] {
            assert_eq!(
                sample(&config(metric), &Interval::default(), second),
                Sample::Unobserved
            );
        }
        let mut failed = Interval::default();
        failed.add(MS, true);
        assert_eq!(
            sample(&config(LoadMetric::Latency), &failed, second),
            Sample::AllFailed
        );
    }

    #[test]
    fn the_prediction_smooths_the_history_and_forgets_the_oldest() {
        let mut history = History::default();
        assert_eq!(history.predict(0.3), None);
        for x in [10.0, 10.0, 20.0] {
            history.push(x, 3);
        }
        // 10 -> 10 -> 0.3·20 + 0.7·10 = 13.
        assert!((history.predict(0.3).unwrap() - 13.0).abs() < 1e-9);
        history.push(20.0, 3);
        // 10 -> 13 -> 0.3·20 + 0.7·13 = 15.1.
        assert!((history.predict(0.3).unwrap() - 15.1).abs() < 1e-9);
        assert_eq!(history.samples().count(), 3);
        assert_eq!(
            history.predict(1.0),
            Some(20.0),
            "alpha 1: the newest sample"
        );
    }

    #[test]
    fn weights_are_inverse_to_the_load_and_average_one() {
        let w = weights(&[Some(1.0), Some(2.0), Some(4.0), None]);
        let known: Vec<f64> = w.iter().flatten().copied().collect();
        assert_eq!(w[3], None);
        assert!((known.iter().sum::<f64>() / 3.0 - 1.0).abs() < 1e-9);
        assert!((known[0] / known[1] - 2.0).abs() < 1e-9);
        assert!((known[1] / known[2] - 2.0).abs() < 1e-9);
    }

    #[test]
    fn a_zero_load_does_not_take_everything() {
        let w = weights(&[Some(0.0), Some(1.0), Some(1.0)]);
        let zero = w[0].unwrap();
        assert!(zero.is_finite() && zero <= WEIGHT_RANGE);
        assert!(w[1].unwrap() >= 1.0 / WEIGHT_RANGE);
        assert_eq!(weights(&[Some(0.0), Some(0.0)]), vec![Some(1.0), Some(1.0)]);
    }

    #[test]
    fn slow_start_ramps_linearly_from_a_tenth() {
        let ramp = Duration::from_secs(30);
        assert!((slow_start_factor(Duration::ZERO, ramp) - 0.1).abs() < 1e-9);
        assert!((slow_start_factor(Duration::from_secs(15), ramp) - 0.55).abs() < 1e-9);
        assert_eq!(slow_start_factor(ramp, ramp), 1.0);
        assert_eq!(slow_start_factor(Duration::ZERO, Duration::ZERO), 1.0);
    }
}
