//! One condition of a rule; the values inside a condition are alternatives.

use http::header::HeaderName;

use super::glob::Glob;
use super::request_head::RequestHead;
use crate::config::cidr::Cidr;
use crate::config::Conditions;

/// A compiled condition.
#[derive(Debug, Clone)]
pub enum Condition {
    /// Host name globs, case-insensitive.
    Host(Vec<Glob>),
    /// Path globs, case-sensitive.
    Path(Vec<Glob>),
    /// Query `key = value` globs; any pair present matches.
    Query(Vec<(Glob, Glob)>),
    /// One header's value globs, case-insensitive; any value of the header may match.
    Header(HeaderName, Vec<Glob>),
    /// Methods, exact.
    Method(Vec<String>),
    /// Client address blocks.
    SourceIp(Vec<Cidr>),
}

impl Condition {
    /// Compiles a rule's `conditions` table; the config was validated, so bad values are skipped.
    pub fn compile(c: &Conditions) -> Vec<Condition> {
        let globs = |vs: &[String], ci: bool| vs.iter().map(|v| Glob::new(v, ci)).collect::<Vec<_>>();
        let mut out = Vec::new();
        if !c.host.is_empty() {
            out.push(Condition::Host(globs(&c.host, true)));
        }
        if !c.path.is_empty() {
            out.push(Condition::Path(globs(&c.path, false)));
        }
        if !c.query.is_empty() {
            let pairs = c
                .query
                .iter()
                .flat_map(|(k, vs)| vs.values().into_iter().map(move |v| (Glob::new(k, true), Glob::new(&v, true))))
                .collect();
            out.push(Condition::Query(pairs));
        }
        for (name, values) in &c.header {
            if let Ok(name) = HeaderName::from_bytes(name.as_bytes()) {
                out.push(Condition::Header(name, globs(&values.values(), true)));
            }
        }
        if !c.method.is_empty() {
            out.push(Condition::Method(c.method.clone()));
        }
        if !c.source_ip.is_empty() {
            out.push(Condition::SourceIp(c.source_ip.iter().filter_map(|s| s.parse().ok()).collect()));
        }
        out
    }

    /// Whether the request meets this condition.
    pub fn matches(&self, head: &RequestHead<'_>) -> bool {
        match self {
            Condition::Host(globs) => globs.iter().any(|g| g.matches(head.host)),
            Condition::Path(globs) => globs.iter().any(|g| g.matches(head.path)),
            Condition::Query(pairs) => {
                head.query_pairs().any(|(k, v)| pairs.iter().any(|(kg, vg)| kg.matches(k) && vg.matches(v)))
            }
            Condition::Header(name, globs) => head.headers.values(name).any(|v| globs.iter().any(|g| g.matches(v))),
            Condition::Method(methods) => methods.iter().any(|m| m == head.method),
            Condition::SourceIp(blocks) => blocks.iter().any(|b| b.contains(head.source_ip)),
        }
    }
}
