//! Integration tests, in one binary so they link once.

mod containment;
mod deploy;
mod example;
mod exec;
mod exec_output;
mod process;
mod redaction;
mod runtime;
mod soar;
mod support;
mod threatconnect;
