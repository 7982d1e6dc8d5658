//! `GET /metrics`: Prometheus text, read from the running snapshot.

use std::sync::Arc;

use axum::extract::State as Axum;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::state::State;
use crate::target_group::TargetState;

/// Renders the current metrics.
pub async fn scrape(Axum(state): Axum<Arc<State>>) -> Response {
    let mut registry = Registry::default();
    let healthy = Family::<Vec<(String, String)>, Gauge>::default();
    let unhealthy = Family::<Vec<(String, String)>, Gauge>::default();
    registry.register(
        "ballast_healthy_targets",
        "Targets taking traffic",
        healthy.clone(),
    );
    registry.register(
        "ballast_unhealthy_targets",
        "Targets failing their health checks",
        unhealthy.clone(),
    );
    for group in &state.snapshot().target_groups {
        let labels = vec![("target_group".to_string(), group.name.clone())];
        let count = |s: TargetState| {
            group
                .targets
                .iter()
                .filter(|t| t.stats.state() == s)
                .count() as i64
        };
        healthy
            .get_or_create(&labels)
            .set(count(TargetState::Healthy));
        unhealthy
            .get_or_create(&labels)
            .set(count(TargetState::Unhealthy));
    }
    let mut text = String::new();
    if encode(&mut text, &registry).is_err() {
        return (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "cannot encode metrics",
        )
            .into_response();
    }
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
        .into_response()
}
