//! Changes (what a signal or update asks for) and change sets (what actually changed).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use crate::error::Error;
use crate::normalize::{Entities, EntityRef, Row};

/// The stamp of a write: a logical time (a hybrid clock: never behind the workflow's time in
/// milliseconds, always ahead of every stamp the store has seen) and the id of the workflow where the write
/// was made. Stamps are totally ordered, `(time, origin)`; the larger one wins (last-writer-wins).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Stamp {
    /// Logical time.
    pub time: u64,
    /// Where the write was made (a workflow id, `api`, ...).
    pub origin: Arc<str>,
}

impl Stamp {
    /// Builds a stamp.
    pub fn new(time: u64, origin: &str) -> Stamp {
        Stamp {
            time,
            origin: Arc::from(origin),
        }
    }
}

impl fmt::Display for Stamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.time, self.origin)
    }
}

// On the wire a stamp is the pair `[time, "origin"]`.
impl Serialize for Stamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        (self.time, &*self.origin).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Stamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let (time, origin): (u64, String) = Deserialize::deserialize(d)?;
        Ok(Stamp {
            time,
            origin: Arc::from(origin),
        })
    }
}

/// How the fields of an update are combined with the stored entity (chrono-forge's strategies).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Strategy {
    /// Shallow merge per entity; creates missing entities (default).
    #[default]
    #[serde(rename = "$merge")]
    Merge,
    /// Replace the whole entity (fields not given are removed); creates missing entities.
    #[serde(rename = "$replace")]
    Replace,
    /// Set the given fields of an existing entity.
    #[serde(rename = "$set")]
    Set,
    /// Remove the given fields (their values are ignored) of an existing entity.
    #[serde(rename = "$unset")]
    Unset,
    /// Append to array fields of an existing entity (a non-array value appends one item).
    #[serde(rename = "$push")]
    Push,
    /// Prepend to array fields of an existing entity.
    #[serde(rename = "$unshift")]
    Unshift,
    /// `[[start, deleteCount, items...], ...]` per array field of an existing entity, as JavaScript's
    /// `Array.prototype.splice`.
    #[serde(rename = "$splice")]
    Splice,
}

impl Strategy {
    /// The wire name (`$merge`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Merge => "$merge",
            Strategy::Replace => "$replace",
            Strategy::Set => "$set",
            Strategy::Unset => "$unset",
            Strategy::Push => "$push",
            Strategy::Unshift => "$unshift",
            Strategy::Splice => "$splice",
        }
    }
}

impl FromStr for Strategy {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Ok(match s.strip_prefix('$').unwrap_or(s) {
            "merge" => Strategy::Merge,
            "replace" => Strategy::Replace,
            "set" => Strategy::Set,
            "unset" => Strategy::Unset,
            "push" => Strategy::Push,
            "unshift" => Strategy::Unshift,
            "splice" => Strategy::Splice,
            _ => return Err(Error::UnknownStrategy(s.to_string())),
        })
    }
}

/// One field write: a value (`None` removes the field) and its stamp.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldWrite {
    /// New value; `None` removes the field.
    pub value: Option<Value>,
    /// Stamp of the write.
    pub stamp: Stamp,
}

/// Explicitly stamped writes, as exchanged between copies of the same data (the content of a change set).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Writes {
    /// Field writes per entity.
    pub fields: BTreeMap<EntityRef, BTreeMap<String, FieldWrite>>,
    /// Entity deletions and their stamps.
    pub deletes: BTreeMap<EntityRef, Stamp>,
}

impl Writes {
    /// True when there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty() && self.deletes.is_empty()
    }

    fn stamps_mut(&mut self) -> impl Iterator<Item = &mut Stamp> {
        self.fields
            .values_mut()
            .flat_map(|f| f.values_mut().map(|w| &mut w.stamp))
            .chain(self.deletes.values_mut())
            // The id field's placeholder stamp (never stamped) stays as it is.
            .filter(|s| s.time != 0 || !s.origin.is_empty())
    }

    /// Clamps every stamp's time to `max_time` (a stamp from another copy may not be set so far
    /// ahead that every later write loses to it).
    pub fn clamp(&mut self, max_time: u64) {
        for s in self.stamps_mut() {
            if s.time > max_time {
                s.time = max_time;
            }
        }
    }

    /// Replaces every stamp by `stamp`: the writes of a sender whose stamps are not trusted are
    /// ordered by their arrival, as unstamped ones are.
    pub fn restamp(&mut self, stamp: &Stamp) {
        for s in self.stamps_mut() {
            *s = stamp.clone();
        }
    }

    /// The longest origin its stamps name (bytes).
    pub fn longest_origin(&self) -> usize {
        self.fields
            .values()
            .flat_map(|f| f.values().map(|w| w.stamp.origin.len()))
            .chain(self.deletes.values().map(|s| s.origin.len()))
            .max()
            .unwrap_or(0)
    }
}

/// A change asked of the store.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Write normalized entities with a strategy.
    Upsert {
        /// Normalized entities whose fields are written.
        entities: Entities,
        /// How to combine them with what is stored.
        strategy: Strategy,
    },
    /// Delete entities.
    Delete {
        /// Entities to delete.
        refs: BTreeSet<EntityRef>,
    },
    /// Replace the whole state.
    SetState {
        /// The new state.
        entities: Entities,
    },
    /// Apply already-stamped writes (from another copy), last-writer-wins.
    Writes(Writes),
}

/// How an entity changed in a change set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    /// It did not exist before.
    Added,
    /// Some of its fields changed.
    Updated,
    /// It no longer exists.
    Deleted,
}

/// A changed field: its new value (`None`: removed), the stamp of the write, and where the write came
/// from (the workflow that sent it, `client`, `api`, or the workflow itself).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldChange {
    /// New value; `None` when removed.
    pub value: Option<Value>,
    /// Stamp of the winning write.
    pub stamp: Stamp,
    /// Where it came from.
    pub source: Arc<str>,
}

/// A deletion in a change set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Deletion {
    /// Stamp of the delete.
    pub stamp: Stamp,
    /// Where it came from.
    pub source: Arc<str>,
}

/// How one entity changed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntityChange {
    /// Added, updated or deleted.
    pub kind: ChangeKind,
    /// Changed fields (all fields when added; none when deleted).
    pub fields: BTreeMap<String, FieldChange>,
    /// Set when the entity was deleted in this change set (possibly then recreated by newer writes).
    pub deletion: Option<Deletion>,
    /// The row before the change set, when the entity was deleted.
    pub previous: Option<Row>,
}

impl EntityChange {
    /// True if a field whose name is in `fields` changed.
    pub fn touches_any<'a>(&self, mut fields: impl Iterator<Item = &'a String>) -> bool {
        fields.any(|f| self.fields.contains_key(f))
    }
}

/// What a batch of changes did to the store, entity by entity.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ChangeSet {
    /// Changed entities.
    pub entities: BTreeMap<EntityRef, EntityChange>,
}

impl ChangeSet {
    /// True when nothing changed.
    pub fn is_empty(&self) -> bool {
        self.entities.is_empty()
    }

    /// Number of changed entities.
    pub fn len(&self) -> usize {
        self.entities.len()
    }

    /// The distinct sources of the changes.
    pub fn sources(&self) -> BTreeSet<Arc<str>> {
        let mut out = BTreeSet::new();
        for c in self.entities.values() {
            for f in c.fields.values() {
                out.insert(f.source.clone());
            }
            if let Some(d) = &c.deletion {
                out.insert(d.source.clone());
            }
        }
        out
    }

    /// The stamped writes that reproduce this change set on a copy that had the same state before.
    pub fn to_writes(&self) -> Writes {
        let mut w = Writes::default();
        for (r, c) in &self.entities {
            if let Some(d) = &c.deletion {
                w.deletes.insert(r.clone(), d.stamp.clone());
            }
            if !c.fields.is_empty() {
                w.fields.insert(
                    r.clone(),
                    c.fields
                        .iter()
                        .map(|(k, f)| {
                            (
                                k.clone(),
                                FieldWrite {
                                    value: f.value.clone(),
                                    stamp: f.stamp.clone(),
                                },
                            )
                        })
                        .collect(),
                );
            }
        }
        w
    }

    /// The part of this change set that concerns the given entities.
    pub fn restricted_to<'a>(&self, refs: impl IntoIterator<Item = &'a EntityRef>) -> ChangeSet {
        let mut out = ChangeSet::default();
        for r in refs {
            if let Some(c) = self.entities.get(r) {
                out.entities.insert(r.clone(), c.clone());
            }
        }
        out
    }
}
