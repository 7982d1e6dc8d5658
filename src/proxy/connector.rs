//! Opens connections to targets, plain or TLS, and counts them per target.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::target_group::TargetRegistry;

/// How long a connection to a target may take, as ELB's 10 s.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Connects to the authority of each request URI; `https` URIs get TLS.
#[derive(Clone)]
pub struct Connector {
    tls: TlsConnector,
    registry: Arc<TargetRegistry>,
}

impl Connector {
    /// A connector offering `alpn` over TLS; counts connections in `registry`.
    pub fn new(alpn: &[&[u8]], registry: Arc<TargetRegistry>) -> Self {
        Connector { tls: target_tls(alpn), registry }
    }
}

/// A TLS client for targets, offering `alpn`; target certificates are not verified (see
/// `AnyTargetCertificate`).
pub fn target_tls(alpn: &[&[u8]]) -> TlsConnector {
    let mut config = ClientConfig::builder_with_provider(crate::listener::tls::provider())
        .with_safe_default_protocol_versions()
        .expect("the aws-lc-rs provider supports the default TLS versions")
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyTargetCertificate))
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsConnector::from(Arc::new(config))
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<TargetStream>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<Self::Response>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let tls = self.tls.clone();
        let registry = Arc::clone(&self.registry);
        Box::pin(async move {
            let authority = uri
                .authority()
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no target address"))?
                .as_str()
                .to_string();
            let tcp = tokio::time::timeout(CONNECT_TIMEOUT, crate::target_group::connect(&authority, true))
                .await
                .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
            let counter = registry.connections(&authority);
            let guard = ConnectionGuard::count(counter);
            let io = if uri.scheme_str() == Some("https") {
                let host = uri.host().unwrap_or_default().trim_matches(|c| c == '[' || c == ']');
                let name = ServerName::try_from(host.to_string())
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
                Io::Tls(Box::new(tls.connect(name, tcp).await?))
            } else {
                Io::Plain(tcp)
            };
            Ok(TokioIo::new(TargetStream { io, _guard: guard }))
        })
    }
}

/// Counts one open connection to a target while it lives.
#[derive(Debug)]
pub struct ConnectionGuard(Arc<AtomicU64>);

impl ConnectionGuard {
    /// Counts a connection just opened in `counter`.
    pub fn count(counter: Arc<AtomicU64>) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        ConnectionGuard(counter)
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

enum Io {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// A connection to a target; counted as open until dropped.
pub struct TargetStream {
    io: Io,
    _guard: ConnectionGuard,
}

impl Connection for TargetStream {
    fn connected(&self) -> Connected {
        match &self.io {
            Io::Plain(_) => Connected::new(),
            Io::Tls(tls) if tls.get_ref().1.alpn_protocol() == Some(b"h2") => Connected::new().negotiated_h2(),
            Io::Tls(_) => Connected::new(),
        }
    }
}

impl AsyncRead for TargetStream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for TargetStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s).poll_write(cx, buf),
        }
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s).poll_flush(cx),
        }
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match &mut self.get_mut().io {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }
    fn is_write_vectored(&self) -> bool {
        match &self.io {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// Targets behind a balancer commonly carry self-signed certificates, and ELB does not verify
/// them either: the TLS hop to a target protects the bytes in transit, not the target's name.
#[derive(Debug)]
pub(crate) struct AnyTargetCertificate;

impl ServerCertVerifier for AnyTargetCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = crate::listener::tls::provider().signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, &algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = crate::listener::tls::provider().signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, &algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        crate::listener::tls::provider().signature_verification_algorithms.supported_schemes()
    }
}
