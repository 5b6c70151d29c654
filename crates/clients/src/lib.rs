//! soarjobd-clients: the platform clients and the transport policy they share.
//!
//! [`http`] is the one transport policy (timeouts, retries, TLS, redaction of what is logged);
//! [`soar`] and [`threatconnect`] are the clients. They read their settings through the core's
//! config grammar and know nothing of jobs or the simulators (which their tests use as
//! dev-dependency only).

// Three public modules, each a namespace of its own: the two clients, whose many names
// would collide or mislead side by side at the root (`soar::Alert`, `soar::Entity`;
// `threatconnect::Group`, `threatconnect::Attribute`) and which keep their own modules
// private behind a few `pub use`; and `http`, the transport policy any platform client is
// written on, also one a custom binary's own `Platform` brings (`http::HttpClient`,
// `http::Request`). The alert sinks are private: `sinks` is all the daemon needs.
pub mod http;
pub mod soar;
pub mod threatconnect;

mod alert_sinks;

pub use alert_sinks::{EmailSink, Shape, SinkRetry, WebhookSink, pagerduty_dedup_key, sinks};
