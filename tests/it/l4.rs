//! L4 listeners over real sockets: TCP (splice), TLS termination and re-encryption, UDP flows,
//! PROXY protocol, an NLB in front of an ALB, and draining of open connections.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio_rustls::TlsConnector;

use crate::common::{http_client, Backend, Ballast, TestCa};

/// A TCP server that reads everything until end-of-stream, then answers `NAME LEN SUM` and
/// closes: it proves both the data and the client's half-close arrived.
async fn start_summing(name: &'static str, tls: Option<tokio_rustls::TlsAcceptor>) -> SocketAddr {
    let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = socket.accept().await {
            let tls = tls.clone();
            tokio::spawn(async move {
                match tls {
                    Some(acceptor) => {
                        if let Ok(stream) = acceptor.accept(tcp).await {
                            sum_and_answer(name, stream).await;
                        }
                    }
                    None => sum_and_answer(name, tcp).await,
                }
            });
        }
    });
    addr
}

async fn sum_and_answer<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(name: &str, mut s: S) {
    let mut buf = vec![0u8; 256 * 1024];
    let mut sum = Checksum::default();
    loop {
        match s.read(&mut buf).await {
            Ok(0) => break,
            Ok(n) => sum.add(&buf[..n]),
            Err(_) => return,
        }
    }
    let len = sum.len;
    let _ = s.write_all(format!("{name} {len} {}", sum.finish()).as_bytes()).await;
    let _ = s.shutdown().await;
}

/// An order-sensitive checksum that does not depend on how the bytes were cut into reads.
#[derive(Default)]
struct Checksum {
    len: u64,
    state: u64,
    pending: Vec<u8>,
}

impl Checksum {
    fn add(&mut self, mut bytes: &[u8]) {
        self.len += bytes.len() as u64;
        if !self.pending.is_empty() {
            let take = (8 - self.pending.len()).min(bytes.len());
            self.pending.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.pending.len() == 8 {
                let word = std::mem::take(&mut self.pending);
                self.word(&word);
            }
        }
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            self.word(w);
        }
        self.pending.extend_from_slice(words.remainder());
    }

    fn word(&mut self, w: &[u8]) {
        let mut word = [0u8; 8];
        word[..w.len()].copy_from_slice(w);
        self.state = (self.state ^ u64::from_le_bytes(word)).wrapping_mul(0x9e37_79b9_7f4a_7c15).rotate_left(17);
    }

    fn finish(mut self) -> u64 {
        let rest = std::mem::take(&mut self.pending);
        if !rest.is_empty() {
            self.word(&rest);
        }
        self.state
    }
}

/// The checksum of one buffer.
fn checksum(bytes: &[u8]) -> u64 {
    let mut sum = Checksum::default();
    sum.add(bytes);
    sum.finish()
}

fn tcp_config(listener_protocol: &str, group_protocol: &str, targets: &[SocketAddr], extra: &str) -> String {
    let targets: Vec<String> = targets.iter().map(|a| format!("{{ address = \"{a}\" }}")).collect();
    format!(
        r#"
[admin]
bind = "127.0.0.1:0"

[[listeners]]
name = "l4"
protocol = "{listener_protocol}"
bind = "127.0.0.1:0"
{}
default_action = {{ type = "forward", target_group = "g" }}

[[target_groups]]
name = "g"
protocol = "{group_protocol}"
{extra}
targets = [{}]
"#,
        if listener_protocol == "tls" { "certificates = [\"site\"]" } else { "" },
        targets.join(", ")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_passes_a_tcp_listener_intact_and_half_close_passes_through() {
    let target = start_summing("t", None).await;
    let ballast = Ballast::start(&tcp_config("tcp", "tcp", &[target], ""));
    let mut client = TcpStream::connect(ballast.addr("l4")).await.unwrap();
    let block: Vec<u8> = (0..1024 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    let mut sum = Checksum::default();
    for _ in 0..1024 {
        client.write_all(&block).await.unwrap();
        sum.add(&block);
    }
    let sum = sum.finish();
    client.shutdown().await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(60), client.read_to_string(&mut answer)).await.unwrap().unwrap();
    assert_eq!(answer, format!("t {} {sum}", 1u64 << 30));
    assert!(ballast.peak_rss_kib() < 96 * 1024, "{} KiB", ballast.peak_rss_kib());
}

#[tokio::test]
async fn tls_listeners_terminate_and_tls_groups_re_encrypt() {
    let ca = TestCa::new();
    let dir = tempfile::tempdir().unwrap();
    ca.write_leaf(dir.path(), "site", &["l4.test"]);
    let target_leaf = ca.leaf(&["target.test"]);
    let certs = "[[certificates]]\nname = \"site\"\ncert = \"site.pem\"\nkey = \"site.key\"\n";
    for (group, target) in [
        ("tcp", start_summing("plain", None).await),
        (
            "tls",
            start_summing("secure", Some(crate::common::certs::acceptor(&target_leaf.cert_pem, &target_leaf.key_pem)))
                .await,
        ),
    ] {
        let dir_for_run = tempfile::tempdir().unwrap();
        for f in ["site.pem", "site.key"] {
            std::fs::copy(dir.path().join(f), dir_for_run.path().join(f)).unwrap();
        }
        let ballast = Ballast::start_in(dir_for_run, &format!("{certs}{}", tcp_config("tls", group, &[target], "")));
        let tcp = TcpStream::connect(ballast.addr("l4")).await.unwrap();
        let mut tls = TlsConnector::from(Arc::new(ca.client_config(&[])))
            .connect(ServerName::try_from("l4.test").unwrap(), tcp)
            .await
            .expect("handshake with the listener's certificate");
        tls.write_all(b"hello").await.unwrap();
        tls.shutdown().await.unwrap();
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(10), tls.read_to_string(&mut answer)).await.unwrap().unwrap();
        let expected = if group == "tls" { "secure" } else { "plain" };
        assert_eq!(answer, format!("{expected} 5 {}", checksum(b"hello")));
    }
}

/// A UDP server answering every datagram with `NAME:payload` from its own address, with a TCP
/// listener on the same port for the group's TCP health check (as an NLB's UDP target has).
/// Without it the check's verdict hangs on whether another test holds that TCP port.
async fn start_udp_echo(name: &'static str) -> SocketAddr {
    let (socket, health) = 'bound: {
        for _ in 0..50 {
            let health = TcpListener::bind("127.0.0.1:0").await.unwrap();
            if let Ok(socket) = UdpSocket::bind(health.local_addr().unwrap()).await {
                break 'bound (socket, health);
            }
        }
        panic!("no port free for both TCP and UDP");
    };
    tokio::spawn(async move {
        loop {
            // A failed accept (a reset, no descriptor) leaves the listener checking.
            if health.accept().await.is_err() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    });
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let reply = [name.as_bytes(), b":", &buf[..n]].concat();
            let _ = socket.send_to(&reply, from).await;
        }
    });
    addr
}

fn udp_config(targets: &[SocketAddr], max_flows: usize) -> String {
    let targets: Vec<String> = targets.iter().map(|a| format!("{{ address = \"{a}\" }}")).collect();
    format!(
        r#"
[admin]
bind = "127.0.0.1:0"

[[listeners]]
name = "udp"
protocol = "udp"
bind = "127.0.0.1:0"
default_action = {{ type = "forward", target_group = "g" }}

  [listeners.limits]
  max_flows = {max_flows}

[[target_groups]]
name = "g"
protocol = "udp"
algorithm = "flow_hash"
targets = [{}]
"#,
        targets.join(", ")
    )
}

async fn ask(client: &UdpSocket, to: SocketAddr, payload: &str) -> Option<String> {
    client.send_to(payload.as_bytes(), to).await.unwrap();
    let mut buf = vec![0u8; 2048];
    let (n, from) = tokio::time::timeout(Duration::from_secs(2), client.recv_from(&mut buf)).await.ok()?.ok()?;
    assert_eq!(from, to, "the reply comes from the listener's address");
    Some(String::from_utf8_lossy(&buf[..n]).into_owned())
}

#[tokio::test]
async fn many_udp_flows_each_keep_their_target() {
    let targets = [start_udp_echo("a").await, start_udp_echo("b").await, start_udp_echo("c").await];
    let ballast = Ballast::start(&udp_config(&targets, 1000));
    let listener = ballast.addr("udp");
    let mut flows = Vec::new();
    for i in 0..40 {
        flows.push(tokio::spawn(async move {
            let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let mut names = Vec::new();
            for j in 0..5 {
                let reply = ask(&client, listener, &format!("flow {i} datagram {j}")).await.expect("a reply");
                let (name, echoed) = reply.split_once(':').unwrap();
                assert_eq!(echoed, format!("flow {i} datagram {j}"));
                names.push(name.to_string());
            }
            names
        }));
    }
    let mut used = std::collections::HashSet::new();
    for flow in flows {
        let names = flow.await.unwrap();
        assert!(names.iter().all(|n| n == &names[0]), "a flow changed target: {names:?}");
        used.insert(names[0].clone());
    }
    assert_eq!(used.len(), 3, "flows spread over every target: {used:?}");
}

#[tokio::test]
async fn a_full_udp_flow_table_drops_new_flows_and_counts_them() {
    let target = start_udp_echo("a").await;
    let ballast = Ballast::start(&udp_config(&[target], 2));
    let listener = ballast.addr("udp");
    let mut clients = Vec::new();
    for i in 0..2 {
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        assert!(ask(&client, listener, &format!("hi {i}")).await.is_some());
        clients.push(client);
    }
    let third = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    assert_eq!(ask(&third, listener, "me too").await, None);
    // Flows already in the table carry on.
    assert!(ask(&clients[0], listener, "still here").await.is_some());
    let metrics = http_client().get(format!("http://{}/metrics", ballast.addr("admin"))).send().await.unwrap();
    let text = metrics.text().await.unwrap();
    assert!(text.contains(r#"ballast_rejected_requests_total{listener="udp",reason="flow_table_full"} 1"#), "{text}");
}

#[tokio::test]
async fn an_nlb_in_front_of_an_alb_keeps_the_client_address() {
    let backend = Backend::start("app").await;
    let alb = Ballast::start(&format!(
        r#"
[[listeners]]
name = "alb"
protocol = "http"
bind = "127.0.0.1:0"
proxy_protocol = true
default_action = {{ type = "forward", target_group = "app" }}

[[target_groups]]
name = "app"
targets = [{}]
"#,
        backend.target()
    ));
    for version in ["v1", "v2"] {
        let nlb =
            Ballast::start(&tcp_config("tcp", "tcp", &[alb.addr("alb")], &format!("proxy_protocol = \"{version}\"")));
        let mut client = crate::common::raw_target::connect_from([127, 0, 0, 2].into(), nlb.addr("l4")).await;
        client.write_all(b"GET /via-nlb HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n").await.unwrap();
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(10), client.read_to_string(&mut answer)).await.unwrap().unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let seen = backend.last();
        assert_eq!(seen.uri, "/via-nlb");
        assert_eq!(seen.header("x-forwarded-for").as_deref(), Some("127.0.0.2"), "PROXY {version}");
    }
    // Without a PROXY header the ALB listener refuses the connection.
    let mut direct = TcpStream::connect(alb.addr("alb")).await.unwrap();
    direct.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), direct.read_to_end(&mut answer)).await.unwrap();
    assert!(
        read.is_err() || answer.is_empty(),
        "answered without a PROXY header: {:?}",
        String::from_utf8_lossy(&answer)
    );
}

#[tokio::test]
async fn a_draining_l4_target_keeps_its_connections_until_the_delay() {
    let old = start_summing("old", None).await;
    let new = start_summing("new", None).await;
    let drain = "deregistration_delay = \"1500ms\"";
    let ballast = Ballast::start(&tcp_config("tcp", "tcp", &[old], drain));
    let mut open = TcpStream::connect(ballast.addr("l4")).await.unwrap();
    open.write_all(b"before").await.unwrap();
    ballast.rewrite_config(&tcp_config("tcp", "tcp", &[new], drain));
    ballast.hangup();
    // New connections go to the new target...
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let mut c = TcpStream::connect(ballast.addr("l4")).await.unwrap();
        c.shutdown().await.unwrap();
        let mut answer = String::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), c.read_to_string(&mut answer)).await;
        if answer.starts_with("new ") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the reload never took effect");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // ...while the open one still reaches the old target...
    open.write_all(b" during").await.unwrap();
    // ...until the delay ends and it is closed.
    let mut answer = String::new();
    let ended = tokio::time::timeout(Duration::from_secs(6), open.read_to_string(&mut answer)).await;
    assert!(ended.is_ok(), "the connection outlived the deregistration delay");
    assert!(!answer.starts_with("new"), "{answer}");
}

#[tokio::test]
async fn l4_groups_get_tcp_health_checks_by_default() {
    let alive = start_summing("alive", None).await;
    let dead = crate::common::backend::closed_port().await;
    let fast =
        r#"health_check = { interval = "200ms", timeout = "150ms", healthy_threshold = 2, unhealthy_threshold = 2 }"#;
    let ballast = Ballast::start(&tcp_config("tcp", "tcp", &[alive, dead], fast));
    let url = format!("http://{}/api/v1/target-groups/g/targets", ballast.addr("admin"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let list: Vec<serde_json::Value> = http_client().get(&url).send().await.unwrap().json().await.unwrap();
        let state = |a: SocketAddr| {
            list.iter().find(|t| t["address"] == a.to_string()).map(|t| t["state"].as_str().unwrap_or("").to_string())
        };
        if state(alive).as_deref() == Some("healthy") && state(dead).as_deref() == Some("unhealthy") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{list:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Every connection now goes to the live target.
    for _ in 0..5 {
        let mut c = TcpStream::connect(ballast.addr("l4")).await.unwrap();
        c.shutdown().await.unwrap();
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(5), c.read_to_string(&mut answer)).await.unwrap().unwrap();
        assert!(answer.starts_with("alive "), "{answer}");
    }
}

#[tokio::test]
async fn an_idle_udp_flow_ends_and_frees_its_place() {
    let target = start_udp_echo("a").await;
    let config = udp_config(&[target], 1).replace("  max_flows = 1", "  max_flows = 1\n  idle_timeout = \"300ms\"");
    let ballast = Ballast::start(&config);
    let listener = ballast.addr("udp");
    let first = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    assert!(ask(&first, listener, "one").await.is_some());
    let second = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    assert_eq!(ask(&second, listener, "two").await, None, "the table of one flow is full");
    // Once the first flow has been quiet for its idle timeout, the place is free again.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        tokio::time::sleep(Duration::from_millis(400)).await;
        if ask(&second, listener, "two again").await.is_some() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the idle flow never ended");
    }
}

#[tokio::test]
async fn a_quiet_tcp_connection_closes_after_idle_timeout_and_a_busy_one_does_not() {
    let target = start_summing("t", None).await;
    let config = tcp_config("tcp", "tcp", &[target], "").replace(
        "default_action = { type = \"forward\", target_group = \"g\" }",
        "default_action = { type = \"forward\", target_group = \"g\" }\n[listeners.limits]\nidle_timeout = \"600ms\"",
    );
    let ballast = Ballast::start(&config);
    let mut client = TcpStream::connect(ballast.addr("l4")).await.unwrap();
    // A byte every 200 ms for 1.2 s, twice the idle timeout: never idle for it.
    let mut byte = [0u8; 1];
    let mut last_byte = std::time::Instant::now();
    for _ in 0..6 {
        client.write_all(b"x").await.unwrap();
        last_byte = std::time::Instant::now();
        let early = tokio::time::timeout(Duration::from_millis(200), client.read(&mut byte)).await;
        assert!(early.is_err(), "closed while bytes were moving: {early:?}");
    }
    // Then quiet: closed once nothing has moved for the idle timeout.
    let ended = tokio::time::timeout(Duration::from_secs(5), client.read(&mut byte)).await;
    let quiet = last_byte.elapsed();
    assert!(matches!(ended, Ok(Ok(0)) | Ok(Err(_))), "{ended:?}");
    assert!(quiet >= Duration::from_millis(550) && quiet < Duration::from_secs(3), "{quiet:?}");
}

#[tokio::test]
async fn a_target_that_speaks_first_greets_a_silent_client_at_once() {
    // An SMTP-like target: greets each connection before reading anything.
    let socket = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let target = socket.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = socket.accept().await {
            tokio::spawn(async move {
                tcp.write_all(b"220 ready\r\n").await.unwrap();
                let mut line = [0u8; 64];
                let n = tcp.read(&mut line).await.unwrap_or(0);
                let _ = tcp.write_all(&[b"250 ", &line[..n]].concat()).await;
            });
        }
    });
    let ballast = Ballast::start(&tcp_config("tcp", "tcp", &[target], ""));
    let mut waits = Vec::new();
    for _ in 0..3 {
        let started = std::time::Instant::now();
        let mut client = TcpStream::connect(ballast.addr("l4")).await.unwrap();
        let mut greeting = [0u8; 11];
        tokio::time::timeout(Duration::from_secs(5), client.read_exact(&mut greeting)).await.unwrap().unwrap();
        waits.push(started.elapsed());
        assert_eq!(&greeting, b"220 ready\r\n");
        client.write_all(b"HELO x\r\n").await.unwrap();
        let mut answer = [0u8; 12];
        tokio::time::timeout(Duration::from_secs(5), client.read_exact(&mut answer)).await.unwrap().unwrap();
        assert_eq!(&answer, b"250 HELO x\r\n");
    }
    // The target sees a connection only when ballast's handshake ACK reaches it: were that ACK
    // held back for bytes to ride on, every greeting would wait 200 ms (one slow round on a
    // busy machine is not that).
    let quickest = waits.iter().min().copied().unwrap_or_default();
    assert!(quickest < Duration::from_millis(150), "greeted after {waits:?}");
}

/// Sends `bytes` in one write, ends its side, and reads the target's whole answer.
async fn send_all_and_answer(tcp: &mut TcpStream, bytes: &[u8]) -> String {
    tcp.write_all(bytes).await.unwrap();
    tcp.shutdown().await.unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(5), tcp.read_to_string(&mut answer)).await.unwrap().unwrap();
    answer
}

/// Polls the listener's byte count until it is `want`, for up to five seconds.
async fn wait_for_bytes(ballast: &Ballast, want: f64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let counted = crate::common::metric_sum(ballast, "ballast_processed_bytes_total", &["listener=\"l4\""]).await;
        if counted == want {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "counted {counted} bytes, not {want}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_connection_outliving_a_second_keeps_every_byte_and_all_are_counted() {
    let target = start_summing("t", None).await;
    let ballast = Ballast::start(&tcp_config("tcp", "tcp", &[target], ""));
    // A short connection, ended within its first milliseconds.
    let mut short = TcpStream::connect(ballast.addr("l4")).await.unwrap();
    let answer = send_all_and_answer(&mut short, b"hello").await;
    assert_eq!(answer, format!("t 5 {}", checksum(b"hello")));
    wait_for_bytes(&ballast, (5 + answer.len()) as f64).await;
    // A connection open past a second (served by a task of its own from then on), with bytes
    // before and after.
    let mut long = TcpStream::connect(ballast.addr("l4")).await.unwrap();
    let (before, after) = (vec![b'a'; 3000], vec![b'b'; 5000]);
    long.write_all(&before).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let later = send_all_and_answer(&mut long, &after).await;
    assert_eq!(later, format!("t 8000 {}", checksum(&[before, after].concat())));
    wait_for_bytes(&ballast, (5 + answer.len() + 8000 + later.len()) as f64).await;
}

#[tokio::test]
async fn open_connections_outlive_their_listener_being_removed() {
    let target = start_summing("t", None).await;
    let config = tcp_config("tcp", "tcp", &[target], "");
    let ballast = Ballast::start(&config);
    let old = ballast.addr("l4");
    let mut open = TcpStream::connect(old).await.unwrap();
    open.write_all(b"before ").await.unwrap();
    // Give the write time to reach the target, then take the listener away.
    tokio::time::sleep(Duration::from_millis(100)).await;
    ballast.rewrite_config(&config.replace("name = \"l4\"", "name = \"renamed\""));
    ballast.hangup();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(old).await.is_ok() {
        assert!(tokio::time::Instant::now() < deadline, "the listener was never removed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let answer = send_all_and_answer(&mut open, b"and after").await;
    assert_eq!(answer, format!("t 16 {}", checksum(b"before and after")));
}

#[tokio::test]
async fn a_refusing_target_is_marked_down_and_each_connection_goes_to_the_next() {
    let alive = start_summing("alive", None).await;
    let dead = crate::common::backend::closed_port().await;
    // Checks that fail for both (on the dead port) and too rarely to mark either down: the
    // group fails open to both, and only refused connections tell the dead one.
    let port = dead.port();
    let rare =
        format!(r#"health_check = {{ port = "{port}", interval = "60s", timeout = "1s", unhealthy_threshold = 2 }}"#);
    let ballast = Ballast::start(&tcp_config("tcp", "tcp", &[dead, alive], &rare));
    for i in 0..6 {
        let mut c = TcpStream::connect(ballast.addr("l4")).await.unwrap();
        // Half send bytes first (they go with the connect), half only end (the connect is
        // waited for).
        let bytes: &[u8] = if i % 2 == 0 { b"ping" } else { b"" };
        let answer = send_all_and_answer(&mut c, bytes).await;
        assert_eq!(answer, format!("alive {} {}", bytes.len(), checksum(bytes)), "connection {i}");
    }
    let url = format!("http://{}/api/v1/target-groups/g/targets", ballast.addr("admin"));
    let list: Vec<serde_json::Value> = http_client().get(&url).send().await.unwrap().json().await.unwrap();
    let state = list.iter().find(|t| t["address"] == dead.to_string()).map(|t| t["state"].clone());
    assert_eq!(state, Some(serde_json::json!("unhealthy")), "{list:?}");
}

#[tokio::test]
async fn connections_passed_to_another_worker_are_served_there() {
    const CONNECTIONS: usize = 8;
    let target = start_summing("t", None).await;
    let config = tcp_config("tcp", "tcp", &[target], "") + "\n[runtime]\nworker_threads = 2\n";
    let ballast = Ballast::start(&config);
    let mut open = Vec::new();
    for i in 0..CONNECTIONS {
        let mut c = TcpStream::connect(ballast.addr("l4")).await.unwrap();
        c.write_all(format!("connection {i}").as_bytes()).await.unwrap();
        open.push(c);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while crate::common::metric(&ballast, "ballast_active_connections{listener=\"l4\"}").await < (i + 1) as f64 {
            assert!(tokio::time::Instant::now() < deadline, "connection {i} was never taken");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    // The kernel hashes each connection to one worker's socket; each worker serves half all
    // the same.
    for worker in 0..2 {
        let series = format!("ballast_worker_connections{{worker=\"{worker}\"}}");
        assert_eq!(crate::common::metric(&ballast, &series).await, (CONNECTIONS / 2) as f64, "{series}");
    }
    for (i, c) in open.iter_mut().enumerate() {
        let sent = format!("connection {i}, the end");
        let answer = send_all_and_answer(c, b", the end").await;
        assert_eq!(answer, format!("t {} {}", sent.len(), checksum(sent.as_bytes())));
    }
}

/// A target whose accept queue is full: the kernel drops the SYNs of new connections to it,
/// so they stay connecting (the SYN is sent again 1 s on, then 3 s, 7 s). Returns its
/// listening socket and the one connection that fills its queue.
fn full_target() -> (std::net::TcpListener, std::net::TcpStream) {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into()).unwrap();
    // A backlog of 0 queues one connection; the next is dropped.
    socket.listen(0).unwrap();
    let listener: std::net::TcpListener = socket.into();
    let filler = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    (listener, filler)
}

/// Health checks of `targets` aimed at `alive`'s port, too rare to run twice in a test: the
/// targets count as healthy whatever they do with connections.
fn checks_on(alive: SocketAddr) -> String {
    let port = alive.port();
    format!(r#"health_check = {{ port = "{port}", interval = "60s", timeout = "2s" }}"#)
}

#[tokio::test]
async fn a_target_slow_to_take_the_connection_gets_every_byte_once_it_does() {
    let checked = start_summing("checks", None).await;
    let (listener, filler) = full_target();
    let target = listener.local_addr().unwrap();
    let ballast = Ballast::start(&tcp_config("tcp", "tcp", &[target], &checks_on(checked)));
    let started = std::time::Instant::now();
    let mut client = TcpStream::connect(ballast.addr("l4")).await.unwrap();
    // Bytes that wait for the connect, then more while it is still under way.
    client.write_all(b"hello").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    client.write_all(b" world").await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The queue frees; the dropped SYN, sent again, gets in.
    listener.set_nonblocking(true).unwrap();
    let listener = TcpListener::from_std(listener).unwrap();
    let (queued, _) = listener.accept().await.unwrap();
    drop((queued, filler));
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            tokio::spawn(sum_and_answer("slow", tcp));
        }
    });
    let answer = send_all_and_answer(&mut client, b"!").await;
    assert_eq!(answer, format!("slow 12 {}", checksum(b"hello world!")));
    // Not connected within the connect call, nor before the queue freed.
    assert!(started.elapsed() >= Duration::from_millis(800), "answered after {:?}", started.elapsed());
}

#[tokio::test]
async fn a_connect_that_never_finishes_is_given_up_after_ten_seconds_for_the_next_target() {
    let alive = start_summing("alive", None).await;
    let (listener, _filler) = full_target();
    let stuck = listener.local_addr().unwrap();
    let ballast = Ballast::start(&tcp_config("tcp", "tcp", &[stuck, alive], &checks_on(alive)));
    // Round robin over two targets: one of the two connections tries the stuck one first.
    let mut clients = Vec::new();
    for i in 0..2 {
        let mut c = TcpStream::connect(ballast.addr("l4")).await.unwrap();
        c.write_all(format!("ping {i}").as_bytes()).await.unwrap();
        clients.push(c);
    }
    // More bytes while the stuck connect waits: the retry must pass them on too.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let started = std::time::Instant::now();
    let mut waits = Vec::new();
    for (i, mut c) in clients.into_iter().enumerate() {
        c.write_all(b" pong").await.unwrap();
        c.shutdown().await.unwrap();
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(15), c.read_to_string(&mut answer)).await.unwrap().unwrap();
        let sent = format!("ping {i} pong");
        assert_eq!(answer, format!("alive {} {}", sent.len(), checksum(sent.as_bytes())), "connection {i}");
        waits.push(started.elapsed());
    }
    let longest = waits.iter().max().copied().unwrap_or_default();
    assert!(longest >= Duration::from_secs(8) && longest < Duration::from_secs(12), "answered after {waits:?}");
    let url = format!("http://{}/api/v1/target-groups/g/targets", ballast.addr("admin"));
    let list: Vec<serde_json::Value> = http_client().get(&url).send().await.unwrap().json().await.unwrap();
    let state = list.iter().find(|t| t["address"] == stuck.to_string()).map(|t| t["state"].clone());
    assert_eq!(state, Some(serde_json::json!("unhealthy")), "{list:?}");
}
