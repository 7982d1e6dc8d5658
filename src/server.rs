//! Starting and running the balancer from a validated config, and following reloads.

use std::path::PathBuf;
use std::sync::Arc;

use crate::config::Config;
use crate::listener::Listeners;
use crate::state::State;

/// Builds the state from `config`, binds every listener and starts serving; listeners and
/// health checks then follow every new snapshot, and SIGHUP reloads `config_path`.
pub async fn start(config: Config, config_path: Option<PathBuf>) -> Result<Arc<State>, String> {
    // Listen for SIGHUP before anything is announced, so an early one reloads, not kills.
    #[cfg(unix)]
    let hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
    let state = State::new(config, config_path)?;
    // Serve once the first checks are in (bounded by the slowest check's timeout), so traffic
    // starts spread over every target that is up.
    let first_round = crate::health::supervise(Arc::clone(&state));
    let longest_check =
        state.snapshot().config.target_groups.iter().map(|g| g.health_check.timeout.get()).max().unwrap_or_default();
    let _ = tokio::time::timeout(longest_check + std::time::Duration::from_millis(500), first_round).await;
    let mut listeners = Listeners::default();
    announce(listeners.reconcile(&state)?);
    crate::admin::start(Arc::clone(&state)).await?;
    spawn_idle_expiry(Arc::clone(&state));
    let mut changes = state.subscribe();
    let follower = Arc::clone(&state);
    tokio::spawn(async move {
        while changes.changed().await.is_ok() {
            match listeners.reconcile(&follower) {
                Ok(started) => announce(started),
                Err(e) => {
                    tracing::error!(error = %e, "a listener of the new configuration cannot start")
                }
            }
        }
    });
    #[cfg(unix)]
    match hangup {
        Ok(hangup) => spawn_reload_on_hangup(hangup, Arc::clone(&state)),
        Err(e) => tracing::warn!(error = %e, "cannot listen for SIGHUP; reload through the admin API instead"),
    }
    Ok(state)
}

/// Closes idle target connections past their time, every few seconds.
fn spawn_idle_expiry(state: Arc<State>) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            every.tick().await;
            state.registry.expire_idle();
        }
    });
}

fn announce(started: Vec<(String, &'static str, std::net::SocketAddr)>) {
    for (name, scheme, addr) in started {
        println!("ballast: listener {name} on {scheme}://{addr}");
    }
}

#[cfg(unix)]
fn spawn_reload_on_hangup(mut hangup: tokio::signal::unix::Signal, state: Arc<State>) {
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            if let Err(e) = state.reload() {
                tracing::error!("reload refused, the running configuration is unchanged:\n{e}");
            }
        }
    });
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
