//! AIMCS use cases. The [`IngestService`] owns the ports and carries out what the domain
//! decides: it registers connections, feeds audio to the sink before acknowledging it, and
//! reports health and status. It never sees HTTP, WebSocket frames, JSON or base64.
//!
//! # Layout
//! - [`service`]: `IngestService` and one error enum per use case.

pub mod service;

pub use service::{
    CloseConnectionError, HandleClientMessageError, HealthReport, IngestService, NewConnection,
    OpenConnectionError, ReportError, StatusReport,
};
