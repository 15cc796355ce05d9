//! The gateway's dashboard in headless Chromium, driven through chromedriver (WebDriver): the
//! page loads and goes live, its figures and charts change as traffic flows, a breaker forced
//! open through the admin endpoint shows within two updates, its controls reach the admin
//! endpoint, and it reconnects by itself after a gateway restart. A screenshot taken with the
//! breaker open is written to `<target>/dashboard.png`.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs them); ignored
//! otherwise. Run it with `cargo test -p proxflow-examples --test dashboard_browser --
//! --ignored`. `CHROMEDRIVER` and `CHROMIUM` name other binaries.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::Router;
use fantoccini::{Client, ClientBuilder, Locator};
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use proxflow_examples::gateway::config::Loaded;
use proxflow_examples::gateway::{self};
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};
use tower::ServiceExt;

/// The dashboard's update interval in this test.
const INTERVAL: Duration = Duration::from_millis(500);

/// How long any one condition may take to hold.
const PATIENCE: Duration = Duration::from_secs(20);

/// The embedded configuration (its demo upstreams: fast, slow, flaky), updated every
/// [`INTERVAL`], with a rate limit the test's traffic stays under.
fn config() -> Loaded {
    let mut loaded = Loaded::embedded();
    let config = &mut loaded.config;
    config.traffic_dashboard.update_interval = INTERVAL;
    config.rate_limit.rate = 100_000;
    config.rate_limit.burst = 100_000;
    config.access_log.enabled = false;
    loaded
}

/// A gateway served on a listener until [`Server::stop`], which also ends its open
/// connections (the page's event stream among them), as a process that exits would.
struct Server {
    accept: JoinHandle<()>,
}

impl Server {
    async fn start(listener: TcpListener) -> Server {
        let router = gateway::start(&config()).await.unwrap().router;
        Server {
            accept: tokio::spawn(accept(listener, router)),
        }
    }

    /// Ends the accept loop; dropping its `JoinSet` aborts every connection.
    async fn stop(self) {
        self.accept.abort();
        let _ = self.accept.await;
    }
}

async fn accept(listener: TcpListener, router: Router) {
    let mut connections = JoinSet::new();
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        let service =
            router
                .clone()
                .map_request(move |mut request: Request<hyper::body::Incoming>| {
                    request.extensions_mut().insert(ConnectInfo(peer));
                    request
                });
        connections.spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
                .await;
        });
        while connections.try_join_next().is_some() {}
    }
}

/// chromedriver on a free port, ended when dropped.
struct Chromedriver {
    child: Child,
    url: String,
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Chromedriver {
    async fn start() -> Chromedriver {
        let program = std::env::var("CHROMEDRIVER").unwrap_or_else(|_| "chromedriver".into());
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(&program)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| {
                panic!("{program}: {error}; install Debian's chromium and chromium-driver")
            });
        let driver = Chromedriver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let status = &format!("{}/status", driver.url);
        eventually("chromedriver ready", || async move {
            let answer = get_json(status).await.ok()?;
            (answer["value"]["ready"] == true).then_some(())
        })
        .await;
        driver
    }

    async fn browser(&self) -> Client {
        let mut options = json!({
            "args": [
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--hide-scrollbars",
                "--window-size=1400,2100",
                "--force-device-scale-factor=1",
            ],
        });
        let binary = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
        if std::path::Path::new(&binary).exists() {
            options["binary"] = binary.into();
        }
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("goog:chromeOptions".into(), options);
        ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&self.url)
            .await
            .expect("a Chromium session")
    }
}

/// Retries `probe` until it gives a value, for [`PATIENCE`] at most.
async fn eventually<T, F, Fut>(what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        if let Some(value) = probe().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {PATIENCE:?}: {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs `script` in the page until it returns something other than `null` or `false`.
async fn page_until(browser: &Client, what: &str, script: &str) -> Value {
    eventually(what, || async move {
        let value = browser.execute(script, vec![]).await.unwrap();
        (!value.is_null() && value != false).then_some(value)
    })
    .await
}

async fn page(browser: &Client, script: &str) -> Value {
    browser.execute(script, vec![]).await.unwrap()
}

type Http = hyper_util::client::legacy::Client<HttpConnector, Body>;

fn http() -> Http {
    hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http()
}

async fn request(method: Method, url: &str, body: &str) -> Result<(StatusCode, String), String> {
    send(&http(), method, url, body).await
}

async fn send(
    client: &Http,
    method: Method,
    url: &str,
    body: &str,
) -> Result<(StatusCode, String), String> {
    let request = Request::builder()
        .method(method)
        .uri(url)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .unwrap();
    let response = client.request(request).await.map_err(|e| e.to_string())?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

async fn get_json(url: &str) -> Result<Value, String> {
    let (_, body) = request(Method::GET, url, "").await?;
    serde_json::from_str(&body).map_err(|e| e.to_string())
}

/// Requests to `/api` from four clients (each with its keep-alive connections) until `stop`
/// (at most 60 s or 200,000 requests); failed connections (while the gateway restarts) are
/// skipped.
fn traffic(gateway: SocketAddr, stop: Arc<AtomicBool>) -> JoinSet<()> {
    let sent = Arc::new(AtomicU64::new(0));
    let mut clients = JoinSet::new();
    for worker in 0..4u64 {
        let (stop, sent) = (Arc::clone(&stop), Arc::clone(&sent));
        clients.spawn(async move {
            let client = http();
            let started = tokio::time::Instant::now();
            let mut n = worker;
            while !stop.load(Ordering::Relaxed)
                && started.elapsed() < Duration::from_secs(60)
                && sent.fetch_add(1, Ordering::Relaxed) < 200_000
            {
                let path = match n % 4 {
                    0 => "/api/cached/catalog".to_string(),
                    1 => "/api/profile".to_string(),
                    _ => format!("/api/orders/{n}"),
                };
                let url = format!("http://{gateway}{path}");
                if send(&client, Method::GET, &url, "").await.is_err() {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                n += 4;
            }
        });
    }
    clients
}

/// Where cargo writes: `CARGO_TARGET_DIR`, else the workspace's `target`.
fn target_dir() -> PathBuf {
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => workspace.join(dir),
        None => workspace.join("target"),
    }
}

const FIGURES: &str = r##"
    const chart = document.getElementById("chart-requests");
    return {
        seq: Number(document.body.dataset.seq),
        rps: Number(document.getElementById("tile-rps").dataset.value),
        rps_text: document.querySelector("#tile-rps .value").textContent,
        p99_text: document.querySelector("#tile-p99 .value").textContent,
        // The chart's pixels, hashed (FNV-1a) to keep messages short.
        chart: [...chart.toDataURL()].reduce(
            (h, c) => Math.imul(h ^ c.charCodeAt(0), 16777619) >>> 0, 2166136261),
        points: Number(chart.dataset.points),
        status: document.getElementById("status").dataset.status,
    };
"##;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs chromium and chromedriver; .ci/run installs them"]
async fn the_dashboard_shows_live_traffic_and_a_forced_breaker_in_chromium() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = Server::start(listener).await;
    let driver = Chromedriver::start().await;
    let browser = driver.browser().await;
    // In a task of its own, so that the session is closed (and Chromium ends with it) when
    // an assertion fails, before chromedriver is ended.
    let outcome = tokio::spawn(drive(browser.clone(), addr, server)).await;
    let _ = browser.close().await;
    match outcome {
        Ok(result) => result.unwrap(),
        Err(error) => std::panic::resume_unwind(error.into_panic()),
    }
}

async fn drive(browser: Client, addr: SocketAddr, server: Server) -> Result<(), String> {
    let browser = &browser;
    let base = format!("http://{addr}");
    browser
        .goto(&format!("{base}/dashboard"))
        .await
        .map_err(|e| e.to_string())?;
    page_until(
        browser,
        "the page live, with the history drawn",
        r#"return document.getElementById("status").dataset.status === "live"
            && Number(document.body.dataset.seq) >= 0"#,
    )
    .await;
    // Only the page's own requests so far.
    let idle = page(browser, FIGURES).await;
    assert!(idle["rps"].as_f64().unwrap() < 20.0, "{idle}");

    // Traffic: the figures and the request-rate chart change from one update to the next.
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = traffic(addr, Arc::clone(&stop));
    let busy = page_until(
        browser,
        "a request rate above 50/s",
        &format!(
            "const f = (() => {{ {FIGURES} }})(); return f.rps > 50 && f.points > 1 ? f : null;"
        ),
    )
    .await;
    let seq = busy["seq"].as_i64().unwrap();
    let later = page_until(
        browser,
        "two more updates",
        &format!(
            "const f = (() => {{ {FIGURES} }})(); return f.seq >= {} ? f : null;",
            seq + 2
        ),
    )
    .await;
    assert!(later["rps"].as_f64().unwrap() > 0.0, "{later}");
    assert_ne!(busy["rps"], later["rps"], "the request rate changes");
    assert_ne!(
        busy["chart"], later["chart"],
        "the chart is redrawn with new points"
    );
    for text in [&later["rps_text"], &later["p99_text"]] {
        let text = text.as_str().unwrap();
        assert!(
            text.ends_with("/s") || text.ends_with(" ms") || text.ends_with(" µs"),
            "readable units: {text}"
        );
        assert!(text.len() <= 12, "no long fractions: {text}");
    }

    // A breaker forced open through the admin endpoint shows within two updates.
    let upstream = page_until(
        browser,
        "flaky's breaker made by its first calls",
        r#"const row = document.querySelector('#upstreams tr[data-upstream="flaky"]');
           return row && row.dataset.breakerState === "closed";"#,
    )
    .await;
    assert_eq!(upstream, true);
    let before = page(browser, "return Number(document.body.dataset.seq);").await;
    let (status, body) = request(
        Method::POST,
        &format!("{base}/admin/upstreams/flaky/breaker"),
        r#"{"state": "open"}"#,
    )
    .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    let shown = page_until(
        browser,
        "flaky's breaker open on the page",
        r#"const row = document.querySelector('#upstreams tr[data-upstream="flaky"]');
           return row.dataset.breakerState === "forced_open"
               ? { since: Number(row.dataset.stateSinceSeq),
                   badge: row.querySelector(".state").textContent,
                   transition: !!document.querySelector(
                       '#transitions li[data-upstream="flaky"][data-to="forced_open"]'),
                   table: document.querySelector('#breakers tr[data-breaker="flaky"]').dataset.state }
               : null;"#,
    )
    .await;
    let before = before.as_i64().unwrap();
    let since = shown["since"].as_i64().unwrap();
    assert!(
        since <= before + 2,
        "shown at update {since}, forced after update {before}: {shown}"
    );
    assert_eq!(shown["badge"], "forced open");
    assert_eq!(shown["transition"], true, "in the transitions list");
    assert_eq!(shown["table"], "forced_open");

    // Two more updates of traffic with the breaker open, then the picture.
    let seq = page(browser, "return Number(document.body.dataset.seq);").await;
    page_until(
        browser,
        "two updates with the breaker open",
        &format!(
            "return Number(document.body.dataset.seq) >= {};",
            seq.as_i64().unwrap() + 2
        ),
    )
    .await;
    let png = browser.screenshot().await.map_err(|e| e.to_string())?;
    let path = target_dir().join("dashboard.png");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, &png).unwrap();
    println!("screenshot: {}", path.display());

    // The page's controls: reset the breaker, and give `slow` another latency.
    browser
        .find(Locator::Css(
            r#"#upstreams tr[data-upstream="flaky"] button[data-action="reset"]"#,
        ))
        .await
        .map_err(|e| e.to_string())?
        .click()
        .await
        .map_err(|e| e.to_string())?;
    page_until(
        browser,
        "flaky's breaker closed again after the page's reset",
        r#"return document.querySelector('#upstreams tr[data-upstream="flaky"]')
            .dataset.breakerState === "closed";"#,
    )
    .await;
    page(
        browser,
        r#"const row = document.querySelector('#upstreams tr[data-upstream="slow"]');
           row.querySelector('[data-input="latency"]').value = "150ms";
           row.querySelector('[data-action="apply"]').click();
           return true;"#,
    )
    .await;
    let list = &format!("{base}/admin/upstreams");
    eventually("slow's latency changed from the page", || async move {
        let list = get_json(list).await.ok()?;
        let slow = list.as_array()?.iter().find(|u| u["name"] == "slow")?;
        (slow["latency_ms"] == 150.0).then_some(())
    })
    .await;

    // A gateway restart: the page says it is reconnecting, then goes live again by itself,
    // with the new gateway's history.
    let last = page(browser, "return Number(document.body.dataset.seq);").await;
    server.stop().await;
    page_until(
        browser,
        "the reconnecting badge",
        r#"const s = document.getElementById("status");
           return s.dataset.status === "reconnecting" && s.textContent === "reconnecting…";"#,
    )
    .await;
    let listener = eventually("the port free again", || async move {
        TcpListener::bind(addr).await.ok()
    })
    .await;
    let server = Server::start(listener).await;
    let again = page_until(
        browser,
        "live again after the restart",
        r#"return document.getElementById("status").dataset.status === "live"
            ? Number(document.body.dataset.seq) : null;"#,
    )
    .await;
    assert!(
        again.as_i64() < last.as_i64(),
        "the new gateway's updates ({again}) replace the old one's ({last})"
    );

    stop.store(true, Ordering::Relaxed);
    while clients.join_next().await.is_some() {}
    server.stop().await;
    Ok(())
}
