//! The JSON handlers of /api/v1.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State as Axum};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use crate::config::{self, ConfigError};
use crate::state::{ReloadError, State};
use crate::target_group::{MembershipError, TargetState};

fn error(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (status, Json(json!({ "error": message.to_string() }))).into_response()
}

fn membership_error(e: MembershipError) -> Response {
    let status = match e {
        MembershipError::NoGroup(_) | MembershipError::NoTarget(_) => StatusCode::NOT_FOUND,
        MembershipError::AlreadyRegistered(_) => StatusCode::CONFLICT,
        MembershipError::Invalid(_) => StatusCode::BAD_REQUEST,
    };
    error(status, e)
}

/// `GET /api/v1/listeners`: listeners with their rules, as configured.
pub async fn listeners(Axum(state): Axum<Arc<State>>) -> Response {
    Json(&state.snapshot().config.listeners).into_response()
}

/// `GET /api/v1/target-groups`: target groups with their settings and health counts.
pub async fn target_groups(Axum(state): Axum<Arc<State>>) -> Response {
    let snapshot = state.snapshot();
    let groups: Vec<serde_json::Value> = snapshot
        .target_groups
        .iter()
        .map(|g| {
            let count = |s: TargetState| g.targets.iter().filter(|t| t.stats.state() == s).count();
            let mut settings = serde_json::to_value(&g.settings).unwrap_or_default();
            if let Some(object) = settings.as_object_mut() {
                object.remove("targets");
                object.insert("healthy_targets".into(), json!(count(TargetState::Healthy)));
                object.insert("unhealthy_targets".into(), json!(count(TargetState::Unhealthy)));
                object.insert("targets".into(), json!(g.targets.len()));
            }
            settings
        })
        .collect();
    Json(groups).into_response()
}

/// `GET /api/v1/target-groups/{name}/targets`: each target with its state and reason.
pub async fn targets(Axum(state): Axum<Arc<State>>, Path(name): Path<String>) -> Response {
    let snapshot = state.snapshot();
    let Some(group) = snapshot.target_groups.iter().find(|g| g.name == name) else {
        return error(StatusCode::NOT_FOUND, format!("no target group is named `{name}`"));
    };
    let list: Vec<serde_json::Value> = group
        .targets
        .iter()
        .map(|t| {
            json!({
                "address": t.address,
                "weight": t.weight,
                "zone": t.zone,
                "state": t.stats.state().as_str(),
                "reason": t.stats.reason().code(),
            })
        })
        .collect();
    Json(list).into_response()
}

/// The body of `POST .../targets`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTarget {
    address: String,
    weight: Option<u32>,
    zone: Option<String>,
}

/// `POST /api/v1/target-groups/{name}/targets`: registers a target (201); it starts `initial`.
pub async fn register(
    Axum(state): Axum<Arc<State>>,
    Path(name): Path<String>,
    body: Result<Json<NewTarget>, JsonRejection>,
) -> Response {
    let Json(body) = match body {
        Ok(body) => body,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    let target = config::Target { address: body.address.clone(), weight: body.weight.unwrap_or(1), zone: body.zone };
    match state.register(&name, target) {
        Ok(()) => (StatusCode::CREATED, Json(json!({ "address": body.address, "state": "initial" }))).into_response(),
        Err(e) => membership_error(e),
    }
}

/// `DELETE /api/v1/target-groups/{name}/targets/{address}`: the target drains (202).
pub async fn deregister(Axum(state): Axum<Arc<State>>, Path((name, address)): Path<(String, String)>) -> Response {
    match state.deregister(&name, &address) {
        Ok(()) => (StatusCode::ACCEPTED, Json(json!({ "address": address, "state": "draining" }))).into_response(),
        Err(e) => membership_error(e),
    }
}

/// The body of `PATCH .../targets/{address}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeightChange {
    weight: u32,
}

/// `PATCH /api/v1/target-groups/{name}/targets/{address}`: changes the target's weight.
pub async fn set_weight(
    Axum(state): Axum<Arc<State>>,
    Path((name, address)): Path<(String, String)>,
    body: Result<Json<WeightChange>, JsonRejection>,
) -> Response {
    let Json(body) = match body {
        Ok(body) => body,
        Err(e) => return error(StatusCode::BAD_REQUEST, e.body_text()),
    };
    match state.set_weight(&name, &address, body.weight) {
        Ok(()) => Json(json!({ "address": address, "weight": body.weight })).into_response(),
        Err(e) => membership_error(e),
    }
}

/// `GET /api/v1/scaling-groups`: no scaling groups exist yet in this release.
pub async fn scaling_groups() -> Response {
    Json(json!([])).into_response()
}

/// `PUT /api/v1/scaling-groups/{name}`: every name is unknown until scaling groups exist.
pub async fn set_desired(Path(name): Path<String>) -> Response {
    error(StatusCode::NOT_FOUND, format!("no scaling group is named `{name}`"))
}

/// `POST /api/v1/reload`: re-reads the config file; 422 with every error when it does not
/// validate, and the running config is untouched.
pub async fn reload(Axum(state): Axum<Arc<State>>) -> Response {
    match state.reload() {
        Ok(()) => Json(json!({ "reloaded": true })).into_response(),
        Err(ReloadError::Invalid(errors)) => {
            let list: Vec<serde_json::Value> = errors.0.iter().map(config_error_json).collect();
            (StatusCode::UNPROCESSABLE_ENTITY, Json(json!({ "errors": list }))).into_response()
        }
        Err(ReloadError::Unusable(why)) => {
            (StatusCode::UNPROCESSABLE_ENTITY, Json(json!({ "errors": [{ "message": why }] }))).into_response()
        }
    }
}

fn config_error_json(e: &ConfigError) -> serde_json::Value {
    json!({ "file": e.file, "line": e.line, "key": e.key, "message": e.message, "text": e.to_string() })
}
