//! HTTP/2 to targets: one multiplexed connection per target on each worker, over which every
//! request goes with the client's host as its `:authority` (RFC 9113, section 8.3.1), while
//! the connection goes to the target's address. (A pool keyed by the request's authority, as
//! hyper-util's is, cannot tell those two apart.)

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::Scheme;
use http::{HeaderMap, Method, Request, Response, Uri, Version};
use http_body_util::{Either, Empty};
use hyper::body::{Body as _, Incoming};
use hyper::client::conn::http2::{Builder, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tower_service::Service;

use super::connector::Connector;

/// A connection no request used for this long is let go (as hyper-util's pools do): it
/// closes once its last stream ends.
const IDLE: Duration = Duration::from_secs(60);

/// Connections tried for one request, at most (each closing as the request came).
const ATTEMPTS: usize = 4;

/// Why a request did not get a response.
#[derive(Debug)]
pub enum SendError {
    /// No connection to the target: refused, timed out, or no HTTP/2 handshake.
    Connect(io::Error),
    /// The connection broke, or the target sent something that is not a response.
    Broken(hyper::Error),
    /// The target refused the request unprocessed (`REFUSED_STREAM`), and it had a body, or
    /// was refused twice.
    Refused,
    /// The target reset the request's stream for another reason; the connection stays.
    Reset,
}

/// What goes to a target: the client's body, or none when a body-less request goes again.
type Body = Either<Incoming, Empty<Bytes>>;

/// One worker's HTTP/2 connections to targets, by target address.
pub struct H2Targets {
    connector: Connector,
    /// Open connections by scheme and target address (`http://10.0.0.5:8080`).
    by_target: Arc<Mutex<HashMap<String, Open>>>,
    /// Whose turn it is to connect, by the same keys.
    connecting: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// An open connection and when a request last went out on it.
struct Open {
    /// Which connection this is, told apart from a later one to the same target.
    id: u64,
    sender: SendRequest<Body>,
    used: Instant,
}

/// Numbers connections.
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

impl H2Targets {
    /// No connections yet; `connector` opens them (plain or TLS with ALPN `h2`).
    pub fn new(connector: Connector) -> Self {
        H2Targets { connector, by_target: Arc::new(Mutex::new(HashMap::new())), connecting: Mutex::new(HashMap::new()) }
    }

    /// Sends `request` (whose URI carries the client's authority) to the target at `target`
    /// (`ip:port` or `host:port`), on its connection or a new one. A request goes once more,
    /// on a new connection, when the connection turned it away unsent (the target was closing
    /// it), or when the target refused its stream (`REFUSED_STREAM`: not processed, RFC 9113
    /// section 8.7) and it has no body to send again.
    pub async fn send(
        &self,
        scheme: Scheme,
        target: &str,
        request: Request<Incoming>,
    ) -> Result<Response<Incoming>, SendError> {
        // An `https` and an `http` group may name the same address: never one connection.
        let key = format!("{scheme}://{target}");
        let mut again = request.body().is_end_stream().then(|| Resend::of(&request));
        let mut request = request.map(Either::Left);
        let mut fresh = false;
        for _ in 0..ATTEMPTS {
            let (id, mut sender) = match self.open(&key) {
                Some(open) => open,
                None => {
                    fresh = true;
                    self.connect_once(&key, scheme.clone(), target).await.map_err(SendError::Connect)?
                }
            };
            // A connection the target has closed, or is closing, takes no new request.
            if let Err(e) = sender.ready().await {
                self.forget(&key, id);
                if fresh {
                    return Err(SendError::Broken(e));
                }
                continue;
            }
            match sender.try_send_request(request).await {
                Ok(response) => return Ok(response),
                Err(mut e) => match e.take_message() {
                    Some(unsent) if !fresh => {
                        self.forget(&key, id);
                        request = unsent;
                    }
                    _ => {
                        let e = e.into_error();
                        if sender.is_closed() {
                            self.forget(&key, id);
                        }
                        match reset_reason(&e) {
                            // Once more, on the same connection if it stays open.
                            Some(h2::Reason::REFUSED_STREAM) => match again.take() {
                                Some(resend) => request = resend.request(),
                                None => return Err(SendError::Refused),
                            },
                            Some(_) => return Err(SendError::Reset),
                            None => return Err(SendError::Broken(e)),
                        }
                    }
                },
            }
        }
        Err(SendError::Connect(io::Error::other("the target's connections kept closing")))
    }

    /// The open connection under `key`, marked used. (Idle ones are let go by their own task,
    /// `let_go_when_idle`; a closed one fails `ready` in `send`, which forgets it.)
    fn open(&self, key: &str) -> Option<(u64, SendRequest<Body>)> {
        let mut by_target = self.by_target.lock().unwrap_or_else(|p| p.into_inner());
        let open = by_target.get_mut(key)?;
        open.used = Instant::now();
        Some((open.id, open.sender.clone()))
    }

    /// Lets go of connection `id` under `key`, if it is still the one there: the next request
    /// opens a new one.
    fn forget(&self, key: &str, id: u64) {
        let mut by_target = self.by_target.lock().unwrap_or_else(|p| p.into_inner());
        if by_target.get(key).is_some_and(|open| open.id == id) {
            by_target.remove(key);
        }
    }

    /// A connection under `key`: one opened by whoever connects first, while the others wait
    /// for it, so that requests arriving together open one connection, not one each.
    async fn connect_once(&self, key: &str, scheme: Scheme, target: &str) -> io::Result<(u64, SendRequest<Body>)> {
        let turn = {
            let mut connecting = self.connecting.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(connecting.entry(key.to_string()).or_default())
        };
        let _turn = turn.lock().await;
        if let Some(open) = self.open(key) {
            return Ok(open);
        }
        self.connect(key, scheme, target).await
    }

    /// Opens a connection to `target`, starts HTTP/2 on it and keeps it under `key`.
    async fn connect(&self, key: &str, scheme: Scheme, target: &str) -> io::Result<(u64, SendRequest<Body>)> {
        let uri = Uri::builder()
            .scheme(scheme)
            .authority(target)
            .path_and_query("/")
            .build()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        let io = self.connector.clone().call(uri).await?;
        let (sender, connection) = Builder::new(TokioExecutor::new())
            .timer(TokioTimer::new())
            .handshake(io)
            .await
            .map_err(io::Error::other)?;
        // The connection runs until the target closes it, or every sender is gone.
        tokio::spawn(connection);
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let open = Open { id, sender: sender.clone(), used: Instant::now() };
        self.by_target.lock().unwrap_or_else(|p| p.into_inner()).insert(key.to_string(), open);
        tokio::spawn(let_go_when_idle(Arc::clone(&self.by_target), key.to_string(), id));
        Ok((id, sender))
    }
}

/// Drops connection `id` to `target` from `by_target` once no request has used it for
/// [`IDLE`], or when it is gone already.
async fn let_go_when_idle(by_target: Arc<Mutex<HashMap<String, Open>>>, target: String, id: u64) {
    let mut wait = IDLE;
    loop {
        tokio::time::sleep(wait).await;
        let mut by_target = by_target.lock().unwrap_or_else(|p| p.into_inner());
        let Some(open) = by_target.get(&target).filter(|open| open.id == id) else { return };
        let idle = open.used.elapsed();
        if idle >= IDLE || open.sender.is_closed() {
            by_target.remove(&target);
            return;
        }
        wait = IDLE - idle;
    }
}

/// A body-less request's head, kept to send it again.
struct Resend {
    method: Method,
    uri: Uri,
    version: Version,
    headers: HeaderMap,
}

impl Resend {
    fn of(request: &Request<Incoming>) -> Self {
        Resend {
            method: request.method().clone(),
            uri: request.uri().clone(),
            version: request.version(),
            headers: request.headers().clone(),
        }
    }

    fn request(self) -> Request<Body> {
        let mut request = Request::new(Either::Right(Empty::new()));
        *request.method_mut() = self.method;
        *request.uri_mut() = self.uri;
        *request.version_mut() = self.version;
        *request.headers_mut() = self.headers;
        request
    }
}

/// The reason the target reset the request's stream, when it did (a stream-level error, not
/// the connection's).
fn reset_reason(error: &hyper::Error) -> Option<h2::Reason> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            return h2.is_reset().then(|| h2.reason()).flatten();
        }
        source = e.source();
    }
    None
}
