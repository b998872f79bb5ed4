//! What the operator tells about itself: logs, Prometheus metrics, and the HTTP endpoints that
//! serve metrics and health.

pub mod http;
pub mod logging;
pub mod metrics;

pub use logging::{LogFormat, init_logging};
pub use metrics::Metrics;
