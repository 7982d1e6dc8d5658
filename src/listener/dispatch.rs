//! One request through the listener's decision: route, then answer, redirect or forward.

use http::{header, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::proxy::{self, answer, Client, ProxyBody};
use crate::routing::{ActionPlan, RequestHead};
use crate::state::State;
use crate::target_group::{stickiness, PickRequest};

/// Serves one request that arrived on listener `name`.
pub async fn handle(
    state: &State,
    name: &str,
    client: Client,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let snapshot = state.snapshot();
    let Some(listener) = snapshot.listener(name) else {
        return answer(StatusCode::SERVICE_UNAVAILABLE, "this listener was removed");
    };
    let host_with_port = req
        .uri()
        .authority()
        .map(|a| a.as_str())
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
        })
        .unwrap_or("");
    let head = RequestHead {
        method: req.method().as_str(),
        host: strip_port(host_with_port),
        path: req.uri().path(),
        query: req.uri().query().unwrap_or(""),
        headers: req.headers(),
        source_ip: client.peer.ip(),
        protocol: client.protocol,
        port: client.listener_port,
    };
    match listener.router.route(&head) {
        ActionPlan::FixedResponse {
            status,
            body,
            content_type,
        } => {
            let mut response = Response::new(ProxyBody::full(body.clone()));
            *response.status_mut() = StatusCode::from_u16(*status).unwrap_or(StatusCode::OK);
            if let Ok(value) = HeaderValue::from_str(content_type) {
                response.headers_mut().insert(header::CONTENT_TYPE, value);
            }
            response
        }
        ActionPlan::Redirect(template) => {
            let location = template.location(&head);
            let mut response = Response::new(ProxyBody::empty());
            *response.status_mut() =
                StatusCode::from_u16(template.status).unwrap_or(StatusCode::MOVED_PERMANENTLY);
            match HeaderValue::try_from(location) {
                Ok(value) => {
                    response.headers_mut().insert(header::LOCATION, value);
                    response
                }
                Err(_) => answer(
                    StatusCode::BAD_REQUEST,
                    "the redirect target is not a valid URL",
                ),
            }
        }
        ActionPlan::Forward(plan) => {
            let Some(group) = plan
                .pick_group()
                .and_then(|i| snapshot.target_groups.get(i))
            else {
                return answer(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "no target group to forward to",
                );
            };
            let stickiness = group.settings.stickiness.as_ref();
            let sticky = stickiness.and_then(|s| {
                stickiness::stuck_address(&state.sealer, &group.name, s, req.headers())
            });
            let pick = PickRequest {
                tried: &[],
                zone: listener.zone.as_deref(),
                sticky: sticky.as_deref(),
            };
            let Some(target) = group.pick(pick) else {
                let reason = format!(
                    "target group `{}` has no target to take the request",
                    group.name
                );
                return answer(StatusCode::SERVICE_UNAVAILABLE, &reason);
            };
            let mut response = proxy::forward(&state.upstream, group, target, client, req).await;
            if let Some(s) = stickiness {
                stickiness::stick(
                    &state.sealer,
                    &group.name,
                    s,
                    &target.address,
                    response.headers_mut(),
                );
            }
            response
        }
    }
}

/// `example.com:8080` → `example.com`; `[::1]:80` → `[::1]`.
fn strip_port(host: &str) -> &str {
    match host.rfind(':') {
        Some(i)
            if !host[i..].contains(']') && host[i + 1..].bytes().all(|b| b.is_ascii_digit()) =>
        {
            &host[..i]
        }
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::strip_port;

    #[test]
    fn ports_come_off_host_names() {
        assert_eq!(strip_port("example.com:8080"), "example.com");
        assert_eq!(strip_port("example.com"), "example.com");
        assert_eq!(strip_port("[::1]:80"), "[::1]");
        assert_eq!(strip_port("[::1]"), "[::1]");
    }
}
