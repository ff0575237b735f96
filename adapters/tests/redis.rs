//! The Redis adapters against a real `redis-server` of each test's own: the rules their
//! scripts keep (each chunk once, in order; a recording written by one replica at a time; a
//! session parked only by its holder) and what they do with bad state.

use std::time::Duration;

use aimcs_adapters::outbound::redis::{
    ClusterSettings, GroupConsumer, RedisError, RedisPool, RedisSettings, SessionReader,
    StreamSettings,
};
use aimcs_adapters::outbound::{RedisConnectionStore, RedisStreamAudioSink};
use aimcs_domain::ports::{
    AudioSink, ConnectionStore, SessionHolder, SessionStore, SinkError, StoreError,
};
use aimcs_domain::{
    AudioChunk, AudioFormat, ConnectionId, ConnectionInfo, SampleEncoding, Session, SessionEnding,
    Timestamp,
};

#[path = "../../tests/support/redis_server.rs"]
mod redis_server;
use redis_server::RedisServer;

const T0: Timestamp = Timestamp::from_unix_millis(1_750_000_000_000);

fn settings(url: String) -> RedisSettings {
    RedisSettings {
        url,
        username: None,
        password: None,
        ca_cert_path: None,
        pool_size: 2,
        connect_timeout: Duration::from_millis(500),
        response_timeout: Duration::from_millis(500),
        key_prefix: "test".into(),
    }
}

async fn pool(redis: &RedisServer) -> RedisPool {
    RedisPool::connect(&settings(redis.url())).await.unwrap()
}

fn sink(pool: &RedisPool) -> RedisStreamAudioSink {
    RedisStreamAudioSink::new(
        pool.clone(),
        StreamSettings {
            max_len: 0,
            retention: Duration::from_secs(60),
            index_max_len: 1_000,
        },
    )
}

fn session() -> Session {
    let format = AudioFormat::Samples {
        encoding: SampleEncoding::PcmS16le,
        sample_rate: 16_000,
        channels: 1,
    };
    Session::declared(format, None, ConnectionId::random(), T0)
}

fn chunk(byte: u8) -> AudioChunk {
    AudioChunk::new(vec![byte; 4]).unwrap()
}

/// The session's audio as a consumer reads it back.
async fn read_back(pool: &RedisPool, session: &Session) -> (Vec<u8>, u64, Option<String>) {
    let mut audio = Vec::new();
    let read = SessionReader::new(pool.clone())
        .read(
            &session.id().to_string(),
            &mut audio,
            std::path::Path::new("memory"),
            Duration::from_millis(100),
        )
        .await
        .unwrap();
    (audio, read.chunks, read.ending)
}

/// A private Redis, a pool and a sink on it, and a session whose recording is open.
async fn opened() -> (RedisServer, RedisPool, RedisStreamAudioSink, Session) {
    let redis = RedisServer::start().await;
    let pool = pool(&redis).await;
    let sink = sink(&pool);
    let session = session();
    sink.open(session.recording_start()).await.unwrap();
    (redis, pool, sink, session)
}

#[tokio::test]
async fn a_chunk_resent_after_its_answer_was_lost_is_appended_once() {
    let (_redis, pool, sink, session) = opened().await;

    sink.write(session.recording(), 1, chunk(1)).await.unwrap();
    sink.write(session.recording(), 1, chunk(1)).await.unwrap();
    sink.write(session.recording(), 2, chunk(2)).await.unwrap();
    sink.open(session.recording_start()).await.unwrap();

    let (audio, chunks, _) = read_back(&pool, &session).await;
    assert_eq!(chunks, 2);
    assert_eq!(audio, [1, 1, 1, 1, 2, 2, 2, 2]);
}

#[tokio::test]
async fn sequence_numbers_beyond_what_a_double_holds_are_compared_exactly() {
    let (_redis, pool, sink, session) = opened().await;
    let big = (1_u64 << 60) + 1;

    sink.write(session.recording(), big, chunk(1))
        .await
        .unwrap();
    sink.write(session.recording(), big + 1, chunk(2))
        .await
        .unwrap();
    sink.write(session.recording(), big, chunk(3))
        .await
        .unwrap();
    sink.write(session.recording(), u64::MAX, chunk(4))
        .await
        .unwrap();

    let (audio, chunks, _) = read_back(&pool, &session).await;
    assert_eq!(chunks, 3, "2^60+1 and 2^60+2 differ, though not as doubles");
    assert_eq!(&audio[8..], [4, 4, 4, 4]);
}

#[tokio::test]
async fn once_another_replica_continues_a_recording_the_first_can_no_longer_write_to_it() {
    let redis = RedisServer::start().await;
    let pool = pool(&redis).await;
    let (first, second) = (sink(&pool), sink(&pool));
    let mut session = session();
    first.open(session.recording_start()).await.unwrap();
    first.write(session.recording(), 1, chunk(1)).await.unwrap();
    first.write(session.recording(), 2, chunk(2)).await.unwrap();

    let progress = second
        .continue_recording(session.recording_start())
        .await
        .unwrap();
    let stale = first.write(session.recording(), 3, chunk(9)).await;
    second
        .write(session.recording(), 3, chunk(3))
        .await
        .unwrap();
    session.catch_up(progress.clone());
    let stale_close = first
        .close(session.end_record(SessionEnding::Shutdown, T0))
        .await;
    second
        .close(session.end_record(SessionEnding::Ended, T0))
        .await
        .unwrap();

    assert_eq!(
        (
            progress.first_seq,
            progress.last_seq,
            progress.totals.chunks
        ),
        (Some(1), Some(2), 2)
    );
    assert!(matches!(stale, Err(SinkError::Superseded(_))), "{stale:?}");
    assert!(
        matches!(stale_close, Err(SinkError::UnknownRecording(_))),
        "a superseded write forgets the recording: {stale_close:?}"
    );
    let (audio, chunks, ending) = read_back(&pool, &session).await;
    assert_eq!((chunks, ending.as_deref()), (3, Some("ended")));
    assert_eq!(audio, [1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3]);
}

#[tokio::test]
async fn a_recording_that_is_not_in_redis_cannot_be_continued_and_says_why() {
    let redis = RedisServer::start().await;
    let pool = pool(&redis).await;
    let session = session();

    let result = sink(&pool)
        .continue_recording(session.recording_start())
        .await;

    let Err(SinkError::Unavailable(cause)) = result else {
        panic!("{result:?}");
    };
    assert!(cause.to_string().contains("no longer in Redis"), "{cause}");
}

#[tokio::test]
async fn writes_to_a_recording_never_opened_are_refused() {
    let redis = RedisServer::start().await;
    let pool = pool(&redis).await;
    let session = session();

    let result = sink(&pool).write(session.recording(), 1, chunk(1)).await;

    assert!(
        matches!(result, Err(SinkError::UnknownRecording(_))),
        "{result:?}"
    );
}

#[tokio::test]
async fn a_stopped_redis_makes_writes_fail_fast_and_the_sink_report_unready() {
    let mut redis = RedisServer::start().await;
    let pool = pool(&redis).await;
    let sink = sink(&pool);
    let session = session();
    sink.open(session.recording_start()).await.unwrap();
    redis.stop().await;

    let started = std::time::Instant::now();
    let write = sink.write(session.recording(), 1, chunk(1)).await;
    let check = sink.check().await;

    assert!(matches!(write, Err(SinkError::Unavailable(_))), "{write:?}");
    assert!(matches!(check, Err(SinkError::Unavailable(_))), "{check:?}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

async fn cluster_store(redis: &RedisServer, ttl: Duration) -> std::sync::Arc<RedisConnectionStore> {
    RedisConnectionStore::start(
        pool(redis).await,
        ClusterSettings {
            replica_ttl: ttl,
            resume_grace: Duration::from_secs(30),
        },
    )
    .await
    .unwrap()
}

fn info() -> ConnectionInfo {
    ConnectionInfo {
        id: ConnectionId::random(),
        opened_at: T0,
        peer: None,
        user_agent: None,
    }
}

#[tokio::test]
async fn replicas_see_each_others_connections_until_one_stops_beating() {
    let redis = RedisServer::start().await;
    let a = cluster_store(&redis, Duration::from_millis(600)).await;
    let b = cluster_store(&redis, Duration::from_millis(600)).await;
    a.register(info()).await.unwrap();
    a.register(info()).await.unwrap();
    b.register(info()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;

    let both = b.cluster().await.unwrap().unwrap();
    drop(a);
    tokio::time::sleep(Duration::from_millis(900)).await;
    let alone = b.cluster().await.unwrap().unwrap();

    assert_eq!((both.replicas, both.connections), (2, 3), "{both:?}");
    assert_eq!((alone.replicas, alone.connections), (1, 1), "{alone:?}");
    assert_eq!(b.count().await.unwrap(), 1, "this replica's own count");
}

#[tokio::test]
async fn a_session_taken_over_elsewhere_is_not_parked_or_forgotten_by_its_old_connection() {
    let redis = RedisServer::start().await;
    let store = cluster_store(&redis, Duration::from_secs(2)).await;
    let mut session = session();
    let old = session.snapshot();
    store
        .save(old.clone(), SessionHolder::Attached)
        .await
        .unwrap();
    session.detach(T0);
    session
        .resume(
            session.token().reveal().to_owned().as_str(),
            ConnectionId::random(),
            T0,
            Duration::from_secs(30),
        )
        .unwrap();
    let taken = session.snapshot();
    store
        .save(taken.clone(), SessionHolder::Attached)
        .await
        .unwrap();

    let mut late_park = old.clone();
    late_park.detached_at = Some(T0);
    store.save(late_park, SessionHolder::Parked).await.unwrap();
    store.forget(old.id, old.connection).await.unwrap();

    assert_eq!(store.load(old.id).await.unwrap(), Some(taken));
}

#[tokio::test]
async fn damaged_session_state_is_reported_not_trusted() {
    let redis = RedisServer::start().await;
    let store = cluster_store(&redis, Duration::from_secs(2)).await;
    let session = session();
    let mut raw = redis_client(&redis).await;
    redis::cmd("HSET")
        .arg(format!("test:session:{}", session.id()))
        .arg("snapshot")
        .arg("{not json")
        .query_async::<()>(&mut raw)
        .await
        .unwrap();

    let loaded = store.load(session.id()).await;

    let Err(StoreError::Unavailable(cause)) = loaded else {
        panic!("{loaded:?}");
    };
    assert!(cause.to_string().contains("damaged"), "{cause}");
}

async fn redis_client(redis: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_wrong_password_is_refused_at_connect_without_printing_it() {
    let redis = RedisServer::start_with(&["--requirepass", "right-password"]).await;
    let mut wrong = settings(redis.url());
    wrong.password = Some("wrong-password".into());
    let mut right = settings(redis.url());
    right.password = Some("right-password".into());

    let refused = RedisPool::connect(&wrong).await.unwrap_err();
    let accepted = RedisPool::connect(&right).await;

    assert!(
        matches!(refused, RedisError::Unreachable { .. }),
        "{refused:?}"
    );
    let said = format!("{refused} {refused:?}");
    assert!(!said.contains("wrong-password"), "{said}");
    assert!(accepted.is_ok(), "{accepted:?}");
}

#[tokio::test]
async fn tls_connects_with_the_configured_authority_and_refuses_an_unknown_one() {
    let authority = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("redis.crt"), dir.path().join("redis.key"));
    std::fs::write(&cert, authority.cert.pem()).unwrap();
    std::fs::write(&key, authority.signing_key.serialize_pem()).unwrap();
    let tls_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let cert_arg = cert.to_str().unwrap();
    let key_arg = key.to_str().unwrap();
    let _redis = RedisServer::start_with(&[
        "--tls-port",
        &tls_port,
        "--tls-cert-file",
        cert_arg,
        "--tls-key-file",
        key_arg,
        "--tls-auth-clients",
        "no",
    ])
    .await;
    let url = format!("rediss://127.0.0.1:{tls_port}");
    let mut trusted = settings(url.clone());
    trusted.ca_cert_path = Some(cert.clone());

    let pool = RedisPool::connect(&trusted).await;
    let untrusted = RedisPool::connect(&settings(url)).await;

    assert!(pool.is_ok(), "{pool:?}");
    assert!(pool.unwrap().ping().await.is_ok());
    let error = untrusted.unwrap_err();
    let said = format!("{error}: {:?}", std::error::Error::source(&error));
    assert!(said.to_lowercase().contains("certificate"), "{said}");
}

#[tokio::test]
async fn a_consumer_group_hands_every_session_to_exactly_one_worker() {
    let redis = RedisServer::start().await;
    let pool = pool(&redis).await;
    let sink = sink(&pool);
    let mut sessions = Vec::new();
    for byte in 1..=3 {
        let mut session = session();
        sink.open(session.recording_start()).await.unwrap();
        sink.write(session.recording(), 1, chunk(byte))
            .await
            .unwrap();
        session.record(1, None, 4);
        sink.close(session.end_record(SessionEnding::Ended, T0))
            .await
            .unwrap();
        sessions.push(session);
    }
    let dir = tempfile::tempdir().unwrap();
    let workers = [
        GroupConsumer::join(pool.clone(), "stt", "w1")
            .await
            .unwrap(),
        GroupConsumer::join(pool.clone(), "stt", "w2")
            .await
            .unwrap(),
    ];

    let mut taken = Vec::new();
    for turn in 0..4 {
        let next = workers[turn % 2]
            .next_session(
                dir.path(),
                Duration::from_millis(100),
                Duration::from_millis(100),
            )
            .await
            .unwrap();
        taken.extend(next);
    }

    let mut ids: Vec<String> = taken.iter().map(|(_, read)| read.session.clone()).collect();
    ids.sort();
    let mut wanted: Vec<String> = sessions.iter().map(|s| s.id().to_string()).collect();
    wanted.sort();
    assert_eq!(ids, wanted, "each session once, none left over");
    for (path, read) in &taken {
        assert_eq!(path.extension().unwrap(), "pcm");
        assert_eq!(std::fs::read(path).unwrap().len(), 4);
        assert_eq!(read.ending.as_deref(), Some("ended"));
    }
}

#[tokio::test]
async fn a_finished_recording_is_neither_continued_nor_appended_to() {
    let redis = RedisServer::start().await;
    let pool = pool(&redis).await;
    let (first, second) = (sink(&pool), sink(&pool));
    let session = session();
    first.open(session.recording_start()).await.unwrap();
    first.write(session.recording(), 1, chunk(1)).await.unwrap();
    let stale = sink(&pool);
    stale
        .continue_recording(session.recording_start())
        .await
        .unwrap();
    let reopened = first.open(session.recording_start()).await;
    let mut holder = session;
    holder.record(1, None, 4);
    let newest = second
        .continue_recording(holder.recording_start())
        .await
        .unwrap();
    holder.catch_up(newest);
    second
        .close(holder.end_record(SessionEnding::Ended, T0))
        .await
        .unwrap();

    let continued = sink(&pool)
        .continue_recording(holder.recording_start())
        .await;
    let appended = stale.write(holder.recording(), 2, chunk(2)).await;

    assert!(
        matches!(reopened, Err(SinkError::Superseded(_))),
        "an open retried after a takeover must not take the recording back: {reopened:?}"
    );
    assert!(
        matches!(continued, Err(SinkError::Finished(_))),
        "{continued:?}"
    );
    assert!(
        matches!(
            appended,
            Err(SinkError::Superseded(_) | SinkError::Finished(_))
        ),
        "{appended:?}"
    );
    let (audio, chunks, ending) = read_back(&pool, &holder).await;
    assert_eq!(
        (audio, chunks, ending.as_deref()),
        (vec![1; 4], 1, Some("ended"))
    );
}

#[tokio::test]
async fn gaps_travel_with_the_recording_to_the_replica_that_continues_it() {
    let redis = RedisServer::start().await;
    let pool = pool(&redis).await;
    let session = session();
    let first = sink(&pool);
    first.open(session.recording_start()).await.unwrap();
    for seq in [5, 8, 9, 12] {
        first
            .write(session.recording(), seq, chunk(1))
            .await
            .unwrap();
    }

    let progress = sink(&pool)
        .continue_recording(session.recording_start())
        .await
        .unwrap();

    let gaps: Vec<(u64, u64)> = progress.gaps.iter().map(|g| (g.from, g.to)).collect();
    assert_eq!(gaps, [(6, 7), (10, 11)]);
    assert_eq!(
        (
            progress.first_seq,
            progress.last_seq,
            progress.totals.chunks
        ),
        (Some(5), Some(12), 4)
    );
}

#[tokio::test]
async fn a_redis_that_lost_acknowledged_audio_is_reported_not_written_over() {
    let (redis, _pool, sink, session) = opened().await;
    sink.write(session.recording(), 1, chunk(1)).await.unwrap();
    sink.write(session.recording(), 2, chunk(2)).await.unwrap();
    // What a failover to a replica that was behind looks like from here.
    let mut raw = redis_client(&redis).await;
    redis::cmd("HSET")
        .arg(format!("test:audio:{}:meta", session.id()))
        .arg("last_seq")
        .arg("1")
        .query_async::<()>(&mut raw)
        .await
        .unwrap();

    let result = sink.write(session.recording(), 3, chunk(3)).await;

    let Err(SinkError::Unavailable(cause)) = result else {
        panic!("{result:?}");
    };
    assert!(cause.to_string().contains("lost data"), "{cause}");
}
