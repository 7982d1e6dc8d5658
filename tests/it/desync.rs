//! Request smuggling stops at the balancer: raw bytes sent to real listeners in each
//! `desync_mitigation` mode, judged by what the client got back and by what the target received,
//! byte for byte. The corpus is AWS's http-desync-guardian's (`../shared/desync-guardian`);
//! hand-written cases and hand-built HTTP/2 frames cover what it leaves out.

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use crate::common::raw_target::{connect_from, exchange, Exchange, RawRequest, RawTarget, Waits};
use crate::common::{http_client, metric_sum, wait_until, Ballast};

const MODES: [&str; 3] = ["monitor", "defensive", "strictest"];
const MONITOR: usize = 0;
const DEFENSIVE: usize = 1;
const STRICTEST: usize = 2;

/// One ballast with a listener per mode, named after it, each in front of its own raw target.
struct Modes {
    ballast: Ballast,
    targets: [RawTarget; 3],
}

impl Modes {
    fn start() -> Modes {
        let targets = [RawTarget::start(), RawTarget::start(), RawTarget::start()];
        let mut config = String::from("[admin]\nbind = \"127.0.0.1:0\"\n");
        for (mode, target) in MODES.iter().zip(&targets) {
            config += &format!(
                r#"
[[listeners]]
name = "{mode}"
protocol = "http"
bind = "127.0.0.1:0"
desync_mitigation = "{mode}"
default_action = {{ type = "forward", target_group = "{mode}" }}

  [listeners.limits]
  header_timeout = "4s"
  body_timeout = "4s"

[[target_groups]]
name = "{mode}"
health_check = {{ protocol = "tcp" }}
targets = [{}]
"#,
                target.target()
            );
        }
        Modes { ballast: Ballast::start(&config), targets }
    }

    /// Sends each wire on its own connection to the listener of mode `m`, concurrently and each
    /// from its own loopback address, and gathers what every client saw and what reached the
    /// target from it. Also returns the target's requests that no case can account for.
    async fn run(&self, m: usize, wires: &[Vec<u8>]) -> (Vec<Observed>, Vec<RawRequest>) {
        let addr = self.ballast.addr(MODES[m]);
        let mut exchanges: Vec<(usize, Exchange)> = futures_util::stream::iter(wires.iter().enumerate())
            .map(|(i, wire)| async move {
                let mut tcp = connect_from(source(m, i), addr).await;
                (i, exchange(&mut tcp, wire, Waits::default()).await)
            })
            .buffer_unordered(24)
            .collect()
            .await;
        exchanges.sort_by_key(|(i, _)| *i);
        let target = &self.targets[m];
        // A request cut off inside its body is recorded when its connection ends.
        wait_until(Duration::from_secs(5), || target.in_progress() == 0).await;
        let mut observed: Vec<Observed> =
            exchanges.into_iter().map(|(_, exchange)| Observed { exchange, reached: vec![] }).collect();
        let mut stray = Vec::new();
        for request in target.requests() {
            match request.client_ip().and_then(|ip| case_index(m, ip)).filter(|&i| i < observed.len()) {
                Some(i) => observed[i].reached.push(request),
                None => stray.push(request),
            }
        }
        (observed, stray)
    }
}

/// The loopback address case `i` of mode `m` connects from.
fn source(m: usize, i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 10 + m as u8, (i / 250) as u8, (i % 250 + 1) as u8))
}

fn case_index(m: usize, ip: IpAddr) -> Option<usize> {
    let IpAddr::V4(v4) = ip else { return None };
    let [a, b, c, d] = v4.octets();
    (a == 127 && usize::from(b) == 10 + m && d >= 1).then(|| usize::from(c) * 250 + usize::from(d) - 1)
}

/// What one case did in one mode.
struct Observed {
    exchange: Exchange,
    /// Every request the target received from this case's client, complete or cut off.
    reached: Vec<RawRequest>,
}

impl Observed {
    fn complete(&self) -> usize {
        self.reached.iter().filter(|r| r.complete).count()
    }

    /// Forwarded: the one request reached the target and its answer came back.
    fn forwarded(&self) -> bool {
        let a = &self.exchange.answers;
        // The target answers `ok`, or nothing to a HEAD request.
        self.complete() == 1 && a.len() == 1 && a[0].status == 200 && (a[0].body == b"ok" || a[0].body.is_empty())
    }

    /// Refused by ballast: one answer of its own, nothing reached the target, connection closed.
    fn refused(&self) -> Option<u16> {
        let a = &self.exchange.answers;
        (self.reached.is_empty() && a.len() == 1 && a[0].status >= 400 && self.exchange.closed).then(|| a[0].status)
    }

    fn describe(&self) -> String {
        let statuses: Vec<String> = self.exchange.answers.iter().map(|a| a.status.to_string()).collect();
        let cut = self.reached.len() - self.complete();
        let lines: Vec<String> = self.reached.iter().map(|r| format!("{:?}", r.request_line())).collect();
        format!(
            "answers [{}], {} complete{} at the target {}, {}",
            statuses.join(","),
            self.complete(),
            if cut > 0 { format!(" + {cut} cut off") } else { String::new() },
            lines.join(" "),
            if self.exchange.closed { "closed" } else { "open" }
        )
    }
}

/// What must hold for every case in every mode; returns what broke.
fn invariants(obs: &Observed, one_answer: bool) -> Vec<String> {
    let mut broken = Vec::new();
    if one_answer && obs.exchange.answers.len() != 1 {
        broken.push(format!("(a) the client got {} answers, not one", obs.exchange.answers.len()));
    }
    if let Some(a) = obs.exchange.answers.iter().find(|a| a.status == 0) {
        broken.push(format!("(a) an answer that is not HTTP/1.x: {:?}", a.headers));
    }
    for r in &obs.reached {
        let cl = r.header_values("content-length");
        let te = r.header_values("transfer-encoding");
        if cl.len() + te.len() > 1 {
            broken.push(format!("(b) more than one framing reached the target: CL {cl:?} TE {te:?}"));
        }
        if te.iter().any(|v| v != "chunked") {
            broken.push(format!("(b) Transfer-Encoding {te:?} reached the target"));
        }
        if let Some(why) = &r.framing_error {
            broken.push(format!("(b) the target could not frame what it got: {why}"));
        }
    }
    if obs.reached.len() > 1 {
        broken.push(format!("(c) {} requests reached the target", obs.reached.len()));
    }
    broken
}

// ---------------------------------------------------------------------------------------------
// The AWS corpus over the wire.

struct Case {
    id: String,
    tier: String,
    /// The library's verdict on exactly these bytes (differs from `tier` for a few cases).
    raw_tier: String,
    wire: Vec<u8>,
    /// The body as the harness framed it, without chunk framing.
    body: Vec<u8>,
}

/// The corpus, or `None` (with a note) where `../shared` is not beside the checkout.
fn corpus() -> Option<Vec<Case>> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/desync-guardian/cases.json");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) => {
            println!("skipped: the desync corpus {} is not readable ({e})", path.display());
            return None;
        }
    };
    let json: serde_json::Value = serde_json::from_str(&text).expect("cases.json is JSON");
    let cases = json["cases"].as_array().expect("a `cases` list");
    Some(
        cases
            .iter()
            .map(|c| {
                let text = |key: &str| c[key].as_str().unwrap_or_else(|| panic!("case field {key}")).to_string();
                // `raw` is text whose UTF-8 bytes are the request head (README: raw and raw_b64 agree).
                let raw = text("raw").into_bytes();
                let at = c["host_offset"].as_u64().expect("host_offset") as usize;
                let body = match c["body"]["framing"].as_str() {
                    Some("length") => vec![b'x'; c["body"]["length"].as_u64().expect("a length") as usize],
                    _ => vec![],
                };
                let mut wire = raw[..at].to_vec();
                wire.extend_from_slice(b"Host: desync.test\r\n");
                wire.extend_from_slice(&raw[at..]);
                match c["body"]["framing"].as_str() {
                    Some("chunked") => wire.extend_from_slice(b"0\r\n\r\n"),
                    Some("length") => wire.extend_from_slice(&body),
                    _ => {}
                }
                Case {
                    id: text("id"),
                    tier: text("tier"),
                    raw_tier: c["library_raw_verdict"][0].as_str().unwrap_or_default().to_string(),
                    wire,
                    body,
                }
            })
            .collect(),
    )
}

/// Corpus cases tiered compliant that ballast refuses, in the modes named, as RFC 9110/9112 let
/// it (DESIGN.md, "Guard"): an HTTP/1.1 server need not accept them.
const STRICTER: &[(&str, &[usize], &str)] = &[
    ("rfc-compliant-08", &[DEFENSIVE, STRICTEST], "gzip, deflate, identity, compress before chunked: 501"),
    ("rfc-compliant-09", &[DEFENSIVE, STRICTEST], "a coding list with gzip before chunked: 501"),
    ("rfc-compliant-10", &[DEFENSIVE, STRICTEST], "gzip and deflate codings before chunked: 501"),
    ("more-compliant-tests-05", &[DEFENSIVE, STRICTEST], "`gzip, chunked`: 501"),
    ("more-compliant-tests-07", &[DEFENSIVE, STRICTEST], "`deflate, identity, chunked`: 501"),
    ("more-compliant-tests-08", &[DEFENSIVE, STRICTEST], "five Transfer-Encoding lines, gzip first: 501"),
    (
        "rfc-compliant-13",
        &[DEFENSIVE, STRICTEST],
        "`GET  HTTP/1.1`: an empty request target, a malformed request line: 400",
    ),
];

fn stricter(id: &str, m: usize) -> Option<&'static str> {
    STRICTER.iter().find(|(i, modes, _)| *i == id && modes.contains(&m)).map(|(_, _, why)| *why)
}

/// What breaks the rules of mode `m` for `case`.
fn corpus_checks(m: usize, case: &Case, obs: &Observed) -> Vec<String> {
    let mut broken = invariants(obs, true);
    let severe = case.tier == "Severe" || case.raw_tier == "Severe";
    let answer = obs.exchange.answers.first();
    if m != MONITOR && severe && !obs.reached.is_empty() {
        broken.push("(d) a severe request reached the target".into());
    }
    if m == STRICTEST && case.tier != "Compliant" && !obs.reached.is_empty() {
        broken.push(format!("strictest let a {} request reach the target", case.tier));
    }
    if case.tier == "Compliant" {
        match (obs.forwarded(), stricter(&case.id, m)) {
            (false, None) => broken.push("(e) a compliant request was not forwarded".into()),
            (true, Some(why)) => broken.push(format!("listed as refused ({why}) but forwarded: update STRICTER")),
            (false, Some(_)) if !matches!(obs.refused(), Some(400 | 501)) => {
                broken.push("a listed stricter refusal is not a 400 or 501 refusal".into())
            }
            _ => {}
        }
    }
    if obs.forwarded() {
        // Only where the harness's body follows a real framing header: for look-alike names
        // (`Content_Length`) it is a guess, and what must hold is (b) and (c).
        let framed = case.tier == "Compliant" || case.tier == "Acceptable";
        if framed && obs.reached[0].decoded_body() != case.body {
            broken.push(format!("the body changed on the way: {} bytes arrived", obs.reached[0].decoded_body().len()));
        }
        let keeps_open = case.tier == "Compliant" || (case.tier == "Acceptable" && m == DEFENSIVE);
        if keeps_open && obs.exchange.closed {
            broken.push(format!("a forwarded {} request closed the connection", case.tier));
        }
        if m == DEFENSIVE && case.tier == "Ambiguous" && !(obs.exchange.closed && answer.is_some_and(|a| a.closes())) {
            broken.push("defensive forwarded an ambiguous request and kept the connection".into());
        }
    }
    if let Some(a) = answer.filter(|a| a.status >= 400 && obs.reached.is_empty()) {
        if !(obs.exchange.closed && a.closes()) {
            broken.push(format!("refused with {} but the connection stays open", a.status));
        }
        if m == MONITOR && String::from_utf8_lossy(&a.body).contains("the request was refused") {
            broken.push("monitor refused a request".into());
        }
    }
    broken
}

#[tokio::test]
async fn the_aws_corpus_over_the_wire_in_every_mode() {
    let Some(cases) = corpus() else { return };
    let modes = Modes::start();
    let wires: Vec<Vec<u8>> = cases.iter().map(|c| c.wire.clone()).collect();
    let (monitor, defensive, strictest) =
        tokio::join!(modes.run(MONITOR, &wires), modes.run(DEFENSIVE, &wires), modes.run(STRICTEST, &wires));
    let mut failures = Vec::new();
    for (m, (observed, stray)) in [monitor, defensive, strictest].into_iter().enumerate() {
        let mut table: std::collections::BTreeMap<(String, String), usize> = Default::default();
        for (case, obs) in cases.iter().zip(&observed) {
            let outcome = match (obs.forwarded(), obs.refused(), obs.exchange.closed) {
                (true, _, false) => "forwarded".to_string(),
                (true, _, true) => "forwarded+closed".to_string(),
                (false, Some(status), _) => format!("refused {status}"),
                _ => "other".to_string(),
            };
            *table.entry((case.tier.clone(), outcome)).or_default() += 1;
            for why in corpus_checks(m, case, obs) {
                failures.push(format!("{} {} ({}): {why} — {}", MODES[m], case.id, case.tier, obs.describe()));
            }
        }
        for r in stray {
            failures.push(format!(
                "{} (c) a request no client sent reached the target: {:?}",
                MODES[m],
                r.request_line()
            ));
        }
        println!("\n{}: tier × outcome", MODES[m]);
        for ((tier, outcome), n) in table {
            println!("  {tier:<11} {outcome:<18} {n:>4}");
        }
    }
    assert!(failures.is_empty(), "{} broken:\n{}", failures.len(), failures.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// Hand-written cases.

/// An outcome a mode may give.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Want {
    /// Forwarded, answered by the target, connection kept.
    Pass,
    /// Forwarded, answered by the target with `Connection: close`, connection closed.
    PassClose,
    /// Answered with this status by ballast with `Connection: close`; nothing reached the target.
    Refuse(u16),
    /// The connection is cut: no complete request reached the target, no 2xx came back.
    Cut,
}
use Want::{Cut, Pass, PassClose, Refuse};
const R400: Want = Refuse(400);
const R501: Want = Refuse(501);

fn fits(want: Want, obs: &Observed) -> bool {
    let closes = obs.exchange.answers.first().is_some_and(|a| a.closes());
    match want {
        Pass => obs.forwarded() && !obs.exchange.closed,
        PassClose => obs.forwarded() && obs.exchange.closed && closes,
        Refuse(status) => obs.refused() == Some(status) && closes,
        Cut => {
            obs.complete() == 0
                && obs.exchange.closed
                && obs.exchange.answers.len() <= 1
                && obs.exchange.answers.iter().all(|a| a.status >= 400)
        }
    }
}

struct Hand {
    name: &'static str,
    wire: &'static [u8],
    defensive: &'static [Want],
    strictest: &'static [Want],
}

/// Appended to the bad chunked bodies: a second request that must never reach a target.
const SMUGGLED: &[u8] = b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n";

macro_rules! case {
    ($name:literal, $wire:expr, $defensive:expr, $strictest:expr) => {
        Hand { name: $name, wire: $wire, defensive: &$defensive, strictest: &$strictest }
    };
}

/// The hand-written table. A chunked case ending in `0\r\n\r\n` is followed on the wire by
/// `SMUGGLED` when its name starts with `chunk_`.
const HAND: &[Hand] = &[
    // Controls: what must pass.
    case!("get", b"GET /ok HTTP/1.1\r\nHost: a\r\n\r\n", [Pass], [Pass]),
    case!("post_length", b"POST /ok HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello", [Pass], [Pass]),
    case!(
        "post_chunked",
        b"POST /ok HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        [Pass],
        [Pass]
    ),
    case!("absolute_form", b"GET http://a/ok HTTP/1.1\r\nHost: a\r\n\r\n", [Pass], [Pass]),
    case!("options_star", b"OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", [Pass], [Pass]),
    case!(
        "te_tab_before_value",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\tchunked\r\n\r\n0\r\n\r\n",
        [Pass],
        [Pass]
    ),
    case!(
        "te_uppercase_value",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: CHUNKED\r\n\r\n0\r\n\r\n",
        [Pass],
        [Pass]
    ),
    // Both framings, and Transfer-Encoding dressed up.
    case!(
        "cl_te",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        [PassClose],
        [R400]
    ),
    case!(
        "te_cl",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
        [PassClose],
        [R400]
    ),
    case!(
        "te_space_before_colon",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
        [R400],
        [R400]
    ),
    case!(
        "cl_and_te_space_before_colon",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nTransfer-Encoding : chunked\r\n\r\n0\r\n\r\n",
        [R400],
        [R400]
    ),
    case!(
        "te_vertical_tab",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\x0bchunked\r\n\r\n0\r\n\r\n",
        [R400, R501],
        [R400, R501]
    ),
    case!(
        "te_xchunked",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
        [R400, R501],
        [R400, R501]
    ),
    case!(
        "te_chunked_identity",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        [R400, R501],
        [R400, R501]
    ),
    case!(
        "te_identity",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: identity\r\nContent-Length: 5\r\n\r\nhello",
        [R400, R501],
        [R400, R501]
    ),
    case!(
        "te_duplicate_headers",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        [R400],
        [R400]
    ),
    case!(
        "te_list_gzip_chunked",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
        [R501],
        [R501]
    ),
    case!(
        "te_obs_fold",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n",
        [PassClose, R400],
        [R400]
    ),
    case!(
        "te_in_http10",
        b"POST / HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        [PassClose, R400],
        [R400]
    ),
    // Content-Length twice or malformed.
    case!(
        "cl_duplicate_identical",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
        [PassClose, R400],
        [R400]
    ),
    case!(
        "cl_duplicate_differing",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        [R400],
        [R400]
    ),
    case!("cl_plus", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello", [R400], [R400]),
    case!("cl_two_numbers", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5 5\r\n\r\nhello", [R400], [R400]),
    case!("cl_list", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\nhello", [R400], [R400]),
    case!("cl_hex", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\nhello", [R400], [R400]),
    case!("cl_negative", b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", [R400], [R400]),
    case!(
        "cl_huge",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n\r\nhello",
        [R400, Refuse(413)],
        [R400, Refuse(413)]
    ),
    case!("get_with_body", b"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello", [PassClose], [R400]),
    // Line ends and bytes that do not belong in a head.
    case!("bare_lf_head", b"GET / HTTP/1.1\nHost: a\n\n", [R400, Pass, PassClose], [R400]),
    case!("bare_lf_inside", b"GET / HTTP/1.1\r\nHost: a\nX-A: b\r\n\r\n", [R400, PassClose], [R400]),
    case!("bare_cr_inside", b"GET / HTTP/1.1\r\nHost: a\rX-A: b\r\n\r\n", [R400], [R400]),
    case!("nul_in_value", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: a\x00b\r\n\r\n", [R400], [R400]),
    case!("cr_in_value", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: a\rb\r\n\r\n", [R400], [R400]),
    case!(
        "cr_in_value_hiding_te",
        b"POST / HTTP/1.1\r\nHost: a\r\nX-A: a\rTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\nhello",
        [R400],
        [R400]
    ),
    case!("obs_fold_before_first_header", b"GET / HTTP/1.1\r\n X-A: b\r\nHost: a\r\n\r\n", [R400, PassClose], [R400]),
    case!("obs_fold_in_value", b"GET / HTTP/1.1\r\nHost: a\r\nX-A: b\r\n c\r\n\r\n", [R400, PassClose], [R400]),
    // Field names.
    case!("name_with_space", b"GET / HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n", [R400], [R400]),
    case!("name_with_at", b"GET / HTTP/1.1\r\nHost: a\r\nBad@Name: x\r\n\r\n", [R400], [R400]),
    case!("name_non_ascii", "GET / HTTP/1.1\r\nHost: a\r\nÜber: x\r\n\r\n".as_bytes(), [R400], [R400]),
    case!("name_empty", b"GET / HTTP/1.1\r\nHost: a\r\n: x\r\n\r\n", [R400], [R400]),
    case!("line_without_colon", b"GET / HTTP/1.1\r\nHost: a\r\nNoColon\r\n\r\n", [R400], [R400]),
    // Host.
    case!("missing_host", b"GET / HTTP/1.1\r\nX-A: b\r\n\r\n", [R400], [R400]),
    case!("duplicate_host_differing", b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", [R400], [R400]),
    case!("duplicate_host_identical", b"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", [R400], [R400]),
    // Chunked bodies that go wrong behind a compliant head; SMUGGLED follows each.
    case!(
        "chunk_size_not_hex",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n",
        [Cut],
        [Cut]
    ),
    case!(
        "chunk_size_overflow",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1000000000000000000005\r\nhello\r\n0\r\n\r\n",
        [Cut],
        [Cut]
    ),
    case!(
        "chunk_size_negative",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n-5\r\nhello\r\n0\r\n\r\n",
        [Cut],
        [Cut]
    ),
    case!(
        "chunk_size_0x",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n",
        [Cut],
        [Cut]
    ),
    case!(
        "chunk_lines_end_in_lf",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\n0\n\n",
        [Cut],
        [Cut]
    ),
    case!(
        "chunk_data_without_crlf",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
        [Cut],
        [Cut]
    ),
    case!(
        "chunk_data_longer_than_size",
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n",
        [Cut],
        [Cut]
    ),
    // Request lines.
    case!("method_with_space", b"G ET / HTTP/1.1\r\nHost: a\r\n\r\n", [R400], [R400]),
    case!("method_empty", b" / HTTP/1.1\r\nHost: a\r\n\r\n", [R400], [R400]),
    case!("method_with_ctl", b"GE\x01T / HTTP/1.1\r\nHost: a\r\n\r\n", [R400], [R400]),
    case!("version_1_2", b"GET / HTTP/1.2\r\nHost: a\r\n\r\n", [Pass, R400, Refuse(505)], [R400, Refuse(505)]),
    case!("version_2_0_on_http1", b"GET / HTTP/2.0\r\nHost: a\r\n\r\n", [R400, Refuse(505)], [R400, Refuse(505)]),
    case!("version_1_1x", b"GET / HTTP/1.1x\r\nHost: a\r\n\r\n", [R400], [R400]),
    case!("version_lowercase", b"GET / http/1.1\r\nHost: a\r\n\r\n", [R400], [R400]),
    case!("target_star_with_get", b"GET * HTTP/1.1\r\nHost: a\r\n\r\n", [R400], [R400]),
    case!("target_with_spaces", b"GET /a b HTTP/1.1\r\nHost: a\r\n\r\n", [R400], [R400]),
    case!("target_with_ctl", b"GET /a\x01b HTTP/1.1\r\nHost: a\r\n\r\n", [R400], [R400]),
    case!("target_with_del", b"GET /a\x7fb HTTP/1.1\r\nHost: a\r\n\r\n", [R400], [R400]),
    case!("target_relative", b"GET a/b HTTP/1.1\r\nHost: a\r\n\r\n", [R400], [R400]),
    case!("absolute_form_with_userinfo", b"GET http://user:pw@a/ HTTP/1.1\r\nHost: a\r\n\r\n", [R400], [R400]),
];

fn hand_wire(case: &Hand) -> Vec<u8> {
    let mut wire = case.wire.to_vec();
    if case.name.starts_with("chunk_") {
        wire.extend_from_slice(SMUGGLED);
    }
    wire
}

#[tokio::test]
async fn hand_written_cases_in_defensive_and_strictest() {
    assert!(HAND.len() >= 40, "at least 40 hand-written cases");
    let modes = Modes::start();
    let wires: Vec<Vec<u8>> = HAND.iter().map(hand_wire).collect();
    let (monitor, defensive, strictest) =
        tokio::join!(modes.run(MONITOR, &wires), modes.run(DEFENSIVE, &wires), modes.run(STRICTEST, &wires));
    let mut failures = Vec::new();
    let mut check = |m: usize, observed: &[Observed], stray: &[RawRequest], want: fn(&Hand) -> &[Want]| {
        for (case, obs) in HAND.iter().zip(observed) {
            let cut = want(case).contains(&Cut);
            for why in invariants(obs, !cut) {
                failures.push(format!("{} {}: {why} — {}", MODES[m], case.name, obs.describe()));
            }
            if obs.reached.iter().any(|r| r.target() == "/smuggled") {
                failures.push(format!("{} {}: the smuggled request reached the target", MODES[m], case.name));
            }
            if m != MONITOR && !want(case).iter().any(|&w| fits(w, obs)) {
                failures.push(format!("{} {}: wanted {:?}, got {}", MODES[m], case.name, want(case), obs.describe()));
            }
        }
        for r in stray {
            failures.push(format!("{}: a request no client sent reached the target: {:?}", MODES[m], r.request_line()));
        }
    };
    check(MONITOR, &monitor.0, &monitor.1, |c| c.defensive);
    check(DEFENSIVE, &defensive.0, &defensive.1, |c| c.defensive);
    check(STRICTEST, &strictest.0, &strictest.1, |c| c.strictest);
    println!("\n{:<32} {:<60} strictest", "case", "defensive");
    for (i, case) in HAND.iter().enumerate() {
        println!("{:<32} {:<60} {}", case.name, defensive.0[i].describe(), strictest.0[i].describe());
    }
    assert!(failures.is_empty(), "{} broken:\n{}", failures.len(), failures.join("\n"));
}

#[tokio::test]
async fn the_classic_cl_te_smuggle_never_reaches_the_target() {
    let modes = Modes::start();
    let attack = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /admin HTTP/1.1\r\nHost: a\r\n\r\n".to_vec();
    for m in [MONITOR, DEFENSIVE, STRICTEST] {
        let (observed, stray) = modes.run(m, std::slice::from_ref(&attack)).await;
        let obs = &observed[0];
        println!("{}: {}", MODES[m], obs.describe());
        let all: Vec<&RawRequest> = obs.reached.iter().chain(&stray).collect();
        assert!(
            all.iter().all(|r| !r.target().contains("admin")),
            "{}: /admin reached the target: {:?}",
            MODES[m],
            all.iter().map(|r| r.request_line()).collect::<Vec<_>>()
        );
        assert!(stray.is_empty(), "{}: requests no client sent: {stray:?}", MODES[m]);
        let broken = invariants(obs, true);
        assert!(broken.is_empty(), "{}: {broken:?}", MODES[m]);
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP/2 → HTTP/1.1: hand-built h2c frames on an http listener.

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// An HPACK integer with a 7-bit prefix (a string length, Huffman bit clear).
fn hpack_length(out: &mut Vec<u8>, mut n: usize) {
    if n < 127 {
        out.push(n as u8);
        return;
    }
    out.push(127);
    n -= 127;
    while n >= 128 {
        out.push((n % 128) as u8 | 0x80);
        n /= 128;
    }
    out.push(n as u8);
}

/// A header block of "literal header field without indexing — new name" entries.
fn header_block(fields: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.push(0x00);
        hpack_length(&mut out, name.len());
        out.extend_from_slice(name);
        hpack_length(&mut out, value.len());
        out.extend_from_slice(value);
    }
    out
}

struct H2Case {
    name: &'static str,
    fields: &'static [(&'static [u8], &'static [u8])],
    /// Body sent in one DATA frame that ends the stream; `None`: HEADERS ends it.
    data: Option<&'static [u8]>,
}

const GET: (&[u8], &[u8]) = (b":method", b"GET");
const POST: (&[u8], &[u8]) = (b":method", b"POST");
const SCHEME: (&[u8], &[u8]) = (b":scheme", b"http");
const AUTHORITY: (&[u8], &[u8]) = (b":authority", b"a");

const H2_CASES: &[H2Case] = &[
    H2Case {
        name: "transfer_encoding_chunked",
        fields: &[POST, SCHEME, (b":path", b"/h2/te"), AUTHORITY, (b"transfer-encoding", b"chunked")],
        data: Some(b"0\r\n\r\n"),
    },
    H2Case {
        name: "content_length_above_data",
        fields: &[POST, SCHEME, (b":path", b"/h2/cl-long"), AUTHORITY, (b"content-length", b"10")],
        data: Some(b"abc"),
    },
    H2Case {
        name: "content_length_below_data",
        fields: &[POST, SCHEME, (b":path", b"/h2/cl-short"), AUTHORITY, (b"content-length", b"3")],
        data: Some(b"abcGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"),
    },
    H2Case {
        name: "cr_in_value",
        fields: &[GET, SCHEME, (b":path", b"/h2/cr"), AUTHORITY, (b"x-a", b"a\rb")],
        data: None,
    },
    H2Case {
        name: "lf_in_value",
        fields: &[GET, SCHEME, (b":path", b"/h2/lf"), AUTHORITY, (b"x-a", b"a\nb")],
        data: None,
    },
    H2Case {
        name: "crlf_header_injection",
        fields: &[GET, SCHEME, (b":path", b"/h2/crlf"), AUTHORITY, (b"x-a", b"a\r\nTransfer-Encoding: chunked")],
        data: None,
    },
    H2Case {
        name: "uppercase_name",
        fields: &[GET, SCHEME, (b":path", b"/h2/upper"), AUTHORITY, (b"X-Upper", b"v")],
        data: None,
    },
    H2Case {
        name: "pseudo_after_regular",
        fields: &[GET, SCHEME, AUTHORITY, (b"x-a", b"v"), (b":path", b"/h2/late-pseudo")],
        data: None,
    },
    H2Case {
        name: "duplicate_path",
        fields: &[GET, SCHEME, (b":path", b"/h2/one"), (b":path", b"/h2/two"), AUTHORITY],
        data: None,
    },
    H2Case { name: "missing_method", fields: &[SCHEME, (b":path", b"/h2/no-method"), AUTHORITY], data: None },
];

/// A well-formed request built the same way: proves the frames themselves are right.
const H2_CONTROL: H2Case =
    H2Case { name: "control", fields: &[GET, SCHEME, (b":path", b"/h2/ok"), AUTHORITY], data: None };

/// Opens h2c with prior knowledge, sends `case` on stream 1, and reports how ballast ended it:
/// `HEADERS <status>`, `RST_STREAM <code>`, `GOAWAY <code>`, `closed` or `no answer`.
async fn h2_exchange(addr: std::net::SocketAddr, source: IpAddr, case: &H2Case) -> String {
    let mut tcp = connect_from(source, addr).await;
    let mut wire = PREFACE.to_vec();
    wire.extend(frame(SETTINGS, 0, 0, &[]));
    let end_on_headers = if case.data.is_none() { END_STREAM } else { 0 };
    wire.extend(frame(HEADERS, END_HEADERS | end_on_headers, 1, &header_block(case.fields)));
    if let Some(data) = case.data {
        wire.extend(frame(DATA, END_STREAM, 1, data));
    }
    if tcp.write_all(&wire).await.is_err() {
        return "closed".into();
    }
    let until = Instant::now() + Duration::from_secs(5);
    let mut buf = Vec::new();
    for _ in 0..10_000 {
        while buf.len() >= 9 {
            let len = (usize::from(buf[0]) << 16) | (usize::from(buf[1]) << 8) | usize::from(buf[2]);
            if buf.len() < 9 + len {
                break;
            }
            let (kind, flags) = (buf[3], buf[4]);
            let stream = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & 0x7fff_ffff;
            let payload: Vec<u8> = buf.drain(..9 + len).skip(9).collect();
            let code = |at: usize| payload.get(at..at + 4).map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
            match kind {
                SETTINGS if flags & 0x1 == 0 => {
                    let _ = tcp.write_all(&frame(SETTINGS, 0x1, 0, &[])).await;
                }
                RST_STREAM if stream == 1 => return format!("RST_STREAM {}", error_name(code(0))),
                GOAWAY => return format!("GOAWAY {}", error_name(code(4))),
                HEADERS if stream == 1 => return format!("HEADERS {}", status_of(&payload)),
                _ => {}
            }
        }
        let mut chunk = [0u8; 16 * 1024];
        match tokio::time::timeout_at(until, tcp.read(&mut chunk)).await {
            Err(_) => return "no answer".into(),
            Ok(Ok(0)) | Ok(Err(_)) => return "closed".into(),
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    "no answer".into()
}

fn error_name(code: u32) -> String {
    match code {
        0 => "NO_ERROR".into(),
        1 => "PROTOCOL_ERROR".into(),
        2 => "INTERNAL_ERROR".into(),
        7 => "REFUSED_STREAM".into(),
        8 => "CANCEL".into(),
        9 => "COMPRESSION_ERROR".into(),
        other => format!("error {other}"),
    }
}

/// The status of a response header block when it is indexed from the static table.
fn status_of(block: &[u8]) -> String {
    match block.first().map(|b| b & 0x7f) {
        Some(8) => "200".into(),
        Some(9) => "204".into(),
        Some(12) => "400".into(),
        Some(13) => "404".into(),
        Some(14) => "500".into(),
        _ => "(literal status)".into(),
    }
}

#[tokio::test]
async fn malformed_http2_never_reaches_an_http1_target() {
    let modes = Modes::start();
    let addr = modes.ballast.addr("defensive");
    let target = &modes.targets[DEFENSIVE];
    let h2_source = |i: usize| IpAddr::V4(Ipv4Addr::new(127, 30, 0, i as u8 + 1));
    let control = h2_exchange(addr, h2_source(0), &H2_CONTROL).await;
    assert_eq!(control, "HEADERS 200", "the hand-built frames are understood");
    let mut failures = Vec::new();
    for (i, case) in H2_CASES.iter().enumerate() {
        let source = h2_source(i + 1);
        let outcome = h2_exchange(addr, source, case).await;
        wait_until(Duration::from_secs(5), || target.in_progress() == 0).await;
        let reached: Vec<RawRequest> =
            target.requests().into_iter().filter(|r| r.client_ip() == Some(source)).collect();
        println!("h2 {:<28} {outcome:<28} {} at the target", case.name, reached.len());
        for r in &reached {
            let consistent = r.complete
                && Some(r.decoded_body().as_slice()) == case.data
                && r.header_values("content-length").iter().all(|n| n.parse() == Ok(r.decoded_body().len()));
            // A request cut off inside its body reached nothing: its connection ended there.
            if case.data.is_none() || (r.complete && !consistent) {
                failures.push(format!("{}: reached the target as {:?} ({outcome})", case.name, r.request_line()));
            }
        }
        if outcome == "HEADERS 200" {
            failures.push(format!("{}: answered 200", case.name));
        }
    }
    let stray: Vec<String> = target
        .requests()
        .into_iter()
        .filter(|r| r.client_ip().is_none() || r.target().contains("smuggled"))
        .map(|r| r.request_line())
        .collect();
    assert!(stray.is_empty(), "requests no client sent reached the target: {stray:?}");
    // Ballast is still up: a new h2c connection and a plain HTTP/1.1 request both work.
    assert_eq!(h2_exchange(addr, h2_source(200), &H2_CONTROL).await, "HEADERS 200");
    let resp = http_client().get(format!("http://{addr}/after")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// Metrics.

#[tokio::test]
async fn desync_classes_and_refusals_are_counted() {
    let modes = Modes::start();
    let severe = &[r#"listener="defensive""#, r#"class="severe""#][..];
    let compliant = &[r#"listener="defensive""#, r#"class="compliant""#][..];
    let rejected = &[r#"listener="defensive""#][..];
    let before = (
        metric_sum(&modes.ballast, "ballast_desync_requests_total", severe).await,
        metric_sum(&modes.ballast, "ballast_desync_requests_total", compliant).await,
        metric_sum(&modes.ballast, "ballast_rejected_requests_total", rejected).await,
    );
    let wires = vec![
        b"GET /ok HTTP/1.1\r\nHost: a\r\n\r\n".to_vec(),
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!".to_vec(),
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n".to_vec(),
    ];
    let (observed, _) = modes.run(DEFENSIVE, &wires).await;
    for obs in &observed {
        println!("{}", obs.describe());
    }
    let after = (
        metric_sum(&modes.ballast, "ballast_desync_requests_total", severe).await,
        metric_sum(&modes.ballast, "ballast_desync_requests_total", compliant).await,
        metric_sum(&modes.ballast, "ballast_rejected_requests_total", rejected).await,
    );
    assert!(after.0 >= before.0 + 2.0, "severe requests counted: {before:?} → {after:?}");
    assert!(after.1 > before.1, "compliant requests counted: {before:?} → {after:?}");
    assert!(after.2 >= before.2 + 2.0, "refusals counted: {before:?} → {after:?}");
}
