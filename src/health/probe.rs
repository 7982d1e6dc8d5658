//! One active health check of one target: connect, ask once, judge the answer.

use std::io;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use http::header::{CONNECTION, HOST, USER_AGENT};
use http::uri::Authority;
use http::Request;
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::Matcher;
use crate::config::{HealthCheck, HealthCheckProtocol};
use crate::proxy::connector::AnyTargetCertificate;

/// The `User-Agent` of every HTTP health check, so targets can tell checks from traffic.
const USER_AGENT_VALUE: &str = "ballast-health-check/1";

/// What one check found, with ELB's reason code when it failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeOutcome {
    Pass,
    Fail(FailReason),
}

/// Why a check failed, as ELB reports it for a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailReason {
    /// No answer within the check's `timeout`: `Target.Timeout`.
    Timeout,
    /// The target answered with a status the matcher refuses: `Target.ResponseCodeMismatch`.
    ResponseCodeMismatch(u16),
    /// The connection was refused, reset, or carried no HTTP answer: `Target.FailedHealthChecks`.
    ConnectionFailed,
}

impl FailReason {
    /// ELB's reason code, as the admin API shows it.
    pub fn code(&self) -> &'static str {
        match self {
            FailReason::Timeout => "Target.Timeout",
            FailReason::ResponseCodeMismatch(_) => "Target.ResponseCodeMismatch",
            FailReason::ConnectionFailed => "Target.FailedHealthChecks",
        }
    }
}

/// Checks `host:port` (an authority such as `127.0.0.1:8080`, `[::1]:80` or
/// `app.internal:8080`) once, as the group's health check says: a TCP connect for `tcp`, a
/// `GET {path}` with `Host: {host_header}` for `http` and `https`, judged by `matcher`.
///
/// The caller decides the port: it resolves the check's `port` (`traffic-port` or a number)
/// against the target and passes the result in `authority`; `check.port` is not read here.
/// The whole check, connect included, is bounded by `check.timeout`. An `https` check accepts
/// any target certificate, as ELB does, and sends SNI when the host is a DNS name. Only the
/// status line is awaited: the response body is never read.
pub async fn probe(check: &HealthCheck, matcher: &Matcher, authority: &str, host_header: &str) -> ProbeOutcome {
    let attempt = async {
        let tcp = connect(authority).await?;
        let status = match check.protocol.unwrap_or_default() {
            HealthCheckProtocol::Tcp => return Ok(ProbeOutcome::Pass),
            HealthCheckProtocol::Http => ask(tcp, &check.path, host_header, authority).await?,
            HealthCheckProtocol::Https => {
                let tls = handshake(tcp, authority).await?;
                ask(tls, &check.path, host_header, authority).await?
            }
        };
        Ok(if matcher.matches(status) {
            ProbeOutcome::Pass
        } else {
            ProbeOutcome::Fail(FailReason::ResponseCodeMismatch(status))
        })
    };
    match tokio::time::timeout(check.timeout.get(), attempt).await {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(reason)) => ProbeOutcome::Fail(reason),
        Err(_) => ProbeOutcome::Fail(FailReason::Timeout),
    }
}

async fn connect(authority: &str) -> Result<TcpStream, FailReason> {
    let tcp = TcpStream::connect(authority).await.map_err(|e| failed(authority, "connect", e))?;
    // A check is one small request: Nagle would only delay it.
    tcp.set_nodelay(true).map_err(|e| failed(authority, "connect", e))?;
    Ok(tcp)
}

async fn handshake(tcp: TcpStream, authority: &str) -> Result<tokio_rustls::client::TlsStream<TcpStream>, FailReason> {
    // An IP address becomes `ServerName::IpAddress`, for which rustls sends no SNI.
    let name = authority
        .parse::<Authority>()
        .ok()
        .map(|a| a.host().trim_matches(|c| c == '[' || c == ']').to_string())
        .and_then(|host| ServerName::try_from(host).ok())
        .ok_or_else(|| {
            let e = io::Error::new(io::ErrorKind::InvalidInput, "not a `host:port` authority");
            failed(authority, "TLS", e)
        })?;
    tls_connector().connect(name, tcp).await.map_err(|e| failed(authority, "TLS", e))
}

/// Sends one `GET` and returns the response status; the body is dropped unread.
async fn ask<T>(io: T, path: &str, host_header: &str, authority: &str) -> Result<u16, FailReason>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let request = Request::get(path)
        .header(HOST, host_header)
        .header(USER_AGENT, USER_AGENT_VALUE)
        .header(CONNECTION, "close")
        .body(Empty::<Bytes>::new())
        .map_err(|e| failed(authority, "HTTP", io::Error::new(io::ErrorKind::InvalidInput, e)))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| failed(authority, "HTTP", io::Error::other(e)))?;
    let response = sender.send_request(request);
    tokio::pin!(conn, response);
    // The connection is driven here rather than spawned, so it ends with this check. Once it
    // finishes, the response future holds either the answer or the reason there is none.
    let mut conn_done = false;
    let response = loop {
        tokio::select! {
            biased;
            response = &mut response => break response,
            _ = &mut conn, if !conn_done => conn_done = true,
        }
    };
    response.map(|r| r.status().as_u16()).map_err(|e| failed(authority, "HTTP", io::Error::other(e)))
}

/// Logs why a check could not get an answer; the reason code alone does not say.
fn failed(authority: &str, stage: &str, error: io::Error) -> FailReason {
    tracing::debug!(target_address = %authority, stage, error = %error, "health check failed");
    FailReason::ConnectionFailed
}

/// One TLS client for all checks, so targets' sessions can be resumed between checks.
fn tls_connector() -> &'static TlsConnector {
    static TLS: OnceLock<TlsConnector> = OnceLock::new();
    TLS.get_or_init(|| {
        let mut config = ClientConfig::builder_with_provider(crate::listener::tls::provider())
            .with_safe_default_protocol_versions()
            .expect("the aws-lc-rs provider supports the default TLS versions")
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyTargetCertificate))
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        TlsConnector::from(Arc::new(config))
    })
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::net::SocketAddr;
    use std::time::Duration as StdDuration;

    use hyper::service::service_fn;
    use hyper::{Response, StatusCode};
    use rustls::ServerConfig;
    use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    use tokio::net::TcpListener;
    use tokio::sync::mpsc;
    use tokio_rustls::TlsAcceptor;

    use super::*;
    use crate::config::Duration;

    /// What a test target saw of one check.
    #[derive(Debug)]
    struct Seen {
        path: String,
        headers: http::HeaderMap,
        sni: Option<String>,
    }

    /// A target answering every request with `status`, over TLS when `tls` is given.
    async fn target(status: u16, tls: Option<TlsAcceptor>) -> (SocketAddr, mpsc::UnboundedReceiver<Seen>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (seen_tx, seen_rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    return;
                };
                let (tls, seen_tx) = (tls.clone(), seen_tx.clone());
                tokio::spawn(async move {
                    let (io, sni): (Box<dyn Io>, _) = match tls {
                        Some(acceptor) => {
                            let Ok(stream) = acceptor.accept(tcp).await else {
                                return;
                            };
                            let sni = stream.get_ref().1.server_name().map(str::to_string);
                            (Box::new(stream), sni)
                        }
                        None => (Box::new(tcp), None),
                    };
                    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let _ = seen_tx.send(Seen {
                            path: req.uri().to_string(),
                            headers: req.headers().clone(),
                            sni: sni.clone(),
                        });
                        let mut res = Response::new(Empty::<Bytes>::new());
                        *res.status_mut() = StatusCode::from_u16(status).unwrap();
                        async move { Ok::<_, Infallible>(res) }
                    });
                    let _ =
                        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(io), service).await;
                });
            }
        });
        (addr, seen_rx)
    }

    trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
    impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

    /// A TLS acceptor with a fresh self-signed certificate for `localhost`.
    fn self_signed() -> TlsAcceptor {
        let rcgen::CertifiedKey { cert, key_pair } =
            rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key_pair.serialize_der()));
        let config = ServerConfig::builder_with_provider(crate::listener::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], key)
            .unwrap();
        TlsAcceptor::from(Arc::new(config))
    }

    /// A port on 127.0.0.1 that nothing listens on.
    async fn closed_port() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    }

    fn check(protocol: HealthCheckProtocol) -> HealthCheck {
        HealthCheck {
            protocol: Some(protocol),
            path: "/healthz".into(),
            timeout: Duration(StdDuration::from_secs(5)),
            ..Default::default()
        }
    }

    fn matcher(text: &str) -> Matcher {
        Matcher::parse(text).unwrap()
    }

    async fn probe_http(addr: SocketAddr, matcher_text: &str) -> ProbeOutcome {
        let authority = addr.to_string();
        probe(&check(HealthCheckProtocol::Http), &matcher(matcher_text), &authority, &authority).await
    }

    #[tokio::test]
    async fn http_passes_on_200_and_asks_as_documented() {
        let (addr, mut seen) = target(200, None).await;
        let check = check(HealthCheckProtocol::Http);
        let outcome = probe(&check, &matcher("200"), &addr.to_string(), "app.example").await;
        assert_eq!(outcome, ProbeOutcome::Pass);
        let seen = seen.recv().await.unwrap();
        assert_eq!(seen.path, "/healthz");
        assert_eq!(seen.headers[HOST], "app.example");
        assert_eq!(seen.headers[USER_AGENT], "ballast-health-check/1");
        assert_eq!(seen.headers[CONNECTION], "close");
    }

    #[tokio::test]
    async fn http_fails_with_the_status_when_the_matcher_refuses_it() {
        let (addr, _seen) = target(500, None).await;
        let outcome = probe_http(addr, "200").await;
        assert_eq!(outcome, ProbeOutcome::Fail(FailReason::ResponseCodeMismatch(500)));
        assert_eq!(FailReason::ResponseCodeMismatch(500).code(), "Target.ResponseCodeMismatch");
    }

    #[tokio::test]
    async fn http_passes_on_a_redirect_within_a_range() {
        let (addr, _seen) = target(302, None).await;
        assert_eq!(probe_http(addr, "200-399").await, ProbeOutcome::Pass);
    }

    #[tokio::test]
    async fn http_times_out_when_the_target_accepts_but_never_answers() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((tcp, _)) = listener.accept().await {
                held.push(tcp);
            }
        });
        let check = HealthCheck { timeout: Duration(StdDuration::from_millis(200)), ..Default::default() };
        let started = tokio::time::Instant::now();
        let outcome = probe(&check, &matcher("200"), &addr.to_string(), "t").await;
        assert_eq!(outcome, ProbeOutcome::Fail(FailReason::Timeout));
        assert_eq!(FailReason::Timeout.code(), "Target.Timeout");
        assert!(started.elapsed() < StdDuration::from_secs(2));
    }

    #[tokio::test]
    async fn http_fails_the_connection_on_a_closed_port() {
        let addr = closed_port().await;
        assert_eq!(probe_http(addr, "200").await, ProbeOutcome::Fail(FailReason::ConnectionFailed));
        assert_eq!(FailReason::ConnectionFailed.code(), "Target.FailedHealthChecks");
    }

    #[tokio::test]
    async fn http_fails_the_connection_when_the_target_hangs_up_without_answering() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                drop(tcp);
            }
        });
        assert_eq!(probe_http(addr, "200").await, ProbeOutcome::Fail(FailReason::ConnectionFailed));
    }

    #[tokio::test]
    async fn tcp_passes_on_an_open_port_and_fails_on_a_closed_one() {
        let check = check(HealthCheckProtocol::Tcp);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open = listener.local_addr().unwrap().to_string();
        assert_eq!(probe(&check, &matcher("200"), &open, &open).await, ProbeOutcome::Pass);
        let closed = closed_port().await.to_string();
        assert_eq!(
            probe(&check, &matcher("200"), &closed, &closed).await,
            ProbeOutcome::Fail(FailReason::ConnectionFailed)
        );
    }

    #[tokio::test]
    async fn https_accepts_a_self_signed_certificate() {
        let (addr, mut seen) = target(200, Some(self_signed())).await;
        let authority = addr.to_string();
        let outcome = probe(&check(HealthCheckProtocol::Https), &matcher("200"), &authority, &authority).await;
        assert_eq!(outcome, ProbeOutcome::Pass);
        // An IP address is never sent as SNI.
        assert_eq!(seen.recv().await.unwrap().sni, None);
    }

    #[tokio::test]
    async fn https_sends_sni_for_a_dns_name_and_judges_the_status() {
        let (addr, mut seen) = target(503, Some(self_signed())).await;
        let authority = format!("localhost:{}", addr.port());
        let outcome = probe(&check(HealthCheckProtocol::Https), &matcher("200"), &authority, &authority).await;
        assert_eq!(outcome, ProbeOutcome::Fail(FailReason::ResponseCodeMismatch(503)));
        assert_eq!(seen.recv().await.unwrap().sni.as_deref(), Some("localhost"));
    }

    #[tokio::test]
    async fn https_fails_the_connection_against_a_plain_http_target() {
        let (addr, _seen) = target(200, None).await;
        let authority = addr.to_string();
        let outcome = probe(&check(HealthCheckProtocol::Https), &matcher("200"), &authority, &authority).await;
        assert_eq!(outcome, ProbeOutcome::Fail(FailReason::ConnectionFailed));
    }
}
