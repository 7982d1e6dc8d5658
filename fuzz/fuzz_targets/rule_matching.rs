//! Fuzzes rule matching: arbitrary hosts, paths, queries and headers against globs and CIDRs.
#![no_main]

use ballast::config::{Conditions, OneOrMany};
use ballast::routing::{Condition, Fields, RequestHead};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.split('\u{0}');
    let pattern = parts.next().unwrap_or("");
    let host = parts.next().unwrap_or("");
    let path = parts.next().unwrap_or("/");
    let query = parts.next().unwrap_or("");
    let conditions = Conditions {
        host: vec![pattern.to_string()],
        path: vec![pattern.to_string(), "/*".into()],
        query: [(pattern.to_string(), OneOrMany::One(pattern.to_string()))].into_iter().collect(),
        header: [("x-fuzz".to_string(), OneOrMany::One(pattern.to_string()))].into_iter().collect(),
        method: vec!["GET".into()],
        source_ip: vec![pattern.to_string(), "10.0.0.0/8".into()],
    };
    let mut headers = http::HeaderMap::new();
    if let Ok(value) = http::HeaderValue::from_str(host) {
        headers.insert("x-fuzz", value);
    }
    let head = RequestHead {
        method: "GET",
        host,
        path,
        query,
        headers: Fields::Map(&headers),
        source_ip: std::net::IpAddr::from([10, 1, 2, 3]),
        protocol: "http",
        port: 80,
    };
    for condition in Condition::compile(&conditions) {
        let _ = condition.matches(&head);
    }
});
