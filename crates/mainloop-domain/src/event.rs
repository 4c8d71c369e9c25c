//! The vocabulary of the per-user event stream (server-sent event names).

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use utoipa::ToSchema;

/// The name of an event in the log; clients switch on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
pub enum EventName {
    /// A piece of an assistant reply as it streams.
    #[serde(rename = "chat.delta")]
    ChatDelta,
    /// A complete stored message (user, assistant or event).
    #[serde(rename = "chat.message")]
    ChatMessage,
    /// A task was created or changed.
    #[serde(rename = "task.updated")]
    TaskUpdated,
    /// An inbox item was created, read or resolved.
    #[serde(rename = "inbox.updated")]
    InboxUpdated,
    /// A worker's agent produced output.
    #[serde(rename = "task.output")]
    TaskOutput,
    /// A chat turn failed (the model was unreachable, for instance).
    #[serde(rename = "chat.error")]
    ChatError,
    /// The user's pause or budgets changed.
    #[serde(rename = "usage.updated")]
    UsageUpdated,
    /// The user's notes changed (the whole list follows).
    #[serde(rename = "notes.updated")]
    NotesUpdated,
}

impl EventName {
    pub const ALL: [Self; 8] = [
        Self::ChatDelta,
        Self::ChatMessage,
        Self::TaskUpdated,
        Self::InboxUpdated,
        Self::TaskOutput,
        Self::ChatError,
        Self::UsageUpdated,
        Self::NotesUpdated,
    ];

    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ChatDelta => "chat.delta",
            Self::ChatMessage => "chat.message",
            Self::TaskUpdated => "task.updated",
            Self::InboxUpdated => "inbox.updated",
            Self::TaskOutput => "task.output",
            Self::ChatError => "chat.error",
            Self::UsageUpdated => "usage.updated",
            Self::NotesUpdated => "notes.updated",
        }
    }
}

impl fmt::Display for EventName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|n| n.as_str() == s)
            .ok_or_else(|| format!("unknown event name '{s}'"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_match_serde() {
        for n in EventName::ALL {
            assert_eq!(n.as_str().parse::<EventName>().unwrap(), n);
            assert_eq!(serde_json::to_value(n).unwrap(), n.as_str());
        }
        assert!("chat.unknown".parse::<EventName>().is_err());
    }
}
