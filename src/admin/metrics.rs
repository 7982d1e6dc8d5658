//! `GET /metrics`: Prometheus text.

use std::sync::Arc;

use axum::extract::State as Axum;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use crate::listener::spread;
use crate::metrics::{GroupLabel, WorkerLabel};
use crate::state::State;
use crate::target_group::TargetState;

/// Renders every metric; target counts are read from the snapshot, and connections per
/// worker from the workers, at scrape time.
pub async fn scrape(Axum(state): Axum<Arc<State>>) -> Response {
    let metrics = &state.metrics;
    for group in &state.snapshot().target_groups {
        let label = GroupLabel { target_group: group.name.clone() };
        let count = |s: TargetState| group.targets.iter().filter(|t| t.stats.state() == s).count() as i64;
        metrics.healthy_targets.get_or_create(&label).set(count(TargetState::Healthy));
        metrics.unhealthy_targets.get_or_create(&label).set(count(TargetState::Unhealthy));
    }
    for (worker, open) in spread::open_by_worker().into_iter().enumerate() {
        metrics.worker_connections.get_or_create(&WorkerLabel { worker }).set(open as i64);
    }
    match metrics.encode() {
        Ok(text) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "cannot encode metrics").into_response(),
    }
}
