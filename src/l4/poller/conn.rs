//! One connection of a listener's event loop: its two sockets, each way's bytes, and the
//! copying between them.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use super::{Attempts, CONNECT_TIMEOUT_MS};
use crate::guard::connection_limits::Permit;
use crate::l4::splice::{Carried, Resume};
use crate::listener::spread::Held;
use crate::metrics::{GaugeGuard, WorkerCounter};
use crate::target_group::{uptime_ms, OutstandingGuard, Reason, TargetState};

/// After this many bytes one way, a connection is a bulk transfer: it moves on at once, to
/// be spliced.
const BULK: u64 = 64 * 1024;

/// One client connection and its target connection.
pub(super) struct Conn {
    pub(super) client: std::net::TcpStream,
    pub(super) target: std::net::TcpStream,
    /// The tags of the two sockets' registrations (a new target socket gets a new tag, so an
    /// event of one it replaced is known).
    pub(super) tags: [u32; 2],
    /// Whether each socket's registration asks for writable events (asked only once bytes
    /// wait for it, or while connecting).
    pub(super) out: [bool; 2],
    /// Client → target.
    pub(super) up: Way,
    /// Target → client.
    pub(super) down: Way,
    pub(super) phase: Phase,
    /// When the connection was accepted, and when bytes last moved (`uptime_ms`).
    pub(super) started: u64,
    pub(super) last: u64,
    pub(super) idle: Duration,
    pub(super) bytes: WorkerCounter,
    pub(super) _permit: Permit,
    pub(super) _open: GaugeGuard,
    pub(super) _held: Held,
}

/// Which socket of a connection.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Side {
    Client = 0,
    Target = 1,
}

/// One direction of a connection.
#[derive(Default)]
pub(super) struct Way {
    /// Bytes read that the sink could not take yet: reading waits until they are written.
    pub(super) left: Vec<u8>,
    /// The source's end was reported (its FIN): a read that leaves room took the last bytes.
    pub(super) hup: bool,
    /// The source ended.
    pub(super) ended: bool,
    /// The end was passed on to the sink.
    pub(super) passed: bool,
    pub(super) moved: u64,
}

pub(super) enum Phase {
    /// Waiting for the target to take the connection.
    Connecting(Box<Attempts>),
    /// Connected: counted against the target, and closed when its draining ends.
    Open { closing: CancellationToken, _outstanding: OutstandingGuard },
}
/// What a step of copying one way left to do.
pub(super) enum Flow {
    /// Nothing until the next event.
    Waiting,
    /// The sink took what was left: read on.
    Resume,
    /// The source ended and all its bytes went: pass the end on.
    Ended,
    /// A bulk transfer: move the connection on.
    Bulk,
    Failed,
}
/// Why a connection's copying stopped.
pub(super) enum Stop {
    /// Both ways ended.
    Done,
    Failed,
    Bulk,
}

pub(super) fn other(side: Side) -> Side {
    match side {
        Side::Client => Side::Target,
        Side::Target => Side::Client,
    }
}

impl Conn {
    /// The target took the connection: counted against it from now.
    pub(super) fn connected(&mut self) {
        let Phase::Connecting(attempts) = &self.phase else { return };
        let Some(stats) = &attempts.stats else { return };
        self.phase = Phase::Open { closing: stats.closing().clone(), _outstanding: stats.start_request() };
        // Idle from now: the connect's wait was not the connection's.
        self.last = uptime_ms();
    }

    pub(super) fn socket(&self, side: Side) -> &std::net::TcpStream {
        match side {
            Side::Client => &self.client,
            Side::Target => &self.target,
        }
    }

    /// The way whose source is `side`, and the other.
    pub(super) fn ways(&mut self, source: Side) -> (&mut Way, &mut Way) {
        match source {
            Side::Client => (&mut self.up, &mut self.down),
            Side::Target => (&mut self.down, &mut self.up),
        }
    }

    /// Copies what `source` has to the other socket until it has no more, the other cannot
    /// take more, or it ends.
    pub(super) fn pump(&mut self, source: Side, chunk: &mut Vec<u8>, now: u64) -> Result<(), Stop> {
        let (from, to) = (self.socket(source).as_raw_fd(), self.socket(other(source)).as_raw_fd());
        let (way, _) = self.ways(source);
        let before = way.moved;
        let flow = pump(from, to, way, chunk);
        if way.moved != before {
            self.last = now;
        }
        self.step(source, flow)
    }

    /// Writes what waited for `sink`; once all of it went, its source reads on.
    pub(super) fn flush(&mut self, sink: Side, chunk: &mut Vec<u8>, now: u64) -> Result<(), Stop> {
        let to = self.socket(sink).as_raw_fd();
        let source = other(sink);
        let (way, _) = self.ways(source);
        match flush(to, way) {
            Flow::Resume => self.pump(source, chunk, now),
            flow => self.step(source, flow),
        }
    }

    pub(super) fn step(&mut self, source: Side, flow: Flow) -> Result<(), Stop> {
        match flow {
            Flow::Waiting | Flow::Resume => Ok(()),
            Flow::Bulk => Err(Stop::Bulk),
            Flow::Failed => Err(Stop::Failed),
            Flow::Ended => {
                let to = self.socket(other(source)).as_raw_fd();
                let (way, back) = self.ways(source);
                way.passed = true;
                if back.passed {
                    return Err(Stop::Done);
                }
                // The sink reads its end and may still answer.
                // SAFETY: a plain shutdown of a socket the connection owns.
                unsafe { libc::shutdown(to, libc::SHUT_WR) };
                Ok(())
            }
        }
    }

    /// Goes on as a task of its own, where the copy picks up where it was.
    pub(super) fn into_task(self, name: Arc<str>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        drop(runtime.spawn(async move {
            let Conn { client, target, up, down, phase, last, idle, bytes, _permit, _open, _held, .. } = self;
            let (Ok(client), Ok(target)) = (TcpStream::from_std(client), TcpStream::from_std(target)) else { return };
            let (closing, outstanding) = match phase {
                Phase::Open { closing, _outstanding } => (closing, _outstanding),
                Phase::Connecting(attempts) => {
                    let Some(stats) = attempts.stats else { return };
                    let waited = uptime_ms().saturating_sub(attempts.since);
                    let left = Duration::from_millis(CONNECT_TIMEOUT_MS.saturating_sub(waited));
                    let ready = tokio::time::timeout(left, target.ready(Interest::WRITABLE | Interest::ERROR)).await;
                    if !matches!(ready, Ok(Ok(r)) if !r.is_error() && !r.is_write_closed()) {
                        stats.set(TargetState::Unhealthy, Reason::ConnectionFailed);
                        return;
                    }
                    (stats.closing().clone(), stats.start_request())
                }
            };
            let resume = Resume { up: up.carried(), down: down.carried(), last_moved: Some(last) };
            crate::l4::tcp::relay(client, target, resume, idle, closing, bytes, &name).await;
            drop((outstanding, _permit, _open, _held));
        }));
    }
}

impl Way {
    pub(super) fn carried(self) -> Carried {
        Carried { left: self.left, ended: self.ended, passed: self.passed, moved: self.moved }
    }
}

/// Copies what `from` has to `to`, as [`Conn::pump`].
fn pump(from: RawFd, to: RawFd, way: &mut Way, chunk: &mut Vec<u8>) -> Flow {
    if !way.left.is_empty() || way.ended {
        return Flow::Waiting;
    }
    loop {
        chunk.clear();
        let n = match recv(from, chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Flow::Waiting,
            Err(_) => return Flow::Failed,
        };
        // A read that leaves room took all there was; after the end was reported, that was
        // the last of it: the end goes with these bytes, in one segment.
        let drained = n < chunk.capacity();
        let end = n == 0 || (drained && way.hup);
        way.moved += n as u64;
        if n > 0 {
            match send(to, chunk, end) {
                Ok(sent) if sent == n => {}
                Ok(sent) => way.left = chunk[sent..].to_vec(),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => way.left = chunk.clone(),
                Err(_) => return Flow::Failed,
            }
        }
        if end {
            way.ended = true;
            return if way.left.is_empty() { Flow::Ended } else { Flow::Waiting };
        }
        if !way.left.is_empty() || drained {
            return Flow::Waiting;
        }
        if way.moved >= BULK {
            return Flow::Bulk;
        }
    }
}

/// Writes what waited for `to`.
fn flush(to: RawFd, way: &mut Way) -> Flow {
    if way.left.is_empty() {
        return Flow::Waiting;
    }
    match send(to, &way.left, way.ended) {
        Ok(sent) => drop(way.left.drain(..sent)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
        Err(_) => return Flow::Failed,
    }
    match (way.left.is_empty(), way.ended) {
        (false, _) => Flow::Waiting,
        (true, true) => Flow::Ended,
        (true, false) => Flow::Resume,
    }
}

/// Reads into `chunk`'s spare room.
fn recv(from: RawFd, chunk: &mut Vec<u8>) -> io::Result<usize> {
    let room = chunk.spare_capacity_mut();
    // SAFETY: `room` is writable memory of the length given.
    let n = unsafe { libc::recv(from, room.as_mut_ptr().cast(), room.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `recv` initialised the first `n` bytes of the spare room.
    unsafe { chunk.set_len(n as usize) };
    Ok(n as usize)
}

/// Sends what `to` takes of `bytes`; with `more`, the end follows at once and goes in the same
/// segment.
fn send(to: RawFd, bytes: &[u8], more: bool) -> io::Result<usize> {
    let flags = libc::MSG_NOSIGNAL | if more { libc::MSG_MORE } else { 0 };
    // SAFETY: `bytes` is readable memory of the length given.
    let n = unsafe { libc::send(to, bytes.as_ptr().cast(), bytes.len(), flags) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}
