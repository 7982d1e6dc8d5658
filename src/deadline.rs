//! A deadline that a connection moves on every request (the next head's, its body's, the
//! target's answer, the idle wait), at the cost of a clock read: the runtime's timer is only
//! touched when the deadline comes earlier than the timer is set for, or when the timer fires.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// One connection's deadline, kept on one timer for the connection's life.
///
/// Setting a later deadline leaves the timer where it is; when the timer fires before the
/// deadline, it is set again for the deadline. A connection that moves its deadline forward
/// on each of many requests so re-arms its timer about once per timeout, instead of twice per
/// request (each taking the timer wheel's lock).
#[derive(Default)]
pub struct Deadline {
    due: Option<Instant>,
    timer: Option<Pin<Box<Sleep>>>,
}

impl Deadline {
    /// Expires `after` from now.
    pub fn set(&mut self, after: Duration) {
        self.set_at(Instant::now() + after);
    }

    /// Expires at `due`.
    pub fn set_at(&mut self, due: Instant) {
        self.due = Some(due);
        match &mut self.timer {
            Some(timer) if timer.deadline() > due => timer.as_mut().reset(due),
            Some(_) => {}
            None => self.timer = Some(Box::pin(tokio::time::sleep_until(due))),
        }
    }

    /// Never expires, until set again. The timer stays, for the next deadline.
    pub fn clear(&mut self) {
        self.due = None;
    }

    /// Whether a deadline is set.
    pub fn is_set(&self) -> bool {
        self.due.is_some()
    }

    /// Whether the timer is kept (a connection holds it while it lives).
    pub fn has_timer(&self) -> bool {
        self.timer.is_some()
    }

    /// Ready once the deadline has passed. While none is set: pending, and no wake-up comes
    /// (the task that sets one polls again, as every user here does).
    pub fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let (Some(due), Some(timer)) = (self.due, self.timer.as_mut()) else { return Poll::Pending };
        loop {
            if timer.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            // A timer fires only once its instant has passed.
            if timer.deadline() >= due {
                return Poll::Ready(());
            }
            timer.as_mut().reset(due);
        }
    }

    /// Waits until the deadline passes.
    pub fn expired(&mut self) -> impl Future<Output = ()> + '_ {
        std::future::poll_fn(|cx| self.poll_expired(cx))
    }

    /// What `work` comes to, or `None` if the deadline passes first; the deadline is cleared
    /// either way.
    pub async fn within<T>(&mut self, work: impl Future<Output = T>) -> Option<T> {
        let outcome = tokio::select! {
            biased;
            done = work => Some(done),
            () = self.expired() => None,
        };
        self.clear();
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `deadline` has expired, polling it once.
    fn expired_now(deadline: &mut Deadline) -> bool {
        let waker = std::task::Waker::noop();
        deadline.poll_expired(&mut Context::from_waker(waker)).is_ready()
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_moved_later_expires_at_the_later_time_not_the_first() {
        let mut deadline = Deadline::default();
        deadline.set(Duration::from_secs(10));
        tokio::time::advance(Duration::from_secs(6)).await;
        // Moved on before the first instant: the timer stays set for the first one.
        deadline.set(Duration::from_secs(10));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(!expired_now(&mut deadline), "expired at the first deadline, which had been moved");
        tokio::time::advance(Duration::from_secs(4)).await;
        assert!(!expired_now(&mut deadline));
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(expired_now(&mut deadline), "not expired after the moved deadline");
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_moved_earlier_expires_at_the_earlier_time() {
        let mut deadline = Deadline::default();
        deadline.set(Duration::from_secs(60));
        assert!(!expired_now(&mut deadline));
        deadline.set(Duration::from_secs(2));
        let started = Instant::now();
        deadline.expired().await;
        assert_eq!(started.elapsed().as_secs(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn work_within_a_deadline_is_cut_off_when_it_passes_and_the_deadline_cleared() {
        let mut deadline = Deadline::default();
        deadline.set(Duration::from_secs(1));
        let quick = deadline.within(tokio::time::sleep(Duration::from_millis(500))).await;
        assert_eq!(quick, Some(()));
        assert!(!deadline.is_set());
        deadline.set(Duration::from_secs(1));
        let started = Instant::now();
        let slow = deadline.within(tokio::time::sleep(Duration::from_secs(30))).await;
        assert_eq!(slow, None);
        assert_eq!(started.elapsed().as_secs(), 1);
        assert!(!deadline.is_set() && deadline.has_timer());
    }

    #[tokio::test(start_paused = true)]
    async fn a_cleared_deadline_never_expires_and_keeps_its_timer() {
        let mut deadline = Deadline::default();
        deadline.set(Duration::from_secs(1));
        deadline.clear();
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(!expired_now(&mut deadline));
        assert!(deadline.has_timer() && !deadline.is_set());
        deadline.set(Duration::from_secs(3));
        let started = Instant::now();
        deadline.expired().await;
        assert_eq!(started.elapsed().as_secs(), 3);
    }
}
