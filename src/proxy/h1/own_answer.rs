//! The balancer's own short answers, written straight onto an HTTP/1.1 connection.

use http::StatusCode;

/// Appends to `out` a complete response of `status` whose body says why, in the same words
/// as hyper's path (`proxy::answer`). `extra` is one more header line, without its CRLF.
pub fn write(out: &mut Vec<u8>, status: u16, why: &str, extra: Option<&str>, close: bool, head_only: bool) {
    let code = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    let reason = code.canonical_reason().unwrap_or("");
    let body = format!("{} {reason}: {why}\n", code.as_u16());
    out.extend_from_slice(format!("HTTP/1.1 {} {reason}\r\n", code.as_u16()).as_bytes());
    out.extend_from_slice(b"content-type: text/plain; charset=utf-8\r\n");
    out.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
    // As hyper's path dates its answers (RFC 9110, section 6.6.1).
    out.extend_from_slice(format!("date: {}\r\n", httpdate::fmt_http_date(std::time::SystemTime::now())).as_bytes());
    if let Some(line) = extra {
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    if !head_only {
        out.extend_from_slice(body.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_answer_is_a_whole_response() {
        let mut out = Vec::new();
        super::write(&mut out, 503, "no target", Some("retry-after: 2"), true, false);
        let text = String::from_utf8(out).unwrap();
        assert!(text.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{text}");
        assert!(text.contains("content-length: 35\r\n"), "{text}");
        let date = text.lines().find_map(|l| l.strip_prefix("date: ")).expect("a date field");
        let when = httpdate::parse_http_date(date).expect("an HTTP date");
        let age = std::time::SystemTime::now().duration_since(when).unwrap_or_default();
        assert!(age.as_secs() < 5, "{date}");
        assert!(text.contains("retry-after: 2\r\nconnection: close\r\n\r\n"), "{text}");
        assert!(text.ends_with("\r\n\r\n503 Service Unavailable: no target\n"), "{text}");
    }
}
