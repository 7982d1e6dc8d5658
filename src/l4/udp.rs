//! `udp` listeners: a table of flows keyed by client address and port. Each flow keeps one
//! target and its own socket to it; replies go back from the listener's address. Flows end
//! after the idle timeout; the table is bounded, and a full table drops new flows, counted.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::UdpSocket;

use crate::balance::flow_hash;
use crate::metrics::{GaugeGuard, RejectLabels};
use crate::routing::ActionPlan;
use crate::state::State;
use crate::target_group::{uptime_ms, OutstandingGuard, PickRequest};

/// The largest datagram ballast forwards.
const MAX_DATAGRAM: usize = 65_535;
/// At most one "flow table full" log line per this many milliseconds.
const FULL_LOG_EVERY_MS: u64 = 10_000;

struct Flow {
    socket: Arc<UdpSocket>,
    last: AtomicU64,
}

type Flows = Arc<Mutex<HashMap<SocketAddr, Arc<Flow>>>>;

/// Receives datagrams for the `udp` listener `name` until the process ends.
pub async fn serve(socket: UdpSocket, state: Arc<State>, name: String) {
    let socket = Arc::new(socket);
    let local = socket.local_addr().unwrap_or_else(|_| SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)));
    let flows: Flows = Arc::default();
    let last_full_log = AtomicU64::new(0);
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let (n, client) = match socket.recv_from(&mut buf).await {
            Ok(received) => received,
            Err(e) => {
                // ICMP errors surface here on some systems; the listener carries on.
                tracing::debug!(listener = %name, error = %e, "receive failed");
                continue;
            }
        };
        let admitted = state.snapshot().listener(&name).is_some_and(|l| l.ip_rules.admits(client.ip()));
        if !admitted {
            state.reject(&name, "ip_denied", client.ip());
            continue;
        }
        let existing = flows.lock().unwrap_or_else(|p| p.into_inner()).get(&client).cloned();
        let flow = match existing {
            Some(flow) => flow,
            None => match open_flow(&state, &name, &socket, local, client, &flows, &last_full_log).await {
                Some(flow) => flow,
                None => continue,
            },
        };
        flow.last.store(uptime_ms(), Ordering::Relaxed);
        if let Err(e) = flow.socket.send(&buf[..n]).await {
            tracing::debug!(listener = %name, error = %e, "send to target failed");
        }
    }
}

/// Starts a flow for a new client: picks its target and starts relaying replies.
async fn open_flow(
    state: &Arc<State>,
    name: &str,
    listener: &Arc<UdpSocket>,
    local: SocketAddr,
    client: SocketAddr,
    flows: &Flows,
    last_full_log: &AtomicU64,
) -> Option<Arc<Flow>> {
    let snapshot = state.snapshot();
    let plan = snapshot.listener(name)?;
    let max_flows = snapshot.config.listeners.iter().find(|l| l.name == name).map_or(65_536, |l| l.limits.max_flows);
    if flows.lock().unwrap_or_else(|p| p.into_inner()).len() >= max_flows {
        let labels = RejectLabels { listener: name.to_string(), reason: "flow_table_full" };
        state.metrics.rejected_requests.get_or_create(&labels).inc();
        let now = uptime_ms();
        let last = last_full_log.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= FULL_LOG_EVERY_MS || last == 0 {
            last_full_log.store(now.max(1), Ordering::Relaxed);
            tracing::warn!(listener = %name, max_flows, "the UDP flow table is full: new flows are dropped");
        }
        return None;
    }
    let ActionPlan::Forward(forward) = plan.router.default_action() else { return None };
    let group = forward.pick_group().and_then(|i| snapshot.target_groups.get(i))?;
    let flow_key = flow_hash(client, local, 17);
    let target = group.pick(PickRequest { tried: &[], zone: plan.zone.as_deref(), sticky: None, flow: flow_key })?;
    let bind: SocketAddr = if target.authority.starts_with('[') {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    };
    let socket = UdpSocket::bind(bind).await.ok()?;
    if let Err(e) = socket.connect(&target.authority).await {
        tracing::debug!(target = %target.address, error = %e, "cannot reach target");
        return None;
    }
    let flow = Arc::new(Flow { socket: Arc::new(socket), last: AtomicU64::new(uptime_ms()) });
    flows.lock().unwrap_or_else(|p| p.into_inner()).insert(client, Arc::clone(&flow));
    plan.metrics.new_connections.inc();
    let gauge = GaugeGuard::inc(plan.metrics.active_connections.clone());
    let idle = plan.idle_timeout;
    let outstanding = target.stats.start_request();
    tokio::spawn(relay_replies(
        Arc::clone(&flow),
        Arc::clone(listener),
        client,
        Arc::clone(flows),
        idle,
        outstanding,
        gauge,
    ));
    Some(flow)
}

/// Sends the target's replies to the client until the flow is idle or the target leaves.
async fn relay_replies(
    flow: Arc<Flow>,
    listener: Arc<UdpSocket>,
    client: SocketAddr,
    flows: Flows,
    idle: Duration,
    outstanding: OutstandingGuard,
    gauge: GaugeGuard,
) {
    let closing = outstanding.stats().closing().clone();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let quiet = Duration::from_millis(uptime_ms().saturating_sub(flow.last.load(Ordering::Relaxed)));
        if quiet >= idle {
            break;
        }
        tokio::select! {
            received = flow.socket.recv(&mut buf) => match received {
                Ok(n) => {
                    flow.last.store(uptime_ms(), Ordering::Relaxed);
                    let _ = listener.send_to(&buf[..n], client).await;
                }
                // A refused port (ICMP) and the like: the flow waits for its timeout.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            },
            _ = tokio::time::sleep(idle - quiet) => {}
            _ = closing.cancelled() => break,
        }
    }
    flows.lock().unwrap_or_else(|p| p.into_inner()).remove(&client);
    drop(gauge);
    drop(outstanding);
}
