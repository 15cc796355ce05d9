//! moka's eviction policies as proxflow-cache's store would have them, under one-off URLs and a
//! change of the popular set (issue 19: "moka's TinyLFU admission can refuse a new key when
//! full, which matters for one-off URLs: measure and choose").
//!
//! The store is built as proxflow-cache builds its own: a `moka::sync::Cache` bounded in bytes
//! by a weigher, here 10 MB of entries of about 1.4 KB each (a 1 KiB body, its headers and the
//! store's 256-byte overhead per entry, and the key), about 7,000 entries. Each request looks
//! its key up; a miss inserts it, as the cache stores the origin's answer. Both policies see
//! the same seeded request stream:
//!
//! - **mixes**: a share of the requests go to 100k recurring keys drawn from Zipf(1.0), the
//!   rest to URLs never asked for again (`?utm=<n>`, a search, a timestamp). After a warm-up,
//!   the hit ratio of the recurring keys, how often a recurring key inserted after a miss is
//!   present on its next request, and the share of the store held by one-off URLs at the end.
//! - **shift**: recurring keys only; halfway the popular set changes (rank r becomes key
//!   r + 50,000), so the newly popular keys were cold before. The hit ratio per window of
//!   requests before and after the change: how fast each policy lets the new set in.
//!
//! ```text
//! cargo run --release -p proxflow-benches --bin cache_admission [-- --requests 2000000 --seed 1]
//! ```
//!
//! Prints markdown tables and a recommendation. The request stream is the seed's, but moka's
//! hashing (and so TinyLFU's frequency sketch) is seeded per process: TinyLFU's figures move
//! by a few tenths of a point between runs.

use std::sync::Arc;

use bytes::Bytes;
use clap::Parser;
use moka::policy::EvictionPolicy;
use moka::sync::Cache;

/// Command-line arguments.
#[derive(Parser)]
#[command(about = "moka's TinyLFU against LRU for proxflow-cache's store")]
struct Args {
    /// Requests measured per mix (after as many again of warm-up); the shift runs twice as
    /// many, changing the popular set halfway.
    #[arg(long, default_value_t = 2_000_000)]
    requests: usize,
    /// Seed of the request stream.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// The store's bound, in bytes.
const CAPACITY: u64 = 10_000_000;
/// A stored body.
const BODY_SIZE: usize = 1024;
/// What an entry weighs besides its key and body: proxflow-cache's `ENTRY_OVERHEAD` (256) and a
/// few headers (name + value + 32 each, as its weigher counts them).
const OVERHEAD: usize = 256 + 3 * 64;
/// The recurring keys.
const KEYS: usize = 100_000;
/// Zipf's exponent.
const EXPONENT: f64 = 1.0;
/// Requests per window of the shift's table: about one and a half times the entries the store
/// holds.
const WINDOW: usize = 10_000;
/// The windows after the change that the shift's table shows.
const SHOWN: [usize; 6] = [1, 2, 3, 5, 10, 50];
/// How close to its ratio before the change a policy's window must come to count as recovered.
const RECOVERED_WITHIN: f64 = 0.02;

#[derive(Clone, Copy, Debug)]
enum Policy {
    TinyLfu,
    Lru,
}

impl Policy {
    fn name(self) -> &'static str {
        match self {
            Policy::TinyLfu => "TinyLFU (moka's default)",
            Policy::Lru => "LRU",
        }
    }

    fn moka(self) -> EvictionPolicy {
        match self {
            Policy::TinyLfu => EvictionPolicy::tiny_lfu(),
            Policy::Lru => EvictionPolicy::lru(),
        }
    }
}

const POLICIES: [Policy; 2] = [Policy::TinyLfu, Policy::Lru];

/// A store built as proxflow-cache's is, with `policy`.
fn store(policy: Policy) -> Cache<Arc<str>, Bytes> {
    Cache::builder()
        .max_capacity(CAPACITY)
        .eviction_policy(policy.moka())
        .weigher(|key: &Arc<str>, body: &Bytes| {
            u32::try_from(key.len() + body.len() + OVERHEAD).unwrap_or(u32::MAX)
        })
        .build()
}

/// The weight of a recurring key's entry, for the reference below.
fn entry_weight() -> usize {
    recurring_key(KEYS / 2).len() + BODY_SIZE + OVERHEAD
}

/// Draws ranks 0..n with probability proportional to 1 / (rank + 1)^s: a binary search of the
/// cumulative weights.
struct Zipf {
    cumulative: Vec<f64>,
}

impl Zipf {
    fn new(n: usize, s: f64) -> Zipf {
        let mut total = 0.0;
        let cumulative = (1..=n)
            .map(|rank| {
                total += 1.0 / (rank as f64).powf(s);
                total
            })
            .collect();
        Zipf { cumulative }
    }

    fn draw(&self, rng: &mut fastrand::Rng) -> usize {
        let total = self.cumulative.last().copied().unwrap_or(0.0);
        let point = rng.f64() * total;
        self.cumulative
            .partition_point(|&c| c <= point)
            .min(self.cumulative.len() - 1)
    }

    /// The probability of the `n` most popular ranks together.
    fn top(&self, n: usize) -> f64 {
        let total = self.cumulative.last().copied().unwrap_or(0.0);
        n.checked_sub(1)
            .and_then(|i| self.cumulative.get(i))
            .map_or(0.0, |c| c / total)
    }
}

fn recurring_key(id: usize) -> String {
    format!("example.com/api/items/{id}")
}

fn one_off_key(n: u64) -> String {
    format!("example.com/search?q=x&utm={n}")
}

/// What one run saw after its warm-up.
#[derive(Default)]
struct Outcome {
    recurring: u64,
    recurring_hits: u64,
    /// Recurring keys inserted after a miss, and asked for again later: how many, and how
    /// many of those were present then.
    next_asked: u64,
    next_present: u64,
    /// The share of the store's entries that were one-off URLs, at the end.
    one_off_share: f64,
    /// The recurring hit ratio of each window (the shift).
    windows: Vec<f64>,
}

/// One run: `warm_up` requests, then `measured`; a request is recurring with probability
/// `recurring`, its key `shifted` by `KEYS / 2` from request `shift_at` on.
fn run(
    policy: Policy,
    zipf: &Zipf,
    seed: u64,
    recurring: f64,
    (warm_up, measured): (usize, usize),
    shift_at: Option<usize>,
) -> Outcome {
    let cache = store(policy);
    let mut rng = fastrand::Rng::with_seed(seed);
    let body = Bytes::from(vec![b'x'; BODY_SIZE]);
    // Per recurring key: inserted after a miss, not asked for since.
    let mut inserted = vec![false; KEYS];
    let mut one_offs = 0u64;
    let mut outcome = Outcome::default();
    let (mut window_asked, mut window_hits) = (0u64, 0u64);
    for i in 0..warm_up + measured {
        let counted = i >= warm_up;
        if rng.f64() >= recurring {
            one_offs += 1;
            let key = one_off_key(one_offs);
            if cache.get(key.as_str()).is_none() {
                cache.insert(Arc::from(key), body.clone());
            }
            continue;
        }
        let rank = zipf.draw(&mut rng);
        let id = match shift_at {
            Some(at) if i >= at => (rank + KEYS / 2) % KEYS,
            _ => rank,
        };
        let key = recurring_key(id);
        let hit = cache.get(key.as_str()).is_some();
        if counted {
            outcome.recurring += 1;
            outcome.recurring_hits += u64::from(hit);
            window_asked += 1;
            window_hits += u64::from(hit);
            if inserted[id] {
                outcome.next_asked += 1;
                outcome.next_present += u64::from(hit);
            }
        }
        inserted[id] = !hit;
        if !hit {
            cache.insert(Arc::from(key), body.clone());
        }
        if counted && (i - warm_up + 1) % WINDOW == 0 {
            outcome
                .windows
                .push(window_hits as f64 / window_asked.max(1) as f64);
            (window_asked, window_hits) = (0, 0);
        }
    }
    cache.run_pending_tasks();
    let entries = cache.entry_count().max(1);
    let one_off_entries = cache.iter().filter(|(key, _)| key.contains("utm=")).count();
    outcome.one_off_share = one_off_entries as f64 / entries as f64;
    outcome
}

fn percent(value: f64) -> String {
    format!("{:.1}%", value * 100.0)
}

fn main() {
    let args = Args::parse();
    let zipf = Zipf::new(KEYS, EXPONENT);
    let fits = CAPACITY as usize / entry_weight();
    println!(
        "# moka's admission under one-off URLs\n\n`{}`, {}\n\nStore: moka sync cache bounded \
         at {} MB by a byte weigher, {} B per recurring entry (about {fits} entries); {KEYS} \
         recurring keys from Zipf({EXPONENT}); seed {}. A perfect static cache of the {fits} \
         most popular keys would hit {} of recurring requests.\n",
        proxflow_benches::command_line(),
        proxflow_benches::utc_now(),
        CAPACITY / 1_000_000,
        entry_weight(),
        args.seed,
        percent(zipf.top(fits)),
    );

    println!(
        "## One-off URLs mixed with recurring keys ({} requests measured after as many of \
         warm-up)\n",
        args.requests
    );
    println!(
        "| recurring / one-off | policy | recurring hit ratio | a new recurring key present \
         on its next request | store held by one-offs at the end |\n|---|---|--:|--:|--:|"
    );
    let mut mixes = Vec::new();
    for recurring in [0.7, 0.3] {
        for policy in POLICIES {
            let outcome = run(
                policy,
                &zipf,
                args.seed,
                recurring,
                (args.requests, args.requests),
                None,
            );
            let next = outcome.next_present as f64 / outcome.next_asked.max(1) as f64;
            let hit_ratio = outcome.recurring_hits as f64 / outcome.recurring.max(1) as f64;
            println!(
                "| {:.0}% / {:.0}% | {} | {} | {} | {} |",
                recurring * 100.0,
                (1.0 - recurring) * 100.0,
                policy.name(),
                percent(hit_ratio),
                percent(next),
                percent(outcome.one_off_share),
            );
            mixes.push((recurring, policy, hit_ratio));
        }
    }

    let total = 2 * args.requests;
    let before = args.requests / WINDOW;
    println!(
        "\n## The popular set changes halfway (recurring keys only, {total} requests, the \
         change at {}; hit ratio per window of {WINDOW} requests)\n",
        args.requests,
    );
    let mut header = String::from("| policy | before (last 10 windows) |");
    for n in SHOWN {
        header += &format!(" window {n} after |");
    }
    header += &format!(
        " requests after the change until a window is within {:.0} points of before |",
        RECOVERED_WITHIN * 100.0
    );
    println!("{header}\n|---|--:|{}--:|", "--:|".repeat(SHOWN.len()));
    let mut shifts = Vec::new();
    for policy in POLICIES {
        let outcome = run(
            policy,
            &zipf,
            args.seed,
            1.0,
            (0, total),
            Some(args.requests),
        );
        let shift = Shift::of(&outcome.windows, before);
        let mut row = format!("| {} | {} |", policy.name(), percent(shift.before));
        for n in SHOWN {
            let ratio = outcome.windows.get(before + n - 1);
            row += &format!(" {} |", ratio.map_or("n/a".into(), |&r| percent(r)));
        }
        let recovery = shift
            .recovered_after
            .map_or("not within the run".to_string(), |w| {
                (w * WINDOW).to_string()
            });
        println!("{row} {recovery} |");
        shifts.push((policy, shift));
    }

    println!("\n## Recommendation\n\n{}", recommend(&mixes, &shifts));
}

/// The shift's figures of one policy.
struct Shift {
    /// The mean hit ratio of the last 10 windows before the change.
    before: f64,
    /// The hit ratio of the first window after it.
    first_after: f64,
    /// Windows after the change until one comes within [`RECOVERED_WITHIN`] of `before`.
    recovered_after: Option<usize>,
    /// The hit ratio of every window after the change.
    after: Vec<f64>,
}

impl Shift {
    fn of(windows: &[f64], change: usize) -> Shift {
        let last = &windows[change.saturating_sub(10)..change.min(windows.len())];
        let before = last.iter().sum::<f64>() / last.len().max(1) as f64;
        let after = windows.get(change..).unwrap_or_default();
        Shift {
            before,
            first_after: after.first().copied().unwrap_or(0.0),
            recovered_after: after
                .iter()
                .position(|&r| r >= before - RECOVERED_WITHIN)
                .map(|i| i + 1),
            after: after.to_vec(),
        }
    }
}

/// The recommendation from the figures: the policy with the higher recurring hit ratio in
/// every mix, and how each recovers after the change.
fn recommend(mixes: &[(f64, Policy, f64)], shifts: &[(Policy, Shift)]) -> String {
    let ratio = |recurring: f64, policy: &str| {
        mixes
            .iter()
            .find(|(r, p, _)| *r == recurring && p.name() == policy)
            .map_or(0.0, |(_, _, h)| *h)
    };
    let shift = |policy: &str| {
        shifts
            .iter()
            .find(|(p, _)| p.name() == policy)
            .map(|(_, s)| s)
    };
    let tiny = Policy::TinyLfu.name();
    let lru = Policy::Lru.name();
    let tiny_wins = [0.7, 0.3].iter().all(|&r| ratio(r, tiny) >= ratio(r, lru));
    let mut out = format!(
        "Recurring hit ratio, TinyLFU against LRU: {} against {} at 70% recurring, {} against \
         {} at 30%.",
        percent(ratio(0.7, tiny)),
        percent(ratio(0.7, lru)),
        percent(ratio(0.3, tiny)),
        percent(ratio(0.3, lru)),
    );
    if let (Some(t), Some(l)) = (shift(tiny), shift(lru)) {
        let recovered = |s: &Shift| {
            s.recovered_after
                .map_or("not within the run".to_string(), |w| {
                    format!("{} requests", w * WINDOW)
                })
        };
        out += &format!(
            " When the popular set changes: {} before, {} in the first window after, back \
             within {:.0} points after {} for TinyLFU; {}, {} and {} for LRU.",
            percent(t.before),
            percent(t.first_after),
            RECOVERED_WITHIN * 100.0,
            recovered(t),
            percent(l.before),
            percent(l.first_after),
            recovered(l),
        );
        // Windows after the change until TinyLFU's hits since it have caught up with LRU's.
        let mut lead = 0.0;
        let caught_up = t.after.iter().zip(&l.after).position(|(t, l)| {
            lead += t - l;
            lead >= 0.0
        });
        out += &match caught_up {
            Some(w) => format!(
                " TinyLFU's hits since the change catch up with LRU's after {} requests: it \
                 comes out ahead unless the popular set turns over more often than that.",
                (w + 1) * WINDOW
            ),
            None => " TinyLFU's hits since the change do not catch up with LRU's within the \
                     run."
                .to_string(),
        };
    }
    out += if tiny_wins {
        "\n\nKeep TinyLFU (moka's default): refusing cold keys keeps the recurring ones in the \
         store, and it wins on them in both mixes; what it costs is the slower take-up of a \
         newly popular set (the shift table)."
    } else {
        "\n\nUse LRU (`EvictionPolicy::lru()`): it admits every new key, and it wins on the \
         recurring keys in at least one mix."
    };
    out
}
