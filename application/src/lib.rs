//! AIMCS use cases. The [`IngestService`] owns the ports and carries out what the domain
//! decides: it registers connections, feeds audio to the sink before acknowledging it, and
//! reports health and status. It never sees HTTP, WebSocket frames, JSON or base64.
//!
//! # Layout
//! - [`service`]: `IngestService` and one error enum per use case.
//! - `sessions`: the registry of declared sessions, for resumes across connections.

pub mod service;
mod sessions;

pub use service::{
    CloseConnectionError, ClusterReport, HandleClientMessageError, HealthReport, IngestService,
    NewConnection, OpenConnectionError, ReadinessError, ReportError, ServiceConfig, StatusReport,
};
