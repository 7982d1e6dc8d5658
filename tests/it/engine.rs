//! ballast's own HTTP/1.1 engine (`proxy::h1`) at its edges: response framings (chunked with
//! trailers, HEAD, 204/304, close-delimited, interim 1xx), the pool of target connections
//! (reuse, a stale connection, a broken answer, a closing client), large and pipelined
//! requests, a connection that passes through hyper and back, and the head the target gets.
//! The targets here are scripted: a small raw server that answers what each test tells it to,
//! byte for byte, and records every request and which target connection carried it.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::common::raw_target::{find, parse_answer, read_more, runtime, Answer};
use crate::common::{http_client, one_group, wait_until, Backend, Ballast};

/// How long a client waits for an answer, or for the end of a connection.
const WAIT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// A scripted target.

/// One request as the scripted target read it.
#[derive(Debug, Clone)]
struct Req {
    /// Which target connection carried it, counted from 0 in the order their first bytes came
    /// (a TCP health check's connection, which sends nothing, is not counted).
    connection: usize,
    /// Its place on that connection, from 0.
    index: usize,
    /// The head as it came, CRLFCRLF included.
    head: String,
    /// The body (by Content-Length).
    body: Vec<u8>,
}

impl Req {
    fn request_line(&self) -> &str {
        self.head.split("\r\n").next().unwrap_or_default()
    }

    fn path(&self) -> &str {
        self.request_line().split(' ').nth(1).unwrap_or_default()
    }

    fn method(&self) -> &str {
        self.request_line().split(' ').next().unwrap_or_default()
    }

    /// Every value of header `name` (case-insensitive), in order, trimmed.
    fn header_values(&self, name: &str) -> Vec<String> {
        self.head
            .split("\r\n")
            .skip(1)
            .filter_map(|l| l.split_once(':'))
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
            .collect()
    }
}

/// One step of a scripted answer.
enum Piece {
    /// Write these bytes.
    Bytes(Vec<u8>),
    /// Wait a little (so the bytes come in separate reads).
    Pause(Duration),
    /// Wait until the test calls `ScriptedTarget::release` (at most 5 s).
    WaitRelease,
}

/// What the connection does once the answer is written.
enum Then {
    KeepOpen,
    /// Close at once (with no pieces: hang up without answering).
    Close,
    /// Stay open, idle, this long, then close.
    CloseAfter(Duration),
}

struct Reply {
    pieces: Vec<Piece>,
    then: Then,
}

impl Reply {
    /// These bytes in one write; the connection stays open.
    fn raw(bytes: &[u8]) -> Reply {
        Reply { pieces: vec![Piece::Bytes(bytes.to_vec())], then: Then::KeepOpen }
    }

    /// `200 OK` with this body and its Content-Length; the connection stays open.
    fn ok(body: &str) -> Reply {
        Reply::raw(format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{body}", body.len()).as_bytes())
    }

    /// These pieces; the connection stays open.
    fn pieces(pieces: Vec<Piece>) -> Reply {
        Reply { pieces, then: Then::KeepOpen }
    }

    fn then(mut self, then: Then) -> Reply {
        self.then = then;
        self
    }
}

type Script = dyn Fn(&Req) -> Reply + Send + Sync;

/// A raw HTTP/1.1 target on 127.0.0.1 that answers each request as its script says. A request
/// whose path starts with `/early` is answered as soon as its head is in, and its body is
/// never read: the connection is held, unread, for 15 s.
#[derive(Clone)]
struct ScriptedTarget {
    addr: SocketAddr,
    script: Arc<Script>,
    log: Arc<Mutex<Vec<Req>>>,
    /// Connections (by number) that ballast closed while the target held them open.
    closed_by_ballast: Arc<Mutex<Vec<usize>>>,
    connections: Arc<AtomicUsize>,
    release: Arc<Notify>,
}

impl ScriptedTarget {
    fn start(script: impl Fn(&Req) -> Reply + Send + Sync + 'static) -> ScriptedTarget {
        let socket = std::net::TcpListener::bind("127.0.0.1:0").expect("the scripted target binds");
        socket.set_nonblocking(true).expect("non-blocking");
        let target = ScriptedTarget {
            addr: socket.local_addr().expect("bound address"),
            script: Arc::new(script),
            log: Arc::default(),
            closed_by_ballast: Arc::default(),
            connections: Arc::default(),
            release: Arc::default(),
        };
        let t = target.clone();
        runtime().spawn(async move {
            let socket = TcpListener::from_std(socket).expect("a tokio listener");
            while let Ok((tcp, _)) = socket.accept().await {
                let t = t.clone();
                tokio::spawn(async move { t.serve(tcp).await });
            }
        });
        target
    }

    /// A ballast in front of this target alone. Its health check only opens a TCP connection,
    /// so that no check request mixes with the test's.
    fn ballast(&self) -> Ballast {
        self.ballast_with("")
    }

    /// As `ballast`, with more keys for the target group.
    fn ballast_with(&self, group_extra: &str) -> Ballast {
        let target = format!("{{ address = \"{}\" }}", self.addr);
        Ballast::start(&one_group(&target, &format!("health_check = {{ protocol = \"tcp\" }}\n{group_extra}")))
    }

    fn requests(&self) -> Vec<Req> {
        self.log.lock().expect("log lock").clone()
    }

    /// The target connections that carried requests.
    fn connections_used(&self) -> BTreeSet<usize> {
        self.requests().iter().map(|r| r.connection).collect()
    }

    fn closed_by_ballast(&self) -> Vec<usize> {
        self.closed_by_ballast.lock().expect("closed lock").clone()
    }

    /// Lets a `Piece::WaitRelease` go on.
    fn release(&self) {
        self.release.notify_one();
    }

    async fn serve(self, mut tcp: TcpStream) {
        let mut buf = Vec::new();
        let mut connection = None;
        for index in 0..10_000 {
            let head_len = loop {
                if let Some(p) = find(&buf, b"\r\n\r\n") {
                    break p + 4;
                }
                if !read_more(&mut tcp, &mut buf).await {
                    if let (Some(c), true) = (connection, buf.is_empty()) {
                        self.closed_by_ballast.lock().expect("closed lock").push(c);
                    }
                    return;
                }
                if connection.is_none() {
                    connection = Some(self.connections.fetch_add(1, Ordering::SeqCst));
                }
            };
            let head = String::from_utf8_lossy(&buf[..head_len]).into_owned();
            buf.drain(..head_len);
            let mut req = Req { connection: connection.expect("numbered"), index, head, body: Vec::new() };
            if req.path().starts_with("/early") {
                // Answered from the head alone; the body is never read.
                let reply = (self.script)(&req);
                self.log.lock().expect("log lock").push(req);
                for piece in reply.pieces {
                    if let Piece::Bytes(bytes) = piece {
                        let _ = tcp.write_all(&bytes).await;
                    }
                }
                tokio::time::sleep(Duration::from_secs(15)).await;
                return;
            }
            let length: usize = req.header_values("content-length").first().and_then(|v| v.parse().ok()).unwrap_or(0);
            while buf.len() < length {
                if !read_more(&mut tcp, &mut buf).await {
                    return;
                }
            }
            req.body = buf.drain(..length).collect();
            let reply = (self.script)(&req);
            self.log.lock().expect("log lock").push(req);
            for piece in reply.pieces {
                match piece {
                    Piece::Bytes(bytes) => {
                        if tcp.write_all(&bytes).await.is_err() {
                            return;
                        }
                    }
                    Piece::Pause(d) => tokio::time::sleep(d).await,
                    Piece::WaitRelease => {
                        let _ = tokio::time::timeout(Duration::from_secs(5), self.release.notified()).await;
                    }
                }
            }
            match reply.then {
                Then::KeepOpen => {}
                Then::Close => return,
                Then::CloseAfter(d) => {
                    tokio::time::sleep(d).await;
                    return;
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A raw client.

/// One client connection to ballast, read answer by answer.
struct RawClient {
    tcp: TcpStream,
    buf: Vec<u8>,
}

impl RawClient {
    async fn connect(addr: SocketAddr) -> RawClient {
        let tcp = tokio::time::timeout(WAIT, TcpStream::connect(addr))
            .await
            .expect("connects within 10 s")
            .expect("connects to ballast");
        RawClient { tcp, buf: Vec::new() }
    }

    async fn send(&mut self, wire: &[u8]) {
        tokio::time::timeout(WAIT, self.tcp.write_all(wire))
            .await
            .expect("the request is written within 10 s")
            .expect("ballast takes the request");
    }

    /// The next whole answer and its bytes; `head`: it answers a HEAD request.
    async fn answer(&mut self, head: bool) -> (Answer, Vec<u8>) {
        let until = Instant::now() + WAIT;
        // Bounded: each turn reads at least one byte or ends.
        for _ in 0..100_000 {
            if let Some((answer, used)) = parse_answer(&self.buf, false, head) {
                let raw = self.buf.drain(..used).collect();
                return (answer, raw);
            }
            let mut chunk = [0u8; 64 * 1024];
            match tokio::time::timeout_at(until, self.tcp.read(&mut chunk)).await {
                Err(_) => panic!("no whole answer within {WAIT:?}; got {:?}", String::from_utf8_lossy(&self.buf)),
                Ok(Ok(0)) | Ok(Err(_)) => {
                    panic!("the connection ended before a whole answer; got {:?}", String::from_utf8_lossy(&self.buf))
                }
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
        panic!("no whole answer in 100000 reads");
    }

    /// Everything up to the end of the connection, and whether it ended within 10 s.
    async fn until_end(&mut self) -> (Vec<u8>, bool) {
        let until = Instant::now() + WAIT;
        let mut ended = false;
        for _ in 0..100_000 {
            let mut chunk = [0u8; 64 * 1024];
            match tokio::time::timeout_at(until, self.tcp.read(&mut chunk)).await {
                Err(_) => break,
                Ok(Ok(0)) | Ok(Err(_)) => {
                    ended = true;
                    break;
                }
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
            }
        }
        (std::mem::take(&mut self.buf), ended)
    }

    /// GET `path` and its whole answer.
    async fn get(&mut self, path: &str) -> Answer {
        self.send(format!("GET {path} HTTP/1.1\r\nHost: engine.test\r\n\r\n").as_bytes()).await;
        self.answer(false).await.0
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A chunked `200` whose body is "hello world!!!" (one chunk with an extension) and whose
/// trailer is `x-checksum: abc`, written in four pieces 30 ms apart; `field` is one more field
/// of its head.
fn chunked_in_pieces(field: &str) -> Reply {
    let head = format!("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n{field}\r\n\r\n5\r\nhel");
    let pieces = [head.as_bytes(), b"lo\r\n6\r\n world\r\n", b"3;ext=1\r\n!!!\r\n0\r\nx-check", b"sum: abc\r\n\r\n"];
    let mut steps = Vec::new();
    for piece in pieces {
        steps.push(Piece::Bytes(piece.to_vec()));
        steps.push(Piece::Pause(Duration::from_millis(30)));
    }
    Reply::pieces(steps)
}

// ---------------------------------------------------------------------------------------------
// The cases.

#[tokio::test]
async fn a_chunked_answer_with_a_trailer_arrives_whole_and_the_connection_carries_on() {
    let target = ScriptedTarget::start(|req| {
        if req.path() != "/chunked" {
            return Reply::ok("next");
        }
        chunked_in_pieces("Trailer: x-checksum")
    });
    let ballast = target.ballast();
    let mut client = RawClient::connect(ballast.addr("lb")).await;
    client.send(b"GET /chunked HTTP/1.1\r\nHost: engine.test\r\n\r\n").await;
    let (answer, raw) = client.answer(false).await;
    assert_eq!(answer.status, 200, "{}", text(&raw));
    assert_eq!(answer.header("transfer-encoding"), Some("chunked"), "{}", text(&raw));
    assert_eq!(text(&answer.body), "hello world!!!", "{}", text(&raw));
    assert!(text(&raw).ends_with("0\r\nx-checksum: abc\r\n\r\n"), "the trailer is lost: {}", text(&raw));
    assert!(!answer.closes(), "{}", text(&raw));
    // Nothing stray after the body, and the connection takes the next request.
    let next = client.get("/next").await;
    assert_eq!((next.status, text(&next.body)), (200, "next".to_string()));
    assert_eq!(target.connections_used().len(), 1, "the chunked answer ended cleanly: its connection is reused");
}

#[tokio::test]
async fn a_head_answer_declaring_a_length_has_no_body_and_the_next_get_gets_its_own_answer() {
    let target = ScriptedTarget::start(|req| {
        if req.method() == "HEAD" {
            Reply::raw(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nX-Kind: head\r\n\r\n")
        } else {
            Reply::ok("the get")
        }
    });
    let ballast = target.ballast();
    let mut client = RawClient::connect(ballast.addr("lb")).await;
    client.send(b"HEAD /doc HTTP/1.1\r\nHost: engine.test\r\n\r\n").await;
    let (head, raw) = client.answer(true).await;
    assert_eq!(head.status, 200, "{}", text(&raw));
    assert_eq!(head.header("content-length"), Some("1000"), "{}", text(&raw));
    assert_eq!(head.header("x-kind"), Some("head"), "{}", text(&raw));
    let get = client.get("/doc").await;
    assert_eq!((get.status, text(&get.body)), (200, "the get".to_string()));
    assert!(client.buf.is_empty(), "stray bytes: {:?}", text(&client.buf));
    let methods: Vec<String> = target.requests().iter().map(|r| r.method().to_string()).collect();
    assert_eq!(methods, ["HEAD", "GET"]);
}

#[tokio::test]
async fn no_content_and_not_modified_answers_leave_the_connection_usable() {
    let target = ScriptedTarget::start(|req| match req.path() {
        "/204" => Reply::raw(b"HTTP/1.1 204 No Content\r\nX-Kind: none\r\n\r\n"),
        // A 304 may carry the length of the representation it stands for, and still no body.
        "/304" => Reply::raw(b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\nContent-Length: 5\r\n\r\n"),
        _ => Reply::ok("hello"),
    });
    let ballast = target.ballast();
    let mut client = RawClient::connect(ballast.addr("lb")).await;
    let no_content = client.get("/204").await;
    assert_eq!((no_content.status, no_content.body.len()), (204, 0));
    assert_eq!(no_content.header("x-kind"), Some("none"));
    client.send(b"GET /304 HTTP/1.1\r\nHost: engine.test\r\nIf-None-Match: \"v1\"\r\n\r\n").await;
    // A 304 has no body: read its head alone.
    let (not_modified, raw) = client.answer(true).await;
    assert_eq!(not_modified.status, 304, "{}", text(&raw));
    assert_eq!(not_modified.header("etag"), Some("\"v1\""), "{}", text(&raw));
    let after = client.get("/after").await;
    assert_eq!((after.status, text(&after.body)), (200, "hello".to_string()));
    assert!(client.buf.is_empty(), "stray bytes: {:?}", text(&client.buf));
    assert_eq!(target.connections_used().len(), 1, "bodiless answers end cleanly: one target connection");
}

#[tokio::test]
async fn a_close_delimited_answer_arrives_whole_then_ballast_closes_the_client() {
    let body: Vec<u8> = (0..200_000u32).map(|i| b'a' + (i % 26) as u8).collect();
    let sent = body.clone();
    let target = ScriptedTarget::start(move |_| {
        let mut steps = vec![Piece::Bytes(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n".to_vec())];
        for part in sent.chunks(50_000) {
            steps.push(Piece::Pause(Duration::from_millis(20)));
            steps.push(Piece::Bytes(part.to_vec()));
        }
        Reply::pieces(steps).then(Then::Close)
    });
    let ballast = target.ballast();
    let mut client = RawClient::connect(ballast.addr("lb")).await;
    client.send(b"GET /until-close HTTP/1.1\r\nHost: engine.test\r\n\r\n").await;
    let (raw, ended) = client.until_end().await;
    assert!(ended, "ballast kept the client connection open after a close-delimited answer");
    let (answer, used) = parse_answer(&raw, true, false).expect("one answer");
    assert_eq!(answer.status, 200);
    assert!(answer.closes(), "the answer does not say `connection: close`: {:?}", answer.headers);
    assert_eq!(used, raw.len());
    assert_eq!(answer.body.len(), body.len(), "the body was cut");
    assert!(answer.body == body, "the body arrived changed");
}

#[tokio::test]
async fn an_early_hints_answer_reaches_the_client_before_the_final_one() {
    let target = ScriptedTarget::start(|_| {
        Reply::pieces(vec![
            Piece::Bytes(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n".to_vec()),
            // The final answer waits until the client has seen the hints.
            Piece::WaitRelease,
            Piece::Bytes(
                b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nLink: </style.css>; rel=preload\r\n\r\nhello".to_vec(),
            ),
        ])
    });
    let ballast = target.ballast();
    let mut client = RawClient::connect(ballast.addr("lb")).await;
    client.send(b"GET /page HTTP/1.1\r\nHost: engine.test\r\n\r\n").await;
    let started = Instant::now();
    let (hints, raw) = client.answer(false).await;
    let waited = started.elapsed();
    target.release();
    assert_eq!(hints.status, 103, "{}", text(&raw));
    assert_eq!(hints.header("link"), Some("</style.css>; rel=preload"), "{}", text(&raw));
    assert!(waited < Duration::from_secs(4), "the hints waited for the final answer ({waited:?})");
    let (last, raw) = client.answer(false).await;
    assert_eq!((last.status, text(&last.body)), (200, "hello".to_string()), "{}", text(&raw));
    let next = client.get("/again").await;
    assert_eq!(next.status, 103, "the next request's hints come first too");
    target.release();
    let (last, _) = client.answer(false).await;
    assert_eq!(last.status, 200);
}

#[tokio::test]
async fn several_interim_answers_read_at_once_all_reach_the_client() {
    // All three come in one read from the target: each interim answer still goes on.
    let target = ScriptedTarget::start(|_| {
        Reply::raw(
            b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n\
              HTTP/1.1 103 Early Hints\r\nLink: </b.js>; rel=preload\r\n\r\n\
              HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
        )
    });
    let ballast = target.ballast_with("target_timeout = \"3s\"");
    let mut client = RawClient::connect(ballast.addr("lb")).await;
    client.send(b"GET /page HTTP/1.1\r\nHost: engine.test\r\n\r\n").await;
    let mut got = Vec::new();
    for _ in 0..3 {
        let (answer, raw) = client.answer(false).await;
        let last = answer.status >= 200;
        got.push((answer.status, answer.header("link").map(str::to_string), text(&answer.body), text(&raw)));
        if last {
            break;
        }
    }
    let summary: Vec<(u16, Option<String>, String)> =
        got.iter().map(|(s, l, b, _)| (*s, l.clone(), b.clone())).collect();
    let expected = vec![
        (103, Some("</a.css>; rel=preload".to_string()), String::new()),
        (103, Some("</b.js>; rel=preload".to_string()), String::new()),
        (200, None, "hello".to_string()),
    ];
    assert_eq!(summary, expected, "the client got {:?}", got.iter().map(|g| &g.3).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_answer_to_an_upload_reaches_the_client() {
    // The target answers at once and never reads the body: the answer must reach the
    // client without waiting for target_timeout.
    let target =
        ScriptedTarget::start(|_| Reply::raw(b"HTTP/1.1 413 Payload Too Large\r\nContent-Length: 3\r\n\r\nbig"));
    let ballast = target.ballast_with("target_timeout = \"4s\"");
    let tcp = RawClient::connect(ballast.addr("lb")).await.tcp;
    let (mut rd, mut wr) = tcp.into_split();
    // More than every socket buffer between the client and the target holds.
    const LEN: usize = 32 << 20;
    let writer = tokio::spawn(async move {
        let head = format!("POST /early/upload HTTP/1.1\r\nHost: engine.test\r\nContent-Length: {LEN}\r\n\r\n");
        let chunk = vec![b'u'; 1 << 20];
        let mut wire = vec![head.into_bytes()];
        wire.extend((0..LEN / chunk.len()).map(|_| chunk.clone()));
        for part in wire {
            // Ballast may stop reading (its answer is out): the writer just stops.
            match tokio::time::timeout(Duration::from_secs(8), wr.write_all(&part)).await {
                Ok(Ok(())) => {}
                _ => return,
            }
        }
    });
    let started = Instant::now();
    let mut got = Vec::new();
    let mut answer = None;
    for _ in 0..1000 {
        let mut chunk = [0u8; 4096];
        match tokio::time::timeout_at(started + WAIT, rd.read(&mut chunk)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&chunk[..n]),
            _ => break,
        }
        if let Some((a, _)) = parse_answer(&got, false, false) {
            answer = Some(a);
            break;
        }
    }
    let waited = started.elapsed();
    writer.abort();
    let answer = answer.unwrap_or_else(|| panic!("no answer within {WAIT:?}: {:?}", text(&got)));
    assert_eq!((answer.status, text(&answer.body)), (413, "big".to_string()), "after {waited:?}: {}", text(&got));
    assert!(waited < Duration::from_secs(2), "the early answer took {waited:?}");
}

#[tokio::test]
async fn a_pooled_connection_the_target_closed_meanwhile_is_not_used() {
    let target = ScriptedTarget::start(|_| Reply::ok("fresh").then(Then::CloseAfter(Duration::from_millis(200))));
    let ballast = target.ballast();
    let mut client = RawClient::connect(ballast.addr("lb")).await;
    let first = client.get("/one").await;
    assert_eq!(first.status, 200);
    // The target has closed its idle connection by now.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let second = client.get("/two").await;
    assert_eq!((second.status, text(&second.body)), (200, "fresh".to_string()));
    let used: Vec<(String, usize)> = target.requests().iter().map(|r| (r.path().to_string(), r.connection)).collect();
    assert_eq!(used, [("/one".to_string(), 0), ("/two".to_string(), 1)]);
}

#[tokio::test]
async fn a_get_the_target_drops_unanswered_on_a_reused_connection_is_retried_on_a_new_one() {
    // The target's idle timer fires just as the request comes: it closes without answering.
    let target = ScriptedTarget::start(|req| match (req.connection, req.index) {
        (0, 1) => Reply::pieces(vec![]).then(Then::Close),
        _ => Reply::ok(req.path()),
    });
    let ballast = target.ballast();
    let mut client = RawClient::connect(ballast.addr("lb")).await;
    assert_eq!(client.get("/one").await.status, 200);
    let second = client.get("/two").await;
    assert_eq!((second.status, text(&second.body)), (200, "/two".to_string()));
    let seen: Vec<(String, usize)> = target.requests().iter().map(|r| (r.path().to_string(), r.connection)).collect();
    assert_eq!(seen, [("/one".to_string(), 0), ("/two".to_string(), 0), ("/two".to_string(), 1)]);
}

#[tokio::test]
async fn a_post_the_target_drops_unanswered_on_a_reused_connection_is_not_sent_twice() {
    // Whether the target acted on it before closing cannot be told: a POST gets a 502. The
    // target only closed a kept-alive connection: it is not marked down for it.
    let target = ScriptedTarget::start(|req| match (req.connection, req.index) {
        (0, 1) => Reply::pieces(vec![]).then(Then::Close),
        _ => Reply::ok(req.path()),
    });
    let address = format!("{{ address = \"{}\" }}", target.addr);
    let config = one_group(&address, "health_check = { protocol = \"tcp\" }");
    let ballast = Ballast::start(&format!("{config}\n[admin]\nbind = \"127.0.0.1:0\"\n"));
    let mut client = RawClient::connect(ballast.addr("lb")).await;
    assert_eq!(client.get("/one").await.status, 200);
    client.send(b"POST /pay HTTP/1.1\r\nHost: engine.test\r\nContent-Length: 0\r\n\r\n").await;
    let (answer, raw) = client.answer(false).await;
    assert_eq!(answer.status, 502, "{}", text(&raw));
    let seen: Vec<(String, usize)> = target.requests().iter().map(|r| (r.path().to_string(), r.connection)).collect();
    assert_eq!(seen, [("/one".to_string(), 0), ("/pay".to_string(), 0)]);
    let listed = crate::common::targets_of(&ballast, "g").await;
    assert_ne!(listed[0]["state"], "unhealthy", "{listed}");
}

#[tokio::test]
async fn a_large_post_arrives_byte_exact_and_the_connection_carries_on() {
    let target = ScriptedTarget::start(|req| Reply::ok(&format!("got {}", req.body.len())));
    let ballast = target.ballast();
    let body: Vec<u8> = (0..3_000_000u32).map(|i| (i.wrapping_mul(31) ^ (i >> 9)) as u8).collect();
    let mut client = RawClient::connect(ballast.addr("lb")).await;
    let head = format!("POST /upload HTTP/1.1\r\nHost: engine.test\r\nContent-Length: {}\r\n\r\n", body.len());
    // The head with the first bytes, then the rest in uneven writes.
    let first = 1000;
    let mut wire = head.into_bytes();
    wire.extend_from_slice(&body[..first]);
    client.send(&wire).await;
    for part in body[first..].chunks(333_333) {
        client.send(part).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (answer, raw) = client.answer(false).await;
    assert_eq!((answer.status, text(&answer.body)), (200, format!("got {}", body.len())), "{}", text(&raw));
    let next = client.get("/after").await;
    assert_eq!((next.status, text(&next.body)), (200, "got 0".to_string()));
    let requests = target.requests();
    assert_eq!(requests.len(), 2);
    let got = &requests[0].body;
    let differs = got.iter().zip(&body).position(|(a, b)| a != b);
    assert!(
        got.len() == body.len() && differs.is_none(),
        "length {} of {}, first difference at {differs:?}",
        got.len(),
        body.len()
    );
    assert_eq!(requests[1].path(), "/after");
}

#[tokio::test]
async fn two_pipelined_gets_are_answered_in_order() {
    let target = ScriptedTarget::start(|req| {
        let reply = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{}", req.path().len(), req.path());
        // The first answer is the slower one.
        let pause = if req.path() == "/first" { 150 } else { 0 };
        Reply::pieces(vec![Piece::Pause(Duration::from_millis(pause)), Piece::Bytes(reply.into_bytes())])
    });
    let ballast = target.ballast();
    let mut client = RawClient::connect(ballast.addr("lb")).await;
    client
        .send(b"GET /first HTTP/1.1\r\nHost: engine.test\r\n\r\nGET /second HTTP/1.1\r\nHost: engine.test\r\n\r\n")
        .await;
    let (a, _) = client.answer(false).await;
    let (b, _) = client.answer(false).await;
    assert_eq!((a.status, text(&a.body)), (200, "/first".to_string()));
    assert_eq!((b.status, text(&b.body)), (200, "/second".to_string()));
    // Nothing more comes, and the connection stays open.
    let more = tokio::time::timeout(Duration::from_millis(300), client.tcp.read(&mut [0u8; 64])).await;
    assert!(client.buf.is_empty(), "stray bytes {:?}", text(&client.buf));
    assert!(more.is_err(), "after the two answers: {more:?} (0 is the end of the connection)");
}

#[tokio::test]
async fn sequential_requests_on_one_client_connection_share_pooled_target_connections() {
    let target = ScriptedTarget::start(|req| Reply::ok(req.path()));
    let ballast = target.ballast();
    let mut client = RawClient::connect(ballast.addr("lb")).await;
    for i in 0..20 {
        let path = format!("/r{i}");
        let answer = client.get(&path).await;
        assert_eq!((answer.status, text(&answer.body)), (200, path));
    }
    assert_eq!(target.requests().len(), 20);
    let used = target.connections_used();
    assert!(used.len() < 3, "20 requests took {} target connections", used.len());
}

#[tokio::test]
async fn an_answer_with_two_lengths_is_a_502_and_its_target_connection_is_dropped() {
    let target = ScriptedTarget::start(|req| match req.path() {
        "/bad" => Reply::raw(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\nhello!!"),
        _ => Reply::ok("fine"),
    });
    let ballast = target.ballast();
    let mut client = RawClient::connect(ballast.addr("lb")).await;
    client.send(b"GET /bad HTTP/1.1\r\nHost: engine.test\r\n\r\n").await;
    let (answer, raw) = client.answer(false).await;
    assert_eq!(answer.status, 502, "{}", text(&raw));
    assert!(!text(&raw).contains("hello"), "the broken body reached the client: {}", text(&raw));
    // Ballast lets go of the target connection that carried the broken answer.
    let dropped = wait_until(Duration::from_secs(3), || target.closed_by_ballast().contains(&0)).await;
    assert!(dropped, "ballast kept the target connection that sent two lengths");
    // Ballast is still up, and the next request goes over a new target connection.
    let resp = http_client().get(format!("{}/good", ballast.url("lb"))).send().await.expect("ballast answers");
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.text().await.expect("a body"), "fine");
    let seen: Vec<(String, usize)> = target.requests().iter().map(|r| (r.path().to_string(), r.connection)).collect();
    assert_eq!(seen, [("/bad".to_string(), 0), ("/good".to_string(), 1)]);
}

#[tokio::test]
async fn a_closing_client_is_closed_but_its_target_connection_is_kept() {
    let target = ScriptedTarget::start(|req| Reply::ok(req.path()));
    let ballast = target.ballast();
    let mut client = RawClient::connect(ballast.addr("lb")).await;
    client.send(b"GET /bye HTTP/1.1\r\nHost: engine.test\r\nConnection: close\r\n\r\n").await;
    let (answer, raw) = client.answer(false).await;
    assert_eq!((answer.status, text(&answer.body)), (200, "/bye".to_string()));
    assert!(answer.closes(), "no `connection: close` in {}", text(&raw));
    let (rest, ended) = client.until_end().await;
    assert!(ended, "ballast kept the client connection open");
    assert!(rest.is_empty(), "stray bytes {:?}", text(&rest));
    // A new client's request is served; the first target connection stays open for reuse (by
    // the worker thread that opened it: the new client may land on another one).
    let mut other = RawClient::connect(ballast.addr("lb")).await;
    let again = other.get("/again").await;
    assert_eq!((again.status, text(&again.body)), (200, "/again".to_string()));
    let seen: Vec<(String, usize)> = target.requests().iter().map(|r| (r.path().to_string(), r.connection)).collect();
    assert_eq!(seen[0], ("/bye".to_string(), 0));
    assert!(seen.len() == 2 && seen[1].1 <= 1, "{seen:?}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(target.closed_by_ballast().is_empty(), "the target connection was closed");
    assert!(
        target.requests().iter().all(|r| r.header_values("connection").is_empty()),
        "the client's Connection reached the target"
    );
}

#[tokio::test]
async fn a_chunked_upload_between_two_gets_on_one_connection_is_answered_in_order() {
    let backend = Backend::start("b").await;
    let ballast = Ballast::start(&one_group(&backend.target(), ""));
    let mut client = RawClient::connect(ballast.addr("lb")).await;
    let first = client.get("/one").await;
    assert_eq!((first.status, text(&first.body)), (200, "b".to_string()));
    client
        .send(
            b"POST /upload HTTP/1.1\r\nHost: engine.test\r\nTransfer-Encoding: chunked\r\n\r\n\
              5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        )
        .await;
    let (upload, raw) = client.answer(false).await;
    assert_eq!((upload.status, text(&upload.body)), (200, "11".to_string()), "{}", text(&raw));
    let third = client.get("/three").await;
    assert_eq!((third.status, text(&third.body)), (200, "b".to_string()));
    // The same three in one write: hyper gets the connection with two requests already read.
    let mut client = RawClient::connect(ballast.addr("lb")).await;
    client
        .send(
            b"GET /one HTTP/1.1\r\nHost: engine.test\r\n\r\n\
              POST /upload HTTP/1.1\r\nHost: engine.test\r\nTransfer-Encoding: chunked\r\n\r\n\
              5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n\
              GET /three HTTP/1.1\r\nHost: engine.test\r\n\r\n",
        )
        .await;
    let mut bodies = Vec::new();
    for _ in 0..3 {
        let (answer, raw) = client.answer(false).await;
        assert_eq!(answer.status, 200, "{}", text(&raw));
        bodies.push(text(&answer.body));
    }
    assert_eq!(bodies, ["b", "11", "b"]);
    let uris: Vec<String> = backend.seen().iter().map(|s| s.uri.clone()).collect();
    assert_eq!(uris, ["/one", "/upload", "/three", "/one", "/upload", "/three"]);
}

#[tokio::test]
async fn forwarded_headers_are_set_and_hop_by_hop_headers_stay_behind() {
    let target = ScriptedTarget::start(|_| Reply::ok("seen"));
    let ballast = target.ballast();
    let port = ballast.addr("lb").port();
    let mut client = RawClient::connect(ballast.addr("lb")).await;
    client
        .send(
            b"GET /h?x=1 HTTP/1.1\r\nHost: app.example\r\nX-Forwarded-For: 192.0.2.1\r\n\
              Connection: keep-alive, x-secret\r\nX-Secret: hidden\r\nKeep-Alive: timeout=5\r\n\
              X-Forwarded-Proto: https\r\nX-Forwarded-Port: 1\r\nX-End-To-End: kept\r\n\r\n",
        )
        .await;
    let (answer, _) = client.answer(false).await;
    assert_eq!(answer.status, 200);
    let req = target.requests().pop().expect("the request reached the target");
    assert_eq!(req.request_line(), "GET /h?x=1 HTTP/1.1", "{}", req.head);
    assert_eq!(req.header_values("host"), ["app.example"], "{}", req.head);
    assert_eq!(req.header_values("x-forwarded-for"), ["192.0.2.1, 127.0.0.1"], "{}", req.head);
    assert_eq!(req.header_values("x-forwarded-proto"), ["http"], "{}", req.head);
    assert_eq!(req.header_values("x-forwarded-port"), [port.to_string()], "{}", req.head);
    assert_eq!(req.header_values("x-end-to-end"), ["kept"], "{}", req.head);
    for hop in ["connection", "keep-alive", "x-secret"] {
        assert!(req.header_values(hop).is_empty(), "{hop} reached the target: {}", req.head);
    }
}

#[tokio::test]
async fn a_connection_field_naming_the_length_smuggles_nothing() {
    // `Connection: content-length` must not strip the length while the body still goes: the
    // body would reach the target as a second, unguarded request.
    let target = ScriptedTarget::start(|req| Reply::ok(req.path()));
    let ballast = target.ballast();
    let mut client = RawClient::connect(ballast.addr("lb")).await;
    let smuggled = b"GET /admin HTTP/1.1\r\nHost: internal\r\n\r\n";
    let head = format!(
        "POST /public HTTP/1.1\r\nHost: engine.test\r\nConnection: content-length, host\r\nContent-Length: {}\r\n\r\n",
        smuggled.len()
    );
    client.send(head.as_bytes()).await;
    client.send(smuggled).await;
    let (answer, raw) = client.answer(false).await;
    assert_eq!((answer.status, text(&answer.body)), (200, "/public".to_string()), "{}", text(&raw));
    let next = client.get("/next").await;
    assert_eq!(next.status, 200);
    let seen: Vec<(String, Vec<u8>)> =
        target.requests().iter().map(|r| (r.path().to_string(), r.body.clone())).collect();
    assert_eq!(seen, [("/public".to_string(), smuggled.to_vec()), ("/next".to_string(), Vec::new())]);
}

// ---------------------------------------------------------------------------------------------
// HTTP/2 clients: their body-less requests go over the same pool (`proxy::h1::client`).

/// GETs `path` over h2c from `client`; the status and the body.
async fn h2_get(client: &reqwest::Client, ballast: &Ballast, path: &str) -> (u16, String) {
    let resp = client.get(format!("{}{path}", ballast.url("lb"))).send().await.expect("an h2c answer");
    assert_eq!(resp.version(), reqwest::Version::HTTP_2);
    let status = resp.status().as_u16();
    (status, resp.text().await.expect("a whole body"))
}

/// hyper's own HTTP/2 client (which shows trailers and each frame) on an h2c connection to
/// listener `lb`.
async fn h2c_sender(ballast: &Ballast) -> H2Sender {
    let tcp = TcpStream::connect(ballast.addr("lb")).await.expect("connects");
    let (sender, connection) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tcp))
            .await
            .expect("an h2c handshake");
    tokio::spawn(connection);
    sender
}

type H2Sender = hyper::client::conn::http2::SendRequest<http_body_util::Empty<bytes::Bytes>>;

/// GETs `path` (query included) from listener `lb` on `sender`: the answer, its body to come.
async fn h2c_send(sender: &mut H2Sender, ballast: &Ballast, path: &str) -> hyper::Response<hyper::body::Incoming> {
    let uri = format!("http://{}{path}", ballast.addr("lb"));
    let request = hyper::Request::get(uri).body(http_body_util::Empty::<bytes::Bytes>::new()).expect("a request");
    tokio::time::timeout(WAIT, sender.send_request(request)).await.expect("in time").expect("an answer")
}

#[tokio::test]
async fn http2_clients_get_chunked_answers_decoded_over_pooled_target_connections() {
    let target = ScriptedTarget::start(|req| {
        if !req.path().starts_with("/chunked") {
            return Reply::ok(&format!("{} {}", req.method(), req.path()));
        }
        chunked_in_pieces("X-Kind: chunks")
    });
    let ballast = target.ballast();
    let mut sender = h2c_sender(&ballast).await;
    let resp = h2c_send(&mut sender, &ballast, "/chunked?x=1").await;
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["x-kind"], "chunks");
    assert!(resp.headers().get("transfer-encoding").is_none(), "HTTP/2 has no chunked coding");
    let body = http_body_util::BodyExt::collect(resp.into_body()).await.expect("a whole body");
    let trailers = body.trailers().cloned().expect("the trailer fields");
    assert_eq!(trailers["x-checksum"], "abc");
    assert_eq!(text(&body.to_bytes()), "hello world!!!", "the chunks are decoded");
    let next = h2c_send(&mut sender, &ballast, "/next").await;
    let next = http_body_util::BodyExt::collect(next.into_body()).await.expect("a whole body").to_bytes();
    assert_eq!(text(&next), "GET /next");
    // (Target connections are pooled per worker: the same client connection finds its own.)
    assert_eq!(target.connections_used().len(), 1, "the chunked answer ended cleanly: its connection is reused");
    let first = &target.requests()[0];
    assert_eq!(first.request_line(), "GET /chunked?x=1 HTTP/1.1", "{}", first.head);
    assert_eq!(first.header_values("host"), [ballast.addr("lb").to_string()], "{}", first.head);
    assert_eq!(first.header_values("x-forwarded-proto"), ["http"], "{}", first.head);
    assert_eq!(first.header_values("x-forwarded-for"), ["127.0.0.1"], "{}", first.head);
    // A request with a body still reaches the target whole (through hyper's client).
    let client = crate::common::h2c_client();
    let posted = client.post(format!("{}/upload", ballast.url("lb"))).body("payload").send().await;
    assert_eq!(posted.expect("an h2c answer").text().await.expect("a body"), "POST /upload");
    assert_eq!(target.requests().last().map(|r| r.body.clone()), Some(b"payload".to_vec()));
}

#[tokio::test]
async fn http2_clients_get_head_sliced_and_close_delimited_answers_whole() {
    let target = ScriptedTarget::start(|req| match req.path() {
        "/head" => Reply::raw(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"),
        "/sliced" => Reply::pieces(vec![
            Piece::Bytes(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello".to_vec()),
            Piece::Pause(Duration::from_millis(50)),
            Piece::Bytes(b" world".to_vec()),
        ]),
        "/until-close" => Reply::raw(b"HTTP/1.0 200 OK\r\n\r\nall of it").then(Then::Close),
        "/empty" => Reply::raw(b"HTTP/1.1 204 No Content\r\n\r\n"),
        path => Reply::ok(path),
    });
    let ballast = target.ballast();
    let client = crate::common::h2c_client();
    let head = client.head(format!("{}/head", ballast.url("lb"))).send().await.expect("an h2c answer");
    assert_eq!(head.status().as_u16(), 200);
    assert_eq!(head.headers()["content-length"], "5", "a HEAD answer keeps the length it declares");
    assert_eq!(head.text().await.expect("no body"), "");
    assert_eq!(h2_get(&client, &ballast, "/sliced").await, (200, "hello world".to_string()));
    assert_eq!(h2_get(&client, &ballast, "/until-close").await, (200, "all of it".to_string()));
    assert_eq!(h2_get(&client, &ballast, "/empty").await, (204, String::new()));
    assert_eq!(h2_get(&client, &ballast, "/last").await, (200, "/last".to_string()));
    let by_path: Vec<(String, usize)> =
        target.requests().iter().map(|r| (r.path().to_string(), r.connection)).collect();
    // Every answer but the close-delimited one left its connection usable.
    assert_eq!(
        by_path,
        [
            ("/head".to_string(), 0),
            ("/sliced".to_string(), 0),
            ("/until-close".to_string(), 0),
            ("/empty".to_string(), 1),
            ("/last".to_string(), 1)
        ]
    );
}

#[tokio::test]
async fn an_http2_get_dropped_on_a_reused_connection_goes_again_and_a_broken_answer_is_a_502() {
    let target = ScriptedTarget::start(|req| match (req.connection, req.index, req.path()) {
        (0, 1, _) => Reply::pieces(vec![]).then(Then::Close),
        (_, _, "/broken") => Reply::raw(b"NOT HTTP AT ALL\r\n\r\n").then(Then::Close),
        (_, _, path) => Reply::ok(path),
    });
    let ballast = target.ballast();
    let client = crate::common::h2c_client();
    assert_eq!(h2_get(&client, &ballast, "/one").await, (200, "/one".to_string()));
    assert_eq!(h2_get(&client, &ballast, "/two").await, (200, "/two".to_string()));
    let seen: Vec<(String, usize)> = target.requests().iter().map(|r| (r.path().to_string(), r.connection)).collect();
    assert_eq!(seen, [("/one".to_string(), 0), ("/two".to_string(), 0), ("/two".to_string(), 1)]);
    let (status, body) = h2_get(&client, &ballast, "/broken").await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("broken response"), "{body}");
}

#[tokio::test]
async fn an_http2_get_whose_target_began_an_answer_is_not_sent_again() {
    // An interim answer, then the target hangs up: the request may have been acted on.
    let target = ScriptedTarget::start(|req| match (req.connection, req.index) {
        (0, 1) => Reply::raw(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n").then(Then::Close),
        _ => Reply::ok(req.path()),
    });
    let ballast = target.ballast();
    let client = crate::common::h2c_client();
    assert_eq!(h2_get(&client, &ballast, "/one").await, (200, "/one".to_string()));
    let (status, body) = h2_get(&client, &ballast, "/two").await;
    assert_eq!(status, 502, "{body}");
    let seen: Vec<(String, usize)> = target.requests().iter().map(|r| (r.path().to_string(), r.connection)).collect();
    assert_eq!(seen, [("/one".to_string(), 0), ("/two".to_string(), 0)], "sent once");
}

#[tokio::test]
async fn an_http2_clients_cookies_reach_an_http1_target_as_one_field() {
    let target = ScriptedTarget::start(|req| Reply::ok(req.path()));
    let ballast = target.ballast();
    let client = crate::common::h2c_client();
    for method in [reqwest::Method::GET, reqwest::Method::POST] {
        let request = client.request(method.clone(), format!("{}/c", ballast.url("lb")));
        let request = request.header("cookie", "a=1").header("cookie", "b=2");
        let request = if method == reqwest::Method::POST { request.body("x") } else { request };
        assert_eq!(request.send().await.expect("an h2c answer").status().as_u16(), 200);
        let last = target.requests().last().cloned().expect("a request");
        assert_eq!(last.header_values("cookie"), ["a=1; b=2"], "{method}: {}", last.head);
    }
}

#[tokio::test]
async fn an_http2_answer_reaches_the_client_piece_by_piece() {
    let target = ScriptedTarget::start(|req| match req.path() {
        "/stream" => Reply::pieces(vec![
            Piece::Bytes(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nfirst".to_vec()),
            Piece::WaitRelease,
            Piece::Bytes(b"later".to_vec()),
        ]),
        path => Reply::ok(path),
    });
    let ballast = target.ballast();
    let mut sender = h2c_sender(&ballast).await;
    let resp = h2c_send(&mut sender, &ballast, "/stream").await;
    assert_eq!(resp.status().as_u16(), 200);
    let mut body = resp.into_body();
    // The target holds the rest back until released (or 5 s): the first piece must not wait
    // for it in the balancer.
    let first = tokio::time::timeout(Duration::from_secs(2), http_body_util::BodyExt::frame(&mut body))
        .await
        .expect("the first piece arrives while the target holds the rest")
        .expect("a frame")
        .expect("not an error");
    assert_eq!(text(&first.into_data().expect("data")), "first");
    target.release();
    let rest = tokio::time::timeout(WAIT, http_body_util::BodyExt::collect(body)).await.expect("in time");
    assert_eq!(text(&rest.expect("the rest").to_bytes()), "later");
}

#[tokio::test]
async fn many_http2_streams_at_once_each_get_their_own_answer() {
    let target = ScriptedTarget::start(|req| Reply::ok(&format!("{} {}", req.method(), req.path())));
    let ballast = target.ballast();
    let client = crate::common::h2c_client();
    let asked = (0..200).map(|i| {
        let request = client.get(format!("{}/n/{i}", ballast.url("lb")));
        async move {
            let resp = request.send().await.expect("an h2c answer");
            assert_eq!(resp.version(), reqwest::Version::HTTP_2);
            resp.text().await.expect("a whole body")
        }
    });
    let answers = tokio::time::timeout(WAIT, futures_util::future::join_all(asked)).await.expect("in time");
    for (i, answer) in answers.iter().enumerate() {
        assert_eq!(answer, &format!("GET /n/{i}"));
    }
}
