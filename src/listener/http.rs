//! `http` and `https` listeners: accept, TLS, then HTTP/1.1 or HTTP/2 on each connection.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::dispatch;
use crate::proxy::Client;
use crate::state::State;

/// Accepts connections for the listener `name` until the process ends.
pub async fn serve(socket: TcpListener, state: Arc<State>, name: String) {
    let name: Arc<str> = name.into();
    loop {
        let (tcp, peer) = match socket.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors or a connection reset before accept: back off briefly.
                tracing::warn!(listener = %name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let local_port = tcp.local_addr().map_or(0, |a| a.port());
        let state = Arc::clone(&state);
        let name = Arc::clone(&name);
        tokio::spawn(async move {
            let snapshot = state.snapshot();
            let Some(listener) = snapshot.listener(&name) else {
                return;
            };
            let header_timeout = listener.limits.header_timeout.get();
            match listener.tls.clone() {
                Some(tls) => {
                    drop(snapshot);
                    let Ok(Ok(stream)) =
                        tokio::time::timeout(header_timeout, TlsAcceptor::from(tls).accept(tcp))
                            .await
                    else {
                        return;
                    };
                    let client = Client {
                        peer,
                        protocol: "https",
                        listener_port: local_port,
                    };
                    serve_connection(stream, state, name, client, header_timeout).await;
                }
                None => {
                    drop(snapshot);
                    let client = Client {
                        peer,
                        protocol: "http",
                        listener_port: local_port,
                    };
                    serve_connection(tcp, state, name, client, header_timeout).await;
                }
            }
        });
    }
}

async fn serve_connection<S>(
    stream: S,
    state: Arc<State>,
    name: Arc<str>,
    client: Client,
    header_timeout: Duration,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| {
        let state = Arc::clone(&state);
        let name = Arc::clone(&name);
        async move { Ok::<_, Infallible>(dispatch::handle(&state, &name, client, req).await) }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    // Errors here are a client going away or speaking nonsense; the connection just ends.
    let _ = builder
        .serve_connection_with_upgrades(TokioIo::new(stream), service)
        .await;
}
