//! Connections one worker accepted for another worker's loop of the same listener.

use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::listener::spread::Held;

/// Connections accepted on one worker for the same listener's loop on another (`spread`),
/// by worker.
pub struct Inboxes(Box<[Mutex<Option<Inbox>>]>);

/// A running loop's inbox: the connections waiting for it, and the bell that wakes it (an
/// eventfd in its set).
pub(super) struct Inbox {
    pub(super) waiting: Vec<Accepted>,
    pub(super) bell: RawFd,
}

/// A connection just accepted, counted against the worker that is to serve it.
pub(super) type Accepted = (std::net::TcpStream, SocketAddr, Held);

impl Inboxes {
    /// An inbox for each of `workers` workers, none open yet.
    pub fn new(workers: usize) -> Self {
        Inboxes((0..workers.max(1)).map(|_| Mutex::new(None)).collect())
    }

    pub(super) fn slot(&self, worker: usize) -> Option<MutexGuard<'_, Option<Inbox>>> {
        self.0.get(worker).map(|slot| slot.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Leaves a connection for `worker`'s loop; it comes back when that loop is not running.
    pub(super) fn post(&self, worker: usize, accepted: Accepted) -> Option<Accepted> {
        let Some(mut slot) = self.slot(worker) else { return Some(accepted) };
        let Some(inbox) = slot.as_mut() else { return Some(accepted) };
        inbox.waiting.push(accepted);
        if inbox.waiting.len() == 1 {
            // SAFETY: the bell is open while the inbox is (it closes after the inbox does,
            // under this lock); an eventfd takes an 8-byte count.
            unsafe { libc::write(inbox.bell, (&1u64 as *const u64).cast(), 8) };
        }
        None
    }

    /// What waits for `worker`'s loop; with `close`, the inbox closes too.
    pub(super) fn take(&self, worker: usize, close: bool) -> Vec<Accepted> {
        let Some(mut slot) = self.slot(worker) else { return Vec::new() };
        let waiting = slot.as_mut().map(|inbox| std::mem::take(&mut inbox.waiting)).unwrap_or_default();
        if close {
            *slot = None;
        }
        waiting
    }
}
