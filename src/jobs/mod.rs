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

/// The platform config sections, for [`crate::config::load_with`]: the config loader checks
/// them with every other key, so `check` and `run` report all problems at once.
pub fn config_sections() -> Vec<crate::config::SectionSpec> {
    vec![
        crate::soar::SoarConfig::SECTION,
        crate::threatconnect::ThreatConnectConfig::SECTION,
    ]
}

/// Builds the API clients the config describes. A platform without a `url` is not
/// configured, and jobs that need it fail with a message saying which keys to set. Every
/// problem of every section is reported at once, located where the config was loaded.
pub fn build_clients(settings: &Settings) -> Result<Clients, String> {
    let mut clients = Clients::default();
    let origins = &settings.origins;
    let soar = crate::soar::SoarConfig::read(
        Some(settings.section(crate::soar::SoarConfig::SECTION.name)),
        origins,
    );
    let tc = crate::threatconnect::ThreatConnectConfig::read(
        Some(settings.section(crate::threatconnect::ThreatConnectConfig::SECTION.name)),
        origins,
    );
    let mut problems: Vec<String> = Vec::new();
    match soar {
        Ok(Some(cfg)) => match crate::soar::SoarClient::new(&cfg) {
            Ok(c) => clients.soar = Some(c),
            Err(e) => problems.push(e.to_string()),
        },
        Ok(None) => {}
        Err(p) => problems.extend(p.iter().map(ToString::to_string)),
    }
    match tc {
        Ok(Some(cfg)) => match crate::threatconnect::ThreatConnectClient::new(&cfg) {
            Ok(c) => clients.threatconnect = Some(c),
            Err(e) => problems.push(e.to_string()),
        },
        Ok(None) => {}
        Err(p) => problems.extend(p.iter().map(ToString::to_string)),
    }
    if !problems.is_empty() {
        return Err(problems.join("\n  "));
    }
    Ok(clients.with_redacted_secrets(platform_secrets(settings)))
}

/// The platform credentials in the settings (inline values and the current contents of their
/// files), so that runs redact them from their output. A file that cannot be read is skipped
/// here: building its client reports it.
fn platform_secrets(settings: &Settings) -> Vec<secrecy::SecretString> {
    let mut out = Vec::new();
    for (section, keys) in [
        (settings.section("soar"), ["app_key", "bearer_token"]),
        (settings.section("threatconnect"), ["secret_key", "token"]),
    ] {
        for key in keys {
            if let Some(v) = section.get(key).and_then(|v| v.as_str()) {
                let v = crate::config::grammar::trim_one_newline(v);
                out.push(secrecy::SecretString::from(v.to_string()));
            }
            let file = section.get(format!("{key}_file")).and_then(|v| v.as_str());
            if let Some(f) =
                file.and_then(|f| crate::config::grammar::read_secret_file(f.as_ref()).ok())
            {
                out.push(f.secret);
            }
        }
    }
    out.retain(|s| !secrecy::ExposeSecret::expose_secret(s).trim().is_empty());
    out
}
