//! The inbox: messages waiting for the next batch, and the tickets of acknowledged updates with their
//! results once their batch ran.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde_json::{Value, json};

use crate::msg::{Msg, Signal};

/// Queued messages and update tickets.
#[derive(Debug, Default)]
pub struct Inbox {
    queue: VecDeque<Msg>,
    next_ticket: u64,
    /// Acknowledged updates whose handler has not yet taken its result.
    open: BTreeSet<u64>,
    results: BTreeMap<u64, Result<Value, String>>,
}

impl Inbox {
    /// Queues a message.
    pub fn push(&mut self, msg: Msg) {
        self.queue.push_back(msg);
    }

    /// Queues an acknowledged update; returns the ticket its handler waits on.
    pub fn push_update(&mut self, signal: Signal, payload: Result<Value, String>) -> u64 {
        self.next_ticket += 1;
        let ticket = self.next_ticket;
        self.open.insert(ticket);
        self.queue.push_back(Msg::Wire {
            signal,
            payload,
            ticket: Some(ticket),
        });
        ticket
    }

    /// Takes every queued message, in arrival order.
    pub fn drain(&mut self) -> Vec<Msg> {
        self.queue.drain(..).collect()
    }

    /// Puts messages carried from a previous run before those that already arrived in this one.
    pub fn prepend(&mut self, carried: Vec<Msg>) {
        let arrived = std::mem::take(&mut self.queue);
        self.queue = carried.into();
        self.queue.extend(arrived);
    }

    /// Takes what a next run inherits: every queued message but acknowledged updates (their callers
    /// are answered by this run's end).
    pub fn carry(&mut self) -> Vec<Msg> {
        self.queue
            .drain(..)
            .filter(|m| m.ticket().is_none())
            .collect()
    }

    /// The queued messages, in order.
    pub fn iter(&self) -> impl Iterator<Item = &Msg> {
        self.queue.iter()
    }

    /// What [`Inbox::carry`] would take, left in place (to measure the hand-over first).
    pub fn peek_carry(&self) -> Vec<Msg> {
        self.queue
            .iter()
            .filter(|m| m.ticket().is_none())
            .cloned()
            .collect()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Records the result of the update behind `ticket`.
    pub fn answer(&mut self, ticket: u64, result: Result<Value, String>) {
        self.results.insert(ticket, result);
    }

    /// True once the batch that held `ticket` ran.
    pub fn answered(&self, ticket: u64) -> bool {
        self.results.contains_key(&ticket)
    }

    /// The result of an update, once its batch ran.
    pub fn take_result(&mut self, ticket: u64) -> Option<Result<Value, String>> {
        self.open.remove(&ticket);
        self.results.remove(&ticket)
    }

    /// True when every acknowledged update has taken its result.
    pub fn idle(&self) -> bool {
        self.open.is_empty()
    }

    /// The `pendingChanges` query: signal names only (payloads may hold secrets).
    pub fn pending(&self) -> Value {
        json!({
            "count": self.queue.len(),
            "signals": self.queue.iter().map(Msg::name).collect::<Vec<_>>(),
        })
    }
}
