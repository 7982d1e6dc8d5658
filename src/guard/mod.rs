//! The guard: what stops bad requests at the balancer — address rules, connection limits,
//! rate limits, and the desync classification of request heads.

pub mod chunked;
pub mod connection_limits;
pub mod head;
pub mod http1_stream;
pub mod ip_rules;
pub mod rate_limit;
pub mod reject_log;
pub mod state;

use std::net::IpAddr;

use crate::snapshot::ListenerPlan;
use crate::state::State;

/// Decides, before reading a byte, whether a new connection from `client` may stay: the
/// listener's address rules, then its connection limits. A refused connection is counted and
/// logged; the returned permit holds the connection's place until dropped.
pub fn admit_connection(state: &State, listener: &ListenerPlan, client: IpAddr) -> Option<connection_limits::Permit> {
    if !listener.ip_rules.admits(client) {
        state.reject(&listener.name, "ip_denied", client);
        return None;
    }
    let limits = &listener.limits;
    match listener.connections.admit(client, limits.max_connections, limits.max_connections_per_ip) {
        Ok(permit) => Some(permit),
        Err(refusal) => {
            state.reject(&listener.name, refusal.reason(), client);
            None
        }
    }
}
