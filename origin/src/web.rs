//! The origin's HTTP side: `/metalink` (what every dnf fetches on every
//! refresh), `/` (the status page), `/status` (the same report as JSON) and
//! `/metrics` (Prometheus text). Thin handlers over [`crate::metalink`],
//! [`crate::status`], [`crate::page`] and [`crate::metrics`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::SystemTime;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hotpush_shared::daemon::LogThrottle;
use hotpush_shared::metalink::error_document;
use hotpush_shared::url::MetalinkQuery;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::metalink::MetalinkError;
use crate::origin::Origin;
use crate::status::Report;

#[derive(Clone)]
struct Web {
    origin: Arc<Origin>,
    /// `max-age=<metalink_max_age_secs>`, formatted once.
    cache_control: String,
    /// Anyone can ask for a repo that does not exist, at any rate.
    refusals: Arc<LogThrottle>,
}

/// The routes.
pub fn router(origin: Arc<Origin>) -> Router {
    let state = Web {
        cache_control: format!("max-age={}", origin.config.metalink_max_age.as_secs()),
        origin,
        refusals: Arc::new(LogThrottle::per_second(5)),
    };
    Router::new()
        .route("/", get(page))
        .route("/metalink", get(metalink))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .with_state(state)
        .layer(axum::middleware::from_fn(
            hotpush_shared::daemon::access_log,
        ))
}

/// Serves HTTP on every listener until `shutdown`.
pub async fn serve(
    origin: Arc<Origin>,
    listeners: Vec<TcpListener>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let limits = origin.config.connections.clone();
    hotpush_shared::http::serve(
        router(origin),
        listeners,
        "metalink and status",
        &limits,
        shutdown,
    )
    .await
}

/// `GET /metalink?repo=<repo>&arch=<arch>`, MirrorManager's form; other
/// parameters, such as dnf's `countme`, are ignored.
async fn metalink(
    State(web): State<Web>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let xml = HeaderValue::from_static("application/metalink+xml");
    let repo = match MetalinkQuery::from_params(
        q.get("repo").map(String::as_str),
        q.get("arch").map(String::as_str),
    ) {
        Ok(query) => query.repo().clone(),
        Err(e) => {
            return (
                StatusCode::BAD_REQUEST,
                [(header::CONTENT_TYPE, xml)],
                error_document(&format!("# {e}")),
            )
                .into_response();
        }
    };
    let document = web.origin.metalinks.get(&repo);
    match document.as_ref() {
        Ok(d) => {
            if headers
                .get(header::IF_NONE_MATCH)
                .is_some_and(|v| v.as_bytes() == d.etag.as_bytes())
            {
                return (StatusCode::NOT_MODIFIED, [(header::ETAG, d.etag.clone())])
                    .into_response();
            }
            (
                StatusCode::OK,
                [
                    (header::CONTENT_TYPE, "application/metalink+xml".to_owned()),
                    (header::CACHE_CONTROL, web.cache_control.clone()),
                    (header::ETAG, d.etag.clone()),
                ],
                d.render(SystemTime::now()),
            )
                .into_response()
        }
        Err(e) => {
            let code = match e {
                MetalinkError::UnknownRepo(_) => StatusCode::NOT_FOUND,
                MetalinkError::NoMirrors { .. } => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            if let Some(suppressed) = web.refusals.allow() {
                tracing::warn!(%repo, error = %e, suppressed, "metalink not served");
            }
            (
                code,
                [(header::CONTENT_TYPE, xml)],
                error_document(&format!("# {e}")),
            )
                .into_response()
        }
    }
}

/// `GET /`: the status page.
async fn page(State(web): State<Web>) -> Response {
    match tokio::task::spawn_blocking(move || Report::collect(&web.origin)).await {
        Ok(Ok(report)) => {
            let now = hotpush_shared::clock::now_unix();
            axum::response::Html(crate::page::render(&report, now)).into_response()
        }
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// `GET /status`: the status report as JSON.
async fn status(State(web): State<Web>) -> Response {
    match tokio::task::spawn_blocking(move || Report::collect(&web.origin)).await {
        Ok(Ok(report)) => axum::Json(report).into_response(),
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// `GET /metrics`.
async fn metrics(State(web): State<Web>) -> Response {
    // Drills run as their own process: their outcome is in the database.
    let origin = web.origin.clone();
    if let Ok(Ok((last, passed))) = tokio::task::spawn_blocking(move || origin.db.drills()).await {
        web.origin.metrics.drills(last.as_ref(), passed);
    }
    match web.origin.metrics.encode() {
        Ok((text, content_type)) => ([(header::CONTENT_TYPE, content_type)], text).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}
