//! One run: a paused-time runtime, the open-loop Poisson arrivals, the pool's changes on
//! schedule, the 1 s timeout where the contender's placement says, and what each request got.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Uri};
use tokio::time::Instant;
use tower::ServiceExt;

use crate::backends::{Placement, Result, World, TIMEOUT};
use crate::balancers::{build, Contender};
use crate::scenarios::Scenario;
use crate::stats::{summarize, Record, RunResult};

/// One run of `contender` in `scenario` with `seed`, on its own paused-time runtime.
pub fn run(scenario: &Scenario, contender: &Contender, seed: u64) -> Result<RunResult> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()?;
    let (records, sends) = runtime.block_on(simulate(scenario, contender, seed))?;
    drop(runtime);
    Ok(summarize(scenario, records, &sends))
}

async fn simulate(
    scenario: &Scenario,
    contender: &Contender,
    seed: u64,
) -> Result<(Vec<Record>, Vec<Vec<u32>>)> {
    let start = Instant::now();
    let duration = scenario.duration;
    let seconds = duration as usize + 3;
    let placement = contender.placement;
    let world = Arc::new(World::new(
        start,
        &scenario.backends,
        seed,
        seconds,
        placement,
    ));
    let (client, control) = build(&contender.kind, &world, scenario, seed)?;
    let control = Arc::new(control);

    let events = scenario.events.clone();
    let control_task = Arc::clone(&control);
    let world_task = Arc::clone(&world);
    tokio::spawn(async move {
        for (at, event) in events {
            tokio::time::sleep_until(start + Duration::from_secs_f64(at)).await;
            control_task.apply(event, &world_task);
        }
    });

    let expected = (scenario.rate * duration * 1.05) as usize;
    let records = Arc::new(Mutex::new(Vec::with_capacity(expected)));
    let mut rng = fastrand::Rng::with_seed(seed ^ 0x00a1_1fe5_0000_0000);
    let uri = Uri::from_static("http://service/");
    let mut t = 0.0;
    loop {
        t += -(1.0 - rng.f64()).ln() / scenario.rate;
        if t >= duration {
            break;
        }
        let scheduled = start + Duration::from_secs_f64(t);
        if scheduled > Instant::now() {
            tokio::time::sleep_until(scheduled).await;
        }
        let client = client.clone();
        let records = Arc::clone(&records);
        let mut request = Request::new(String::new());
        *request.uri_mut() = uri.clone();
        tokio::spawn(async move {
            // Outside: the deadline drops the balancer's future. Inside: a little grace, so
            // that the client's own timeout (from its send) answers first.
            let deadline = match placement {
                Placement::Outside => scheduled + TIMEOUT,
                Placement::Inside => scheduled + TIMEOUT + Duration::from_millis(5),
            };
            let outcome = tokio::time::timeout_at(deadline, client.oneshot(request)).await;
            let latency = Instant::now().saturating_duration_since(scheduled);
            let timed_out = latency >= TIMEOUT;
            let ok = !timed_out && matches!(outcome, Ok(Ok(status)) if status.is_success());
            let record = Record {
                latency_us: latency.min(TIMEOUT).as_micros() as u32,
                ok,
                timed_out,
            };
            records
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(record);
        });
    }
    // Every request is answered or timed out by then.
    tokio::time::sleep(TIMEOUT + Duration::from_millis(50)).await;
    let records = std::mem::take(&mut *records.lock().unwrap_or_else(|p| p.into_inner()));
    let sends = world
        .sends
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    Ok((records, sends))
}
