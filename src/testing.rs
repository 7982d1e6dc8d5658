//! Helpers for unit tests over real sockets (Linux).

use tokio::net::TcpStream;

/// The kernel's `TCP_INFO` on `tcp`: its state and the segments it has sent and received.
pub fn tcp_info(tcp: &TcpStream) -> libc::tcp_info {
    use std::os::fd::AsRawFd;
    // SAFETY: a zeroed tcp_info is valid; getsockopt fills at most `len` bytes of it.
    unsafe {
        let mut info: libc::tcp_info = std::mem::zeroed();
        let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
        let rc = libc::getsockopt(
            tcp.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        );
        assert_eq!(rc, 0, "TCP_INFO: {}", std::io::Error::last_os_error());
        info
    }
}
