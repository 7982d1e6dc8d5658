//! Follows a chunked request body (RFC 9112 §7.1) across arbitrary buffer boundaries, so the
//! caller knows where it ends and the next request on the connection begins. Strict where
//! parsers are known to disagree: CRLF only, hex sizes of at most 16 digits below 2^63,
//! bounded extensions and trailers, no whitespace that the grammar does not allow. It only
//! delimits: the caller passes the bytes on unchanged.

/// The longest chunk extension accepted on one chunk-size line.
pub const MAX_EXTENSION: usize = 4096;
/// The longest trailer section accepted.
pub const MAX_TRAILERS: usize = 16 * 1024;
/// The most hex digits a chunk size may have (leading zeros included).
pub const MAX_SIZE_DIGITS: u8 = 16;

/// Why a chunked body was rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    /// The chunk-size line does not start with a hex number, or has junk after it.
    #[error("malformed chunk size")]
    BadSize,
    /// More than [`MAX_SIZE_DIGITS`] hex digits.
    #[error("chunk size longer than {MAX_SIZE_DIGITS} hex digits")]
    SizeTooLong,
    /// A size of 2^63 or more, which signed 64-bit parsers read differently.
    #[error("chunk size too large")]
    SizeOverflow,
    /// A control character in a chunk extension.
    #[error("malformed chunk extension")]
    BadExtension,
    /// An extension longer than [`MAX_EXTENSION`].
    #[error("chunk extension longer than {MAX_EXTENSION} bytes")]
    ExtensionTooLong,
    /// A line not ended by CRLF (a bare LF or CR), or chunk data longer than its size.
    #[error("chunk line does not end with CRLF")]
    BadLineEnd,
    /// A trailer line that is not a field line.
    #[error("malformed trailer field")]
    BadTrailer,
    /// A trailer section longer than [`MAX_TRAILERS`].
    #[error("trailer section longer than {MAX_TRAILERS} bytes")]
    TrailersTooLong,
}

/// What one [`ChunkedBody::feed`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// How many of the bytes fed belong to the body (all of them unless it ended).
    pub consumed: usize,
    /// Whether the body ended, trailer section and final CRLF included; bytes after
    /// `consumed` belong to the next request.
    pub done: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading the hex digits of a chunk size.
    Size {
        digits: u8,
        size: u64,
    },
    /// Whitespace after the size: only a `;` (an extension) may follow (`BWS ";"`).
    SizeSpace {
        size: u64,
    },
    /// Inside the chunk extensions, `len` bytes so far.
    Extension {
        size: u64,
        len: usize,
    },
    /// After the CR that ends a chunk-size line.
    SizeLf {
        size: u64,
    },
    Data {
        left: u64,
    },
    DataCr,
    DataLf,
    /// At the start of a trailer line, or of the final empty line.
    TrailerStart,
    TrailerName,
    TrailerValue,
    TrailerLf,
    FinalLf,
    Done,
    Failed(ChunkError),
}

/// The state of one chunked body being read.
#[derive(Debug, Clone)]
pub struct ChunkedBody {
    state: State,
    data: u64,
    trailers: usize,
}

impl Default for ChunkedBody {
    fn default() -> Self {
        ChunkedBody { state: State::Size { digits: 0, size: 0 }, data: 0, trailers: 0 }
    }
}

impl ChunkedBody {
    /// A body not yet begun.
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether the body has ended.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// The chunk data seen so far (the body's length once decoded).
    pub fn data_len(&self) -> u64 {
        self.data
    }

    /// Follows the next bytes of the body. After an error, every call returns it again; after
    /// the end, nothing more is consumed.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Progress, ChunkError> {
        self.feed_with(bytes, |_| {}, |_| {})
    }

    /// As [`feed`](Self::feed), and hands `data` each span of `bytes` that is chunk data (the
    /// body decoded), and `trailer` each byte of the trailer section, its final CRLF included.
    pub fn feed_with(
        &mut self,
        bytes: &[u8],
        mut data: impl FnMut(std::ops::Range<usize>),
        mut trailer: impl FnMut(u8),
    ) -> Result<Progress, ChunkError> {
        let mut at = 0;
        while at < bytes.len() {
            match self.state {
                State::Done => return Ok(Progress { consumed: at, done: true }),
                State::Failed(error) => return Err(error),
                State::Data { left } => {
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(bytes.len() - at);
                    data(at..at + take);
                    at += take;
                    self.data += take as u64;
                    let left = left - take as u64;
                    self.state = if left == 0 { State::DataCr } else { State::Data { left } };
                }
                _ => {
                    use State::{FinalLf, TrailerLf, TrailerName, TrailerStart, TrailerValue};
                    if matches!(self.state, TrailerStart | TrailerName | TrailerValue | TrailerLf | FinalLf) {
                        trailer(bytes[at]);
                    }
                    self.state = self.step(bytes[at]);
                    at += 1;
                }
            }
        }
        match self.state {
            State::Failed(error) => Err(error),
            state => Ok(Progress { consumed: at, done: state == State::Done }),
        }
    }

    /// The state after one byte outside chunk data.
    fn step(&mut self, b: u8) -> State {
        use State::*;
        let in_trailers =
            matches!(self.state, TrailerName | TrailerValue) || (self.state == TrailerStart && b != b'\r');
        if in_trailers {
            self.trailers += 1;
            if self.trailers > MAX_TRAILERS {
                return Failed(ChunkError::TrailersTooLong);
            }
        }
        let control = b != b'\t' && (b < 0x20 || b == 0x7f);
        match (self.state, b) {
            (Size { digits, size }, _) if b.is_ascii_hexdigit() => {
                let digit = (b as char).to_digit(16).map_or(0, u64::from);
                match size.checked_mul(16).and_then(|s| s.checked_add(digit)) {
                    _ if digits == MAX_SIZE_DIGITS => Failed(ChunkError::SizeTooLong),
                    Some(size) if size <= i64::MAX as u64 => Size { digits: digits + 1, size },
                    _ => Failed(ChunkError::SizeOverflow),
                }
            }
            (Size { digits: 0, .. }, _) => Failed(ChunkError::BadSize),
            (Size { size, .. } | SizeSpace { size }, b' ' | b'\t') => SizeSpace { size },
            (Size { size, .. } | SizeSpace { size }, b';') => Extension { size, len: 1 },
            (Size { size, .. } | Extension { size, .. }, b'\r') => SizeLf { size },
            (Size { .. } | Extension { .. }, b'\n') => Failed(ChunkError::BadLineEnd),
            (Size { .. } | SizeSpace { .. }, _) => Failed(ChunkError::BadSize),
            (Extension { .. }, _) if control => Failed(ChunkError::BadExtension),
            (Extension { len, .. }, _) if len >= MAX_EXTENSION => Failed(ChunkError::ExtensionTooLong),
            (Extension { size, len }, _) => Extension { size, len: len + 1 },
            (SizeLf { size: 0 }, b'\n') => TrailerStart,
            (SizeLf { size }, b'\n') => Data { left: size },
            (DataCr, b'\r') => DataLf,
            (DataLf, b'\n') => Size { digits: 0, size: 0 },
            (TrailerStart, b'\r') => FinalLf,
            (FinalLf, b'\n') => Done,
            (TrailerStart | TrailerName, b'\n') => Failed(ChunkError::BadLineEnd),
            (TrailerStart | TrailerName, _) if is_tchar(b) => TrailerName,
            (TrailerName, b':') => TrailerValue,
            (TrailerValue, b'\r') => TrailerLf,
            (TrailerValue, b'\n') => Failed(ChunkError::BadLineEnd),
            (TrailerValue, _) if control => Failed(ChunkError::BadTrailer),
            (TrailerValue, _) => TrailerValue,
            (TrailerLf, b'\n') => TrailerStart,
            (TrailerStart | TrailerName, _) => Failed(ChunkError::BadTrailer),
            (SizeLf { .. } | DataCr | DataLf | FinalLf | TrailerLf, _) => Failed(ChunkError::BadLineEnd),
            (state @ (Done | Failed(_) | Data { .. }), _) => state,
        }
    }
}

/// `tchar` (RFC 9110 §5.6.2), for trailer field names.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body with an extension, a chunk of 26 bytes, trailers, then the next request.
    const BODY: &[u8] =
        b"5;name=\"v\"\r\nhello\r\n1A \t; x\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-Sum: 1\r\nEtag:\r\n\r\n";
    const NEXT: &[u8] = b"GET /next HTTP/1.1\r\n\r\n";

    fn feed_all(parts: &[&[u8]]) -> (ChunkedBody, Result<usize, ChunkError>) {
        let mut body = ChunkedBody::new();
        let mut consumed = 0;
        for part in parts {
            match body.feed(part) {
                Ok(p) => {
                    consumed += p.consumed;
                    if p.done {
                        return (body, Ok(consumed));
                    }
                }
                Err(e) => return (body, Err(e)),
            }
        }
        (body, Ok(consumed))
    }

    #[test]
    fn the_end_is_found_at_every_split_point() {
        let stream = [BODY, NEXT].concat();
        for at in 0..=stream.len() {
            let (body, consumed) = feed_all(&[&stream[..at], &stream[at..]]);
            assert_eq!(consumed, Ok(BODY.len()), "split at {at}");
            assert!(body.is_done());
            assert_eq!(body.data_len(), 31);
        }
        let bytes: Vec<&[u8]> = stream.chunks(1).collect();
        assert_eq!(feed_all(&bytes).1, Ok(BODY.len()), "one byte at a time");
    }

    #[test]
    fn a_body_in_progress_consumes_everything() {
        let mut body = ChunkedBody::new();
        assert_eq!(body.feed(&BODY[..20]), Ok(Progress { consumed: 20, done: false }));
        assert_eq!(body.feed(&BODY[20..]), Ok(Progress { consumed: BODY.len() - 20, done: true }));
        assert_eq!(body.feed(NEXT), Ok(Progress { consumed: 0, done: true }), "nothing after the end");
        assert_eq!(feed_all(&[b"0\r\n\r\n"]).1, Ok(5));
        assert_eq!(feed_all(&[b"000\r\n\r\n"]).1, Ok(7));
    }

    #[test]
    fn malformed_sizes_and_line_ends_are_rejected() {
        let long_ext = [&b"1;"[..], &[b'x'; MAX_EXTENSION][..], b"\r\n"].concat();
        let cases: [(&[u8], ChunkError); 19] = [
            (b"\r\n", ChunkError::BadSize),
            (b"g\r\n", ChunkError::BadSize),
            (b"-5\r\n", ChunkError::BadSize),
            (b"0x5\r\n", ChunkError::BadSize),
            (b" 5\r\n", ChunkError::BadSize),
            (b"5 x\r\n", ChunkError::BadSize),
            (b"5 \r\n", ChunkError::BadSize),
            (b"00000000000000001\r\n", ChunkError::SizeTooLong),
            (b"8000000000000000\r\n", ChunkError::SizeOverflow),
            (b"5;a\x01\r\n", ChunkError::BadExtension),
            (&long_ext, ChunkError::ExtensionTooLong),
            (b"5\n", ChunkError::BadLineEnd),
            (b"5;a\n", ChunkError::BadLineEnd),
            (b"5\r\r\n", ChunkError::BadLineEnd),
            (b"5\r\nhelloX\r\n", ChunkError::BadLineEnd),
            (b"5\r\nhello\n0\r\n\r\n", ChunkError::BadLineEnd),
            (b"0\r\n\n", ChunkError::BadLineEnd),
            (b"0\r\nX: y\n\r\n", ChunkError::BadLineEnd),
            (b"0\r\n folded: y\r\n\r\n", ChunkError::BadTrailer),
        ];
        for (bytes, error) in cases {
            let (mut body, result) = feed_all(&[bytes]);
            assert_eq!(result, Err(error), "{:?}", String::from_utf8_lossy(bytes));
            assert_eq!(body.feed(b"0\r\n\r\n"), Err(error), "an error sticks");
        }
        assert_eq!(feed_all(&[b"7fffffffffffffff\r\n"]).1, Ok(18), "2^63 - 1 is a size");
        assert_eq!(feed_all(&[b"0\r\nX: \x01\r\n\r\n"]).1, Err(ChunkError::BadTrailer));
        assert_eq!(feed_all(&[b"0\r\nX y\r\n\r\n"]).1, Err(ChunkError::BadTrailer));
        let trailers = [&b"0\r\nX: "[..], &[b'v'; MAX_TRAILERS][..], b"\r\n\r\n"].concat();
        assert_eq!(feed_all(&[&trailers]).1, Err(ChunkError::TrailersTooLong));
    }

    #[test]
    fn no_panic_on_random_bytes() {
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let len = next() % 48;
            let input: Vec<u8> = (0..len).map(|_| b"0123456789aF;= \t\r\nX:\x00"[next() as usize % 21]).collect();
            let mut body = ChunkedBody::new();
            for part in input.chunks(1 + next() as usize % 8) {
                match body.feed(part) {
                    Ok(p) => assert!(p.consumed <= part.len() && (p.done || p.consumed == part.len())),
                    Err(_) => break,
                }
            }
        }
    }

    #[test]
    fn decoding_hands_on_the_data_and_the_trailer_section_in_any_split() {
        let whole = [BODY, NEXT].concat();
        for split in 0..whole.len() {
            let mut body = ChunkedBody::new();
            let (mut data, mut trailer, mut consumed) = (Vec::new(), Vec::new(), 0);
            for part in [&whole[..split], &whole[split..]] {
                if body.is_done() {
                    break;
                }
                let progress =
                    body.feed_with(part, |span| data.extend_from_slice(&part[span]), |b| trailer.push(b)).unwrap();
                consumed += progress.consumed;
            }
            assert_eq!(consumed, BODY.len(), "split at {split}");
            assert_eq!(data, b"helloabcdefghijklmnopqrstuvwxyz", "split at {split}");
            assert_eq!(trailer, b"X-Sum: 1\r\nEtag:\r\n\r\n", "split at {split}");
        }
    }
}
