//! The SOAR and ThreatConnect platforms as plugins ([`soarjobd_core::Platform`]): each reads
//! its config section, builds its client and registers the built-in jobs that use it, each
//! job holding its client.
//!
//! `push-case-iocs-to-threatconnect` uses both platforms: the SOAR plugin shares its client
//! ([`Installer::provide`]) and the ThreatConnect plugin, installed after it, hands it to the
//! job. Without the SOAR plugin the job fails with the "not configured" message for SOAR.

use serde_json::Value;

use soarjobd_clients::soar::{SoarClient, SoarConfig};
use soarjobd_clients::threatconnect::{ThreatConnectClient, ThreatConnectConfig};
use soarjobd_core::config::{Origins, Problem, Section, SectionSpec};
use soarjobd_core::{Configured, Installer, Platform, section_secrets};

use super::comment_on_tagged_cases::CommentOnTaggedCases;
use super::push_case_iocs::PushCaseIocs;
use super::secops_script::{SecopsScript, SecopsSettings};
use super::tcex_app::TcexApp;

/// What a job needing SOAR fails with when the `soar` section has no `url`.
pub const SOAR_NOT_CONFIGURED: &str = "no SOAR platform is configured (set soar.url and \
     soar.app_key, e.g. SOARJOBD__SOAR__URL and SOARJOBD__SOAR__APP_KEY)";
/// What a job needing ThreatConnect fails with when the `threatconnect` section has no `url`.
pub const TC_NOT_CONFIGURED: &str = "no ThreatConnect instance is configured (set \
     threatconnect.url, threatconnect.access_id and threatconnect.secret_key)";

/// Google SecOps SOAR: the `soar` section, [`SoarClient`], `comment-on-tagged-cases`.
pub struct SoarPlatform;

impl SoarPlatform {
    /// The keys holding credentials (inline, or in `<key>_file`).
    const SECRETS: &'static [&'static str] = &["app_key", "bearer_token"];
}

impl Platform for SoarPlatform {
    fn spec(&self) -> SectionSpec {
        SoarConfig::SECTION
    }

    fn install(&self, section: &Value, cx: &mut Installer<'_>) -> Vec<String> {
        let mut problems = Vec::new();
        let client = match SoarConfig::read(Some(section), &cx.settings().origins) {
            Ok(Some(cfg)) => match SoarClient::new(&cfg) {
                Ok(c) => Configured::ready(c),
                Err(e) => {
                    problems.push(e.to_string());
                    Configured::missing(format!("the SOAR platform is misconfigured: {e}"))
                }
            },
            Ok(None) => Configured::missing(SOAR_NOT_CONFIGURED),
            Err(found) => {
                problems.extend(found.iter().map(ToString::to_string));
                Configured::missing(format!(
                    "the SOAR platform is misconfigured: {}",
                    found.first().map(ToString::to_string).unwrap_or_default()
                ))
            }
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
    const SECRETS: &'static [&'static str] = &["secret_key", "token"];
}

impl Platform for ThreatConnectPlatform {
    fn spec(&self) -> SectionSpec {
        ThreatConnectConfig::SECTION
    }

    fn install(&self, section: &Value, cx: &mut Installer<'_>) -> Vec<String> {
        let mut problems = Vec::new();
        let client = match ThreatConnectConfig::read(Some(section), &cx.settings().origins) {
            Ok(Some(cfg)) => match ThreatConnectClient::new(&cfg) {
                Ok(c) => Configured::ready(c),
                Err(e) => {
                    problems.push(e.to_string());
                    Configured::missing(format!("the ThreatConnect instance is misconfigured: {e}"))
                }
            },
            Ok(None) => Configured::missing(TC_NOT_CONFIGURED),
            Err(found) => {
                problems.extend(found.iter().map(ToString::to_string));
                Configured::missing(format!(
                    "the ThreatConnect instance is misconfigured: {}",
                    found.first().map(ToString::to_string).unwrap_or_default()
                ))
            }
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

/// SecOps job scripts (`secops-script`): the `secops` section (`python`, default `python3`),
/// run against the SOAR client [`SoarPlatform`] shares (install it first).
pub struct SecopsPlatform;

impl SecopsPlatform {
    /// How the config loader checks the `secops` section.
    pub const SECTION: SectionSpec = SectionSpec {
        name: "secops",
        check: |value, origins| {
            SecopsSettings::read(value, origins, &soarjobd_core::config::Settings::default()).1
        },
    };
}

impl Platform for SecopsPlatform {
    fn spec(&self) -> SectionSpec {
        Self::SECTION
    }

    fn install(&self, section: &Value, cx: &mut Installer<'_>) -> Vec<String> {
        let (settings, problems) =
            SecopsSettings::read(Some(section), &cx.settings().origins, cx.settings());
        // Instance parameters go to scripts, never to a log.
        cx.redact(settings.integrations.secrets().into_iter().map(Into::into));
        let soar = cx
            .get::<Configured<SoarClient>>()
            .unwrap_or_else(|| Configured::missing(SOAR_NOT_CONFIGURED));
        cx.register(SecopsScript::new(soar, settings));
        problems.iter().map(ToString::to_string).collect()
    }
}

/// TcEx job apps (`tcex-app`): the `tcex` section (`python`, default `python3`), run against
/// the ThreatConnect client [`ThreatConnectPlatform`] shares (install it first).
pub struct TcexPlatform;

impl TcexPlatform {
    /// How the config loader checks the `tcex` section.
    pub const SECTION: SectionSpec = SectionSpec {
        name: "tcex",
        check: |value, origins| TcexPlatform::read(value, origins).1,
    };

    fn read(value: Option<&Value>, origins: &Origins) -> (Option<String>, Vec<Problem>) {
        let mut s = Section::new("tcex", value, origins);
        let python = s.string("python").filter(|p| !p.trim().is_empty());
        (python, s.finish())
    }
}

impl Platform for TcexPlatform {
    fn spec(&self) -> SectionSpec {
        Self::SECTION
    }

    fn install(&self, section: &Value, cx: &mut Installer<'_>) -> Vec<String> {
        let (python, problems) = Self::read(Some(section), &cx.settings().origins);
        let tc = cx
            .get::<Configured<ThreatConnectClient>>()
            .unwrap_or_else(|| Configured::missing(TC_NOT_CONFIGURED));
        cx.register(TcexApp::new(tc, python));
        problems.iter().map(ToString::to_string).collect()
    }
}
