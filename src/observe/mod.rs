//! What `cchost run` shows about itself (docs/observability.md):
//!
//! - [`metrics`]: Prometheus metrics, kept in one process-wide registry and rendered in
//!   the text exposition format;
//! - [`health`]: which parts of the daemon are serving (liveness and readiness);
//! - [`http`]: the small HTTP server for `/healthz`, `/readyz` and `/metrics`;
//! - [`sd_notify`]: systemd's notification protocol (READY, WATCHDOG, STOPPING);
//! - [`events`]: Kubernetes Events on the Node for what an operator must act on.
//!
//! This module is below the services: anything may count a metric or raise an event.

pub mod events;
pub mod health;
pub mod http;
pub mod metrics;
pub mod sd_notify;
