//! Requests that hyper serves (HTTP/2 clients) sent to plain HTTP/1.1 targets over the
//! engine's pooled connections, in the request's own task: no client connection task to hand
//! each request to and back, no second pool. The answer's body streams from the connection,
//! which goes back to the pool once the body has ended cleanly.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode, Version};
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::exchange::{connect, hung_up};
use super::pool::{IdlePool, TargetConnection};
use super::request::MAX_FIELDS;
use super::response::{framing_of, Framing};
use crate::guard::chunked::ChunkedBody;
use crate::proxy::body::BoxError;
use crate::target_group::{OutstandingGuard, Target};

/// Room for a response head.
const HEAD_ROOM: usize = 4096;

/// Room for the first read of an answer: most heads, and short bodies with them. Small enough
/// for the allocator's per-thread cache, which a buffer per request takes and gives back
/// quickly (a 4 KiB one took its slow path: 6% more user CPU per request on d at two threads).
const FIRST_READ: usize = 1024;

/// Room for the next read of a body.
const BODY_ROOM: usize = 16 * 1024;

/// The longest response head accepted from a target.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// Why a target gave no answer.
#[derive(Debug, PartialEq, Eq)]
pub enum SendFailure {
    /// No connection could be made.
    Connect,
    /// The connection broke or the answer was not one.
    Broken,
    /// A kept-alive connection the target closed as the request went out: the target is not
    /// down for it.
    Closed,
}

/// Sends the body-less request `head` (its method, target and fields, `Host` among them) to
/// `target`, and returns the final answer's head with its body to come.
pub async fn send(
    target: &Target,
    head: &http::request::Parts,
    outstanding: OutstandingGuard,
) -> Result<Response<TargetBody>, SendFailure> {
    let request = encode(head);
    let head_method = head.method == Method::HEAD;
    // As the engine does: a request the target may not have begun on is sent once more on a
    // new connection when a reused one turns out closed; only an idempotent one.
    let mut may_retry = head.method.is_idempotent();
    let mut pooled = target.idle.take();
    'connect: loop {
        let (mut connection, reused) = match pooled.take() {
            Some(connection) => (connection, true),
            None => (connect(target).await.map_err(|_| SendFailure::Connect)?, false),
        };
        let retry = reused && may_retry;
        may_retry = false;
        let closed = |e: &io::Error| reused && hung_up(e);
        if let Err(e) = connection.stream.write_all(&request).await {
            match (retry, closed(&e)) {
                (true, _) => continue,
                (false, true) => return Err(SendFailure::Closed),
                (false, false) => return Err(SendFailure::Broken),
            }
        }
        let mut buf = BytesMut::with_capacity(FIRST_READ);
        // Whether the target has sent any byte of an answer (an interim one included): from
        // then on the request is not sent again.
        let mut answering = false;
        loop {
            let n = match connection.stream.read_buf(&mut buf).await {
                Ok(n) => n,
                Err(e) if hung_up(&e) => 0,
                Err(_) => return Err(SendFailure::Broken),
            };
            if n == 0 {
                match (!answering, retry, reused) {
                    // Closed by the target before it answered: once more, on a new one.
                    (true, true, _) => continue 'connect,
                    (true, false, true) => return Err(SendFailure::Closed),
                    _ => return Err(SendFailure::Broken),
                }
            }
            answering = true;
            match read_head(&mut buf, head_method)? {
                Some((response, framing, reusable)) => {
                    let pool = Arc::clone(&target.idle);
                    let body = TargetBody::new(connection, pool, buf, framing, reusable, outstanding);
                    return Ok(response.map(|()| body));
                }
                None if buf.len() > MAX_RESPONSE_HEAD => return Err(SendFailure::Broken),
                None => {}
            }
            buf.reserve(HEAD_ROOM);
        }
    }
}

/// The HTTP/1.1 head of `head`.
fn encode(head: &http::request::Parts) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(head.method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(head.uri.path_and_query().map_or("/", |p| p.as_str()).as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in &head.headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    // A method that is expected to carry a body says it carries none.
    let expects_body = matches!(head.method, Method::POST | Method::PUT | Method::PATCH);
    if expects_body && !head.headers.contains_key(http::header::CONTENT_LENGTH) {
        out.extend_from_slice(b"content-length: 0\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// The final answer's head at the start of `buf`, taken off it: `None` while incomplete.
/// Interim (1xx) answers are dropped: an HTTP/2 client gets the final one only.
fn read_head(buf: &mut BytesMut, head_method: bool) -> Result<Option<(Response<()>, Framing, bool)>, SendFailure> {
    loop {
        let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
        let mut parsed = httparse::Response::new(&mut fields);
        let head_len = match parsed.parse(buf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(_) => return Err(SendFailure::Broken),
        };
        let (Some(version), Some(status)) = (parsed.version, parsed.code) else { return Err(SendFailure::Broken) };
        // 101 answers an upgrade, and upgrades never come here.
        if status == 101 || !(100..=999).contains(&status) {
            return Err(SendFailure::Broken);
        }
        if status < 200 {
            let _ = buf.split_to(head_len);
            continue;
        }
        let fields: &[httparse::Header<'_>] = parsed.headers;
        let (framing, reusable, _) =
            framing_of(version, status, fields, head_method).map_err(|_| SendFailure::Broken)?;
        let mut response = Response::new(());
        *response.status_mut() = StatusCode::from_u16(status).map_err(|_| SendFailure::Broken)?;
        *response.version_mut() = Version::HTTP_11;
        // Values are slices of the head as read, not copies: where each field lies in it.
        let mut spans = [[0usize; 4]; MAX_FIELDS];
        let as_read = &buf[..head_len];
        for (field, span) in fields.iter().zip(spans.iter_mut()) {
            let ([name_from, name_to], [value_from, value_to]) =
                (offsets(as_read, field.name.as_bytes())?, offsets(as_read, field.value)?);
            *span = [name_from, name_to, value_from, value_to];
        }
        let count = fields.len();
        let head = buf.split_to(head_len).freeze();
        let headers = response.headers_mut();
        headers.reserve(count);
        for &[name_from, name_to, value_from, value_to] in &spans[..count] {
            let name = HeaderName::from_bytes(&head[name_from..name_to]).map_err(|_| SendFailure::Broken)?;
            let value =
                HeaderValue::from_maybe_shared(head.slice(value_from..value_to)).map_err(|_| SendFailure::Broken)?;
            headers.append(name, value);
        }
        return Ok(Some((response, framing, reusable)));
    }
}

/// Where `part`, a slice of `head` the parser returned, lies in it.
fn offsets(head: &[u8], part: &[u8]) -> Result<[usize; 2], SendFailure> {
    let from = (part.as_ptr() as usize).wrapping_sub(head.as_ptr() as usize);
    match from.checked_add(part.len()) {
        Some(to) if to <= head.len() => Ok([from, to]),
        // An empty value may point anywhere.
        _ if part.is_empty() => Ok([0, 0]),
        _ => Err(SendFailure::Broken),
    }
}

/// Where a body stands.
#[derive(Debug)]
enum BodyState {
    /// `left` bytes to come.
    Length(u64),
    /// The decoder, and the trailer section as it comes.
    Chunked(Box<(ChunkedBody, Vec<u8>)>),
    UntilClose,
    Done,
}

/// A target's answer body, read from its connection as the client takes it. It keeps the
/// request counted as outstanding until it ends, and gives the connection back to the pool
/// when the body ended exactly where the connection's bytes did.
#[derive(Debug)]
pub struct TargetBody {
    connection: Option<TargetConnection>,
    pool: Arc<IdlePool>,
    /// Bytes read and not yet handed on.
    buf: BytesMut,
    /// Decoded chunk data, ready to hand on.
    decoded: VecDeque<Bytes>,
    /// A chunked body's trailer fields, handed on last.
    trailers: Option<Box<HeaderMap>>,
    state: BodyState,
    reusable: bool,
    outstanding: Option<OutstandingGuard>,
}

impl TargetBody {
    fn new(
        connection: TargetConnection,
        pool: Arc<IdlePool>,
        buf: BytesMut,
        framing: Framing,
        reusable: bool,
        outstanding: OutstandingGuard,
    ) -> Self {
        let state = match framing {
            Framing::Empty | Framing::Length(0) => BodyState::Done,
            Framing::Length(n) => BodyState::Length(n),
            Framing::Chunked => BodyState::Chunked(Box::default()),
            Framing::UntilClose => BodyState::UntilClose,
        };
        let mut body = TargetBody {
            connection: Some(connection),
            pool,
            buf,
            decoded: VecDeque::new(),
            trailers: None,
            state,
            reusable,
            outstanding: Some(outstanding),
        };
        if matches!(body.state, BodyState::Done) {
            body.end();
        }
        body
    }

    /// The body has ended: the connection goes back to the pool if nothing followed the body
    /// and the target keeps it open; the request is no longer outstanding.
    fn end(&mut self) {
        self.state = BodyState::Done;
        if let Some(connection) = self.connection.take() {
            if self.reusable && self.buf.is_empty() {
                self.pool.put(connection);
            }
        }
        self.outstanding = None;
    }

    /// Reads more of the connection into `buf`: `Ok(0)` at its end.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        let Some(connection) = self.connection.as_ref() else { return Poll::Ready(Ok(0)) };
        loop {
            ready!(connection.stream.poll_read_ready(cx))?;
            self.buf.reserve(BODY_ROOM);
            match connection.stream.try_read_buf(&mut self.buf) {
                Ok(n) => return Poll::Ready(Ok(n)),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }

    /// The next data out of what is buffered, if any; ends the body when it is complete.
    fn take_buffered(&mut self) -> Result<Option<Bytes>, BoxError> {
        if let Some(data) = self.decoded.pop_front() {
            return Ok(Some(data));
        }
        if self.buf.is_empty() {
            return Ok(None);
        }
        match &mut self.state {
            BodyState::Done => Ok(None),
            BodyState::UntilClose => Ok(Some(self.buf.split().freeze())),
            BodyState::Length(left) => {
                let take = (*left).min(self.buf.len() as u64) as usize;
                *left -= take as u64;
                let data = self.buf.split_to(take).freeze();
                if *left == 0 {
                    self.end();
                }
                Ok(Some(data))
            }
            BodyState::Chunked(chunked) => {
                let (chunks, trailer) = &mut **chunked;
                let mut spans = Vec::new();
                let progress = chunks.feed_with(&self.buf, |span| spans.push(span), |b| trailer.push(b))?;
                let fed = self.buf.split_to(progress.consumed).freeze();
                self.decoded.extend(spans.into_iter().filter(|s| !s.is_empty()).map(|s| fed.slice(s)));
                if progress.done {
                    self.trailers = trailer_fields(trailer)?.map(Box::new);
                    self.end();
                }
                Ok(self.decoded.pop_front())
            }
        }
    }
}

impl Body for TargetBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            // The target's draining ended while this body streamed: cut it.
            if this.outstanding.as_ref().is_some_and(|o| o.stats().closing().is_cancelled()) {
                this.connection = None;
                return Poll::Ready(Some(Err("the target was deregistered".into())));
            }
            match this.take_buffered() {
                Ok(Some(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                Ok(None) if matches!(this.state, BodyState::Done) => {
                    return Poll::Ready(this.trailers.take().map(|t| Ok(Frame::trailers(*t))));
                }
                Ok(None) => {}
                Err(e) => {
                    this.connection = None;
                    return Poll::Ready(Some(Err(e)));
                }
            }
            match ready!(this.poll_fill(cx)) {
                Ok(0) if matches!(this.state, BodyState::UntilClose) => {
                    this.connection = None;
                    this.end();
                    return Poll::Ready(None);
                }
                Ok(0) => {
                    this.connection = None;
                    return Poll::Ready(Some(Err("the target closed inside a body".into())));
                }
                Ok(_) => {}
                Err(e) => {
                    this.connection = None;
                    return Poll::Ready(Some(Err(e.into())));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.state, BodyState::Done) && self.decoded.is_empty() && self.trailers.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        match self.state {
            BodyState::Length(left) => SizeHint::with_exact(left),
            BodyState::Done if self.decoded.is_empty() && self.trailers.is_none() => SizeHint::with_exact(0),
            _ => SizeHint::default(),
        }
    }
}

/// The fields of a chunked body's trailer section (`name: value` lines, then CRLF); `None`
/// when it has none.
fn trailer_fields(section: &[u8]) -> Result<Option<HeaderMap>, BoxError> {
    if section.len() <= 2 {
        return Ok(None);
    }
    let mut fields = [httparse::EMPTY_HEADER; MAX_FIELDS];
    let httparse::Status::Complete((_, parsed)) = httparse::parse_headers(section, &mut fields)? else {
        return Err("a trailer section that does not end".into());
    };
    let mut map = HeaderMap::with_capacity(parsed.len());
    for field in parsed {
        map.append(HeaderName::from_bytes(field.name.as_bytes())?, HeaderValue::from_bytes(field.value)?);
    }
    Ok(Some(map))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(method: Method, uri: &str, fields: &[(&str, &str)]) -> http::request::Parts {
        let mut request = http::Request::builder().method(method).uri(uri);
        for (name, value) in fields {
            request = request.header(*name, *value);
        }
        request.body(()).unwrap().into_parts().0
    }

    #[test]
    fn a_request_head_is_http_1_1_with_its_fields() {
        let head = parts(Method::GET, "https://example.com/a/b?c=d", &[("host", "example.com"), ("x-one", "1")]);
        let text = String::from_utf8(encode(&head)).unwrap();
        assert_eq!(text, "GET /a/b?c=d HTTP/1.1\r\nhost: example.com\r\nx-one: 1\r\n\r\n");
    }

    #[test]
    fn a_post_without_a_body_says_so() {
        let text = String::from_utf8(encode(&parts(Method::POST, "/form", &[("host", "h")]))).unwrap();
        assert!(text.contains("content-length: 0\r\n"), "{text}");
        let text = String::from_utf8(encode(&parts(Method::DELETE, "/x", &[("host", "h")]))).unwrap();
        assert!(!text.contains("content-length"), "{text}");
    }

    #[test]
    fn interim_answers_are_skipped_and_the_final_head_is_read() {
        let mut buf = BytesMut::from(
            &b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nX-A: 1\r\nContent-Length: 3\r\n\r\nabc"[..],
        );
        let (response, framing, reusable) = read_head(&mut buf, false).unwrap().unwrap();
        assert_eq!(response.status(), StatusCode::CREATED);
        assert_eq!(response.headers()["x-a"], "1");
        assert_eq!(framing, Framing::Length(3));
        assert!(reusable);
        assert_eq!(&buf[..], b"abc", "the body's bytes stay");
    }

    #[test]
    fn fields_keep_their_values_and_order_empty_and_repeated_ones_included() {
        let raw = b"HTTP/1.1 200 OK\r\nServer: nginx/1.22.1\r\nX-Empty:\r\nSet-Cookie: a=1\r\nX-Custom-Name: v\r\n\
                    Set-Cookie: b=2\r\nContent-Length: 2\r\n\r\nok";
        let mut buf = BytesMut::from(&raw[..]);
        let (response, _, _) = read_head(&mut buf, false).unwrap().unwrap();
        let h = response.headers();
        assert_eq!(h["server"], "nginx/1.22.1");
        assert_eq!(h["x-empty"], "");
        assert_eq!(h["x-custom-name"], "v");
        assert_eq!(h.get_all("set-cookie").iter().collect::<Vec<_>>(), ["a=1", "b=2"]);
        assert_eq!(h.len(), 6);
        assert_eq!(&buf[..], b"ok");
    }

    #[test]
    fn a_head_that_is_not_complete_waits_and_a_broken_one_fails() {
        let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Le"[..]);
        assert!(read_head(&mut buf, false).unwrap().is_none());
        let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"[..]);
        assert_eq!(read_head(&mut buf, false).unwrap_err(), SendFailure::Broken);
        let mut buf = BytesMut::from(&b"HTTP/1.0 200 OK\r\n\r\nall"[..]);
        let (_, framing, reusable) = read_head(&mut buf, false).unwrap().unwrap();
        assert_eq!((framing, reusable), (Framing::UntilClose, false));
    }
}
