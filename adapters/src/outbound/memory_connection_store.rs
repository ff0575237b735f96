//! The connection store of a single replica: a map in this process's memory.

use std::collections::HashMap;
use std::sync::Mutex;

use aimcs_domain::ports::{ConnectionStore, StoreError};
use aimcs_domain::{ConnectionId, ConnectionInfo};
use async_trait::async_trait;

/// Keeps the open connections of this process in a map; counts are exact.
#[derive(Debug, Default)]
pub struct InMemoryConnectionStore {
    // std Mutex: it is never held across an `.await`, and each operation is a map access.
    connections: Mutex<HashMap<ConnectionId, ConnectionInfo>>,
}

impl InMemoryConnectionStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn connections(&self) -> std::sync::MutexGuard<'_, HashMap<ConnectionId, ConnectionInfo>> {
        // A panic while holding the lock cannot leave the map half-updated (every operation
        // is a single insert, remove or len), so a poisoned lock is still safe to use.
        self.connections
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait]
impl ConnectionStore for InMemoryConnectionStore {
    async fn register(&self, connection: ConnectionInfo) -> Result<(), StoreError> {
        let mut connections = self.connections();
        if connections.contains_key(&connection.id) {
            return Err(StoreError::AlreadyRegistered(connection.id));
        }
        connections.insert(connection.id, connection);
        Ok(())
    }

    async fn remove(&self, id: ConnectionId) -> Result<(), StoreError> {
        self.connections()
            .remove(&id)
            .map(drop)
            .ok_or(StoreError::UnknownConnection(id))
    }

    async fn count(&self) -> Result<usize, StoreError> {
        Ok(self.connections().len())
    }
}

#[cfg(test)]
mod tests {
    use aimcs_domain::Timestamp;

    use super::*;

    fn info() -> ConnectionInfo {
        ConnectionInfo {
            id: ConnectionId::random(),
            opened_at: Timestamp::from_unix_millis(0),
            peer: None,
            user_agent: None,
        }
    }

    #[tokio::test]
    async fn registered_connections_are_counted_until_removed() {
        let store = InMemoryConnectionStore::new();
        let (a, b) = (info(), info());
        store.register(a.clone()).await.unwrap();
        store.register(b).await.unwrap();
        assert_eq!(store.count().await.unwrap(), 2);

        store.remove(a.id).await.unwrap();

        assert_eq!(store.count().await.unwrap(), 1);
    }

    #[tokio::test]
    async fn registering_an_id_twice_is_refused() {
        let store = InMemoryConnectionStore::new();
        let a = info();
        store.register(a.clone()).await.unwrap();

        let result = store.register(a.clone()).await;

        assert!(
            matches!(result, Err(StoreError::AlreadyRegistered(id)) if id == a.id),
            "{result:?}"
        );
        assert_eq!(store.count().await.unwrap(), 1);
    }

    #[tokio::test]
    async fn removing_an_unknown_id_is_refused() {
        let store = InMemoryConnectionStore::new();
        let id = ConnectionId::random();

        let result = store.remove(id).await;

        assert!(
            matches!(result, Err(StoreError::UnknownConnection(unknown)) if unknown == id),
            "{result:?}"
        );
    }
}
