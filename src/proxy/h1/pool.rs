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

/// The idle connections of one target, most recently used last. Each worker thread keeps its
/// own: a connection is used again only on the worker that opened it, whose reactor drives
/// it, and no worker waits for another's lock.
#[derive(Debug)]
pub struct IdlePool {
    by_worker: Box<[Slot]>,
}

/// One worker's idle connections, on a cache line of its own.
#[derive(Debug, Default)]
#[repr(align(128))]
struct Slot(Mutex<Vec<Idle>>);

#[derive(Debug)]
struct Idle {
    connection: TargetConnection,
    since: Instant,
}

impl Default for IdlePool {
    fn default() -> Self {
        IdlePool { by_worker: (0..crate::shards::count()).map(|_| Slot::default()).collect() }
    }
}

impl IdlePool {
    /// The calling worker's connections.
    fn mine(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        let slot = &self.by_worker[crate::shards::current() % self.by_worker.len()];
        slot.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The most recently used idle connection of this worker that is still usable, if any.
    pub fn take(&self) -> Option<TargetConnection> {
        loop {
            let idle = self.mine().pop()?;
            if !idle.connection.is_stale() {
                return Some(idle.connection);
            }
        }
    }

    /// Keeps `connection` for a later request.
    pub fn put(&self, connection: TargetConnection) {
        let most = (MAX_IDLE / self.by_worker.len()).max(1);
        let mut idle = self.mine();
        if idle.len() >= most {
            idle.remove(0);
        }
        idle.push(Idle { connection, since: Instant::now() });
    }

    /// Closes the connections idle longer than [`IDLE_TIMEOUT`].
    pub fn expire(&self) {
        let now = Instant::now();
        let mut expired = 0;
        for slot in &self.by_worker {
            let gone: Vec<Idle> = {
                let mut idle = slot.0.lock().unwrap_or_else(|p| p.into_inner());
                let keep_from = idle.iter().position(|i| now.duration_since(i.since) < IDLE_TIMEOUT);
                let cut = keep_from.unwrap_or(idle.len());
                idle.drain(..cut).collect()
            };
            // Closed outside the lock.
            expired += gone.len();
        }
        if expired > 0 {
            tracing::debug!(expired, "closed idle target connections");
        }
    }
}
