//! Accept loops, one per listener, by protocol; kept in step with the config across reloads.

pub mod accept;
mod counted_io;
mod dispatch;
mod gather;
pub mod http;
mod http1;
pub mod spread;
pub mod tls;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::task::JoinHandle;

use accept::Listening;

use crate::config::ListenerProtocol;
use crate::state::State;

/// Binds a TCP socket for a listener: address reuse, a deep accept backlog. With
/// `share_port`, other sockets may bind the same address (one per worker thread).
pub fn bind_tcp(addr: SocketAddr, share_port: bool) -> std::io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    if share_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_nodelay(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(4096)?;
    Ok(socket.into())
}

/// Starts `accept` on every worker thread, each with its own socket bound to `addr`; returns
/// the address bound (the port chosen, for port 0) and the accept loops.
fn accept_on_workers<F, Fut>(addr: SocketAddr, accept: F) -> std::io::Result<(SocketAddr, Vec<JoinHandle<()>>)>
where
    F: Fn(Listening) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let workers = crate::shards::handles();
    let share_port = workers.len() > 1;
    let first = bind_tcp(addr, share_port)?;
    let local = first.local_addr()?;
    let mut sockets = vec![first];
    for _ in 1..workers.len() {
        sockets.push(bind_tcp(local, true)?);
    }
    let mut loops = Vec::with_capacity(workers.len());
    for (worker, socket) in workers.iter().zip(sockets) {
        // Registered with the worker's own reactor, from inside it.
        let _inside = worker.enter();
        match Listening::new(socket) {
            Ok(socket) => loops.push(worker.spawn(accept(socket))),
            Err(e) => {
                loops.iter().for_each(JoinHandle::abort);
                return Err(e);
            }
        }
    }
    Ok((local, loops))
}

/// The accept loop of a `tcp` or `tls` listener on one worker: on Linux, the listener's own
/// event loop serves plain connections (`l4::poller`); elsewhere each gets a task.
async fn l4_accept(socket: Listening, state: Arc<State>, name: Arc<str>, inboxes: Arc<crate::l4::Inboxes>) {
    #[cfg(target_os = "linux")]
    crate::l4::poller::serve(socket, state, name, inboxes).await;
    #[cfg(not(target_os = "linux"))]
    let _ = inboxes;
    #[cfg(not(target_os = "linux"))]
    accept::accept_each(socket, &Arc::clone(&name), move |tcp, peer| {
        crate::l4::tcp::connection(tcp, peer, state, name)
    })
    .await;
}

/// A listener that is accepting: where it is bound and its accept loop.
struct Bound {
    bind: String,
    addr: SocketAddr,
    /// One per worker thread (one for UDP).
    accept_loops: Vec<JoinHandle<()>>,
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
                bound.accept_loops.iter().for_each(JoinHandle::abort);
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
            let (scheme, local, accept_loops) = match l.protocol {
                ListenerProtocol::Udp => {
                    let socket = std::net::UdpSocket::bind(addr)
                        .and_then(|s| s.set_nonblocking(true).map(|()| s))
                        .and_then(tokio::net::UdpSocket::from_std)
                        .map_err(cannot_bind)?;
                    let local = socket.local_addr().map_err(|e| e.to_string())?;
                    let flows = tokio::spawn(crate::l4::udp::serve(socket, Arc::clone(state), l.name.clone()));
                    ("udp", local, vec![flows])
                }
                ListenerProtocol::Tcp | ListenerProtocol::Tls => {
                    let scheme = if l.protocol == ListenerProtocol::Tls { "tls" } else { "tcp" };
                    let name = Arc::<str>::from(l.name.as_str());
                    let inboxes = Arc::new(crate::l4::Inboxes::new(crate::shards::count()));
                    let (local, loops) = accept_on_workers(addr, |socket| {
                        l4_accept(socket, Arc::clone(state), Arc::clone(&name), Arc::clone(&inboxes))
                    })
                    .map_err(cannot_bind)?;
                    (scheme, local, loops)
                }
                protocol => {
                    let scheme = if protocol.terminates_tls() { "https" } else { "http" };
                    let (local, loops) =
                        accept_on_workers(addr, |socket| http::serve(socket, Arc::clone(state), l.name.clone()))
                            .map_err(cannot_bind)?;
                    (scheme, local, loops)
                }
            };
            self.bound.insert(l.name.clone(), Bound { bind: l.bind.clone(), addr: local, accept_loops });
            started.push((l.name.clone(), scheme, local));
        }
        Ok(started)
    }

    /// Where listener `name` is bound.
    pub fn addr(&self, name: &str) -> Option<SocketAddr> {
        self.bound.get(name).map(|b| b.addr)
    }
}
