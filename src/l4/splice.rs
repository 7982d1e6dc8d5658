//! Copying a TCP connection both ways. The first bytes of each direction go through a small
//! buffer; once a direction proves to be a bulk transfer, on Linux its bytes go socket → pipe
//! → socket with `splice(2)` and never enter user space (a pipe costs two descriptors and
//! kernel buffers: short connections are better off without). Half-closes pass through, and
//! a connection idle longer than the timeout is closed.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::Interest;
use tokio::net::TcpStream;

use crate::deadline::Deadline;
use crate::target_group::uptime_ms;

/// How a both-ways copy ended.
#[derive(Debug, PartialEq, Eq)]
pub enum CopyEnd {
    /// Both sides closed: bytes client → target and target → client.
    Closed(u64, u64),
    /// Nothing moved for the idle timeout.
    Idle,
}

/// Where a copy picks up: a connection whose copy began elsewhere (a worker's poller) carries
/// on from there. The default starts afresh.
#[derive(Default)]
pub struct Resume {
    /// Client → target.
    pub up: Carried,
    /// Target → client.
    pub down: Carried,
    /// When bytes last moved (`uptime_ms`); now when `None`.
    pub last_moved: Option<u64>,
}

/// One direction of a copy so far.
#[derive(Default)]
pub struct Carried {
    /// Bytes read and not yet written on.
    pub left: Vec<u8>,
    /// The source has ended: once `left` is written, so does the direction.
    pub ended: bool,
    /// The end was passed on: the direction is done.
    pub passed: bool,
    /// Bytes moved so far.
    pub moved: u64,
}

/// Copies between `client` and `target` until both directions close or nothing moves for
/// `idle`, timed on the connection's `deadline`.
pub async fn copy_both_ways(
    client: TcpStream,
    target: TcpStream,
    resume: Resume,
    idle: Duration,
    deadline: &mut Deadline,
) -> io::Result<CopyEnd> {
    let last = AtomicU64::new(resume.last_moved.unwrap_or_else(uptime_ms));
    let ended = AtomicU64::new(u64::from(resume.up.passed) + u64::from(resume.down.passed));
    // Each direction borrows both streams (one waits to read one, the other to write it):
    // nothing is allocated to share them, and both close when this returns.
    let both = async {
        let (up, down) = tokio::try_join!(
            one_way(&client, &target, &last, &ended, resume.up),
            one_way(&target, &client, &last, &ended, resume.down)
        )?;
        Ok::<_, io::Error>(CopyEnd::Closed(up, down))
    };
    let watchdog = async {
        loop {
            let quiet = Duration::from_millis(uptime_ms().saturating_sub(last.load(Ordering::Relaxed)));
            if quiet >= idle {
                return;
            }
            deadline.set(idle - quiet);
            deadline.expired().await;
        }
    };
    tokio::select! {
        end = both => end,
        _ = watchdog => Ok(CopyEnd::Idle),
    }
}

/// Bytes read per buffered copy.
const CHUNK: usize = 16 * 1024;

thread_local! {
    /// The worker thread's buffer for short copies, borrowed only between two awaits: no copy
    /// allocates or clears a buffer of its own.
    static CHUNK_BUFFER: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(Vec::with_capacity(CHUNK));
}

/// After this many bytes, a direction is a bulk transfer: spliced from then on.
#[cfg(target_os = "linux")]
const SPLICE_AFTER: u64 = 64 * 1024;

/// Copies `from` to `to` until `from` ends, then half-closes `to`; returns the bytes moved.
async fn one_way(
    from: &TcpStream,
    to: &TcpStream,
    last: &AtomicU64,
    ended: &AtomicU64,
    carried: Carried,
) -> io::Result<u64> {
    let mut total = carried.moved;
    if carried.passed {
        return Ok(total);
    }
    if !carried.left.is_empty() {
        write_all(to, &carried.left).await?;
    }
    if carried.ended {
        pass_end(to, ended);
        return Ok(total);
    }
    drop(carried);
    loop {
        #[cfg(target_os = "linux")]
        if total >= SPLICE_AFTER {
            // Boxed: a short connection's copy need not carry its room.
            return Box::pin(splice_rest(from, to, last, ended, total)).await;
        }
        // With errors, so that a reset is not taken for an end (`ending` below).
        let ready = from.ready(Interest::READABLE | Interest::ERROR).await?;
        // Read into the worker's buffer and passed straight on: an idle connection holds no
        // buffer, and only bytes the peer cannot take yet are copied out, to wait.
        let step = CHUNK_BUFFER.with_borrow_mut(|chunk| {
            chunk.clear();
            let end = read_some(from, chunk, ready.is_read_closed() && !ready.is_error());
            if chunk.is_empty() {
                return Step { read: 0, left: Vec::new(), end };
            }
            // Bytes followed by the end go out as one segment with it (the end follows at
            // once, below): one packet, and one wake-up of the peer, fewer.
            let sent = match send(to, chunk, matches!(end, Some(End::Closed))) {
                Ok(sent) => sent,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
                Err(e) => return Step { read: chunk.len(), left: Vec::new(), end: Some(End::Failed(e)) },
            };
            Step { read: chunk.len(), left: chunk[sent..].to_vec(), end }
        });
        total += step.read as u64;
        if step.read > 0 {
            last.store(uptime_ms(), Ordering::Relaxed);
        }
        if !step.left.is_empty() {
            write_all(to, &step.left).await?;
        }
        match step.end {
            None => {}
            Some(End::Closed) => {
                pass_end(to, ended);
                return Ok(total);
            }
            Some(End::Failed(e)) => return Err(e),
        }
    }
}

/// What one short copy did: bytes read, those the peer could not take yet, and how `from`
/// ended, if it did.
struct Step {
    read: usize,
    left: Vec<u8>,
    end: Option<End>,
}

/// How a direction ended.
enum End {
    /// The peer half-closed or closed: end-of-stream.
    Closed,
    /// A read or send failed.
    Failed(io::Error),
}

/// Reads what `from` has into `chunk`, up to its capacity: until it is drained, ends or
/// fails. `ending` says the peer's end (its FIN) had come before the read.
///
/// A read that leaves room in `chunk` took all the socket held: another would only find it
/// empty, or at its end, a system call for nothing (one in every short connection's request,
/// one in its answer). So `from` is marked not ready without it, as bytes that come later
/// bring their own readiness event; and when the end had come, the bytes were its last, so
/// the end goes with them (in one segment, by `send`'s `more`).
fn read_some(from: &TcpStream, chunk: &mut Vec<u8>, ending: bool) -> Option<End> {
    while chunk.len() < chunk.capacity() {
        match from.try_read_buf(chunk) {
            Ok(0) => return Some(End::Closed),
            Ok(_) if chunk.len() < chunk.capacity() => {
                if ending {
                    return Some(End::Closed);
                }
                mark_drained(from);
                return None;
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
            Err(e) => return Some(End::Failed(e)),
        }
    }
    None
}

/// What `client` has sent and was not read yet, read now (nothing when it has sent nothing
/// yet). The copy that follows starts after these bytes; an end or a failure met here is met
/// by it again.
///
/// Read straight from the socket, not through the runtime: a connection just accepted may
/// not have had its first readiness event yet, and its bytes are wanted now (they tell that
/// ballast sends first).
pub fn take_waiting(client: &TcpStream) -> Vec<u8> {
    CHUNK_BUFFER.with_borrow_mut(|chunk| {
        chunk.clear();
        let Ok(n) = socket2::SockRef::from(client).recv(chunk.spare_capacity_mut()) else {
            return Vec::new();
        };
        // SAFETY: `recv` initialised the first `n` bytes of the spare capacity.
        unsafe { chunk.set_len(n) };
        if n > 0 && n < chunk.capacity() {
            mark_drained(client);
        }
        chunk.to_vec()
    })
}

/// Tells the runtime that `tcp` has nothing left to read, as a read that would block does,
/// without making that read. Bytes that come later set it ready again. (A readiness event
/// still to come for bytes already read finds the socket empty, and the kernel drops it.)
fn mark_drained(tcp: &TcpStream) {
    let _ = tcp.try_io(Interest::READABLE, || Err::<(), _>(io::ErrorKind::WouldBlock.into()));
}

/// Sends as much of `bytes` on `to` as it takes now; with `more`, the bytes wait in the
/// socket for what is sent next (`MSG_MORE`), the end that follows at once.
#[cfg(target_os = "linux")]
fn send(to: &TcpStream, bytes: &[u8], more: bool) -> io::Result<usize> {
    let flags = libc::MSG_NOSIGNAL | if more { libc::MSG_MORE } else { 0 };
    to.try_io(Interest::WRITABLE, || socket2::SockRef::from(to).send_with_flags(bytes, flags))
}

#[cfg(not(target_os = "linux"))]
fn send(to: &TcpStream, bytes: &[u8], _more: bool) -> io::Result<usize> {
    to.try_write(bytes)
}

/// Writes all of `bytes` to `to`, waiting whenever the peer cannot take more yet.
async fn write_all(to: &TcpStream, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        to.writable().await?;
        match to.try_write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Passes the end of one direction on: the peer reads end-of-stream (a half-close) and may
/// still answer. When the other direction has ended already, both sockets close at once: no
/// half-close to send.
fn pass_end(to: &TcpStream, ended: &AtomicU64) {
    if ended.fetch_add(1, Ordering::Relaxed) == 0 {
        // The peer may be gone already: nothing to pass the end on to.
        let _ = socket2::SockRef::from(to).shutdown(std::net::Shutdown::Write);
    }
}

/// The rest of a bulk direction, spliced through a pipe.
#[cfg(target_os = "linux")]
async fn splice_rest(
    source: &TcpStream,
    sink: &TcpStream,
    last: &AtomicU64,
    ended: &AtomicU64,
    mut total: u64,
) -> io::Result<u64> {
    use std::os::fd::AsRawFd;

    let pipe = Pipe::new()?;
    loop {
        source.readable().await?;
        let moved = match source.try_io(Interest::READABLE, || splice(source.as_raw_fd(), pipe.write, pipe.size)) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        if moved == 0 {
            pass_end(sink, ended);
            return Ok(total);
        }
        last.store(uptime_ms(), Ordering::Relaxed);
        let mut left = moved;
        while left > 0 {
            sink.writable().await?;
            match sink.try_io(Interest::WRITABLE, || splice(pipe.read, sink.as_raw_fd(), left)) {
                Ok(n) => left -= n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
        total += moved as u64;
    }
}

/// The pipe a bulk direction asks for: each splice moves up to this much. (The kernel's
/// default is 64 KiB; `/proc/sys/fs/pipe-max-size` caps it, 1 MiB by default.)
#[cfg(target_os = "linux")]
const PIPE_SIZE: usize = 256 * 1024;

/// What a pipe holds when it cannot be grown.
#[cfg(target_os = "linux")]
const PIPE_DEFAULT: usize = 64 * 1024;

#[cfg(target_os = "linux")]
struct Pipe {
    read: i32,
    write: i32,
    size: usize,
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
        // SAFETY: a plain fcntl on the pipe just opened; its answer is the size granted.
        let granted = unsafe { libc::fcntl(fds[1], libc::F_SETPIPE_SZ, PIPE_SIZE as libc::c_int) };
        let size = if granted > 0 { granted as usize } else { PIPE_DEFAULT };
        Ok(Pipe { read: fds[0], write: fds[1], size })
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

    /// A fresh copy between the two sockets (10 s idle timeout), on a task of its own.
    fn spawn_copy(client: TcpStream, target: TcpStream) -> tokio::task::JoinHandle<io::Result<CopyEnd>> {
        tokio::spawn(async move {
            copy_both_ways(client, target, Resume::default(), Duration::from_secs(10), &mut Deadline::default()).await
        })
    }
    #[cfg(target_os = "linux")]
    use crate::testing::tcp_info;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    /// The TCP state of `tcp` once it is `wanted`, or after two seconds of waiting for it (a
    /// busy kernel may deliver a peer's FIN or reset a moment later).
    #[cfg(target_os = "linux")]
    async fn state_once_in(tcp: &TcpStream, wanted: u8) -> u8 {
        for _ in 0..200 {
            if tcp_info(tcp).tcpi_state == wanted {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tcp_info(tcp).tcpi_state
    }

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
        let copier = spawn_copy(client_side, target_side);
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

    /// Short exchanges, each read whole at once: bytes that come after a read that drained
    /// the socket still pass, in both directions, including those the client sent before the
    /// copy began.
    #[tokio::test]
    async fn a_conversation_passes_turn_by_turn_after_reads_that_drain_the_socket() {
        let (mut client, client_side) = pair().await;
        let (mut target_side, mut target) = pair().await;
        client.write_all(b"hello").await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let early = take_waiting(&client_side);
        assert_eq!(early, b"hello", "the bytes sent before the copy are taken at once");
        assert!(take_waiting(&client_side).is_empty(), "and only once");
        target_side.write_all(&early).await.unwrap();
        let copier = spawn_copy(client_side, target_side);
        let turn = Duration::from_secs(5);
        let mut buf = [0u8; 64];
        let n = tokio::time::timeout(turn, target.read(&mut buf)).await.unwrap().unwrap();
        assert_eq!(&buf[..n], b"hello");
        for round in 0..20u8 {
            target.write_all(&[b'a' + round]).await.unwrap();
            let n = tokio::time::timeout(turn, client.read(&mut buf)).await.expect("the answer passed").unwrap();
            assert_eq!(&buf[..n], &[b'a' + round]);
            client.write_all(&[b'A' + round, b'!']).await.unwrap();
            let n = tokio::time::timeout(turn, target.read(&mut buf)).await.expect("the request passed").unwrap();
            assert_eq!(&buf[..n], &[b'A' + round, b'!']);
        }
        client.shutdown().await.unwrap();
        target.shutdown().await.unwrap();
        let end = tokio::time::timeout(turn, copier).await.unwrap().unwrap().unwrap();
        assert_eq!(end, CopyEnd::Closed(40, 20));
    }

    /// A connection just accepted and handed to the runtime, as `listener::accept` does, has
    /// had no readiness event yet; its first bytes are taken all the same (they decide that
    /// ballast sends first, and so holds back its ACKs).
    #[tokio::test]
    async fn first_bytes_are_taken_before_the_runtime_has_seen_them() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        std::io::Write::write_all(&mut client, b"GET / HTTP/1.1\r\n\r\n").unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let (accepted, _) = listener.accept().unwrap();
        accepted.set_nonblocking(true).unwrap();
        let accepted = TcpStream::from_std(accepted).unwrap();
        assert_eq!(take_waiting(&accepted), b"GET / HTTP/1.1\r\n\r\n");
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn an_answer_and_its_end_reach_the_client_in_one_segment() {
        let (mut client, client_side) = pair().await;
        let (target_side, mut target) = pair().await;
        // The target answers and closes before the copy begins: both wait in its socket.
        target.write_all(b"answer").await.unwrap();
        target.shutdown().await.unwrap();
        // A busy kernel may deliver the FIN a moment later: wait until it is in.
        const CLOSE_WAIT: u8 = 8;
        assert_eq!(state_once_in(&target_side, CLOSE_WAIT).await, CLOSE_WAIT, "the target's end arrived");
        let copier = spawn_copy(client_side, target_side);
        let mut back = Vec::new();
        client.read_to_end(&mut back).await.unwrap();
        assert_eq!(back, b"answer");
        // Apart, the answer and its end would be two segments, and the client woken twice.
        assert_eq!(tcp_info(&client).tcpi_segs_in, 2, "the SYN-ACK, then the answer carrying its end");
        client.shutdown().await.unwrap();
        assert_eq!(copier.await.unwrap().unwrap(), CopyEnd::Closed(0, 6));
    }

    /// A target that answers and then resets its connection has failed, though its reset,
    /// like an end, marks the socket closed: the copy reports the failure (it passes no end).
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn a_reset_after_an_answer_is_a_failure_not_an_end() {
        let (mut client, client_side) = pair().await;
        let (target_side, target) = pair().await;
        let mut target = target.into_std().unwrap();
        std::io::Write::write_all(&mut target, b"partial").unwrap();
        socket2::SockRef::from(&target).set_linger(Some(Duration::ZERO)).unwrap();
        drop(target);
        const CLOSE: u8 = 7;
        assert_eq!(state_once_in(&target_side, CLOSE).await, CLOSE, "the target's reset arrived");
        let copier = spawn_copy(client_side, target_side);
        let mut back = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut back)).await;
        let end = tokio::time::timeout(Duration::from_secs(5), copier).await.unwrap().unwrap();
        let error = end.expect_err("a reset is a failure");
        assert_eq!(error.kind(), io::ErrorKind::ConnectionReset, "{error}");
    }

    #[tokio::test]
    async fn a_connection_holds_no_copy_buffer_between_reads() {
        let (_client, client_side) = pair().await;
        let (target_side, _target) = pair().await;
        let mut deadline = Deadline::default();
        let copying =
            copy_both_ways(client_side, target_side, Resume::default(), Duration::from_secs(10), &mut deadline);
        // Both directions' state together, a small fraction of one 16 KiB chunk.
        assert!(std::mem::size_of_val(&copying) < 2048, "{} bytes", std::mem::size_of_val(&copying));
    }

    #[tokio::test]
    async fn an_idle_connection_is_closed() {
        let (_client, client_side) = pair().await;
        let (target_side, _target) = pair().await;
        let end = copy_both_ways(
            client_side,
            target_side,
            Resume::default(),
            Duration::from_millis(200),
            &mut Deadline::default(),
        )
        .await
        .unwrap();
        assert_eq!(end, CopyEnd::Idle);
    }
}
