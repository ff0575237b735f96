//! Driven adapters: implementations of the domain's ports.

pub mod fanout_audio_sink;
pub mod file_audio_sink;
pub mod instrumented_audio_sink;
pub mod memory_connection_store;
pub mod null_audio_sink;
pub mod redis;
pub mod system_clock;

pub use fanout_audio_sink::FanoutAudioSink;
pub use file_audio_sink::{FileAudioSink, FileSinkSettings, FsyncPolicy};
pub use instrumented_audio_sink::InstrumentedAudioSink;
pub use memory_connection_store::InMemoryConnectionStore;
pub use null_audio_sink::NullAudioSink;
pub use redis::{RedisConnectionStore, RedisPool, RedisSettings, RedisStreamAudioSink};
pub use system_clock::SystemClock;
