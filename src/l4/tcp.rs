//! `tcp` and `tls` listeners: pick a target per connection, connect, and copy both ways.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use super::prefixed::read_proxy_header;
use super::prefixed::Prefixed;
use super::proxy_protocol::{self, Transport, Version};
use super::splice::{copy_both_ways, take_waiting, CopyEnd, Resume};
use super::stream_copy::copy_streams;
use crate::balance::flow_hash;
use crate::config::{Algorithm, ProxyProtocol, TargetProtocol};
use crate::deadline::Deadline;
use crate::metrics::{GaugeGuard, WorkerCounter};
use crate::routing::ActionPlan;
use crate::state::State;
use crate::target_group::{PickRequest, Reason, Target, TargetGroup, TargetState};

/// How long a connection to a target may take, as NLB's 10 s.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How many targets one client connection may try before it is closed.
const CONNECT_ATTEMPTS: usize = 3;

/// Serves one connection accepted by the `tcp` or `tls` listener `name`.
pub async fn connection(tcp: TcpStream, peer: SocketAddr, state: Arc<State>, name: Arc<str>) {
    let snapshot = state.snapshot();
    let Some(listener) = snapshot.listener(&name) else { return };
    let Some(_permit) = crate::guard::admit_connection(&state, listener, peer.ip()) else { return };
    listener.metrics.new_connections.inc();
    let _open = GaugeGuard::inc(listener.metrics.active_connections.clone());
    let header_timeout = listener.limits.header_timeout.get();
    let idle = listener.idle_timeout;

    // Behind another balancer, the client is who the PROXY header says.
    let (client, early, tcp) = if listener.proxy_protocol {
        // Boxed, as the other steps most connections skip: the connection's task is kept small
        // enough for the allocator's per-thread cache (one is made for every connection).
        match Box::pin(read_proxy_header(tcp, header_timeout)).await {
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
    let Some(group_index) = plan.pick_group() else { return };
    // The address the client reached: only flow hashing and PROXY headers need it (a system
    // call per connection otherwise spent for nothing).
    let needs_local = snapshot.target_groups.get(group_index).is_some_and(|g| {
        g.settings.algorithm == Algorithm::FlowHash || g.settings.proxy_protocol != ProxyProtocol::Off
    });
    let local = if needs_local { tcp.local_addr().unwrap_or(peer) } else { peer };
    let tls = listener.tls.clone();
    let bytes = listener.metrics.processed_bytes.clone();
    drop(snapshot);

    // A `tls` listener finishes the client's handshake before a target is chosen.
    let client_stream = match tls {
        None => ClientSide::Plain(tcp),
        Some(tls) => {
            let accepting = TlsAcceptor::from(tls).accept(Prefixed::new(early.clone(), tcp));
            let accepted = Box::pin(tokio::time::timeout(header_timeout, accepting)).await;
            match accepted {
                Ok(Ok(stream)) => ClientSide::Tls(Box::new(stream)),
                _ => {
                    state.metrics.tls_handshake_errors.inc();
                    return;
                }
            }
        }
    };
    let mut early = if matches!(client_stream, ClientSide::Tls(_)) { Vec::new() } else { early };
    // The client's first bytes, when already here (the usual case: a client speaks right after
    // its handshake), are read before the target is chosen: the read the copy would make, and
    // they tell that ballast sends first.
    if early.is_empty() {
        if let ClientSide::Plain(tcp) = &client_stream {
            early = take_waiting(tcp);
        }
    }

    let snapshot = state.snapshot();
    let Some(group) = snapshot.target_groups.get(group_index) else { return };
    let zone = snapshot.listener(&name).and_then(|l| l.zone.clone());
    let flow = if needs_local { flow_hash(client, local, 6) } else { 0 };
    let header = match group.settings.proxy_protocol {
        ProxyProtocol::Off => None,
        ProxyProtocol::V1 => Some(proxy_protocol::encode(Version::V1, Transport::Tcp, client, local)),
        ProxyProtocol::V2 => Some(proxy_protocol::encode(Version::V2, Transport::Tcp, client, local)),
    };
    let reencrypt = group.settings.protocol == TargetProtocol::Tls;
    // Something to send the moment the target answers: a PROXY header, a TLS hello, or the
    // client's first bytes.
    let sending_first = header.is_some() || reencrypt || !early.is_empty();
    // The client's first bytes (none behind a TLS listener) go with the connect when nothing
    // else must go before them.
    let first = if header.is_none() && !reencrypt { early.as_slice() } else { &[] };
    // One timer for the connection: the connect's, then the idle one's.
    let mut deadline = Deadline::default();
    let Some((mut target_stream, target, sent_first)) =
        connect(group, zone.as_deref(), flow, sending_first, first, &mut deadline).await
    else {
        tracing::debug!(listener = %name, target_group = %group.name, "no target could be reached");
        return;
    };
    let outstanding = target.stats.start_request();
    let closing = target.stats.closing().clone();
    let target_host = target.authority.clone();
    drop(snapshot);

    let copy = async move {
        if let Some(header) = header {
            target_stream.write_all(&header).await?;
        }
        match (client_stream, reencrypt) {
            (ClientSide::Plain(tcp), false) => {
                target_stream.write_all(&early[sent_first..]).await?;
                // Sent: a connection that then stays open for hours does not hold them.
                let sent = early.len() as u64;
                drop(early);
                match copy_both_ways(tcp, target_stream, Resume::default(), idle, &mut deadline).await? {
                    CopyEnd::Closed(up, down) => Ok(up + down + sent),
                    CopyEnd::Idle => Ok(0),
                }
            }
            (client_stream, reencrypt) => {
                // Idleness is timed by the stream copy's own watchdog here.
                drop(deadline);
                Box::pin(async move {
                    let client_side: Box<dyn Io> = match client_stream {
                        ClientSide::Tls(stream) => stream,
                        ClientSide::Plain(tcp) => Box::new(Prefixed::new(early, tcp)),
                    };
                    let target_side: Box<dyn Io> = if reencrypt {
                        let host = target_host.rsplit_once(':').map_or(target_host.as_str(), |(h, _)| h);
                        let name = rustls_pki_types::ServerName::try_from(
                            host.trim_matches(|c| c == '[' || c == ']').to_string(),
                        )
                        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
                        Box::new(crate::proxy::connector::target_tls(&[]).connect(name, target_stream).await?)
                    } else {
                        Box::new(target_stream)
                    };
                    copy_streams(client_side, target_side, idle).await
                })
                .await
            }
        }
    };
    tokio::select! {
        result = copy => match result {
            Ok(moved) => {
                bytes.inc_by(moved);
            }
            Err(e) => tracing::debug!(listener = %name, error = %e, "connection ended with an error"),
        },
        // The target's draining ended: close what is still open.
        _ = closing.cancelled() => {}
    }
    drop(outstanding);
}

/// Copies a plain connection both ways, from where `resume` says, until both ways end, it
/// idles out, or its target's draining ends; counts its bytes on the listener's metric.
pub(crate) async fn relay(
    client: TcpStream,
    target: TcpStream,
    resume: Resume,
    idle: Duration,
    closing: CancellationToken,
    bytes: WorkerCounter,
    name: &str,
) {
    let mut deadline = Deadline::default();
    tokio::select! {
        result = copy_both_ways(client, target, resume, idle, &mut deadline) => match result {
            Ok(CopyEnd::Closed(up, down)) => {
                bytes.inc_by(up + down);
            }
            Ok(CopyEnd::Idle) => {}
            Err(e) => tracing::debug!(listener = %name, error = %e, "connection ended with an error"),
        },
        _ = closing.cancelled() => {}
    }
}

/// The client's side of an L4 connection: plain TCP (spliced), or TLS ended here.
enum ClientSide {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::server::TlsStream<Prefixed<TcpStream>>>),
}

/// Both directions of a stream, boxed.
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Connects to a target of `group`, trying others when one refuses (and marking it down).
/// `first` is sent as the connection comes up, as much of it as the socket takes: the count
/// comes back with the stream.
async fn connect<'g>(
    group: &'g TargetGroup,
    zone: Option<&str>,
    flow: u64,
    sending_first: bool,
    first: &[u8],
    deadline: &mut Deadline,
) -> Option<(TcpStream, &'g Target, usize)> {
    let mut tried = Vec::new();
    for _ in 0..CONNECT_ATTEMPTS {
        let target = group.pick(PickRequest { tried: &tried, zone, sticky: None, flow })?;
        deadline.set(CONNECT_TIMEOUT);
        match deadline.within(crate::target_group::connect_sending(&target.authority, sending_first, first)).await {
            Some(Ok((stream, sent))) => return Some((stream, target, sent)),
            _ => {
                target.stats.set(TargetState::Unhealthy, Reason::ConnectionFailed);
                if let Some(i) = group.index_of(target) {
                    tried.push(i);
                }
            }
        }
    }
    None
}
