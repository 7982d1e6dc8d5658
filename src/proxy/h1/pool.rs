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

/// The idle connections of one target, most recently used last.
#[derive(Debug, Default)]
pub struct IdlePool {
    idle: Mutex<Vec<(TargetConnection, Instant)>>,
}

impl IdlePool {
    /// The most recently used idle connection that is still usable, if any.
    pub fn take(&self) -> Option<TargetConnection> {
        loop {
            let (connection, _) = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop()?;
            if !connection.is_stale() {
                return Some(connection);
            }
        }
    }

    /// Keeps `connection` for a later request.
    pub fn put(&self, connection: TargetConnection) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() >= MAX_IDLE {
            idle.remove(0);
        }
        idle.push((connection, Instant::now()));
    }

    /// Closes the connections idle longer than [`IDLE_TIMEOUT`].
    pub fn expire(&self) {
        let now = Instant::now();
        let expired = {
            let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
            let keep_from = idle.iter().position(|(_, since)| now.duration_since(*since) < IDLE_TIMEOUT);
            let cut = keep_from.unwrap_or(idle.len());
            idle.drain(..cut).count()
        };
        if expired > 0 {
            tracing::debug!(expired, "closed idle target connections");
        }
    }
}
