//! The admin API (JSON under /api/v1), its OpenAPI document, /metrics and the dashboard.

mod api;
mod auth;
mod dashboard;
mod metrics;
mod openapi;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::Router;

use crate::state::State;

/// The admin routes over `state`.
pub fn router(state: Arc<State>) -> Router {
    Router::new()
        .route("/", get(dashboard::page))
        .route("/metrics", get(metrics::scrape))
        .route("/api/v1/openapi.json", get(openapi::document))
        .route("/api/v1/listeners", get(api::listeners))
        .route("/api/v1/target-groups", get(api::target_groups))
        .route("/api/v1/target-groups/:name/targets", get(api::targets).post(api::register))
        .route(
            "/api/v1/target-groups/:name/targets/:address",
            axum::routing::delete(api::deregister).patch(api::set_weight),
        )
        .route("/api/v1/scaling-groups", get(api::scaling_groups))
        .route("/api/v1/scaling-groups/:name", axum::routing::put(api::set_desired))
        .route("/api/v1/reload", post(api::reload))
        .fallback(|| async { (StatusCode::NOT_FOUND, axum::Json(serde_json::json!({"error": "no such route"}))) })
        .layer(axum::middleware::from_fn_with_state(Arc::clone(&state), auth::require_token))
        .with_state(state)
}

/// Starts the admin server when the config has `[admin]`; prints where it listens.
pub async fn start(state: Arc<State>) -> Result<Option<SocketAddr>, String> {
    let Some(admin) = state.snapshot().config.admin.clone() else {
        return Ok(None);
    };
    let addr: SocketAddr = admin.bind.parse().map_err(|_| format!("admin: bad bind `{}`", admin.bind))?;
    let socket = tokio::net::TcpListener::bind(addr).await.map_err(|e| format!("admin: cannot bind {addr}: {e}"))?;
    let local = socket.local_addr().map_err(|e| e.to_string())?;
    println!("ballast: admin on http://{local}");
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move {
        if let Err(e) = axum::serve(socket, app).await {
            tracing::error!(error = %e, "the admin server stopped");
        }
    });
    Ok(Some(local))
}
