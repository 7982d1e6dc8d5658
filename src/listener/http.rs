//! `http` and `https` listeners: accept, TLS, then HTTP/1.1 or HTTP/2 on each connection.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::net::SocketAddr;
use tokio::io::{AsyncRead, AsyncWrite};

use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;

use super::counted_io::CountedIo;
use super::dispatch;
use super::gather::Gathered;
use crate::guard::connection_limits::Permit;
use crate::guard::http1_stream::{Decisions, GuardedIo};
use crate::l4::prefixed::{read_proxy_header, Prefixed};
use crate::metrics::GaugeGuard;
use crate::proxy::Client;
use crate::state::State;

/// Accepts connections for the listener `name` until the process ends.
pub async fn serve(socket: super::accept::Listening, state: Arc<State>, name: String) {
    let name: Arc<str> = name.into();
    let accepting = Arc::clone(&name);
    super::accept::accept_each(socket, &accepting, move |tcp, peer| serve_client(tcp, peer, state, name)).await;
}

/// Serves one client connection. Admission, the PROXY header and the TLS handshake run
/// boxed, apart: a plain connection waiting for its next request keeps only what serving
/// it needs (see `bench/RESULTS.md`, idle connections).
async fn serve_client(tcp: TcpStream, peer: SocketAddr, state: Arc<State>, name: Arc<str>) {
    // Futures keep every value that lives across an `.await`, and moved values too: the
    // connection's state travels boxed, so the task holds it once.
    let opening = Box::pin(open(tcp, peer, state, name));
    let opened = opening.await;
    match opened {
        Some(Opened::Plain(session)) => serve_guarded(session).await,
        Some(Opened::Tls(serving)) => serving.await,
        None => {}
    }
}

/// A connection ready for requests.
enum Opened {
    Plain(Box<Session<Prefixed<CountedIo<TcpStream>>>>),
    /// TLS state is large: a TLS connection is served in its own box.
    Tls(Pin<Box<dyn Future<Output = ()> + Send>>),
}

/// Admits the connection, reads its PROXY header when the listener expects one, and
/// completes TLS on `https` listeners; `None` when the connection is refused or fails.
async fn open(tcp: TcpStream, peer: SocketAddr, state: Arc<State>, name: Arc<str>) -> Option<Opened> {
    let local_port = tcp.local_addr().map_or(0, |a| a.port());
    let snapshot = state.snapshot();
    let listener = snapshot.listener(&name)?;
    let permit = crate::guard::admit_connection(&state, listener, peer.ip())?;
    listener.metrics.new_connections.inc();
    let open = GaugeGuard::inc(listener.metrics.active_connections.clone());
    let header_timeout = listener.limits.header_timeout.get();
    let guard = Arc::clone(&listener.guard);
    let max_header_bytes = listener.limits.max_header_bytes;
    let tls = listener.tls.clone();
    let expect_proxy_header = listener.proxy_protocol;
    let tcp = CountedIo::new(tcp, listener.metrics.processed_bytes.clone());
    drop(snapshot);
    // Behind another balancer, the client is who the PROXY header says; a connection
    // without a valid header is refused.
    let (peer, tcp) = if expect_proxy_header {
        match read_proxy_header(tcp, header_timeout).await {
            Ok((header, rest)) => (header.source.unwrap_or(peer), rest),
            Err(e) => {
                tracing::debug!(listener = %name, client = %peer, error = %e, "refused a connection");
                return None;
            }
        }
    } else {
        (peer, Prefixed::new(Vec::new(), tcp))
    };
    let protocol = if tls.is_some() { "https" } else { "http" };
    let client = Client { peer, protocol, listener_port: local_port };
    let conn = Conn { state, name, client, max_header_bytes, _admitted: (permit, open) };
    let Some(tls) = tls else {
        let io = GuardedIo::new(tcp, guard);
        return Some(Opened::Plain(Box::new(Session { io: Some(io), conn })));
    };
    let accepted = tokio::time::timeout(header_timeout, TlsAcceptor::from(tls).accept(tcp)).await;
    let Ok(Ok(stream)) = accepted else {
        conn.state.metrics.tls_handshake_errors.inc();
        return None;
    };
    Some(Opened::Tls(Box::pin(async move {
        if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
            // HTTP/2 frames its messages itself: no request-smuggling framing to guard.
            serve_http2(stream, &conn).await;
        } else {
            let io = GuardedIo::new(stream, guard);
            serve_guarded(Box::new(Session { io: Some(io), conn })).await;
        }
    })))
}

/// What serving one client connection needs.
struct Conn {
    state: Arc<State>,
    name: Arc<str>,
    client: Client,
    max_header_bytes: usize,
    /// Held while the connection lives: its place under the connection limits, and its
    /// count among the listener's active connections.
    _admitted: (Permit, GaugeGuard),
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
        // Boxed: hyper spawns a task per HTTP/2 stream, which copies the future it is given; a
        // request's whole handling is kilobytes, a box is a pointer (d measured 7% faster).
        // The request is boxed too: each async function it passes through would otherwise
        // keep a copy's room in the future, and below 1 KiB the box comes from the allocator's
        // per-thread cache.
        async move { Ok::<_, Infallible>(Box::pin(dispatch::handle(&state, &name, &client, Box::new(req), decision)).await) }
    })
}

/// Serves an HTTP/1 connection through the guard: ballast's own engine takes the requests it
/// can; hyper gets the connection for the others, until it idles. A keep-alive connection
/// that idles in hyper is taken out of it (hyper holds its buffers) and goes back to the
/// engine, which holds none between requests.
async fn serve_guarded<S>(mut session: Box<Session<S>>)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Everything the connection keeps between requests is in `session`; each step of
    // serving is boxed, so the task of a waiting connection holds little more than that.
    loop {
        let Some(io) = session.io.as_mut() else { return };
        if !io.has_buffered() && !io.wait_for_request().await {
            return;
        }
        let step = Box::pin(serve_burst(&mut session));
        if !step.await {
            return;
        }
    }
}

/// The hyper service of a client connection.
trait HyperService:
    hyper::service::Service<
        http::Request<hyper::body::Incoming>,
        Response = http::Response<crate::proxy::ProxyBody>,
        Error = Infallible,
    > + Send
    + 'static
{
}

impl<T> HyperService for T where
    T: hyper::service::Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<crate::proxy::ProxyBody>,
            Error = Infallible,
        > + Send
        + 'static
{
}

/// A guarded client connection between requests.
struct Session<S> {
    /// `None` once the connection has ended.
    io: Option<GuardedIo<S>>,
    conn: Conn,
}

/// Serves what the client has sent: by the engine, or by hyper until it idles. `false`
/// when the connection has ended.
async fn serve_burst<S>(session: &mut Session<S>) -> bool
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // The connection stays in its session while the engine serves it: moved out, it would
    // take its room (a TLS connection's is over a kilobyte) in this future too.
    let conn = &session.conn;
    let Some(io) = session.io.as_mut() else { return false };
    if io.is_http2_preface() {
        // h2c with prior knowledge: the guard lets it through (no HTTP/1 head came before it,
        // so it has no decisions), hyper's HTTP/2 server serves it.
        let serving = session.io.take().map(|io| Box::pin(serve_http2(io, conn)));
        if let Some(serving) = serving {
            serving.await;
        }
        return false;
    }
    let read = match super::http1::serve(io, &conn.state, &conn.name, &conn.client).await {
        super::http1::Outcome::Closed => {
            session.io = None;
            return false;
        }
        super::http1::Outcome::Idle => return true,
        super::http1::Outcome::Hyper(read) => read,
    };
    // Boxed, as the HTTP/2 branch: hyper's connection is kilobytes, and the engine's bursts
    // (most of them) need not carry its room; the connection moves in before any wait.
    let serving = {
        let Some(mut io) = session.io.take() else { return false };
        let service = service(conn, Some(io.share_decisions()));
        Box::pin(serve_in_hyper(io, read, service))
    };
    session.io = serving.await;
    let Some(io) = session.io.as_mut() else { return false };
    // Parked: its next request goes to the engine first, with the decisions back.
    io.own_decisions();
    io.release_buffers();
    true
}

/// Lets hyper serve the connection, starting with the bytes in `read`, until it ends (`None`)
/// or idles: hyper then hands it back, parked.
async fn serve_in_hyper<S, Svc>(io: GuardedIo<S>, read: Vec<u8>, service: Svc) -> Option<GuardedIo<S>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    Svc: HyperService,
    Svc::Future: Send + 'static,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    // The guard times heads, bodies and idleness itself: hyper's header timer is off.
    builder.timer(TokioTimer::new()).header_read_timeout(None).keep_alive(true).half_close(true);
    let mut connection = builder.serve_connection(TokioIo::new(Prefixed::new(read, io)), service).with_upgrades();
    if Pin::new(&mut connection).await.is_err() {
        return None;
    }
    // `None`: upgraded (a WebSocket now owns the connection).
    let parts = connection.into_parts()?;
    let (unread, io) = parts.io.into_inner().into_parts();
    (io.is_parked() && unread.is_empty() && parts.read_buf.is_empty()).then_some(io)
}

/// Serves an HTTP/2 connection (ALPN `h2`, or the h2c preface) until it ends.
async fn serve_http2<S>(stream: S, conn: &Conn)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let max_header_bytes = conn.max_header_bytes;
    let service = service(conn, None);
    // HTTP/2 only, whatever the first bytes say: HTTP/1 is served through the guard, and a
    // client that chose h2 by ALPN (or sent the h2c preface) must not get around it.
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder.timer(TokioTimer::new()).max_header_list_size(u32::try_from(max_header_bytes).unwrap_or(u32::MAX));
    // Errors here are a client going away or speaking nonsense; the connection just ends.
    // Answers go out gathered (see `gather`).
    let _ = builder.serve_connection(TokioIo::new(Gathered::new(stream)), service).await;
}
