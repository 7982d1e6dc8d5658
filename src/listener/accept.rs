//! The accept loop every TCP listener shares: take each connection, hand it on.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

/// Accepts connections on `socket` for the listener `name` until the process ends, giving each
/// (with Nagle off) to `handle`.
pub async fn accept_each(socket: TcpListener, name: &str, mut handle: impl FnMut(TcpStream, SocketAddr)) {
    loop {
        match socket.accept().await {
            Ok((tcp, peer)) => {
                let _ = tcp.set_nodelay(true);
                handle(tcp, peer);
            }
            Err(e) => {
                // Out of file descriptors, or a connection reset before accept: back off briefly.
                tracing::warn!(listener = %name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}
