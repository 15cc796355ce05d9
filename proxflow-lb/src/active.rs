//! Active health checks: `GET path` to every upstream each interval, through the balancer's
//! own client; an upstream failing `unhealthy_threshold` checks in a row takes no traffic
//! until it passes `healthy_threshold` in a row.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use http::{header, Request, Response};
use tower_service::Service;

use crate::backend::Backend;
use crate::config::ActiveHealth;
use crate::pool::Pool;
use crate::proxy::empty_body;

/// Starts the checks of `pool` once, on a task of the current tokio runtime; the task ends
/// when the pool is dropped.
pub(crate) fn start<S, B, R>(pool: &Arc<Pool>, client: &S)
where
    S: Service<Request<B>, Response = Response<R>> + Clone + Send + 'static,
    S::Future: Send,
    B: Send + 'static,
{
    let Some(check) = pool.running().draft.health_check.clone() else {
        return;
    };
    if pool.health_started.load(Ordering::Relaxed)
        || pool.health_started.swap(true, Ordering::AcqRel)
    {
        return;
    }
    let Some(empty) = empty_body::<B>() else {
        tracing::warn!(
            body = std::any::type_name::<B>(),
            "active health checks need an empty request body the balancer can make (axum's \
             Body, String, Empty<Bytes>, Full<Bytes>); not started"
        );
        return;
    };
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        tracing::warn!("active health checks need a tokio runtime; not started");
        pool.health_started.store(false, Ordering::Release);
        return;
    };
    let pool = Arc::downgrade(pool);
    let client = client.clone();
    runtime.spawn(async move {
        let mut ticker = tokio::time::interval(check.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let Some(list) = pool.upgrade().map(|pool| pool.list()) else {
                break;
            };
            let probes = list
                .iter()
                .map(|backend| probe(client.clone(), backend, empty(), &check));
            let results = futures_util::future::join_all(probes).await;
            for (backend, passed) in list.iter().zip(results) {
                match backend.record_check(passed, &check) {
                    Some(true) => {
                        tracing::warn!(upstream = %backend.name, "upstream failing health checks")
                    }
                    Some(false) => {
                        tracing::info!(upstream = %backend.name, "upstream healthy again")
                    }
                    None => {}
                }
            }
        }
    });
}

/// One check, a `GET` with `body`: a 2xx or 3xx answer within the timeout passes.
async fn probe<S, B, R>(mut client: S, backend: &Backend, body: B, check: &ActiveHealth) -> bool
where
    S: Service<Request<B>, Response = Response<R>>,
{
    let Some(base) = &backend.base else {
        return true; // generic-form endpoints are judged by their readiness instead
    };
    let Ok(uri) = format!("{}{}", backend.name, check.path).parse::<http::Uri>() else {
        return false;
    };
    let mut request = Request::new(body);
    *request.uri_mut() = uri;
    if let Some(host) = &base.host {
        request.headers_mut().insert(header::HOST, host.clone());
    }
    let answer = async {
        std::future::poll_fn(|cx| client.poll_ready(cx))
            .await
            .ok()?;
        client.call(request).await.ok()
    };
    match tokio::time::timeout(check.timeout, answer).await {
        Ok(Some(response)) => response.status().is_success() || response.status().is_redirection(),
        _ => false,
    }
}
