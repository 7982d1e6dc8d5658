//! Header rewriting between client and target: hop-by-hop headers and X-Forwarded-*.

use std::io::Write;
use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Headers that describe one connection, never forwarded (RFC 9110 section 7.6.1).
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Removes hop-by-hop headers, and those the `Connection` header names. With `keep_upgrade`
/// the `Connection: upgrade` and `Upgrade` pair stays, for a WebSocket handshake.
pub fn remove_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // Names removed anyway are not gathered, and `close` is removed as a known name: the usual
    // `Connection: keep-alive` or `close` take no allocation.
    let mut close = false;
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|n| {
            let is_close = n.eq_ignore_ascii_case("close");
            close |= is_close;
            !is_close && !HOP_BY_HOP.iter().any(|h| n.eq_ignore_ascii_case(h.as_str()))
        })
        .filter_map(|n| HeaderName::from_bytes(n.as_bytes()).ok())
        .filter(|n| !(keep_upgrade && n == header::UPGRADE))
        .collect();
    for name in named {
        headers.remove(name);
    }
    if close {
        headers.remove(HeaderName::from_static("close"));
    }
    for name in &HOP_BY_HOP {
        headers.remove(name);
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(header::UPGRADE);
    }
}

/// Adds the client's address to X-Forwarded-For (after any value it sent) and sets
/// X-Forwarded-Proto and X-Forwarded-Port to what the client spoke to the listener.
pub fn add_forwarded(headers: &mut HeaderMap, client_ip: IpAddr, protocol: &'static str, port: u16) {
    let xff = HeaderName::from_static("x-forwarded-for");
    let earlier: Vec<&str> = headers.get_all(&xff).iter().filter_map(|v| v.to_str().ok()).collect();
    let value = if earlier.is_empty() {
        // The usual case, written where it is made: one allocation, the value's own.
        // (An address's text is 39 bytes at most.)
        let mut text = [0u8; 64];
        let mut at = &mut text[..];
        match write!(at, "{client_ip}") {
            Ok(()) => {
                let len = 64 - at.len();
                HeaderValue::from_bytes(&text[..len])
            }
            Err(_) => HeaderValue::try_from(client_ip.to_string()),
        }
    } else {
        HeaderValue::try_from(format!("{}, {client_ip}", earlier.join(", ")))
    };
    if let Ok(value) = value {
        headers.insert(xff, value);
    }
    headers.insert(HeaderName::from_static("x-forwarded-proto"), HeaderValue::from_static(protocol));
    headers.insert(HeaderName::from_static("x-forwarded-port"), HeaderValue::from(port));
}

/// Whether a request asks to become a WebSocket.
pub fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    let connection_upgrade = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    let websocket = headers
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("websocket"));
    connection_upgrade && websocket
}

/// Joins the `Cookie` fields into one, values separated by "; ": HTTP/2 clients send each
/// cookie as a field of its own, HTTP/1.1 takes one field (RFC 9113, section 8.2.3).
pub fn join_cookies(headers: &mut HeaderMap) {
    let mut cookies = headers.get_all(header::COOKIE).iter();
    let (Some(first), Some(_)) = (cookies.next(), cookies.next()) else { return };
    let mut joined = first.as_bytes().to_vec();
    for more in headers.get_all(header::COOKIE).iter().skip(1) {
        joined.extend_from_slice(b"; ");
        joined.extend_from_slice(more.as_bytes());
    }
    if let Ok(value) = HeaderValue::from_bytes(&joined) {
        headers.insert(header::COOKIE, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_sent_apart_become_one_field() {
        let mut h = HeaderMap::new();
        for c in ["a=1", "b=2", "c=3"] {
            h.append(header::COOKIE, HeaderValue::from_static(c));
        }
        join_cookies(&mut h);
        let all: Vec<_> = h.get_all(header::COOKIE).iter().collect();
        assert_eq!(all, ["a=1; b=2; c=3"]);
        let mut one = HeaderMap::new();
        one.insert(header::COOKIE, HeaderValue::from_static("only=1"));
        join_cookies(&mut one);
        assert_eq!(one[header::COOKIE], "only=1");
    }

    #[test]
    fn connection_and_the_headers_it_names_are_dropped() {
        // RFC 9110 reserves the name `Close`: a field named by `Connection: close` goes too.
        let cases: [&[(&str, &str)]; 2] = [
            &[("connection", "keep-alive, x-secret"), ("x-secret", "1"), ("te", "trailers"), ("upgrade", "h2c")],
            &[("connection", "Keep-Alive"), ("connection", "Close, x-gone"), ("x-gone", "1"), ("close", "named")],
        ];
        for fields in cases {
            let mut h = HeaderMap::new();
            for (name, value) in fields {
                h.append(*name, value.parse().unwrap());
            }
            h.insert("keep-alive", "timeout=5".parse().unwrap());
            h.insert("x-kept", "yes".parse().unwrap());
            remove_hop_by_hop(&mut h, false);
            assert_eq!(h.len(), 1, "{h:?}");
            assert_eq!(h["x-kept"], "yes");
        }
    }

    #[test]
    fn a_websocket_handshake_keeps_its_upgrade() {
        let mut h = HeaderMap::new();
        h.insert("connection", "Upgrade".parse().unwrap());
        h.insert("upgrade", "websocket".parse().unwrap());
        assert!(is_websocket_upgrade(&h));
        remove_hop_by_hop(&mut h, true);
        assert_eq!(h["upgrade"], "websocket");
        assert_eq!(h["connection"], "upgrade");
    }

    #[test]
    fn forwarded_for_appends_to_what_the_client_sent() {
        let mut h = HeaderMap::new();
        h.append("x-forwarded-for", "203.0.113.9".parse().unwrap());
        h.append("x-forwarded-for", "198.51.100.1".parse().unwrap());
        h.insert("x-forwarded-proto", "https".parse().unwrap());
        add_forwarded(&mut h, "127.0.0.1".parse().unwrap(), "http", 8080);
        assert_eq!(h["x-forwarded-for"], "203.0.113.9, 198.51.100.1, 127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-port"], "8080");
    }

    #[test]
    fn forwarded_for_names_an_ipv6_client_of_the_longest_text_whole() {
        let mut h = HeaderMap::new();
        // Eight groups of four hex digits: 39 characters, the longest an address prints as.
        let ip = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
        add_forwarded(&mut h, ip.parse().unwrap(), "https", 443);
        assert_eq!(h["x-forwarded-for"], "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff");
        add_forwarded(&mut h, "2001:db8::1".parse().unwrap(), "https", 443);
        assert_eq!(h["x-forwarded-for"], "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff, 2001:db8::1");
    }
}
