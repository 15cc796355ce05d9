//! The scenarios: each backend's latency, concurrency limit, failures and outages over the
//! run, the arrival rate, the run's length, the changes to the pool, and the backend whose
//! share is watched.

/// How a backend's latency bounds change over the run.
#[derive(Clone, Copy, Debug)]
pub enum Shape {
    /// Uniform in `[lo, hi]` throughout.
    Fixed,
    /// Exactly `ms` during `[from, to)`, otherwise uniform.
    Pinned { from: f64, to: f64, ms: f64 },
    /// S3: uniform in `[max/2, max]`, `max` drifting 10 -> 300 ms and back ([`drift_max`]).
    Drift,
    /// Cold: the bounds times a factor falling linearly from `factor` at `at` to 1 at
    /// `at + warm`.
    Cold { at: f64, factor: f64, warm: f64 },
}

/// What a backend does during an outage.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum OutageKind {
    /// Down hard: every request fails at once, as a refused connection.
    Refused,
    /// Not ready: its tower service's `poll_ready` is pending, so it is sent nothing.
    NotReady,
}

/// A backend out of service during `[from, to)` seconds.
#[derive(Clone, Copy, Debug)]
pub struct Outage {
    pub from: f64,
    pub to: f64,
    pub kind: OutageKind,
}

/// One backend.
#[derive(Clone, Debug)]
pub struct Spec {
    pub lo_ms: f64,
    pub hi_ms: f64,
    pub limit: usize,
    /// Share of calls answered 503 after 1 ms.
    pub fail: f64,
    pub shape: Shape,
    pub outage: Option<Outage>,
}

impl Spec {
    /// Latency uniform in `[lo_ms, hi_ms]` throughout, never failing.
    pub fn uniform(lo_ms: f64, hi_ms: f64, limit: usize) -> Spec {
        Spec {
            lo_ms,
            hi_ms,
            limit,
            fail: 0.0,
            shape: Shape::Fixed,
            outage: None,
        }
    }

    /// The kind of outage it is in at `t` seconds, if any.
    pub fn outage_at(&self, t: f64) -> Option<OutageKind> {
        self.outage
            .filter(|o| (o.from..o.to).contains(&t))
            .map(|o| o.kind)
    }

    /// When its outage of `kind` that covers `t` ends, in seconds.
    pub fn outage_end(&self, t: f64, kind: OutageKind) -> Option<f64> {
        self.outage
            .filter(|o| o.kind == kind && (o.from..o.to).contains(&t))
            .map(|o| o.to)
    }

    /// Latency bounds (ms) of a request starting service at `t` seconds.
    pub fn bounds(&self, t: f64) -> (f64, f64) {
        match self.shape {
            Shape::Fixed => (self.lo_ms, self.hi_ms),
            Shape::Pinned { from, to, ms } if (from..to).contains(&t) => (ms, ms),
            Shape::Pinned { .. } => (self.lo_ms, self.hi_ms),
            Shape::Drift => {
                let max = drift_max(t);
                (max / 2.0, max)
            }
            Shape::Cold { at, factor, warm } => {
                let cold = (1.0 - (t - at) / warm).clamp(0.0, 1.0);
                let f = 1.0 + (factor - 1.0) * cold;
                (self.lo_ms * f, self.hi_ms * f)
            }
        }
    }

    fn mean_ms(&self, t: f64) -> f64 {
        let (lo, hi) = self.bounds(t);
        (lo + hi) / 2.0
    }

    /// Answers per second it can give at `t`, successes only.
    fn capacity(&self, t: f64) -> f64 {
        if self.outage_at(t).is_some() {
            return 0.0;
        }
        self.limit as f64 * (1.0 - self.fail) / (self.mean_ms(t).max(0.5) / 1000.0)
    }
}

/// S3's drifting backend: max latency 10 ms until 10 s, up to 300 ms at 25 s, held until
/// 35 s, back to 10 ms at 50 s.
fn drift_max(t: f64) -> f64 {
    if t < 10.0 {
        10.0
    } else if t < 25.0 {
        10.0 + 290.0 * (t - 10.0) / 15.0
    } else if t < 35.0 {
        300.0
    } else if t < 50.0 {
        300.0 - 290.0 * (t - 35.0) / 15.0
    } else {
        10.0
    }
}

/// A change to the pool.
#[derive(Clone, Copy, Debug)]
pub enum Event {
    Remove(usize),
    Add(usize),
}

/// The backend(s) whose share is watched, and when.
#[derive(Clone, Debug)]
pub struct Bad {
    pub backends: Vec<usize>,
    pub from: f64,
    pub to: f64,
    pub label: &'static str,
}

/// One scenario of the report.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub id: &'static str,
    pub title: &'static str,
    pub setup: String,
    pub rate: f64,
    /// Seconds of arrivals.
    pub duration: f64,
    pub backends: Vec<Spec>,
    /// Backends in the balancer at the start.
    pub initial: Vec<usize>,
    pub events: Vec<(f64, Event)>,
    pub bad: Bad,
}

impl Scenario {
    /// Whether a backend can be not ready: then every balancer is driven over one tower
    /// service per backend (proxflow through its generic form), which can say so.
    pub fn has_readiness(&self) -> bool {
        self.backends
            .iter()
            .any(|b| b.outage.is_some_and(|o| o.kind == OutageKind::NotReady))
    }

    /// Whether backend `i` is in the balancer at `t`.
    fn in_pool(&self, i: usize, t: f64) -> bool {
        let mut present = self.initial.contains(&i);
        for &(at, event) in &self.events {
            if at <= t {
                match event {
                    Event::Remove(j) if j == i => present = false,
                    Event::Add(j) if j == i => present = true,
                    _ => {}
                }
            }
        }
        present
    }

    /// The bad backends' share of the pool's capacity at `t`.
    pub fn fair_share(&self, t: f64) -> f64 {
        let mut total = 0.0;
        let mut bad = 0.0;
        for (i, spec) in self.backends.iter().enumerate() {
            if !self.in_pool(i, t) {
                continue;
            }
            let capacity = spec.capacity(t);
            total += capacity;
            if self.bad.backends.contains(&i) {
                bad += capacity;
            }
        }
        if total > 0.0 {
            bad / total
        } else {
            0.0
        }
    }
}

/// The usual run's length.
const MINUTE: f64 = 60.0;

/// S2 and S2L: eleven backends near 167 ms; b0 answers in exactly 2 s during the middle half
/// of a run of `duration` seconds.
fn pinned(id: &'static str, title: &'static str, duration: f64) -> Scenario {
    let (from, to) = (duration / 4.0, duration * 3.0 / 4.0);
    let mut backends: Vec<Spec> = (0..11).map(|_| Spec::uniform(150.0, 184.0, 50)).collect();
    backends[0].shape = Shape::Pinned {
        from,
        to,
        ms: 2000.0,
    };
    Scenario {
        id,
        title,
        setup: format!(
            "11 backends, latency uniform in [150, 184] ms (mean 167); b0 exactly 2000 ms \
             during {from:.0}-{to:.0} s; limit 50 each; 1000 rps"
        ),
        rate: 1000.0,
        duration,
        backends,
        initial: (0..11).collect(),
        events: vec![],
        bad: Bad {
            backends: vec![0],
            from,
            to,
            label: "b0 while pinned",
        },
    }
}

/// S7 and S8: ten backends of 50-100 ms, b0 out of service (`kind`) during 15-45 s.
fn outage(id: &'static str, title: &'static str, kind: OutageKind, what: &str) -> Scenario {
    let (from, to) = (MINUTE / 4.0, MINUTE * 3.0 / 4.0);
    let mut backends: Vec<Spec> = (0..10).map(|_| Spec::uniform(50.0, 100.0, 20)).collect();
    backends[0].outage = Some(Outage { from, to, kind });
    Scenario {
        id,
        title,
        setup: format!(
            "10 backends, latency uniform in [50, 100] ms, limit 20 each, 1000 rps; b0 {what} \
             during {from:.0}-{to:.0} s"
        ),
        rate: 1000.0,
        duration: MINUTE,
        backends,
        initial: (0..10).collect(),
        events: vec![],
        bad: Bad {
            backends: vec![0],
            from,
            to,
            label: "b0 during its outage",
        },
    }
}

/// S1 to S8, with S2L (S2 over 300 s) after S2.
pub fn scenarios() -> Vec<Scenario> {
    let all = |n: usize| (0..n).collect::<Vec<_>>();
    let normal = |limit| Spec::uniform(50.0, 100.0, limit);
    let whole_run = |backends: Vec<usize>, label| Bad {
        backends,
        from: 0.0,
        to: f64::INFINITY,
        label,
    };
    let mut list = Vec::new();

    // S1: tower's balance example's backends, with its uniform [0, max) latency.
    let maxes = [
        1.0, 5.0, 10.0, 10.0, 10.0, 100.0, 100.0, 100.0, 500.0, 1000.0,
    ];
    list.push(Scenario {
        id: "S1",
        title: "ten backends of different speed",
        setup: "10 backends, latency uniform in [0, max), max 1, 5, 10, 10, 10, 100, 100, \
                100, 500, 1000 ms; limit 50 each; 2723 rps"
            .into(),
        rate: 2723.0,
        duration: MINUTE,
        backends: maxes
            .iter()
            .map(|&max| Spec::uniform(0.0, max, 50))
            .collect(),
        initial: all(10),
        events: vec![],
        bad: whole_run(vec![9], "the 1000 ms one, whole run"),
    });

    list.push(pinned("S2", "one of eleven pinned to 2 s for 30 s", MINUTE));
    list.push(pinned(
        "S2L",
        "one of eleven pinned to 2 s for 150 s of 300",
        5.0 * MINUTE,
    ));

    // S3: one backend drifting 10 -> 300 ms and back.
    let mut backends: Vec<Spec> = (0..10).map(|_| normal(20)).collect();
    backends[0].shape = Shape::Drift;
    list.push(Scenario {
        id: "S3",
        title: "one backend drifting 10 -> 300 ms and back",
        setup: "10 backends, latency uniform in [50, 100] ms; b0 uniform in [max/2, max], \
                max 10 ms until 10 s, rising to 300 ms at 25 s, 300 ms until 35 s, back to \
                10 ms at 50 s; limit 20 each; 1200 rps"
            .into(),
        rate: 1200.0,
        duration: MINUTE,
        backends,
        initial: all(10),
        events: vec![],
        bad: Bad {
            backends: vec![0],
            from: 23.0,
            to: 37.0,
            label: "b0 during 23-37 s (max >= 250 ms)",
        },
    });

    // S4: one backend answers 30% of calls with a 1 ms 503.
    let mut backends: Vec<Spec> = (0..10).map(|_| normal(50)).collect();
    backends[0].fail = 0.3;
    list.push(Scenario {
        id: "S4",
        title: "one backend failing 30% of calls fast",
        setup: "10 backends, latency uniform in [50, 100] ms; b0 answers 30% of calls with a \
                503 after 1 ms; limit 50 each; 500 rps"
            .into(),
        rate: 500.0,
        duration: MINUTE,
        backends,
        initial: all(10),
        events: vec![],
        bad: whole_run(vec![0], "b0, whole run"),
    });

    // S5: b0 removed at 20 s; a cold b10 added at 30 s (the slow start of a new backend).
    let mut backends: Vec<Spec> = (0..11).map(|_| normal(20)).collect();
    backends[10].shape = Shape::Cold {
        at: 30.0,
        factor: 4.0,
        warm: 10.0,
    };
    list.push(Scenario {
        id: "S5",
        title: "a backend removed, a cold one added",
        setup: "10 backends, latency uniform in [50, 100] ms, limit 20 each, 1200 rps; b0 \
                removed at 20 s; b10 added at 30 s, cold: its latency 4x at first, back to 1x \
                linearly by 40 s"
            .into(),
        rate: 1200.0,
        duration: MINUTE,
        backends,
        initial: all(10),
        events: vec![(20.0, Event::Remove(0)), (30.0, Event::Add(10))],
        bad: Bad {
            backends: vec![10],
            from: 30.0,
            to: 40.0,
            label: "the cold b10 during 30-40 s",
        },
    });

    // S6: equal latency, concurrency limits 10 vs 100.
    let backends: Vec<Spec> = (0..10)
        .map(|i| Spec::uniform(100.0, 200.0, if i < 5 { 10 } else { 100 }))
        .collect();
    list.push(Scenario {
        id: "S6",
        title: "equal latency, different capacity",
        setup: "10 backends, latency uniform in [100, 200] ms; b0-b4 limit 10, b5-b9 limit \
                100; 2000 rps (55% of capacity)"
            .into(),
        rate: 2000.0,
        duration: MINUTE,
        backends,
        initial: all(10),
        events: vec![],
        bad: whole_run(vec![0, 1, 2, 3, 4], "the five limit-10 ones, whole run"),
    });

    list.push(outage(
        "S7",
        "a backend hard down for the middle half",
        OutageKind::Refused,
        "refuses every connection at once (the client fails without waiting)",
    ));
    list.push(outage(
        "S8",
        "a backend not ready for the middle half",
        OutageKind::NotReady,
        "not ready (its service's `poll_ready` is pending; every balancer runs over one tower \
         service per backend, proxflow through `AdaptiveLb::balance`)",
    ));
    list
}
