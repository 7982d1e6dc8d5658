//! The metric registry every part shares, named as CloudWatch's ELB metrics in Prometheus
//! conventions. The hot path holds pre-made handles (atomics, per worker for what each
//! request counts); only a scrape walks the registry.

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

mod per_worker;

pub use per_worker::{WorkerCounter, WorkerHistogram};

/// `{listener}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ListenerLabel {
    pub listener: String,
}

/// `{target_group}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GroupLabel {
    pub target_group: String,
}

/// `{listener, target_group, code_class}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub listener: String,
    pub target_group: String,
    pub code_class: &'static str,
}

/// `{code}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CodeLabel {
    pub code: u16,
}

/// `{worker}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WorkerLabel {
    pub worker: usize,
}

/// `{listener, reason}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RejectLabels {
    pub listener: String,
    pub reason: &'static str,
}

/// Every metric ballast exports.
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, WorkerCounter>,
    pub target_response_seconds: Family<GroupLabel, WorkerHistogram>,
    pub active_connections: Family<ListenerLabel, Gauge>,
    pub new_connections: Family<ListenerLabel, WorkerCounter>,
    pub processed_bytes: Family<ListenerLabel, WorkerCounter>,
    pub healthy_targets: Family<GroupLabel, Gauge>,
    pub unhealthy_targets: Family<GroupLabel, Gauge>,
    pub rejected_requests: Family<RejectLabels, Counter>,
    pub tls_handshake_errors: Counter,
    pub target_connection_errors: Family<GroupLabel, Counter>,
    pub elb_responses: Family<CodeLabel, Counter>,
    pub desync_requests: Family<ClassLabels, WorkerCounter>,
    pub worker_connections: Family<WorkerLabel, Gauge>,
}

/// `{listener, class}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClassLabels {
    pub listener: String,
    pub class: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let m = Metrics {
            requests: Family::default(),
            target_response_seconds: Family::default(),
            active_connections: Family::default(),
            new_connections: Family::default(),
            processed_bytes: Family::default(),
            healthy_targets: Family::default(),
            unhealthy_targets: Family::default(),
            rejected_requests: Family::default(),
            tls_handshake_errors: Counter::default(),
            target_connection_errors: Family::default(),
            elb_responses: Family::default(),
            desync_requests: Family::default(),
            worker_connections: Family::default(),
            registry: Registry::default(),
        };
        // Counter names get `_total` appended by the encoder.
        registry.register(
            "ballast_requests",
            "Requests answered, by listener, target group and status class",
            m.requests.clone(),
        );
        registry.register(
            "ballast_target_response_seconds",
            "Time from sending a request to a target to its response head",
            m.target_response_seconds.clone(),
        );
        registry.register("ballast_active_connections", "Client connections open now", m.active_connections.clone());
        registry.register("ballast_new_connections", "Client connections accepted", m.new_connections.clone());
        registry.register(
            "ballast_processed_bytes",
            "Bytes received from and sent to clients",
            m.processed_bytes.clone(),
        );
        registry.register("ballast_healthy_targets", "Targets taking traffic", m.healthy_targets.clone());
        registry.register(
            "ballast_unhealthy_targets",
            "Targets failing their health checks",
            m.unhealthy_targets.clone(),
        );
        registry.register(
            "ballast_rejected_requests",
            "Requests refused by the guard, by reason",
            m.rejected_requests.clone(),
        );
        registry.register("ballast_tls_handshake_errors", "TLS handshakes that failed", m.tls_handshake_errors.clone());
        registry.register(
            "ballast_target_connection_errors",
            "Connections to targets that failed or broke",
            m.target_connection_errors.clone(),
        );
        registry.register(
            "ballast_elb_responses",
            "Responses the balancer made itself (redirects, fixed responses, errors)",
            m.elb_responses.clone(),
        );
        registry.register(
            "ballast_desync_requests",
            "HTTP/1 requests by desync class (compliant, acceptable, ambiguous, severe)",
            m.desync_requests.clone(),
        );
        registry.register(
            "ballast_worker_connections",
            "Client connections each worker thread serves now",
            m.worker_connections.clone(),
        );
        Metrics { registry, ..m }
    }
}

impl Metrics {
    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        encode(&mut text, &self.registry)?;
        Ok(text)
    }

    /// The request counters of one listener and group, by status class 1xx..5xx.
    pub fn request_counters(&self, listener: &str, target_group: &str) -> [WorkerCounter; 5] {
        ["1xx", "2xx", "3xx", "4xx", "5xx"].map(|code_class| {
            self.requests
                .get_or_create(&RequestLabels {
                    listener: listener.to_string(),
                    target_group: target_group.to_string(),
                    code_class,
                })
                .clone()
        })
    }
}

impl Metrics {
    /// The desync class counters of one listener, in the order compliant, acceptable,
    /// ambiguous, severe.
    pub fn desync_counters(&self, listener: &str) -> [WorkerCounter; 4] {
        ["compliant", "acceptable", "ambiguous", "severe"].map(|class| {
            self.desync_requests.get_or_create(&ClassLabels { listener: listener.to_string(), class }).clone()
        })
    }
}

/// Holds a gauge one higher while alive (an open connection, a flow).
#[derive(Debug)]
pub struct GaugeGuard(Gauge);

impl GaugeGuard {
    /// Raises `gauge` by one until the guard is dropped.
    pub fn inc(gauge: Gauge) -> Self {
        gauge.inc();
        GaugeGuard(gauge)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// The index of a status' class in `request_counters`.
pub fn class_index(status: u16) -> usize {
    usize::from((status / 100).clamp(1, 5) - 1)
}
