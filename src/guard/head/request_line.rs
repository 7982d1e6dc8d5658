//! The request line: `method SP request-target SP HTTP-version` (RFC 9112 §3), split on SP
//! as the grammar says, and graded for the ways other parsers would split it differently.

use super::syntax::{is_bad, is_ctl, is_tchar};
use super::{Class, Grade};

/// The protocol version of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Version {
    /// `HTTP/major.minor`.
    Http(u8, u8),
    /// No version: the HTTP/0.9 form.
    Missing,
    /// Not `HTTP/DIGIT.DIGIT`.
    Bad,
}

impl Version {
    /// HTTP/1.1 or a later 1.x, which a server treats as 1.1 (RFC 9110 §2.5).
    pub(super) fn is_1_1_or_later(self) -> bool {
        matches!(self, Version::Http(1, minor) if minor >= 1)
    }

    /// Before HTTP/1.0: where Content-Length has no defined meaning.
    pub(super) fn is_before_1_0(self) -> bool {
        matches!(self, Version::Missing | Version::Http(0, _))
    }
}

/// The parts of a request line, as slices of it.
#[derive(Debug)]
pub(super) struct RequestLine<'a> {
    pub method: &'a [u8],
    /// Everything between the method and the version, spaces included.
    pub target: &'a [u8],
    pub version: Version,
}

/// Splits a request line and grades its method and version.
pub(super) fn parse<'a>(line: &'a [u8], grade: &mut Grade) -> RequestLine<'a> {
    let end = line.iter().rposition(|&b| b != b' ' && b != b'\t').map_or(0, |e| e + 1);
    if end < line.len() && end > 0 {
        grade.note(Class::Acceptable, "NonCompliantVersion", Some(400));
    }
    let line = &line[..end];
    let Some(sp) = line.iter().position(|&b| b == b' ') else {
        check_method(line, grade);
        grade.note(Class::Ambiguous, "MissingUri", Some(400));
        return RequestLine { method: line, target: b"", version: Version::Missing };
    };
    let (method, rest) = (&line[..sp], &line[sp + 1..]);
    check_method(method, grade);
    match rest.iter().rposition(|&b| b == b' ') {
        Some(last) => RequestLine { method, target: &rest[..last], version: version(&rest[last + 1..], grade) },
        None if rest.starts_with(b"HTTP/") => {
            grade.note(Class::Ambiguous, "MissingUri", Some(400));
            RequestLine { method, target: b"", version: version(rest, grade) }
        }
        None => {
            grade.note(Class::Acceptable, "NonCompliantVersion", Some(400));
            // Parsers that split on any whitespace find a version SP-splitters do not: for them
            // the head has fields, for the others (HTTP/0.9) it has none.
            if words(rest, |b| matches!(b, b'\t' | 0x0b | 0x0c)).skip(1).any(|w| w.starts_with(b"HTTP/")) {
                grade.note(Class::Severe, "BadVersion", Some(400));
            }
            RequestLine { method, target: rest, version: Version::Missing }
        }
    }
}

fn check_method(method: &[u8], grade: &mut Grade) {
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
        grade.note(Class::Severe, "BadMethod", Some(400));
    }
}

/// `HTTP-version = "HTTP/" DIGIT "." DIGIT`; HTTP/1.2+ is read as 1.1, others get 505.
fn version(word: &[u8], grade: &mut Grade) -> Version {
    match *word {
        [b'H', b'T', b'T', b'P', b'/', major, b'.', minor] if major.is_ascii_digit() && minor.is_ascii_digit() => {
            let (major, minor) = (major - b'0', minor - b'0');
            if major != 1 {
                grade.note(Class::Acceptable, "NonCompliantVersion", Some(505));
            } else if minor > 1 {
                grade.note(Class::Acceptable, "NonCompliantVersion", None);
            }
            Version::Http(major, minor)
        }
        _ => {
            grade.note(Class::Severe, "BadVersion", Some(400));
            Version::Bad
        }
    }
}

/// Grades the request-target; called after the fields are graded, so that a framing finding
/// of the same class gives the reason, as in http-desync-guardian.
pub(super) fn check_target(line: &RequestLine<'_>, grade: &mut Grade) {
    let target = line.target;
    if target.iter().any(|&b| is_bad(b)) {
        grade.note(Class::Severe, "BadUri", Some(400));
    } else if target.iter().any(|&b| is_ctl(b)) {
        grade.note(Class::Ambiguous, "AmbiguousUri", Some(400));
    }
    if target.contains(&b' ') {
        // Parsers that stop the target at the first space take what follows for the version.
        if words(target, |b| b == b' ').any(|w| w.starts_with(b"HTTP/")) {
            grade.note(Class::Severe, "BadVersion", Some(400));
        } else {
            grade.note(Class::Acceptable, "SpaceInUri", Some(400));
        }
    } else if !request_target_form(line.method, target) {
        grade.note(Class::Compliant, "InvalidUri", Some(400));
    } else if has_userinfo(target) {
        // RFC 9110 §4.2.4: userinfo in an http(s) URI from an untrusted source is an error.
        grade.note(Class::Compliant, "UserinfoInUri", Some(400));
    }
}

/// Whether an absolute-form target carries `user@` before its host.
fn has_userinfo(target: &[u8]) -> bool {
    let Some(scheme_end) = target.windows(3).position(|w| w == b"://") else { return false };
    let rest = &target[scheme_end + 3..];
    let authority = &rest[..rest.iter().position(|&b| b"/?#".contains(&b)).unwrap_or(rest.len())];
    authority.contains(&b'@')
}

/// The four forms of RFC 9112 §3.2: origin (`/…`), absolute (`scheme://…`), authority (for
/// CONNECT), asterisk (`*`, for OPTIONS).
fn request_target_form(method: &[u8], target: &[u8]) -> bool {
    match target {
        [] => false,
        [b'/', ..] => true,
        b"*" => method == b"OPTIONS",
        _ if method == b"CONNECT" => true,
        _ => super::syntax::absolute_form_authority(target).is_some(),
    }
}

fn words(bytes: &[u8], split: impl Fn(u8) -> bool) -> impl Iterator<Item = &[u8]> {
    bytes.split(move |&b| split(b)).filter(|w| !w.is_empty())
}
