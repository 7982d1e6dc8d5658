//! `http` and `https` listeners: accept, TLS, then HTTP/1.1 or HTTP/2 on each connection.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::counted_io::CountedIo;
use super::dispatch;
use crate::guard::http1_stream::{Decisions, GuardSettings, GuardedIo};
use crate::l4::prefixed::{read_proxy_header, Prefixed};
use crate::metrics::GaugeGuard;
use crate::proxy::Client;
use crate::snapshot::ListenerPlan;
use crate::state::State;

/// Accepts connections for the listener `name` until the process ends.
pub async fn serve(socket: TcpListener, state: Arc<State>, name: String) {
    let name: Arc<str> = name.into();
    let accepting = Arc::clone(&name);
    super::accept::accept_each(socket, &accepting, |tcp, peer| {
        let local_port = tcp.local_addr().map_or(0, |a| a.port());
        let state = Arc::clone(&state);
        let name = Arc::clone(&name);
        tokio::spawn(async move {
            let snapshot = state.snapshot();
            let Some(listener) = snapshot.listener(&name) else {
                return;
            };
            let Some(_permit) = crate::guard::admit_connection(&state, listener, peer.ip()) else { return };
            listener.metrics.new_connections.inc();
            let _open = GaugeGuard::inc(listener.metrics.active_connections.clone());
            let header_timeout = listener.limits.header_timeout.get();
            let guard = guard_settings(listener);
            let max_header_bytes = listener.limits.max_header_bytes;
            let tls = listener.tls.clone();
            let expect_proxy_header = listener.proxy_protocol;
            let tcp = CountedIo::new(tcp, listener.metrics.processed_bytes.clone());
            drop(snapshot);
            // Behind another balancer, the client is who the PROXY header says; a connection
            // without a valid header is refused.
            let (peer, tcp) = if expect_proxy_header {
                match Box::pin(read_proxy_header(tcp, header_timeout)).await {
                    Ok((header, rest)) => (header.source.unwrap_or(peer), rest),
                    Err(e) => {
                        tracing::debug!(listener = %name, client = %peer, error = %e, "refused a connection");
                        return;
                    }
                }
            } else {
                (peer, Prefixed::new(Vec::new(), tcp))
            };
            match tls {
                Some(tls) => {
                    // Boxed as a whole: TLS state is large, and plain connections should not
                    // carry room for it in their task.
                    Box::pin(async move {
                        let accepted =
                            tokio::time::timeout(header_timeout, Box::pin(TlsAcceptor::from(tls).accept(tcp))).await;
                        let Ok(Ok(stream)) = accepted else {
                            state.metrics.tls_handshake_errors.inc();
                            return;
                        };
                        let client = Client { peer, protocol: "https", listener_port: local_port };
                        let conn = Conn { state, name, client, max_header_bytes };
                        if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
                            // HTTP/2 frames its messages itself: no request-smuggling framing to guard.
                            serve_connection(stream, conn, None).await;
                        } else {
                            serve_guarded(GuardedIo::new(stream, guard, Decisions::default()), conn).await;
                        }
                    })
                    .await;
                }
                None => {
                    let client = Client { peer, protocol: "http", listener_port: local_port };
                    let conn = Conn { state, name, client, max_header_bytes };
                    serve_guarded(GuardedIo::new(tcp, guard, Decisions::default()), conn).await;
                }
            }
        });
    })
    .await;
}

/// What serving one client connection needs.
struct Conn {
    state: Arc<State>,
    name: Arc<str>,
    client: Client,
    max_header_bytes: usize,
}

/// The guard's settings for a listener.
fn guard_settings(listener: &ListenerPlan) -> GuardSettings {
    let limits = &listener.limits;
    GuardSettings {
        mode: listener.desync_mitigation,
        max_header_bytes: limits.max_header_bytes,
        max_uri_bytes: limits.max_uri_bytes,
        max_body_bytes: limits.max_body_bytes,
        header_timeout: limits.header_timeout.get(),
        body_timeout: limits.body_timeout.get(),
        idle_timeout: listener.idle_timeout,
        classes: listener.metrics.desync_classes.clone(),
    }
}

/// The hyper service of one client connection.
fn service(
    conn: &Conn,
    decisions: Option<Decisions>,
) -> impl hyper::service::Service<
    http::Request<hyper::body::Incoming>,
    Response = http::Response<crate::proxy::ProxyBody>,
    Error = Infallible,
    Future = impl Future<Output = Result<http::Response<crate::proxy::ProxyBody>, Infallible>> + Send,
> + Clone
       + Send
       + 'static {
    let (state, name, client) = (Arc::clone(&conn.state), Arc::clone(&conn.name), conn.client);
    service_fn(move |req| {
        let state = Arc::clone(&state);
        let name = Arc::clone(&name);
        // HTTP/1.1 answers in order, so the guard's decisions come in the same order.
        let decision = decisions.as_ref().and_then(|d| d.lock().unwrap_or_else(|p| p.into_inner()).pop_front());
        async move { Ok::<_, Infallible>(dispatch::handle(&state, &name, client, req, decision).await) }
    })
}

/// Serves an HTTP/1 connection through the guard: ballast's own engine takes the requests it
/// can; hyper gets the connection for the others, until it idles. A keep-alive connection
/// that idles in hyper is taken out of it (hyper holds its buffers) and goes back to the
/// engine, which holds none between requests.
async fn serve_guarded<S>(mut io: GuardedIo<S>, conn: Conn)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    if !io.wait_for_request().await {
        return;
    }
    let decisions = io.decisions();
    if io.is_http2_preface() {
        // h2c with prior knowledge: the guard lets it through, hyper's auto builder serves it.
        return Box::pin(serve_connection(io, conn, Some(decisions))).await;
    }
    let service = service(&conn, Some(decisions));
    loop {
        // Boxed, so that a connection waiting for its next request keeps a small task.
        let read = match Box::pin(super::http1::serve(&mut io, &conn.state, &conn.name, conn.client)).await {
            super::http1::Outcome::Closed => return,
            super::http1::Outcome::Hyper(read) => read,
        };
        let mut builder = hyper::server::conn::http1::Builder::new();
        // The guard times heads, bodies and idleness itself: hyper's header timer is off.
        builder.timer(TokioTimer::new()).header_read_timeout(None).keep_alive(true).half_close(true);
        // On the heap, so that a parked connection's task is small: hyper's state (and its
        // buffers) exists only while a request is being served.
        let stream = Prefixed::new(read, io);
        let mut connection = Box::pin(builder.serve_connection(TokioIo::new(stream), service.clone()).with_upgrades());
        if (&mut connection).await.is_err() {
            return;
        }
        // `None`: upgraded (a WebSocket now owns the connection).
        let Some(parts) = Pin::into_inner(connection).into_parts() else { return };
        let (unread, inner) = parts.io.into_inner().into_parts();
        io = inner;
        if !io.is_parked() || !unread.is_empty() || !parts.read_buf.is_empty() {
            return;
        }
    }
}

async fn serve_connection<S>(stream: S, conn: Conn, decisions: Option<Decisions>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let max_header_bytes = conn.max_header_bytes;
    let service = service(&conn, decisions);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // The guard times heads, bodies and idleness itself (hyper's own header timer would also
    // cut idle keep-alive connections): hyper's is off.
    builder.http1().timer(TokioTimer::new()).header_read_timeout(None).keep_alive(true).half_close(true);
    builder.http2().timer(TokioTimer::new()).max_header_list_size(u32::try_from(max_header_bytes).unwrap_or(u32::MAX));
    // Errors here are a client going away or speaking nonsense; the connection just ends.
    let _ = builder.serve_connection_with_upgrades(TokioIo::new(stream), service).await;
}
