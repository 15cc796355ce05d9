//! What proxflow-transform costs (issue 20's targets).
//!
//! ```text
//! cargo bench -p proxflow-benches --bench transform -- --warm-up-time 1 --measurement-time 3
//! ```
//!
//! - `transform_headers/<case>`: one request through `TransformLayer` over a no-op service
//!   (`service_fn` answering an empty 200), with no rule (`none`: the layer's own cost) and
//!   with two header rules (`two_rules`: `add` a request header, `set` a response header from a
//!   template), against the service alone (`bare`). Target: the rules add at most 300 ns.
//! - `transform_json/<case>`: the JSON work on a 10 KiB body: `serde` parses and serializes it
//!   (serde_json, the baseline); `five_rules` parses it, applies five body rules as the layer
//!   does (`replace`, `set`, `delete`, `append`, `test`; in place, the layer keeping the
//!   original bytes for a failure) and serializes it. Target: at most 1.3x.
//! - `transform_json_library/<library>`: the same 10 KiB body parsed into a document and
//!   serialized back by each candidate library, each checked once (outside the timed loop) to
//!   give back a document serde_json reads as the original: `serde_json` (the baseline, measured
//!   again here so the ratios come from one run), `sonic_rs` (its own `Value`), `simd_json` (its
//!   owned value, parsed from a mutable copy of the body that the iteration pays for, as the layer
//!   would: it keeps the original bytes), and `sonic_rs_to_serde` (sonic-rs parsing into
//!   `serde_json::Value`, serialized by serde_json: the rules engine kept as it is). The summary
//!   prints each median's ratio to serde_json's.

use std::convert::Infallible;
use std::hint::black_box;
use std::time::SystemTime;

use criterion::Criterion;
use http::{Request, Response};
use proxflow_benches::{call_now, criterion_dir, median_ns};
use proxflow_transform::headers::{HeaderRule, HeaderVerb, Template};
use proxflow_transform::patch::Operation;
use proxflow_transform::rules::{self, BodyRule};
use proxflow_transform::{Path, TransformBody, TransformLayer, When};
use serde_json::{json, Value};
use tower::{Layer, Service};

const HEADERS: &str = "transform_headers";
const JSON: &str = "transform_json";
const LIBRARY: &str = "transform_json_library";
/// The `transform_json_library` cases, the baseline first.
const LIBRARIES: [&str; 4] = ["serde_json", "sonic_rs", "simd_json", "sonic_rs_to_serde"];

fn noop() -> impl Service<
    Request<TransformBody<String>>,
    Response = Response<String>,
    Error = Infallible,
    Future = std::future::Ready<Result<Response<String>, Infallible>>,
> + Clone {
    tower::service_fn(|_: Request<TransformBody<String>>| {
        std::future::ready(Ok::<_, Infallible>(Response::new(String::new())))
    })
}

fn header_rules() -> TransformLayer {
    let add = HeaderRule::new(
        "x-api-version",
        HeaderVerb::Add(Template::parse("v1").unwrap()),
        false,
    )
    .unwrap();
    let set = HeaderRule::new(
        "x-path",
        HeaderVerb::Set(Template::parse("{method} {path}").unwrap()),
        false,
    )
    .unwrap();
    TransformLayer::new()
        .request_header(add, When::always())
        .response_header(set, When::always())
}

fn request() -> Request<String> {
    Request::get("/api/users/7?page=2")
        .header("accept", "application/json")
        .header("user-agent", "bench")
        .body(String::new())
        .unwrap()
}

fn headers(c: &mut Criterion) {
    let mut group = c.benchmark_group(HEADERS);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime");
    let _entered = runtime.enter();
    let mut bare = tower::service_fn(|_: Request<String>| {
        std::future::ready(Ok::<_, Infallible>(Response::new(String::new())))
    });
    group.bench_function("bare", |b| {
        b.iter(|| black_box(call_now(&mut bare, black_box(request()))))
    });
    let mut none = TransformLayer::new().layer(noop());
    group.bench_function("none", |b| {
        b.iter(|| black_box(call_now(&mut none, black_box(request()))))
    });
    let mut two = header_rules().layer(noop());
    let answer = call_now(&mut two, request());
    assert_eq!(answer.headers()["x-path"], "GET /api/users/7");
    group.bench_function("two_rules", |b| {
        b.iter(|| black_box(call_now(&mut two, black_box(request()))))
    });
    group.finish();
}

/// A 10 KiB JSON document: a user and a list of items.
fn document() -> Vec<u8> {
    let items: Vec<Value> = (0..175)
        .map(|i| json!({"id": i, "name": format!("item {i}"), "price": i as f64 * 1.5, "tags": ["a", "b"]}))
        .collect();
    let body = json!({"user": {"name": "ada", "email": "ada@example.com", "roles": ["admin"]}, "items": items});
    let bytes = serde_json::to_vec(&body).unwrap();
    assert!(
        (9_000..12_000).contains(&bytes.len()),
        "{} bytes",
        bytes.len()
    );
    bytes
}

fn five_rules() -> Vec<BodyRule> {
    let path = |p: &str| Path::parse(p).unwrap();
    vec![
        BodyRule::Patch(Operation::Replace {
            path: path("user.name"),
            value: json!("enriched"),
        }),
        BodyRule::Set {
            path: path("meta.source"),
            value: json!("gateway"),
        },
        BodyRule::Delete {
            path: path("user.email"),
        },
        BodyRule::Append {
            path: path("user.roles"),
            value: json!("reader"),
            promote: false,
        },
        BodyRule::Patch(Operation::Test {
            path: path("/items/0/id"),
            value: json!(0),
        }),
    ]
}

fn json_work(c: &mut Criterion) {
    let mut group = c.benchmark_group(JSON);
    let body = document();
    group.bench_function("serde", |b| {
        b.iter(|| {
            let value: Value = serde_json::from_slice(black_box(&body)).unwrap();
            black_box(serde_json::to_vec(&value).unwrap())
        })
    });
    let rules = five_rules();
    group.bench_function("five_rules", |b| {
        b.iter(|| {
            let mut value: Value = serde_json::from_slice(black_box(&body)).unwrap();
            rules::apply_in_place(&mut value, &rules).unwrap();
            black_box(serde_json::to_vec(&value).unwrap())
        })
    });
    group.finish();
}

/// Panics unless `output`, read by serde_json, is the document `original` holds.
fn assert_round_trip(library: &str, original: &[u8], output: &[u8]) {
    let expected: Value = serde_json::from_slice(original).unwrap();
    let actual: Value = serde_json::from_slice(output)
        .unwrap_or_else(|e| panic!("{library}'s output is not JSON serde_json reads: {e}"));
    assert_eq!(actual, expected, "{library} changed the document");
}

fn json_libraries(c: &mut Criterion) {
    let mut group = c.benchmark_group(LIBRARY);
    let body = document();

    let with_serde_json = |body: &[u8]| {
        let value: Value = serde_json::from_slice(body).unwrap();
        serde_json::to_vec(&value).unwrap()
    };
    assert_round_trip("serde_json", &body, &with_serde_json(&body));
    group.bench_function("serde_json", |b| {
        b.iter(|| black_box(with_serde_json(black_box(&body))))
    });

    let with_sonic_rs = |body: &[u8]| {
        let value: sonic_rs::Value = sonic_rs::from_slice(body).unwrap();
        sonic_rs::to_vec(&value).unwrap()
    };
    assert_round_trip("sonic_rs", &body, &with_sonic_rs(&body));
    group.bench_function("sonic_rs", |b| {
        b.iter(|| black_box(with_sonic_rs(black_box(&body))))
    });

    // simd-json parses in place, so the layer, which keeps the request's bytes, parses a copy.
    let with_simd_json = |body: &[u8]| {
        let mut copy = body.to_vec();
        let value = simd_json::to_owned_value(&mut copy).unwrap();
        simd_json::to_vec(&value).unwrap()
    };
    assert_round_trip("simd_json", &body, &with_simd_json(&body));
    group.bench_function("simd_json", |b| {
        b.iter(|| black_box(with_simd_json(black_box(&body))))
    });

    let with_sonic_rs_to_serde = |body: &[u8]| {
        let value: Value = sonic_rs::from_slice(body).unwrap();
        serde_json::to_vec(&value).unwrap()
    };
    assert_round_trip("sonic_rs_to_serde", &body, &with_sonic_rs_to_serde(&body));
    group.bench_function("sonic_rs_to_serde", |b| {
        b.iter(|| black_box(with_sonic_rs_to_serde(black_box(&body))))
    });
    group.finish();
}

fn summary(since: SystemTime) {
    let Some(dir) = criterion_dir() else {
        return;
    };
    let get = |id: &str| median_ns(&dir, since, id);
    let mut out = String::from("\n## proxflow-transform (medians)\n\n");
    if let (Some(bare), Some(none), Some(two)) = (
        get(&format!("{HEADERS}/bare")),
        get(&format!("{HEADERS}/none")),
        get(&format!("{HEADERS}/two_rules")),
    ) {
        let added = two - bare;
        let verdict = if added <= 300.0 { "PASS" } else { "FAIL" };
        out += &format!(
            "Header rules: bare {bare:.1} ns, the layer without rules {none:.1} ns, with two header rules {two:.1} ns: {added:.1} ns added (target <= 300 ns: {verdict}).\n"
        );
    }
    if let (Some(serde), Some(five)) = (
        get(&format!("{JSON}/serde")),
        get(&format!("{JSON}/five_rules")),
    ) {
        let ratio = five / serde;
        let verdict = if ratio <= 1.3 { "PASS" } else { "FAIL" };
        out += &format!(
            "10 KiB JSON: parse + serialize {serde:.0} ns, with five rules {five:.0} ns: {ratio:.2}x (target <= 1.3x: {verdict}).\n"
        );
    }
    let medians = LIBRARIES.map(|library| get(&format!("{LIBRARY}/{library}")));
    if let Some(baseline) = medians[0] {
        out += "10 KiB JSON, parse + serialize by library (ratio to serde_json):";
        for (library, median) in LIBRARIES.iter().zip(medians) {
            if let Some(median) = median {
                out += &format!(" {library} {median:.0} ns ({:.2}x);", median / baseline);
            }
        }
        out.pop();
        out += ".\n";
    }
    println!("{out}");
}

fn main() {
    let since = SystemTime::now();
    let mut c = Criterion::default().configure_from_args();
    headers(&mut c);
    json_work(&mut c);
    json_libraries(&mut c);
    c.final_summary();
    summary(since);
}
