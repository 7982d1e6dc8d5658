//! Real backend servers on 127.0.0.1 for the tests: they answer with their name, record what
//! they received, and on special paths sleep, stream, count uploads or speak WebSocket.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// One request as a backend received it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    pub version: hyper::Version,
    pub headers: Vec<(String, String)>,
    pub tls: bool,
}

impl Seen {
    /// Every value of header `name`, in order.
    pub fn header_values(&self, name: &str) -> Vec<String> {
        self.headers.iter().filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.clone()).collect()
    }

    /// The one value of header `name`, if present.
    pub fn header(&self, name: &str) -> Option<String> {
        self.header_values(name).into_iter().next()
    }
}

/// How a backend is started.
#[derive(Clone, Default)]
pub struct BackendOptions {
    /// Serve TLS with this (cert PEM, key PEM).
    pub tls: Option<(String, String)>,
}

/// A running backend; it stops when the test's runtime ends.
#[derive(Clone)]
pub struct Backend {
    pub name: String,
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    in_flight: Arc<AtomicUsize>,
    checks: Arc<AtomicUsize>,
    health_status: Arc<std::sync::atomic::AtomicU16>,
    stopped: tokio_util::sync::CancellationToken,
}

type Body = BoxBody<Bytes, std::io::Error>;

static CHUNK: [u8; 65536] = [b'x'; 65536];

impl Backend {
    /// A plain HTTP/1.1 and HTTP/2 (prior knowledge) backend.
    pub async fn start(name: &str) -> Backend {
        Self::start_with(name, BackendOptions::default()).await
    }

    /// A backend with options.
    pub async fn start_with(name: &str, options: BackendOptions) -> Backend {
        let socket = bind_std();
        let backend = Backend {
            name: name.to_string(),
            addr: socket.local_addr().expect("bound address"),
            seen: Arc::default(),
            in_flight: Arc::default(),
            checks: Arc::default(),
            health_status: Arc::new(std::sync::atomic::AtomicU16::new(200)),
            stopped: tokio_util::sync::CancellationToken::new(),
        };
        let acceptor = options.tls.map(|(cert, key)| super::certs::acceptor(&cert, &key));
        let b = backend.clone();
        runtime().spawn(async move {
            let socket = TcpListener::from_std(socket).expect("a tokio listener");
            loop {
                let accepted = tokio::select! {
                    accepted = socket.accept() => accepted,
                    _ = b.stopped.cancelled() => return,
                };
                let Ok((tcp, _)) = accepted else { return };
                let b = b.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    match acceptor {
                        Some(acceptor) => {
                            if let Ok(tls) = acceptor.accept(tcp).await {
                                b.serve(TokioIo::new(tls), true).await;
                            }
                        }
                        None => b.serve(TokioIo::new(tcp), false).await,
                    }
                });
            }
        });
        backend
    }

    async fn serve<I>(self, io: I, tls: bool)
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let stopped = self.stopped.clone();
        let service = service_fn(move |req| {
            let b = self.clone();
            async move { Ok::<_, Infallible>(b.answer(req, tls).await) }
        });
        let builder = auto::Builder::new(TokioExecutor::new());
        tokio::select! {
            _ = builder.serve_connection_with_upgrades(io, service) => {}
            _ = stopped.cancelled() => {}
        }
    }

    async fn answer(&self, mut req: Request<Incoming>, tls: bool) -> Response<Body> {
        let seen = Seen {
            method: req.method().to_string(),
            uri: req.uri().to_string(),
            version: req.version(),
            headers: req
                .headers()
                .iter()
                .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
                .collect(),
            tls,
        };
        let is_check =
            req.headers().get("user-agent").is_some_and(|ua| ua.as_bytes().starts_with(b"ballast-health-check"));
        if is_check {
            self.checks.fetch_add(1, Ordering::SeqCst);
            let status = StatusCode::from_u16(self.health_status.load(Ordering::SeqCst)).unwrap_or(StatusCode::OK);
            return text(status, "check".into());
        }
        self.seen.lock().expect("seen lock").push(seen);
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let _done = InFlight(Arc::clone(&self.in_flight));
        let path = req.uri().path().to_string();
        if let Some(key) = req.headers().get("sec-websocket-key").cloned() {
            let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
            let upgrade = hyper::upgrade::on(&mut req);
            let name = self.name.clone();
            tokio::spawn(async move {
                if let Ok(upgraded) = upgrade.await {
                    let mut ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
                    while let Some(Ok(msg)) = ws.next().await {
                        let reply = match msg {
                            Message::Text(t) => Message::Text(format!("{name}: {t}")),
                            Message::Close(_) => break,
                            _ => continue,
                        };
                        if ws.send(reply).await.is_err() {
                            break;
                        }
                    }
                }
            });
            return Response::builder()
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header("connection", "upgrade")
                .header("upgrade", "websocket")
                .header("sec-websocket-accept", accept)
                .body(empty())
                .expect("a valid 101");
        }
        if let Some(ms) = path.strip_prefix("/sleep/").and_then(|v| v.parse().ok()) {
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        if let Some(n) = path.strip_prefix("/download/").and_then(|v| v.parse::<u64>().ok()) {
            let chunks = n / CHUNK.len() as u64;
            let stream = futures_util::stream::iter(
                (0..chunks).map(|_| Ok::<_, std::io::Error>(Frame::data(Bytes::from_static(&CHUNK)))),
            );
            return Response::builder()
                .header("content-length", (chunks * CHUNK.len() as u64).to_string())
                .body(BoxBody::new(StreamBody::new(stream)))
                .expect("a valid response");
        }
        if path == "/upload" {
            let mut body = req.into_body();
            let mut total: u64 = 0;
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(frame) => total += frame.data_ref().map_or(0, |d| d.len() as u64),
                    Err(_) => return text(StatusCode::BAD_REQUEST, "broken upload".into()),
                }
            }
            return text(StatusCode::OK, total.to_string());
        }
        let mut response = text(StatusCode::OK, self.name.clone());
        response.headers_mut().insert("x-backend", self.name.parse().expect("a header-safe name"));
        if path == "/login" {
            let cookie = "SESSIONID=s3cr3t; Path=/".parse().expect("a cookie");
            response.headers_mut().insert("set-cookie", cookie);
        }
        response
    }

    /// Every request received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().expect("seen lock").clone()
    }

    /// The last request received.
    pub fn last(&self) -> Seen {
        self.seen().pop().expect("the backend received a request")
    }

    /// Stops the backend: no new connections, and open ones close.
    pub fn stop(&self) {
        self.stopped.cancel();
    }

    /// Health checks received so far (not counted in `seen`).
    pub fn checks(&self) -> usize {
        self.checks.load(Ordering::SeqCst)
    }

    /// Makes health checks answer `status` from now on.
    pub fn set_health_status(&self, status: u16) {
        self.health_status.store(status, Ordering::SeqCst);
    }

    /// Requests being answered right now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// `{ address = "ADDR" }` for a config's target list.
    pub fn target(&self) -> String {
        format!("{{ address = \"{}\" }}", self.addr)
    }
}

struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

fn empty() -> Body {
    BoxBody::new(Full::new(Bytes::new()).map_err(|never| match never {}))
}

fn text(status: StatusCode, body: String) -> Response<Body> {
    Response::builder()
        .status(status)
        .body(BoxBody::new(Full::new(Bytes::from(body)).map_err(|never| match never {})))
        .expect("a valid response")
}

/// A backend that reads a request head and closes the connection without answering.
pub async fn start_hang_up() -> SocketAddr {
    let socket = bind_std();
    let addr = socket.local_addr().expect("address");
    runtime().spawn(async move {
        let socket = TcpListener::from_std(socket).expect("a tokio listener");
        while let Ok((mut tcp, _)) = socket.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tcp.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = tcp.shutdown().await;
            });
        }
    });
    addr
}

/// An address on which nothing listens: a socket is bound to it but never listens, so a
/// connect is refused, and it is held for the rest of the test run so that no other test's
/// listener can take the port.
pub async fn closed_port() -> SocketAddr {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("a socket");
    socket.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into()).expect("binds");
    let addr = socket.local_addr().expect("address").as_socket().expect("an IP address");
    static HELD: Mutex<Vec<Socket>> = Mutex::new(Vec::new());
    HELD.lock().expect("not poisoned").push(socket);
    addr
}

/// The runtime the backends run on: their own, so a test blocked waiting for ballast (or
/// ballast's health checks at start) never waits on the test's runtime.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("the backends' runtime starts")
    })
}

/// A bound, non-blocking loopback listener, ready for `TcpListener::from_std` on `runtime()`.
fn bind_std() -> std::net::TcpListener {
    let socket = std::net::TcpListener::bind("127.0.0.1:0").expect("backend binds");
    socket.set_nonblocking(true).expect("non-blocking");
    socket
}
