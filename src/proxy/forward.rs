//! Sends one request to one target and streams the answer back, or tunnels a WebSocket.

use std::net::SocketAddr;

use http::uri::{Authority, PathAndQuery, Scheme};
use http::{header, HeaderValue, Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use super::answer::answer;
use super::body::ProxyBody;
use super::h1::client::SendFailure;
use super::h2_targets::SendError;
use super::headers;
use super::upstream::Upstream;
use crate::config::{ProtocolVersion, TargetProtocol};
use crate::target_group::{Reason, Target, TargetGroup, TargetState};

/// Marks a request whose connections (client and target) must end with it.
#[derive(Debug, Clone, Copy)]
pub struct CloseAfter;

/// Who sent the request, and to which listener.
#[derive(Debug, Clone, Copy)]
pub struct Client {
    pub peer: SocketAddr,
    /// `http` or `https`.
    pub protocol: &'static str,
    pub listener_port: u16,
}

/// Forwards `req` to `target` of `group` and returns what the client should get.
pub async fn forward(
    upstream: &Upstream,
    group: &TargetGroup,
    target: &Target,
    client: &Client,
    mut req: Box<Request<Incoming>>,
) -> Response<ProxyBody> {
    let websocket = req.version() == Version::HTTP_11 && headers::is_websocket_upgrade(req.headers());
    let client_upgrade = websocket.then(|| hyper::upgrade::on(&mut *req));

    let (mut parts, body) = (*req).into_parts();
    // An HTTP/2 client names the host in the URI; HTTP/1.1 targets need it in Host.
    if !parts.headers.contains_key(header::HOST) {
        if let Some(value) = parts.uri.authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok()) {
            parts.headers.insert(header::HOST, value);
        }
    }
    let close = parts.extensions.get::<CloseAfter>().is_some();
    headers::remove_hop_by_hop(&mut parts.headers, websocket);
    if close {
        // Not to be reused: the request was ambiguous, so this connection ends with it.
        parts.headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    headers::add_forwarded(&mut parts.headers, client.peer.ip(), client.protocol, client.listener_port);
    let scheme = match group.settings.protocol {
        TargetProtocol::Https => Scheme::HTTPS,
        _ => Scheme::HTTP,
    };
    let Some(target_authority) = target.parsed_authority.as_ref() else {
        return answer(StatusCode::BAD_GATEWAY, "the target address is not a valid authority");
    };
    let http2 = group.settings.protocol_version == ProtocolVersion::Http2;
    let timeout = group.settings.target_timeout;
    if parts.version == Version::HTTP_2 && !http2 {
        headers::join_cookies(&mut parts.headers);
    }
    // An HTTP/2 client's body-less request to a plain HTTP/1.1 target: over the engine's pool,
    // in this task. (Its head is written from the client's own URI and Host.)
    let engine = parts.version == Version::HTTP_2
        && !http2
        && !websocket
        && parts.method != http::Method::CONNECT
        && group.settings.protocol == TargetProtocol::Http
        && hyper::body::Body::is_end_stream(&body);
    if engine {
        return forward_in_engine(target, &parts, timeout).await;
    }
    // HTTP/1.1: the URI names the target, which hyper's pool connects to, and Host keeps the
    // client's host. HTTP/2: the URI names the client's host, sent as `:authority` with no Host
    // field beside it (RFC 9113, section 8.3.1); the connection goes to the target regardless.
    let authority = match http2 {
        true => {
            let host = parts.headers.remove(header::HOST);
            // The name the request was routed by: the URI's (HTTP/2 clients, absolute form),
            // else Host's.
            parts
                .uri
                .authority()
                .cloned()
                .or_else(|| host.and_then(|h| Authority::try_from(h.as_bytes()).ok()))
                .filter(|a| !a.as_str().contains('@'))
                .unwrap_or_else(|| target_authority.clone())
        }
        false => target_authority.clone(),
    };
    let Ok(uri) = target_uri(scheme.clone(), authority, parts.uri.path_and_query()) else {
        return answer(StatusCode::BAD_GATEWAY, "the target address is not a valid authority");
    };
    parts.uri = uri;
    parts.version = if http2 { Version::HTTP_2 } else { Version::HTTP_11 };
    let outstanding = target.stats.start_request();
    let request = Request::from_parts(parts, body);
    let sent = async {
        if http2 {
            upstream.http2().send(scheme, &target.authority, request).await.map_err(|e| match e {
                SendError::Connect(_) => Failure::Connect,
                SendError::Broken(_) => Failure::Broken,
                SendError::Refused => Failure::Refused,
                SendError::Reset => Failure::Reset,
            })
        } else {
            upstream.http1().request(request).await.map_err(|e| match e.is_connect() {
                true => Failure::Connect,
                false => Failure::Broken,
            })
        }
    };
    // Boxed: hyper's client future is most of this function's, and is moved as it starts.
    let mut response = match tokio::time::timeout(timeout.get(), Box::pin(sent)).await {
        Err(_) => return timed_out(target, timeout),
        Ok(Err(failure)) => return failed(target, failure),
        Ok(Ok(response)) => response,
    };

    if let (Some(client_upgrade), StatusCode::SWITCHING_PROTOCOLS) = (client_upgrade, response.status()) {
        let target_upgrade = hyper::upgrade::on(&mut response);
        // The tunnel counts on this worker as a connection of its own.
        let held = crate::listener::spread::hold_here();
        tokio::spawn(async move {
            if let (Ok(client_io), Ok(target_io)) = tokio::join!(client_upgrade, target_upgrade) {
                let (mut client_io, mut target_io) = (TokioIo::new(client_io), TokioIo::new(target_io));
                // Either side closing ends the tunnel, and so does the end of the target's
                // draining; errors here are the peers' business.
                let closing = outstanding.stats().closing().clone();
                tokio::select! {
                    _ = tokio::io::copy_bidirectional(&mut client_io, &mut target_io) => {}
                    _ = closing.cancelled() => {}
                }
            }
            drop((outstanding, held));
        });
        let (parts, _) = response.into_parts();
        return Response::from_parts(parts, ProxyBody::empty());
    }

    headers::remove_hop_by_hop(response.headers_mut(), false);
    response.map(|body| ProxyBody::Upstream { body, outstanding: Some(outstanding) })
}

/// Sends a body-less request to a plain HTTP/1.1 target with the engine's client
/// (`h1::client`), and returns what the client should get.
async fn forward_in_engine(
    target: &Target,
    parts: &http::request::Parts,
    timeout: crate::config::Duration,
) -> Response<ProxyBody> {
    let sent = super::h1::client::send(target, parts, target.stats.start_request());
    let mut response = match tokio::time::timeout(timeout.get(), Box::pin(sent)).await {
        Err(_) => return timed_out(target, timeout),
        Ok(Err(failure)) => return failed(target, failure.into()),
        Ok(Ok(response)) => response,
    };
    headers::remove_hop_by_hop(response.headers_mut(), false);
    response.map(ProxyBody::Engine)
}

/// Why a target gave no response.
enum Failure {
    /// No connection could be made.
    Connect,
    /// The connection broke or the response was not one.
    Broken,
    /// A kept-alive connection the target closed as the request went out.
    Closed,
    /// The target turned the request away unprocessed (HTTP/2 `REFUSED_STREAM`).
    Refused,
    /// The target reset the request's HTTP/2 stream.
    Reset,
}

impl From<SendFailure> for Failure {
    fn from(failure: SendFailure) -> Self {
        match failure {
            SendFailure::Connect => Failure::Connect,
            SendFailure::Broken => Failure::Broken,
            SendFailure::Closed => Failure::Closed,
        }
    }
}

/// What the client gets when `target` gave no answer within `target_timeout`.
fn timed_out(target: &Target, timeout: crate::config::Duration) -> Response<ProxyBody> {
    let reason = format!("target {} did not answer within target_timeout ({timeout})", target.address);
    answer(StatusCode::GATEWAY_TIMEOUT, &reason)
}

/// What the client gets when `target` gave no response; marks it down when the failure is
/// the target's.
fn failed(target: &Target, failure: Failure) -> Response<ProxyBody> {
    let reason = match failure {
        Failure::Connect => {
            // A passive check: the target is down now, not at its next active check.
            target.stats.set(TargetState::Unhealthy, Reason::ConnectionFailed);
            format!("cannot connect to target {}", target.address)
        }
        Failure::Broken => {
            target.stats.set(TargetState::Unhealthy, Reason::ConnectionFailed);
            format!("target {} closed the connection or sent a broken response", target.address)
        }
        // The target only closed a kept-alive connection: no mark.
        Failure::Closed => format!("target {} closed a kept-alive connection as the request went out", target.address),
        // The target is up, and said so: no mark.
        Failure::Refused => format!("target {} refused the request unprocessed", target.address),
        // One stream, not the target: no mark (a client's odd request could cause it).
        Failure::Reset => format!("target {} reset the request's stream", target.address),
    };
    answer(StatusCode::BAD_GATEWAY, &reason)
}

fn target_uri(scheme: Scheme, authority: Authority, path: Option<&PathAndQuery>) -> Result<Uri, http::Error> {
    let path = path.cloned().unwrap_or_else(|| PathAndQuery::from_static("/"));
    Uri::builder().scheme(scheme).authority(authority).path_and_query(path).build()
}
