//! Opening a TCP connection to a target, Nagle off, in as few system calls as the kernel
//! allows: the socket is made non-blocking as it is created, and a failed connection is told
//! by the readiness event itself rather than asked for afterwards (`SO_ERROR`).

use std::io;
use std::net::SocketAddr;

use tokio::io::Interest;
use tokio::net::TcpStream;

/// Connects to `authority` (`ip:port`, or `host:port`, which is resolved first).
///
/// `sending_first` says the caller sends the moment the connection is up (an HTTP request, a
/// TLS hello, a PROXY header, bytes the client sent already). On Linux, for an `ip:port`
/// authority, the kernel is then told to hold back its ACKs (`TCP_QUICKACK` off, HAProxy's
/// `tcp-smart-connect`): the handshake's last ACK rides on those first bytes, and on a short
/// L4 connection the ACK of the target's answer on ballast's close: two packets fewer. A
/// target that speaks first (SMTP, SSH, MySQL) would wait up to 200 ms for that held-back
/// ACK, so without `sending_first` nothing is held back. (A `host:port` authority is
/// connected by tokio, and other systems keep their ACKs as they are.)
pub async fn connect(authority: &str, sending_first: bool) -> io::Result<TcpStream> {
    connect_sending(authority, sending_first, &[]).await.map(|(tcp, _)| tcp)
}

/// Connects as [`connect`] does, and sends what it can of `first` the moment the connection
/// is up; returns the stream and how many of `first`'s bytes went. A handshake the kernel
/// finished within the connect call (a target on this machine) sends them at once, without
/// waiting on the runtime to report the socket writable: a turn of the event loop fewer.
pub async fn connect_sending(authority: &str, sending_first: bool, first: &[u8]) -> io::Result<(TcpStream, usize)> {
    let Ok(addr) = authority.parse::<SocketAddr>() else {
        let tcp = TcpStream::connect(authority).await?;
        tcp.set_nodelay(true)?;
        return Ok((tcp, 0));
    };
    let (socket, sent) = begin(addr, sending_first, first)?;
    let tcp = TcpStream::from_std(socket)?;
    if let Some(sent) = sent {
        return Ok((tcp, sent));
    }
    let ready = tcp.ready(Interest::WRITABLE | Interest::ERROR).await?;
    if ready.is_error() || ready.is_write_closed() {
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        return Err(tcp.take_error()?.unwrap_or(refused));
    }
    Ok((tcp, 0))
}

/// Sets a connection to `addr` going, as [`connect_sending`] does, without waiting for it:
/// the socket (non-blocking), and how many of `first`'s bytes went with the connect, when
/// they could (`None`: still connecting, and the socket reports writable once up, or an
/// error if it could not be).
pub fn begin(addr: SocketAddr, sending_first: bool, first: &[u8]) -> io::Result<(std::net::TcpStream, Option<usize>)> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), stream_type(), None)?;
    #[cfg(not(target_os = "linux"))]
    socket.set_nonblocking(true)?;
    socket.set_nodelay(true)?;
    if sending_first {
        delay_acks(&socket)?;
    }
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    if !first.is_empty() {
        // A socket still connecting takes nothing ("would block"); a refused one says so.
        match send_now(&socket, first) {
            Ok(sent) => return Ok((socket.into(), Some(sent))),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok((socket.into(), None))
}

/// Sends what `socket` takes of `bytes` now, without a signal if the peer is gone.
#[cfg(target_os = "linux")]
fn send_now(socket: &socket2::Socket, bytes: &[u8]) -> io::Result<usize> {
    socket.send_with_flags(bytes, libc::MSG_NOSIGNAL)
}

/// Elsewhere a socket still connecting may answer a send otherwise than "would block"
/// (`ENOTCONN` on the BSDs): the writable event is awaited, as before.
#[cfg(not(target_os = "linux"))]
fn send_now(_: &socket2::Socket, _: &[u8]) -> io::Result<usize> {
    Err(io::ErrorKind::WouldBlock.into())
}

/// Lets the kernel hold back ACKs until ballast sends: the handshake's for up to 200 ms, later
/// ones for the delayed-ACK time (40 ms or more). Bulk transfers still ACK every second
/// segment.
#[cfg(target_os = "linux")]
fn delay_acks(socket: &socket2::Socket) -> io::Result<()> {
    socket.set_quickack(false)
}

#[cfg(not(target_os = "linux"))]
fn delay_acks(_: &socket2::Socket) -> io::Result<()> {
    Ok(())
}

#[cfg(target_os = "linux")]
fn stream_type() -> socket2::Type {
    socket2::Type::STREAM.nonblocking()
}

#[cfg(not(target_os = "linux"))]
fn stream_type() -> socket2::Type {
    socket2::Type::STREAM
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connects_with_nagle_off() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (tcp, accepted) = tokio::join!(connect(&addr, false), listener.accept());
        let tcp = tcp.unwrap();
        assert!(tcp.nodelay().unwrap());
        assert_eq!(tcp.peer_addr().unwrap(), accepted.unwrap().0.local_addr().unwrap());
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn the_handshake_ack_rides_on_the_first_bytes_only_for_a_caller_that_sends_first() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        for sending_first in [false, true] {
            // Written before the target accepts: it accepts once the handshake's ACK is in.
            let mut tcp = connect(&addr, sending_first).await.unwrap();
            tcp.write_all(b"ping").await.unwrap();
            let mut ping = [0u8; 4];
            // Kept open until the count is read: its close would be ACKed.
            let (mut accepted, _) = listener.accept().await.unwrap();
            accepted.read_exact(&mut ping).await.unwrap();
            // SYN and the bytes (carrying the ACK), or SYN, ACK and the bytes.
            let expected = if sending_first { 2 } else { 3 };
            assert_eq!(crate::testing::tcp_info(&tcp).tcpi_segs_out, expected, "sending first: {sending_first}");
            drop(accepted);
        }
    }

    /// On a target on this machine the kernel finishes the handshake within the connect
    /// call: the first bytes leave with it, the handshake's ACK riding on them, and no write
    /// waits on the runtime.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn first_bytes_leave_with_the_connect_to_a_local_target() {
        use tokio::io::AsyncReadExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (tcp, sent) = connect_sending(&addr, true, b"hello").await.unwrap();
        assert_eq!(sent, 5, "sent within the connect");
        let (mut accepted, _) = listener.accept().await.unwrap();
        let mut got = [0u8; 5];
        accepted.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"hello");
        assert_eq!(crate::testing::tcp_info(&tcp).tcpi_segs_out, 2, "the SYN, then the bytes with the ACK");
    }

    #[tokio::test]
    async fn a_refused_connection_with_bytes_to_send_is_an_error() {
        let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
        let error = connect_sending(&addr, true, b"hello").await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::ConnectionRefused, "{error}");
    }

    #[tokio::test]
    async fn a_refused_connection_is_an_error() {
        // A port just freed: nothing listens there.
        let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
        let error = connect(&addr, true).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::ConnectionRefused, "{error}");
    }

    #[tokio::test]
    async fn a_name_is_resolved_first() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let tcp = connect(&format!("localhost:{port}"), true).await;
        assert!(tcp.is_ok_and(|t| t.nodelay().unwrap_or(false)));
    }
}
