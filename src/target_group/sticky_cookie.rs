//! Sealed stickiness cookies: the value that binds a client to a target, and its check.
//!
//! A value is `base64url(expiry || target) "." base64url(mac)`, where `expiry` is seconds since
//! the Unix epoch as a big-endian `u64`, `target` the target's address, and `mac` an
//! HMAC-SHA256 over the group name (length-prefixed, so no two groups share a message) and the
//! payload. The address is not secret, so it is signed, not encrypted; the MAC keeps a client
//! from naming a target of its choosing, from stretching the expiry, and from replaying a
//! cookie of one group to another.

use std::fmt;

use aws_lc_rs::hmac;
use aws_lc_rs::rand::{SecureRandom, SystemRandom};

/// Longest cookie value `open` looks at; a sealed value for an address is far shorter.
const MAX_VALUE_LEN: usize = 512;

/// Bytes of the big-endian expiry at the head of the payload.
const EXPIRY_LEN: usize = 8;

/// Keys that seal and open stickiness cookies; one per balancer process (random at start).
pub struct CookieSealer {
    key: hmac::Key,
}

impl CookieSealer {
    /// A sealer with a fresh random key: cookies it seals open only in this process.
    pub fn new() -> Self {
        let mut secret = [0u8; 32];
        SystemRandom::new().fill(&mut secret).expect("the operating system's random source is available");
        Self::from_secret(&secret)
    }

    /// A sealer keyed by `secret`, so that nodes sharing it accept each other's cookies (and
    /// tests are repeatable). The secret should hold at least 32 random bytes.
    pub fn from_secret(secret: &[u8]) -> Self {
        Self { key: hmac::Key::new(hmac::HMAC_SHA256, secret) }
    }

    /// The cookie value binding a client to `target` (its address string, e.g.
    /// "127.0.0.1:8080" or "[::1]:80") of `group` until `expires_at_unix` seconds.
    pub fn seal(&self, group: &str, target: &str, expires_at_unix: u64) -> String {
        let mut payload = Vec::with_capacity(EXPIRY_LEN + target.len());
        payload.extend_from_slice(&expires_at_unix.to_be_bytes());
        payload.extend_from_slice(target.as_bytes());
        let tag = hmac::sign(&self.key, &mac_input(group, &payload));

        let mut value = String::with_capacity(encoded_len(payload.len()) + 1 + 43);
        encode_into(&payload, &mut value);
        value.push('.');
        encode_into(tag.as_ref(), &mut value);
        value
    }

    /// The target address a cookie value names, if the value is authentic, made for `group`,
    /// and not expired at `now_unix`.
    pub fn open(&self, group: &str, value: &str, now_unix: u64) -> Option<String> {
        if value.len() > MAX_VALUE_LEN {
            return None;
        }
        let (payload, tag) = value.split_once('.')?;
        let payload = decode(payload)?;
        let tag = decode(tag)?;
        hmac::verify(&self.key, &mac_input(group, &payload), &tag).ok()?;

        // Authentic from here on: the layout is ours, but checked rather than trusted.
        let (expiry, target) = payload.split_first_chunk::<EXPIRY_LEN>()?;
        if now_unix > u64::from_be_bytes(*expiry) {
            return None;
        }
        String::from_utf8(target.to_vec()).ok()
    }
}

impl Default for CookieSealer {
    /// Same as [`CookieSealer::new`]: a random key.
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Debug for CookieSealer {
    // The key stays out of logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CookieSealer").finish_non_exhaustive()
    }
}

/// The message the MAC covers: `len(group) || group || payload`, the length as a big-endian
/// `u64`, so that no (group, payload) pair reads as another.
fn mac_input(group: &str, payload: &[u8]) -> Vec<u8> {
    let mut input = Vec::with_capacity(8 + group.len() + payload.len());
    input.extend_from_slice(&(group.len() as u64).to_be_bytes());
    input.extend_from_slice(group.as_bytes());
    input.extend_from_slice(payload);
    input
}

/// The URL-safe base64 alphabet (RFC 4648 §5); every character is a cookie-octet.
const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// Characters `encode_into` writes for `n` bytes (no padding).
fn encoded_len(n: usize) -> usize {
    n / 3 * 4 + [0, 2, 3][n % 3]
}

/// Appends `bytes` to `out` in unpadded base64url.
fn encode_into(bytes: &[u8], out: &mut String) {
    let sextet = |v: u32, shift: u32| char::from(ALPHABET[((v >> shift) & 0x3f) as usize]);
    for chunk in bytes.chunks(3) {
        let v = chunk.iter().enumerate().fold(0u32, |v, (i, &b)| v | (u32::from(b) << (16 - 8 * i)));
        for k in 0..=chunk.len() {
            out.push(sextet(v, 18 - 6 * k as u32));
        }
    }
}

/// The value of one base64url character, if it is one.
fn sextet_value(c: u8) -> Option<u32> {
    let v = match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'-' => 62,
        b'_' => 63,
        _ => return None,
    };
    Some(u32::from(v))
}

/// The bytes of unpadded base64url `text`, if it is exactly what `encode_into` would write
/// (no padding, no stray bits), so that each byte string has one encoding.
fn decode(text: &str) -> Option<Vec<u8>> {
    let text = text.as_bytes();
    if text.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(text.len() / 4 * 3 + 2);
    for chunk in text.chunks(4) {
        let mut v = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            v |= sextet_value(c)? << (18 - 6 * i);
        }
        let bytes = chunk.len() - 1;
        // Bits below the last whole byte must be zero in a canonical encoding.
        if v & (0xff_ffff >> (8 * bytes)) != 0 {
            return None;
        }
        out.extend_from_slice(&v.to_be_bytes()[1..=bytes]);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GROUP: &str = "web";
    const EXPIRY: u64 = 1_700_000_000;

    fn sealer() -> CookieSealer {
        CookieSealer::from_secret(b"a test secret of thirty-two byte")
    }

    /// `value` with the byte at `i` swapped for another base64url character.
    fn flip(value: &str, i: usize) -> String {
        let mut bytes = value.as_bytes().to_vec();
        bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
        String::from_utf8(bytes).expect("base64url and '.' are ASCII")
    }

    #[test]
    fn round_trip() {
        let s = sealer();
        for target in ["127.0.0.1:8080", "[::1]:80", "10.0.0.12:443", ""] {
            let value = s.seal(GROUP, target, EXPIRY);
            assert_eq!(s.open(GROUP, &value, EXPIRY - 60).as_deref(), Some(target));
            assert_eq!(s.open(GROUP, &value, EXPIRY).as_deref(), Some(target));
        }
    }

    #[test]
    fn random_keys_round_trip_and_differ() {
        let (a, b) = (CookieSealer::new(), CookieSealer::default());
        let value = a.seal(GROUP, "127.0.0.1:8080", EXPIRY);
        assert_eq!(a.open(GROUP, &value, 0).as_deref(), Some("127.0.0.1:8080"));
        assert_eq!(b.open(GROUP, &value, 0), None);
    }

    #[test]
    fn tampered_payload_rejected() {
        let s = sealer();
        let value = s.seal(GROUP, "127.0.0.1:8080", EXPIRY);
        let dot = value.find('.').expect("a sealed value has a dot");
        for i in 0..dot {
            assert_eq!(s.open(GROUP, &flip(&value, i), 0), None, "byte {i}");
        }
        // A payload naming another target, with the original MAC.
        let other = s.seal(GROUP, "127.0.0.1:9090", EXPIRY);
        let forged = format!("{}{}", &other[..other.find('.').expect("dot")], &value[dot..]);
        assert_eq!(s.open(GROUP, &forged, 0), None);
    }

    #[test]
    fn tampered_mac_rejected() {
        let s = sealer();
        let value = s.seal(GROUP, "127.0.0.1:8080", EXPIRY);
        let dot = value.find('.').expect("a sealed value has a dot");
        for i in dot + 1..value.len() {
            assert_eq!(s.open(GROUP, &flip(&value, i), 0), None, "byte {i}");
        }
        assert_eq!(s.open(GROUP, &value[..value.len() - 1], 0), None);
        assert_eq!(s.open(GROUP, &format!("{value}A"), 0), None);
        assert_eq!(s.open(GROUP, &value[..=dot], 0), None);
    }

    #[test]
    fn other_group_rejected() {
        let s = sealer();
        let value = s.seal(GROUP, "127.0.0.1:8080", EXPIRY);
        assert_eq!(s.open("api", &value, 0), None);
        assert_eq!(s.open("", &value, 0), None);
        assert_eq!(s.open("web\0", &value, 0), None);
    }

    #[test]
    fn expired_rejected() {
        let s = sealer();
        let value = s.seal(GROUP, "127.0.0.1:8080", EXPIRY);
        assert_eq!(s.open(GROUP, &value, EXPIRY + 1), None);
        assert_eq!(s.open(GROUP, &value, u64::MAX), None);
    }

    #[test]
    fn other_key_rejected() {
        let value = sealer().seal(GROUP, "127.0.0.1:8080", EXPIRY);
        let other = CookieSealer::from_secret(b"another secret of 32 bytes......");
        assert_eq!(other.open(GROUP, &value, 0), None);
    }

    #[test]
    fn garbage_rejected() {
        let s = sealer();
        let long_dots = ".".repeat(10_000);
        let long_valid_chars = "A".repeat(10_000) + "." + &"A".repeat(43);
        let garbage = [
            "",
            ".",
            "..",
            "a.b",
            "A.A",
            "AAAA.AAAA",
            "=.=",
            "AAAA==.AAAA==",
            "héllo.wörld",
            "🍪.🍪",
            "\0.\0",
            long_dots.as_str(),
            long_valid_chars.as_str(),
        ];
        for value in garbage {
            assert_eq!(s.open(GROUP, value, 0), None, "{value:.40}");
        }
    }

    #[test]
    fn value_is_a_cookie_value() {
        let s = sealer();
        let long = "x".repeat(300);
        for target in ["127.0.0.1:8080", "[::1]:80", "a;b,c d\"e\\f", long.as_str()] {
            let value = s.seal(GROUP, target, u64::MAX);
            assert!(value.bytes().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.')), "{value}");
        }
    }

    #[test]
    fn base64url_matches_rfc_4648_and_is_strict() {
        // RFC 4648 §10 test vectors, unpadded.
        let vectors = [
            ("", ""),
            ("f", "Zg"),
            ("fo", "Zm8"),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg"),
            ("fooba", "Zm9vYmE"),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, encoded) in vectors {
            let mut out = String::new();
            encode_into(plain.as_bytes(), &mut out);
            assert_eq!(out, encoded);
            assert_eq!(encoded_len(plain.len()), encoded.len());
            assert_eq!(decode(encoded).as_deref(), Some(plain.as_bytes()));
        }
        let mut out = String::new();
        encode_into(&[0xfb, 0xff], &mut out);
        assert_eq!(out, "-_8");
        for round in 0..=255u8 {
            let bytes: Vec<u8> = (0..round).map(|i| i.wrapping_mul(37) ^ round).collect();
            let mut out = String::new();
            encode_into(&bytes, &mut out);
            assert_eq!(decode(&out), Some(bytes));
        }
        // Stray low bits, a lone character, padding and the standard alphabet are refused.
        for bad in ["Zh", "Zm9", "Z", "Zg==", "+/", "Zm 9"] {
            assert_eq!(decode(bad), None, "{bad}");
        }
    }
}
