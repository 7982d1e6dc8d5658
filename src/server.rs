//! Starting and running the balancer from a validated config.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::config::Config;
use crate::listener;
use crate::snapshot::Snapshot;
use crate::state::State;
use crate::target_group::TargetRegistry;

/// A running balancer: its shared state and where its listeners are bound.
pub struct Running {
    pub state: Arc<State>,
    /// `(listener name, scheme, bound address)`.
    pub listeners: Vec<(String, &'static str, SocketAddr)>,
}

/// Builds the state from `config`, binds every listener and starts serving.
pub async fn start(config: Config) -> Result<Running, String> {
    let registry = Arc::new(TargetRegistry::default());
    let snapshot = Snapshot::build(config, &registry)?;
    let state = Arc::new(State::new(snapshot, registry));
    let listeners = listener::start_all(&state).await?;
    for (name, scheme, addr) in &listeners {
        println!("ballast: listener {name} on {scheme}://{addr}");
    }
    Ok(Running { state, listeners })
}

/// Waits for SIGINT or SIGTERM.
pub async fn wait_for_shutdown() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let Ok(mut term) = signal(SignalKind::terminate()) else {
            let _ = tokio::signal::ctrl_c().await;
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
