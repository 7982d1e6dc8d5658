//! Accept loops, one per listener, by protocol.

mod dispatch;
pub mod http;
pub mod tls;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::state::State;

/// Binds a TCP socket for a listener: address reuse, a deep accept backlog.
pub fn bind_tcp(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        None,
    )?;
    socket.set_reuse_address(true)?;
    socket.set_nodelay(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    TcpListener::from_std(socket.into())
}

/// Binds every listener of the current snapshot and starts serving; returns each listener's
/// name and the address it is bound to (the port filled in when the file said 0).
pub async fn start_all(
    state: &Arc<State>,
) -> Result<Vec<(String, &'static str, SocketAddr)>, String> {
    let snapshot = state.snapshot();
    let mut bound = Vec::new();
    for l in &snapshot.config.listeners {
        let addr: SocketAddr = l
            .bind
            .parse()
            .map_err(|_| format!("listener `{}`: bad bind `{}`", l.name, l.bind))?;
        let socket = bind_tcp(addr)
            .map_err(|e| format!("listener `{}`: cannot bind {addr}: {e}", l.name))?;
        let local = socket.local_addr().map_err(|e| e.to_string())?;
        let scheme = if l.protocol.terminates_tls() {
            "https"
        } else {
            "http"
        };
        bound.push((l.name.clone(), scheme, local));
        tokio::spawn(http::serve(socket, Arc::clone(state), l.name.clone()));
    }
    Ok(bound)
}
