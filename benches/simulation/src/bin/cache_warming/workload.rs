//! The workloads: the requests, in time order, from a seed.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Keys of the base stream (W1's, and W2's lists).
pub const KEYS: u32 = 100_000;
/// Requests per second of the base stream.
pub const RATE: f64 = 1000.0;
/// Clients the requests come from, uniformly.
pub const CLIENTS: u32 = 10_000;
/// Nanoseconds per second.
pub const SECOND: u64 = 1_000_000_000;
/// The most details a list names (W2u's ten).
const MAX_LIST: u32 = 10;

/// A workload of the issue.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Workload {
    /// Zipf requests over [`KEYS`] keys with this exponent, Poisson at [`RATE`].
    W1(f64),
    /// W1 at exponent 1.0 whose requests are lists: each names 3 details, and each detail
    /// is requested by the same client with probability 0.7, within 2 s.
    W2,
    /// W2 as the literal alternative: each list names 10 details; with probability 0.7 the
    /// client requests 1 to 3 distinct ones of them, uniformly, within 2 s.
    W2u,
}

impl Workload {
    /// All workloads, in report order.
    pub fn all() -> Vec<Workload> {
        vec![
            Workload::W1(0.8),
            Workload::W1(1.0),
            Workload::W1(1.2),
            Workload::W2,
            Workload::W2u,
        ]
    }

    /// The name in the report and on the command line.
    pub fn name(self) -> String {
        match self {
            Workload::W1(s) => format!("W1 s={s:.1}"),
            Workload::W2 => "W2".into(),
            Workload::W2u => "W2u".into(),
        }
    }

    /// The Zipf exponent of the base stream.
    pub fn exponent(self) -> f64 {
        match self {
            Workload::W1(s) => s,
            Workload::W2 | Workload::W2u => 1.0,
        }
    }

    /// The number of distinct keys (base keys, then details).
    pub fn key_space(self) -> usize {
        match self {
            Workload::W1(_) => KEYS as usize,
            Workload::W2 | Workload::W2u => (KEYS + KEYS * MAX_LIST) as usize,
        }
    }

    /// The keys that follow `key` with probability at least 0.6 (W2's details of a list).
    pub fn likely_followers(self, key: u32) -> impl Iterator<Item = u32> {
        let n = match self {
            Workload::W2 if key < KEYS => 3,
            _ => 0,
        };
        (0..n).map(move |j| detail(key, j))
    }

    /// Whether this workload has sessions (the prefetch targets apply).
    pub fn has_sessions(self) -> bool {
        !matches!(self, Workload::W1(_))
    }
}

/// The detail key of item `j` of list `list`.
fn detail(list: u32, j: u32) -> u32 {
    KEYS + list * MAX_LIST + j
}

/// One request.
#[derive(Clone, Copy, Debug)]
pub struct Request {
    /// When, in nanoseconds.
    pub at: u64,
    pub key: u32,
    pub client: u32,
}

/// Zipf sampling over `n` ranks in constant time (Vose's alias method); rank `r` is key `r`.
pub struct Zipf {
    prob: Vec<f64>,
    alias: Vec<u32>,
}

impl Zipf {
    pub fn new(n: u32, exponent: f64) -> Self {
        let weights: Vec<f64> = (1..=n).map(|r| f64::from(r).powf(-exponent)).collect();
        let total: f64 = weights.iter().sum();
        let n = n as usize;
        let mut scaled: Vec<f64> = weights.iter().map(|w| w * n as f64 / total).collect();
        let mut prob = vec![1.0; n];
        let mut alias: Vec<u32> = (0..n as u32).collect();
        let (mut small, mut large): (Vec<usize>, Vec<usize>) =
            (0..n).partition(|&i| scaled[i] < 1.0);
        while let (Some(s), Some(&l)) = (small.pop(), large.last()) {
            prob[s] = scaled[s];
            alias[s] = l as u32;
            scaled[l] -= 1.0 - scaled[s];
            if scaled[l] < 1.0 {
                large.pop();
                small.push(l);
            }
        }
        Self { prob, alias }
    }

    pub fn sample(&self, rng: &mut fastrand::Rng) -> u32 {
        let i = rng.usize(..self.prob.len());
        if rng.f64() < self.prob[i] {
            i as u32
        } else {
            self.alias[i]
        }
    }

    /// The request rates of every key at `rate` requests per second, by rank.
    pub fn rates(n: u32, exponent: f64, rate: f64) -> Vec<f64> {
        let weights: Vec<f64> = (1..=n).map(|r| f64::from(r).powf(-exponent)).collect();
        let total: f64 = weights.iter().sum();
        weights.iter().map(|w| w / total * rate).collect()
    }
}

/// The requests of a workload, generated lazily in time order.
pub struct Requests {
    workload: Workload,
    rng: fastrand::Rng,
    zipf: Zipf,
    next_list: u64,
    end: u64,
    details: BinaryHeap<Reverse<(u64, u32, u32)>>,
}

impl Requests {
    /// The requests of `workload` for seed `seed`, until `end` nanoseconds.
    pub fn new(workload: Workload, seed: u64, end: u64) -> Self {
        let stream = match workload {
            Workload::W1(s) => (s * 10.0) as u64,
            Workload::W2 => 100,
            Workload::W2u => 101,
        };
        let mut rng = fastrand::Rng::with_seed(seed.wrapping_mul(1_000_003) ^ stream);
        let next_list = exponential(&mut rng);
        Self {
            workload,
            zipf: Zipf::new(KEYS, workload.exponent()),
            rng,
            next_list,
            end,
            details: BinaryHeap::new(),
        }
    }

    /// The next request, if any before the end.
    pub fn next(&mut self) -> Option<Request> {
        let detail_first = self
            .details
            .peek()
            .is_some_and(|Reverse((at, _, _))| *at < self.next_list);
        if detail_first {
            let Reverse((at, key, client)) = self.details.pop()?;
            return Some(Request { at, key, client });
        }
        let at = self.next_list;
        if at >= self.end {
            return None;
        }
        self.next_list = at + exponential(&mut self.rng);
        let key = self.zipf.sample(&mut self.rng);
        let client = self.rng.u32(..CLIENTS);
        self.follow(at, key, client);
        Some(Request { at, key, client })
    }

    /// The time of the next request (`u64::MAX` if none).
    pub fn peek_time(&self) -> u64 {
        let list = if self.next_list < self.end {
            self.next_list
        } else {
            u64::MAX
        };
        self.details
            .peek()
            .map_or(list, |Reverse((at, _, _))| (*at).min(list))
    }

    /// Schedules the detail requests that follow list `list` requested at `at`.
    fn follow(&mut self, at: u64, list: u32, client: u32) {
        match self.workload {
            Workload::W1(_) => {}
            Workload::W2 => {
                for j in 0..3 {
                    if self.rng.f64() < 0.7 {
                        self.detail_at(at, detail(list, j), client);
                    }
                }
            }
            Workload::W2u => {
                if self.rng.f64() < 0.7 {
                    let picks = self.rng.u32(1..=3);
                    let mut chosen = [u32::MAX; 3];
                    for p in 0..picks as usize {
                        let j = loop {
                            let j = self.rng.u32(..MAX_LIST);
                            if !chosen.contains(&j) {
                                break j;
                            }
                        };
                        chosen[p] = j;
                        self.detail_at(at, detail(list, j), client);
                    }
                }
            }
        }
    }

    /// A detail request uniformly within the 2 s after `at` (before the end).
    fn detail_at(&mut self, at: u64, key: u32, client: u32) {
        let delay = 1 + (self.rng.f64() * 2.0 * SECOND as f64) as u64;
        if at + delay < self.end {
            self.details.push(Reverse((at + delay, key, client)));
        }
    }
}

/// A Poisson gap at [`RATE`], in nanoseconds (at least 1).
fn exponential(rng: &mut fastrand::Rng) -> u64 {
    let gap = -(1.0 - rng.f64()).ln() / RATE;
    ((gap * SECOND as f64) as u64).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_sampling_follows_the_weights() {
        let zipf = Zipf::new(100, 1.0);
        let rates = Zipf::rates(100, 1.0, 1.0);
        let mut rng = fastrand::Rng::with_seed(1);
        let mut counts = [0u32; 100];
        for _ in 0..200_000 {
            counts[zipf.sample(&mut rng) as usize] += 1;
        }
        for r in [0, 1, 9, 99] {
            let seen = f64::from(counts[r]) / 200_000.0;
            assert!(
                (seen - rates[r]).abs() < 0.1 * rates[r] + 0.001,
                "{r}: {seen}"
            );
        }
    }

    #[test]
    fn w2_details_follow_their_list_within_two_seconds() {
        let mut requests = Requests::new(Workload::W2, 1, 60 * SECOND);
        let mut last_list = std::collections::HashMap::new();
        let (mut lists, mut details) = (0u32, 0u32);
        while let Some(r) = requests.next() {
            if r.key < KEYS {
                lists += 1;
                last_list.insert((r.key, r.client), r.at);
            } else {
                details += 1;
                let list = (r.key - KEYS) / MAX_LIST;
                assert!((r.key - KEYS) % MAX_LIST < 3);
                let at = last_list[&(list, r.client)];
                assert!(r.at > at && r.at <= at + 2 * SECOND);
            }
        }
        let per_list = f64::from(details) / f64::from(lists);
        assert!((per_list - 2.1).abs() < 0.05, "{per_list}");
    }
}
