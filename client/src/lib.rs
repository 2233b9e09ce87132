//! The client side of StatefulWorkflows, shared by the worker, the starter and the tests:
//!
//! - [`connect`]: connection settings (Temporal's environment variables and profile file, with flags
//!   that override them) and connecting;
//! - [`codec`]: the payload codec: zstd compression, then AES-256-GCM encryption (and its keys);
//! - [`ops`]: operations on StatefulWorkflows by name and JSON (start, signal, query, update, walking a
//!   tree).

#![deny(missing_docs)]

pub mod codec;
pub mod connect;
pub mod ops;
