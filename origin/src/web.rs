//! The origin's HTTP side: `/metalink` (what every dnf fetches on every
//! refresh), `/status` (JSON) and `/metrics` (Prometheus text).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hotpush_shared::metalink::error_document;

use crate::metalink::{DescriptionCache, MetalinkError, render};
use crate::origin::Origin;

/// Clients may cache a metalink this long; short, because it is what tells
/// them a fix exists.
const METALINK_MAX_AGE_SECS: u32 = 30;

#[derive(Clone)]
struct Web {
    origin: Arc<Origin>,
    cache: Arc<DescriptionCache>,
}

/// Serves HTTP on every address until the process ends.
pub async fn serve(origin: Arc<Origin>, addrs: Vec<SocketAddr>) -> anyhow::Result<()> {
    let state = Web {
        origin,
        cache: Arc::new(DescriptionCache::default()),
    };
    let app = Router::new()
        .route("/metalink", get(metalink))
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .with_state(state)
        .layer(axum::middleware::from_fn(
            hotpush_shared::daemon::access_log,
        ));
    Ok(hotpush_shared::daemon::serve_http(app, addrs, "metalink and status").await?)
}

/// `GET /metalink?repo=<repo>&arch=<arch>`, MirrorManager's form. The repo
/// looked up is `<repo>/<arch>` (or `<repo>` when no arch is given); other
/// parameters, such as dnf's `countme`, are ignored.
async fn metalink(
    State(web): State<Web>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Response {
    let xml = HeaderValue::from_static("application/metalink+xml");
    let Some(repo) = q.get("repo") else {
        return (
            StatusCode::BAD_REQUEST,
            [(header::CONTENT_TYPE, xml)],
            error_document("# no repo= parameter"),
        )
            .into_response();
    };
    let name = match q.get("arch") {
        Some(arch) if !arch.is_empty() => format!("{repo}/{arch}"),
        _ => repo.clone(),
    };
    let rendered = {
        let web = web.clone();
        let name = name.clone();
        tokio::task::spawn_blocking(move || render(&web.origin, &web.cache, &name)).await
    };
    match rendered {
        Ok(Ok(r)) => {
            if headers
                .get(header::IF_NONE_MATCH)
                .is_some_and(|v| v.as_bytes() == r.etag.as_bytes())
            {
                return (StatusCode::NOT_MODIFIED, [(header::ETAG, r.etag)]).into_response();
            }
            (
                StatusCode::OK,
                [
                    (header::CONTENT_TYPE, "application/metalink+xml".to_owned()),
                    (
                        header::CACHE_CONTROL,
                        format!("max-age={METALINK_MAX_AGE_SECS}"),
                    ),
                    (header::ETAG, r.etag),
                ],
                r.body,
            )
                .into_response()
        }
        Ok(Err(e)) => {
            let code = match e {
                MetalinkError::UnknownRepo(_) => StatusCode::NOT_FOUND,
                MetalinkError::NoMirrors { .. } => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            tracing::warn!(repo = %name, error = %e, "metalink not served");
            (
                code,
                [(header::CONTENT_TYPE, xml)],
                error_document(&format!("# {e}")),
            )
                .into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

fn status_json(origin: &Origin) -> anyhow::Result<serde_json::Value> {
    let s = crate::status::collect(origin)?;
    Ok(serde_json::json!({
        "origin_id": s.origin_id,
        "repos": s.repos.iter().map(|r| serde_json::json!({
            "repo": r.repo,
            "latest_version": r.latest_version,
            "metalink_version": r.metalink_version,
            "manifest_digest": hex::encode(&r.manifest_digest),
        })).collect::<Vec<_>>(),
        "agents": s.agents.iter().map(|a| serde_json::json!({
            "name": a.name,
            "endpoint": a.endpoint,
            "last_error": a.last_error,
            "acked": a.acked.iter().map(|k| serde_json::json!({
                "repo": k.repo, "version": k.version, "acked_unix": k.installed_unix,
            })).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    }))
}

async fn status(State(web): State<Web>) -> Response {
    match tokio::task::spawn_blocking(move || status_json(&web.origin)).await {
        Ok(Ok(v)) => axum::Json(v).into_response(),
        Ok(Err(e)) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn metrics(State(web): State<Web>) -> Response {
    use std::fmt::Write;
    let states = web
        .origin
        .push_state
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP hotpush_push_bytes_total Blob bytes sent to an agent.\n# TYPE hotpush_push_bytes_total counter"
    );
    for ((agent, repo), s) in &states {
        let _ = writeln!(
            out,
            "hotpush_push_bytes_total{{agent=\"{agent}\",repo=\"{repo}\"}} {}",
            s.bytes_sent_total
        );
    }
    let _ = writeln!(
        out,
        "# HELP hotpush_pushes_total Pushes by outcome.\n# TYPE hotpush_pushes_total counter"
    );
    for ((agent, repo), s) in &states {
        let _ = writeln!(
            out,
            "hotpush_pushes_total{{agent=\"{agent}\",repo=\"{repo}\",outcome=\"acked\"}} {}",
            s.pushes_ok
        );
        let _ = writeln!(
            out,
            "hotpush_pushes_total{{agent=\"{agent}\",repo=\"{repo}\",outcome=\"failed\"}} {}",
            s.pushes_failed
        );
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}
