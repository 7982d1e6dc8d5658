//! Classifies one HTTP/1.x request head the way AWS's http-desync-guardian grades requests
//! (compliant, acceptable, ambiguous, severe), says whether RFC 9110/9112 lets a server refuse
//! it, and writes the normalized head to send on: one request line, canonical `Name: value`
//! fields, exactly one framing. Pure: no I/O, no clock, no globals.
//!
//! `Verdict::reason` names what decided the verdict, in http-desync-guardian's vocabulary
//! where it has a word and in the same style where it does not:
//!
//! | reason | class | what |
//! |---|---|---|
//! | `Compliant` | compliant | nothing to say |
//! | `NonCompliantHeader` | acceptable | a name that is no token (CTL, non-ASCII, space before `:`); a CTL in a value |
//! | `NonCompliantVersion` | acceptable | `HTTP/1.2`+, `HTTP/0.9`, `HTTP/2.0`+, no version, space after it |
//! | `SpaceInUri` | acceptable | the request-target holds a space |
//! | `GetHeadZeroContentLength` | acceptable | `Content-Length: 0` on GET or HEAD |
//! | `NonCrLfLineTermination` | acceptable | every line ends with a bare LF |
//! | `EmptyHeader` | ambiguous | a field line with an empty name |
//! | `MissingHeaderColon` | ambiguous | a field line without a colon |
//! | `MissingUri` | ambiguous | a request line without a target |
//! | `MultilineHeader` | ambiguous | obs-fold, or whitespace-led lines right after the request line |
//! | `SuspiciousHeader` | ambiguous | a name imitating Transfer-Encoding or Content-Length (`Transfer_Encoding`) |
//! | `AmbiguousUri` | ambiguous | a control character (not NUL or CR) in the request-target |
//! | `UndefinedContentLengthSemantics` | ambiguous | Content-Length > 0 on GET/HEAD, or on HTTP/0.9 |
//! | `UndefinedTransferEncodingSemantics` | ambiguous | Transfer-Encoding on GET/HEAD or before HTTP/1.1 |
//! | `DuplicateContentLength` | ambiguous | several Content-Length fields, one value (collapsed to one) |
//! | `BothTeClPresent` | ambiguous | Transfer-Encoding and Content-Length (Content-Length is dropped) |
//! | `MultipleHost` | ambiguous | more than one Host field |
//! | `BadHeader` | severe | NUL or CR in a field, or bare LF and CRLF line ends mixed |
//! | `BadUri` | severe | NUL or CR in the request-target; a bare LF ends the request line of a CRLF head |
//! | `BadVersion` | severe | a malformed version, or a line parsers split into different versions |
//! | `BadMethod` | severe | a method that is not a token |
//! | `MultipleContentLength` | severe | Content-Length fields that disagree |
//! | `BadContentLength` | severe | a Content-Length that is not one decimal number below 2^63, or folded |
//! | `MultipleTransferEncodingChunked` | severe | `chunked` more than once |
//! | `BadTransferEncoding` | severe | unknown coding, `chunked` not last, neither `chunked` nor Content-Length, fold |
//! | `MissingLastEmptyLine` | severe | the head does not end with an empty line |
//!
//! Refusals only (the class stays as graded): `MissingHost`, `InvalidHost`, `InvalidUri` (not
//! a request-target form), `UserinfoInUri` (`user@` in an absolute-form target), `ChunkedNotFinal` (Transfer-Encoding without `chunked`, 400) and
//! `UnsupportedTransferCoding` (a coding before `chunked`, 501).

mod fields;
mod framing;
mod normalize;
mod request_line;
mod syntax;

#[cfg(test)]
mod corpus_tests;
#[cfg(test)]
mod tests;

use fields::Field;
use request_line::RequestLine;

/// How a request could desynchronise a proxy and a target, as http-desync-guardian grades it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Class {
    /// Follows RFC 9110/9112.
    Compliant,
    /// Not compliant, but every parser reads it the same way.
    Acceptable,
    /// Parsers may read it differently: forward normalized, then close both connections.
    Ambiguous,
    /// Malformed or crafted to split parsers: request boundaries cannot be trusted.
    Severe,
}

impl Class {
    /// The lower-case name, as a metric label.
    pub fn label(self) -> &'static str {
        match self {
            Class::Compliant => "compliant",
            Class::Acceptable => "acceptable",
            Class::Ambiguous => "ambiguous",
            Class::Severe => "severe",
        }
    }
}

/// How the body of the request is delimited once normalized.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body: the next request starts right after the head.
    None,
    /// Exactly this many bytes of body.
    Length(u64),
    /// A chunked body (see [`super::chunked::ChunkedBody`]).
    Chunked,
}

/// What [`inspect`] found in one request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict<'a> {
    /// The desync class.
    pub class: Class,
    /// What decided the verdict: the refusal's reason when `refuse` is set, otherwise
    /// `class_reason` (see the module table).
    pub reason: &'static str,
    /// Why the request has its class: the first finding of that class.
    pub class_reason: &'static str,
    /// The status (400, 501 or 505) to answer with when RFC 9110/9112 lets a server refuse
    /// the request; every mode but monitor does.
    pub refuse: Option<u16>,
    /// How the body of the normalized request is delimited.
    pub framing: Framing,
    /// The head to send on: request line, `Name: value` fields, empty line, all CRLF; at most
    /// one Content-Length or one `Transfer-Encoding: chunked`, matching `framing`.
    pub head: Vec<u8>,
    /// The host to route by, in the case the client wrote it (port kept; hosts compare
    /// without regard to case): the authority of an absolute-form target (without `user@`),
    /// else the value of the Host field, trimmed, when there is exactly one valid non-empty
    /// one on a line of its own (a folded Host, already ambiguous, gives none).
    pub host: Option<&'a str>,
}

/// Parses and classifies a request head: `raw` holds the bytes up to and including the blank
/// line that ends the head (CRLF or bare LF line ends; empty lines before the request line
/// are skipped, bytes after the blank line are not looked at).
pub fn inspect(raw: &[u8]) -> Verdict<'_> {
    let mut grade = Grade::default();
    let lines = Lines::new(raw);
    let ends = LineEnds::of(lines.clone());
    if !ends.complete {
        grade.note(Class::Severe, "MissingLastEmptyLine", Some(400));
    }
    ends.grade(&mut grade);
    let mut lines = lines.map(|l| l.text);
    let first = lines.next().unwrap_or(b"");
    let line = request_line::parse(first, &mut grade);
    let fields = fields::parse(lines, ends.count.saturating_sub(1), &mut grade);
    let framing = framing::decide(&fields, &line, &mut grade);
    request_line::check_target(&line, &mut grade);
    let host = host(&fields, &line, &mut grade);
    let head = normalize::head(&line, &fields, framing);
    let (class, class_reason) = (grade.class, grade.reason);
    let (reason, refuse) = match grade.refusal {
        Some((_, status, reason)) => (reason, Some(status)),
        None => (class_reason, None),
    };
    Verdict { class, reason, class_reason, refuse, framing, head, host }
}

/// Where a head ends in `buf`, if it is complete: the length including the final blank line
/// (and any empty lines before the request line); accepts CRLF and bare LF line ends.
pub fn head_end(buf: &[u8]) -> Option<usize> {
    let start = skip_empty_lines(buf);
    let mut from = start;
    while let Some(lf) = buf[from..].iter().position(|&b| b == b'\n').map(|p| from + p) {
        match buf.get(lf + 1..) {
            Some([b'\n', ..]) => return Some(lf + 2),
            Some([b'\r', b'\n', ..]) => return Some(lf + 3),
            _ => from = lf + 1,
        }
    }
    None
}

/// The findings so far: the class with the reason that first reached it, and the refusal of
/// the highest class (the first of its class).
#[derive(Debug)]
struct Grade {
    class: Class,
    reason: &'static str,
    refusal: Option<(Class, u16, &'static str)>,
}

impl Default for Grade {
    fn default() -> Self {
        Grade { class: Class::Compliant, reason: "Compliant", refusal: None }
    }
}

impl Grade {
    /// Records one finding: its class, its reason, and the status if it may be refused.
    fn note(&mut self, class: Class, reason: &'static str, refuse: Option<u16>) {
        if class > self.class {
            self.class = class;
            self.reason = reason;
        }
        if let Some(status) = refuse {
            if self.refusal.is_none_or(|(c, _, _)| class > c) {
                self.refusal = Some((class, status, reason));
            }
        }
    }
}

/// One line of the head, without its line end.
struct Line<'a> {
    text: &'a [u8],
    bare_lf: bool,
}

/// The lines of a head, without their line ends, up to and including the empty one.
#[derive(Clone)]
struct Lines<'a> {
    rest: &'a [u8],
}

impl<'a> Lines<'a> {
    fn new(raw: &'a [u8]) -> Self {
        Lines { rest: &raw[skip_empty_lines(raw)..] }
    }
}

impl<'a> Iterator for Lines<'a> {
    type Item = Line<'a>;

    fn next(&mut self) -> Option<Line<'a>> {
        if self.rest.is_empty() {
            return None;
        }
        let Some(lf) = self.rest.iter().position(|&b| b == b'\n') else {
            let text = std::mem::take(&mut self.rest);
            return Some(Line { text, bare_lf: false });
        };
        let (text, bare_lf) = match self.rest[..lf].strip_suffix(b"\r") {
            Some(text) => (text, false),
            None => (&self.rest[..lf], true),
        };
        // Nothing after the empty line is the head's.
        self.rest = if text.is_empty() { &[] } else { &self.rest[lf + 1..] };
        Some(Line { text, bare_lf })
    }
}

/// How the lines of a head end, found in one pass before they are parsed.
struct LineEnds {
    /// Lines, the empty one included.
    count: usize,
    /// Whether an empty line ends the head.
    complete: bool,
    /// The first line ending with a bare LF, if any.
    first_bare: Option<usize>,
    /// Whether every line ends with a bare LF.
    all_bare: bool,
}

impl LineEnds {
    fn of(lines: Lines<'_>) -> Self {
        let mut ends = LineEnds { count: 0, complete: false, first_bare: None, all_bare: true };
        for (i, line) in lines.enumerate() {
            ends.count = i + 1;
            ends.complete = line.text.is_empty();
            if line.bare_lf {
                ends.first_bare.get_or_insert(i);
            } else {
                ends.all_bare = false;
            }
        }
        ends
    }

    /// Bare LF line ends: tolerated (but refused) when every line uses them; severe when
    /// mixed with CRLF, since a CRLF-only parser then reads a different head.
    fn grade(&self, grade: &mut Grade) {
        let Some(first_bare) = self.first_bare else { return };
        if self.all_bare {
            grade.note(Class::Acceptable, "NonCrLfLineTermination", Some(400));
        } else if first_bare == 0 {
            grade.note(Class::Severe, "BadUri", Some(400));
        } else {
            grade.note(Class::Severe, "BadHeader", Some(400));
        }
    }
}

/// The length of the empty lines a server ignores before a request line (RFC 9112 §2.2).
fn skip_empty_lines(buf: &[u8]) -> usize {
    let mut at = 0;
    loop {
        match buf.get(at..) {
            Some([b'\n', ..]) => at += 1,
            Some([b'\r', b'\n', ..]) => at += 2,
            _ => return at,
        }
    }
}

/// The Host rules of RFC 9112 §3.2, and the host to route by.
fn host<'a>(fields: &[Field<'a>], line: &RequestLine<'a>, grade: &mut Grade) -> Option<&'a str> {
    let mut hosts = fields.iter().filter(|f| f.is_host());
    let (first, more) = (hosts.next(), hosts.next().is_some());
    if more {
        grade.note(Class::Ambiguous, "MultipleHost", Some(400));
    } else if first.is_none() && line.version.is_1_1_or_later() {
        grade.note(Class::Compliant, "MissingHost", Some(400));
    }
    let value = match (first, more) {
        (Some(one), false) if syntax::valid_host(&one.value) => one.value_as_sent(),
        (Some(_), false) => {
            grade.note(Class::Compliant, "InvalidHost", Some(400));
            None
        }
        _ => None,
    };
    let value = syntax::absolute_form_authority(line.target).or(value)?;
    let value = std::str::from_utf8(value).ok()?;
    (!value.is_empty()).then_some(value)
}
