//! Driving adapters: the HTTP API and the WebSocket endpoint, served by one listener.

pub mod auth;
pub mod errors;
pub mod http;
pub mod metrics_listener;
pub mod server;
pub mod tls;
pub mod ws;
