//! Writes the head a target gets: a request line every parser splits the same way, fields in
//! canonical `Name: value` form, and the framing as exactly one field.

use super::fields::Field;
use super::request_line::RequestLine;
use super::syntax::{is_ctl, is_ows, is_tchar, is_uri_char};
use super::Framing;

/// The normalized head of a request.
pub(super) fn head(line: &RequestLine<'_>, fields: &[Field<'_>], framing: Framing) -> Vec<u8> {
    let size = line.method.len() + line.target.len() * 3 + 16;
    let mut out = Vec::with_capacity(size + fields.iter().map(|f| f.name.len() + f.value.len() + 4).sum::<usize>());
    request_line(line, framing, &mut out);
    let mut framing_written = false;
    let mut host_written = false;
    for field in fields {
        if field.exact_framer().is_some() {
            // The framing goes where the first framing field was; the others are dropped.
            if !framing_written {
                framing_field(framing, &mut out);
                framing_written = true;
            }
            continue;
        }
        if !field.emit || (field.is_host() && std::mem::replace(&mut host_written, true)) {
            continue;
        }
        out.extend_from_slice(field.name);
        out.extend_from_slice(b": ");
        // RFC 9110 §5.5: CR, LF and NUL may be replaced with SP; other controls are too. The
        // value is trimmed of white space after that.
        let shown = |b: u8| if is_ctl(b) && b != b'\t' { b' ' } else { b };
        let value = &field.value[..];
        let start = value.iter().position(|&b| !is_ows(shown(b))).unwrap_or(value.len());
        let end = value.iter().rposition(|&b| !is_ows(shown(b))).map_or(start, |e| e + 1);
        out.extend(value[start..end].iter().map(|&b| shown(b)));
        out.extend_from_slice(b"\r\n");
    }
    if !framing_written {
        framing_field(framing, &mut out);
    }
    out.extend_from_slice(b"\r\n");
    out
}

fn request_line(line: &RequestLine<'_>, framing: Framing, out: &mut Vec<u8>) {
    if line.method.is_empty() {
        out.push(b'_');
    }
    out.extend(line.method.iter().map(|&b| if is_tchar(b) { b } else { b'_' }));
    out.push(b' ');
    match line.target {
        [] => out.push(b'/'),
        target => {
            for &b in target {
                if is_uri_char(b) {
                    out.push(b);
                } else {
                    out.extend_from_slice(&[b'%', HEX[usize::from(b >> 4)], HEX[usize::from(b & 0xf)]]);
                }
            }
        }
    }
    // A proxy sends its own version (RFC 9110 §6.2); chunked needs 1.1.
    let one_one = line.version.is_1_1_or_later() || framing == Framing::Chunked;
    out.extend_from_slice(if one_one { b" HTTP/1.1\r\n" } else { b" HTTP/1.0\r\n" });
}

fn framing_field(framing: Framing, out: &mut Vec<u8>) {
    match framing {
        Framing::None => {}
        Framing::Length(n) => {
            out.extend_from_slice(b"Content-Length: ");
            crate::proxy::h1::push_decimal(out, n);
            out.extend_from_slice(b"\r\n");
        }
        Framing::Chunked => out.extend_from_slice(b"Transfer-Encoding: chunked\r\n"),
    }
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";
