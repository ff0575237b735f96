//! One connection's state and the rule that decides what each client message gets.
//!
//! The state is owned by whoever drives the connection (the WebSocket adapter's task), so the
//! rules need no locks: they take `&mut self` and return a [`Decision`] for the application to
//! carry out.

use crate::audio::AudioChunk;
use crate::ids::{ConnectionId, SessionId};
use crate::message::{AudioMessage, AudioPayload, ClientMessage, Rejection, ServerMessage};
use crate::time::Timestamp;

/// What the connection store records about an open connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// The connection's id.
    pub id: ConnectionId,
    /// When it was opened.
    pub opened_at: Timestamp,
    /// The peer's address as the transport saw it, if known.
    pub peer: Option<String>,
    /// The client's `User-Agent`, if it sent one.
    pub user_agent: Option<String>,
}

/// Running totals of one connection, for the logs when it closes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectionStats {
    /// Client messages handled, whatever their type.
    pub messages: u64,
    /// Audio chunks the sink accepted.
    pub audio_chunks: u64,
    /// Audio bytes the sink accepted.
    pub audio_bytes: u64,
}

/// What to do about one client message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Send this reply; nothing else to do.
    Reply(ServerMessage),
    /// Hand `chunk` to the audio sink under `session`; only once the sink has accepted it,
    /// send `ack`. If the sink fails, the client must not be told the audio was received.
    Store {
        /// The session the chunk belongs to.
        session: SessionId,
        /// The audio to store.
        chunk: AudioChunk,
        /// The acknowledgement to send once it is stored.
        ack: ServerMessage,
    },
}

/// An open connection: its identity, its implicit audio session and its totals.
#[derive(Debug)]
pub struct Connection {
    info: ConnectionInfo,
    session: Option<SessionId>,
    stats: ConnectionStats,
}

impl Connection {
    /// A connection that has just been opened and has received nothing yet.
    pub fn new(info: ConnectionInfo) -> Self {
        Self {
            info,
            session: None,
            stats: ConnectionStats::default(),
        }
    }

    /// The connection's id.
    pub fn id(&self) -> ConnectionId {
        self.info.id
    }

    /// What the store records about this connection.
    pub fn info(&self) -> &ConnectionInfo {
        &self.info
    }

    /// The audio session of this connection, once its first audio has arrived.
    pub fn session(&self) -> Option<SessionId> {
        self.session
    }

    /// Running totals.
    pub fn stats(&self) -> ConnectionStats {
        self.stats
    }

    /// Decides what `message` gets.
    ///
    /// Clients of the original service never announce a session: the first audio on a
    /// connection opens an implicit one, which lasts until the connection closes.
    pub fn decide(&mut self, message: ClientMessage) -> Decision {
        self.stats.messages += 1;
        match message {
            ClientMessage::Test { message } => Decision::Reply(ServerMessage::TestResponse {
                original_message: message,
            }),
            ClientMessage::Audio(audio) => self.decide_audio(audio),
            ClientMessage::Ping => Decision::Reply(ServerMessage::Pong),
            ClientMessage::Unknown { original_type } => {
                Decision::Reply(ServerMessage::Echo { original_type })
            }
            ClientMessage::Undecodable { reason } => {
                Decision::Reply(ServerMessage::Rejected(Rejection::MalformedMessage(reason)))
            }
        }
    }

    /// Records that the sink accepted `chunk`.
    pub fn record_stored(&mut self, chunk_len: usize) {
        self.stats.audio_chunks += 1;
        self.stats.audio_bytes += chunk_len as u64;
    }

    fn decide_audio(&mut self, audio: AudioMessage) -> Decision {
        let AudioMessage {
            encoded_size,
            payload,
        } = audio;
        match payload {
            // The original acknowledged an `audio` message without data (as `dataSize: 0`);
            // clients may count acks, so an empty message is still acknowledged.
            AudioPayload::Empty => Decision::Reply(ServerMessage::AudioReceived {
                encoded_size,
                decoded_size: 0,
            }),
            AudioPayload::Invalid(reason) => {
                Decision::Reply(ServerMessage::Rejected(Rejection::InvalidAudio(reason)))
            }
            AudioPayload::Chunk(chunk) => {
                let session = *self.session.get_or_insert_with(SessionId::random);
                let ack = ServerMessage::AudioReceived {
                    encoded_size,
                    decoded_size: chunk.len(),
                };
                Decision::Store {
                    session,
                    chunk,
                    ack,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::ClientValue;

    fn connection() -> Connection {
        Connection::new(ConnectionInfo {
            id: ConnectionId::random(),
            opened_at: Timestamp::from_unix_millis(0),
            peer: None,
            user_agent: None,
        })
    }

    fn audio(bytes: &[u8]) -> ClientMessage {
        ClientMessage::Audio(AudioMessage {
            encoded_size: bytes.len().div_ceil(3) * 4,
            payload: AudioPayload::Chunk(AudioChunk::new(bytes.to_vec()).unwrap()),
        })
    }

    #[test]
    fn a_test_message_gets_its_message_back() {
        let original = Some(ClientValue::from_wire("\"Hello from frontend!\""));
        let decision = connection().decide(ClientMessage::Test {
            message: original.clone(),
        });
        assert_eq!(
            decision,
            Decision::Reply(ServerMessage::TestResponse {
                original_message: original
            })
        );
    }

    #[test]
    fn a_ping_gets_a_pong() {
        assert_eq!(
            connection().decide(ClientMessage::Ping),
            Decision::Reply(ServerMessage::Pong)
        );
    }

    #[test]
    fn an_unknown_type_is_echoed_not_rejected() {
        let original_type = Some(ClientValue::from_wire("\"TEST\""));
        let decision = connection().decide(ClientMessage::Unknown {
            original_type: original_type.clone(),
        });
        assert_eq!(
            decision,
            Decision::Reply(ServerMessage::Echo { original_type })
        );
    }

    #[test]
    fn an_undecodable_frame_is_rejected_as_malformed() {
        let decision = connection().decide(ClientMessage::Undecodable {
            reason: "bad".into(),
        });
        assert_eq!(
            decision,
            Decision::Reply(ServerMessage::Rejected(Rejection::MalformedMessage(
                "bad".into()
            )))
        );
    }

    #[test]
    fn audio_is_stored_before_it_is_acknowledged() {
        let mut connection = connection();
        let Decision::Store { chunk, ack, .. } = connection.decide(audio(&[1, 2, 3, 4])) else {
            panic!("audio with data must be stored");
        };
        assert_eq!(chunk.as_bytes(), &[1, 2, 3, 4]);
        assert_eq!(
            ack,
            ServerMessage::AudioReceived {
                encoded_size: 8,
                decoded_size: 4
            }
        );
    }

    #[test]
    fn all_audio_of_a_connection_goes_to_one_implicit_session() {
        let mut connection = connection();
        assert_eq!(connection.session(), None);
        let Decision::Store { session: first, .. } = connection.decide(audio(&[1])) else {
            panic!("expected a store decision");
        };
        let Decision::Store {
            session: second, ..
        } = connection.decide(audio(&[2]))
        else {
            panic!("expected a store decision");
        };
        assert_eq!((first, Some(first)), (second, connection.session()));
    }

    #[test]
    fn audio_without_data_is_acknowledged_with_nothing_stored() {
        let mut connection = connection();
        let empty = ClientMessage::Audio(AudioMessage {
            encoded_size: 0,
            payload: AudioPayload::Empty,
        });
        assert_eq!(
            connection.decide(empty),
            Decision::Reply(ServerMessage::AudioReceived {
                encoded_size: 0,
                decoded_size: 0
            })
        );
        assert_eq!(connection.session(), None, "no audio, so no session");
    }

    #[test]
    fn invalid_audio_is_rejected_and_not_stored() {
        let invalid = ClientMessage::Audio(AudioMessage {
            encoded_size: 5,
            payload: AudioPayload::Invalid("invalid base64".into()),
        });
        assert_eq!(
            connection().decide(invalid),
            Decision::Reply(ServerMessage::Rejected(Rejection::InvalidAudio(
                "invalid base64".into()
            )))
        );
    }

    #[test]
    fn totals_count_messages_and_stored_audio() {
        let mut connection = connection();
        connection.decide(ClientMessage::Ping);
        connection.decide(audio(&[1, 2]));
        connection.record_stored(2);
        assert_eq!(
            connection.stats(),
            ConnectionStats {
                messages: 2,
                audio_chunks: 1,
                audio_bytes: 2
            }
        );
    }
}
