//! Accept loops, one per listener, by protocol; kept in step with the config across reloads.

mod accept;
mod counted_io;
mod dispatch;
pub mod http;
mod http1;
pub mod tls;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::config::ListenerProtocol;
use crate::state::State;

/// Binds a TCP socket for a listener: address reuse, a deep accept backlog.
pub fn bind_tcp(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_nodelay(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    TcpListener::from_std(socket.into())
}

/// A listener that is accepting: where it is bound and its accept loop.
struct Bound {
    bind: String,
    addr: SocketAddr,
    accept_loop: JoinHandle<()>,
}

/// The accept loops of the running balancer, matched to the snapshot's listeners by name.
#[derive(Default)]
pub struct Listeners {
    bound: HashMap<String, Bound>,
}

impl Listeners {
    /// Binds listeners that are new or whose `bind` changed, and stops those that are gone.
    /// Open connections of a stopped listener finish on their own. Returns the newly bound
    /// `(name, scheme, address)`; the first error stops nothing that already runs.
    pub fn reconcile(&mut self, state: &Arc<State>) -> Result<Vec<(String, &'static str, SocketAddr)>, String> {
        let snapshot = state.snapshot();
        let wanted = &snapshot.config.listeners;
        self.bound.retain(|name, bound| {
            let keep = wanted.iter().any(|l| &l.name == name && l.bind == bound.bind);
            if !keep {
                bound.accept_loop.abort();
            }
            keep
        });
        let mut started = Vec::new();
        for l in wanted {
            if self.bound.contains_key(&l.name) {
                continue;
            }
            let addr: SocketAddr =
                l.bind.parse().map_err(|_| format!("listener `{}`: bad bind `{}`", l.name, l.bind))?;
            let cannot_bind = |e: std::io::Error| format!("listener `{}`: cannot bind {addr}: {e}", l.name);
            let (scheme, local, accept_loop) = match l.protocol {
                ListenerProtocol::Udp => {
                    let socket = std::net::UdpSocket::bind(addr)
                        .and_then(|s| s.set_nonblocking(true).map(|()| s))
                        .and_then(tokio::net::UdpSocket::from_std)
                        .map_err(cannot_bind)?;
                    let local = socket.local_addr().map_err(|e| e.to_string())?;
                    ("udp", local, tokio::spawn(crate::l4::udp::serve(socket, Arc::clone(state), l.name.clone())))
                }
                protocol => {
                    let socket = bind_tcp(addr).map_err(cannot_bind)?;
                    let local = socket.local_addr().map_err(|e| e.to_string())?;
                    let (scheme, task) = match protocol {
                        ListenerProtocol::Tcp | ListenerProtocol::Tls => {
                            let scheme = if protocol == ListenerProtocol::Tls { "tls" } else { "tcp" };
                            let (state, name) = (Arc::clone(state), Arc::<str>::from(l.name.as_str()));
                            let task = async move {
                                let accepting = Arc::clone(&name);
                                accept::accept_each(socket, &accepting, |tcp, peer| {
                                    let task =
                                        crate::l4::tcp::connection(tcp, peer, Arc::clone(&state), Arc::clone(&name));
                                    tokio::spawn(task);
                                })
                                .await;
                            };
                            (scheme, tokio::spawn(task))
                        }
                        _ => {
                            let scheme = if protocol.terminates_tls() { "https" } else { "http" };
                            (scheme, tokio::spawn(http::serve(socket, Arc::clone(state), l.name.clone())))
                        }
                    };
                    (scheme, local, task)
                }
            };
            self.bound.insert(l.name.clone(), Bound { bind: l.bind.clone(), addr: local, accept_loop });
            started.push((l.name.clone(), scheme, local));
        }
        Ok(started)
    }

    /// Where listener `name` is bound.
    pub fn addr(&self, name: &str) -> Option<SocketAddr> {
        self.bound.get(name).map(|b| b.addr)
    }
}
