//! Integration tests, in one binary so they link once.

mod containment;
mod deploy;
mod example;
mod exec;
mod process;
mod runtime;
mod soar;
mod support;
mod threatconnect;
