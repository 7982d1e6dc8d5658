//! The balancer's own answers: short, and saying why.

use http::{header, HeaderValue, Response, StatusCode};

pub use super::body::ProxyBody;

/// A response made by ballast itself, with a one-line reason in the body.
pub fn answer(status: StatusCode, reason: &str) -> Response<ProxyBody> {
    let text = format!(
        "{} {}: {}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or(""),
        reason
    );
    let mut response = Response::new(ProxyBody::full(text));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
