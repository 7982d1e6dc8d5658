//! A client's HTTP/1.1 request head: what the engine needs to know of it, and the head the
//! target gets (hop-by-hop fields dropped, X-Forwarded-* added).

use std::io::Write;

use crate::proxy::Client;

/// The most header fields a request may have here; more go to hyper.
pub const MAX_FIELDS: usize = 100;

/// The largest request body the engine sends: one that fits the sockets' buffers, so sending
/// it never waits on a target that answers before reading it.
pub const MAX_BODY: u64 = 16 * 1024;

/// Fields that describe one connection, never forwarded (RFC 9110 section 7.6.1), and the
/// X-Forwarded-* fields ballast writes itself.
const DROPPED: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "upgrade",
    "x-forwarded-proto",
    "x-forwarded-port",
];

/// What the engine keeps of a request once its head is rewritten.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts {
    /// Length of the head at the start of the buffer.
    pub head_len: usize,
    /// The body's length (`Content-Length`; 0 without one).
    pub body_len: u64,
    /// A HEAD request: the answer has no body whatever it declares.
    pub head_method: bool,
    /// An idempotent method (RFC 9110, 9.2.2: GET, HEAD, OPTIONS, TRACE, PUT, DELETE): sent
    /// twice, it does what it did once.
    pub idempotent: bool,
    /// The client asked to close the connection after this answer.
    pub close: bool,
}

/// Why a request goes to hyper instead (it handles them all; the engine only the common case).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotHere {
    /// Not HTTP/1.1, an upgrade, `Expect`, a chunked body, no `Host`, an absolute URI,
    /// or a head hyper should judge.
    Unusual,
}

/// The parts of a parsed request head routing needs, borrowed from the buffer.
pub struct Head<'b, 'h> {
    pub method: &'b str,
    pub target: &'b str,
    pub host: &'b str,
    pub fields: &'h [httparse::Header<'b>],
    pub facts: RequestFacts,
}

/// Reads the request head at the start of `buf` into `fields`: `Ok(None)` when it is not
/// complete yet.
pub fn parse<'b, 'h>(
    buf: &'b [u8],
    fields: &'h mut [httparse::Header<'b>; MAX_FIELDS],
) -> Result<Option<Head<'b, 'h>>, NotHere> {
    let mut req = httparse::Request::new(fields);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(NotHere::Unusual),
    };
    let (Some(method), Some(target), Some(1)) = (req.method, req.path, req.version) else {
        return Err(NotHere::Unusual);
    };
    if !target.starts_with('/') {
        return Err(NotHere::Unusual);
    }
    let fields: &'h [httparse::Header<'b>] = req.headers;
    let idempotent = matches!(method, "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE");
    let mut facts = RequestFacts { head_len, body_len: 0, head_method: method == "HEAD", idempotent, close: false };
    let mut host = None;
    for field in fields {
        let name = field.name;
        if name.eq_ignore_ascii_case("host") {
            host = std::str::from_utf8(field.value).ok();
        } else if name.eq_ignore_ascii_case("content-length") {
            // The guard lets exactly one valid length through.
            facts.body_len = digits(field.value).ok_or(NotHere::Unusual)?;
            // A larger upload goes to hyper, which sends it while the answer may already come
            // back; a small one is sent whole before the answer is read.
            if facts.body_len > MAX_BODY {
                return Err(NotHere::Unusual);
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding")
            || name.eq_ignore_ascii_case("upgrade")
            || name.eq_ignore_ascii_case("expect")
        {
            return Err(NotHere::Unusual);
        } else if name.eq_ignore_ascii_case("connection") {
            for token in tokens(field.value) {
                if token.eq_ignore_ascii_case(b"close") {
                    facts.close = true;
                } else if token.eq_ignore_ascii_case(b"upgrade") {
                    return Err(NotHere::Unusual);
                }
            }
        }
    }
    let Some(host) = host else { return Err(NotHere::Unusual) };
    Ok(Some(Head { method, target, host, fields, facts }))
}

/// A length: ASCII digits only, nothing else (no sign, no spaces inside).
pub fn digits(value: &[u8]) -> Option<u64> {
    let value = value.trim_ascii();
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// The comma-separated tokens of a field value, trimmed.
pub fn tokens(value: &[u8]) -> impl Iterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(|t| t.trim_ascii()).filter(|t| !t.is_empty())
}

/// Fields that say where a message is, or where it goes: never dropped because a `Connection`
/// field names them (dropping `Content-Length` while passing the body would smuggle it).
const FRAMING: [&str; 3] = ["content-length", "transfer-encoding", "host"];

/// Whether field `name` is one the `Connection` fields of `fields` name (so it is hop-by-hop).
/// Framing fields never are.
pub fn named_by_connection(fields: &[httparse::Header<'_>], name: &str) -> bool {
    if FRAMING.iter().any(|f| name.eq_ignore_ascii_case(f)) {
        return false;
    }
    fields
        .iter()
        .filter(|f| f.name.eq_ignore_ascii_case("connection"))
        .flat_map(|f| tokens(f.value))
        .any(|t| t.eq_ignore_ascii_case(name.as_bytes()))
}

/// Appends to `out` the head the target gets for `head`.
pub fn write_for_target(out: &mut Vec<u8>, head: &Head<'_, '_>, client: Client) {
    // Room for the whole head at once: the request's own, and the forwarded fields.
    let fields: usize = head.fields.iter().map(|f| f.name.len() + f.value.len() + 4).sum();
    out.reserve(head.method.len() + head.target.len() + fields + 160);
    out.extend_from_slice(head.method.as_bytes());
    out.push(b' ');
    out.extend_from_slice(head.target.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    let has_connection = head.fields.iter().any(|f| f.name.eq_ignore_ascii_case("connection"));
    let mut forwarded_for: Vec<&[u8]> = Vec::new();
    for field in head.fields {
        let name = field.name;
        if name.eq_ignore_ascii_case("x-forwarded-for") {
            forwarded_for.push(field.value);
            continue;
        }
        if DROPPED.iter().any(|d| name.eq_ignore_ascii_case(d))
            || (has_connection && named_by_connection(head.fields, name))
        {
            continue;
        }
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(field.value);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"x-forwarded-for: ");
    for earlier in forwarded_for {
        out.extend_from_slice(earlier);
        out.extend_from_slice(b", ");
    }
    match client.peer.ip() {
        std::net::IpAddr::V4(ip) => {
            let [a, b, c, d] = ip.octets();
            for (i, octet) in [a, b, c, d].into_iter().enumerate() {
                if i > 0 {
                    out.push(b'.');
                }
                super::push_decimal(out, u64::from(octet));
            }
        }
        // Writing to a Vec cannot fail.
        ip => {
            let _ = write!(out, "{ip}");
        }
    }
    out.extend_from_slice(b"\r\nx-forwarded-proto: ");
    out.extend_from_slice(client.protocol.as_bytes());
    out.extend_from_slice(b"\r\nx-forwarded-port: ");
    super::push_decimal(out, u64::from(client.listener_port));
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> Client {
        Client { peer: "10.1.2.3:5555".parse().unwrap(), protocol: "https", listener_port: 443 }
    }

    fn rewritten(raw: &[u8]) -> String {
        let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
        let head = parse(raw, &mut fields).unwrap().unwrap();
        let mut out = Vec::new();
        write_for_target(&mut out, &head, client());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn hop_by_hop_fields_go_and_forwarded_fields_come() {
        let text = rewritten(
            b"GET /a?b=1 HTTP/1.1\r\nHost: x.test\r\nConnection: keep-alive, x-secret\r\nx-secret: 1\r\n\
              Keep-Alive: timeout=5\r\nTE: trailers\r\nX-Forwarded-For: 192.0.2.1\r\nX-Forwarded-Proto: ftp\r\n\
              Accept: */*\r\n\r\n",
        );
        assert_eq!(
            text,
            "GET /a?b=1 HTTP/1.1\r\nHost: x.test\r\nAccept: */*\r\nx-forwarded-for: 192.0.2.1, 10.1.2.3\r\n\
             x-forwarded-proto: https\r\nx-forwarded-port: 443\r\n\r\n"
        );
    }

    #[test]
    fn a_closing_client_does_not_close_the_target_connection() {
        let text = rewritten(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        assert!(!text.to_ascii_lowercase().contains("connection"), "{text}");
    }

    #[test]
    fn facts_are_read_from_the_head() {
        let raw = b"POST /u HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\nhello";
        let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
        let head = parse(raw, &mut fields).unwrap().unwrap();
        assert_eq!(head.facts.body_len, 12);
        assert_eq!(head.facts.head_len, raw.len() - 5);
        assert_eq!(head.host, "x");
        let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
        assert!(parse(b"GET / HTTP/1.1\r\nHost: x\r\n", &mut fields).unwrap().is_none());
    }

    #[test]
    fn a_connection_field_cannot_drop_the_framing() {
        let text = rewritten(
            b"POST /p HTTP/1.1\r\nHost: a\r\nConnection: content-length, host, x-a\r\nx-a: 1\r\n\
              Content-Length: 4\r\n\r\nbody",
        );
        assert!(text.contains("Content-Length: 4\r\n") && text.contains("Host: a\r\n"), "{text}");
        assert!(!text.contains("x-a"), "{text}");
    }

    #[test]
    fn lengths_are_digits_only() {
        assert_eq!(digits(b" 42 "), Some(42));
        for bad in [&b"+5"[..], b"-1", b"4 2", b"", b"0x10"] {
            assert_eq!(digits(bad), None, "{}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn unusual_requests_go_to_hyper() {
        for raw in [
            &b"GET / HTTP/1.0\r\nHost: x\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\n\r\n",
            b"GET http://x/ HTTP/1.1\r\nHost: x\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n",
            b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 16385\r\n\r\n",
        ] {
            let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
            assert!(parse(raw, &mut fields).is_err(), "{}", String::from_utf8_lossy(raw));
        }
    }
}
