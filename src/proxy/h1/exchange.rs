//! One request and its answer between a client and a target, both HTTP/1.1, in the client
//! connection's own task: the head and body go out over a pooled target connection, and
//! the answer comes back as it arrives, bodies passed on without being decoded.

use std::io::{self, IoSlice};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::pool::TargetConnection;
use super::request::RequestFacts;
use super::response::{parse_and_rewrite, Framing, ResponseFacts};
use crate::config;
use crate::deadline::Deadline;
use crate::guard::chunked::ChunkedBody;
use crate::proxy::connector::ConnectionGuard;
use crate::target_group::{Reason, Target, TargetState};

/// How long a connection to a target may take, as ELB's 10 s.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Room for a head, or for a small body.
const HEAD_ROOM: usize = 4096;

/// Room for passing on a large body.
const BODY_ROOM: usize = 64 * 1024;

/// The longest response head accepted from a target.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// How an exchange ended.
#[derive(Debug)]
pub enum Ended {
    /// The answer went out whole. `keep_alive`: the client connection may carry another
    /// request.
    Answered { keep_alive: bool },
    /// The client got nothing yet: it should get the balancer's own answer `status`, saying
    /// `why`. `connection_error`: counted as a failed connection to the target.
    Failed { status: u16, why: String, connection_error: bool, body_unread: bool },
    /// One of the two connections broke, or an answer had to be cut: the client's ends.
    Broken,
}

enum Fail {
    Connect,
    Target,
    /// A kept-alive connection the target closed as the request went out: the target is not
    /// down for it.
    Closed,
    Client,
}

/// How long the target has to answer a request (its group's `target_timeout`), and the
/// client connection's deadline to time it on.
pub struct AnswerTimeout<'d> {
    pub limit: config::Duration,
    pub deadline: &'d mut Deadline,
}

/// Forwards the request whose rewritten head is in `out`, and whose first bytes (head, body,
/// maybe more) are in `buf`, to `target`; answers the client on `client`. On return `buf`
/// holds the client's bytes that came after the request (the next pipelined request).
/// `answered` gets the answer's status and the wait for its head, before the answer goes on.
pub async fn forward<C>(
    client: &mut C,
    buf: &mut Vec<u8>,
    out: &mut Vec<u8>,
    target: &Target,
    facts: RequestFacts,
    timeout: AnswerTimeout<'_>,
    answered: impl FnOnce(u16, Duration),
) -> Ended
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    let _outstanding = target.stats.start_request();
    let started = Instant::now();
    let available = (buf.len() - facts.head_len) as u64;
    let body_here = facts.body_len.min(available) as usize;
    let mut rest = buf.split_off(facts.head_len + body_here);
    out.extend_from_slice(&buf[facts.head_len..]);
    let body_left = facts.body_len - body_here as u64;
    let AnswerTimeout { limit, deadline } = timeout;
    deadline.set_at(started + limit.get());
    // Boxed: most of this function's future, which the connection's step of serving holds
    // (one box each, both small enough for the allocator's per-thread cache).
    let exchange = Box::pin(send_and_wait(client, buf, out, &mut rest, target, facts, body_left));
    let (mut connection, response) = match deadline.within(exchange).await {
        Some(Ok(done)) => done,
        None => {
            let why = format!("target {} did not answer within target_timeout ({limit})", target.address);
            return Ended::Failed { status: 504, why, connection_error: false, body_unread: body_left > 0 };
        }
        Some(Err(Fail::Connect)) => {
            // A passive check: the target is down now, not at its next active check.
            target.stats.set(TargetState::Unhealthy, Reason::ConnectionFailed);
            let why = format!("cannot connect to target {}", target.address);
            return Ended::Failed { status: 502, why, connection_error: true, body_unread: body_left > 0 };
        }
        Some(Err(Fail::Target)) => {
            target.stats.set(TargetState::Unhealthy, Reason::ConnectionFailed);
            let why = format!("target {} closed the connection or sent a broken response", target.address);
            return Ended::Failed { status: 502, why, connection_error: true, body_unread: body_left > 0 };
        }
        Some(Err(Fail::Closed)) => {
            let why = format!("target {} closed a kept-alive connection as the request went out", target.address);
            return Ended::Failed { status: 502, why, connection_error: true, body_unread: body_left > 0 };
        }
        Some(Err(Fail::Client)) => return Ended::Broken,
    };
    let waited = started.elapsed();
    let status = response.status;
    // Counted before the client can see the answer, as hyper's path does.
    answered(status, waited);
    match pass_answer(client, &mut connection.stream, buf, out, response).await {
        Ok(clean) => {
            if clean && response.reusable {
                target.idle.put(connection);
            }
            buf.clear();
            buf.extend_from_slice(&rest);
            let keep_alive = !facts.close && response.framing != Framing::UntilClose;
            Ended::Answered { keep_alive }
        }
        Err(_) => Ended::Broken,
    }
}

/// Sends the request and reads the head of its final answer (interim answers go on to the
/// client). On return `buf` starts with that head and `out` holds the client's version of it.
#[allow(clippy::too_many_arguments)]
async fn send_and_wait<C>(
    client: &mut C,
    buf: &mut Vec<u8>,
    out: &mut Vec<u8>,
    rest: &mut Vec<u8>,
    target: &Target,
    facts: RequestFacts,
    body_left: u64,
) -> Result<(TargetConnection, ResponseFacts), Fail>
where
    C: AsyncRead + AsyncWrite + Unpin,
{
    // An idempotent request without a body can go again on a new connection if a reused one
    // turns out to have been closed by the target meanwhile, before any answer: as nginx does.
    // Whether the target had begun on it cannot be told, so a POST is not sent twice.
    let mut may_retry = facts.body_len == 0 && facts.idempotent;
    let mut pooled = target.idle.take();
    loop {
        let (mut connection, reused) = match pooled.take() {
            Some(connection) => (connection, true),
            None => (connect(target).await.map_err(|_| Fail::Connect)?, false),
        };
        let mut retry = reused && may_retry;
        may_retry = false;
        let stream = &mut connection.stream;
        // What a failed write means: the target hung up a kept-alive connection, or failed.
        let failed = |e: io::Error| if reused && hung_up(&e) { Fail::Closed } else { Fail::Target };
        match stream.write_all(out).await {
            Err(_) if retry => continue,
            sent => sent.map_err(failed)?,
        }
        send_body(client, stream, buf, rest, body_left, failed).await?;
        buf.clear();
        // Whether the target has sent any byte of an answer (an interim one included).
        let mut answering = false;
        loop {
            buf.reserve(HEAD_ROOM);
            let n = match stream.read_buf(buf).await {
                Ok(n) => n,
                // A reset reads as the end; any other error is the target's failure.
                Err(e) if hung_up(&e) => 0,
                Err(_) => return Err(Fail::Target),
            };
            if n == 0 {
                match (answering, retry, reused) {
                    // Closed by the target before it answered: once more, on a new one.
                    (false, true, _) => break,
                    (false, false, true) => return Err(Fail::Closed),
                    _ => return Err(Fail::Target),
                }
            }
            // The target has begun to answer: this request is not sent again.
            answering = true;
            retry = false;
            // Interim answers go on to the client as they come; the final one is returned.
            loop {
                out.clear();
                match parse_and_rewrite(buf, facts.head_method, facts.close, out) {
                    Ok(Some(response)) if response.interim => {
                        write_all_two(client, out, &[]).await.map_err(|_| Fail::Client)?;
                        buf.drain(..response.head_len);
                        if buf.is_empty() {
                            break;
                        }
                    }
                    Ok(Some(response)) => return Ok((connection, response)),
                    Ok(None) if buf.len() > MAX_RESPONSE_HEAD => return Err(Fail::Target),
                    Ok(None) => break,
                    Err(_) => return Err(Fail::Target),
                }
            }
        }
    }
}

/// Sends the `left` body bytes still to come from the client (a small body: see
/// `request::MAX_BODY`); bytes after the body go to `rest`.
async fn send_body<C>(
    client: &mut C,
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    rest: &mut Vec<u8>,
    mut left: u64,
    failed: impl Fn(io::Error) -> Fail,
) -> Result<(), Fail>
where
    C: AsyncRead + Unpin,
{
    while left > 0 {
        buf.clear();
        buf.reserve(HEAD_ROOM);
        let got = client.read_buf(buf).await.map_err(|_| Fail::Client)?;
        if got == 0 {
            return Err(Fail::Client);
        }
        let take = (got as u64).min(left) as usize;
        stream.write_all(&buf[..take]).await.map_err(&failed)?;
        rest.extend_from_slice(&buf[take..]);
        left -= take as u64;
    }
    Ok(())
}

/// Whether `e` says the peer closed or reset the connection.
pub(super) fn hung_up(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe | io::ErrorKind::ConnectionAborted)
}

/// Opens a new connection to `target`, counted as open while it lives.
pub(super) async fn connect(target: &Target) -> io::Result<TargetConnection> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, crate::target_group::connect(&target.authority, true))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
    Ok(TargetConnection::new(stream, ConnectionGuard::count(target.connection_counter())))
}

/// Passes the answer on: its head (in `out`) and its body, which starts in `buf` after the
/// target's head. `Ok(true)`: the target connection ended exactly with the answer.
async fn pass_answer<C>(
    client: &mut C,
    stream: &mut TcpStream,
    buf: &mut Vec<u8>,
    out: &mut Vec<u8>,
    response: ResponseFacts,
) -> io::Result<bool>
where
    C: AsyncWrite + Unpin,
{
    let body = &buf[response.head_len..];
    let clean = match response.framing {
        Framing::Empty => {
            write_all_two(client, out, &[]).await?;
            body.is_empty()
        }
        Framing::Length(n) => {
            let here = (n.min(body.len() as u64)) as usize;
            write_all_two(client, out, &body[..here]).await?;
            let clean = here == body.len();
            let mut left = n - here as u64;
            while left > 0 {
                let got = read_some(stream, buf, left).await?;
                let take = (got as u64).min(left) as usize;
                client.write_all(&buf[..take]).await?;
                left -= take as u64;
                if take < got {
                    return finish(client, false).await;
                }
            }
            clean
        }
        Framing::Chunked => {
            let mut chunks = ChunkedBody::new();
            let progress = chunks.feed(body).map_err(invalid)?;
            write_all_two(client, out, &body[..progress.consumed]).await?;
            let mut clean = progress.consumed == body.len();
            let mut done = progress.done;
            while !done {
                let got = read_some(stream, buf, u64::MAX).await?;
                let progress = chunks.feed(&buf[..got]).map_err(invalid)?;
                client.write_all(&buf[..progress.consumed]).await?;
                clean = progress.consumed == got;
                done = progress.done;
            }
            clean
        }
        Framing::UntilClose => {
            write_all_two(client, out, body).await?;
            loop {
                buf.clear();
                buf.reserve(BODY_ROOM);
                if stream.read_buf(buf).await? == 0 {
                    break;
                }
                client.write_all(buf).await?;
            }
            false
        }
    };
    finish(client, clean).await
}

async fn finish<C: AsyncWrite + Unpin>(client: &mut C, clean: bool) -> io::Result<bool> {
    // TLS may hold the last bytes until flushed.
    client.flush().await?;
    Ok(clean)
}

/// Reads the next bytes of a body of which `left` remain into `buf` (from its start); the
/// end of the stream is an error, as the body is not whole.
async fn read_some(stream: &mut TcpStream, buf: &mut Vec<u8>, left: u64) -> io::Result<usize> {
    buf.clear();
    buf.reserve(if left > HEAD_ROOM as u64 { BODY_ROOM } else { HEAD_ROOM });
    match stream.read_buf(buf).await? {
        0 => Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the target closed inside a body")),
        n => Ok(n),
    }
}

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

/// Bytes of a body copied behind its head, to go out in one plain write.
const COPY_BELOW: usize = 8 * 1024;

/// Writes the head `head` then the bytes `b`, in one system call when they fit: a short `b` is
/// copied behind the head (one `send`), a long one goes by `writev`.
async fn write_all_two<W: AsyncWrite + Unpin>(w: &mut W, head: &mut Vec<u8>, mut b: &[u8]) -> io::Result<()> {
    if b.len() <= COPY_BELOW {
        head.extend_from_slice(b);
        return w.write_all(head).await;
    }
    let mut a = &head[..];
    while !a.is_empty() || !b.is_empty() {
        let n = if a.is_empty() {
            w.write(b).await?
        } else {
            w.write_vectored(&[IoSlice::new(a), IoSlice::new(b)]).await?
        };
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        let from_a = n.min(a.len());
        a = &a[from_a..];
        b = &b[n - from_a..];
    }
    Ok(())
}
