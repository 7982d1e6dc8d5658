//! The field lines of a head (RFC 9112 §5): names, values, obs-fold, and the lines that only
//! pretend to be fields. Each is graded; what may be sent on is marked `emit`.

use std::borrow::Cow;

use super::syntax::{is_bad, is_ctl, is_ows, is_tchar, likeness, trim_ows, Framer, Likeness};
use super::{Class, Grade};

/// Where a field came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Origin {
    /// A field line of its own.
    Line,
    /// A whitespace-led line before any field line (RFC 9112 §2.2: consumed, never processed).
    Leading,
    /// A folded continuation that reads like a framing field (` Transfer-Encoding: chunked`).
    FoldMimic,
}

/// One field as parsed.
#[derive(Debug)]
pub(super) struct Field<'a> {
    /// The name, without whitespace before the colon.
    pub name: &'a [u8],
    /// The value without surrounding OWS; obs-folds joined with one SP.
    pub value: Cow<'a, [u8]>,
    pub origin: Origin,
    /// Whether the name is, or imitates, a framing field.
    pub likeness: Option<Likeness>,
    /// Whether the name had whitespace before its colon.
    pub spaced: bool,
    /// Whether the field may go into the normalized head (framing fields are rewritten).
    pub emit: bool,
}

impl<'a> Field<'a> {
    /// The value as the client sent it: `None` when it was joined from folded lines.
    pub(super) fn value_as_sent(&self) -> Option<&'a [u8]> {
        match self.value {
            Cow::Borrowed(value) => Some(value),
            Cow::Owned(_) => None,
        }
    }

    /// The framing field this one counts as when grading (look-alikes included).
    pub(super) fn framer(&self) -> Option<Framer> {
        match self.likeness {
            Some(Likeness::Exact(f) | Likeness::LookAlike(f)) => Some(f),
            None => None,
        }
    }

    /// The framing field this one is, exactly: only these decide the framing.
    pub(super) fn exact_framer(&self) -> Option<Framer> {
        match self.likeness {
            Some(Likeness::Exact(f)) if self.origin == Origin::Line => Some(f),
            _ => None,
        }
    }

    /// Whether this is a Host field line.
    pub(super) fn is_host(&self) -> bool {
        self.origin == Origin::Line && !self.spaced && self.name.eq_ignore_ascii_case(b"host")
    }
}

/// Parses and grades the field lines: `lines`, `count` of them (the empty line that ends the
/// head included, and skipped), without their line ends.
pub(super) fn parse<'a>(lines: impl Iterator<Item = &'a [u8]>, count: usize, grade: &mut Grade) -> Vec<Field<'a>> {
    let mut fields: Vec<Field<'a>> = Vec::with_capacity(count);
    for line in lines {
        if line.is_empty() {
            continue;
        }
        if !is_ows(line[0]) {
            if let Some(field) = field_line(line, grade) {
                fields.push(field);
            }
            continue;
        }
        let text = trim_ows(line);
        let previous = fields.iter().rposition(|f| f.origin != Origin::FoldMimic);
        match previous.filter(|&i| fields[i].origin == Origin::Line) {
            Some(i) => {
                grade.note(Class::Ambiguous, "MultilineHeader", None);
                match fields[i].framer() {
                    Some(Framer::TransferEncoding) => grade.note(Class::Severe, "BadTransferEncoding", Some(400)),
                    Some(Framer::ContentLength) => grade.note(Class::Severe, "BadContentLength", Some(400)),
                    None => {}
                }
                // RFC 9112 §5.2: replace each obs-fold with SP before interpreting the value.
                let value = fields[i].value.to_mut();
                if !text.is_empty() {
                    if !value.is_empty() {
                        value.push(b' ');
                    }
                    value.extend_from_slice(text);
                }
                fields.extend(pretended(text, Origin::FoldMimic, grade));
            }
            None => {
                let pretend = pretended(text, Origin::Leading, grade);
                grade.note(Class::Ambiguous, "MultilineHeader", Some(400));
                fields.extend(pretend);
            }
        }
    }
    for field in &fields {
        check_value(field, grade);
    }
    fields
}

/// A regular field line: `field-name ":" OWS field-value OWS`.
fn field_line<'a>(line: &'a [u8], grade: &mut Grade) -> Option<Field<'a>> {
    let Some(colon) = line.iter().position(|&b| b == b':') else {
        grade.note(Class::Ambiguous, "MissingHeaderColon", Some(400));
        return None;
    };
    let raw_name = &line[..colon];
    let name = &raw_name[..raw_name.iter().rposition(|&b| !is_ows(b)).map_or(0, |e| e + 1)];
    let spaced = name.len() < raw_name.len();
    let likeness = likeness(raw_name);
    let token = !name.is_empty() && name.iter().all(|&b| is_tchar(b));
    if name.is_empty() {
        grade.note(Class::Ambiguous, "EmptyHeader", Some(400));
    } else if raw_name.iter().any(|&b| is_bad(b)) {
        grade.note(Class::Severe, "BadHeader", Some(400));
    } else if spaced || !token {
        // RFC 9112 §5.1: whitespace before the colon MUST be refused with 400.
        grade.note(Class::Acceptable, "NonCompliantHeader", Some(400));
    }
    if let Some(Likeness::LookAlike(_)) = likeness {
        grade.note(Class::Ambiguous, "SuspiciousHeader", None);
    }
    // A spaced name goes on without its whitespace, unless it is one the proxy must not guess at.
    let special = spaced && (likeness.is_some() || name.eq_ignore_ascii_case(b"host"));
    let emit = token && !special && !matches!(likeness, Some(Likeness::LookAlike(_)));
    Some(Field {
        name,
        value: Cow::Borrowed(trim_ows(&line[colon + 1..])),
        origin: Origin::Line,
        likeness,
        spaced,
        emit,
    })
}

/// A whitespace-led line read as the field it would be for a parser that trims it: graded,
/// counted when it imitates a framing field, never sent on.
fn pretended<'a>(text: &'a [u8], origin: Origin, grade: &mut Grade) -> Option<Field<'a>> {
    let colon = text.iter().position(|&b| b == b':')?;
    let name = trim_ows(&text[..colon]);
    if name.is_empty() && origin == Origin::Leading {
        grade.note(Class::Ambiguous, "EmptyHeader", Some(400));
        return None;
    }
    let framer = match likeness(name)? {
        Likeness::Exact(f) | Likeness::LookAlike(f) => f,
    };
    grade.note(Class::Ambiguous, "SuspiciousHeader", None);
    Some(Field {
        name,
        value: Cow::Borrowed(trim_ows(&text[colon + 1..])),
        origin,
        likeness: Some(Likeness::LookAlike(framer)),
        spaced: false,
        emit: false,
    })
}

/// NUL or CR in a value is severe (RFC 9110 §5.5); another control character is refused.
fn check_value(field: &Field<'_>, grade: &mut Grade) {
    if field.value.iter().any(|&b| is_bad(b)) {
        grade.note(Class::Severe, "BadHeader", Some(400));
    } else if field.value.iter().any(|&b| is_ctl(b) && b != b'\t') {
        grade.note(Class::Acceptable, "NonCompliantHeader", Some(400));
    }
}
