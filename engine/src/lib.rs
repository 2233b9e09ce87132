//! The pure state engine of StatefulWorkflow: no Temporal, no I/O, deterministic, never panics on input.
//!
//! # Layout
//! - [`schema`]: entity schemas (chrono-forge's flat format and our extended one), loaded from YAML or JSON.
//! - [`hook`]: an entity's outbound change hooks (`onChange`).
//! - [`normalize`]: nested JSON ⇄ normalized `{Entity: {id: row}}`.
//! - [`change`]: changes, strategies, stamps, change sets.
//! - [`store`]: the stamped store; changes apply whole or not at all, last-writer-wins per field.
//! - [`slice`]: the part of a store reachable from an entity, and an index of many slices.
//! - [`plan`]: which children to run, and what each copy (child, parent, subscriber) must be sent.
//! - [`canonical`]: canonical JSON, checksums, token fingerprints.
//! - [`wire`]: the wire protocol's `update` / `delete` / `state` payloads turned into changes.
//!
//! # Example
//! ```
//! use stateful_engine::{Schema, Store, wire};
//! use serde_json::json;
//!
//! let schema = Schema::parse("User: {listings: [Listing]}\nListing: {user: User}", "inline").unwrap();
//! let mut store = Store::new();
//! let msg = wire::parse_update(&schema, "User", &json!({
//!     "data": {"id": "u1", "name": "Ann", "listings": [{"id": "l1", "user": "u1"}]}
//! })).unwrap();
//! let stamp = store.next_stamp(1_700_000_000_000, "User-u1");
//! let changes = store.apply(&schema, &msg.change, &stamp, "client").unwrap();
//! assert_eq!(changes.len(), 2);
//! assert_eq!(store.get("Listing", "l1").unwrap()["user"], json!("u1"));
//! ```
#![deny(missing_docs)]

pub mod canonical;
pub mod change;
pub mod error;
pub mod hook;
pub mod normalize;
pub mod plan;
pub mod schema;
pub mod slice;
pub mod store;
pub mod wire;

pub use canonical::{checksum, fingerprint};
pub use change::{
    Change, ChangeKind, ChangeSet, EntityChange, FieldChange, FieldWrite, Stamp, Strategy, Writes,
};
pub use error::{Error, Result};
pub use normalize::{Entities, EntityRef, Row};
pub use schema::{EntityDef, IdAttribute, Managed, OnNotFound, OnRemove, Relation, Schema};
pub use slice::{SliceDelta, SliceIndex};
pub use store::Store;
