//! The running configuration: one immutable value built from a validated config, swapped
//! whole on reload.

use std::sync::Arc;

use rustls::ServerConfig;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

use crate::config::{self, Action, Config, ListenerProtocol};
use crate::guard::connection_limits::ConnectionLimits;
use crate::guard::http1_stream::GuardSettings;
use crate::guard::ip_rules::IpRules;
use crate::guard::rate_limit::RateLimit;
use crate::guard::state::GuardState;
use crate::metrics::{GroupLabel, ListenerLabel, Metrics, WorkerCounter, WorkerHistogram};
use crate::routing::{ActionPlan, Condition, ForwardPlan, RedirectTemplate, Router};
use crate::target_group::{TargetGroup, TargetRegistry};

/// What every request of one config generation reads.
#[derive(Debug)]
pub struct Snapshot {
    pub config: Arc<Config>,
    pub listeners: Vec<ListenerPlan>,
    pub target_groups: Vec<TargetGroup>,
    /// Metric handles of each target group, by the same index as `target_groups`.
    pub group_metrics: Vec<GroupMetrics>,
}

/// Metric handles of one target group.
#[derive(Debug)]
pub struct GroupMetrics {
    pub response_seconds: WorkerHistogram,
    pub connection_errors: Counter,
}

/// Metric handles of one listener.
#[derive(Debug)]
pub struct ListenerMetrics {
    pub active_connections: Gauge,
    pub new_connections: WorkerCounter,
    pub processed_bytes: WorkerCounter,
    /// Requests by status class, per target group (same index as `Snapshot::target_groups`).
    /// `None` for groups the listener never forwards to.
    pub requests_by_group: Vec<Option<[WorkerCounter; 5]>>,
    /// Requests the listener answered without a target group (redirects, fixed responses).
    pub requests_answered: [WorkerCounter; 5],
}

/// A listener of the snapshot, ready to route.
#[derive(Debug)]
pub struct ListenerPlan {
    pub name: String,
    pub protocol: ListenerProtocol,
    pub router: Router,
    /// The TLS context of `https` listeners.
    pub tls: Option<Arc<ServerConfig>>,
    pub limits: config::Limits,
    /// The listener's zone, for target groups with `cross_zone = false`.
    pub zone: Option<String>,
    pub metrics: ListenerMetrics,
    /// Who may connect.
    pub ip_rules: IpRules,
    /// Open connections, against `limits.max_connections` and `max_connections_per_ip`.
    pub connections: Arc<ConnectionLimits>,
    /// The listener's `rate_limit`.
    pub rate_limit: Option<Arc<RateLimit>>,
    /// Rules' own rate limits, by rule priority.
    pub rule_rate_limits: Vec<(u32, Arc<RateLimit>)>,
    /// Whether connections open with a PROXY protocol header.
    pub proxy_protocol: bool,
    /// How long a connection or flow may stay silent.
    pub idle_timeout: std::time::Duration,
    /// What the HTTP/1 guard applies (how strictly heads are judged, limits, timeouts, the
    /// counters by desync class), shared by the listener's connections.
    pub guard: Arc<GuardSettings>,
}

impl Snapshot {
    /// Builds the running state from a validated config; counters come from `registry`.
    pub fn build(
        config: Config,
        registry: &TargetRegistry,
        metrics: &Metrics,
        guard: &GuardState,
    ) -> Result<Snapshot, String> {
        let target_groups: Vec<TargetGroup> =
            config.target_groups.iter().map(|g| TargetGroup::new(g, registry)).collect();
        let group_index = |name: &str| {
            target_groups
                .iter()
                .position(|g| g.name == name)
                .ok_or_else(|| format!("no target group is named `{name}`"))
        };
        let plan = |action: &Action| -> Result<ActionPlan, String> {
            Ok(match action {
                Action::Forward { target_group, target_groups } => {
                    let groups = match target_group {
                        Some(name) => vec![(group_index(name)?, 1)],
                        None => target_groups
                            .iter()
                            .map(|g| Ok((group_index(&g.name)?, g.weight)))
                            .collect::<Result<_, String>>()?,
                    };
                    ActionPlan::Forward(ForwardPlan::new(&groups))
                }
                Action::Redirect { protocol, host, port, path, query, status } => {
                    ActionPlan::Redirect(RedirectTemplate {
                        protocol: protocol.clone(),
                        host: host.clone(),
                        port: port.clone(),
                        path: path.clone(),
                        query: query.clone(),
                        status: *status,
                    })
                }
                Action::FixedResponse { status, body, content_type } => ActionPlan::FixedResponse {
                    status: *status,
                    body: body.clone(),
                    content_type: content_type.clone(),
                },
            })
        };
        let mut listeners = Vec::new();
        for l in &config.listeners {
            let rules = l
                .rules
                .iter()
                .map(|r| Ok((r.priority, Condition::compile(&r.conditions), plan(&r.action)?)))
                .collect::<Result<Vec<_>, String>>()?;
            let tls = if l.protocol.terminates_tls() {
                let certs = l
                    .certificates
                    .iter()
                    .map(|name| {
                        let cert = config
                            .certificates
                            .iter()
                            .find(|c| &c.name == name)
                            .ok_or_else(|| format!("no certificate is named `{name}`"))?;
                        crate::listener::tls::load_certified_key(&config, cert)
                    })
                    .collect::<Result<Vec<_>, String>>()?;
                Some(crate::listener::tls::server_config(certs)?)
            } else {
                None
            };
            let head_guard = Arc::new(GuardSettings {
                mode: l.desync_mitigation,
                max_header_bytes: l.limits.max_header_bytes,
                max_uri_bytes: l.limits.max_uri_bytes,
                max_body_bytes: l.limits.max_body_bytes,
                header_timeout: l.limits.header_timeout.get(),
                body_timeout: l.limits.body_timeout.get(),
                idle_timeout: l.idle_timeout().get(),
                classes: metrics.desync_counters(&l.name),
            });
            listeners.push(ListenerPlan {
                name: l.name.clone(),
                protocol: l.protocol,
                router: Router::new(rules, plan(&l.default_action)?),
                tls,
                limits: l.limits.clone(),
                zone: l.zone.clone(),
                ip_rules: IpRules::new(&l.allow, &l.deny),
                connections: guard.connections(&l.name),
                rate_limit: l.rate_limit.as_ref().map(|r| guard.rate_limit(&l.name, r.per_ip, r.burst)),
                rule_rate_limits: l
                    .rules
                    .iter()
                    .filter_map(|rule| {
                        let r = rule.rate_limit.as_ref()?;
                        let key = format!("{}#{}", l.name, rule.priority);
                        Some((rule.priority, guard.rate_limit(&key, r.per_ip, r.burst)))
                    })
                    .collect(),
                proxy_protocol: l.proxy_protocol,
                idle_timeout: l.idle_timeout().get(),
                guard: head_guard,
                metrics: ListenerMetrics {
                    active_connections: metrics.active_connections.get_or_create(&listener_label(&l.name)).clone(),
                    new_connections: metrics.new_connections.get_or_create(&listener_label(&l.name)).clone(),
                    processed_bytes: metrics.processed_bytes.get_or_create(&listener_label(&l.name)).clone(),
                    requests_by_group: target_groups
                        .iter()
                        .map(|g| forwards_to(l, &g.name).then(|| metrics.request_counters(&l.name, &g.name)))
                        .collect(),
                    requests_answered: metrics.request_counters(&l.name, ""),
                },
            });
        }
        let group_metrics = target_groups
            .iter()
            .map(|g| {
                let label = GroupLabel { target_group: g.name.clone() };
                GroupMetrics {
                    response_seconds: metrics.target_response_seconds.get_or_create(&label).clone(),
                    connection_errors: metrics.target_connection_errors.get_or_create(&label).clone(),
                }
            })
            .collect();
        Ok(Snapshot { config: Arc::new(config), listeners, target_groups, group_metrics })
    }

    /// The index of target group `name`.
    pub fn group_index(&self, name: &str) -> Option<usize> {
        self.target_groups.iter().position(|g| g.name == name)
    }

    /// The listener named `name`.
    pub fn listener(&self, name: &str) -> Option<&ListenerPlan> {
        self.listeners.iter().find(|l| l.name == name)
    }
}

fn listener_label(name: &str) -> ListenerLabel {
    ListenerLabel { listener: name.to_string() }
}

/// Whether any action of listener `l` forwards to group `name`.
fn forwards_to(l: &config::Listener, name: &str) -> bool {
    let names = |a: &Action| match a {
        Action::Forward { target_group, target_groups } => {
            target_group.as_deref() == Some(name) || target_groups.iter().any(|g| g.name == name)
        }
        _ => false,
    };
    names(&l.default_action) || l.rules.iter().any(|r| names(&r.action))
}
