//! The connection store and session store of a replica among several: connections are kept
//! in this process (counts of this replica stay exact and cost nothing), and a heartbeat
//! publishes this replica's counts to Redis with a time to live, so that a replica killed
//! without a word drops out of the cluster's counts once its entry expires.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};

use aimcs_domain::ports::{ClusterView, ConnectionStore, SessionHolder, SessionStore, StoreError};
use aimcs_domain::{ConnectionId, ConnectionInfo, SessionId, SessionSnapshot};
use async_trait::async_trait;
use redis::Script;
use tokio::sync::Notify;

use super::snapshot;
use super::{RedisError, RedisPool};
use crate::outbound::InMemoryConnectionStore;

/// At most this often a change of counts is published before the next heartbeat: a burst of
/// connections costs one write, not one each.
const DEBOUNCE: Duration = Duration::from_millis(50);

/// Session keys renewed per round trip of the heartbeat.
const RENEW_BATCH: usize = 500;

/// How long one reading of the cluster's counts answers `/health` and `/api/status`: the
/// counts are only as fresh as each replica's last publication anyway (at most 50 ms after a
/// change), and a probe per request must not cost a Redis round trip each.
const CLUSTER_CACHE: Duration = Duration::from_millis(100);

/// Publishes this replica and lists the live ones: a replica is alive while its hash exists.
const HEARTBEAT: &str = r"
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
redis.call('ZADD', KEYS[1], now, ARGV[1])
redis.call('HSET', KEYS[2], 'connections', ARGV[2], 'sessions', ARGV[3], 'heartbeat_at', now)
redis.call('PEXPIRE', KEYS[2], ARGV[4])
return now
";

/// Sums the counts of the live replicas, and drops the dead from the set.
const CLUSTER: &str = r"
local ids = redis.call('ZRANGE', KEYS[1], 0, -1)
local replicas, connections, sessions = 0, 0, 0
for _, id in ipairs(ids) do
  local counts = redis.call('HMGET', ARGV[1] .. id, 'connections', 'sessions')
  if counts[1] then
    replicas = replicas + 1
    connections = connections + tonumber(counts[1])
    sessions = sessions + tonumber(counts[2] or '0')
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return {replicas, connections, sessions}
";

/// Stores a session's state; a park only while its connection is still the holder.
const SAVE: &str = r"
if ARGV[4] == 'parked' then
  local holder = redis.call('HGET', KEYS[1], 'connection')
  if holder and holder ~= ARGV[2] then return 0 end
end
redis.call('HSET', KEYS[1], 'snapshot', ARGV[1], 'connection', ARGV[2], 'replica', ARGV[3], 'holder', ARGV[4])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1
";

/// Forgets a session, only for the connection holding it.
const FORGET: &str = r"
if redis.call('HGET', KEYS[1], 'connection') == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// How the replicas share one Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterSettings {
    /// How long a replica stays counted after its last heartbeat (it beats three times as
    /// often): the bound on how long a killed replica's connections are still counted.
    pub replica_ttl: Duration,
    /// How long a parked session waits for a resume: its shared state lives that long.
    pub resume_grace: Duration,
}

/// The declared sessions this replica holds, for its counts and the renewal of their keys.
#[derive(Default)]
struct Held {
    attached: HashSet<SessionId>,
    parked: HashMap<SessionId, Instant>,
}

/// A [`ConnectionStore`] and [`SessionStore`] shared by every replica using one Redis.
pub struct RedisConnectionStore {
    pool: RedisPool,
    local: InMemoryConnectionStore,
    replica: String,
    settings: ClusterSettings,
    held: Mutex<Held>,
    changed: Arc<Notify>,
    heartbeat_failing: std::sync::atomic::AtomicBool,
    /// Set at shutdown, before the replica is removed, so that no heartbeat brings it back.
    stopped: std::sync::atomic::AtomicBool,
    /// The last reading of the cluster's counts, and when it was taken.
    cluster_seen: Mutex<Option<(Instant, ClusterView)>>,
    scripts: Scripts,
}

struct Scripts {
    heartbeat: Script,
    cluster: Script,
    save: Script,
    forget: Script,
}

impl std::fmt::Debug for RedisConnectionStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisConnectionStore")
            .field("replica", &self.replica)
            .field("redis", &self.pool.target())
            .finish_non_exhaustive()
    }
}

impl RedisConnectionStore {
    /// Registers this replica (failing if Redis does not answer) and starts its heartbeat,
    /// which runs until the store is dropped.
    ///
    /// # Errors
    /// [`RedisError::Unreachable`] when the first heartbeat is not accepted.
    pub async fn start(
        pool: RedisPool,
        settings: ClusterSettings,
    ) -> Result<Arc<Self>, RedisError> {
        let store = Arc::new(Self {
            replica: uuid::Uuid::new_v4().simple().to_string()[..16].to_owned(),
            local: InMemoryConnectionStore::new(),
            settings,
            held: Mutex::default(),
            changed: Arc::new(Notify::new()),
            heartbeat_failing: std::sync::atomic::AtomicBool::new(false),
            stopped: std::sync::atomic::AtomicBool::new(false),
            cluster_seen: Mutex::new(None),
            scripts: Scripts {
                heartbeat: Script::new(HEARTBEAT),
                cluster: Script::new(CLUSTER),
                save: Script::new(SAVE),
                forget: Script::new(FORGET),
            },
            pool,
        });
        store
            .beat()
            .await
            .map_err(|source| RedisError::Unreachable {
                target: store.pool.target().to_owned(),
                source,
            })?;
        tracing::info!(replica = %store.replica, redis = %store.pool.target(), ttl_ms = settings.replica_ttl.as_millis() as u64, "replica registered in Redis");
        tokio::spawn(heartbeat(
            Arc::downgrade(&store),
            Arc::clone(&store.changed),
        ));
        Ok(store)
    }

    /// This replica's id in Redis.
    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// Removes this replica from the cluster's counts at once, at shutdown.
    pub async fn deregister(&self) {
        self.stopped
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let mut connection = self.pool.get();
        let result: Result<(), _> = redis::pipe()
            .zrem(self.replicas_key(), &self.replica)
            .ignore()
            .del(self.replica_key(&self.replica))
            .ignore()
            .query_async(&mut connection)
            .await;
        match result {
            Ok(()) => tracing::info!(replica = %self.replica, "replica removed from Redis"),
            Err(error) => {
                tracing::warn!(replica = %self.replica, error = %error, "replica could not be removed from Redis; it expires there by itself")
            }
        }
    }

    fn held(&self) -> MutexGuard<'_, Held> {
        // Every operation is a single set or map update: a poisoned lock is still whole.
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn replicas_key(&self) -> String {
        self.pool.key(format_args!("replicas"))
    }

    fn replica_key(&self, replica: &str) -> String {
        self.pool.key(format_args!("replica:{replica}"))
    }

    fn session_key(&self, session: SessionId) -> String {
        self.pool.key(format_args!("session:{session}"))
    }

    /// How long an attached session's state outlives this replica's last heartbeat: a
    /// replica that dies leaves the client the whole grace period to resume elsewhere.
    fn attached_ttl(&self) -> Duration {
        self.settings.replica_ttl + self.settings.resume_grace
    }

    /// Publishes this replica's counts and renews the keys of the sessions it holds.
    async fn beat(&self) -> Result<(), redis::RedisError> {
        let connections = self.local.count().await.unwrap_or(0);
        let (sessions, attached) = {
            let mut held = self.held();
            let now = Instant::now();
            held.parked.retain(|_, until| *until > now);
            let attached: Vec<SessionId> = held.attached.iter().copied().collect();
            (attached.len() + held.parked.len(), attached)
        };
        let mut connection = self.pool.get();
        self.scripts
            .heartbeat
            .key(self.replicas_key())
            .key(self.replica_key(&self.replica))
            .arg(&self.replica)
            .arg(connections)
            .arg(sessions)
            .arg(self.settings.replica_ttl.as_millis() as u64)
            .invoke_async::<i64>(&mut connection)
            .await?;
        let ttl = self.attached_ttl().as_millis() as u64;
        for batch in attached.chunks(RENEW_BATCH) {
            let mut pipe = redis::pipe();
            for session in batch {
                pipe.pexpire(self.session_key(*session), ttl as i64)
                    .ignore();
            }
            pipe.query_async::<()>(&mut connection).await?;
        }
        Ok(())
    }
}

/// Beats every third of the time to live, and soon after counts change.
async fn heartbeat(weak: Weak<RedisConnectionStore>, changed: Arc<Notify>) {
    let period = match weak.upgrade() {
        Some(store) => store.settings.replica_ttl / 3,
        None => return,
    };
    loop {
        // The task holds no strong reference while it sleeps, so dropping the store ends it.
        tokio::select! {
            () = tokio::time::sleep(period) => {}
            () = changed.notified() => tokio::time::sleep(DEBOUNCE).await,
        }
        let Some(store) = weak.upgrade() else { return };
        if store.stopped.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let result = store.beat().await;
        let was_failing = store
            .heartbeat_failing
            .swap(result.is_err(), std::sync::atomic::Ordering::Relaxed);
        // Said once when it starts failing and once when it recovers, not every beat.
        match (result, was_failing) {
            (Err(error), false) => {
                tracing::error!(replica = %store.replica, redis = %store.pool.target(), error = %error, "heartbeat to Redis failed: other replicas will stop counting this one until it recovers")
            }
            (Ok(()), true) => {
                tracing::info!(replica = %store.replica, "heartbeat to Redis recovered")
            }
            _ => {}
        }
    }
}

fn unavailable(error: redis::RedisError) -> StoreError {
    StoreError::Unavailable(Box::new(error))
}

#[async_trait]
impl ConnectionStore for RedisConnectionStore {
    async fn register(&self, connection: ConnectionInfo) -> Result<(), StoreError> {
        self.local.register(connection).await?;
        self.changed.notify_one();
        Ok(())
    }

    async fn remove(&self, id: ConnectionId) -> Result<(), StoreError> {
        self.local.remove(id).await?;
        self.changed.notify_one();
        Ok(())
    }

    async fn count(&self) -> Result<usize, StoreError> {
        self.local.count().await
    }

    async fn cluster(&self) -> Result<Option<ClusterView>, StoreError> {
        let cached = self
            .cluster_seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .filter(|(at, _)| at.elapsed() < CLUSTER_CACHE);
        if let Some((_, view)) = cached {
            return Ok(Some(view));
        }
        let mut connection = self.pool.get();
        let (replicas, connections, sessions): (usize, usize, usize) = self
            .scripts
            .cluster
            .key(self.replicas_key())
            .arg(self.pool.key(format_args!("replica:")))
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        let view = ClusterView {
            replica: self.replica.clone(),
            replicas,
            connections,
            sessions,
        };
        *self
            .cluster_seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some((Instant::now(), view.clone()));
        Ok(Some(view))
    }
}

#[async_trait]
impl SessionStore for RedisConnectionStore {
    async fn save(
        &self,
        snapshot: SessionSnapshot,
        holder: SessionHolder,
    ) -> Result<(), StoreError> {
        let (name, ttl) = match holder {
            SessionHolder::Attached => ("attached", self.attached_ttl()),
            SessionHolder::Parked => (
                "parked",
                self.settings.resume_grace + Duration::from_secs(1),
            ),
        };
        let mut connection = self.pool.get();
        let saved: i64 = self
            .scripts
            .save
            .key(self.session_key(snapshot.id))
            .arg(snapshot::encode(&snapshot))
            .arg(snapshot.connection.to_string())
            .arg(&self.replica)
            .arg(name)
            .arg(ttl.as_millis() as u64)
            .invoke_async(&mut connection)
            .await
            .map_err(unavailable)?;
        {
            let mut held = self.held();
            held.attached.remove(&snapshot.id);
            held.parked.remove(&snapshot.id);
            match (holder, saved) {
                (SessionHolder::Attached, _) => {
                    held.attached.insert(snapshot.id);
                }
                (SessionHolder::Parked, 1) => {
                    held.parked.insert(snapshot.id, Instant::now() + ttl);
                }
                (SessionHolder::Parked, _) => {
                    tracing::info!(session_id = %snapshot.id, "session not parked in Redis: another replica holds it now");
                }
            }
        }
        self.changed.notify_one();
        Ok(())
    }

    async fn load(&self, id: SessionId) -> Result<Option<SessionSnapshot>, StoreError> {
        let mut connection = self.pool.get();
        let stored: Option<String> = redis::cmd("HGET")
            .arg(self.session_key(id))
            .arg("snapshot")
            .query_async(&mut connection)
            .await
            .map_err(unavailable)?;
        stored
            .map(|text| {
                snapshot::decode(&text).map_err(|reason| {
                    StoreError::Unavailable(
                        format!("the state of session {id} in Redis is damaged: {reason}").into(),
                    )
                })
            })
            .transpose()
    }

    async fn forget(&self, id: SessionId, connection: ConnectionId) -> Result<(), StoreError> {
        {
            let mut held = self.held();
            held.attached.remove(&id);
            held.parked.remove(&id);
        }
        self.changed.notify_one();
        let mut redis = self.pool.get();
        self.scripts
            .forget
            .key(self.session_key(id))
            .arg(connection.to_string())
            .invoke_async::<i64>(&mut redis)
            .await
            .map_err(unavailable)?;
        Ok(())
    }
}
