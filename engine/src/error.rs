//! Typed errors of the engine. Every malformed input is one of these; nothing panics.

use std::fmt;

/// What went wrong, with enough context (file, entity, field, path) to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The schema file could not be read or does not describe a valid schema.
    #[error("schema {source_name}{}: {message}", Location(entity, field))]
    Schema {
        /// File name (or `<inline>`).
        source_name: String,
        /// Entity the problem is in, when known.
        entity: Option<String>,
        /// Field the problem is in, when known.
        field: Option<String>,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// The entity name is not in the schema.
    #[error("unknown entity `{name}` (the schema has: {known})")]
    UnknownEntity {
        /// The name that was asked for.
        name: String,
        /// Comma-separated list of the schema's entities.
        known: String,
    },
    /// A value in the input does not fit the schema.
    #[error("{entity} at {path}: {message}")]
    BadData {
        /// Entity being normalized.
        entity: String,
        /// Where in the input, e.g. `data.listings[2]`.
        path: String,
        /// What is wrong.
        message: String,
    },
    /// A strategy name that is not supported.
    #[error(
        "unknown strategy `{0}` (expected one of $merge, $replace, $set, $unset, $push, $unshift, $splice)"
    )]
    UnknownStrategy(String),
    /// The strategy needs an existing entity and there is none.
    #[error("{strategy} on {entity} `{id}`: the entity does not exist (use $merge to create it)")]
    EntityNotFound {
        /// Strategy used.
        strategy: String,
        /// Entity name.
        entity: String,
        /// Entity id.
        id: String,
    },
    /// An array operation on a field that holds something else.
    #[error("{strategy} on {entity} `{id}` field `{field}`: expected an array, found {found}")]
    NotAnArray {
        /// Strategy used.
        strategy: String,
        /// Entity name.
        entity: String,
        /// Entity id.
        id: String,
        /// Field name.
        field: String,
        /// JSON type found.
        found: String,
    },
    /// A malformed `$splice` argument.
    #[error("$splice on {entity} `{id}` field `{field}`: {message}")]
    BadSplice {
        /// Entity name.
        entity: String,
        /// Entity id.
        id: String,
        /// Field name.
        field: String,
        /// What is wrong.
        message: String,
    },
    /// A message (signal or update payload) that does not have the expected shape.
    #[error("{0}")]
    BadInput(String),
}

struct Location<'a>(&'a Option<String>, &'a Option<String>);

impl fmt::Display for Location<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.0, self.1) {
            (Some(e), Some(field)) => write!(f, ", entity `{e}`, field `{field}`"),
            (Some(e), None) => write!(f, ", entity `{e}`"),
            _ => Ok(()),
        }
    }
}

/// Result alias of the engine.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The JSON type name of a value, for messages.
pub fn json_type(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}
