//! A circuit breaker per API host, shared by every activity of a worker.
//!
//! - **Closed**: calls go through; `threshold` consecutive failures open the circuit.
//! - **Open**: calls fail fast (`CircuitOpen`, retryable, with the time left) for `cool_down`.
//! - **Half-open**: after the cool-down, exactly one call (the probe) goes through; the others keep
//!   failing fast. The probe's success closes the circuit; its failure opens it again for a whole
//!   cool-down. A probe that ends without an answer from the host (cancelled, refused before it was
//!   sent) lets the next call probe; a probe that has not answered within the probe lease (the
//!   cool-down, or [`Breaker::with_probe_lease`]) is given up and the next call probes.
//!
//! Only what says the host is unwell counts as a failure (the caller decides, see
//! `HttpError::counts_against_host`): connection errors, timeouts, 408, 429 and 5xx. Any other answer
//! from the host (2xx, 401/403, 404, other 4xx, a body that is not JSON) is a success: the host is up.
//!
//! The state is bounded: at most [`MAX_TRACKED_HOSTS`] hosts (or [`Breaker::with_capacity`]) are
//! tracked; a host whose circuit is closed with no failure is not tracked at all, and when the table
//! is full the least recently used closed host is forgotten (or, when every tracked host is open, the
//! least recently used of them).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::HttpError;

/// How many hosts a breaker tracks at most (and how many hosts the API metrics label by name).
pub const MAX_TRACKED_HOSTS: usize = 1_000;

/// A host's circuit, as [`Breaker::circuit`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Circuit {
    /// Calls go through.
    Closed,
    /// Calls fail fast; after the cool-down, the next call probes.
    Open,
    /// One probe is in flight; the other calls fail fast until it answers.
    HalfOpen,
}

#[derive(Debug, Clone, Copy)]
enum State {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probe: u64, lease_until: Instant },
}

#[derive(Debug)]
struct Entry {
    state: State,
    used: u64,
}

#[derive(Debug, Default)]
struct Table {
    hosts: HashMap<String, Entry>,
    clock: u64,
    probes: u64,
}

/// Per-host circuits.
#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    cool_down: Duration,
    probe_lease: Duration,
    capacity: usize,
    table: Mutex<Table>,
}

/// Leave to make one call to a host: tell its outcome with [`Permit::success`] or
/// [`Permit::failure`]. Dropped without either (the call was cancelled or never sent), it changes
/// nothing, except that a probe's slot is freed for the next call.
#[must_use = "a permit records the call's outcome"]
#[derive(Debug)]
pub struct Permit<'a> {
    breaker: &'a Breaker,
    host: String,
    probe: Option<u64>,
    done: bool,
}

impl Permit<'_> {
    /// True when this call is the half-open circuit's probe.
    pub fn is_probe(&self) -> bool {
        self.probe.is_some()
    }

    /// The host answered (closes a half-open circuit, resets the failure count).
    pub fn success(self) {
        self.finish(Some(true), Instant::now());
    }

    /// The host failed (counts towards opening; re-opens a half-open circuit).
    pub fn failure(self) {
        self.finish(Some(false), Instant::now());
    }

    fn finish(mut self, ok: Option<bool>, now: Instant) {
        self.done = true;
        self.breaker.settle(&self.host, self.probe, ok, now);
    }

    /// `success` when `ok`, else `failure`.
    pub fn record(self, ok: bool) {
        if ok { self.success() } else { self.failure() }
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.done && self.probe.is_some() {
            self.breaker
                .settle(&self.host, self.probe, None, Instant::now());
        }
    }
}

impl Breaker {
    /// A breaker that opens after `threshold` consecutive failures, for `cool_down`, tracking at most
    /// [`MAX_TRACKED_HOSTS`] hosts.
    pub fn new(threshold: u32, cool_down: Duration) -> Breaker {
        Breaker {
            threshold: threshold.max(1),
            cool_down,
            probe_lease: cool_down,
            capacity: MAX_TRACKED_HOSTS,
            table: Mutex::new(Table::default()),
        }
    }

    /// Tracks at most `capacity` hosts (at least 1).
    pub fn with_capacity(mut self, capacity: usize) -> Breaker {
        self.capacity = capacity.max(1);
        self
    }

    /// How long a probe may take before it is given up and the next call probes (default: the
    /// cool-down). The HTTP activities set it to their request timeout, plus a second.
    pub fn with_probe_lease(mut self, lease: Duration) -> Breaker {
        self.probe_lease = lease;
        self
    }

    /// The most hosts tracked.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Leave to call `host`, or `CircuitOpen` while its circuit is open, or half-open with a probe
    /// in flight.
    pub fn admit(&self, host: &str) -> Result<Permit<'_>, HttpError> {
        self.admit_at(host, Instant::now())
    }

    fn admit_at(&self, host: &str, now: Instant) -> Result<Permit<'_>, HttpError> {
        let mut t = self.lock();
        t.clock += 1;
        let clock = t.clock;
        let next_probe = t.probes + 1;
        let Some(e) = t.hosts.get_mut(host) else {
            return Ok(self.permit(host, None));
        };
        e.used = clock;
        let refuse = |until: Instant| HttpError::CircuitOpen {
            host: host.to_string(),
            retry_in: until.saturating_duration_since(now),
        };
        match e.state {
            State::Closed { .. } => Ok(self.permit(host, None)),
            State::Open { until } if now < until => Err(refuse(until)),
            State::HalfOpen { lease_until, .. } if now < lease_until => Err(refuse(lease_until)),
            State::Open { .. } | State::HalfOpen { .. } => {
                e.state = State::HalfOpen {
                    probe: next_probe,
                    lease_until: now + self.probe_lease,
                };
                t.probes = next_probe;
                Ok(self.permit(host, Some(next_probe)))
            }
        }
    }

    fn permit(&self, host: &str, probe: Option<u64>) -> Permit<'_> {
        Permit {
            breaker: self,
            host: host.to_string(),
            probe,
            done: false,
        }
    }

    /// A call's outcome: `Some(ok)`, or `None` for a probe that ended without an answer.
    fn settle(&self, host: &str, probe: Option<u64>, ok: Option<bool>, now: Instant) {
        let mut t = self.lock();
        let state = t.hosts.get(host).map(|e| e.state);
        match (probe, state, ok) {
            // The probe of the current half-open round decides.
            (Some(id), Some(State::HalfOpen { probe, .. }), _) if id == probe => match ok {
                Some(true) => {
                    t.hosts.remove(host);
                }
                Some(false) => self.set(
                    &mut t,
                    host,
                    State::Open {
                        until: now + self.cool_down,
                    },
                ),
                // No answer: the next call probes.
                None => self.set(&mut t, host, State::Open { until: now }),
            },
            // A stale probe (given up, or its host forgotten) decides nothing.
            (Some(_), _, _) | (None, _, None) => {}
            // A call made while closed: a success resets the count, a failure adds to it.
            (None, None | Some(State::Closed { .. }), Some(true)) => {
                t.hosts.remove(host);
            }
            (None, None, Some(false)) => self.fail(&mut t, host, 0, now),
            (None, Some(State::Closed { failures }), Some(false)) => {
                self.fail(&mut t, host, failures, now)
            }
            // The circuit opened meanwhile: only its probe decides.
            (None, Some(State::Open { .. } | State::HalfOpen { .. }), Some(_)) => {}
        }
    }

    fn fail(&self, t: &mut Table, host: &str, failures: u32, now: Instant) {
        let failures = failures.saturating_add(1);
        let state = if failures >= self.threshold {
            State::Open {
                until: now + self.cool_down,
            }
        } else {
            State::Closed { failures }
        };
        self.set(t, host, state);
    }

    /// Sets a host's state, making room for it when it is new.
    fn set(&self, t: &mut Table, host: &str, state: State) {
        t.clock += 1;
        let used = t.clock;
        if let Some(e) = t.hosts.get_mut(host) {
            e.state = state;
            e.used = used;
            return;
        }
        while t.hosts.len() >= self.capacity {
            let victim = t
                .hosts
                .iter()
                .filter(|(_, e)| matches!(e.state, State::Closed { .. }))
                .min_by_key(|(_, e)| e.used)
                .or_else(|| t.hosts.iter().min_by_key(|(_, e)| e.used))
                .map(|(k, _)| k.clone());
            match victim {
                Some(k) => {
                    t.hosts.remove(&k);
                }
                None => break,
            }
        }
        t.hosts.insert(host.to_string(), Entry { state, used });
    }

    /// The host's circuit now (an open circuit whose cool-down is over stays `Open` until a probe
    /// answers).
    pub fn circuit(&self, host: &str) -> Circuit {
        match self.lock().hosts.get(host).map(|e| e.state) {
            None | Some(State::Closed { .. }) => Circuit::Closed,
            Some(State::Open { .. }) => Circuit::Open,
            Some(State::HalfOpen { .. }) => Circuit::HalfOpen,
        }
    }

    /// True while the host's circuit is not closed (open, or half-open with a probe in flight).
    pub fn is_open(&self, host: &str) -> bool {
        self.circuit(host) != Circuit::Closed
    }

    /// Hosts whose circuit is not closed (for metrics and status), sorted.
    pub fn open_hosts(&self) -> Vec<String> {
        let t = self.lock();
        let mut v: Vec<String> = t
            .hosts
            .iter()
            .filter(|(_, e)| !matches!(e.state, State::Closed { .. }))
            .map(|(k, _)| k.clone())
            .collect();
        v.sort();
        v
    }

    /// How many hosts are tracked now (at most [`Breaker::capacity`]).
    pub fn tracked_hosts(&self) -> usize {
        self.lock().hosts.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn fail(b: &Breaker, host: &str, now: Instant) {
        b.admit_at(host, now)
            .expect("admitted")
            .finish(Some(false), now);
    }

    fn refused(b: &Breaker, host: &str, now: Instant) -> Duration {
        match b.admit_at(host, now) {
            Err(HttpError::CircuitOpen { retry_in, .. }) => retry_in,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn opens_after_repeated_failures_then_lets_one_probe_through() {
        let b = Breaker::new(3, 30 * S);
        let t0 = Instant::now();
        for _ in 0..2 {
            fail(&b, "h", t0);
        }
        assert!(b.admit_at("h", t0).is_ok());
        fail(&b, "h", t0);
        assert_eq!(refused(&b, "h", t0 + 10 * S), 20 * S);
        assert!(b.admit_at("other", t0).is_ok());
        // After the cool-down: one probe, the others still fail fast.
        let t1 = t0 + 31 * S;
        let probe = b.admit_at("h", t1).expect("the probe");
        assert!(probe.is_probe());
        assert_eq!(b.circuit("h"), Circuit::HalfOpen);
        assert_eq!(refused(&b, "h", t1), 30 * S, "until the probe's lease ends");
        probe.finish(Some(true), t1);
        assert_eq!(b.circuit("h"), Circuit::Closed);
        assert!(!b.admit_at("h", t1).unwrap().is_probe());
        assert_eq!(b.tracked_hosts(), 0, "a healthy host takes no room");
    }

    #[test]
    fn a_failed_probe_reopens_for_a_whole_cool_down_and_a_lost_one_frees_its_slot() {
        let b = Breaker::new(1, 30 * S).with_probe_lease(10 * S);
        let t0 = Instant::now();
        fail(&b, "h", t0);
        let t1 = t0 + 30 * S;
        b.admit_at("h", t1).unwrap().finish(Some(false), t1 + S);
        assert_eq!(b.circuit("h"), Circuit::Open);
        assert_eq!(refused(&b, "h", t1 + 2 * S), 29 * S);
        // A probe dropped without an outcome (cancelled): the next call probes.
        let t2 = t1 + 31 * S;
        drop(b.admit_at("h", t2).unwrap());
        assert!(b.admit_at("h", t2).unwrap().is_probe());
        // A probe that never answers is given up after its lease; its late outcome decides nothing.
        let t3 = t2 + 2 * S;
        let slow = b.admit_at("h", t3).unwrap();
        assert_eq!(refused(&b, "h", t3 + 9 * S), S);
        let next = b.admit_at("h", t3 + 10 * S).unwrap();
        assert!(next.is_probe());
        slow.finish(Some(true), t3 + 11 * S);
        assert_eq!(b.circuit("h"), Circuit::HalfOpen);
        next.finish(Some(false), t3 + 12 * S);
        assert_eq!(b.circuit("h"), Circuit::Open);
    }

    #[test]
    fn calls_admitted_before_the_circuit_opened_do_not_decide() {
        let b = Breaker::new(2, 30 * S);
        let t0 = Instant::now();
        let late = b.admit_at("h", t0).unwrap();
        let late_fail = b.admit_at("h", t0).unwrap();
        fail(&b, "h", t0);
        fail(&b, "h", t0);
        late.finish(Some(true), t0 + S);
        late_fail.finish(Some(false), t0 + S);
        assert_eq!(refused(&b, "h", t0 + S), 29 * S);
    }

    #[test]
    fn the_table_is_bounded_and_forgets_closed_hosts_first() {
        let b = Breaker::new(2, 30 * S).with_capacity(10);
        let t0 = Instant::now();
        fail(&b, "open", t0);
        fail(&b, "open", t0);
        for i in 0..2_000 {
            fail(&b, &format!("h{i}"), t0);
            assert!(b.tracked_hosts() <= 10);
        }
        assert_eq!(b.tracked_hosts(), 10);
        assert_eq!(
            b.open_hosts(),
            ["open"],
            "an open circuit outlives closed ones"
        );
        // Only open circuits: the least recently used goes.
        for i in 0..20 {
            let h = format!("o{i}");
            fail(&b, &h, t0);
            fail(&b, &h, t0);
        }
        assert_eq!(b.tracked_hosts(), 10);
        assert_eq!(b.open_hosts().len(), 10);
        assert!(!b.open_hosts().contains(&"open".to_string()));
    }
}
