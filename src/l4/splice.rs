//! Copying a TCP connection both ways. On Linux the bytes go socket → pipe → socket with
//! `splice(2)` and never enter user space; elsewhere a plain copy. Half-closes pass through,
//! and a connection idle longer than the timeout is closed.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::TcpStream;

use crate::target_group::uptime_ms;

/// How a both-ways copy ended.
#[derive(Debug, PartialEq, Eq)]
pub enum CopyEnd {
    /// Both sides closed: bytes client → target and target → client.
    Closed(u64, u64),
    /// Nothing moved for the idle timeout.
    Idle,
}

/// Copies between `client` and `target` until both directions close or nothing moves for
/// `idle`.
pub async fn copy_both_ways(client: &TcpStream, target: &TcpStream, idle: Duration) -> io::Result<CopyEnd> {
    let last = AtomicU64::new(uptime_ms());
    let both = async {
        let (up, down) = tokio::try_join!(one_way(client, target, &last), one_way(target, client, &last))?;
        Ok::<_, io::Error>(CopyEnd::Closed(up, down))
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
        end = both => end,
        _ = watchdog => Ok(CopyEnd::Idle),
    }
}

/// Closes the write half of `stream`: the peer reads end-of-stream, and may still answer.
fn shutdown_write(stream: &TcpStream) {
    // The peer may already be gone; nothing more to do then.
    let _ = socket2::SockRef::from(stream).shutdown(std::net::Shutdown::Write);
}

#[cfg(target_os = "linux")]
async fn one_way(from: &TcpStream, to: &TcpStream, last: &AtomicU64) -> io::Result<u64> {
    use std::os::fd::AsRawFd;
    use tokio::io::Interest;

    let pipe = Pipe::new()?;
    let mut total = 0u64;
    loop {
        from.readable().await?;
        let moved = match from.try_io(Interest::READABLE, || splice(from.as_raw_fd(), pipe.write, PIPE_CHUNK)) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        if moved == 0 {
            shutdown_write(to);
            return Ok(total);
        }
        last.store(uptime_ms(), Ordering::Relaxed);
        let mut left = moved;
        while left > 0 {
            to.writable().await?;
            match to.try_io(Interest::WRITABLE, || splice(pipe.read, to.as_raw_fd(), left)) {
                Ok(n) => left -= n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
        total += moved as u64;
    }
}

#[cfg(not(target_os = "linux"))]
async fn one_way(from: &TcpStream, to: &TcpStream, last: &AtomicU64) -> io::Result<u64> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0u64;
    loop {
        from.readable().await?;
        let n = match from.try_read(&mut buf) {
            Ok(0) => {
                shutdown_write(to);
                return Ok(total);
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        last.store(uptime_ms(), Ordering::Relaxed);
        let mut sent = 0;
        while sent < n {
            to.writable().await?;
            match to.try_write(&buf[sent..n]) {
                Ok(k) => sent += k,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
        total += n as u64;
    }
}

/// Bytes moved per splice call: a pipe's default capacity.
#[cfg(target_os = "linux")]
const PIPE_CHUNK: usize = 64 * 1024;

#[cfg(target_os = "linux")]
struct Pipe {
    read: i32,
    write: i32,
}

#[cfg(target_os = "linux")]
impl Pipe {
    fn new() -> io::Result<Pipe> {
        let mut fds = [0i32; 2];
        // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
        let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Pipe { read: fds[0], write: fds[1] })
    }
}

#[cfg(target_os = "linux")]
impl Drop for Pipe {
    fn drop(&mut self) {
        // SAFETY: both descriptors were opened by `Pipe::new` and are closed only here.
        unsafe {
            libc::close(self.read);
            libc::close(self.write);
        }
    }
}

#[cfg(target_os = "linux")]
fn splice(from: i32, to: i32, len: usize) -> io::Result<usize> {
    // SAFETY: plain descriptors and null offsets, as splice(2) allows for sockets and pipes.
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    async fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        let (b, _) = l.accept().await.unwrap();
        (a, b)
    }

    #[tokio::test]
    async fn bytes_and_half_closes_pass_both_ways() {
        let (mut client, client_side) = pair().await;
        let (target_side, mut target) = pair().await;
        let copier =
            tokio::spawn(async move { copy_both_ways(&client_side, &target_side, Duration::from_secs(10)).await });
        let payload = vec![7u8; 1 << 20];
        client.write_all(&payload).await.unwrap();
        client.shutdown().await.unwrap();
        let mut got = Vec::new();
        target.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, payload, "the target read everything, then end-of-stream");
        // The other direction still works after the client's half-close.
        target.write_all(b"answer").await.unwrap();
        target.shutdown().await.unwrap();
        let mut back = Vec::new();
        client.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"answer");
        assert_eq!(copier.await.unwrap().unwrap(), CopyEnd::Closed(1 << 20, 6));
    }

    #[tokio::test]
    async fn an_idle_connection_is_closed() {
        let (_client, client_side) = pair().await;
        let (target_side, _target) = pair().await;
        let end = copy_both_ways(&client_side, &target_side, Duration::from_millis(200)).await.unwrap();
        assert_eq!(end, CopyEnd::Idle);
    }
}
