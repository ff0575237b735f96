//! Black-box tests: the real service on a free loopback port, driven by a real HTTP client and
//! a real WebSocket client, one module per surface.

mod asyncapi;
mod chat;
mod compat;
mod cors;
mod hardening;
mod http;
mod sessions;
mod shutdown;
mod tls;
mod transport;
mod ws;
