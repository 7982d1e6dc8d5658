//! Idle keep-alive connections to one target, ready for the next request.

use std::sync::Mutex;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use tokio::net::TcpStream;

use crate::proxy::connector::ConnectionGuard;

/// How long a connection may wait, unused, before it is closed (ELB keeps them 60 s too).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How many idle connections one target keeps; the oldest go first beyond that.
const MAX_IDLE: usize = 512;

/// A connection to a target, counted as open while it lives.
#[derive(Debug)]
pub struct TargetConnection {
    pub stream: TcpStream,
    _counted: ConnectionGuard,
}

impl TargetConnection {
    /// `stream`, counted in `counted`.
    pub fn new(stream: TcpStream, counted: ConnectionGuard) -> Self {
        TargetConnection { stream, _counted: counted }
    }

    /// Whether the target closed this idle connection or sent something unasked: either
    /// way it cannot carry a request.
    fn is_stale(&self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        match self.stream.poll_read_ready(&mut cx) {
            // Nothing to read: the usual case, known without a system call.
            Poll::Pending => false,
            Poll::Ready(Err(_)) => true,
            // Readiness may be left over from the last answer: only a read can tell.
            Poll::Ready(Ok(())) => {
                let mut probe = [0u8; 1];
                !matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
            }
        }
    }
}

/// The idle connections of one target, most recently used last. Each is used again only on
/// the worker thread that opened it, whose reactor drives it.
#[derive(Debug, Default)]
pub struct IdlePool {
    idle: Mutex<Vec<Idle>>,
}

#[derive(Debug)]
struct Idle {
    connection: TargetConnection,
    since: Instant,
    worker: usize,
}

impl IdlePool {
    /// The most recently used idle connection of this worker that is still usable, if any.
    pub fn take(&self) -> Option<TargetConnection> {
        let worker = crate::shards::current();
        loop {
            let idle = {
                let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
                let at = idle.iter().rposition(|i| i.worker == worker)?;
                idle.remove(at)
            };
            if !idle.connection.is_stale() {
                return Some(idle.connection);
            }
        }
    }

    /// Keeps `connection` for a later request.
    pub fn put(&self, connection: TargetConnection) {
        let worker = crate::shards::current();
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() >= MAX_IDLE {
            idle.remove(0);
        }
        idle.push(Idle { connection, since: Instant::now(), worker });
    }

    /// Closes the connections idle longer than [`IDLE_TIMEOUT`].
    pub fn expire(&self) {
        let now = Instant::now();
        let expired = {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            let keep_from = idle.iter().position(|i| now.duration_since(i.since) < IDLE_TIMEOUT);
            let cut = keep_from.unwrap_or(idle.len());
            idle.drain(..cut).count()
        };
        if expired > 0 {
            tracing::debug!(expired, "closed idle target connections");
        }
    }
}
