//! The guard in front of HTTP/1.x: reads each request head off the client connection before
//! hyper sees it, classifies it, applies the listener's desync mode and limits, and hands on
//! only a normalized head with exactly one framing — or, for a refused request, a stand-in
//! head whose answer the service looks up in the connection's queue of decisions.
//!
//! It follows each body's framing so that it always knows where the next head starts: no byte
//! of a smuggled second request can pass as part of a body.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

use super::chunked::ChunkedBody;
use super::head::{head_end, inspect, Class, Framing, Verdict};
use crate::config::DesyncMitigation;
use crate::deadline::Deadline;

/// What the service must do with the next request hyper hands it on this connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Serve it; with `close`, end the connection (both sides) after the answer.
    Forward { close: bool },
    /// Answer `status` and close: the head hyper sees is only a stand-in.
    Reject { status: u16, reason: &'static str },
}

/// The decisions of one connection, in request order (HTTP/1.1 answers in order), shared
/// with hyper's service while hyper serves the connection.
pub type Decisions = Arc<Mutex<VecDeque<Decision>>>;

/// The decisions of one connection, in request order, while ballast's engine serves it: one
/// request at a time takes no allocation, and an idle connection holds none.
#[derive(Debug, Default)]
pub struct OwnDecisions {
    /// The decision on the next request; `None` only when `later` is empty too.
    next: Option<Decision>,
    /// Decisions on pipelined requests after it.
    later: VecDeque<Decision>,
}

impl OwnDecisions {
    /// The decision on the next request, if its head has been read.
    pub fn front(&self) -> Option<&Decision> {
        self.next.as_ref()
    }

    /// Takes the decision on the next request.
    pub fn pop_front(&mut self) -> Option<Decision> {
        let next = self.next.take();
        self.next = self.later.pop_front();
        next
    }

    fn push_back(&mut self, decision: Decision) {
        if self.next.is_none() {
            self.next = Some(decision);
        } else {
            self.later.push_back(decision);
        }
    }
}

/// A well-formed head that stands in for a refused request, so hyper calls the service,
/// which answers with the refusal.
const STAND_IN: &[u8] = b"GET / HTTP/1.1\r\nhost: ballast.invalid\r\nconnection: close\r\n\r\n";

/// The listener's settings the guard applies.
#[derive(Debug, Clone)]
pub struct GuardSettings {
    pub mode: DesyncMitigation,
    pub max_header_bytes: usize,
    pub max_uri_bytes: usize,
    /// 0: no limit.
    pub max_body_bytes: u64,
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub idle_timeout: Duration,
    /// Requests by class: compliant, acceptable, ambiguous, severe.
    pub classes: [crate::metrics::WorkerCounter; 4],
}

enum Phase {
    /// Waiting for (more of) a request head.
    Head,
    /// Passing a body on: bytes left of a fixed length, or a chunked body.
    Length(u64),
    Chunked(ChunkedBody),
    /// The first bytes were an HTTP/2 preface, or a request asked to upgrade (WebSocket):
    /// everything after passes untouched. (An upgrade the target refuses closes the
    /// connection after its answer, so no request follows unguarded.)
    Tunnel,
    /// Nothing more is passed on; the client's bytes are read and dropped until it closes,
    /// so hyper answers the last request and closes (its answer says `Connection: close`).
    Drain,
    /// The client closed, or was too slow: hyper reads the end of the stream.
    Done,
}

/// A client connection seen through the guard.
pub struct GuardedIo<S> {
    inner: S,
    settings: Arc<GuardSettings>,
    decisions: OwnDecisions,
    /// Where decisions go instead while hyper serves the connection.
    shared: Option<Decisions>,
    phase: Phase,
    /// Read from the client, not yet handled.
    raw: Vec<u8>,
    /// Ready for hyper.
    out: Vec<u8>,
    out_pos: usize,
    /// After the current body, read no more (a close was decided).
    close_after_body: bool,
    body_seen: u64,
    /// The client's: for the next head when idle, the current head, or the current body.
    deadline: Deadline,
    /// Whether the current head has begun to arrive (its header timeout runs).
    started: bool,
    /// Heads seen on this connection.
    heads: u64,
    /// When an idle keep-alive connection is handed back out of hyper (see `park`).
    park_deadline: Option<Pin<Box<Sleep>>>,
    /// The connection is idle and out of hyper: reads say end-of-stream and shutdown does
    /// nothing, so hyper lets go of it without closing it.
    parked: bool,
}

/// How long a keep-alive connection may idle inside hyper before it is parked: hyper holds
/// about 16 KiB of buffers per connection; a parked one holds none.
const PARK_AFTER: Duration = Duration::from_millis(1500);

const HTTP2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

impl<S> GuardedIo<S> {
    /// Guards `inner` with the listener's `settings`.
    pub fn new(inner: S, settings: Arc<GuardSettings>) -> Self {
        GuardedIo {
            inner,
            settings,
            decisions: OwnDecisions::default(),
            shared: None,
            phase: Phase::Head,
            raw: Vec::new(),
            out: Vec::new(),
            out_pos: 0,
            close_after_body: false,
            body_seen: 0,
            deadline: Deadline::default(),
            started: false,
            heads: 0,
            park_deadline: None,
            parked: false,
        }
    }

    /// The queue hyper's service reads this connection's decisions from, from now on; the
    /// decisions not taken yet move there.
    pub fn share_decisions(&mut self) -> Decisions {
        let shared = self.shared.get_or_insert_with(Decisions::default);
        let mut queue = shared.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(decision) = self.decisions.pop_front() {
            queue.push_back(decision);
        }
        drop(queue);
        Arc::clone(shared)
    }

    /// The decisions for ballast's engine to read and take; those left in hyper's queue come
    /// back first.
    pub fn own_decisions(&mut self) -> &mut OwnDecisions {
        if let Some(shared) = self.shared.take() {
            let mut queue = shared.lock().unwrap_or_else(|p| p.into_inner());
            while let Some(decision) = queue.pop_front() {
                self.decisions.push_back(decision);
            }
        }
        &mut self.decisions
    }

    /// Lets go of the buffers of requests already passed on: a connection waiting for its
    /// next request holds none (they grow to the size of a head, often a kilobyte or more).
    pub fn release_buffers(&mut self) {
        if self.raw.is_empty() {
            self.raw = Vec::new();
        }
        if self.out_pos >= self.out.len() {
            self.out = Vec::new();
            self.out_pos = 0;
        }
        if self.decisions.later.is_empty() {
            self.decisions.later = VecDeque::new();
        }
    }

    /// The connection's timer, for the engine to time the target's answer on while the guard
    /// times nothing (no body or next head is on its way). While the guard times one, an empty
    /// deadline, which makes a timer of its own when set (an allocation the upload's request
    /// pays). Handed back with [`GuardedIo::give_back_timer`].
    pub fn lend_timer(&mut self) -> Deadline {
        if self.deadline.is_set() {
            Deadline::default()
        } else {
            std::mem::take(&mut self.deadline)
        }
    }

    /// Takes back the timer [`GuardedIo::lend_timer`] lent, unless the guard got one of its own
    /// meanwhile.
    pub fn give_back_timer(&mut self, mut lent: Deadline) {
        if !self.deadline.has_timer() {
            lent.clear();
            self.deadline = lent;
        }
    }

    /// Whether the connection was handed back out of hyper to wait, idle, for its next request.
    pub fn is_parked(&self) -> bool {
        self.parked
    }

    /// Whether bytes the client sent wait here, not yet read through this stream.
    pub fn has_buffered(&self) -> bool {
        !self.raw.is_empty() || self.out_pos < self.out.len()
    }

    /// Whether what the client sent first is an HTTP/2 preface (h2c with prior knowledge).
    pub fn is_http2_preface(&self) -> bool {
        let n = self.raw.len().min(HTTP2_PREFACE.len());
        self.heads == 0 && n > 0 && self.raw[..n] == HTTP2_PREFACE[..n]
    }

    /// Waits, holding no buffer, until the client sends the start of its next request: `true`
    /// then, `false` if it closed or stayed idle past `idle_timeout`.
    pub async fn wait_for_request(&mut self) -> bool
    where
        S: AsyncRead + Unpin,
    {
        if !self.deadline.is_set() {
            self.arm(self.settings.idle_timeout);
        }
        std::future::poll_fn(|cx| {
            let mut chunk = [0u8; 1024];
            let mut read = ReadBuf::new(&mut chunk);
            match Pin::new(&mut self.inner).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) if read.filled().is_empty() => Poll::Ready(false),
                Poll::Ready(Ok(())) => {
                    self.raw.extend_from_slice(read.filled());
                    // A preface cut short is read whole before anyone decides on it.
                    let n = self.raw.len();
                    if self.heads == 0 && n < 4 && self.raw[..] == HTTP2_PREFACE[..n] {
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                    self.parked = false;
                    self.park_deadline = None;
                    self.started = true;
                    self.arm(self.settings.header_timeout);
                    Poll::Ready(true)
                }
                Poll::Ready(Err(_)) => Poll::Ready(false),
                Poll::Pending => {
                    if self.deadline.poll_expired(cx).is_ready() {
                        Poll::Ready(false)
                    } else {
                        Poll::Pending
                    }
                }
            }
        })
        .await
    }

    fn decide(&mut self, decision: Decision) {
        match &self.shared {
            Some(shared) => shared.lock().unwrap_or_else(|p| p.into_inner()).push_back(decision),
            None => self.decisions.push_back(decision),
        }
    }

    fn refuse(&mut self, status: u16, reason: &'static str) {
        self.decide(Decision::Reject { status, reason });
        self.out.extend_from_slice(STAND_IN);
        self.raw.clear();
        self.phase = Phase::Drain;
    }

    fn arm(&mut self, after: Duration) {
        self.deadline.set(after);
    }

    /// Handles a complete head of `len` bytes at the start of `raw`.
    fn take_head(&mut self, len: usize) {
        let Verdict { class, reason, refuse, framing, head, .. } = inspect(&self.raw[..len]);
        self.raw.drain(..len);
        let class_index = match class {
            Class::Compliant => 0,
            Class::Acceptable => 1,
            Class::Ambiguous => 2,
            Class::Severe => 3,
        };
        self.settings.classes[class_index].inc();
        let mode = self.settings.mode;
        let target_len = head.split(|&b| b == b' ').nth(1).map_or(0, <[u8]>::len);
        if target_len > self.settings.max_uri_bytes {
            return self.refuse(414, "uri_too_long");
        }
        if let (Some(status), false) = (refuse, mode == DesyncMitigation::Monitor) {
            return self.refuse(status, reason);
        }
        let (forward, close) = match (mode, class) {
            // Monitor forwards everything, but a head that may frame its body differently
            // at the target ends its connection: nothing after it can pass as a request.
            (DesyncMitigation::Monitor, class) => (true, class >= Class::Ambiguous),
            (_, Class::Compliant) => (true, false),
            (DesyncMitigation::Defensive, Class::Acceptable) => (true, false),
            (DesyncMitigation::Defensive, Class::Ambiguous) => (true, true),
            _ => (false, true),
        };
        if !forward {
            return self.refuse(400, reason);
        }
        if let Framing::Length(n) = framing {
            if self.settings.max_body_bytes > 0 && n > self.settings.max_body_bytes {
                return self.refuse(413, "body_too_large");
            }
        }
        self.decide(Decision::Forward { close });
        let upgrade = has_field(&head, b"upgrade");
        if self.out.is_empty() {
            self.out = head;
        } else {
            self.out.extend_from_slice(&head);
        }
        self.close_after_body = close;
        self.body_seen = 0;
        self.phase = match framing {
            Framing::None if upgrade && !close => Phase::Tunnel,
            Framing::None | Framing::Length(0) => self.after_body(),
            Framing::Length(n) => Phase::Length(n),
            Framing::Chunked => Phase::Chunked(ChunkedBody::new()),
        };
        if matches!(self.phase, Phase::Length(_) | Phase::Chunked(_)) {
            self.arm(self.settings.body_timeout);
        }
    }

    fn after_body(&mut self) -> Phase {
        self.deadline.clear();
        if self.close_after_body {
            Phase::Drain
        } else {
            self.started = false;
            Phase::Head
        }
    }

    /// Moves body bytes from `raw` to `out`; an error ends the connection.
    fn pass_body(&mut self) -> io::Result<()> {
        if self.raw.is_empty() {
            return Ok(());
        }
        let (take, done) = match &mut self.phase {
            Phase::Length(left) => {
                let take = (*left).min(self.raw.len() as u64) as usize;
                *left -= take as u64;
                (take, *left == 0)
            }
            Phase::Chunked(body) => {
                let progress =
                    body.feed(&self.raw).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                (progress.consumed, progress.done)
            }
            _ => return Ok(()),
        };
        self.body_seen += take as u64;
        if self.settings.max_body_bytes > 0 && self.body_seen > self.settings.max_body_bytes {
            return Err(io::Error::new(io::ErrorKind::InvalidData, "request body over max_body_bytes"));
        }
        self.out.extend(self.raw.drain(..take));
        if done {
            self.phase = self.after_body();
        } else {
            self.arm(self.settings.body_timeout);
        }
        Ok(())
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for GuardedIo<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.out_pos < this.out.len() {
                let n = buf.remaining().min(this.out.len() - this.out_pos);
                buf.put_slice(&this.out[this.out_pos..this.out_pos + n]);
                this.out_pos += n;
                if this.out_pos == this.out.len() {
                    this.out.clear();
                    this.out_pos = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.parked {
                return Poll::Ready(Ok(()));
            }
            match this.phase {
                Phase::Done => return Poll::Ready(Ok(())),
                Phase::Drain => {
                    let mut scratch = [0u8; 4096];
                    let mut sink = ReadBuf::new(&mut scratch);
                    match Pin::new(&mut this.inner).poll_read(cx, &mut sink)? {
                        Poll::Ready(()) if sink.filled().is_empty() => return Poll::Ready(Ok(())),
                        Poll::Ready(()) => {
                            this.raw.clear();
                            continue;
                        }
                        Poll::Pending => return Poll::Pending,
                    }
                }
                Phase::Tunnel => return Pin::new(&mut this.inner).poll_read(cx, buf),
                Phase::Head => {
                    if !this.started && this.raw.is_empty() && !this.deadline.is_set() {
                        this.arm(this.settings.idle_timeout);
                    }
                    if this.handle_head() {
                        continue;
                    }
                }
                Phase::Length(_) | Phase::Chunked(_) => {
                    if !this.raw.is_empty() {
                        this.pass_body()?;
                        continue;
                    }
                }
            }
            // Need bytes from the client. Bytes already waiting are taken even when the
            // deadline has passed (hyper may not have asked while it wrote a long answer);
            // the deadline ends the connection only when the client has sent nothing.
            let mut chunk = [0u8; 16 * 1024];
            let mut read = ReadBuf::new(&mut chunk);
            if Pin::new(&mut this.inner).poll_read(cx, &mut read)?.is_pending() {
                if matches!(this.phase, Phase::Head) && this.raw.is_empty() && !this.started {
                    // Waiting for the next request may last long on a keep-alive
                    // connection: hold no buffer meanwhile, and after a while leave hyper.
                    this.raw = Vec::new();
                    this.out = Vec::new();
                    if this.heads > 0 && this.settings.idle_timeout > PARK_AFTER {
                        let park = this.park_deadline.get_or_insert_with(|| Box::pin(tokio::time::sleep(PARK_AFTER)));
                        if park.as_mut().poll(cx).is_ready() {
                            this.park_deadline = None;
                            this.parked = true;
                            return Poll::Ready(Ok(()));
                        }
                    }
                }
                if this.deadline.poll_expired(cx).is_ready() {
                    // Too slow (slowloris, a stalled body) or idle too long: the connection
                    // ends, and hyper with it.
                    this.phase = Phase::Done;
                    this.deadline = Deadline::default();
                    return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "client too slow or idle")));
                }
                return Poll::Pending;
            }
            let got = read.filled();
            if got.is_empty() {
                // The client closed: pass the end on (an unfinished head or body ends there).
                this.phase = Phase::Done;
                return Poll::Ready(Ok(()));
            }
            if matches!(this.phase, Phase::Head) && !this.started {
                this.started = true;
                this.arm(this.settings.header_timeout);
            }
            this.raw.extend_from_slice(got);
        }
    }
}

impl<S> GuardedIo<S> {
    /// Acts on the bytes of a head read so far; `false` when more bytes are needed.
    fn handle_head(&mut self) -> bool {
        if self.raw.is_empty() {
            return false;
        }
        // Only the very first bytes of a connection can be an HTTP/2 preface (h2c).
        if self.heads == 0 {
            let n = self.raw.len().min(HTTP2_PREFACE.len());
            if self.raw[..n] == HTTP2_PREFACE[..n] {
                if n < HTTP2_PREFACE.len() {
                    return false;
                }
                self.phase = Phase::Tunnel;
                // Untimed from now on: the timer goes too.
                self.deadline = Deadline::default();
                self.out = std::mem::take(&mut self.raw);
                return true;
            }
        }
        match head_end(&self.raw) {
            Some(len) if len > self.settings.max_header_bytes => self.refuse(431, "header_too_large"),
            Some(len) => {
                self.heads += 1;
                self.take_head(len);
            }
            None if self.raw.len() > self.settings.max_header_bytes => self.refuse(431, "header_too_large"),
            None if first_line_len(&self.raw) > self.settings.max_uri_bytes + 32 => self.refuse(414, "uri_too_long"),
            None => return false,
        }
        true
    }
}

/// Whether a normalized head (lower-case `name:` at line starts) has field `name`.
fn has_field(head: &[u8], name: &[u8]) -> bool {
    head.split(|&b| b == b'\n').skip(1).any(|line| {
        line.len() > name.len() && line[..name.len()].eq_ignore_ascii_case(name) && line[name.len()] == b':'
    })
}

fn first_line_len(raw: &[u8]) -> usize {
    raw.iter().position(|&b| b == b'\n').unwrap_or(raw.len())
}

impl<S: AsyncWrite + Unpin> AsyncWrite for GuardedIo<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, data)
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.parked {
            // hyper is letting go of an idle connection: it stays open, parked.
            return Pin::new(&mut this.inner).poll_flush(cx);
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_decisions_come_out_in_request_order() {
        let mut own = OwnDecisions::default();
        assert_eq!(own.pop_front(), None);
        own.push_back(Decision::Forward { close: false });
        own.push_back(Decision::Reject { status: 400, reason: "first" });
        own.push_back(Decision::Forward { close: true });
        assert_eq!(own.front(), Some(&Decision::Forward { close: false }));
        assert_eq!(own.pop_front(), Some(Decision::Forward { close: false }));
        own.push_back(Decision::Reject { status: 431, reason: "last" });
        assert_eq!(own.pop_front(), Some(Decision::Reject { status: 400, reason: "first" }));
        assert_eq!(own.pop_front(), Some(Decision::Forward { close: true }));
        assert_eq!(own.pop_front(), Some(Decision::Reject { status: 431, reason: "last" }));
        assert_eq!(own.front(), None);
    }

    fn settings() -> Arc<GuardSettings> {
        let second = Duration::from_secs(5);
        Arc::new(GuardSettings {
            mode: DesyncMitigation::Defensive,
            max_header_bytes: 8192,
            max_uri_bytes: 4096,
            max_body_bytes: 0,
            header_timeout: second,
            body_timeout: second,
            idle_timeout: second,
            classes: Default::default(),
        })
    }

    #[tokio::test]
    async fn decisions_made_while_hyper_serves_come_back_in_order() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut client, server) = tokio::io::duplex(4096);
        let mut io = GuardedIo::new(server, settings());
        let mut passed = [0u8; 1024];
        client.write_all(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        assert!(io.read(&mut passed).await.unwrap() > 0);
        let shared = io.share_decisions();
        // A head with two lengths, read while hyper has the connection.
        client
            .write_all(b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n")
            .await
            .unwrap();
        assert!(io.read(&mut passed).await.unwrap() > 0);
        assert_eq!(shared.lock().unwrap().len(), 2, "both decisions in hyper's queue");
        let own = io.own_decisions();
        assert_eq!(own.pop_front(), Some(Decision::Forward { close: false }));
        assert!(matches!(own.pop_front(), Some(Decision::Reject { status: 400, .. })));
        assert_eq!(own.pop_front(), None);
        assert!(shared.lock().unwrap().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn the_timer_is_lent_only_while_the_guard_times_nothing() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (mut client, server) = tokio::io::duplex(4096);
        let mut io = GuardedIo::new(server, settings());
        let mut passed = [0u8; 1024];
        // Waiting for a request: the idle deadline makes the connection's timer.
        client.write_all(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        assert!(io.wait_for_request().await);
        assert!(io.read(&mut passed).await.unwrap() > 0);
        // The head is whole and has no body: the guard times nothing, and lends its timer.
        let lent = io.lend_timer();
        assert!(lent.has_timer() && !lent.is_set());
        assert!(!io.deadline.has_timer());
        io.give_back_timer(lent);
        assert!(io.deadline.has_timer() && !io.deadline.is_set());
        // A body on its way is timed by the guard: what is lent is an empty deadline, and
        // given back, it does not take the place of the guard's.
        client.write_all(b"POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nab").await.unwrap();
        assert!(io.read(&mut passed).await.unwrap() > 0);
        assert!(io.deadline.is_set(), "the body timeout runs");
        let mut lent = io.lend_timer();
        assert!(!lent.has_timer());
        lent.set(Duration::from_secs(1));
        io.give_back_timer(lent);
        assert!(io.deadline.is_set(), "the guard's body deadline stays");
        // And it still ends a stalled body (after the bytes that came, if not read yet).
        let mut ended = None;
        for _ in 0..3 {
            match tokio::time::timeout(Duration::from_secs(10), io.read(&mut passed)).await {
                Ok(Ok(n)) if n > 0 => continue,
                other => {
                    ended = Some(other);
                    break;
                }
            }
        }
        assert!(matches!(ended, Some(Ok(Err(ref e))) if e.kind() == io::ErrorKind::TimedOut), "{ended:?}");
    }
}
