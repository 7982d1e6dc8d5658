//! Runs the active checks: one task per target, started and stopped as targets come and go,
//! moving each target through ELB's states by its group's thresholds.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::Sender;
use tokio::task::JoinHandle;

use super::{probe, FailReason, Matcher, ProbeOutcome};
use crate::balance::random_u64;
use crate::state::State;
use crate::target_group::{Reason, TargetState};

/// How far the first check of a target is spread, so a fleet is not checked in one burst.
const FIRST_CHECK_JITTER_MS: u64 = 200;

/// Keeps one check task per registered, non-draining target of the current snapshot. The
/// returned future ends when every target of the first snapshot has had its first check, so
/// the balancer can start serving with its targets' health known.
pub fn supervise(state: Arc<State>) -> impl std::future::Future<Output = ()> {
    let (first_round_tx, mut first_round_rx) = tokio::sync::mpsc::channel::<()>(1);
    let at_start_targets: usize = state.snapshot().target_groups.iter().map(|g| g.targets.len()).sum();
    tokio::spawn(async move {
        let mut changes = state.subscribe();
        let mut tasks: HashMap<(String, String), JoinHandle<()>> = HashMap::new();
        let mut at_start = true;
        loop {
            let snapshot = state.snapshot();
            let mut live = HashSet::new();
            for group in &snapshot.target_groups {
                for target in &group.targets {
                    if target.stats.state() == TargetState::Draining {
                        continue;
                    }
                    let key = (group.name.clone(), target.address.clone());
                    live.insert(key.clone());
                    tasks.entry(key).or_insert_with(|| {
                        tokio::spawn(check_target(
                            Arc::clone(&state),
                            group.name.clone(),
                            target.address.clone(),
                            at_start.then(|| first_round_tx.clone()),
                        ))
                    });
                }
            }
            tasks.retain(|key, task| {
                let keep = live.contains(key) && !task.is_finished();
                if !keep {
                    task.abort();
                }
                keep
            });
            drop(snapshot);
            at_start = false;
            if changes.changed().await.is_err() {
                return;
            }
        }
    });
    async move {
        for _ in 0..at_start_targets {
            if first_round_rx.recv().await.is_none() {
                return;
            }
        }
    }
}

fn reason_of(fail: FailReason) -> Reason {
    match fail {
        FailReason::Timeout => Reason::Timeout,
        FailReason::ResponseCodeMismatch(_) => Reason::ResponseCodeMismatch,
        FailReason::ConnectionFailed => Reason::FailedHealthChecks,
    }
}

/// Checks one target every `interval` until it leaves. A target that was in the file when
/// ballast started serves after its first pass; any other needs `healthy_threshold` passes.
async fn check_target(state: Arc<State>, group: String, address: String, mut at_start: Option<Sender<()>>) {
    // Targets known at start are all checked at once, so serving starts with their health
    // known; later ones are spread out.
    if at_start.is_none() {
        tokio::time::sleep(Duration::from_millis(random_u64() % FIRST_CHECK_JITTER_MS)).await;
    }
    let (mut passes, mut fails) = (0u32, 0u32);
    let mut last_seen: Option<TargetState> = None;
    let mut first_life = at_start.is_some();
    loop {
        let snapshot = state.snapshot();
        let Some(g) = snapshot.target_groups.iter().find(|g| g.name == group) else {
            return;
        };
        let Some(t) = g.target(&address) else { return };
        let mut check = g.settings.health_check.clone();
        check.protocol = Some(g.settings.health_check_protocol());
        let stats = Arc::clone(&t.stats);
        let authority = match check.port.parse::<u16>() {
            Ok(port) => {
                let host = &t.authority[..t.authority.rfind(':').unwrap_or(t.authority.len())];
                format!("{host}:{port}")
            }
            Err(_) => t.authority.clone(),
        };
        let host_header = t.authority.clone();
        drop(snapshot);
        let now = stats.state();
        if now == TargetState::Draining {
            return;
        }
        if last_seen.is_some_and(|s| s != now) {
            // Something else moved the target (a passive mark): count afresh from here.
            (passes, fails) = (0, 0);
            first_life = false;
        }
        let matcher =
            Matcher::parse(&check.matcher).unwrap_or_else(|_| Matcher::parse("200").expect("200 is a matcher"));
        match probe(&check, &matcher, &authority, &host_header).await {
            ProbeOutcome::Pass => {
                passes += 1;
                fails = 0;
                let needed = if first_life && now == TargetState::Initial { 1 } else { check.healthy_threshold };
                if now != TargetState::Healthy && passes >= needed {
                    stats.set(TargetState::Healthy, Reason::None);
                    tracing::info!(target_group = %group, target = %address, "target healthy");
                }
            }
            ProbeOutcome::Fail(fail) => {
                fails += 1;
                passes = 0;
                if now == TargetState::Unhealthy || fails >= check.unhealthy_threshold {
                    if now != TargetState::Unhealthy {
                        tracing::warn!(target_group = %group, target = %address, reason = fail.code(), "target unhealthy");
                    }
                    stats.set(TargetState::Unhealthy, reason_of(fail));
                }
            }
        }
        last_seen = Some(stats.state());
        if let Some(first_round) = at_start.take() {
            let _ = first_round.send(()).await;
        }
        tokio::time::sleep(check.interval.get()).await;
    }
}
