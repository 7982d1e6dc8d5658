//! Hand-written heads, one or more per rule, the normalized bytes, and random input.

use super::{head_end, inspect, Class, Framing, Verdict};

const H: &str = "Host: example.com\r\n";

/// A head that lives as long as the test: a verdict borrows the head it is about.
fn leaked(text: String) -> &'static [u8] {
    Box::leak(text.into_bytes().into_boxed_slice())
}

fn post(fields: &str) -> Verdict<'static> {
    inspect(leaked(format!("POST /upload HTTP/1.1\r\n{H}{fields}\r\n")))
}

#[track_caller]
fn expect(v: &Verdict, class: Class, reason: &str, refuse: Option<u16>) {
    assert_eq!((v.class, v.reason, v.refuse), (class, reason, refuse), "{v:?}");
    assert_forwardable(v);
}

/// What goes on is one request: CRLF lines only, no NUL, a request line of three words, one
/// framing field matching `framing`; and normalizing it again changes nothing.
#[track_caller]
pub(super) fn assert_forwardable(v: &Verdict) {
    let text = &v.head;
    assert!(text.ends_with(b"\r\n\r\n"), "{v:?}");
    assert!(!text.contains(&0), "{v:?}");
    let (mut lines, mut rest) = (Vec::new(), &text[..text.len() - 2]);
    while let Some(end) = rest.windows(2).position(|w| w == b"\r\n") {
        lines.push(&rest[..end]);
        rest = &rest[end + 2..];
    }
    assert!(rest.is_empty() && lines.iter().all(|l| !l.contains(&b'\r') && !l.contains(&b'\n')), "{v:?}");
    let framing: Vec<&[u8]> = lines
        .iter()
        .copied()
        .filter(|l| {
            let name = l.split(|&b| b == b':').next().unwrap_or_default();
            name.eq_ignore_ascii_case(b"content-length") || name.eq_ignore_ascii_case(b"transfer-encoding")
        })
        .collect();
    let want = match v.framing {
        Framing::None => vec![],
        Framing::Length(n) => vec![format!("Content-Length: {n}").into_bytes()],
        Framing::Chunked => vec![b"Transfer-Encoding: chunked".to_vec()],
    };
    assert_eq!(framing, want, "{}", String::from_utf8_lossy(text));
    assert_eq!(lines[0].split(|&b| b == b' ').count(), 3, "{}", String::from_utf8_lossy(text));
    let again = inspect(text);
    assert_eq!((&again.head, again.framing), (text, v.framing), "not a fixed point");
}

#[test]
fn a_compliant_request_goes_on_canonical() {
    let v = inspect(b"GET /a?b=c HTTP/1.1\r\nHost: Example.COM:8080\r\nAccept:  */* \t\r\n\r\n");
    expect(&v, Class::Compliant, "Compliant", None);
    assert_eq!(v.head, b"GET /a?b=c HTTP/1.1\r\nHost: Example.COM:8080\r\nAccept: */*\r\n\r\n");
    assert_eq!((v.framing, v.host), (Framing::None, Some("Example.COM:8080")));
}

#[test]
fn content_length_frames_the_body_and_duplicates_collapse() {
    let v = post("Content-Length: 0010\r\n");
    expect(&v, Class::Compliant, "Compliant", None);
    assert_eq!(v.framing, Framing::Length(10));
    assert_eq!(v.head, b"POST /upload HTTP/1.1\r\nHost: example.com\r\nContent-Length: 10\r\n\r\n");

    let v = post("Content-Length: 5\r\nX-A: 1\r\ncontent-length: 5\r\n");
    expect(&v, Class::Ambiguous, "DuplicateContentLength", None);
    assert_eq!(v.head, b"POST /upload HTTP/1.1\r\nHost: example.com\r\nContent-Length: 5\r\nX-A: 1\r\n\r\n");
}

#[test]
fn differing_or_malformed_content_length_is_severe() {
    expect(&post("Content-Length: 5\r\nContent-Length: 6\r\n"), Class::Severe, "MultipleContentLength", Some(400));
    for bad in ["+5", "-1", "1 0", "0x10", "", "5,5", "5;", "9223372036854775808", "18446744073709551616", "٥"] {
        let v = post(&format!("Content-Length: {bad}\r\n"));
        expect(&v, Class::Severe, "BadContentLength", Some(400));
    }
    expect(&post("Content-Length: 9223372036854775807\r\n"), Class::Compliant, "Compliant", None);
}

#[test]
fn transfer_encoding_with_content_length_keeps_only_chunked() {
    let v = post("Content-Length: 4\r\nTransfer-Encoding: chunked\r\n");
    expect(&v, Class::Ambiguous, "BothTeClPresent", None);
    assert_eq!(v.head, b"POST /upload HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n");

    let v = post("TrAnSfEr-EnCoDiNg: \tChUnKeD ; ext=1 \r\n");
    expect(&v, Class::Compliant, "Compliant", None);
    assert_eq!(v.head, b"POST /upload HTTP/1.1\r\nHost: example.com\r\nTransfer-Encoding: chunked\r\n\r\n");
}

#[test]
fn transfer_encoding_obfuscations() {
    // Ambiguous as the corpus grades them, and refused: a name that is no token.
    for name in ["Transfer-Encoding ", "Transfer-Encoding\t", "\u{1}Transfer-Encoding", "Transfer-Encodıng"] {
        let v = post(&format!("{name}: chunked\r\nContent-Length: 3\r\n"));
        expect(&v, Class::Ambiguous, "NonCompliantHeader", Some(400));
        assert_eq!(v.framing, Framing::Length(3), "a look-alike does not frame");
    }
    let v = post("Transfer_Encoding: chunked\r\n");
    expect(&v, Class::Ambiguous, "SuspiciousHeader", None);
    assert_eq!(v.head, b"POST /upload HTTP/1.1\r\nHost: example.com\r\n\r\n", "look-alikes are dropped");
    for value in ["xchunked", "chunked, identity", "chunked\u{1}", "chunk", "chunked,", ",chunked", "\u{a0}chunked"] {
        expect(&post(&format!("Transfer-Encoding: {value}\r\n")), Class::Severe, "BadTransferEncoding", Some(400));
    }
    for fields in
        ["Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n", "Transfer-Encoding: chunked, chunked\r\n"]
    {
        expect(&post(fields), Class::Severe, "MultipleTransferEncodingChunked", Some(400));
    }
    expect(&post("Transfer-Encoding: gzip\r\n"), Class::Severe, "BadTransferEncoding", Some(400));
}

#[test]
fn folds_on_framing_fields_are_severe_and_others_unfold() {
    expect(&post("Transfer-Encoding: gzip,\r\n chunked\r\n"), Class::Severe, "BadTransferEncoding", Some(400));
    expect(&post("Content-Length:\r\n 5\r\n"), Class::Severe, "BadContentLength", Some(400));
    let v = post("X-Long: one\r\n\ttwo \r\n  three\r\n");
    expect(&v, Class::Ambiguous, "MultilineHeader", None);
    assert_eq!(v.head, b"POST /upload HTTP/1.1\r\nHost: example.com\r\nX-Long: one two three\r\n\r\n");
    // A fold that reads as a framing field counts as one when grading, never when framing.
    let v = post("X-A: a\r\n Content-Length: 7\r\nContent-Length: 8\r\n");
    expect(&v, Class::Severe, "MultipleContentLength", Some(400));
    let v = inspect(leaked(format!("POST / HTTP/1.1\r\n Transfer-Encoding: chunked\r\n{H}\r\n")));
    expect(&v, Class::Ambiguous, "MultilineHeader", Some(400));
    assert_eq!(v.head, b"POST / HTTP/1.1\r\nHost: example.com\r\n\r\n");
}

#[test]
fn control_characters_in_fields() {
    for value in ["a\0b", "a\rb", "\0"] {
        expect(&post(&format!("X-A: {value}\r\n")), Class::Severe, "BadHeader", Some(400));
    }
    expect(&post("X-A\0: 1\r\n"), Class::Severe, "BadHeader", Some(400));
    let v = post("X-A: a\u{1}b\u{7f}\r\n");
    expect(&v, Class::Acceptable, "NonCompliantHeader", Some(400));
    assert_eq!(v.head, b"POST /upload HTTP/1.1\r\nHost: example.com\r\nX-A: a b\r\n\r\n");
    let v = post("Content-Length\u{1}: 5\r\n");
    expect(&v, Class::Ambiguous, "NonCompliantHeader", Some(400));
    assert_eq!(v.class_reason, "SuspiciousHeader");
    expect(&post("X A: 1\r\n"), Class::Acceptable, "NonCompliantHeader", Some(400));
    expect(&post(": 1\r\n"), Class::Ambiguous, "EmptyHeader", Some(400));
    expect(&post("no colon\r\n"), Class::Ambiguous, "MissingHeaderColon", Some(400));
}

#[test]
fn host_rules_of_http_1_1() {
    expect(&inspect(b"GET / HTTP/1.1\r\n\r\n"), Class::Compliant, "MissingHost", Some(400));
    let v = inspect(b"GET / HTTP/1.0\r\n\r\n");
    expect(&v, Class::Compliant, "Compliant", None);
    assert_eq!(v.host, None);
    let v = post("Host: other.example\r\n");
    expect(&v, Class::Ambiguous, "MultipleHost", Some(400));
    assert_eq!(v.head, b"POST /upload HTTP/1.1\r\nHost: example.com\r\n\r\n");
    assert_eq!(v.host, None);
    let v = inspect(b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n");
    expect(&v, Class::Compliant, "InvalidHost", Some(400));
    let v = inspect(b"GET http://Target.example:81/x HTTP/1.1\r\nHost: [::1]:80\r\n\r\n");
    expect(&v, Class::Compliant, "Compliant", None);
    assert_eq!(v.host, Some("Target.example:81"));
    // A folded Host is ambiguous, and names no host to route by.
    let v = inspect(b"GET / HTTP/1.1\r\nHost: example.com\r\n .test\r\n\r\n");
    assert_eq!((v.class, v.host), (Class::Ambiguous, None));
}

#[test]
fn line_ends() {
    let v = inspect(b"GET / HTTP/1.1\nHost: a\n\n");
    expect(&v, Class::Acceptable, "NonCrLfLineTermination", Some(400));
    assert_eq!(v.head, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n");
    expect(&inspect(b"GET / HTTP/1.1\r\nHost: a\nX: 1\r\n\r\n"), Class::Severe, "BadHeader", Some(400));
    expect(&inspect(b"GET / HTTP/1.1\nHost: a\r\n\r\n"), Class::Severe, "BadUri", Some(400));
    expect(&inspect(b"\r\n\r\nGET / HTTP/1.0\r\n\r\n"), Class::Compliant, "Compliant", None);
    expect(&inspect(b"GET / HTTP/1.0\r\nX: 1\r\n"), Class::Severe, "MissingLastEmptyLine", Some(400));
}

#[test]
fn request_lines() {
    let version = |line: &str| inspect(leaked(format!("{line}\r\n{H}\r\n")));
    expect(&version("G\u{1}T / HTTP/1.1"), Class::Severe, "BadMethod", Some(400));
    expect(&version("GET / HTTP/1.x"), Class::Severe, "BadVersion", Some(400));
    expect(&version("GET / http/1.1"), Class::Severe, "BadVersion", Some(400));
    expect(&version("GET /a HTTP/1.1 HTTP/1.1"), Class::Severe, "BadVersion", Some(400));
    expect(&version("GET /a\tHTTP/1.1"), Class::Severe, "BadVersion", Some(400));
    expect(&version("GET /\0 HTTP/1.1"), Class::Severe, "BadUri", Some(400));
    expect(&version("GET / HTTP/2.0"), Class::Acceptable, "NonCompliantVersion", Some(505));
    expect(&version("GET / HTTP/1.1 "), Class::Acceptable, "NonCompliantVersion", Some(400));
    expect(&version("GET HTTP/1.1"), Class::Ambiguous, "MissingUri", Some(400));
    expect(&version("GET a/b HTTP/1.1"), Class::Compliant, "InvalidUri", Some(400));
    expect(&version("GET http://user:pw@example.com/ HTTP/1.1"), Class::Compliant, "UserinfoInUri", Some(400));
    expect(&version("OPTIONS * HTTP/1.1"), Class::Compliant, "Compliant", None);
    let v = version("GET /a HTTP/1.2");
    expect(&v, Class::Acceptable, "NonCompliantVersion", None);
    assert!(v.head.starts_with(b"GET /a HTTP/1.1\r\n"));
    let v = version("GET /a b\t\"c HTTP/1.1");
    expect(&v, Class::Ambiguous, "AmbiguousUri", Some(400));
    assert!(v.head.starts_with(b"GET /a%20b%09%22c HTTP/1.1\r\n"), "{}", String::from_utf8_lossy(&v.head));
}

#[test]
fn body_semantics_of_get_head_and_old_versions() {
    let get = |fields: &str| inspect(leaked(format!("GET / HTTP/1.1\r\n{H}{fields}\r\n")));
    expect(&get("Content-Length: 0\r\n"), Class::Acceptable, "GetHeadZeroContentLength", None);
    expect(&get("Content-Length: 3\r\n"), Class::Ambiguous, "UndefinedContentLengthSemantics", None);
    expect(&get("Transfer-Encoding: chunked\r\n"), Class::Ambiguous, "UndefinedTransferEncodingSemantics", None);
    let v = inspect(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n");
    expect(&v, Class::Ambiguous, "UndefinedTransferEncodingSemantics", None);
    assert!(v.head.starts_with(b"POST / HTTP/1.1\r\n"), "chunked goes on as HTTP/1.1");
    expect(&post("Transfer-Encoding: gzip, chunked\r\n"), Class::Compliant, "UnsupportedTransferCoding", Some(501));
    let v = post("Transfer-Encoding: gzip\r\nContent-Length: 2\r\n");
    expect(&v, Class::Ambiguous, "ChunkedNotFinal", Some(400));
    assert_eq!((v.class_reason, v.framing), ("BothTeClPresent", Framing::Length(2)));
}

#[test]
fn head_end_finds_the_blank_line() {
    assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n\r\nbody"), Some(27));
    assert_eq!(head_end(b"GET / HTTP/1.1\nHost: a\n\nbody"), Some(24));
    assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\n\r\n"), Some(26));
    assert_eq!(head_end(b"\r\n\r\nGET / HTTP/1.1\r\n\r\n"), Some(22));
    assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n\r"), None);
    assert_eq!(head_end(b"\r\n"), None);
    assert_eq!(head_end(b""), None);
}

/// Random bytes, and corpus-like heads cut and mutated: no panic, and what goes on is always
/// one request with one framing.
#[test]
fn no_panic_on_random_or_truncated_input() {
    let seeds: [&[u8]; 4] = [
        b"POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 5\r\n\r\n",
        b"GET http://x/ HTTP/1.0\r\n X: y\r\nA: b\r\n\tc\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
        b"PUT / HTTP/1.1\nHost: [::1]\nTransfer_Encoding : chunked\n\n",
        b"\r\nGET /\x01 x HTTP/0.9 \r\n:\r\nHost:\r\n\r\n",
    ];
    const ALPHABET: &[u8] = b"\r\n :\t\0aZ,;-/\x01\x80HTP1.0";
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    for i in 0..20_000 {
        let mut input = seeds[i % seeds.len()].to_vec();
        if i % 5 == 0 {
            input = (0..next() % 96).map(|_| ALPHABET[next() as usize % ALPHABET.len()]).collect();
        }
        for _ in 0..next() % 4 {
            let at = next() as usize % (input.len() + 1);
            match next() % 3 {
                0 => input.insert(at, next() as u8),
                1 if at < input.len() => drop(input.remove(at)),
                _ => input.truncate(at),
            }
        }
        let end = head_end(&input);
        assert!(end.is_none_or(|e| e <= input.len()));
        let v = inspect(&input[..end.unwrap_or(input.len())]);
        assert_forwardable(&v);
    }
}
