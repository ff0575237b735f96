//! The connections of this process that hold a declared session, so that a resume arriving on
//! another connection can ask the holder to let go (it is then closed as superseded) and wait
//! until it has. Connections of the original protocol never join: they have nothing to hand
//! over, and an idle connection should cost nothing here.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use aimcs_domain::ConnectionId;
use tokio_util::sync::CancellationToken;

/// One member's signals.
#[derive(Debug, Clone, Default)]
pub(crate) struct Membership {
    /// Cancelled to ask the member to let go of its session.
    pub(crate) superseded: CancellationToken,
    /// Cancelled by the member once its session is parked and can be taken.
    pub(crate) released: CancellationToken,
}

/// Members by connection id.
#[derive(Debug, Default)]
pub(crate) struct ConnectionHub {
    // std Mutex: never held across an `.await`.
    members: Mutex<HashMap<ConnectionId, Membership>>,
}

impl ConnectionHub {
    fn members(&self) -> MutexGuard<'_, HashMap<ConnectionId, Membership>> {
        self.members.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a connection that now holds a session.
    pub(crate) fn join(&self, connection: ConnectionId) -> Membership {
        let membership = Membership::default();
        self.members().insert(connection, membership.clone());
        membership
    }

    /// Removes a connection and signals that whatever it held has been let go.
    pub(crate) fn leave(&self, connection: ConnectionId) {
        if let Some(membership) = self.members().remove(&connection) {
            membership.released.cancel();
        }
    }

    /// Asks `connection` to let go of its session; returns the signal that it has, or `None`
    /// if it is not a member (it is already leaving).
    pub(crate) fn supersede(&self, connection: ConnectionId) -> Option<CancellationToken> {
        let members = self.members();
        let membership = members.get(&connection)?;
        membership.superseded.cancel();
        Some(membership.released.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn superseding_a_member_signals_it_and_leaving_releases_the_waiter() {
        let hub = ConnectionHub::default();
        let id = ConnectionId::random();
        let membership = hub.join(id);

        let released = hub.supersede(id).expect("a member");
        assert!(membership.superseded.is_cancelled());
        assert!(!released.is_cancelled());

        hub.leave(id);
        assert!(released.is_cancelled());
        assert!(hub.supersede(id).is_none(), "gone after leaving");
    }
}
