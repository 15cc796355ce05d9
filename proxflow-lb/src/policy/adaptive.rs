//! `adaptive`, the origin's policy: one load sample per upstream per interval, a history of
//! samples, the exponentially smoothed prediction; and, between updates, the live signal of
//! each answer (the [`peak_ewma`](super::peak_ewma) latency estimate and a failure ratio).
//! Weights are inversely proportional to the worse of the two, each relative to the pool's
//! median: the live signal takes traffic away from an upstream within a moment, the history
//! gives it back at its own pace. The pool picks by the peak-EWMA cost over these weights.

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

    /// The mean latency of the answers, a failure counting at least as long as the mean
    /// success: a failure that took long (a timeout, a request dropped after a second) makes
    /// the upstream look slow, one that came fast does not make it look fast. `None` without
    /// a success.
    fn latency(&self) -> Option<f64> {
        let succeeded = self.answered - self.failed;
        if succeeded == 0 {
            return None;
        }
        let busy_succeeded = self.busy_succeeded.as_secs_f64();
        let mean_success = busy_succeeded / succeeded as f64;
        let busy_failed = (self.busy - self.busy_succeeded).as_secs_f64();
        let failures = busy_failed.max(self.failed as f64 * mean_success);
        Some((busy_succeeded + failures) / self.answered as f64)
    }
}

/// The load sample of one interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Sample {
    Load(f64),
    /// No answers: nothing to say (a zero load would be an infinite weight).
    Unobserved,
    /// Latency metric, every answer failed, in this mean latency: at least as bad as the
    /// pool's mean, with the full penalty (the caller knows the mean).
    AllFailed {
        latency: f64,
    },
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
        LoadMetric::Latency => match interval.latency() {
            Some(latency) => latency,
            None => {
                let latency = interval.busy.as_secs_f64() / interval.failed as f64;
                return Sample::AllFailed { latency };
            }
        },
    };
    Sample::Load(base * penalty)
}

/// Each upstream's sample of an interval, in the light of the others': an upstream whose
/// every answer failed scores its own latency or the mean of the observed loads, whichever is
/// higher, fully penalised; one without
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
            (Sample::AllFailed { latency }, Some(mean)) => {
                Some(latency.max(mean) * (1.0 + config.failure_penalty))
            }
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

/// The live failure ratio follows about this many answers: each answer moves it by
/// 1/`FAILURE_MEMORY` of the way to 0 (a success) or 1 (a failure).
const FAILURE_MEMORY: f64 = 16.0;

/// The live failure ratio after one more answer.
pub(crate) fn failure_ratio(ratio: f64, failed: bool) -> f64 {
    ratio + (f64::from(u8::from(failed)) - ratio) / FAILURE_MEMORY
}

/// The live load: the latency estimate with the failure penalty, in the sample's proportion
/// (a failure weighs `1 + failure_penalty` answers).
#[inline]
pub(crate) fn live_load(latency: f64, failure_ratio: f64, failure_penalty: f64) -> f64 {
    latency * (1.0 + failure_penalty * failure_ratio)
}

/// Each upstream's load relative to the pool's, into `relative`: the history's prediction and
/// the live load, each divided by its median over the upstreams that have one, and the larger
/// of the two. An upstream without either (it has not answered yet) is the median, 1.
/// Relative loads make the two comparable whatever the sample's metric, and the median keeps
/// one outlier from moving the others.
pub(crate) fn relative_loads(
    predicted: &[Option<f64>],
    live: &[Option<f64>],
    scratch: &mut Vec<f64>,
    relative: &mut Vec<f64>,
) {
    let predicted_median = median(predicted, scratch);
    let live_median = median(live, scratch);
    relative.clear();
    relative.extend(predicted.iter().zip(live).map(|(predicted, live)| {
        let predicted = predicted.map_or(0.0, |p| p / predicted_median);
        let live = live.map_or(1.0, |l| l / live_median);
        predicted.max(live)
    }));
}

/// The median of the known values (the upper one of an even count), at least a sliver above
/// 0 so that it divides.
pub(crate) fn median(values: &[Option<f64>], scratch: &mut Vec<f64>) -> f64 {
    scratch.clear();
    scratch.extend(values.iter().flatten());
    if scratch.is_empty() {
        return 1.0;
    }
    let middle = scratch.len() / 2;
    let (_, median, _) = scratch.select_nth_unstable_by(middle, f64::total_cmp);
    median.max(1e-12)
}

/// Normalised weights stay within this factor of the mean, so that no upstream is starved of
/// the traffic that would show it has recovered, and none takes everything.
const WEIGHT_RANGE: f64 = 100.0;

/// Weights inversely proportional to the loads, normalised to a mean of 1, into `weights`.
pub(crate) fn weights(loads: &[f64], weights: &mut Vec<f64>) {
    weights.clear();
    // A load of zero would be an infinite weight.
    let floor = loads
        .iter()
        .copied()
        .filter(|load| *load > 0.0)
        .fold(f64::INFINITY, f64::min);
    let floor = if floor.is_finite() {
        floor / WEIGHT_RANGE
    } else {
        1.0
    };
    weights.extend(loads.iter().map(|load| 1.0 / load.max(floor)));
    if weights.is_empty() {
        return;
    }
    let mean = weights.iter().sum::<f64>() / weights.len() as f64;
    for weight in weights.iter_mut() {
        *weight = (*weight / mean).clamp(1.0 / WEIGHT_RANGE, WEIGHT_RANGE);
    }
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
        // Slow failures raise it: 8 in 100 ms and 2 dropped after 1 s, 20 % failed.
        let mut slow_failures = Interval::default();
        for i in 0..10 {
            slow_failures.add(if i < 2 { 1000 * MS } else { 100 * MS }, i < 2);
        }
        let latency = load(LoadMetric::Latency, &slow_failures);
        assert!((latency - 0.28 * 1.8).abs() < 1e-9, "{latency}");
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
        failed.add(3 * MS, true);
        assert_eq!(
            sample(&config(LoadMetric::Latency), &failed, second),
            Sample::AllFailed { latency: 0.002 }
        );
    }

    #[test]
    fn failed_and_unobserved_intervals_score_against_the_mean() {
        let config = AdaptiveConfig::default();
        let samples = [
            Sample::Load(1.0),
            Sample::Load(3.0),
            Sample::AllFailed { latency: 0.5 },
            Sample::Unobserved,
            Sample::Unobserved,
            Sample::AllFailed { latency: 4.0 },
        ];
        let resolved = resolve(&config, &samples, |i| i != 4);
        assert_eq!(
            resolved,
            [
                Some(1.0),
                Some(3.0),
                Some(10.0),
                Some(2.0),
                None,
                Some(20.0)
            ]
        );
        let failed = Sample::AllFailed { latency: 1.0 };
        let nothing = resolve(&config, &[failed, Sample::Unobserved], |_| true);
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

    fn weights_of(loads: &[f64]) -> Vec<f64> {
        let mut out = Vec::new();
        weights(loads, &mut out);
        out
    }

    #[test]
    fn weights_are_inverse_to_the_load_and_average_one() {
        let w = weights_of(&[1.0, 2.0, 4.0]);
        assert!((w.iter().sum::<f64>() / 3.0 - 1.0).abs() < 1e-9);
        assert!((w[0] / w[1] - 2.0).abs() < 1e-9);
        assert!((w[1] / w[2] - 2.0).abs() < 1e-9);
    }

    #[test]
    fn a_zero_load_does_not_take_everything() {
        let w = weights_of(&[0.0, 1.0, 1.0]);
        assert!(w[0].is_finite() && w[0] <= WEIGHT_RANGE);
        assert!(w[1] >= 1.0 / WEIGHT_RANGE);
        assert_eq!(weights_of(&[0.0, 0.0]), vec![1.0, 1.0]);
    }

    #[test]
    fn the_live_load_takes_weight_away_at_once_and_the_history_gives_it_back() {
        let mut scratch = Vec::new();
        let mut relative = Vec::new();
        // Before the first update: the live loads alone; one not answered yet is the median.
        let none = [None; 4];
        let live = [Some(100.0), Some(100.0), Some(1000.0), None];
        relative_loads(&none, &live, &mut scratch, &mut relative);
        assert_eq!(relative, [1.0, 1.0, 10.0, 1.0]);
        // The third is slow now though its history says otherwise: the live load counts.
        let predicted = [Some(0.1), Some(0.1), Some(0.1), Some(0.1)];
        relative_loads(&predicted, &live, &mut scratch, &mut relative);
        assert_eq!(relative, [1.0, 1.0, 10.0, 1.0]);
        // It answers fast again but its history still remembers: the history counts.
        let predicted = [Some(0.1), Some(0.1), Some(0.4), Some(0.1)];
        let live = [Some(100.0), Some(100.0), Some(100.0), Some(100.0)];
        relative_loads(&predicted, &live, &mut scratch, &mut relative);
        assert_eq!(relative, [1.0, 1.0, 4.0, 1.0]);
    }

    #[test]
    fn the_failure_ratio_follows_the_last_answers() {
        let mut ratio = 0.0;
        for _ in 0..100 {
            ratio = failure_ratio(ratio, true);
        }
        assert!(ratio > 0.99, "{ratio}");
        for _ in 0..16 {
            ratio = failure_ratio(ratio, false);
        }
        assert!(
            (0.3..0.4).contains(&ratio),
            "{ratio}: about 1/e after 16 successes"
        );
        assert_eq!(live_load(100.0, 0.5, 4.0), 300.0);
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

        /// Weights are inverse to the load and average 1 (loads within a factor of 10, where
        /// no weight reaches the range's ends).
        #[test]
        fn weights_are_inverse_to_the_load(
            base in 1e-3f64..1e3,
            factors in prop::collection::vec(1.0f64..10.0, 1..12),
        ) {
            let loads: Vec<f64> = factors.iter().map(|f| base * f).collect();
            let w = weights_of(&loads);
            let mean = w.iter().sum::<f64>() / w.len() as f64;
            prop_assert!((mean - 1.0).abs() < 1e-9, "mean {}", mean);
            for (load, weight) in loads.iter().zip(&w) {
                prop_assert!((load * weight / (loads[0] * w[0]) - 1.0).abs() < 1e-9);
            }
        }

        /// Whatever the loads, the weights stay within 1/100..100, and a heavier load never
        /// gets more weight.
        #[test]
        fn weights_stay_in_range_and_in_order(
            loads in prop::collection::vec(0.0f64..1e6, 1..12),
        ) {
            let w = weights_of(&loads);
            prop_assert_eq!(w.len(), loads.len());
            for weight in &w {
                prop_assert!((1.0 / WEIGHT_RANGE..=WEIGHT_RANGE).contains(weight));
            }
            for (a, wa) in loads.iter().zip(&w) {
                for (b, wb) in loads.iter().zip(&w) {
                    if a < b {
                        prop_assert!(wa >= wb);
                    }
                }
            }
        }

        /// A relative load is never below what either signal says, and the upstreams that
        /// sit at both medians are at 1 or above.
        #[test]
        fn relative_loads_take_the_worse_signal(
            pairs in prop::collection::vec(
                (prop::option::weighted(0.7, 1e-3f64..1e3), prop::option::weighted(0.9, 1e-3f64..1e3)),
                1..12,
            ),
        ) {
            let (predicted, live): (Vec<_>, Vec<_>) = pairs.into_iter().unzip();
            let (mut scratch, mut relative) = (Vec::new(), Vec::new());
            relative_loads(&predicted, &live, &mut scratch, &mut relative);
            let pm = median(&predicted, &mut scratch);
            let lm = median(&live, &mut scratch);
            for ((p, l), r) in predicted.iter().zip(&live).zip(&relative) {
                prop_assert!(*r >= p.map_or(0.0, |p| p / pm));
                prop_assert!(*r >= l.map_or(1.0, |l| l / lm));
                prop_assert!(*r == p.map_or(0.0, |p| p / pm) || *r == l.map_or(1.0, |l| l / lm));
            }
        }
    }
}
