//! In-process simulators of the platforms soarjobd talks to, for tests, benchmarks and `demo`.
//!
//! Invariant: nothing here shares a wire type with [`crate::soar`] or [`crate::threatconnect`].
//! Each side is written from the spec on its own, so a misreading of the wire format cannot hide
//! in a shared struct.

pub mod soar;
pub mod threatconnect;
