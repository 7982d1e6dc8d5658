//! Opening a TCP connection to a target, Nagle off, in as few system calls as the kernel
//! allows: the socket is made non-blocking as it is created, and a failed connection is told
//! by the readiness event itself rather than asked for afterwards (`SO_ERROR`).

use std::io;
use std::net::SocketAddr;

use tokio::io::Interest;
use tokio::net::TcpStream;

/// Connects to `authority` (`ip:port`, or `host:port`, which is resolved first).
pub async fn connect(authority: &str) -> io::Result<TcpStream> {
    let Ok(addr) = authority.parse::<SocketAddr>() else {
        let tcp = TcpStream::connect(authority).await?;
        tcp.set_nodelay(true)?;
        return Ok(tcp);
    };
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), stream_type(), None)?;
    #[cfg(not(target_os = "linux"))]
    socket.set_nonblocking(true)?;
    socket.set_nodelay(true)?;
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    let tcp = TcpStream::from_std(socket.into())?;
    let ready = tcp.ready(Interest::WRITABLE | Interest::ERROR).await?;
    if ready.is_error() || ready.is_write_closed() {
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        return Err(tcp.take_error()?.unwrap_or(refused));
    }
    Ok(tcp)
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
        let (tcp, accepted) = tokio::join!(connect(&addr), listener.accept());
        let tcp = tcp.unwrap();
        assert!(tcp.nodelay().unwrap());
        assert_eq!(tcp.peer_addr().unwrap(), accepted.unwrap().0.local_addr().unwrap());
    }

    #[tokio::test]
    async fn a_refused_connection_is_an_error() {
        // A port just freed: nothing listens there.
        let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
        let error = connect(&addr).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::ConnectionRefused, "{error}");
    }

    #[tokio::test]
    async fn a_name_is_resolved_first() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let tcp = connect(&format!("localhost:{port}")).await;
        assert!(tcp.is_ok_and(|t| t.nodelay().unwrap_or(false)));
    }
}
