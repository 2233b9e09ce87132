//! The workflow's status.

use serde::{Deserialize, Serialize};

/// The workflow's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Applying changes and their effects.
    #[default]
    Running,
    /// Changes are recorded; their effects wait for `resume`.
    Paused,
    /// Ended by the `cancel` signal or a Temporal cancellation request.
    Cancelled,
    /// Ended because its entity was deleted, or by the `status` signal.
    Completed,
}

impl Status {
    /// The status as the wire spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Paused => "paused",
            Status::Cancelled => "cancelled",
            Status::Completed => "completed",
        }
    }

    /// True once the workflow is ending.
    pub fn is_terminal(self) -> bool {
        matches!(self, Status::Cancelled | Status::Completed)
    }
}
