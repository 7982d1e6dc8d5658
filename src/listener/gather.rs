//! Writes to an HTTP/2 client, gathered for one turn of the worker. hyper's HTTP/2 server
//! writes out whatever frames are ready each time its connection task runs, and that task
//! runs as soon as one stream has answered: over TLS, every answer was a record of its own and
//! a system call. Held back until the worker has run the other tasks it had ready, the answers
//! finished meanwhile go out together.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The most held back: more goes out at once.
const GATHER_LIMIT: usize = 64 * 1024;

/// Room taken for a batch at its first write: a few answers' worth, so that gathering them
/// does not grow the buffer step by step.
const BATCH_ROOM: usize = 4 * 1024;

/// A client stream whose writes wait for a flush, and whose flush waits for one turn of the
/// worker's other ready tasks.
pub struct Gathered<S> {
    inner: S,
    /// Written, not yet passed on; `sent` bytes of it have been.
    pending: Vec<u8>,
    sent: usize,
    /// The current flush has let the other ready tasks run once.
    yielded: bool,
}

impl<S> Gathered<S> {
    /// Gathers the writes to `inner`.
    pub fn new(inner: S) -> Self {
        Gathered { inner, pending: Vec::new(), sent: 0, yielded: false }
    }
}

impl<S: AsyncWrite + Unpin> Gathered<S> {
    /// Passes on everything held back.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.pending.len() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        // An idle connection holds no buffer.
        self.pending = Vec::new();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }

    /// Makes room for `len` more bytes; `Ready(false)`: they are too many to hold back.
    fn poll_room(&mut self, cx: &mut Context<'_>, len: usize) -> Poll<io::Result<bool>> {
        if self.pending.len() + len > GATHER_LIMIT {
            ready!(self.poll_drain(cx))?;
        }
        if len > GATHER_LIMIT {
            return Poll::Ready(Ok(false));
        }
        if self.pending.capacity() == 0 {
            self.pending.reserve(len.max(BATCH_ROOM));
        }
        Poll::Ready(Ok(true))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Gathered<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if !ready!(this.poll_room(cx, data.len()))? {
            return Pin::new(&mut this.inner).poll_write(cx, data);
        }
        this.pending.extend_from_slice(data);
        Poll::Ready(Ok(data.len()))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let len = bufs.iter().map(|b| b.len()).sum();
        if !ready!(this.poll_room(cx, len))? {
            return Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        }
        for b in bufs {
            this.pending.extend_from_slice(b);
        }
        Poll::Ready(Ok(len))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.pending.len() > this.sent && !this.yielded {
            // Woken at once, the task runs again after the others the worker has ready.
            this.yielded = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        ready!(this.poll_drain(cx))?;
        this.yielded = false;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for Gathered<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let (before, room) = (buf.filled().len(), buf.remaining() > 0);
        let read = ready!(Pin::new(&mut this.inner).poll_read(cx, buf));
        let ended = read.is_err() || (room && buf.filled().len() == before);
        if ended && this.sent < this.pending.len() {
            // The client's end (or a failed read): h2 closes without another flush, so what
            // is held goes now, as far as the socket takes it.
            let _ = this.poll_drain(cx);
            let _ = Pin::new(&mut this.inner).poll_flush(cx);
        }
        Poll::Ready(read)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    use super::*;

    /// A gathered stream and the client's end of it.
    fn pair() -> (Gathered<DuplexStream>, DuplexStream) {
        let (ours, peer) = tokio::io::duplex(4 * GATHER_LIMIT);
        (Gathered::new(ours), peer)
    }

    /// Whether the peer has bytes to read right now.
    async fn readable_now(peer: &mut DuplexStream) -> Option<Vec<u8>> {
        let mut buf = vec![0u8; 2 * GATHER_LIMIT];
        match tokio::time::timeout(Duration::from_millis(50), peer.read(&mut buf)).await {
            Ok(Ok(n)) => Some(buf[..n].to_vec()),
            _ => None,
        }
    }

    #[tokio::test]
    async fn writes_wait_for_the_flush_and_then_go_out_together() {
        let (mut gathered, mut peer) = pair();
        gathered.write_all(b"HEADERS ").await.unwrap();
        gathered.write_all(b"DATA").await.unwrap();
        assert_eq!(readable_now(&mut peer).await, None, "nothing goes out before the flush");
        gathered.flush().await.unwrap();
        assert_eq!(readable_now(&mut peer).await.as_deref(), Some(&b"HEADERS DATA"[..]));
        assert_eq!(gathered.pending.capacity(), 0, "an idle connection holds no buffer");
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_flush_lets_the_tasks_already_ready_run_first() {
        let (mut gathered, mut peer) = pair();
        let ran = Arc::new(AtomicBool::new(false));
        let other = tokio::spawn({
            let ran = Arc::clone(&ran);
            async move { ran.store(true, Ordering::SeqCst) }
        });
        gathered.write_all(b"answer").await.unwrap();
        gathered.flush().await.unwrap();
        assert!(ran.load(Ordering::SeqCst), "the ready task ran before the bytes went out");
        other.await.unwrap();
        assert_eq!(readable_now(&mut peer).await.as_deref(), Some(&b"answer"[..]));
    }

    #[tokio::test]
    async fn more_than_the_limit_goes_out_without_a_flush() {
        let (mut gathered, mut peer) = pair();
        gathered.write_all(b"first").await.unwrap();
        let big = vec![7u8; GATHER_LIMIT + 1];
        gathered.write_all(&big).await.unwrap();
        let mut seen = Vec::new();
        while let Some(bytes) = readable_now(&mut peer).await {
            seen.extend_from_slice(&bytes);
        }
        assert_eq!(seen.len(), 5 + big.len(), "what was held went first, then the large write");
        assert_eq!(&seen[..5], b"first");
        assert!(seen[5..].iter().all(|&b| b == 7));
    }

    #[tokio::test]
    async fn the_clients_end_sends_what_was_held() {
        let (mut gathered, mut peer) = pair();
        gathered.write_all(b"last answer").await.unwrap();
        peer.shutdown().await.unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(gathered.read(&mut buf).await.unwrap(), 0, "the client's end");
        assert_eq!(readable_now(&mut peer).await.as_deref(), Some(&b"last answer"[..]));
    }

    #[tokio::test]
    async fn shutdown_sends_what_was_held_then_the_end() {
        let (mut gathered, mut peer) = pair();
        gathered.write_all(b"GOAWAY").await.unwrap();
        gathered.shutdown().await.unwrap();
        let mut all = Vec::new();
        peer.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"GOAWAY");
    }
}
