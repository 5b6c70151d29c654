//! Integration tests, in one binary so they link once.

mod deploy;
mod example;
mod exec;
mod overlap;
mod process;
mod runtime;
mod soar;
mod store_faults;
mod support;
mod threatconnect;
