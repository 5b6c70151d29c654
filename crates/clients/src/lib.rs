//! soarjobd-clients: the platform clients and the transport policy they share.
//!
//! [`http`] is the one transport policy (timeouts, retries, TLS, redaction of what is logged);
//! [`soar`] and [`threatconnect`] are the clients. They read their settings through the core's
//! config grammar and know nothing of jobs or the simulators (which their tests use as
//! dev-dependency only).

pub mod alert_sinks;
pub mod http;
pub mod soar;
pub mod threatconnect;
