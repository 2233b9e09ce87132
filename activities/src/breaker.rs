//! A circuit breaker per API host, shared by every activity of a worker: after `threshold`
//! consecutive failures, calls to that host fail fast for `cool_down`; then one call is let through,
//! and its outcome closes the circuit or opens it again.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::HttpError;

#[derive(Debug, Clone, Copy, Default)]
struct HostState {
    failures: u32,
    open_until: Option<Instant>,
}

/// Per-host circuits.
#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    cool_down: Duration,
    hosts: Mutex<BTreeMap<String, HostState>>,
}

impl Breaker {
    /// A breaker that opens after `threshold` consecutive failures, for `cool_down`.
    pub fn new(threshold: u32, cool_down: Duration) -> Breaker {
        Breaker {
            threshold: threshold.max(1),
            cool_down,
            hosts: Mutex::new(BTreeMap::new()),
        }
    }

    /// Fails fast while the host's circuit is open.
    pub fn check(&self, host: &str) -> Result<(), HttpError> {
        self.check_at(host, Instant::now())
    }

    fn check_at(&self, host: &str, now: Instant) -> Result<(), HttpError> {
        let hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(until) = hosts.get(host).and_then(|h| h.open_until)
            && now < until
        {
            return Err(HttpError::CircuitOpen {
                host: host.to_string(),
                retry_in: until - now,
            });
        }
        Ok(())
    }

    /// Records the outcome of a call.
    pub fn record(&self, host: &str, ok: bool) {
        self.record_at(host, ok, Instant::now())
    }

    fn record_at(&self, host: &str, ok: bool, now: Instant) {
        let mut hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
        let h = hosts.entry(host.to_string()).or_default();
        if ok {
            *h = HostState::default();
        } else {
            h.failures += 1;
            if h.failures >= self.threshold {
                h.open_until = Some(now + self.cool_down);
            }
        }
    }

    /// True while the host's circuit is open.
    pub fn is_open(&self, host: &str) -> bool {
        self.check(host).is_err()
    }

    /// Hosts whose circuit is open now (for metrics and status).
    pub fn open_hosts(&self) -> Vec<String> {
        let now = Instant::now();
        let hosts = self.hosts.lock().unwrap_or_else(|p| p.into_inner());
        hosts
            .iter()
            .filter(|(_, h)| h.open_until.is_some_and(|u| u > now))
            .map(|(k, _)| k.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_repeated_failures_and_closes_after_a_success() {
        let b = Breaker::new(3, Duration::from_secs(30));
        let t0 = Instant::now();
        for _ in 0..2 {
            b.record_at("h", false, t0);
        }
        assert!(b.check_at("h", t0).is_ok());
        b.record_at("h", false, t0);
        match b.check_at("h", t0 + Duration::from_secs(10)) {
            Err(HttpError::CircuitOpen { retry_in, .. }) => {
                assert_eq!(retry_in, Duration::from_secs(20))
            }
            other => panic!("{other:?}"),
        }
        assert!(b.check_at("other", t0).is_ok());
        assert!(
            b.check_at("h", t0 + Duration::from_secs(31)).is_ok(),
            "half-open after the cool-down"
        );
        b.record_at("h", true, t0 + Duration::from_secs(31));
        assert!(b.check_at("h", t0 + Duration::from_secs(31)).is_ok());
    }
}
