//! The balancer's own answers: short, and saying why.

use http::{header, HeaderValue, Response, StatusCode};

pub use super::body::ProxyBody;

/// Marks a response the balancer made itself, for `ballast_elb_responses_total`.
#[derive(Debug, Clone, Copy)]
pub struct ElbAnswer;

/// A response made by ballast itself, with a one-line reason in the body.
pub fn answer(status: StatusCode, reason: &str) -> Response<ProxyBody> {
    let text = format!("{} {}: {}\n", status.as_u16(), status.canonical_reason().unwrap_or(""), reason);
    let mut response = own(status, ProxyBody::full(text));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

/// A response the balancer makes itself (a redirect, a fixed response), marked as such.
pub fn own(status: StatusCode, body: ProxyBody) -> Response<ProxyBody> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response.extensions_mut().insert(ElbAnswer);
    response
}
