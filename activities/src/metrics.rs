//! The activities' Prometheus metrics, on the worker's metrics endpoint (the SDK's meter):
//! - `stateful_api_requests{host, outcome}`: requests by outcome (`ok`, `notFound`, `unauthorized`,
//!   `malformedToken`, `transient`, `rejected`, `network`, `badBody`, `circuitOpen`, `refused`,
//!   `badInput`, `resultTooLarge`);
//! - `stateful_api_request_latency{host}`: request latency (a histogram);
//! - `stateful_api_circuit_open{host}`: 1 while the host's circuit is not closed (open, or half-open
//!   with its probe in flight), else 0 (updated at each request to that host).
//!
//! Every series also carries `namespace` and `task_queue` ([`Metrics::with_scope`]: the worker's
//! namespace and the task queue the activities are polled from; one pair per SDK worker, so bounded).
//! The `host` label is bounded: the first [`MAX_TRACKED_HOSTS`] hosts seen are labelled by name, any
//! other under [`OTHER_HOST`] (whose circuit gauge is not recorded: it would mix many hosts), so that
//! URLs with ever new hosts cannot grow the metrics without end.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::breaker::MAX_TRACKED_HOSTS;

use temporalio_common::telemetry::metrics::{
    CoreMeter, Counter, Gauge, HistogramDuration, MetricAttributes, MetricKeyValue,
    MetricParameters, NewAttributes,
};

/// The `host` label of hosts beyond the label cap.
pub const OTHER_HOST: &str = "other";

/// The hosts labelled by name: at most `cap`; the others are [`OTHER_HOST`].
#[derive(Debug)]
pub struct HostLabels {
    cap: usize,
    named: Mutex<HashSet<String>>,
}

impl HostLabels {
    /// At most `cap` hosts named.
    pub fn new(cap: usize) -> HostLabels {
        HostLabels {
            cap,
            named: Mutex::new(HashSet::new()),
        }
    }

    /// The label of `host`: its name while there is room (and ever after), else [`OTHER_HOST`].
    pub fn label(&self, host: &str) -> String {
        let mut named = self.named.lock().unwrap_or_else(|p| p.into_inner());
        if named.contains(host) {
            return host.to_string();
        }
        if named.len() < self.cap && host != OTHER_HOST {
            named.insert(host.to_string());
            return host.to_string();
        }
        OTHER_HOST.to_string()
    }

    /// How many hosts are labelled by name.
    pub fn named(&self) -> usize {
        self.named.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// The instruments.
#[derive(Clone)]
pub struct Metrics {
    meter: Arc<dyn CoreMeter>,
    requests: Counter,
    latency: HistogramDuration,
    circuit: Gauge,
    hosts: Arc<HostLabels>,
    /// Labels on every series: `namespace` and `task_queue`, when set.
    scope: Vec<(&'static str, String)>,
}

impl Metrics {
    /// Instruments on `meter`.
    pub fn new(meter: Arc<dyn CoreMeter>) -> Metrics {
        let p = |name: &'static str, description: &'static str| {
            MetricParameters::builder()
                .name(name)
                .description(description)
                .build()
        };
        Metrics {
            requests: meter.counter(p(
                "stateful_api_requests",
                "Requests to entity APIs, by host and outcome",
            )),
            latency: meter.histogram_duration(p(
                "stateful_api_request_latency",
                "Latency of requests to entity APIs",
            )),
            circuit: meter.gauge(p(
                "stateful_api_circuit_open",
                "1 while the circuit breaker of an API host is open",
            )),
            meter,
            hosts: Arc::new(HostLabels::new(MAX_TRACKED_HOSTS)),
            scope: Vec::new(),
        }
    }

    /// Labels every series with `namespace` and `task_queue` (those of the SDK worker that runs
    /// these activities).
    pub fn with_scope(mut self, namespace: &str, task_queue: &str) -> Metrics {
        self.scope = vec![
            ("namespace", namespace.to_string()),
            ("task_queue", task_queue.to_string()),
        ];
        self
    }

    fn attributes(&self, labels: &[(&'static str, &str)]) -> MetricAttributes {
        let kvs: Vec<MetricKeyValue> = self
            .scope
            .iter()
            .map(|(k, v)| MetricKeyValue::new(*k, v.clone()))
            .chain(
                labels
                    .iter()
                    .map(|(k, v)| MetricKeyValue::new(*k, v.to_string())),
            )
            .collect();
        self.meter.new_attributes(NewAttributes::from(kvs))
    }

    /// Labels at most `cap` hosts by name (default [`MAX_TRACKED_HOSTS`]).
    pub fn with_host_cap(mut self, cap: usize) -> Metrics {
        self.hosts = Arc::new(HostLabels::new(cap));
        self
    }

    /// Records one request.
    pub fn request(&self, host: &str, outcome: &str, took: Option<Duration>, circuit_open: bool) {
        let host = self.hosts.label(host);
        let host = host.as_str();
        let host_only = self.attributes(&[("host", host)]);
        let with_outcome = self.attributes(&[("host", host), ("outcome", outcome)]);
        self.requests.add(1, &with_outcome);
        if let Some(t) = took {
            self.latency.record(t, &host_only);
        }
        if host != OTHER_HOST {
            self.circuit.record(u64::from(circuit_open), &host_only);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_labels_are_bounded() {
        let l = HostLabels::new(3);
        for i in 0..2_000 {
            l.label(&format!("h{i}"));
        }
        assert_eq!(l.named(), 3);
        assert_eq!(l.label("h1"), "h1");
        assert_eq!(l.label("h1999"), OTHER_HOST);
        let l = HostLabels::new(3);
        assert_eq!(l.label(OTHER_HOST), OTHER_HOST);
        assert_eq!(l.named(), 0);
    }
}
