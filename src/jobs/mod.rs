//! Built-in job implementations, and the API clients they are handed.

pub mod cases;
pub mod comment_on_tagged_cases;
pub mod exec;
pub mod push_case_iocs;

use crate::config::Settings;
use crate::job::{Clients, Registry};

/// Registers every built-in job.
pub fn register_builtins(r: &mut Registry) {
    r.register(exec::Exec);
    r.register(comment_on_tagged_cases::CommentOnTaggedCases);
    r.register(push_case_iocs::PushCaseIocs);
}

/// Builds the API clients the config describes. A platform without a `url` is not
/// configured, and jobs that need it fail with a message saying which keys to set.
pub fn build_clients(settings: &Settings) -> Result<Clients, String> {
    let mut clients = Clients::default();
    if has_url(&settings.soar) {
        let cfg = crate::soar::SoarConfig::from_value(&settings.soar).map_err(|e| e.to_string())?;
        clients.soar = Some(crate::soar::SoarClient::new(&cfg).map_err(|e| e.to_string())?);
    }
    if has_url(&settings.threatconnect) {
        let cfg = crate::threatconnect::ThreatConnectConfig::from_value(&settings.threatconnect)
            .map_err(|e| e.to_string())?;
        clients.threatconnect =
            Some(crate::threatconnect::ThreatConnectClient::new(&cfg).map_err(|e| e.to_string())?);
    }
    Ok(clients.with_redacted_secrets(platform_secrets(settings)))
}

/// The platform credentials in the settings (inline values and the current contents of their
/// files), so that runs redact them from their output. A file that cannot be read is skipped
/// here: building its client reports it.
fn platform_secrets(settings: &Settings) -> Vec<secrecy::SecretString> {
    let mut out = Vec::new();
    for (section, keys) in [
        (&settings.soar, ["app_key", "bearer_token"]),
        (&settings.threatconnect, ["secret_key", "token"]),
    ] {
        for key in keys {
            if let Some(v) = section.get(key).and_then(|v| v.as_str()) {
                out.push(secrecy::SecretString::from(v.trim().to_string()));
            }
            let file = section.get(format!("{key}_file")).and_then(|v| v.as_str());
            if let Some(text) = file.and_then(|f| std::fs::read_to_string(f).ok()) {
                out.push(secrecy::SecretString::from(text.trim().to_string()));
            }
        }
    }
    out.retain(|s| !secrecy::ExposeSecret::expose_secret(s).is_empty());
    out
}

fn has_url(section: &serde_json::Value) -> bool {
    section
        .get("url")
        .and_then(|u| u.as_str())
        .is_some_and(|u| !u.is_empty())
}
