//! Integration tests, in one binary so they link once.

mod deploy;
mod example;
mod exec;
mod limits;
mod process;
mod reload;
mod runtime;
mod soar;
mod support;
mod threatconnect;
