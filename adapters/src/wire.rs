//! Wire notation shared by the HTTP and WebSocket adapters: how timestamps are written, and
//! how the original (JavaScript) service read and wrote JSON and form bodies, which clients
//! depend on.

pub(crate) mod form;
pub(crate) mod js;
pub(crate) mod json_depth;
pub(crate) mod timestamp;
