//! The parts of a request that rules look at.

use std::net::IpAddr;

use http::HeaderMap;

/// A borrowed view of one request, as routing sees it.
#[derive(Debug, Clone, Copy)]
pub struct RequestHead<'a> {
    pub method: &'a str,
    /// Host name without port, as the client sent it.
    pub host: &'a str,
    pub path: &'a str,
    /// The query string without `?`; empty when there is none.
    pub query: &'a str,
    pub headers: &'a HeaderMap,
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
