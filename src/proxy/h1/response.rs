//! A target's HTTP/1.x response head: how its body is framed, whether the connection can be
//! used again, and the head the client gets.

use super::request::{digits, named_by_connection, tokens, MAX_FIELDS};

/// Fields that describe one connection, never passed on. `Transfer-Encoding` stays: the body
/// is passed on as it came, chunks and all.
const DROPPED: [&str; 6] = ["connection", "keep-alive", "proxy-connection", "te", "trailer", "upgrade"];

/// Where a response body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (a HEAD request's answer, 1xx, 204, 304).
    Empty,
    Length(u64),
    Chunked,
    /// Until the target closes: the client's connection ends with it too.
    UntilClose,
}

/// What the engine keeps of a response head once it is rewritten for the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseFacts {
    pub head_len: usize,
    pub status: u16,
    pub framing: Framing,
    /// The target keeps the connection open after this response.
    pub reusable: bool,
    /// An interim (1xx) response: the final one follows.
    pub interim: bool,
}

/// A response head the engine cannot pass on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BrokenResponse;

/// Reads the response head at the start of `buf` and appends the client's head to `out`:
/// `Ok(None)` when the head is not complete yet. `close` adds `Connection: close`.
pub fn parse_and_rewrite(
    buf: &[u8],
    head_method: bool,
    close: bool,
    out: &mut Vec<u8>,
) -> Result<Option<ResponseFacts>, BrokenResponse> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
    let mut response = httparse::Response::new(&mut fields);
    let head_len = match response.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(BrokenResponse),
    };
    let (Some(version), Some(status)) = (response.version, response.code) else { return Err(BrokenResponse) };
    // 101 answers an upgrade, and upgrades never come here.
    if status == 101 || !(100..=999).contains(&status) {
        return Err(BrokenResponse);
    }
    let fields: &[httparse::Header<'_>] = response.headers;
    let interim = status < 200;
    let (framing, reusable, chunked) = framing_of(version, status, fields, head_method)?;
    let reason = response.reason.unwrap_or("");
    out.extend_from_slice(b"HTTP/1.1 ");
    super::push_decimal(out, u64::from(status));
    out.push(b' ');
    out.extend_from_slice(reason.as_bytes());
    out.extend_from_slice(b"\r\n");
    let has_connection = fields.iter().any(|f| f.name.eq_ignore_ascii_case("connection"));
    for field in fields {
        let name = field.name;
        if DROPPED.iter().any(|d| name.eq_ignore_ascii_case(d))
            || (has_connection && named_by_connection(fields, name))
            // With a Transfer-Encoding, a Content-Length means nothing and is not passed on.
            || (chunked.is_some() && name.eq_ignore_ascii_case("content-length"))
        {
            continue;
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(field.value);
        out.extend_from_slice(b"\r\n");
    }
    if !interim && (close || framing == Framing::UntilClose) {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    Ok(Some(ResponseFacts { head_len, status, framing, reusable, interim }))
}

/// How the body of a response (HTTP/1.`version`, `status`, `fields`) is framed, whether the
/// connection can carry another request after it, and what a `Transfer-Encoding` said
/// (`Some(true)`: chunked last).
pub fn framing_of(
    version: u8,
    status: u16,
    fields: &[httparse::Header<'_>],
    head_method: bool,
) -> Result<(Framing, bool, Option<bool>), BrokenResponse> {
    let mut length: Option<u64> = None;
    let mut chunked = None;
    let mut target_close = version == 0;
    for field in fields {
        if field.name.eq_ignore_ascii_case("content-length") {
            let value = digits(field.value);
            match (value, length) {
                (None, _) => return Err(BrokenResponse),
                (Some(n), Some(m)) if n != m => return Err(BrokenResponse),
                (Some(n), _) => length = Some(n),
            }
        } else if field.name.eq_ignore_ascii_case("transfer-encoding") {
            // Only a final `chunked` frames the body; any other coding runs to the close.
            let last = tokens(field.value).last().unwrap_or_default();
            chunked = Some(last.eq_ignore_ascii_case(b"chunked"));
        } else if field.name.eq_ignore_ascii_case("connection") {
            for token in tokens(field.value) {
                if token.eq_ignore_ascii_case(b"close") {
                    target_close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") && version == 0 {
                    target_close = false;
                }
            }
        }
    }
    let framing = if head_method || status < 200 || status == 204 || status == 304 {
        Framing::Empty
    } else {
        match (chunked, length) {
            (Some(true), _) => Framing::Chunked,
            (Some(false), _) | (None, None) => Framing::UntilClose,
            (None, Some(n)) => Framing::Length(n),
        }
    };
    let reusable = !target_close && framing != Framing::UntilClose;
    Ok((framing, reusable, chunked))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rewrite(raw: &[u8], head_method: bool, close: bool) -> (ResponseFacts, String) {
        let mut out = Vec::new();
        let facts = parse_and_rewrite(raw, head_method, close, &mut out).unwrap().unwrap();
        (facts, String::from_utf8(out).unwrap())
    }

    #[test]
    fn a_length_framed_answer_passes_with_its_length() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nKeep-Alive: timeout=5\r\nX-A: 1\r\n\r\nok\n";
        let (facts, head) = rewrite(raw, false, false);
        assert_eq!(facts.framing, Framing::Length(3));
        assert!(facts.reusable);
        assert_eq!(facts.head_len, raw.len() - 3);
        assert_eq!(head, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nX-A: 1\r\n\r\n");
    }

    #[test]
    fn framing_follows_rfc_9112() {
        let cases: [(&[u8], bool, Framing, bool); 7] = [
            (
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n",
                false,
                Framing::Chunked,
                true,
            ),
            (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", false, Framing::UntilClose, false),
            (b"HTTP/1.1 200 OK\r\n\r\n", false, Framing::UntilClose, false),
            (b"HTTP/1.1 204 No Content\r\n\r\n", false, Framing::Empty, true),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", true, Framing::Empty, true),
            (b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nConnection: close\r\n\r\n", false, Framing::Length(1), false),
            (b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n", false, Framing::Length(1), false),
        ];
        for (raw, head_method, framing, reusable) in cases {
            let (facts, _) = rewrite(raw, head_method, false);
            assert_eq!((facts.framing, facts.reusable), (framing, reusable), "{}", String::from_utf8_lossy(raw));
        }
    }

    #[test]
    fn a_close_delimited_body_closes_the_client_too() {
        let (_, head) = rewrite(b"HTTP/1.1 200 OK\r\n\r\n", false, false);
        assert!(head.ends_with("connection: close\r\n\r\n"), "{head}");
        let (_, head) = rewrite(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", false, true);
        assert!(head.ends_with("connection: close\r\n\r\n"), "{head}");
    }

    #[test]
    fn a_connection_field_cannot_drop_the_framing() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: content-length\r\n\r\nhello";
        let (facts, head) = rewrite(raw, false, false);
        assert_eq!(facts.framing, Framing::Length(5));
        assert!(head.contains("Content-Length: 5\r\n"), "{head}");
    }

    #[test]
    fn broken_heads_are_refused() {
        for raw in [
            &b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n",
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
            b"NONSENSE\r\n\r\n",
        ] {
            assert_eq!(parse_and_rewrite(raw, false, false, &mut Vec::new()), Err(BrokenResponse));
        }
    }
}
