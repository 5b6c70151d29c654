//! The SOAR and ThreatConnect platforms as plugins ([`crate::platform::Platform`]): each reads
//! its config section, builds its client and registers the built-in jobs that use it, each
//! job holding its client.
//!
//! `push-case-iocs-to-threatconnect` uses both platforms: the SOAR plugin shares its client
//! ([`Installer::provide`]) and the ThreatConnect plugin, installed after it, hands it to the
//! job. Without the SOAR plugin the job fails with the "not configured" message for SOAR.

use serde_json::Value;

use crate::platform::{Configured, Installer, Platform, has_url, section_secrets};
use crate::soar::{SoarClient, SoarConfig};
use crate::threatconnect::{ThreatConnectClient, ThreatConnectConfig};

use super::comment_on_tagged_cases::CommentOnTaggedCases;
use super::push_case_iocs::PushCaseIocs;

/// What a job needing SOAR fails with when the `soar` section has no `url`.
pub const SOAR_NOT_CONFIGURED: &str = "no SOAR platform is configured (set soar.url and \
     soar.app_key, e.g. SOARJOBD__SOAR__URL and SOARJOBD__SOAR__APP_KEY)";
/// What a job needing ThreatConnect fails with when the `threatconnect` section has no `url`.
pub const TC_NOT_CONFIGURED: &str = "no ThreatConnect instance is configured (set \
     threatconnect.url, threatconnect.access_id and threatconnect.secret_key)";

/// Google SecOps SOAR: the `soar` section, [`SoarClient`], `comment-on-tagged-cases`.
pub struct SoarPlatform;

impl SoarPlatform {
    /// The keys of the `soar` section (see [`SoarConfig`]).
    pub const KEYS: &'static [&'static str] = &[
        "url",
        "api",
        "app_key",
        "app_key_file",
        "bearer_token",
        "bearer_token_file",
        "verify_tls",
        "timeout",
        "connect_timeout",
        "max_concurrency",
        "rate_limit",
        "one_platform_url",
        "project",
        "location",
        "instance",
    ];
    /// The keys holding credentials (inline, or in `<key>_file`).
    const SECRETS: &'static [&'static str] = &["app_key", "bearer_token"];
}

impl Platform for SoarPlatform {
    fn section(&self) -> &'static str {
        "soar"
    }

    fn keys(&self) -> &'static [&'static str] {
        Self::KEYS
    }

    fn install(&self, section: &Value, cx: &mut Installer<'_>) -> Vec<String> {
        let mut problems = Vec::new();
        let client = if has_url(section) {
            match SoarConfig::from_value(section).and_then(|cfg| SoarClient::new(&cfg)) {
                Ok(c) => Configured::ready(c),
                Err(e) => {
                    problems.push(e.to_string());
                    Configured::missing(format!("the SOAR platform is misconfigured: {e}"))
                }
            }
        } else {
            Configured::missing(SOAR_NOT_CONFIGURED)
        };
        cx.redact(section_secrets(section, Self::SECRETS));
        cx.register(CommentOnTaggedCases::new(client.clone()));
        cx.provide(client);
        problems
    }
}

/// ThreatConnect: the `threatconnect` section, [`ThreatConnectClient`],
/// `push-case-iocs-to-threatconnect` (which also needs SOAR: install [`SoarPlatform`] first).
pub struct ThreatConnectPlatform;

impl ThreatConnectPlatform {
    /// The keys of the `threatconnect` section (see [`ThreatConnectConfig`]).
    pub const KEYS: &'static [&'static str] = &[
        "url",
        "access_id",
        "secret_key",
        "secret_key_file",
        "token",
        "token_file",
        "verify_tls",
        "timeout",
        "max_concurrency",
        "rate_limit",
        "poll_initial",
        "poll_interval_max",
        "poll_max",
        "max_indicators_per_job",
        "max_upload_bytes",
    ];
    const SECRETS: &'static [&'static str] = &["secret_key", "token"];
}

impl Platform for ThreatConnectPlatform {
    fn section(&self) -> &'static str {
        "threatconnect"
    }

    fn keys(&self) -> &'static [&'static str] {
        Self::KEYS
    }

    fn install(&self, section: &Value, cx: &mut Installer<'_>) -> Vec<String> {
        let mut problems = Vec::new();
        let client = if has_url(section) {
            let built = ThreatConnectConfig::from_value(section)
                .map_err(|e| e.to_string())
                .and_then(|cfg| ThreatConnectClient::new(&cfg).map_err(|e| e.to_string()));
            match built {
                Ok(c) => Configured::ready(c),
                Err(e) => {
                    let m = format!("the ThreatConnect instance is misconfigured: {e}");
                    problems.push(e);
                    Configured::missing(m)
                }
            }
        } else {
            Configured::missing(TC_NOT_CONFIGURED)
        };
        cx.redact(section_secrets(section, Self::SECRETS));
        let soar = cx
            .get::<Configured<SoarClient>>()
            .unwrap_or_else(|| Configured::missing(SOAR_NOT_CONFIGURED));
        cx.register(PushCaseIocs::new(soar, client.clone()));
        cx.provide(client);
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Every declared key is one the section's config type accepts.
    #[test]
    fn the_declared_keys_are_the_config_types_keys() {
        for key in SoarPlatform::KEYS {
            let mut v = json!({ "url": "http://h", "app_key": "k" });
            v[*key] = json!("x");
            if let Err(e) = SoarConfig::from_value(&v) {
                assert!(!e.to_string().contains("unknown field"), "{key}: {e}");
            }
        }
        for key in ThreatConnectPlatform::KEYS {
            let mut v = json!({ "url": "http://h/api" });
            v[*key] = json!("x");
            if let Err(e) = ThreatConnectConfig::from_value(&v) {
                assert!(!e.to_string().contains("unknown field"), "{key}: {e}");
            }
        }
        assert!(
            SoarConfig::from_value(&json!({"url": "http://h", "nope": 1}))
                .unwrap_err()
                .to_string()
                .contains("unknown field")
        );
    }
}
