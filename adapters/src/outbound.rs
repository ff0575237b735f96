//! Driven adapters: implementations of the domain's ports.

pub mod memory_connection_store;
pub mod null_audio_sink;
pub mod system_clock;

pub use memory_connection_store::InMemoryConnectionStore;
pub use null_audio_sink::NullAudioSink;
pub use system_clock::SystemClock;
