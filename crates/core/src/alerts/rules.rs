//! The alert settings: `alerts:` in the config (rules, sinks) and the per-job overrides of a
//! job file's `alerts:` key, and what they add up to for one job.

use std::time::Duration;

use secrecy::ExposeSecret;

use crate::config::Section;
use crate::config::grammar::SecretSource;
use crate::definition::JobDefinition;
use crate::definition::alerts::no_success_value;
pub use crate::definition::alerts::{JobAlerts, NoSuccessFor};
use crate::schedule::ScheduleKind;

/// The default `failed_runs_in_a_row`.
pub const DEFAULT_FAILED_RUNS: u32 = 3;
/// The default `no_success_for` of a cron job.
pub const CRON_NO_SUCCESS: Duration = Duration::from_secs(25 * 3600);
/// The default sweep period (`alerts.check_every`) for `no_success_for`.
pub const DEFAULT_CHECK_EVERY: Duration = Duration::from_secs(30);
/// The default queue length per sink (`alerts.queue`).
pub const DEFAULT_QUEUE: usize = 100;

/// `alerts:` in the config.
#[derive(Debug, Clone)]
pub struct AlertSettings {
    /// Consecutive failed runs that open an episode (0: the rule is off).
    pub failed_runs_in_a_row: u32,
    pub no_success_for: NoSuccessFor,
    pub job_invalid: bool,
    /// A generic JSON webhook (its URL is treated as a secret: it often carries a token).
    pub webhook_url: Option<SecretSource>,
    /// A Slack-compatible incoming webhook (`{"text": ...}`).
    pub slack_url: Option<SecretSource>,
    pub check_every: Duration,
    pub queue: usize,
}

impl Default for AlertSettings {
    fn default() -> AlertSettings {
        AlertSettings {
            failed_runs_in_a_row: DEFAULT_FAILED_RUNS,
            no_success_for: NoSuccessFor::Default,
            job_invalid: true,
            webhook_url: None,
            slack_url: None,
            check_every: DEFAULT_CHECK_EVERY,
            queue: DEFAULT_QUEUE,
        }
    }
}

impl AlertSettings {
    /// Reads the `alerts:` section; its problems stay in `s` (located, reported with the rest).
    pub fn read(s: &mut Section<'_>) -> AlertSettings {
        let d = AlertSettings::default();
        let no_success_for = match s.value("no_success_for") {
            None => d.no_success_for,
            Some(v) => match no_success_value(v) {
                Ok(n) => n,
                Err(e) => {
                    let msg = format!("`{}`: {e}", s.key_path("no_success_for"));
                    s.problem("no_success_for", msg);
                    d.no_success_for
                }
            },
        };
        let webhook_url = webhook(s, "webhook_url", "webhook_url_file");
        let slack_url = webhook(s, "slack_url", "slack_url_file");
        AlertSettings {
            failed_runs_in_a_row: s.uint("failed_runs_in_a_row", d.failed_runs_in_a_row, 0),
            no_success_for,
            job_invalid: s.bool("job_invalid", d.job_invalid),
            webhook_url,
            slack_url,
            check_every: s.positive_duration("check_every", d.check_every),
            queue: s.uint("queue", d.queue, 1),
        }
    }
}

/// A webhook URL (inline or in a file), checked now so that a bad one is located and reported
/// with every other problem: an `http(s)` URL with a host. Never quoted: it is a credential.
fn webhook(s: &mut Section<'_>, key: &'static str, file_key: &'static str) -> Option<SecretSource> {
    let source = s.secret(key, file_key)?;
    let at = match &source {
        SecretSource::Inline(_) => key,
        SecretSource::File(_) => file_key,
    };
    // A file that cannot be read was reported by `secret` already.
    let url = source.read().ok()?;
    match url::Url::parse(url.expose_secret().trim()) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => Some(source),
        _ => {
            let msg = format!(
                "`{}` must be an http(s) URL such as https://hooks.example.com/... (the value \
                 is not shown: it is a credential)",
                s.key_path(at)
            );
            s.problem(at, msg);
            None
        }
    }
}

/// The rules in force for one job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobRules {
    /// 0: off.
    pub failed_runs_in_a_row: u32,
    pub no_success_for: Option<Duration>,
}

impl AlertSettings {
    /// The config's rules with the job's overrides applied.
    pub fn for_job(&self, def: &JobDefinition) -> JobRules {
        let own = &def.alerts;
        if own.off {
            return JobRules {
                failed_runs_in_a_row: 0,
                no_success_for: None,
            };
        }
        let failed = own
            .failed_runs_in_a_row
            .unwrap_or(self.failed_runs_in_a_row);
        let no_success = match own.no_success_for.unwrap_or(self.no_success_for) {
            NoSuccessFor::Off => None,
            NoSuccessFor::After(d) => Some(d),
            NoSuccessFor::Default => Some(match def.schedule.kind() {
                ScheduleKind::Every(period) => *period * 3,
                _ => CRON_NO_SUCCESS,
            }),
        };
        JobRules {
            failed_runs_in_a_row: failed,
            no_success_for: no_success,
        }
    }

    /// True when a sink is configured (without one the evaluator still keeps episodes).
    pub fn has_sinks(&self) -> bool {
        self.webhook_url.is_some() || self.slack_url.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn load_str(
        path: &std::path::Path,
        text: &str,
        catalog: &dyn crate::definition::Catalog,
    ) -> Result<JobDefinition, Vec<crate::definition::LoadError>> {
        let open = crate::definition::secrets::test_open;
        crate::definition::load_str(path, text, catalog, open)
    }

    struct Any;
    struct Spec;
    impl crate::definition::JobSpec for Spec {}
    impl crate::definition::Catalog for Any {
        fn ids(&self) -> Vec<String> {
            vec!["x".into()]
        }
        fn spec(&self, _id: &str) -> Option<&dyn crate::definition::JobSpec> {
            Some(&Spec)
        }
    }

    /// A job file's `alerts:` key: read into the definition, its mistakes located.
    #[test]
    fn a_job_files_alerts_key_is_read_and_its_errors_located() {
        let path = std::path::Path::new("jobs/j.yaml");
        let def = load_str(
            path,
            "name: J\njob: x\nschedule: {every: 10m}\nalerts: {failed_runs_in_a_row: 5}\n",
            &Any,
        )
        .expect("loads");
        let rules = AlertSettings::default().for_job(&def);
        assert_eq!(rules.failed_runs_in_a_row, 5);
        assert_eq!(rules.no_success_for, Some(Duration::from_secs(1800)));
        let off = load_str(path, "name: J\njob: x\nalerts: off\n", &Any).expect("loads");
        assert_eq!(
            AlertSettings::default().for_job(&off),
            JobRules {
                failed_runs_in_a_row: 0,
                no_success_for: None
            }
        );
        let cron = load_str(
            path,
            "name: J\njob: x\nschedule: {cron: '0 3 * * *'}\n",
            &Any,
        )
        .expect("loads");
        assert_eq!(
            AlertSettings::default().for_job(&cron).no_success_for,
            Some(CRON_NO_SUCCESS)
        );
        let errs = load_str(path, "name: J\njob: x\nalerts:\n  failed_runs: 2\n", &Any)
            .expect_err("refused");
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].line, 4, "{errs:?}");
        assert!(errs[0].message.contains("alerts.failed_runs"), "{errs:?}");
    }

    #[test]
    fn job_overrides_are_read_and_checked() {
        let (a, e) =
            JobAlerts::from_json(&json!({"failed_runs_in_a_row": 5, "no_success_for": "2h"}));
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(a.failed_runs_in_a_row, Some(5));
        assert_eq!(
            a.no_success_for,
            Some(NoSuccessFor::After(Duration::from_secs(7200)))
        );
        assert!(JobAlerts::from_json(&json!("off")).0.off);
        let (_, e) = JobAlerts::from_json(&json!({"failed_runs": 5, "no_success_for": "soon"}));
        let paths: Vec<&str> = e.iter().map(|(p, _)| p.as_str()).collect();
        assert_eq!(paths, ["alerts.failed_runs", "alerts.no_success_for"]);
        let (_, e) = JobAlerts::from_json(&json!([1]));
        assert_eq!(e.len(), 1);
    }
}
