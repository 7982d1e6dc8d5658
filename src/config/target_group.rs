//! The `[[target_groups]]` tables: targets and how traffic is spread over them.

use serde::{Deserialize, Serialize};

use super::duration::Duration;

/// The protocol ballast speaks to the targets of a group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetProtocol {
    #[default]
    Http,
    Https,
    Tcp,
    Tls,
    Udp,
    Geneve,
}

impl TargetProtocol {
    /// Whether requests reach these targets as HTTP.
    pub fn is_http(self) -> bool {
        matches!(self, TargetProtocol::Http | TargetProtocol::Https)
    }
}

/// The HTTP version spoken to targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProtocolVersion {
    #[default]
    Http1,
    Http2,
}

/// Whether and how the client's address is sent to targets first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyProtocol {
    #[default]
    Off,
    V1,
    V2,
}

/// How a target group spreads requests over its targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    #[default]
    RoundRobin,
    WeightedRoundRobin,
    LeastConnections,
    LeastOutstandingRequests,
    Random,
    FlowHash,
}

/// One `[[target_groups]]` table.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TargetGroup {
    pub name: String,
    #[serde(default)]
    pub protocol: TargetProtocol,
    /// The port of targets whose address has none.
    #[serde(default)]
    pub port: Option<u16>,
    #[serde(default)]
    pub protocol_version: ProtocolVersion,
    #[serde(default)]
    pub proxy_protocol: ProxyProtocol,
    #[serde(default = "sixty_seconds")]
    pub target_timeout: Duration,
    #[serde(default)]
    pub algorithm: Algorithm,
    #[serde(default = "three_hundred_seconds")]
    pub deregistration_delay: Duration,
    #[serde(default)]
    pub slow_start: Duration,
    #[serde(default = "yes")]
    pub cross_zone: bool,
    #[serde(default)]
    pub stickiness: Option<Stickiness>,
    #[serde(default)]
    pub health_check: HealthCheck,
    #[serde(default)]
    pub targets: Vec<Target>,
}

/// Keeps a client on one target.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Stickiness {
    /// ballast sets its own cookie.
    LbCookie {
        #[serde(default = "one_day")]
        duration: Duration,
    },
    /// ballast follows a cookie the application sets.
    AppCookie {
        cookie: String,
        #[serde(default = "one_day")]
        duration: Duration,
    },
}

/// How a health check talks to a target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthCheckProtocol {
    #[default]
    Http,
    Https,
    Tcp,
}

/// `health_check`: ELB's active check, with ELB's defaults for an application load balancer.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HealthCheck {
    /// Unset: `http` for http groups, `https` for https groups, `tcp` for the others.
    pub protocol: Option<HealthCheckProtocol>,
    pub path: String,
    /// `traffic-port` or a port number.
    pub port: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub healthy_threshold: u32,
    pub unhealthy_threshold: u32,
    /// Status codes that count as healthy: `200`, `200-299`, `200,302`.
    pub matcher: String,
}

impl Default for HealthCheck {
    fn default() -> Self {
        HealthCheck {
            protocol: None,
            path: "/".into(),
            port: "traffic-port".into(),
            interval: Duration::secs(30),
            timeout: Duration::secs(5),
            healthy_threshold: 5,
            unhealthy_threshold: 2,
            matcher: "200".into(),
        }
    }
}

impl TargetGroup {
    /// The health check protocol: the configured one, else what suits the group's protocol.
    pub fn health_check_protocol(&self) -> HealthCheckProtocol {
        self.health_check.protocol.unwrap_or(match self.protocol {
            TargetProtocol::Http => HealthCheckProtocol::Http,
            TargetProtocol::Https => HealthCheckProtocol::Https,
            _ => HealthCheckProtocol::Tcp,
        })
    }
}

/// One registered target.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// `ip:port`, `host:port`, or an address without port when the group has `port`.
    pub address: String,
    #[serde(default = "one")]
    pub weight: u32,
    #[serde(default)]
    pub zone: Option<String>,
}

fn sixty_seconds() -> Duration {
    Duration::secs(60)
}
fn three_hundred_seconds() -> Duration {
    Duration::secs(300)
}
fn one_day() -> Duration {
    Duration::secs(86_400)
}
fn yes() -> bool {
    true
}
fn one() -> u32 {
    1
}

impl Target {
    /// The host and port to connect to; the group's `port` fills in a missing one.
    pub fn host_port(&self, group_port: Option<u16>) -> Result<(String, u16), String> {
        split_address(&self.address, group_port)
    }
}

/// Splits `host:port`, `[v6]:port`, or a bare host when `default_port` is known.
pub fn split_address(address: &str, default_port: Option<u16>) -> Result<(String, u16), String> {
    let bad = || format!("`{address}` is not `host:port`");
    if address.is_empty() {
        return Err(bad());
    }
    if let Ok(sa) = address.parse::<std::net::SocketAddr>() {
        return Ok((sa.ip().to_string(), sa.port()));
    }
    if let Ok(ip) = address.trim_matches(|c| c == '[' || c == ']').parse::<std::net::IpAddr>() {
        return default_port
            .map(|p| (ip.to_string(), p))
            .ok_or_else(|| format!("`{address}` has no port and the target group sets no `port`"));
    }
    match address.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && !host.contains(':') => {
            let port = port.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(bad)?;
            valid_host(host).then(|| (host.to_string(), port)).ok_or_else(bad)
        }
        Some(_) => Err(bad()),
        None => {
            let port =
                default_port.ok_or_else(|| format!("`{address}` has no port and the target group sets no `port`"))?;
            valid_host(address).then(|| (address.to_string(), port)).ok_or_else(bad)
        }
    }
}

fn valid_host(host: &str) -> bool {
    host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// Parses a health check matcher (`200`, `200-299`, `200,302`) into inclusive ranges.
pub fn parse_matcher(text: &str) -> Result<Vec<(u16, u16)>, String> {
    let code = |s: &str| {
        s.trim()
            .parse::<u16>()
            .ok()
            .filter(|c| (100..=599).contains(c))
            .ok_or_else(|| format!("`{s}` in matcher `{text}` is not a status code (100-599)"))
    };
    text.split(',')
        .map(|part| match part.split_once('-') {
            Some((lo, hi)) => {
                let (lo, hi) = (code(lo)?, code(hi)?);
                if lo <= hi {
                    Ok((lo, hi))
                } else {
                    Err(format!("range `{part}` in matcher `{text}` runs backwards"))
                }
            }
            None => code(part).map(|c| (c, c)),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_split_with_and_without_ports() {
        assert_eq!(split_address("127.0.0.1:8080", None).unwrap(), ("127.0.0.1".into(), 8080));
        assert_eq!(split_address("[::1]:443", None).unwrap(), ("::1".into(), 443));
        assert_eq!(split_address("app.internal:3000", None).unwrap(), ("app.internal".into(), 3000));
        assert_eq!(split_address("10.0.0.5", Some(80)).unwrap(), ("10.0.0.5".into(), 80));
        assert!(split_address("10.0.0.5", None).unwrap_err().contains("no port"));
        assert!(split_address("host:http", None).is_err());
        assert!(split_address("bad host:80", None).is_err());
    }

    #[test]
    fn matchers_parse_codes_ranges_and_lists() {
        assert_eq!(parse_matcher("200").unwrap(), vec![(200, 200)]);
        assert_eq!(parse_matcher("200-299").unwrap(), vec![(200, 299)]);
        assert_eq!(parse_matcher("200,302").unwrap(), vec![(200, 200), (302, 302)]);
        assert!(parse_matcher("299-200").is_err());
        assert!(parse_matcher("ok").is_err());
    }
}
