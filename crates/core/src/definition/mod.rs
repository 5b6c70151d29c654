//! Job definition files -> validated [`JobDefinition`]s, with every error located.
//!
//! A job file is the Google SecOps SOAR job YAML (`name`, `parameters`, `description`,
//! `integration`, `creator`, `run_interval_in_seconds`, ...) plus scheduling keys (`job`,
//! `schedule`, `timeout`, `overlap`, `misfire`) and the keys its implementation declares
//! (`command`, `working_dir`, `env` for `exec`). Loading is all-or-nothing per file, but never
//! stops at the first problem: every error of every file is collected, each naming
//! `path:line:column` and what was expected, so `check` can list them all at once.
//!
//! Invariant: this module never names a concrete job. The binary assembles the registry and
//! passes it in as a [`Catalog`].
//!
//! The module's parts: `model` (what a job is), `loading` (files and folders from disk),
//! `parsing` (the validator of one parsed file); `params`, `limits`, `secrets`,
//! `marketplace` and `alerts` are what their names say.

pub mod alerts;
pub mod limits;
mod loading;
mod marketplace;
mod model;
pub mod params;
mod parsing;
pub mod secrets;

pub use crate::config::grammar::suggest;
pub use crate::config::located;
pub use loading::{
    is_job_file, load_dir, load_dir_with, load_file, load_file_with, load_str, load_str_with,
};
pub use marketplace::{SECOPS_ONLY_KEYS, job_id_from_stem};
pub use model::{
    Catalog, DEFAULT_INTERVAL_SECS, DEFAULT_TIMEOUT, FieldError, JobDefinition, JobSpec, LoadError,
    LoadOptions, LoadReport, LoadedJobs, Misfire, Overlap, RunLogMode,
};
pub use params::{ParamSpec, ParamType, ParamValue, Parameter, Parameters, RawValue};
pub use parsing::yaml_to_json;
pub use secrets::{OpenFile, SecretsPolicy};

// What the unit tests (`use super::*`) name besides the public items.
#[cfg(test)]
use crate::schedule::Schedule;
#[cfg(test)]
use parsing::TOP_KEYS;
#[cfg(test)]
use std::path::Path;
#[cfg(test)]
use std::time::Duration;
#[cfg(test)]
use yaml_serde::Value as Yaml;

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;
