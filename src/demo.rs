//! The embedded demo: three small backends that answer with their own name, behind a
//! listener on 127.0.0.1:8080, so three requests show the rotation.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;

use bytes::Bytes;
use http_body_util::Full;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::Response;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::config::{self, Config};

/// Where the demo listener binds.
pub const DEMO_BIND: &str = "127.0.0.1:8080";

/// Where the demo's admin API and dashboard bind.
pub const DEMO_ADMIN_BIND: &str = "127.0.0.1:9900";

/// Starts one demo backend on an ephemeral loopback port; it answers every request with its name.
pub async fn start_backend(name: String) -> std::io::Result<SocketAddr> {
    let socket = TcpListener::bind("127.0.0.1:0").await?;
    let addr = socket.local_addr()?;
    tokio::spawn(async move {
        while let Ok((tcp, _)) = socket.accept().await {
            let name = name.clone();
            tokio::spawn(async move {
                let service = service_fn(move |_req| {
                    let body = format!("hello from {name} ({addr})\n");
                    async move { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body)))) }
                });
                let _ = http1::Builder::new().serve_connection(TokioIo::new(tcp), service).await;
            });
        }
    });
    Ok(addr)
}

/// The demo's config, in the same TOML an operator would write, over the given backends.
pub fn demo_config(backends: &[SocketAddr]) -> Result<Config, config::ConfigErrors> {
    let targets: Vec<String> = backends.iter().map(|a| format!("{{ address = \"{a}\" }}")).collect();
    let source = format!(
        r#"
[admin]
bind = "{DEMO_ADMIN_BIND}"

[[listeners]]
name = "demo"
protocol = "http"
bind = "{DEMO_BIND}"
default_action = {{ type = "forward", target_group = "demo" }}

  [[listeners.rules]]
  priority = 10
  conditions = {{ path = ["/hello"] }}
  action = {{ type = "fixed_response", status = 200, body = "hello from ballast itself\n" }}

[[target_groups]]
name = "demo"
algorithm = "round_robin"
targets = [{}]
"#,
        targets.join(", ")
    );
    config::parse("<demo>", &source, PathBuf::new())
}
