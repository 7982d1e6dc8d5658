//! `https` listeners: certificates picked by SNI, the first as default, ALPN h2 and http/1.1.

use std::sync::Arc;

use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use crate::common::{Backend, Ballast, TestCa};

struct Site {
    ballast: Ballast,
    ca: TestCa,
    alpha: Vec<u8>,
    beta: Vec<u8>,
    _backend: Backend,
}

async fn site() -> Site {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    let alpha = ca.write_leaf(dir.path(), "alpha", &["alpha.test"]).der;
    let beta = ca.write_leaf(dir.path(), "beta", &["beta.test", "*.beta.test"]).der;
    let backend = Backend::start("app").await;
    let config = format!(
        r#"
[[certificates]]
name = "alpha"
cert = "alpha.pem"
key = "alpha.key"

[[certificates]]
name = "beta"
cert = "beta.pem"
key = "beta.key"

[[listeners]]
name = "tls"
protocol = "https"
bind = "127.0.0.1:0"
certificates = ["alpha", "beta"]
default_action = {{ type = "forward", target_group = "app" }}

[[target_groups]]
name = "app"
targets = [{}]
"#,
        backend.target()
    );
    Site { ballast: Ballast::start_in(dir, &config), ca, alpha, beta, _backend: backend }
}

/// The certificate and ALPN protocol the listener chose for a handshake naming `sni`.
async fn handshake(site: &Site, sni: &str, alpn: &[&[u8]]) -> (Vec<u8>, Option<Vec<u8>>) {
    let mut config = site.ca.client_config(alpn);
    // Inspect whichever certificate comes back, even one for another name.
    config.dangerous().set_certificate_verifier(Arc::new(crate::common::certs::AcceptAny));
    let tcp = TcpStream::connect(site.ballast.addr("tls")).await.unwrap();
    let tls = TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from(sni.to_string()).unwrap(), tcp)
        .await
        .expect("handshake");
    let conn = tls.get_ref().1;
    let cert = conn.peer_certificates().unwrap()[0].to_vec();
    (cert, conn.alpn_protocol().map(<[u8]>::to_vec))
}

#[tokio::test]
async fn sni_picks_the_matching_certificate_and_the_first_is_default() {
    let site = site().await;
    assert_eq!(handshake(&site, "alpha.test", &[]).await.0, site.alpha);
    assert_eq!(handshake(&site, "beta.test", &[]).await.0, site.beta);
    assert_eq!(handshake(&site, "www.beta.test", &[]).await.0, site.beta, "wildcard SAN");
    assert_eq!(handshake(&site, "other.test", &[]).await.0, site.alpha, "default certificate");
    // An IP address sends no SNI at all.
    assert_eq!(handshake(&site, "127.0.0.1", &[]).await.0, site.alpha);
}

#[tokio::test]
async fn alpn_offers_h2_and_http11() {
    let site = site().await;
    assert_eq!(handshake(&site, "alpha.test", &[b"h2", b"http/1.1"]).await.1.as_deref(), Some(&b"h2"[..]));
    assert_eq!(handshake(&site, "alpha.test", &[b"http/1.1"]).await.1.as_deref(), Some(&b"http/1.1"[..]));
}

#[tokio::test]
async fn https_requests_reach_the_target_over_h2_and_http11() {
    let site = site().await;
    let addr = site.ballast.addr("tls");
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(site.ca.client_config(&[b"h2", b"http/1.1"]))
        .resolve("beta.test", addr)
        .build()
        .unwrap();
    let resp = client.get(format!("https://beta.test:{}/secure", addr.port())).send().await.unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    assert_eq!(resp.text().await.unwrap(), "app");
    let seen = site._backend.last();
    assert_eq!(seen.header("x-forwarded-proto").as_deref(), Some("https"));
    assert_eq!(seen.header("host"), Some(format!("beta.test:{}", addr.port())));

    let http1 = reqwest::Client::builder()
        .use_preconfigured_tls(site.ca.client_config(&[b"http/1.1"]))
        .resolve("alpha.test", addr)
        .build()
        .unwrap();
    let resp = http1.get(format!("https://alpha.test:{}/", addr.port())).send().await.unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_11);
    assert_eq!(resp.text().await.unwrap(), "app");
}

#[tokio::test]
async fn http2_over_tls_carries_large_and_many_answers_at_once() {
    let site = site().await;
    let addr = site.ballast.addr("tls");
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(site.ca.client_config(&[b"h2"]))
        .resolve("alpha.test", addr)
        .build()
        .unwrap();
    let base = format!("https://alpha.test:{}", addr.port());
    let large = (0..4).map(|_| {
        let request = client.get(format!("{base}/download/1048576"));
        async move {
            let resp = request.send().await.expect("an answer");
            assert_eq!(resp.version(), reqwest::Version::HTTP_2);
            resp.bytes().await.expect("a whole body")
        }
    });
    let small = (0..100).map(|i| {
        let request = client.get(format!("{base}/small/{i}"));
        async move { request.send().await.expect("an answer").text().await.expect("a whole body") }
    });
    let both = futures_util::future::join(futures_util::future::join_all(large), futures_util::future::join_all(small));
    let (large, small) = tokio::time::timeout(std::time::Duration::from_secs(20), both).await.expect("in time");
    for body in large {
        assert_eq!(body.len(), 1 << 20);
        assert!(body.iter().all(|&b| b == b'x'), "the body as the target sent it");
    }
    assert!(small.iter().all(|body| body == "app"), "{small:?}");
}

#[tokio::test]
async fn a_client_that_chose_h2_cannot_send_http11_around_the_guard() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let site = site().await;
    let tcp = TcpStream::connect(site.ballast.addr("tls")).await.unwrap();
    let mut tls = TlsConnector::from(Arc::new(site.ca.client_config(&[b"h2"])))
        .connect(ServerName::try_from("alpha.test".to_string()).unwrap(), tcp)
        .await
        .expect("handshake");
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    // An HTTP/1.1 request the guard would refuse (two lengths), on a connection that chose h2.
    let smuggling = "GET /around HTTP/1.1\r\nHost: alpha.test\r\nContent-Length: 0\r\nContent-Length: 5\r\n\r\n";
    tls.write_all(smuggling.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(std::time::Duration::from_secs(10), tls.read_to_end(&mut answer)).await;
    assert!(read.is_ok(), "the connection ends");
    assert!(!answer.starts_with(b"HTTP/1"), "no HTTP/1 answer: {:?}", String::from_utf8_lossy(&answer));
    assert!(site._backend.seen().iter().all(|s| !s.uri.contains("around")), "the request never reached the target");
}
