//! `tcp` and `tls` listeners: pick a target per connection, connect, and copy both ways.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use super::prefixed::read_proxy_header;
use super::proxy_protocol::{self, Transport, Version};
use super::splice::copy_both_ways;
use super::stream_copy::copy_streams;
use crate::balance::flow_hash;
use crate::config::{ProxyProtocol, TargetProtocol};
use crate::routing::ActionPlan;
use crate::state::State;
use crate::target_group::{PickRequest, Reason, Target, TargetGroup, TargetState};

/// How long a connection to a target may take, as NLB's 10 s.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How many targets one client connection may try before it is closed.
const CONNECT_ATTEMPTS: usize = 3;

/// Accepts connections for the `tcp` or `tls` listener `name` until the process ends.
pub async fn serve(socket: TcpListener, state: Arc<State>, name: String) {
    let name: Arc<str> = name.into();
    loop {
        let (tcp, peer) = match socket.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(listener = %name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        tokio::spawn(connection(tcp, peer, Arc::clone(&state), Arc::clone(&name)));
    }
}

async fn connection(tcp: TcpStream, peer: SocketAddr, state: Arc<State>, name: Arc<str>) {
    let snapshot = state.snapshot();
    let Some(listener) = snapshot.listener(&name) else { return };
    listener.metrics.new_connections.inc();
    listener.metrics.active_connections.inc();
    let _open = scopeguard(listener.metrics.active_connections.clone());
    let local = tcp.local_addr().unwrap_or(peer);
    let header_timeout = listener.limits.header_timeout.get();
    let idle = listener.idle_timeout;

    // Behind another balancer, the client is who the PROXY header says.
    let (client, early, tcp) = if listener.proxy_protocol {
        match read_proxy_header(tcp, header_timeout).await {
            Ok((header, rest)) => {
                let (early, tcp) = rest.into_parts();
                (header.source.unwrap_or(peer), early, tcp)
            }
            Err(e) => {
                tracing::debug!(listener = %name, client = %peer, error = %e, "refused a connection");
                return;
            }
        }
    } else {
        (peer, Vec::new(), tcp)
    };

    let ActionPlan::Forward(plan) = listener.router.default_action() else { return };
    let Some(group) = plan.pick_group().and_then(|i| snapshot.target_groups.get(i)) else { return };
    let zone = listener.zone.clone();
    let tls = listener.tls.clone();
    let flow = flow_hash(client, local, 6);
    let Some((target_stream, target)) = connect(group, zone.as_deref(), flow).await else {
        tracing::debug!(listener = %name, target_group = %group.name, "no target could be reached");
        return;
    };
    let outstanding = target.stats.start_request();
    let closing = target.stats.closing().clone();
    let mut target_stream = target_stream;
    let header = match group.settings.proxy_protocol {
        ProxyProtocol::Off => None,
        ProxyProtocol::V1 => Some(proxy_protocol::encode(Version::V1, Transport::Tcp, client, local)),
        ProxyProtocol::V2 => Some(proxy_protocol::encode(Version::V2, Transport::Tcp, client, local)),
    };
    let reencrypt = group.settings.protocol == TargetProtocol::Tls;
    let target_host = target.authority.clone();
    drop(snapshot);

    let copy = async move {
        if let Some(header) = header {
            target_stream.write_all(&header).await?;
        }
        match (tls, reencrypt) {
            (None, false) => {
                target_stream.write_all(&early).await?;
                copy_both_ways(&tcp, &target_stream, idle).await.map(|_| ())
            }
            (tls, reencrypt) => {
                let client_side: Box<dyn Io> = match tls {
                    Some(tls) => Box::new(
                        tokio::time::timeout(header_timeout, TlsAcceptor::from(tls).accept(tcp)).await.map_err(
                            |_| std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out"),
                        )??,
                    ),
                    None => Box::new(super::prefixed::Prefixed::new(early, tcp)),
                };
                let target_side: Box<dyn Io> = if reencrypt {
                    let host = target_host.rsplit_once(':').map_or(target_host.as_str(), |(h, _)| h);
                    let name =
                        rustls_pki_types::ServerName::try_from(host.trim_matches(|c| c == '[' || c == ']').to_string())
                            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
                    Box::new(crate::proxy::connector::target_tls(&[]).connect(name, target_stream).await?)
                } else {
                    Box::new(target_stream)
                };
                copy_streams(client_side, target_side, idle).await
            }
        }
    };
    tokio::select! {
        result = copy => {
            if let Err(e) = result {
                tracing::debug!(listener = %name, error = %e, "connection ended with an error");
            }
        }
        // The target's draining ended: close what is still open.
        _ = closing.cancelled() => {}
    }
    drop(outstanding);
}

/// Both directions of a stream, boxed.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Connects to a target of `group`, trying others when one refuses (and marking it down).
async fn connect<'g>(group: &'g TargetGroup, zone: Option<&str>, flow: u64) -> Option<(TcpStream, &'g Target)> {
    let mut tried = Vec::new();
    for _ in 0..CONNECT_ATTEMPTS {
        let target = group.pick(PickRequest { tried: &tried, zone, sticky: None, flow })?;
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(&target.authority)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                return Some((stream, target));
            }
            _ => {
                target.stats.set(TargetState::Unhealthy, Reason::ConnectionFailed);
                if let Some(i) = group.targets.iter().position(|t| std::ptr::eq(t, target)) {
                    tried.push(i);
                }
            }
        }
    }
    None
}

/// Decrements a gauge when dropped.
fn scopeguard(gauge: prometheus_client::metrics::gauge::Gauge) -> impl Drop {
    struct Guard(prometheus_client::metrics::gauge::Gauge);
    impl Drop for Guard {
        fn drop(&mut self) {
            self.0.dec();
        }
    }
    Guard(gauge)
}
