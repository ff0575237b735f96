//! The sessions of this process that are not on a connection right now, or that a resume
//! might ask for: which connection holds each, and the parked ones waiting to be resumed.
//!
//! A session itself travels with the connection that holds it; the registry keeps only a
//! marker (and the token, so that a resume can be checked) until the connection parks it.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use aimcs_domain::{ConnectionId, ResumeError, ResumeToken, Session, SessionId, Timestamp};

/// Why a session could not be taken for a resume.
#[derive(Debug)]
pub(crate) enum TakeError {
    /// No such session (never started here, or finished).
    NotFound,
    /// The token is not the session's.
    WrongToken,
    /// The grace period has passed; the session is handed over to be finished.
    Expired(Box<Session>),
    /// Another connection holds the session; it must let go first.
    HeldBy(ConnectionId),
}

enum Place {
    /// On a connection.
    Attached(ConnectionId),
    /// Parked, waiting for a resume.
    Parked(Box<Session>),
}

struct Slot {
    token: ResumeToken,
    place: Place,
}

/// Declared sessions by id.
#[derive(Default)]
pub(crate) struct SessionRegistry {
    // std Mutex: never held across an `.await`; every operation is a map access.
    slots: Mutex<HashMap<SessionId, Slot>>,
}

impl SessionRegistry {
    fn slots(&self) -> MutexGuard<'_, HashMap<SessionId, Slot>> {
        // Every operation leaves the map whole, so a poisoned lock is still consistent.
        self.slots.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Notes that `connection` holds `session`.
    pub(crate) fn attach(&self, session: &Session, connection: ConnectionId) {
        let slot = Slot {
            token: session.token().clone(),
            place: Place::Attached(connection),
        };
        self.slots().insert(session.id(), slot);
    }

    /// Parks a session whose connection went away, for a resume. When `max` sessions are
    /// already parked, the one parked longest ago is removed and returned, to be finished.
    pub(crate) fn park(&self, session: Session, max: usize) -> Option<Session> {
        let (id, token) = (session.id(), session.token().clone());
        let mut slots = self.slots();
        let parked = slots
            .values()
            .filter(|slot| matches!(slot.place, Place::Parked(_)))
            .count();
        let evicted = if parked >= max {
            let oldest = slots
                .iter()
                .filter_map(|(id, slot)| match &slot.place {
                    Place::Parked(session) => Some((session.detached_at(), *id)),
                    Place::Attached(_) => None,
                })
                .min()
                .map(|(_, id)| id);
            oldest.and_then(|id| match slots.remove(&id)?.place {
                Place::Parked(session) => Some(*session),
                Place::Attached(_) => None,
            })
        } else {
            None
        };
        slots.insert(
            id,
            Slot {
                token,
                place: Place::Parked(Box::new(session)),
            },
        );
        evicted
    }

    /// Forgets a session that has ended.
    pub(crate) fn forget(&self, session: SessionId) {
        self.slots().remove(&session);
    }

    /// Takes a parked session for `connection`, checking `token` and the grace period.
    pub(crate) fn take(
        &self,
        id: SessionId,
        token: &str,
        connection: ConnectionId,
        now: Timestamp,
        grace: Duration,
    ) -> Result<Session, TakeError> {
        let mut slots = self.slots();
        let Some(slot) = slots.get_mut(&id) else {
            return Err(TakeError::NotFound);
        };
        // The token is checked before anything is revealed or done: knowing a session id
        // alone must not let anyone learn where it is or take it over.
        if !slot.token.matches(token) {
            return Err(TakeError::WrongToken);
        }
        let session = match &mut slot.place {
            Place::Attached(holder) => return Err(TakeError::HeldBy(*holder)),
            Place::Parked(session) => session,
        };
        match session.resume(token, connection, now, grace) {
            Ok(()) => {}
            Err(ResumeError::WrongToken) => return Err(TakeError::WrongToken),
            Err(ResumeError::Expired) => {
                return match slots.remove(&id).map(|slot| slot.place) {
                    Some(Place::Parked(session)) => Err(TakeError::Expired(session)),
                    _ => Err(TakeError::NotFound),
                };
            }
        }
        match std::mem::replace(&mut slot.place, Place::Attached(connection)) {
            Place::Parked(session) => Ok(*session),
            Place::Attached(_) => Err(TakeError::NotFound),
        }
    }

    /// Removes and returns the parked sessions whose grace period has passed at `now`.
    pub(crate) fn take_expired(&self, now: Timestamp, grace: Duration) -> Vec<Session> {
        self.take_parked(|session| session.is_expired(now, grace))
    }

    /// Removes and returns every parked session (at shutdown).
    pub(crate) fn take_all_parked(&self) -> Vec<Session> {
        self.take_parked(|_| true)
    }

    fn take_parked(&self, mut wanted: impl FnMut(&Session) -> bool) -> Vec<Session> {
        let mut slots = self.slots();
        let ids: Vec<SessionId> = slots
            .iter()
            .filter(|(_, slot)| matches!(&slot.place, Place::Parked(session) if wanted(session)))
            .map(|(id, _)| *id)
            .collect();
        ids.into_iter()
            .filter_map(|id| match slots.remove(&id)?.place {
                Place::Parked(session) => Some(*session),
                Place::Attached(_) => None,
            })
            .collect()
    }

    /// Parked sessions, for the status report.
    pub(crate) fn parked(&self) -> usize {
        self.slots()
            .values()
            .filter(|slot| matches!(slot.place, Place::Parked(_)))
            .count()
    }
}
