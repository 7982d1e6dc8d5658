//! WebSocket upgrades pass through http and https listeners and stay open both ways.

use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::Message;

use crate::common::{Backend, Ballast, TestCa};

async fn echo_round_trips<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    for i in 0..5 {
        ws.send(Message::Text(format!("ping {i}"))).await.unwrap();
        let reply = ws.next().await.expect("a reply").expect("a message");
        assert_eq!(reply, Message::Text(format!("ws: ping {i}")));
    }
    ws.close(None).await.unwrap();
}

fn config(protocol: &str, backend: &Backend, certs: &str) -> String {
    format!(
        r#"
{certs}
[[listeners]]
name = "lb"
protocol = "{protocol}"
bind = "127.0.0.1:0"
{}
default_action = {{ type = "forward", target_group = "ws" }}

[[target_groups]]
name = "ws"
targets = [{}]
"#,
        if certs.is_empty() { "" } else { "certificates = [\"site\"]" },
        backend.target()
    )
}

#[tokio::test]
async fn websocket_over_http() {
    let backend = Backend::start("ws").await;
    let ballast = Ballast::start(&config("http", &backend, ""));
    let url = format!("ws://{}/chat", ballast.addr("lb"));
    let (mut ws, response) = tokio_tungstenite::connect_async(url).await.expect("upgrade");
    assert_eq!(response.status(), 101);
    echo_round_trips(&mut ws).await;
    let seen = backend.last();
    assert_eq!(seen.header("upgrade").as_deref(), Some("websocket"));
    assert_eq!(seen.header("x-forwarded-for").as_deref(), Some("127.0.0.1"));
}

#[tokio::test]
async fn websocket_over_https() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    ca.write_leaf(dir.path(), "site", &["ws.test"]);
    let backend = Backend::start("ws").await;
    let certs = "[[certificates]]\nname = \"site\"\ncert = \"site.pem\"\nkey = \"site.key\"\n";
    let ballast = Ballast::start_in(dir, &config("https", &backend, certs));
    let tcp = TcpStream::connect(ballast.addr("lb")).await.unwrap();
    let tls = TlsConnector::from(Arc::new(ca.client_config(&[b"http/1.1"])))
        .connect(ServerName::try_from("ws.test").unwrap(), tcp)
        .await
        .expect("TLS handshake");
    let (mut ws, response) = tokio_tungstenite::client_async("wss://ws.test/chat", tls).await.expect("upgrade");
    assert_eq!(response.status(), 101);
    echo_round_trips(&mut ws).await;
    assert_eq!(backend.last().header("x-forwarded-proto").as_deref(), Some("https"));
}
