//! Built-in job implementations.

pub mod exec;

use crate::job::Registry;

/// Registers every built-in job.
pub fn register_builtins(r: &mut Registry) {
    r.register(exec::Exec);
}

/// Builds the API clients the config describes (none when a section is absent).
pub fn build_clients(_settings: &crate::config::Settings) -> Result<crate::job::Clients, String> {
    Ok(crate::job::Clients::default())
}
