//! The accept loop every TCP listener shares: take each connection and serve it on a worker
//! thread, here or, to even out their load, another (`spread`).

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::net::TcpStream;

use super::spread;

/// A listening socket, watched by one worker's reactor.
pub struct Listening(AsyncFd<std::net::TcpListener>);

impl Listening {
    /// Watches `socket` (non-blocking) from the current worker's reactor.
    pub fn new(socket: std::net::TcpListener) -> std::io::Result<Listening> {
        // SAFETY: the listener owns its descriptor, which stays open, and the same, until the
        // `AsyncFd` (which owns the listener) is dropped.
        let watched = unsafe { AsyncFd::register_with_interest(socket, Interest::READABLE) };
        Ok(Listening(watched?))
    }

    /// The next connection, not yet watched by any reactor.
    pub async fn accept(&self) -> std::io::Result<(std::net::TcpStream, SocketAddr)> {
        loop {
            let mut ready = self.0.readable().await?;
            if let Ok(accepted) = ready.try_io(|socket| accept_nonblocking(socket.get_ref())) {
                return accepted;
            }
        }
    }
}

#[cfg(target_os = "linux")]
fn accept_nonblocking(socket: &std::net::TcpListener) -> std::io::Result<(std::net::TcpStream, SocketAddr)> {
    let (tcp, peer) = socket2::SockRef::from(socket).accept4(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)?;
    let peer = peer.as_socket().ok_or_else(|| std::io::Error::other("a peer that is not IP"))?;
    Ok((tcp.into(), peer))
}

#[cfg(not(target_os = "linux"))]
fn accept_nonblocking(socket: &std::net::TcpListener) -> std::io::Result<(std::net::TcpStream, SocketAddr)> {
    let (tcp, peer) = socket.accept()?;
    tcp.set_nonblocking(true)?;
    Ok((tcp, peer))
}

/// Accepts connections on `socket` for the listener `name` until the process ends, and runs
/// `serve` for each on the worker `spread` picks. (Nagle is off: accepted sockets inherit it
/// from the listening one, see `bind_tcp`.)
pub async fn accept_each<F, Fut>(socket: Listening, name: &str, serve: F)
where
    F: FnOnce(TcpStream, SocketAddr) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        match socket.accept().await {
            Ok((tcp, peer)) => {
                let (held, elsewhere) = spread::place();
                hand_over(tcp, peer, held, elsewhere, name, serve.clone());
            }
            Err(e) => back_off(name, e).await,
        }
    }
}

/// Serves a connection just accepted with `serve`, here or on the worker `elsewhere` (as
/// [`spread::place`] chose), counted by `held`.
pub fn hand_over<F, Fut>(
    tcp: std::net::TcpStream,
    peer: SocketAddr,
    held: spread::Held,
    elsewhere: Option<&'static tokio::runtime::Handle>,
    name: &str,
    serve: F,
) where
    F: FnOnce(TcpStream, SocketAddr) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    // Watched by the reactor of the worker that serves it.
    let watched = {
        let _there = elsewhere.map(tokio::runtime::Handle::enter);
        TcpStream::from_std(tcp)
    };
    let tcp = match watched {
        Ok(tcp) => tcp,
        Err(e) => {
            tracing::warn!(listener = %name, error = %e, "cannot watch an accepted connection");
            return;
        }
    };
    let serving = spread::Counted::new(held, serve(tcp, peer));
    match elsewhere {
        Some(worker) => drop(worker.spawn(serving)),
        None => drop(tokio::spawn(serving)),
    }
}

/// How long accepting waits after a failed accept: out of file descriptors, or a connection
/// reset before it was accepted.
pub const BACK_OFF: Duration = Duration::from_millis(20);

/// Waits after a failed accept.
async fn back_off(name: &str, e: std::io::Error) {
    tracing::warn!(listener = %name, error = %e, "accept failed");
    tokio::time::sleep(BACK_OFF).await;
}
