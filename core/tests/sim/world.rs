//! The simulated world: workflows (one decision core each), the network between them, and the
//! steps that deliver, process and act.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use stateful_core::input::StartInput;
use stateful_core::{
    ChildEvent, ChildEventKind, ChildOutcome, Core, Described, Effect, Msg, Pending, Signal,
};
use stateful_engine::Schema;

use crate::{Rng, SCHEMA};

impl Node {
    /// This run of this workflow: what its watchers and pending starts belong to.
    pub(crate) fn run_id(&self) -> u64 {
        self.life * 1_000_000 + u64::from(self.run)
    }
}

/// Something in flight.
#[derive(Debug, Clone)]
pub(crate) enum Envelope {
    /// A signal from a workflow (or a client: `from` is empty).
    Signal {
        from: String,
        to: String,
        name: String,
        payload: Value,
        child_generation: Option<u32>,
    },
    /// A child outcome for the run `run` of `to`.
    Event {
        to: String,
        run: u64,
        ev: ChildEvent,
    },
    /// A cancellation request.
    Cancel { from: String, to: String },
}

pub(crate) struct Node {
    pub(crate) core: Core,
    /// Unique per workflow started (a restarted child is a new life); continue-as-new keeps it.
    pub(crate) life: u64,
    pub(crate) run: u32,
    /// The workflow (and its run, and the child's generation) that watches this one's result.
    pub(crate) watcher: Option<(String, u64, u32)>,
}

pub(crate) struct World {
    pub(crate) schema: Schema,
    pub(crate) schema_json: Value,
    pub(crate) nodes: BTreeMap<String, Node>,
    pub(crate) net: Vec<Envelope>,
    pub(crate) now: u64,
    pub(crate) rng: Rng,
    pub(crate) root: String,
    pub(crate) next_token: u32,
    pub(crate) next_id: u32,
    pub(crate) next_life: u64,
    pub(crate) listings: Vec<String>,
    pub(crate) problems: Vec<String>,
    /// The workflow task counter (each wave of effects is one task).
    pub(crate) task: u64,
    /// Runs that continued as new because they had as many children as they may.
    pub(crate) full_runs: u64,
}

fn signal_payload(v: &Value) -> Result<Value, String> {
    Ok(v.clone())
}

impl World {
    pub(crate) fn new(seed: u64) -> World {
        let schema = Schema::parse(SCHEMA, "sim").unwrap();
        let schema_json = schema.to_json();
        let mut w = World {
            schema,
            schema_json,
            nodes: BTreeMap::new(),
            net: Vec::new(),
            now: 1_000,
            rng: Rng(seed),
            root: "User-u".into(),
            next_token: 1,
            next_id: 0,
            next_life: 0,
            listings: Vec::new(),
            problems: Vec::new(),
            task: 0,
            full_runs: 0,
        };
        let n = 1 + w.rng.below(3);
        let listings: Vec<Value> = (0..n)
            .map(|_| {
                let l = w.fresh("l");
                w.listings.push(l.clone());
                let photos: Vec<Value> = (0..w.rng.below(3))
                    .map(|_| json!({"id": w.fresh("p"), "listing": l}))
                    .collect();
                json!({"id": l, "user": "u", "photos": photos})
            })
            .collect();
        let mut input = json!({"id": "u", "entityName": "User", "apiToken": "t0", "schema": w.schema_json,
                           "data": {"id": "u", "name": "root", "listings": listings}});
        // Half the worlds pace their effects tightly: a run starts one to three children, and a
        // few signals and cancellations are in flight at once.
        // (Their own generator: the worlds with default limits stay what they were.)
        let mut pace = Rng(seed ^ 0x9e37_79b9_7f4a_7c15);
        if pace.chance(50) {
            input["limits"] = json!({
                "maxChildrenPerRun": 1 + pace.below(3),
                "maxPendingSignals": 1 + pace.below(4),
                "maxPendingCancels": 1 + pace.below(2),
                "maxTaskBytes": 10_000 + pace.below(5_000),
            });
        }
        let root = w.root.clone();
        w.start_node(&root, &input, None);
        w
    }

    pub(crate) fn fresh(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}{}", self.next_id)
    }

    pub(crate) fn start_node(
        &mut self,
        wid: &str,
        input: &Value,
        watcher: Option<(String, u64, u32)>,
    ) {
        let mut core = Core::default();
        // A worker of this release: a workflow found running under a child's id is verified
        // before it is adopted.
        core.set_verify_adoption(true);
        let parsed = StartInput::parse(input).expect("a start input the core made");
        core.start(
            parsed,
            self.schema.clone(),
            self.schema_json.clone(),
            wid.to_string(),
            self.now,
        )
        .expect("a start input the core made applies");
        let effects = core.initial_effects();
        self.next_life += 1;
        self.nodes.insert(
            wid.to_string(),
            Node {
                core,
                life: self.next_life,
                run: 0,
                watcher,
            },
        );
        self.execute(wid, effects);
    }

    /// A batch's effects join the workflow's outbox, and a first wave leaves.
    pub(crate) fn execute(&mut self, from: &str, effects: Vec<Effect>) {
        if let Some(node) = self.nodes.get_mut(from) {
            node.core.enqueue(effects);
        }
        self.pump(from);
    }

    /// What `wid` has in flight, as Temporal counts it: signals and cancellations not delivered,
    /// children of its current run not ended.
    pub(crate) fn pending_of(&self, wid: &str) -> Pending {
        let run = self.nodes.get(wid).map_or(0, Node::run_id);
        let mut p = Pending::default();
        for e in &self.net {
            match e {
                Envelope::Signal { from, .. } if from == wid => p.signals += 1,
                Envelope::Cancel { from, .. } if from == wid => p.cancels += 1,
                _ => {}
            }
        }
        p.children = self
            .nodes
            .values()
            .filter(|n| {
                n.watcher
                    .as_ref()
                    .is_some_and(|(w, r, _)| w == wid && *r == run)
            })
            .count();
        p
    }

    /// One wave of `wid`'s outbox (one workflow task).
    pub(crate) fn pump(&mut self, wid: &str) {
        let pending = self.pending_of(wid);
        self.task += 1;
        let task = self.task;
        let Some(node) = self.nodes.get_mut(wid) else {
            return;
        };
        let wave = node.core.release(pending, task);
        self.issue(wid, wave);
    }

    /// Before a run ends or hands over, the glue issues everything but child starts, wave by wave.
    pub(crate) fn flush(&mut self, wid: &str) {
        for _ in 0..10_000 {
            if self.nodes.get(wid).is_none_or(|n| n.core.outbox_settled()) {
                return;
            }
            let children = self.pending_of(wid).children;
            self.task += 1;
            let task = self.task;
            let node = self.nodes.get_mut(wid).expect("just seen");
            let wave = node.core.release(
                Pending {
                    children,
                    ..Pending::default()
                },
                task,
            );
            self.issue(wid, wave);
        }
        self.problems
            .push(format!("{wid}: the outbox does not drain"));
    }

    /// Effects become envelopes (starts happen at once; their confirmation travels).
    pub(crate) fn issue(&mut self, from: &str, effects: Vec<Effect>) {
        let run = self.nodes.get(from).map_or(0, Node::run_id);
        for e in effects {
            match e {
                Effect::Start {
                    workflow_id,
                    generation,
                    input,
                    ..
                } => {
                    let kind = if self.nodes.contains_key(&workflow_id) {
                        ChildEventKind::AlreadyRunning
                    } else {
                        self.start_node(
                            &workflow_id,
                            &input,
                            Some((from.to_string(), run, generation)),
                        );
                        ChildEventKind::Started
                    };
                    let ev = ChildEvent::new(
                        &workflow_id,
                        generation,
                        kind,
                        ChildOutcome::None,
                        String::new(),
                    );
                    self.net.push(Envelope::Event {
                        to: from.to_string(),
                        run,
                        ev,
                    });
                }
                Effect::Signal {
                    workflow_id,
                    name,
                    payload,
                    child_generation,
                } => {
                    let payload = payload.unwrap_or(Value::Null);
                    self.net.push(Envelope::Signal {
                        from: from.to_string(),
                        to: workflow_id,
                        name,
                        payload,
                        child_generation,
                    })
                }
                Effect::Cancel { workflow_id } => self.net.push(Envelope::Cancel {
                    from: from.to_string(),
                    to: workflow_id,
                }),
                // The `workflowType` local activity describes what runs now; its answer travels
                // like any outcome (the workflow may end before the answer is taken).
                Effect::Verify {
                    workflow_id,
                    generation,
                } => {
                    let running = self.nodes.contains_key(&workflow_id);
                    let answer = Described {
                        workflow_type: running.then(|| "StatefulWorkflow".to_string()),
                        running,
                        status: if running { "running" } else { "notFound" }.into(),
                    };
                    let ev = ChildEvent::verified(&workflow_id, generation, Ok(answer));
                    self.net.push(Envelope::Event {
                        to: from.to_string(),
                        run,
                        ev,
                    });
                }
            }
        }
    }

    pub(crate) fn client(&mut self, to: &str, name: &str, payload: Value) {
        self.net.push(Envelope::Signal {
            from: String::new(),
            to: to.to_string(),
            name: name.into(),
            payload,
            child_generation: None,
        });
    }

    /// Delivers one envelope to its workflow's inbox.
    pub(crate) fn deliver(&mut self, e: Envelope) {
        if std::env::var("SIM_TRACE").is_ok() {
            eprintln!("{} deliver {e:?}", self.now);
        }
        match e {
            Envelope::Signal {
                from,
                to,
                name,
                payload,
                child_generation,
            } => {
                let Some(node) = self.nodes.get_mut(&to) else {
                    if let Some(g) = child_generation {
                        let run = self.nodes.get(&from).map_or(0, Node::run_id);
                        let ev = ChildEvent::new(
                            &to,
                            g,
                            ChildEventKind::SignalFailed,
                            ChildOutcome::Gone,
                            "gone".into(),
                        );
                        self.net.push(Envelope::Event { to: from, run, ev });
                    }
                    return;
                };
                let signal =
                    Signal::from_name(&name).unwrap_or_else(|| panic!("unknown signal {name}"));
                node.core
                    .push(Msg::signal(signal, signal_payload(&payload)));
            }
            Envelope::Event { to, run, ev } => {
                if let Some(node) = self.nodes.get_mut(&to)
                    && node.run_id() == run
                {
                    node.core.push(Msg::Child(ev));
                } else if std::env::var("SIM_TRACE").is_ok() {
                    eprintln!("   (dropped: that run of {to} is over)");
                }
            }
            Envelope::Cancel { to, .. } => {
                if let Some(node) = self.nodes.get_mut(&to) {
                    node.core.push(Msg::TemporalCancel);
                }
            }
        }
    }

    /// One batch at `wid`; a workflow that ends tells its watcher.
    pub(crate) fn tick(&mut self, wid: &str) {
        let Some(node) = self.nodes.get_mut(wid) else {
            return;
        };
        if let Ok(watch) = std::env::var("SIM_WATCH")
            && let Some((e, id)) = watch.split_once('.')
        {
            eprintln!(
                "{} before tick {wid}: {watch} = {:?}",
                self.now,
                node.core.store().get(e, id)
            );
        }
        if std::env::var("SIM_WATCH_CHILDREN").is_ok_and(|w| w == wid) {
            eprintln!(
                "{} children of {wid}: {}",
                self.now,
                node.core.tree().children_info()
            );
        }
        let out = node.core.process(self.now);
        if std::env::var("SIM_TRACE").is_ok() {
            eprintln!(
                "{} tick {wid}: {} rejected {:?}, effects {:?}",
                self.now,
                out.changes.len(),
                out.rejected,
                out.effects
            );
            if std::env::var("SIM_CHANGES").is_ok() {
                eprintln!("   changes {:?}", out.changes);
            }
        }
        self.check_echo(wid, &out.effects, &out.changes);
        self.execute(wid, out.effects);
        self.end_if_terminal(wid);
    }

    pub(crate) fn end_if_terminal(&mut self, wid: &str) {
        let Some(node) = self.nodes.get(wid) else {
            return;
        };
        if !node.core.status().is_terminal() {
            return;
        }
        self.flush(wid);
        let node = self.nodes.remove(wid).expect("just seen");
        self.tell_watcher(wid, node.watcher, ChildOutcome::Completed);
    }

    pub(crate) fn tell_watcher(
        &mut self,
        wid: &str,
        watcher: Option<(String, u64, u32)>,
        outcome: ChildOutcome,
    ) {
        if let Some((parent, run, generation)) = watcher {
            let ev = ChildEvent::new(
                wid,
                generation,
                ChildEventKind::Ended,
                outcome,
                String::new(),
            );
            self.net.push(Envelope::Event {
                to: parent,
                run,
                ev,
            });
        }
    }

    /// Continue-as-new of `wid`: a last batch, then the outcomes of its starts, signals and
    /// children that are already in flight are handed to the next run (the glue waits for them
    /// before it hands over, and carries them in the inbox), and the next run starts from the
    /// carry-over.
    pub(crate) fn continue_as_new(&mut self, wid: &str) {
        if !self.nodes.contains_key(wid) {
            return;
        }
        self.tick(wid);
        self.flush(wid);
        let Some(node) = self.nodes.get(wid) else {
            return;
        };
        let run = node.run_id();
        let (mine, rest): (Vec<Envelope>, Vec<Envelope>) =
            std::mem::take(&mut self.net).into_iter().partition(
                |e| matches!(e, Envelope::Event { to, run: r, .. } if to == wid && *r == run),
            );
        self.net = rest;
        let node = self.nodes.get_mut(wid).expect("just seen");
        for e in mine {
            if let Envelope::Event { ev, .. } = e {
                node.core.push(Msg::Child(ev));
            }
        }
        let input = node.core.carry_input();
        let mut core = Core::default();
        core.set_verify_adoption(true);
        core.start(
            StartInput::parse(&input).expect("a carry-over the core made"),
            self.schema.clone(),
            self.schema_json.clone(),
            wid.to_string(),
            self.now,
        )
        .expect("a carry-over applies");
        let effects = core.initial_effects();
        node.core = core;
        node.run += 1;
        self.execute(wid, effects);
    }

    /// A child is terminated from outside (only while its watcher's run is current: a parent that
    /// continued as new no longer watches it).
    pub(crate) fn terminate(&mut self, wid: &str) {
        let Some(node) = self.nodes.get(wid) else {
            return;
        };
        let Some((parent, run, _)) = node.watcher.clone() else {
            return;
        };
        if self.nodes.get(&parent).is_none_or(|p| p.run_id() != run) {
            return;
        }
        let node = self.nodes.remove(wid).expect("just seen");
        self.tell_watcher(wid, node.watcher, ChildOutcome::Terminated);
    }

    /// One step of the world: deliver something (in any order), run a batch, or let a client act.
    pub(crate) fn step(&mut self, acting: bool) {
        self.now += self.rng.below(5) as u64;
        let r = self.rng.below(100);
        if !self.net.is_empty() && (r < 55 || !acting) {
            let i = self.rng.below(self.net.len());
            let e = self.net.swap_remove(i);
            self.deliver(e);
            // Several messages often land in one workflow task.
            if self.rng.chance(40) {
                return;
            }
        }
        // A run that has as many children as it may continues as new; an outbox sends its next
        // wave when room was made.
        let full: Vec<String> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.core.wants_new_run())
            .map(|(w, _)| w.clone())
            .collect();
        for wid in full {
            self.full_runs += 1;
            self.continue_as_new(&wid);
        }
        let waiting: Vec<String> = self
            .nodes
            .iter()
            .filter(|(_, n)| !n.core.outbox_empty())
            .map(|(w, _)| w.clone())
            .collect();
        if !waiting.is_empty() && self.rng.chance(30) {
            let wid = waiting[self.rng.below(waiting.len())].clone();
            self.pump(&wid);
        }
        let busy: Vec<String> = self
            .nodes
            .iter()
            .filter(|(_, n)| n.core.has_work())
            .map(|(w, _)| w.clone())
            .collect();
        if !busy.is_empty() && (r < 85 || !acting) {
            let wid = busy[self.rng.below(busy.len())].clone();
            self.tick(&wid);
        } else if acting {
            self.act();
        }
    }

    pub(crate) fn quiet(&self) -> bool {
        self.net.is_empty()
            && self
                .nodes
                .values()
                .all(|n| !n.core.has_work() && n.core.outbox_empty())
    }

    /// Runs `steps` steps with clients acting, then drains, resumes the root (a paused tree holds
    /// its changes back by design) and drains again.
    pub(crate) fn run(&mut self, steps: usize) -> Result<(), String> {
        for _ in 0..steps {
            self.step(true);
        }
        self.drain()?;
        let root = self.root.clone();
        self.client(&root, "resume", Value::Null);
        self.drain()?;
        self.check()
    }

    pub(crate) fn drain(&mut self) -> Result<(), String> {
        let mut left = 50_000;
        while !self.quiet() {
            if left == 0 {
                return Err(format!(
                    "no quiescence: {} messages in flight after the drain, e.g. {:?}",
                    self.net.len(),
                    self.net.first()
                ));
            }
            left -= 1;
            self.step(false);
        }
        Ok(())
    }
}
