//! Copying between two streams of any kind (TLS on either side) both ways, with half-close
//! and an idle timeout; the plain TCP case uses `splice` instead.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::target_group::uptime_ms;

/// Copies until both directions close, or nothing moves for `idle`; returns the bytes moved.
pub async fn copy_streams<A, B>(a: A, b: B, idle: Duration) -> io::Result<u64>
where
    A: AsyncRead + AsyncWrite + Unpin,
    B: AsyncRead + AsyncWrite + Unpin,
{
    let last = AtomicU64::new(uptime_ms());
    let moved = AtomicU64::new(0);
    let (mut a_read, mut a_write) = tokio::io::split(a);
    let (mut b_read, mut b_write) = tokio::io::split(b);
    let both = async {
        tokio::try_join!(
            one_way(&mut a_read, &mut b_write, &last, &moved),
            one_way(&mut b_read, &mut a_write, &last, &moved)
        )?;
        Ok::<_, io::Error>(())
    };
    let watchdog = async {
        loop {
            let quiet = Duration::from_millis(uptime_ms().saturating_sub(last.load(Ordering::Relaxed)));
            if quiet >= idle {
                return;
            }
            tokio::time::sleep(idle - quiet).await;
        }
    };
    tokio::select! {
        end = both => end?,
        _ = watchdog => {}
    }
    Ok(moved.load(Ordering::Relaxed))
}

async fn one_way<R, W>(from: &mut R, to: &mut W, last: &AtomicU64, moved: &AtomicU64) -> io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = from.read(&mut buf).await?;
        if n == 0 {
            // Pass the half-close on: the other side may still answer.
            return to.shutdown().await;
        }
        last.store(uptime_ms(), Ordering::Relaxed);
        moved.fetch_add(n as u64, Ordering::Relaxed);
        to.write_all(&buf[..n]).await?;
        to.flush().await?;
    }
}
