//! The `admin` section of the config file: where the admin server listens and its tokens.
//!
//! ```yaml
//! admin:
//!   listen: 127.0.0.1:9180     # `off` disables the server
//!   read_token_file: /run/secrets/soarjobd-read
//!   operator_token_file: /run/secrets/soarjobd-operator
//! ```
//!
//! Binding to anything but a loopback address without tokens is a config error: the API can
//! start and cancel runs, and the status page shows every job.

use std::net::SocketAddr;

use secrecy::SecretString;
use serde_json::Value;
use soarjobd_core::config::grammar::SecretSource;
use soarjobd_core::config::{Origins, Problem, Section, SectionSpec, Settings};

/// The section's key.
pub const SECTION: &str = "admin";
/// The default listen address: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9180";

/// The admin server's settings.
#[derive(Clone, Default)]
pub struct AdminSettings {
    /// `None`: the server is off.
    pub listen: Option<SocketAddr>,
    /// `listen` was written in the config (not the default): a busy address is then an
    /// error, while the default address being taken (another daemon on the host) only
    /// leaves this daemon without its admin server, with a warning.
    pub listen_set: bool,
    /// Read-only calls (status page, GETs, metrics are open on loopback only).
    pub read_token: Option<SecretString>,
    /// Mutating calls (run now, pause, resume, cancel); reads too.
    pub operator_token: Option<SecretString>,
}

impl std::fmt::Debug for AdminSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the tokens.
        f.debug_struct("AdminSettings")
            .field("listen", &self.listen)
            .field("read_token", &self.read_token.is_some())
            .field("operator_token", &self.operator_token.is_some())
            .finish()
    }
}

/// The section declaration for `config::load_with`, so its problems are reported with the rest.
pub fn spec() -> SectionSpec {
    SectionSpec {
        name: SECTION,
        check: |v, origins| read(v, origins).err().unwrap_or_default(),
    }
}

/// The admin settings of `settings` (its `admin` section, or the defaults).
pub fn from_settings(settings: &Settings) -> Result<AdminSettings, Vec<Problem>> {
    let v = match settings.section(SECTION) {
        Value::Null => None,
        v => Some(v),
    };
    read(v, &settings.origins)
}

fn read(value: Option<&Value>, origins: &Origins) -> Result<AdminSettings, Vec<Problem>> {
    let mut s = Section::new(SECTION, value, origins);
    let listen_set = s.is_set("listen");
    let listen_text = s.string("listen").unwrap_or_else(|| DEFAULT_LISTEN.into());
    let listen = if listen_text.trim() == "off" {
        None
    } else {
        match listen_text.trim().parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                s.problem(
                    "listen",
                    format!(
                        "`admin.listen` must be an address and port such as {DEFAULT_LISTEN} \
                         (port 0 picks a free one), or `off`; got {listen_text:?}"
                    ),
                );
                None
            }
        }
    };
    let read_token = token(&mut s, "read_token", "read_token_file");
    let operator_token = token(&mut s, "operator_token", "operator_token_file");
    if let Some(addr) = listen
        && !addr.ip().is_loopback()
        && read_token.is_none()
        && operator_token.is_none()
    {
        s.problem(
            "listen",
            format!(
                "`admin.listen` is {addr}, not a loopback address: set `admin.read_token_file` \
                 and `admin.operator_token_file` (or the inline keys) so the API is not open \
                 to the network"
            ),
        );
    }
    let problems = s.finish();
    if problems.is_empty() {
        Ok(AdminSettings {
            listen,
            listen_set,
            read_token,
            operator_token,
        })
    } else {
        Err(problems)
    }
}

fn token(s: &mut Section<'_>, key: &'static str, file_key: &'static str) -> Option<SecretString> {
    let source = s.secret(key, file_key)?;
    match source {
        SecretSource::Inline(t) => Some(t),
        SecretSource::File(_) => match source.read() {
            Ok(t) => Some(t),
            Err(e) => {
                s.problem(file_key, format!("`admin.{file_key}`: {e}"));
                None
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn settings(v: Value) -> Settings {
        let mut s = Settings::default();
        s.set_section(SECTION, v);
        s
    }

    #[test]
    fn defaults_to_loopback_and_off_disables() {
        let a = from_settings(&Settings::default()).unwrap();
        assert_eq!(a.listen, Some(DEFAULT_LISTEN.parse().unwrap()));
        let a = from_settings(&settings(json!({"listen": "off"}))).unwrap();
        assert_eq!(a.listen, None);
    }

    #[test]
    fn a_public_bind_needs_tokens_and_problems_are_all_reported() {
        let e = from_settings(&settings(json!({"listen": "0.0.0.0:9180", "tokn": 1}))).unwrap_err();
        let text: Vec<String> = e.iter().map(|p| p.to_string()).collect();
        assert!(
            text.iter().any(|t| t.contains("not a loopback")),
            "{text:?}"
        );
        assert!(text.iter().any(|t| t.contains("admin.tokn")), "{text:?}");
        let ok = from_settings(&settings(
            json!({"listen": "0.0.0.0:9180", "operator_token": "op-secret"}),
        ))
        .unwrap();
        assert!(!format!("{ok:?}").contains("op-secret"));
        let bad = from_settings(&settings(json!({"listen": "localhost"}))).unwrap_err();
        assert_eq!(bad.len(), 1);
    }
}
