//! Raw HTTP/1.1 on both sides of ballast, for the guard tests. `RawTarget` reads what ballast
//! forwards byte for byte: it frames each request itself (head to the first CRLFCRLF, then the
//! body by Content-Length or chunked), records it raw, and answers `200 ok` on a connection it
//! keeps open. `exchange` is the client side: it sends any bytes and reads back every answer,
//! noting whether ballast closed the connection. The tests judge from these records, not from
//! what a lenient HTTP library would make of the bytes.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::time::Instant;

/// A head longer than this is recorded as it is and the connection dropped.
const MAX_HEAD: usize = 1 << 20;

/// One request as the target framed it.
#[derive(Debug, Clone)]
pub struct RawRequest {
    /// Which target connection it came on, counted from 0.
    pub connection: usize,
    /// Its place on that connection, counted from 0.
    pub index: usize,
    /// The head, CRLFCRLF included (or what arrived of it).
    pub head: Vec<u8>,
    /// The body as it came on the wire (chunk framing included).
    pub body: Vec<u8>,
    /// Whether the whole message arrived; `false` when the connection ended inside it.
    pub complete: bool,
    /// Why the target could not frame it, if it could not.
    pub framing_error: Option<String>,
}

impl RawRequest {
    /// The request line, lossily decoded.
    pub fn request_line(&self) -> String {
        let end = self.head.windows(2).position(|w| w == b"\r\n").unwrap_or(self.head.len());
        String::from_utf8_lossy(&self.head[..end]).into_owned()
    }

    /// The request target (second word of the request line).
    pub fn target(&self) -> String {
        self.request_line().split(' ').nth(1).unwrap_or_default().to_string()
    }

    /// The header lines as (name, value), names as sent, values trimmed.
    pub fn headers(&self) -> Vec<(String, String)> {
        let text = String::from_utf8_lossy(&self.head);
        text.split("\r\n")
            .skip(1)
            .filter(|l| !l.is_empty())
            .map(|l| match l.split_once(':') {
                Some((n, v)) => (n.to_string(), v.trim_matches([' ', '\t']).to_string()),
                None => (l.to_string(), String::new()),
            })
            .collect()
    }

    /// Every value of header `name` (case-insensitive), in order.
    pub fn header_values(&self, name: &str) -> Vec<String> {
        self.headers().into_iter().filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v).collect()
    }

    /// The client address ballast appended to X-Forwarded-For (its last element).
    pub fn client_ip(&self) -> Option<IpAddr> {
        let last = self.header_values("x-forwarded-for").pop()?;
        last.rsplit(',').next()?.trim().parse().ok()
    }

    /// The body with any chunk framing removed.
    pub fn decoded_body(&self) -> Vec<u8> {
        if self.is_chunked() {
            dechunk(&self.body).map(|(data, _)| data).unwrap_or_else(|_| self.body.clone())
        } else {
            self.body.clone()
        }
    }

    fn is_chunked(&self) -> bool {
        self.header_values("transfer-encoding").iter().any(|v| v.eq_ignore_ascii_case("chunked"))
    }
}

/// A running recording target; it stops when the test process ends.
#[derive(Clone)]
pub struct RawTarget {
    pub addr: SocketAddr,
    log: Arc<Mutex<Vec<RawRequest>>>,
    /// Requests whose head arrived and whose body has not ended yet.
    in_progress: Arc<AtomicUsize>,
}

impl RawTarget {
    /// Listens on an OS-chosen loopback port.
    pub fn start() -> RawTarget {
        let socket = std::net::TcpListener::bind("127.0.0.1:0").expect("raw target binds");
        socket.set_nonblocking(true).expect("non-blocking");
        let target = RawTarget {
            addr: socket.local_addr().expect("bound address"),
            log: Arc::default(),
            in_progress: Arc::default(),
        };
        let t = target.clone();
        runtime().spawn(async move {
            let socket = TcpListener::from_std(socket).expect("a tokio listener");
            let mut connection = 0;
            while let Ok((tcp, _)) = socket.accept().await {
                let t = t.clone();
                tokio::spawn(async move { t.serve(tcp, connection).await });
                connection += 1;
            }
        });
        target
    }

    /// `{ address = "ADDR" }` for a config's target list.
    pub fn target(&self) -> String {
        format!("{{ address = \"{}\" }}", self.addr)
    }

    /// Every request recorded so far (complete ones, and those cut off inside).
    pub fn requests(&self) -> Vec<RawRequest> {
        self.log.lock().expect("log lock").clone()
    }

    /// Requests whose head arrived and whose end has not been seen yet.
    pub fn in_progress(&self) -> usize {
        self.in_progress.load(Ordering::SeqCst)
    }

    fn record(&self, request: RawRequest) {
        self.log.lock().expect("log lock").push(request);
    }

    async fn serve(self, mut tcp: TcpStream, connection: usize) {
        let mut buf = Vec::new();
        for index in 0.. {
            let head_len = loop {
                if let Some(p) = find(&buf, b"\r\n\r\n") {
                    break Some(p + 4);
                }
                if buf.len() > MAX_HEAD || !read_more(&mut tcp, &mut buf).await {
                    break None;
                }
            };
            let Some(head_len) = head_len else {
                if !buf.is_empty() {
                    let head = std::mem::take(&mut buf);
                    self.record(RawRequest {
                        connection,
                        index,
                        head,
                        body: vec![],
                        complete: false,
                        framing_error: None,
                    });
                }
                return;
            };
            let head: Vec<u8> = buf.drain(..head_len).collect();
            let mut request =
                RawRequest { connection, index, head, body: vec![], complete: false, framing_error: None };
            let framing = match framing_of(&request) {
                Ok(framing) => framing,
                Err(why) => {
                    request.framing_error = Some(why);
                    request.body = std::mem::take(&mut buf);
                    self.record(request);
                    return;
                }
            };
            self.in_progress.fetch_add(1, Ordering::SeqCst);
            let body_len = loop {
                let end = match framing {
                    Framing::None => Ok(Some(0)),
                    Framing::Length(n) => Ok((buf.len() as u64 >= n).then_some(n as usize)),
                    Framing::Chunked => dechunk(&buf).map(|(_, used)| Some(used)).or_else(|e| match e {
                        Dechunk::NeedMore => Ok(None),
                        Dechunk::Bad(why) => Err(why),
                    }),
                };
                match end {
                    Ok(Some(n)) => break Ok(n),
                    Ok(None) if read_more(&mut tcp, &mut buf).await => {}
                    Ok(None) => break Err(None),
                    Err(why) => break Err(Some(why)),
                }
            };
            self.in_progress.fetch_sub(1, Ordering::SeqCst);
            match body_len {
                Ok(n) => {
                    request.body = buf.drain(..n).collect();
                    request.complete = true;
                }
                Err(why) => {
                    request.body = std::mem::take(&mut buf);
                    request.framing_error = why;
                    self.record(request);
                    return;
                }
            }
            let head_only = request.request_line().starts_with("HEAD ");
            self.record(request);
            let answer: &[u8] = if head_only {
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n"
            } else {
                b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
            };
            if tcp.write_all(answer).await.is_err() {
                return;
            }
        }
    }
}

enum Framing {
    None,
    Length(u64),
    Chunked,
}

/// How the target frames the body: exactly one well-formed framing, or an error.
fn framing_of(request: &RawRequest) -> Result<Framing, String> {
    let te = request.header_values("transfer-encoding");
    let cl = request.header_values("content-length");
    match (te.as_slice(), cl.as_slice()) {
        ([], []) => Ok(Framing::None),
        ([], [n]) => n.parse().map(Framing::Length).map_err(|_| format!("bad Content-Length {n:?}")),
        ([t], []) if t == "chunked" => Ok(Framing::Chunked),
        _ => Err(format!("framing is not exactly one of Content-Length or chunked: TE {te:?}, CL {cl:?}")),
    }
}

enum Dechunk {
    NeedMore,
    Bad(String),
}

/// Decodes a complete chunked body at the start of `buf`: the data and the bytes used.
fn dechunk(buf: &[u8]) -> Result<(Vec<u8>, usize), Dechunk> {
    let mut pos = 0;
    let mut data = Vec::new();
    loop {
        let line_end = find(&buf[pos..], b"\r\n").ok_or(Dechunk::NeedMore)? + pos;
        let line = std::str::from_utf8(&buf[pos..line_end]).map_err(|_| Dechunk::Bad("chunk size line".into()))?;
        let size_text = line.split(';').next().unwrap_or_default().trim_end_matches([' ', '\t']);
        let size = usize::from_str_radix(size_text, 16)
            .ok()
            .filter(|_| !size_text.is_empty() && size_text.bytes().all(|b| b.is_ascii_hexdigit()))
            .ok_or_else(|| Dechunk::Bad(format!("chunk size {size_text:?}")))?;
        pos = line_end + 2;
        if size == 0 {
            // Trailer lines up to an empty line.
            loop {
                let end = find(&buf[pos..], b"\r\n").ok_or(Dechunk::NeedMore)? + pos;
                let empty = end == pos;
                pos = end + 2;
                if empty {
                    return Ok((data, pos));
                }
            }
        }
        if buf.len() < pos + size + 2 {
            return Err(Dechunk::NeedMore);
        }
        data.extend_from_slice(&buf[pos..pos + size]);
        if &buf[pos + size..pos + size + 2] != b"\r\n" {
            return Err(Dechunk::Bad("no CRLF after chunk data".into()));
        }
        pos += size + 2;
    }
}

/// Where `needle` first stands in `haystack`.
pub fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Reads more bytes into `buf`; `false` at the end of the connection.
pub async fn read_more(tcp: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 64 * 1024];
    match tcp.read(&mut chunk).await {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            buf.extend_from_slice(&chunk[..n]);
            true
        }
    }
}

/// The raw targets' own runtime, so that a test blocked starting ballast never stalls them.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("the raw target's runtime starts")
    })
}

/// One response as the client read it.
#[derive(Debug, Clone)]
pub struct Answer {
    /// The status code; 0 when the bytes were not an HTTP/1.x response.
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Whether it announces the end of the connection (`Connection: close`).
    pub fn closes(&self) -> bool {
        self.header("connection").is_some_and(|v| v.to_ascii_lowercase().contains("close"))
    }
}

/// What a client saw on one connection.
#[derive(Debug, Clone, Default)]
pub struct Exchange {
    /// Every complete response, in order.
    pub answers: Vec<Answer>,
    /// Whether ballast ended the connection (EOF or reset) before the client stopped looking.
    pub closed: bool,
    /// Bytes after the last complete response.
    pub rest: Vec<u8>,
}

impl Exchange {
    /// The first answer's status, if any.
    pub fn status(&self) -> Option<u16> {
        self.answers.first().map(|a| a.status)
    }
}

/// How long a client waits: for a first answer, for more after an answer that keeps the
/// connection open, and for the end after one that announces `Connection: close`.
#[derive(Debug, Clone, Copy)]
pub struct Waits {
    pub first: Duration,
    pub quiet: Duration,
    pub close: Duration,
}

impl Default for Waits {
    fn default() -> Self {
        Waits { first: Duration::from_secs(5), quiet: Duration::from_millis(300), close: Duration::from_secs(2) }
    }
}

/// A connection to `to` from the loopback address `source`, so that the target can tell whose
/// request it got by the last X-Forwarded-For element.
pub async fn connect_from(source: IpAddr, to: SocketAddr) -> TcpStream {
    let socket = match source {
        IpAddr::V4(_) => TcpSocket::new_v4(),
        IpAddr::V6(_) => TcpSocket::new_v6(),
    }
    .expect("a socket");
    socket.bind(SocketAddr::new(source, 0)).expect("binds a loopback source address");
    tokio::time::timeout(Duration::from_secs(10), socket.connect(to))
        .await
        .expect("connects within 10 s")
        .expect("connects to ballast")
}

/// Sends `wire` on `stream` while reading every answer (see `read_answers`). The write side
/// stays open: a half-close would be a different test.
pub async fn exchange(stream: &mut TcpStream, wire: &[u8], waits: Waits) -> Exchange {
    let (mut rd, mut wr) = stream.split();
    let write = async {
        // Ballast may stop reading (a refusal); the answer still counts.
        let _ = tokio::time::timeout(waits.first + Duration::from_secs(5), wr.write_all(wire)).await;
    };
    // The answer to a HEAD request has no body, whatever its Content-Length says.
    let head = wire.starts_with(b"HEAD ");
    let ((), exchange) = tokio::join!(write, read_answers(&mut rd, waits, head));
    exchange
}

/// Reads answers until the waits run out or the connection ends. `head`: the first answer is
/// to a HEAD request.
pub async fn read_answers<R: AsyncReadExt + Unpin>(rd: &mut R, waits: Waits, head: bool) -> Exchange {
    let mut got = Exchange::default();
    let mut buf = Vec::new();
    let mut until = Instant::now() + waits.first;
    // Bounded: each turn reads at least one byte or ends.
    for _ in 0..100_000 {
        while let Some((answer, used)) = parse_answer(&buf, false, head && got.answers.is_empty()) {
            buf.drain(..used);
            until = Instant::now() + if answer.closes() { waits.close } else { waits.quiet };
            got.answers.push(answer);
        }
        let mut chunk = [0u8; 16 * 1024];
        match tokio::time::timeout_at(until, rd.read(&mut chunk)).await {
            Err(_) => break,
            Ok(Ok(0)) | Ok(Err(_)) => {
                got.closed = true;
                if let Some((answer, used)) = parse_answer(&buf, true, head && got.answers.is_empty()) {
                    buf.drain(..used);
                    got.answers.push(answer);
                }
                break;
            }
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    got.rest = buf;
    got
}

/// Parses one complete response at the start of `buf`: the answer and the bytes it used.
/// `at_end`: the connection has ended, so a body without framing ends here. `head`: it answers
/// a HEAD request, so it has no body.
pub fn parse_answer(buf: &[u8], at_end: bool, head: bool) -> Option<(Answer, usize)> {
    let head_len = find(buf, b"\r\n\r\n")? + 4;
    let text = String::from_utf8_lossy(&buf[..head_len - 4]).into_owned();
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_line
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    let headers: Vec<(String, String)> =
        lines.filter_map(|l| l.split_once(':')).map(|(n, v)| (n.trim().to_string(), v.trim().to_string())).collect();
    let mut answer = Answer { status, headers, body: vec![] };
    let rest = &buf[head_len..];
    if head {
        return Some((answer, head_len));
    }
    if answer.header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        let (data, used) = dechunk(rest).ok()?;
        answer.body = data;
        return Some((answer, head_len + used));
    }
    let length = match answer.header("content-length").map(str::parse::<usize>) {
        Some(Ok(n)) => n,
        Some(Err(_)) => return None,
        None if status == 204 || status == 304 || (100..200).contains(&status) => 0,
        None if at_end => rest.len(),
        None => return None,
    };
    if rest.len() < length {
        return None;
    }
    answer.body = rest[..length].to_vec();
    Some((answer, head_len + length))
}
