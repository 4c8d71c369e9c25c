//! Newtype identifiers, so a task id can never be passed where a user id is expected.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$meta:meta])* $name:ident, $prefix:literal) => {
        $(#[$meta])*
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// A new random, time-ordered id (UUIDv7), so ids sort roughly by creation.
            #[must_use]
            pub fn new_v7(ts: $crate::time::Timestamp) -> Self {
                let millis = u64::try_from(ts.as_millis()).unwrap_or_default();
                let ts = uuid::Timestamp::from_unix(
                    uuid::NoContext,
                    millis / 1000,
                    u32::try_from((millis % 1000) * 1_000_000).unwrap_or_default(),
                );
                Self(Uuid::new_v7(ts))
            }

            /// Eight hex digits from the random part (a v7 id starts with its timestamp,
            /// so its head is shared by everything created in the same minute): enough
            /// to tell tasks apart in branch names and logs.
            #[must_use]
            pub fn short(&self) -> String {
                let hex = self.0.simple().to_string();
                hex[hex.len() - 8..].to_owned()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", $prefix, self.0)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }

        impl utoipa::PartialSchema for $name {
            fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
                utoipa::openapi::ObjectBuilder::new()
                    .schema_type(utoipa::openapi::schema::Type::String)
                    .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                        utoipa::openapi::KnownFormat::Uuid,
                    )))
                    .into()
            }
        }
        impl utoipa::ToSchema for $name {}
    };
}

uuid_id!(
    /// A person using mainloop; owns a main thread, tasks, an inbox and an event stream.
    UserId,
    "user"
);
uuid_id!(
    /// A worker task spawned from the chat or the API.
    TaskId,
    "task"
);
uuid_id!(
    /// One stored message of a main thread.
    MessageId,
    "msg"
);
uuid_id!(
    /// One item in a user's inbox.
    InboxItemId,
    "inbox"
);
uuid_id!(
    /// A repository a user works in.
    ProjectId,
    "project"
);
uuid_id!(
    /// One browser's Web Push subscription.
    PushSubscriptionId,
    "push"
);
uuid_id!(
    /// A note or decision kept in the main thread's context.
    NoteId,
    "note"
);
uuid_id!(
    /// A digest of a day, week or month of the user's work.
    DigestId,
    "digest"
);

uuid_id!(
    /// A machine that runs agents for its owner, connected out to the server with a
    /// runner token.
    RunnerId,
    "runner"
);

/// Position in the append-only event log. Strictly increasing in commit order.
#[derive(
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Debug,
    Default,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(transparent)]
pub struct EventId(pub i64);

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Timestamp;

    #[test]
    fn ids_round_trip_through_strings_and_json() {
        let id = TaskId::new_v7(Timestamp::from_millis(1_700_000_000_000));
        let parsed: TaskId = id.to_string().parse().unwrap();
        assert_eq!(id, parsed);
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, format!("\"{id}\""));
        assert_eq!(id.short().len(), 8);
        assert!(format!("{id:?}").starts_with("task("));
    }

    #[test]
    fn v7_ids_sort_by_time() {
        let a = TaskId::new_v7(Timestamp::from_millis(1_000));
        let b = TaskId::new_v7(Timestamp::from_millis(2_000));
        assert!(a < b);
    }

    #[test]
    fn short_ids_differ_for_ids_made_in_the_same_millisecond() {
        let at = Timestamp::from_millis(1_700_000_000_000);
        let shorts: std::collections::BTreeSet<String> =
            (0..200).map(|_| TaskId::new_v7(at).short()).collect();
        assert!(shorts.len() > 195, "{}", shorts.len());
    }

    #[test]
    fn garbage_is_rejected() {
        assert!("not-a-uuid".parse::<UserId>().is_err());
    }
}
