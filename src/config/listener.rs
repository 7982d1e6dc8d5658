//! The `[[listeners]]` tables: what the operator asked each listener to do.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::action::Action;
use super::duration::Duration;

/// The protocol a listener speaks to clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ListenerProtocol {
    Http,
    Https,
    Tcp,
    Tls,
    Udp,
    Geneve,
}

impl ListenerProtocol {
    /// Whether the listener terminates TLS and so needs certificates.
    pub fn terminates_tls(self) -> bool {
        matches!(self, ListenerProtocol::Https | ListenerProtocol::Tls)
    }

    /// Whether the listener understands HTTP (rules, redirects, fixed responses).
    pub fn is_http(self) -> bool {
        matches!(self, ListenerProtocol::Http | ListenerProtocol::Https)
    }
}

/// How strictly a listener treats requests that could desynchronise it from a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DesyncMitigation {
    Monitor,
    #[default]
    Defensive,
    Strictest,
}

/// One `[[listeners]]` table.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Listener {
    pub name: String,
    pub protocol: ListenerProtocol,
    pub bind: String,
    #[serde(default)]
    pub zone: Option<String>,
    pub default_action: Action,
    #[serde(default)]
    pub certificates: Vec<String>,
    #[serde(default)]
    pub desync_mitigation: DesyncMitigation,
    #[serde(default)]
    pub proxy_protocol: bool,
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default)]
    pub deny: Vec<String>,
    #[serde(default)]
    pub limits: Limits,
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
    #[serde(default)]
    pub rules: Vec<Rule>,
}

/// `[listeners.limits]`: sizes and timeouts that bound what one client may cost.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    /// Unset: 60 s on http/https (as ALB), 350 s on tcp/tls (as NLB), 120 s for udp flows.
    pub idle_timeout: Option<Duration>,
    /// Flows a udp listener tracks at once; a new flow beyond it is dropped and counted.
    pub max_flows: usize,
    pub max_header_bytes: usize,
    pub max_uri_bytes: usize,
    pub max_body_bytes: u64,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_timeout: Duration::secs(60),
            body_timeout: Duration::secs(60),
            idle_timeout: None,
            max_flows: 65_536,
            max_header_bytes: 65_536,
            max_uri_bytes: 16_384,
            max_body_bytes: 0,
            max_connections: 0,
            max_connections_per_ip: 0,
        }
    }
}

impl Listener {
    /// The idle timeout: the configured one, else the protocol's default.
    pub fn idle_timeout(&self) -> Duration {
        self.limits.idle_timeout.unwrap_or(match self.protocol {
            ListenerProtocol::Tcp | ListenerProtocol::Tls => Duration::secs(350),
            ListenerProtocol::Udp => Duration::secs(120),
            _ => Duration::secs(60),
        })
    }
}

/// `[listeners.rate_limit]`: a token bucket per client address.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub per_ip: u32,
    #[serde(default)]
    pub burst: Option<u32>,
}

/// One `[[listeners.rules]]` table.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub priority: u32,
    #[serde(default)]
    pub conditions: Conditions,
    pub action: Action,
    /// A token bucket per client for the requests this rule matches.
    #[serde(default)]
    pub rate_limit: Option<RateLimit>,
}

/// A value or a list of values; a condition matches when any of them does.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged)]
pub enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    /// The values as a list.
    pub fn values(&self) -> Vec<String> {
        match self {
            OneOrMany::One(v) => vec![v.clone()],
            OneOrMany::Many(vs) => vs.clone(),
        }
    }
}

/// The conditions of a rule; all that are present must match.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Conditions {
    #[serde(default)]
    pub host: Vec<String>,
    #[serde(default)]
    pub path: Vec<String>,
    #[serde(default)]
    pub query: BTreeMap<String, OneOrMany>,
    #[serde(default)]
    pub header: BTreeMap<String, OneOrMany>,
    #[serde(default)]
    pub method: Vec<String>,
    #[serde(default)]
    pub source_ip: Vec<String>,
}
