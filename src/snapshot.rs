//! The running configuration: one immutable value built from a validated config, swapped
//! whole on reload.

use std::sync::Arc;

use rustls::ServerConfig;

use crate::config::{self, Action, Config, ListenerProtocol};
use crate::routing::{ActionPlan, Condition, ForwardPlan, RedirectTemplate, Router};
use crate::target_group::{TargetGroup, TargetRegistry};

/// What every request of one config generation reads.
#[derive(Debug)]
pub struct Snapshot {
    pub config: Arc<Config>,
    pub listeners: Vec<ListenerPlan>,
    pub target_groups: Vec<TargetGroup>,
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
}

impl Snapshot {
    /// Builds the running state from a validated config; counters come from `registry`.
    pub fn build(config: Config, registry: &TargetRegistry) -> Result<Snapshot, String> {
        let target_groups: Vec<TargetGroup> = config
            .target_groups
            .iter()
            .map(|g| TargetGroup::new(g, registry))
            .collect();
        let group_index = |name: &str| {
            target_groups
                .iter()
                .position(|g| g.name == name)
                .ok_or_else(|| format!("no target group is named `{name}`"))
        };
        let plan = |action: &Action| -> Result<ActionPlan, String> {
            Ok(match action {
                Action::Forward {
                    target_group,
                    target_groups,
                } => {
                    let groups = match target_group {
                        Some(name) => vec![(group_index(name)?, 1)],
                        None => target_groups
                            .iter()
                            .map(|g| Ok((group_index(&g.name)?, g.weight)))
                            .collect::<Result<_, String>>()?,
                    };
                    ActionPlan::Forward(ForwardPlan::new(&groups))
                }
                Action::Redirect {
                    protocol,
                    host,
                    port,
                    path,
                    query,
                    status,
                } => ActionPlan::Redirect(RedirectTemplate {
                    protocol: protocol.clone(),
                    host: host.clone(),
                    port: port.clone(),
                    path: path.clone(),
                    query: query.clone(),
                    status: *status,
                }),
                Action::FixedResponse {
                    status,
                    body,
                    content_type,
                } => ActionPlan::FixedResponse {
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
                .map(|r| {
                    Ok((
                        r.priority,
                        Condition::compile(&r.conditions),
                        plan(&r.action)?,
                    ))
                })
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
            listeners.push(ListenerPlan {
                name: l.name.clone(),
                protocol: l.protocol,
                router: Router::new(rules, plan(&l.default_action)?),
                tls,
                limits: l.limits.clone(),
                zone: l.zone.clone(),
            });
        }
        Ok(Snapshot {
            config: Arc::new(config),
            listeners,
            target_groups,
        })
    }

    /// The listener named `name`.
    pub fn listener(&self, name: &str) -> Option<&ListenerPlan> {
        self.listeners.iter().find(|l| l.name == name)
    }
}
