//! Spreading client connections over the worker threads. The kernel hands each new
//! connection to one worker's accept socket by a hash of its addresses, blind to how busy
//! each worker is: ten long-lived connections often land seven and three. A worker that
//! serves more connections than another, by more than a sixteenth, passes its new ones on to
//! the one with the fewest, as HAProxy's accept queues do.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::task::{Context, Poll};

use tokio::runtime::Handle;

use crate::shards;

/// The open client connections of each worker, each count on a cache line of its own.
static OPEN: OnceLock<Box<[Count]>> = OnceLock::new();

#[derive(Default)]
#[repr(align(128))]
struct Count(AtomicUsize);

fn open() -> &'static [Count] {
    OPEN.get_or_init(|| (0..shards::count()).map(|_| Count::default()).collect())
}

/// A client connection, counted against the worker serving it while it lives.
pub struct Held(usize);

impl Drop for Held {
    fn drop(&mut self) {
        open()[self.0].0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counts one more connection on the calling worker while the result lives: a WebSocket
/// tunnel, which outlives the task of the HTTP connection it came from.
pub fn hold_here() -> Held {
    let open = open();
    let here = shards::current() % open.len();
    open[here].0.fetch_add(1, Ordering::Relaxed);
    Held(here)
}

/// Where a connection the calling worker accepted is served: here (`None`), or on the
/// worker whose runtime is returned.
pub fn place() -> (Held, Option<&'static Handle>) {
    let (held, elsewhere) = place_on();
    (held, elsewhere.and_then(shards::handle))
}

/// Where a connection the calling worker accepted is served: here (`None`), or on the
/// worker of the index returned.
pub fn place_on() -> (Held, Option<usize>) {
    let open = open();
    let here = shards::current() % open.len();
    let mine = open[here].0.load(Ordering::Relaxed);
    let (fewest_at, fewest) = open
        .iter()
        .enumerate()
        .map(|(i, c)| (i, c.0.load(Ordering::Relaxed)))
        .min_by_key(|&(_, n)| n)
        .unwrap_or((here, mine));
    let elsewhere = (mine > fewest + mine / 16 && shards::handle(fewest_at).is_some()).then_some(fewest_at);
    let worker = elsewhere.unwrap_or(here);
    open[worker].0.fetch_add(1, Ordering::Relaxed);
    (Held(worker), elsewhere)
}

/// A connection's serving, counted against its worker until it ends.
pub struct Counted<F> {
    serving: F,
    _held: Held,
}

impl<F: Future<Output = ()>> Counted<F> {
    /// `serving`, counted by `held`.
    pub fn new(held: Held, serving: F) -> Self {
        Counted { serving, _held: held }
    }
}

impl<F: Future<Output = ()>> Future for Counted<F> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // SAFETY: `serving` is never moved out of a pinned `Counted`, and nothing else of it
        // is pinned.
        unsafe { self.map_unchecked_mut(|c| &mut c.serving) }.poll(cx)
    }
}

/// How many client connections each worker serves now, by worker.
pub fn open_by_worker() -> Vec<usize> {
    open().iter().map(|c| c.0.load(Ordering::Relaxed)).collect()
}
