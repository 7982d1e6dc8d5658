//! The parts of a request that rules look at.

use std::net::IpAddr;

use http::{HeaderMap, HeaderName};

/// A borrowed view of one request, as routing sees it.
#[derive(Debug, Clone, Copy)]
pub struct RequestHead<'a> {
    pub method: &'a str,
    /// Host name without port, as the client sent it.
    pub host: &'a str,
    pub path: &'a str,
    /// The query string without `?`; empty when there is none.
    pub query: &'a str,
    pub headers: Fields<'a>,
    pub source_ip: IpAddr,
    /// `http` or `https`: what the client spoke to the listener.
    pub protocol: &'static str,
    /// The listener's port.
    pub port: u16,
}

impl<'a> RequestHead<'a> {
    /// The query's `key=value` pairs, in order, undecoded.
    pub fn query_pairs(&self) -> impl Iterator<Item = (&'a str, &'a str)> {
        self.query.split('&').filter(|p| !p.is_empty()).map(|p| p.split_once('=').unwrap_or((p, "")))
    }
}

/// The header fields of a request: parsed by hyper, or as they arrived on an HTTP/1 connection.
#[derive(Debug, Clone, Copy)]
pub enum Fields<'a> {
    Map(&'a HeaderMap),
    Raw(&'a [httparse::Header<'a>]),
}

impl<'a> Fields<'a> {
    /// The values of every field named `name`, in order; values that are not text are skipped.
    pub fn values(self, name: &'a HeaderName) -> impl Iterator<Item = &'a str> {
        let (map, raw) = match self {
            Fields::Map(map) => (Some(map.get_all(name).iter().filter_map(|v| v.to_str().ok())), None),
            Fields::Raw(raw) => (
                None,
                Some(
                    raw.iter()
                        .filter(move |h| h.name.eq_ignore_ascii_case(name.as_str()))
                        // As `HeaderValue::to_str`: visible ASCII (and tabs) only.
                        .filter(|h| h.value.iter().all(|&b| b == b'\t' || (0x20..0x7f).contains(&b)))
                        .filter_map(|h| std::str::from_utf8(h.value).ok()),
                ),
            ),
        };
        map.into_iter().flatten().chain(raw.into_iter().flatten())
    }
}
