//! Transfer-Encoding and Content-Length: how they are graded together (look-alikes count, as
//! some parser may honour them), and the one framing the normalized request carries (only
//! the real fields decide it, as RFC 9112 §6.3 reads them).

use super::fields::Field;
use super::request_line::RequestLine;
use super::syntax::{content_length, Codings, Framer};
use super::{Class, Framing, Grade};

/// Grades the framing fields and decides the framing.
pub(super) fn decide(fields: &[Field<'_>], line: &RequestLine<'_>, grade: &mut Grade) -> Framing {
    let of = |framer| fields.iter().filter(move |f| f.framer() == Some(framer));
    let has_te = of(Framer::TransferEncoding).next().is_some();
    let lengths: Vec<Option<u64>> = of(Framer::ContentLength).map(|f| content_length(&f.value)).collect();
    let has_cl = !lengths.is_empty();
    let body_less = line.method == b"GET" || line.method == b"HEAD";

    if has_te {
        let mut codings = Codings::default();
        of(Framer::TransferEncoding).for_each(|f| codings.add(&f.value));
        if !line.version.is_1_1_or_later() {
            // RFC 9112 §6.1: Transfer-Encoding in HTTP/1.0 means the framing is faulty.
            grade.note(Class::Ambiguous, "UndefinedTransferEncodingSemantics", None);
        }
        if body_less {
            grade.note(Class::Ambiguous, "UndefinedTransferEncodingSemantics", None);
        }
        grade_codings(&codings, has_cl, grade);
    }

    let mut first = None;
    for length in &lengths {
        match (length, first) {
            (None, _) => grade.note(Class::Severe, "BadContentLength", Some(400)),
            (Some(n), None) => first = Some(*n),
            (Some(n), Some(m)) if *n != m => grade.note(Class::Severe, "MultipleContentLength", Some(400)),
            // RFC 9110 §8.6: identical values are replaced with a single field.
            (Some(_), Some(_)) => grade.note(Class::Ambiguous, "DuplicateContentLength", None),
        }
    }
    if let Some(n) = first {
        if line.version.is_before_1_0() {
            grade.note(Class::Ambiguous, "UndefinedContentLengthSemantics", None);
        }
        if body_less && n == 0 {
            grade.note(Class::Acceptable, "GetHeadZeroContentLength", None);
        } else if body_less {
            grade.note(Class::Ambiguous, "UndefinedContentLengthSemantics", None);
        }
    }
    if has_te && has_cl {
        // RFC 9112 §6.1: Transfer-Encoding overrides Content-Length, which is removed.
        grade.note(Class::Ambiguous, "BothTeClPresent", None);
    }

    let exact = |framer| fields.iter().filter(move |f| f.exact_framer() == Some(framer));
    let mut real = Codings::default();
    exact(Framer::TransferEncoding).for_each(|f| real.add(&f.value));
    if real.chunked > 0 {
        Framing::Chunked
    } else {
        // Without chunked, a Transfer-Encoding cannot delimit the body; such requests are refused
        // outside monitor mode, which forwards them by their Content-Length.
        match exact(Framer::ContentLength).find_map(|f| content_length(&f.value)) {
            Some(n) => Framing::Length(n),
            None => Framing::None,
        }
    }
}

/// RFC 9112 §6.1/§6.3: chunked once and last, and known codings only.
fn grade_codings(codings: &Codings, has_cl: bool, grade: &mut Grade) {
    if codings.bad {
        grade.note(Class::Severe, "BadTransferEncoding", Some(400));
    }
    if codings.chunked > 1 {
        grade.note(Class::Severe, "MultipleTransferEncodingChunked", Some(400));
    }
    if codings.chunked == 1 && !codings.chunked_last {
        grade.note(Class::Severe, "BadTransferEncoding", Some(400));
    } else if codings.chunked == 0 && !has_cl {
        // Some parsers see no body, others read one of unknown length.
        grade.note(Class::Severe, "BadTransferEncoding", Some(400));
    } else if codings.chunked == 0 {
        // Every parser that does not refuse it goes by the Content-Length.
        grade.note(Class::Compliant, "ChunkedNotFinal", Some(400));
    } else if codings.count > 1 {
        // RFC 9112 §6.1: a coding the server does not apply SHOULD get 501.
        grade.note(Class::Compliant, "UnsupportedTransferCoding", Some(501));
    }
}
