//! Worker threads: as many as `worker_threads` asks, each kept on a core of its own unless
//! `pin_workers = false` or there are more workers than cores, and serving an even share of
//! the connections.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::process::Ballast;
use crate::common::{http_client, metric, metric_sum};

fn config(runtime: &str) -> String {
    format!(
        r#"
[admin]
bind = "127.0.0.1:0"

[runtime]
{runtime}

[[listeners]]
name = "lb"
protocol = "http"
bind = "127.0.0.1:0"
default_action = {{ type = "fixed_response", status = 200, body = "served" }}
"#
    )
}

/// The cores in a `Cpus_allowed_list` ("0-3,6").
fn cores(list: &str) -> Vec<usize> {
    let mut cores = Vec::new();
    for part in list.trim().split(',').filter(|p| !p.is_empty()) {
        let (first, last) = part.split_once('-').unwrap_or((part, part));
        cores.extend(first.parse::<usize>().expect("a core")..=last.parse::<usize>().expect("a core"));
    }
    cores
}

/// The cores the thread (or process) at `/proc/.../status` may run on.
fn allowed(status_path: &std::path::Path) -> Vec<usize> {
    let status = std::fs::read_to_string(status_path).expect("a status file");
    let line = status.lines().find_map(|l| l.strip_prefix("Cpus_allowed_list:")).expect("Cpus_allowed_list");
    cores(line)
}

/// Each worker thread's allowed cores, by worker number.
fn workers(pid: u32) -> Vec<Vec<usize>> {
    let mut found = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("the process's threads") {
        let dir = task.expect("a thread").path();
        let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if let Some(index) = name.trim().strip_prefix("ballast-w").and_then(|i| i.parse::<usize>().ok()) {
            found.push((index, allowed(&dir.join("status"))));
        }
    }
    found.sort();
    found.into_iter().map(|(_, cores)| cores).collect()
}

/// The cores this test may use, which ballast inherits.
fn usable() -> Vec<usize> {
    allowed(std::path::Path::new("/proc/self/status"))
}

async fn serves(ballast: &Ballast) {
    let client = http_client();
    for _ in 0..8 {
        let response = client.get(ballast.url("lb")).send().await.expect("an answer");
        assert_eq!(response.status(), 200);
        assert_eq!(response.text().await.expect("a body"), "served");
    }
}

#[tokio::test]
async fn each_worker_keeps_to_a_core_of_its_own() {
    let usable = usable();
    let ballast = Ballast::start(&config(&format!("worker_threads = {}", usable.len())));
    let workers = workers(ballast.pid());
    assert_eq!(workers.len(), usable.len(), "one worker thread per core: {workers:?}");
    for (index, cores) in workers.iter().enumerate() {
        assert_eq!(cores, &vec![usable[index]], "worker {index} runs on core {} alone", usable[index]);
    }
    serves(&ballast).await;
}

#[tokio::test]
async fn unpinned_workers_may_run_on_every_core() {
    let usable = usable();
    let ballast = Ballast::start(&config(&format!("worker_threads = {}\npin_workers = false", usable.len())));
    let workers = workers(ballast.pid());
    assert_eq!(workers.len(), usable.len());
    assert!(workers.iter().all(|cores| cores == &usable), "{workers:?} against {usable:?}");
    serves(&ballast).await;
}

#[tokio::test]
async fn workers_are_pinned_only_one_per_core_exactly() {
    let usable = usable();
    let mut counts = vec![usable.len() + 1];
    if usable.len() > 1 {
        counts.push(usable.len() - 1);
    }
    for count in counts {
        let ballast = Ballast::start(&config(&format!("worker_threads = {count}")));
        let workers = workers(ballast.pid());
        assert_eq!(workers.len(), count);
        assert!(workers.iter().all(|cores| cores == &usable), "{count} workers: {workers:?} against {usable:?}");
        serves(&ballast).await;
    }
}

/// Opens a connection to `lb` and has one request answered on it, so that ballast has
/// accepted it and placed it on a worker.
async fn open_and_use(ballast: &Ballast) -> TcpStream {
    let mut tcp = TcpStream::connect(ballast.addr("lb")).await.expect("a connection");
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: lb.test\r\n\r\n").await.expect("a request sent");
    let mut answer = Vec::new();
    while !answer.ends_with(b"served") {
        let mut buf = [0u8; 1024];
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), tcp.read(&mut buf))
            .await
            .expect("an answer in time")
            .expect("a read");
        assert!(n > 0, "the connection closed before its answer: {:?}", String::from_utf8_lossy(&answer));
        answer.extend_from_slice(&buf[..n]);
    }
    tcp
}

#[tokio::test]
async fn long_lived_connections_are_spread_evenly_over_the_workers() {
    const WORKERS: usize = 3;
    const CONNECTIONS: usize = 12;
    let ballast = Ballast::start(&config(&format!("worker_threads = {WORKERS}")));
    let mut open = Vec::new();
    for _ in 0..CONNECTIONS {
        open.push(open_and_use(&ballast).await);
    }
    // The kernel hashes each connection to one worker's socket: twelve land unevenly far
    // more often than not. Each worker serves four all the same.
    for worker in 0..WORKERS {
        let series = format!("ballast_worker_connections{{worker=\"{worker}\"}}");
        assert_eq!(metric(&ballast, &series).await, (CONNECTIONS / WORKERS) as f64, "{series}");
    }
    // Connections passed to another worker are served there like any other.
    for tcp in &mut open {
        tcp.write_all(b"GET / HTTP/1.1\r\nHost: lb.test\r\nConnection: close\r\n\r\n").await.expect("sent");
        let mut answer = Vec::new();
        tcp.read_to_end(&mut answer).await.expect("the second answer");
        assert!(answer.ends_with(b"served"), "{:?}", String::from_utf8_lossy(&answer));
    }
    drop(open);
    // Closed connections count no more.
    wait_for_count(&ballast, 0.0).await;
}

/// Polls until the workers count `want` connections, for up to five seconds.
async fn wait_for_count(ballast: &Ballast, want: f64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let now = metric_sum(ballast, "ballast_worker_connections", &[]).await;
        if now == want {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "{now} connections counted, not {want}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_websocket_tunnel_counts_while_it_lasts() {
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;

    let backend = crate::common::Backend::start("ws").await;
    let group = crate::common::one_group(&backend.target(), "");
    let runtime = "[admin]\nbind = \"127.0.0.1:0\"\n\n[runtime]\nworker_threads = 2\n";
    let ballast = Ballast::start(&format!("{runtime}{group}"));
    let url = format!("ws://{}/chat", ballast.addr("lb"));
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("an upgrade");
    // The HTTP connection's task has ended; the tunnel still counts.
    wait_for_count(&ballast, 1.0).await;
    ws.send(Message::Text("still here".into())).await.expect("sent");
    let reply = ws.next().await.expect("a reply").expect("a message");
    assert_eq!(reply, Message::Text("ws: still here".into()));
    ws.close(None).await.expect("closed");
    drop(ws);
    wait_for_count(&ballast, 0.0).await;
}

/// A target answering `served` over HTTP/1.1 that notes, for each request other than the
/// health check's, which of its connections carried it.
async fn start_connection_noting_target() -> (String, std::sync::Arc<std::sync::Mutex<Vec<usize>>>) {
    use std::sync::{Arc, Mutex};

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let address = listener.local_addr().expect("an address").to_string();
    let carried = Arc::new(Mutex::new(Vec::new()));
    let noted = Arc::clone(&carried);
    tokio::spawn(async move {
        for connection in 0.. {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            let noted = Arc::clone(&noted);
            let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                if request.uri().path() != "/" {
                    noted.lock().expect("not poisoned").push(connection);
                }
                async { Ok::<_, std::convert::Infallible>(hyper::Response::new("served".to_string())) }
            });
            tokio::spawn(
                hyper::server::conn::http1::Builder::new().serve_connection(hyper_util::rt::TokioIo::new(tcp), service),
            );
        }
    });
    (address, carried)
}

// Two threads: the target keeps answering (ballast's first health checks) while the test
// waits for ballast to start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_worker_sends_its_requests_over_target_connections_of_its_own() {
    let (target, carried) = start_connection_noting_target().await;
    let group = crate::common::one_group(&format!("{{ address = \"{target}\" }}"), "");
    let runtime = "[admin]\nbind = \"127.0.0.1:0\"\n\n[runtime]\nworker_threads = 2\n";
    let ballast = Ballast::start(&format!("{runtime}{group}"));
    // Two HTTP/2 clients (hyper's path), one on each worker.
    let clients = [crate::common::h2c_client(), crate::common::h2c_client()];
    for client in &clients {
        let answer = client.get(format!("{}/warm", ballast.url("lb"))).send().await.expect("an answer");
        assert_eq!(answer.text().await.expect("a body"), "served");
    }
    wait_for_count(&ballast, 2.0).await;
    for worker in 0..2 {
        let series = format!("ballast_worker_connections{{worker=\"{worker}\"}}");
        assert_eq!(metric(&ballast, &series).await, 1.0, "{series}");
    }
    // One request at a time, by turns: one shared pool would carry them all on one idle
    // target connection, each hop crossing threads. Each worker keeps its own.
    carried.lock().expect("not poisoned").clear();
    for round in 0..10 {
        let client = &clients[round % 2];
        let answer = client.get(format!("{}/turn", ballast.url("lb"))).send().await.expect("an answer");
        assert_eq!(answer.text().await.expect("a body"), "served");
    }
    let used = carried.lock().expect("not poisoned").clone();
    assert_eq!(used.len(), 10);
    // Even rounds came through one worker, odd rounds through the other: no target
    // connection carried requests of both.
    let of = |parity: usize| used.iter().enumerate().filter(move |(i, _)| i % 2 == parity).map(|(_, c)| *c);
    let first: std::collections::HashSet<usize> = of(0).collect();
    assert!(of(1).all(|c| !first.contains(&c)), "target connections by request: {used:?}");
}
