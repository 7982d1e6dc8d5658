//! Checks that go beyond the file's shape: names, references, ranges, addresses, certificates.
//!
//! Each problem is reported as `(key path, message)`; the caller puts file and line on it.

use std::collections::HashSet;
use std::net::SocketAddr;

use super::cidr::Cidr;
use super::target_group::parse_matcher;
use super::{Action, Config, Listener, ListenerProtocol, TargetGroup};

type Problems = Vec<(String, String)>;

/// Every problem in `config`; empty when it can run.
pub fn validate(config: &Config) -> Problems {
    let mut p = Problems::new();
    if let Some(admin) = &config.admin {
        if admin.bind.parse::<SocketAddr>().is_err() {
            p.push(("admin.bind".into(), format!("`{}` is not `ip:port`", admin.bind)));
        }
    }
    for (i, g) in config.target_groups.iter().enumerate() {
        if !g.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            p.push((format!("target_groups[{i}].name"), "may hold only letters, digits, `-` and `_`".into()));
        }
    }
    unique_names(&mut p, "certificates", config.certificates.iter().map(|c| c.name.as_str()));
    unique_names(&mut p, "listeners", config.listeners.iter().map(|l| l.name.as_str()));
    unique_names(&mut p, "target_groups", config.target_groups.iter().map(|g| g.name.as_str()));
    for (i, cert) in config.certificates.iter().enumerate() {
        let at = format!("certificates[{i}]");
        if let Err(e) = crate::listener::tls::load_certified_key(config, cert) {
            p.push((format!("{at}.cert"), e));
        }
    }
    for (i, listener) in config.listeners.iter().enumerate() {
        check_listener(&mut p, config, &format!("listeners[{i}]"), listener);
    }
    for (i, group) in config.target_groups.iter().enumerate() {
        check_target_group(&mut p, &format!("target_groups[{i}]"), group);
    }
    p
}

fn unique_names<'a>(p: &mut Problems, table: &str, names: impl Iterator<Item = &'a str>) {
    let mut seen = HashSet::new();
    for (i, name) in names.enumerate() {
        if name.is_empty() {
            p.push((format!("{table}[{i}].name"), "must not be empty".into()));
        } else if !seen.insert(name) {
            p.push((format!("{table}[{i}].name"), format!("`{name}` is used twice")));
        }
    }
}

fn check_listener(p: &mut Problems, config: &Config, at: &str, l: &Listener) {
    if l.bind.parse::<SocketAddr>().is_err() {
        p.push((format!("{at}.bind"), format!("`{}` is not `ip:port`", l.bind)));
    }
    if l.protocol == ListenerProtocol::Geneve {
        p.push((format!("{at}.protocol"), "protocol `geneve` is not supported yet".into()));
    }
    if !l.protocol.is_http() {
        if !l.rules.is_empty() {
            p.push((format!("{at}.rules"), "only http and https listeners have rules".into()));
        }
        if l.rate_limit.is_some() {
            p.push((
                format!("{at}.rate_limit"),
                "rate limits count HTTP requests: only http and https listeners take them".into(),
            ));
        }
        if l.proxy_protocol && l.protocol == ListenerProtocol::Udp {
            p.push((format!("{at}.proxy_protocol"), "udp listeners cannot receive PROXY headers".into()));
        }
    }
    if l.protocol.terminates_tls() && l.certificates.is_empty() {
        p.push((format!("{at}.certificates"), "a TLS listener needs at least one certificate".into()));
    }
    if !l.protocol.terminates_tls() && !l.certificates.is_empty() {
        p.push((format!("{at}.certificates"), "only https and tls listeners take certificates".into()));
    }
    for (i, name) in l.certificates.iter().enumerate() {
        if !config.certificates.iter().any(|c| &c.name == name) {
            p.push((format!("{at}.certificates[{i}]"), format!("no certificate is named `{name}`")));
        }
    }
    for (key, list) in [("allow", &l.allow), ("deny", &l.deny)] {
        for (i, text) in list.iter().enumerate() {
            if let Err(e) = text.parse::<Cidr>() {
                p.push((format!("{at}.{key}[{i}]"), e));
            }
        }
    }
    if let Some(rate) = &l.rate_limit {
        if rate.per_ip == 0 {
            p.push((format!("{at}.rate_limit.per_ip"), "must be at least 1".into()));
        }
    }
    check_action(p, config, &format!("{at}.default_action"), &l.default_action, l.protocol);
    let mut priorities = HashSet::new();
    for (i, rule) in l.rules.iter().enumerate() {
        let rat = format!("{at}.rules[{i}]");
        if !(1..=50_000).contains(&rule.priority) {
            p.push((format!("{rat}.priority"), "must be between 1 and 50000".into()));
        } else if !priorities.insert(rule.priority) {
            p.push((format!("{rat}.priority"), format!("priority {} is used twice", rule.priority)));
        }
        let c = &rule.conditions;
        let empty = c.host.is_empty()
            && c.path.is_empty()
            && c.query.is_empty()
            && c.header.is_empty()
            && c.method.is_empty()
            && c.source_ip.is_empty();
        if empty {
            p.push((format!("{rat}.conditions"), "a rule needs at least one condition".into()));
        }
        for (j, m) in c.method.iter().enumerate() {
            if m.is_empty() || !m.bytes().all(|b| b.is_ascii_uppercase() || b == b'-' || b == b'_') {
                p.push((format!("{rat}.conditions.method[{j}]"), format!("`{m}` is not an HTTP method in capitals")));
            }
        }
        for name in c.header.keys() {
            if http::HeaderName::from_bytes(name.as_bytes()).is_err() {
                p.push((format!("{rat}.conditions.header"), format!("`{name}` is not a valid header name")));
            }
        }
        for (j, text) in c.source_ip.iter().enumerate() {
            if let Err(e) = text.parse::<Cidr>() {
                p.push((format!("{rat}.conditions.source_ip[{j}]"), e));
            }
        }
        check_action(p, config, &format!("{rat}.action"), &rule.action, l.protocol);
        if rule.rate_limit.as_ref().is_some_and(|r| r.per_ip == 0) {
            p.push((format!("{rat}.rate_limit.per_ip"), "must be at least 1".into()));
        }
    }
}

fn check_action(p: &mut Problems, config: &Config, at: &str, action: &Action, proto: ListenerProtocol) {
    match action {
        Action::Forward { target_group, target_groups } => {
            let mut names: Vec<(String, &str)> = Vec::new();
            match (target_group, target_groups.is_empty()) {
                (Some(name), true) => names.push((format!("{at}.target_group"), name)),
                (None, false) => {
                    for (i, g) in target_groups.iter().enumerate() {
                        names.push((format!("{at}.target_groups[{i}]"), &g.name));
                        if g.weight > 999 {
                            p.push((format!("{at}.target_groups[{i}].weight"), "must be between 0 and 999".into()));
                        }
                    }
                    if target_groups.iter().all(|g| g.weight == 0) {
                        p.push((format!("{at}.target_groups"), "at least one weight must be above 0".into()));
                    }
                }
                _ => p.push((at.into(), "a forward names either `target_group` or `target_groups`".into())),
            }
            for (key, name) in names {
                match config.target_group(name) {
                    None => p.push((key, format!("no target group is named `{name}`"))),
                    Some(g) if !compatible(proto, g.protocol) => p.push((
                        key,
                        format!(
                            "target group `{name}` is {}; a {} listener forwards to {}",
                            format!("{:?}", g.protocol).to_lowercase(),
                            format!("{proto:?}").to_lowercase(),
                            match proto {
                                ListenerProtocol::Http | ListenerProtocol::Https => "http or https groups",
                                ListenerProtocol::Tcp | ListenerProtocol::Tls => "tcp or tls groups",
                                _ => "udp groups",
                            }
                        ),
                    )),
                    Some(_) => {}
                }
            }
        }
        Action::Redirect { protocol, status, port, .. } => {
            if ![301, 302, 307, 308].contains(status) {
                p.push((format!("{at}.status"), format!("{status} is not a redirect status (301, 302, 307, 308)")));
            }
            let proto_ok = ["#{protocol}", "http", "https"].iter().any(|v| v.eq_ignore_ascii_case(protocol));
            if !proto_ok {
                p.push((format!("{at}.protocol"), format!("`{protocol}` is not http, https or #{{protocol}}")));
            }
            if !port.contains("#{") && port.parse::<u16>().map_or(true, |p| p == 0) {
                p.push((format!("{at}.port"), format!("`{port}` is not a port")));
            }
            if !proto.is_http() {
                p.push((at.into(), "only http and https listeners can redirect".into()));
            }
        }
        Action::FixedResponse { status, .. } => {
            if !(200..=599).contains(status) {
                p.push((format!("{at}.status"), format!("{status} is not a status between 200 and 599")));
            }
            if !proto.is_http() {
                p.push((at.into(), "only http and https listeners can answer fixed responses".into()));
            }
        }
    }
}

fn check_target_group(p: &mut Problems, at: &str, g: &TargetGroup) {
    if g.protocol == super::TargetProtocol::Geneve {
        p.push((format!("{at}.protocol"), "protocol `geneve` is not supported yet".into()));
    }
    if g.proxy_protocol != super::ProxyProtocol::Off
        && !matches!(g.protocol, super::TargetProtocol::Tcp | super::TargetProtocol::Tls)
    {
        p.push((format!("{at}.proxy_protocol"), "only tcp and tls groups send PROXY headers".into()));
    }
    if g.target_timeout.is_zero() {
        p.push((format!("{at}.target_timeout"), "must be above 0s".into()));
    }
    if g.port == Some(0) {
        p.push((format!("{at}.port"), "must be between 1 and 65535".into()));
    }
    let hc = &g.health_check;
    let hat = format!("{at}.health_check");
    if let Err(e) = parse_matcher(&hc.matcher) {
        p.push((format!("{hat}.matcher"), e));
    }
    if hc.port != "traffic-port" && hc.port.parse::<u16>().map_or(true, |p| p == 0) {
        p.push((format!("{hat}.port"), format!("`{}` is not `traffic-port` or a port", hc.port)));
    }
    if !hc.path.starts_with('/') {
        p.push((format!("{hat}.path"), "must start with `/`".into()));
    }
    if hc.timeout.is_zero() || hc.timeout >= hc.interval {
        p.push((format!("{hat}.timeout"), "must be above 0s and below `interval`".into()));
    }
    for (key, n) in [("healthy_threshold", hc.healthy_threshold), ("unhealthy_threshold", hc.unhealthy_threshold)] {
        if !(1..=10).contains(&n) {
            p.push((format!("{hat}.{key}"), "must be between 1 and 10".into()));
        }
    }
    if let Some(super::Stickiness::AppCookie { cookie, .. }) = &g.stickiness {
        if cookie.is_empty() {
            p.push((format!("{at}.stickiness.cookie"), "must name the application's cookie".into()));
        }
    }
    if g.protocol_version == super::ProtocolVersion::Http2 && !g.protocol.is_http() {
        p.push((format!("{at}.protocol_version"), "http2 needs an http or https group".into()));
    }
    let mut seen = HashSet::new();
    for (i, t) in g.targets.iter().enumerate() {
        let tat = format!("{at}.targets[{i}]");
        match t.host_port(g.port) {
            Err(e) => p.push((format!("{tat}.address"), e)),
            Ok(hp) => {
                if !seen.insert(hp) {
                    p.push((format!("{tat}.address"), format!("`{}` is registered twice", t.address)));
                }
            }
        }
        if t.weight > 999 {
            p.push((format!("{tat}.weight"), "must be between 0 and 999".into()));
        }
    }
}

/// Whether a listener speaking `listener` can forward to a group speaking `group`.
fn compatible(listener: ListenerProtocol, group: super::TargetProtocol) -> bool {
    use super::TargetProtocol as T;
    match listener {
        ListenerProtocol::Http | ListenerProtocol::Https => group.is_http(),
        ListenerProtocol::Tcp | ListenerProtocol::Tls => matches!(group, T::Tcp | T::Tls),
        ListenerProtocol::Udp => group == T::Udp,
        ListenerProtocol::Geneve => group == T::Geneve,
    }
}
