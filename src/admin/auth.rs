//! Who may call the admin API: writes need the bearer token of `[admin].token_file`; reads
//! are open to loopback clients and need the token from anywhere else.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State as Axum};
use axum::http::{header, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::state::State;

/// Refuses a request with 401 unless the rules above let it through.
pub async fn require_token(
    Axum(state): Axum<Arc<State>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    let write = !matches!(*request.method(), Method::GET | Method::HEAD);
    if !write && peer.ip().is_loopback() {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let expected = expected_token(&state);
    match (presented, expected) {
        (Some(p), Some(e)) if constant_time_eq(p.as_bytes(), e.as_bytes()) => next.run(request).await,
        (_, None) => refuse("writes need a token: set [admin].token_file"),
        _ => refuse("missing or wrong bearer token"),
    }
}

/// The token of the running config, read anew so a rotated file applies at once.
fn expected_token(state: &State) -> Option<String> {
    let snapshot = state.snapshot();
    let file = snapshot.config.admin.as_ref()?.token_file.as_ref()?;
    let token = std::fs::read_to_string(snapshot.config.resolve(file)).ok()?;
    let token = token.trim().to_string();
    (!token.is_empty()).then_some(token)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn refuse(why: &str) -> Response {
    let mut response = (StatusCode::UNAUTHORIZED, Json(serde_json::json!({ "error": why }))).into_response();
    response.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
    response
}
