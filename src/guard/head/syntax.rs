//! The small grammars of RFC 9110/9112 the head checks need: byte classes, Content-Length,
//! transfer-coding lists, Host, and the look-alike test for the framing field names.

/// `tchar` (RFC 9110 §5.6.2): what a field name or a method is made of.
pub(super) fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// Optional whitespace (`OWS`): SP or HTAB.
pub(super) fn is_ows(b: u8) -> bool {
    b == b' ' || b == b'\t'
}

/// A control character: what a field value or a target must not hold (HTAB aside in values).
pub(super) fn is_ctl(b: u8) -> bool {
    b < 0x20 || b == 0x7f
}

/// NUL and CR (LF cannot be inside a line): what no parser reads the same way.
pub(super) fn is_bad(b: u8) -> bool {
    b == 0 || b == b'\r'
}

/// `bytes` without leading and trailing OWS.
pub(super) fn trim_ows(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&b| !is_ows(b)).unwrap_or(bytes.len());
    let end = bytes.iter().rposition(|&b| !is_ows(b)).map_or(start, |e| e + 1);
    &bytes[start..end]
}

/// Which framing field a name is, or looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Framer {
    TransferEncoding,
    ContentLength,
}

/// How a field name relates to a framing field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Likeness {
    /// The name itself (ASCII case aside).
    Exact(Framer),
    /// Not the name, but the same letters once case, delimiters, whitespace, controls and
    /// non-ASCII bytes are ignored (`Transfer_Encoding`, `\x01Content-Length`, `Transfer-Encodıng`).
    LookAlike(Framer),
}

/// Whether `name` is, or imitates, Transfer-Encoding or Content-Length.
pub(super) fn likeness(name: &[u8]) -> Option<Likeness> {
    for (framer, exact, letters) in [
        (Framer::TransferEncoding, &b"transfer-encoding"[..], &b"transferencoding"[..]),
        (Framer::ContentLength, b"content-length", b"contentlength"),
    ] {
        if name.eq_ignore_ascii_case(exact) {
            return Some(Likeness::Exact(framer));
        }
        if same_letters(name, letters) {
            return Some(Likeness::LookAlike(framer));
        }
    }
    None
}

/// Compares the ASCII letters and digits of `name` (lower-cased) with `letters`; the two
/// non-ASCII letters whose upper case is ASCII (`ſ` → S, `ı` → I) count as those letters.
fn same_letters(name: &[u8], letters: &[u8]) -> bool {
    let mut want = letters.iter();
    let mut i = 0;
    while i < name.len() {
        let (letter, width) = match (name[i], name.get(i + 1)) {
            (0xc5, Some(0xbf)) => (Some(b's'), 2),
            (0xc4, Some(0xb1)) => (Some(b'i'), 2),
            (b, _) if b.is_ascii_alphanumeric() => (Some(b.to_ascii_lowercase()), 1),
            _ => (None, 1),
        };
        if let Some(letter) = letter {
            if want.next() != Some(&letter) {
                return false;
            }
        }
        i += width;
    }
    want.next().is_none()
}

/// The largest Content-Length accepted: beyond it, parsers using signed 64-bit numbers wrap.
const MAX_CONTENT_LENGTH: u64 = i64::MAX as u64;

/// `Content-Length = 1*DIGIT` (RFC 9110 §8.6), OWS around it, at most 2^63 - 1. Lists (even
/// of one value repeated), signs and inner whitespace are refused.
pub(super) fn content_length(value: &[u8]) -> Option<u64> {
    let digits = trim_ows(value);
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &b| {
        let digit = b.is_ascii_digit().then(|| u64::from(b - b'0'))?;
        n.checked_mul(10)?.checked_add(digit).filter(|&n| n <= MAX_CONTENT_LENGTH)
    })
}

/// The transfer codings of a request, over all its Transfer-Encoding fields in order.
#[derive(Debug, Default)]
pub(super) struct Codings {
    /// Codings seen.
    pub count: usize,
    /// How many of them are `chunked`.
    pub chunked: usize,
    /// Whether the last one is `chunked`.
    pub chunked_last: bool,
    /// An unknown coding, an empty list element, or a byte no coding may hold.
    pub bad: bool,
}

/// Codings ballast knows by name; only `chunked` is applied, the others are refused with 501.
const KNOWN_CODINGS: [&[u8]; 7] = [b"chunked", b"gzip", b"deflate", b"compress", b"identity", b"x-gzip", b"x-compress"];

impl Codings {
    /// Adds the codings of one Transfer-Encoding field value.
    pub(super) fn add(&mut self, value: &[u8]) {
        for element in value.split(|&b| b == b',') {
            let element = trim_ows(element);
            let name = trim_ows(element.split(|&b| b == b';').next().unwrap_or_default());
            // Parameters are ignored (none is defined for chunked) but must be visible ASCII.
            let clean = element.iter().all(|&b| is_ows(b) || (0x21..0x7f).contains(&b));
            let known = KNOWN_CODINGS.iter().any(|k| name.eq_ignore_ascii_case(k));
            self.bad |= !clean || !known;
            let chunked = name.eq_ignore_ascii_case(b"chunked");
            self.count += 1;
            self.chunked += usize::from(chunked);
            self.chunked_last = chunked;
        }
    }
}

/// `Host = uri-host [ ":" port ]` (RFC 9110 §7.2); empty is valid.
pub(super) fn valid_host(value: &[u8]) -> bool {
    let (host, port) = match value.strip_prefix(b"[") {
        Some(literal) => match literal.iter().position(|&b| b == b']') {
            Some(end) if literal[..end].iter().all(|&b| b.is_ascii_hexdigit() || b":.vV".contains(&b)) => {
                (&b""[..], &literal[end + 1..])
            }
            _ => return false,
        },
        None => match value.iter().rposition(|&b| b == b':') {
            Some(colon) => (&value[..colon], &value[colon..]),
            None => (value, &b""[..]),
        },
    };
    let reg_name = |b: u8| b.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=".contains(&b);
    let port_ok = match port {
        [] => true,
        [b':', digits @ ..] => digits.iter().all(u8::is_ascii_digit),
        _ => false,
    };
    host.iter().all(|&b| reg_name(b)) && port_ok
}

/// The authority of an absolute-form target (`http://host:port/…`), without user info, when
/// it is a valid host.
pub(super) fn absolute_form_authority(target: &[u8]) -> Option<&[u8]> {
    let scheme_end = target.windows(3).position(|w| w == b"://")?;
    let scheme = &target[..scheme_end];
    if scheme.is_empty() || !scheme.iter().all(|&b| b.is_ascii_alphanumeric() || b"+-.".contains(&b)) {
        return None;
    }
    let rest = &target[scheme_end + 3..];
    let authority = &rest[..rest.iter().position(|&b| b"/?#".contains(&b)).unwrap_or(rest.len())];
    let host = authority.rsplit(|&b| b == b'@').next().unwrap_or(authority);
    valid_host(host).then_some(host)
}

/// Whether `b` may appear as is in a URI (RFC 3986 §2); others are percent-encoded.
pub(super) fn is_uri_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~:/?#[]@!$&'()*+,;=%".contains(&b)
}
