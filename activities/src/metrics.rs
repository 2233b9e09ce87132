//! The activities' Prometheus metrics, on the worker's metrics endpoint (the SDK's meter):
//! - `stateful_api_requests{host, outcome}`: requests by outcome (`ok`, `notFound`, `unauthorized`,
//!   `transient`, `rejected`, `network`, `badBody`, `circuitOpen`, `badInput`);
//! - `stateful_api_request_latency{host}`: request latency (a histogram);
//! - `stateful_api_circuit_open{host}`: 1 while the host's circuit is open, else 0 (updated at each
//!   request to that host).

use std::sync::Arc;
use std::time::Duration;

use temporalio_common::telemetry::metrics::{
    CoreMeter, Counter, Gauge, HistogramDuration, MetricKeyValue, MetricParameters, NewAttributes,
};

/// The instruments.
#[derive(Clone)]
pub struct Metrics {
    meter: Arc<dyn CoreMeter>,
    requests: Counter,
    latency: HistogramDuration,
    circuit: Gauge,
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
        }
    }

    /// Records one request.
    pub fn request(&self, host: &str, outcome: &str, took: Option<Duration>, circuit_open: bool) {
        let host_only = self
            .meter
            .new_attributes(NewAttributes::from([MetricKeyValue::new(
                "host",
                host.to_string(),
            )]));
        let with_outcome = self.meter.new_attributes(NewAttributes::from([
            MetricKeyValue::new("host", host.to_string()),
            MetricKeyValue::new("outcome", outcome.to_string()),
        ]));
        self.requests.add(1, &with_outcome);
        if let Some(t) = took {
            self.latency.record(t, &host_only);
        }
        self.circuit.record(u64::from(circuit_open), &host_only);
    }
}
