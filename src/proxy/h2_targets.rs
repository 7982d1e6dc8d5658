//! HTTP/2 to targets: one multiplexed connection per target on each worker, over which every
//! request goes with the client's host as its `:authority` (RFC 9113, section 8.3.1), while
//! the connection goes to the target's address. (A pool keyed by the request's authority, as
//! hyper-util's is, cannot tell those two apart.)

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::uri::Scheme;
use http::{Request, Response, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http2::{Builder, SendRequest};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tower_service::Service;

use super::connector::Connector;

/// A connection no request used for this long is let go (as hyper-util's pools do): it
/// closes once its last stream ends.
const IDLE: Duration = Duration::from_secs(60);

/// Why a request did not get a response.
#[derive(Debug)]
pub enum SendError {
    /// No connection to the target: refused, timed out, or no HTTP/2 handshake.
    Connect(io::Error),
    /// The connection broke, or the target sent something that is not a response.
    Broken(hyper::Error),
}

/// One worker's HTTP/2 connections to targets, by target address.
pub struct H2Targets {
    connector: Connector,
    by_target: Arc<Mutex<HashMap<String, Open>>>,
}

/// An open connection and when a request last went out on it.
struct Open {
    /// Which connection this is, told apart from a later one to the same target.
    id: u64,
    sender: SendRequest<Incoming>,
    used: Instant,
}

/// Numbers connections.
static NEXT_ID: AtomicU64 = AtomicU64::new(0);

impl H2Targets {
    /// No connections yet; `connector` opens them (plain or TLS with ALPN `h2`).
    pub fn new(connector: Connector) -> Self {
        H2Targets { connector, by_target: Arc::new(Mutex::new(HashMap::new())) }
    }

    /// Sends `request` (whose URI carries the client's authority) to the target at `target`
    /// (`ip:port` or `host:port`), on its connection or a new one. A request the connection
    /// turned away before sending it (the target was closing it) goes once more, on a new one.
    pub async fn send(
        &self,
        scheme: Scheme,
        target: &str,
        mut request: Request<Incoming>,
    ) -> Result<Response<Incoming>, SendError> {
        let mut fresh = false;
        loop {
            let mut sender = match self.open(target) {
                Some(sender) => sender,
                None => {
                    fresh = true;
                    self.connect(scheme.clone(), target).await.map_err(SendError::Connect)?
                }
            };
            // A connection the target has closed, or is closing, takes no new request.
            if let Err(e) = sender.ready().await {
                self.forget(target);
                if fresh {
                    return Err(SendError::Broken(e));
                }
                continue;
            }
            match sender.try_send_request(request).await {
                Ok(response) => return Ok(response),
                Err(mut e) => match e.take_message() {
                    Some(unsent) if !fresh => {
                        self.forget(target);
                        request = unsent;
                    }
                    _ => {
                        if sender.is_closed() {
                            self.forget(target);
                        }
                        return Err(SendError::Broken(e.into_error()));
                    }
                },
            }
        }
    }

    /// The open connection to `target`, marked used; connections idle too long or closed are
    /// let go first.
    fn open(&self, target: &str) -> Option<SendRequest<Incoming>> {
        let mut by_target = self.by_target.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        by_target.retain(|_, open| !open.sender.is_closed() && now.duration_since(open.used) < IDLE);
        let open = by_target.get_mut(target)?;
        open.used = now;
        Some(open.sender.clone())
    }

    /// Lets go of the connection to `target`: the next request opens a new one.
    fn forget(&self, target: &str) {
        self.by_target.lock().unwrap_or_else(|p| p.into_inner()).remove(target);
    }

    /// Opens a connection to `target` and starts HTTP/2 on it.
    async fn connect(&self, scheme: Scheme, target: &str) -> io::Result<SendRequest<Incoming>> {
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
        self.by_target.lock().unwrap_or_else(|p| p.into_inner()).insert(target.to_string(), open);
        tokio::spawn(let_go_when_idle(Arc::clone(&self.by_target), target.to_string(), id));
        Ok(sender)
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
