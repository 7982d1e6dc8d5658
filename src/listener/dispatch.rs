//! One request through the listener's decision: route, then answer, redirect or forward.

use std::time::Instant;

use http::{header, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::balance::flow_hash;
use crate::config::Algorithm;
use crate::guard::http1_stream::Decision;
use crate::guard::rate_limit::retry_after_seconds;
use crate::metrics::{class_index, CodeLabel};
use crate::proxy::{self, answer, own, Client, ElbAnswer, ProxyBody};
use crate::routing::{ActionPlan, Fields, RequestHead};
use crate::snapshot::{ListenerPlan, Snapshot};
use crate::state::State;
use crate::target_group::{stickiness, PickRequest, TargetGroup};

/// Serves one request that arrived on listener `name`, and counts it. `decision` is what the
/// guard decided about this request's head (HTTP/1 only).
pub async fn handle(
    state: &State,
    name: &str,
    client: &Client,
    mut req: Box<Request<Incoming>>,
    decision: Option<Decision>,
) -> Response<ProxyBody> {
    let snapshot = state.snapshot();
    let Some(listener) = snapshot.listener(name) else {
        return answer(StatusCode::SERVICE_UNAVAILABLE, "this listener was removed");
    };
    let close = match decision {
        Some(Decision::Reject { status, reason }) => {
            state.reject(&listener.name, reason, client.peer.ip());
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
            let mut response = answer(status, &format!("the request was refused ({reason})"));
            response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
            listener.metrics.requests_answered[class_index(status.as_u16())].inc();
            state.metrics.elb_responses.get_or_create(&CodeLabel { code: status.as_u16() }).inc();
            return response;
        }
        Some(Decision::Forward { close }) => close,
        None => false,
    };
    if let Some(refusal) = check_limits(listener, &req) {
        state.reject(&listener.name, refusal.1, client.peer.ip());
        let mut response = answer(refusal.0, &format!("the request was refused ({})", refusal.1));
        if req.version() != http::Version::HTTP_2 {
            response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        state.metrics.elb_responses.get_or_create(&CodeLabel { code: refusal.0.as_u16() }).inc();
        return response;
    }
    if close {
        // The guard let an ambiguous request through: neither connection is used again.
        req.extensions_mut().insert(proxy::CloseAfter);
    }
    // The guard passes everything after an upgrade request on untouched; if the upgrade does
    // not happen, the connection must end with this answer.
    let upgrade_asked = req.version() == http::Version::HTTP_11 && req.headers().contains_key(header::UPGRADE);
    let (mut response, group) = decide(state, &snapshot, listener, client, req).await;
    if close || (upgrade_asked && response.status() != StatusCode::SWITCHING_PROTOCOLS) {
        response.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    let status = response.status().as_u16();
    let own_answer = response.extensions().get::<ElbAnswer>().is_some();
    let counters = match group {
        Some(i) => listener.metrics.requests_by_group.get(i).and_then(Option::as_ref),
        None => Some(&listener.metrics.requests_answered),
    };
    if let Some(counters) = counters {
        counters[class_index(status)].inc();
    }
    if own_answer {
        state.metrics.elb_responses.get_or_create(&CodeLabel { code: status }).inc();
    }
    response
}

/// The limits every HTTP version gets here (HTTP/1 heads are also held to them by the guard):
/// the request target's length and a declared body length.
fn check_limits(listener: &ListenerPlan, req: &Request<Incoming>) -> Option<(StatusCode, &'static str)> {
    let limits = &listener.limits;
    let target_len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if target_len > limits.max_uri_bytes {
        return Some((StatusCode::URI_TOO_LONG, "uri_too_long"));
    }
    let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if limits.max_body_bytes > 0 && declared.is_some_and(|n| n > limits.max_body_bytes) {
        return Some((StatusCode::PAYLOAD_TOO_LARGE, "body_too_large"));
    }
    None
}

/// Routes the request and answers it; returns the target group index when it was forwarded.
async fn decide(
    state: &State,
    snapshot: &Snapshot,
    listener: &ListenerPlan,
    client: &Client,
    req: Box<Request<Incoming>>,
) -> (Response<ProxyBody>, Option<usize>) {
    // In a block: the routing view of the request is not kept while it is forwarded.
    let plan = {
        let host_with_port = req
            .uri()
            .authority()
            .map(|a| a.as_str())
            .or_else(|| req.headers().get(header::HOST).and_then(|h| h.to_str().ok()))
            .unwrap_or("");
        let head = RequestHead {
            method: req.method().as_str(),
            host: strip_port(host_with_port),
            path: req.uri().path(),
            query: req.uri().query().unwrap_or(""),
            headers: Fields::Map(req.headers()),
            source_ip: client.peer.ip(),
            protocol: client.protocol,
            port: client.listener_port,
        };
        let (rule, action) = listener.router.route_rule(&head);
        if let Some(wait) = rate_limited(state, listener, rule, *client) {
            let mut response = answer(StatusCode::TOO_MANY_REQUESTS, RATE_LIMITED);
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after_seconds(wait)));
            return (response, None);
        }
        match action {
            ActionPlan::FixedResponse { status, body, content_type } => {
                let mut response =
                    own(StatusCode::from_u16(*status).unwrap_or(StatusCode::OK), ProxyBody::full(body.clone()));
                if let Ok(value) = HeaderValue::from_str(content_type) {
                    response.headers_mut().insert(header::CONTENT_TYPE, value);
                }
                return (response, None);
            }
            ActionPlan::Redirect(template) => {
                let status = StatusCode::from_u16(template.status).unwrap_or(StatusCode::MOVED_PERMANENTLY);
                let response = match HeaderValue::try_from(template.location(&head)) {
                    Ok(location) => {
                        let mut response = own(status, ProxyBody::empty());
                        response.headers_mut().insert(header::LOCATION, location);
                        response
                    }
                    Err(_) => answer(StatusCode::BAD_REQUEST, "the redirect target is not a valid URL"),
                };
                return (response, None);
            }
            ActionPlan::Forward(plan) => plan,
        }
    };
    let Some((index, group)) = plan.pick_group().and_then(|i| snapshot.target_groups.get(i).map(|g| (i, g))) else {
        return (answer(StatusCode::SERVICE_UNAVAILABLE, "no target group to forward to"), None);
    };
    let stickiness = group.settings.stickiness.as_ref();
    let sticky = stickiness.and_then(|s| stickiness::stuck_address(&state.sealer, &group.name, s, req.headers()));
    let pick = PickRequest {
        tried: &[],
        zone: listener.zone.as_deref(),
        sticky: sticky.as_deref(),
        flow: flow_of(group, *client),
    };
    let Some(target) = group.pick(pick) else {
        let reason = format!("target group `{}` has no target to take the request", group.name);
        return (answer(StatusCode::SERVICE_UNAVAILABLE, &reason), Some(index));
    };
    let started = Instant::now();
    let mut response = proxy::forward(&state.upstream, group, target, client, req).await;
    if let Some(metrics) = snapshot.group_metrics.get(index) {
        match response.extensions().get::<ElbAnswer>() {
            None => metrics.response_seconds.observe(started.elapsed().as_secs_f64()),
            Some(_) if response.status() == StatusCode::BAD_GATEWAY => {
                metrics.connection_errors.inc();
            }
            Some(_) => {}
        }
    }
    if let Some(s) = stickiness {
        stickiness::stick(&state.sealer, &group.name, s, &target.address, response.headers_mut());
    }
    (response, Some(index))
}

/// Why a rate-limited request is refused.
pub(super) const RATE_LIMITED: &str = "too many requests from this address";

/// How long the client must wait when the listener's or the matched rule's rate limit
/// refuses this request (the refusal is counted); `None` when it may pass.
pub(super) fn rate_limited(
    state: &State,
    listener: &ListenerPlan,
    rule: Option<u32>,
    client: Client,
) -> Option<std::time::Duration> {
    let rule_limit = rule.and_then(|p| listener.rule_rate_limits.iter().find(|(q, _)| *q == p)).map(|(_, l)| l);
    for limit in listener.rate_limit.iter().chain(rule_limit) {
        if let Err(wait) = limit.check(client.peer.ip()) {
            state.reject(&listener.name, "rate_limited", client.peer.ip());
            return Some(wait);
        }
    }
    None
}

/// The hash of the client's flow, for `flow_hash` groups; other groups skip the work.
pub(super) fn flow_of(group: &TargetGroup, client: Client) -> u64 {
    if group.settings.algorithm != Algorithm::FlowHash {
        return 0;
    }
    let listener_addr = std::net::SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), client.listener_port);
    flow_hash(client.peer, listener_addr, 6)
}

/// `example.com:8080` → `example.com`; `[::1]:80` → `[::1]`.
pub(super) fn strip_port(host: &str) -> &str {
    match host.rfind(':') {
        Some(i) if !host[i..].contains(']') && host[i + 1..].bytes().all(|b| b.is_ascii_digit()) => &host[..i],
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
