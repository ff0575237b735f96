//! Identities. The original used `Date.now()` as a connection id, so two sockets opened in the
//! same millisecond shared one id and the connection count undercounted; UUID v4 ids make every
//! connection and session distinct.

use std::fmt;
use std::str::FromStr;

use uuid::Uuid;

/// A text that is not a UUID was given where an id was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid id: {input:?}")]
pub struct ParseIdError {
    input: String,
}

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Uuid);

        impl $name {
            /// A fresh, random (v4) id.
            pub fn random() -> Self {
                Self(Uuid::new_v4())
            }

            /// Wraps an existing UUID, e.g. one read back from a store.
            pub const fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            /// The underlying UUID.
            pub const fn as_uuid(&self) -> &Uuid {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                // Hyphenated lower case: the form clients see and log searches use.
                fmt::Display::fmt(&self.0.hyphenated(), f)
            }
        }

        impl FromStr for $name {
            type Err = ParseIdError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self).map_err(|_| ParseIdError { input: s.to_owned() })
            }
        }
    };
}

uuid_id!(
    /// Identifies one WebSocket connection for as long as it is open.
    ConnectionId
);

uuid_id!(
    /// Identifies one audio session: the audio a client streams between its start and its end.
    SessionId
);

uuid_id!(
    /// Identifies one recording: the stored audio of one session, across resumed connections.
    RecordingId
);

uuid_id!(
    /// Identifies one reply of the chat endpoint.
    ChatReplyId
);

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    #[test]
    fn random_connection_ids_do_not_collide() {
        let ids: HashSet<ConnectionId> = (0..10_000).map(|_| ConnectionId::random()).collect();
        assert_eq!(ids.len(), 10_000);
    }

    #[test]
    fn an_id_round_trips_through_its_text_form() {
        let id = SessionId::random();
        let text = id.to_string();
        assert_eq!(text.len(), 36, "hyphenated UUID expected, got {text}");
        assert_eq!(text.parse::<SessionId>(), Ok(id));
    }

    #[test]
    fn parsing_a_non_uuid_names_the_input() {
        let err = "1750998011123".parse::<ConnectionId>().unwrap_err();
        assert_eq!(err.to_string(), "not a valid id: \"1750998011123\"");
    }
}
