//! `adaptive`, the origin's policy: one load sample per upstream per interval, a history of
//! samples, the exponentially smoothed prediction, and weights inversely proportional to it.
//! Between updates the pool picks by the [`peak_ewma`](super::peak_ewma) cost over these
//! weights.

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

/// Each upstream's sample of an interval, in the light of the others': an upstream whose
/// every answer failed scores the mean of the observed loads, fully penalised; one without
/// answers drifts to that mean if `healthy(i)`, so that it is tried again instead of being
/// judged forever by its past; with no observed load at all, nothing is learned.
pub(crate) fn resolve(
    config: &AdaptiveConfig,
    samples: &[Sample],
    healthy: impl Fn(usize) -> bool,
) -> Vec<Option<f64>> {
    let (sum, observed) = samples
        .iter()
        .fold((0.0, 0usize), |(sum, n), sample| match sample {
            Sample::Load(load) => (sum + load, n + 1),
            _ => (sum, n),
        });
    let mean = (observed > 0).then(|| sum / observed as f64);
    samples
        .iter()
        .enumerate()
        .map(|(i, sample)| match (sample, mean) {
            (Sample::Load(load), _) => Some(*load),
            (Sample::AllFailed, Some(mean)) => Some(mean * (1.0 + config.failure_penalty)),
            (Sample::Unobserved, Some(mean)) if healthy(i) => Some(mean),
            _ => None,
        })
        .collect()
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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::policy::testing::config as seeded;

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
    fn failed_and_unobserved_intervals_score_against_the_mean() {
        let config = AdaptiveConfig::default();
        let samples = [
            Sample::Load(1.0),
            Sample::Load(3.0),
            Sample::AllFailed,
            Sample::Unobserved,
            Sample::Unobserved,
        ];
        let resolved = resolve(&config, &samples, |i| i != 4);
        assert_eq!(
            resolved,
            [Some(1.0), Some(3.0), Some(10.0), Some(2.0), None]
        );
        let nothing = resolve(&config, &[Sample::AllFailed, Sample::Unobserved], |_| true);
        assert_eq!(nothing, [None, None], "no observed load, nothing learned");
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

    proptest! {
        #![proptest_config(seeded(0x6164_6170_7469_7665))]

        /// Smoothing bounds: the prediction lies between the smallest and the largest sample
        /// of the history, and with alpha 1 it is the newest.
        #[test]
        fn the_prediction_stays_within_the_history(
            samples in prop::collection::vec(1e-6f64..1e3, 1..30),
            length in 1usize..20,
            alpha in 0.01f64..=1.0,
        ) {
            let mut history = History::default();
            for &x in &samples {
                history.push(x, length);
            }
            let kept: Vec<f64> = history.samples().collect();
            prop_assert_eq!(kept.len(), samples.len().min(length));
            let low = kept.iter().copied().fold(f64::INFINITY, f64::min);
            let high = kept.iter().copied().fold(0.0, f64::max);
            let predicted = history.predict(alpha).unwrap();
            prop_assert!(predicted >= low * (1.0 - 1e-12) && predicted <= high * (1.0 + 1e-12));
            prop_assert_eq!(history.predict(1.0), kept.last().copied());
        }

        /// Weights are inverse to the predicted load and average 1 over the upstreams with a
        /// prediction (loads within a factor of 10, where no weight reaches the range's ends).
        #[test]
        fn weights_are_inverse_to_the_load(
            base in 1e-3f64..1e3,
            factors in prop::collection::vec(prop::option::weighted(0.8, 1.0f64..10.0), 1..12),
        ) {
            let loads: Vec<Option<f64>> = factors.iter().map(|f| f.map(|f| base * f)).collect();
            let w = weights(&loads);
            let known: Vec<(f64, f64)> = loads
                .iter()
                .zip(&w)
                .filter_map(|(load, weight)| Some(((*load)?, (*weight)?)))
                .collect();
            prop_assume!(!known.is_empty());
            let mean = known.iter().map(|k| k.1).sum::<f64>() / known.len() as f64;
            prop_assert!((mean - 1.0).abs() < 1e-9, "mean {}", mean);
            let product = known[0].0 * known[0].1;
            for &(load, weight) in &known {
                prop_assert!((load * weight / product - 1.0).abs() < 1e-9);
            }
        }

        /// Whatever the loads, an upstream has a weight exactly when it has a prediction, the
        /// weights stay within 1/100..100, and a heavier load never gets more weight.
        #[test]
        fn weights_stay_in_range_and_in_order(
            loads in prop::collection::vec(prop::option::weighted(0.8, 0.0f64..1e6), 1..12),
        ) {
            let w = weights(&loads);
            prop_assert_eq!(w.len(), loads.len());
            for (load, weight) in loads.iter().zip(&w) {
                prop_assert_eq!(load.is_some(), weight.is_some());
                if let Some(weight) = weight {
                    prop_assert!((1.0 / WEIGHT_RANGE..=WEIGHT_RANGE).contains(weight));
                }
            }
            for (a, wa) in loads.iter().zip(&w) {
                for (b, wb) in loads.iter().zip(&w) {
                    if let (Some(a), Some(wa), Some(b), Some(wb)) = (a, wa, b, wb) {
                        if a < b {
                            prop_assert!(wa >= wb);
                        }
                    }
                }
            }
        }
    }
}
