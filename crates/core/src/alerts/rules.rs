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
    /// A Microsoft Teams incoming webhook (a message card).
    pub teams_url: Option<SecretSource>,
    /// PagerDuty Events API v2.
    pub pagerduty: Option<PagerDutySettings>,
    /// Email over SMTP.
    pub email: Option<EmailSettings>,
    /// How every sink retries a notification.
    pub retry: AlertRetry,
    pub check_every: Duration,
    pub queue: usize,
}

/// `alerts.pagerduty`: an Events API v2 integration.
#[derive(Debug, Clone)]
pub struct PagerDutySettings {
    /// The integration's routing key (a credential).
    pub routing_key: SecretSource,
    /// The events endpoint.
    pub url: String,
    /// `critical`, `error`, `warning` or `info`.
    pub severity: &'static str,
}

/// The PagerDuty Events API v2 endpoint.
pub const PAGERDUTY_URL: &str = "https://events.pagerduty.com/v2/enqueue";

/// How the email sink secures its SMTP connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain connection upgraded by `STARTTLS`, which is required (port 587).
    StartTls,
    /// TLS from the first byte (port 465).
    Tls,
}

/// `alerts.email`: SMTP.
#[derive(Debug, Clone)]
pub struct EmailSettings {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    pub username: Option<String>,
    /// The SMTP password (a credential).
    pub password: Option<SecretSource>,
    pub from: String,
    pub to: Vec<String>,
    /// A PEM file of extra certificate authorities (a private relay's).
    pub ca_file: Option<std::path::PathBuf>,
}

/// `alerts.retry`: how a sink retries one notification (exponential backoff with jitter).
/// While it retries, later notifications wait in its queue, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertRetry {
    /// Attempts in all (1: no retry).
    pub attempts: usize,
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// The time allowed for one attempt.
    pub timeout: Duration,
}

impl Default for AlertRetry {
    /// Ten attempts, from 1 s doubling to at most 60 s: about four minutes of a receiver being
    /// down are ridden out.
    fn default() -> AlertRetry {
        AlertRetry {
            attempts: 10,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
            timeout: Duration::from_secs(10),
        }
    }
}

impl Default for AlertSettings {
    fn default() -> AlertSettings {
        AlertSettings {
            failed_runs_in_a_row: DEFAULT_FAILED_RUNS,
            no_success_for: NoSuccessFor::Default,
            job_invalid: true,
            webhook_url: None,
            slack_url: None,
            teams_url: None,
            pagerduty: None,
            email: None,
            retry: AlertRetry::default(),
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
        let teams_url = webhook(s, "teams_url", "teams_url_file");
        let pagerduty = nested(s, "pagerduty", pagerduty);
        let email = nested(s, "email", email);
        let retry = nested(s, "retry", retry).unwrap_or_default();
        AlertSettings {
            failed_runs_in_a_row: s.uint("failed_runs_in_a_row", d.failed_runs_in_a_row, 0),
            no_success_for,
            job_invalid: s.bool("job_invalid", d.job_invalid),
            webhook_url,
            slack_url,
            teams_url,
            pagerduty,
            email,
            retry,
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

/// A mapping under `alerts:` read by `read`, its problems handed back; `None` when absent.
fn nested<T>(
    s: &mut Section<'_>,
    key: &'static str,
    read: fn(&mut Section<'_>) -> Option<T>,
) -> Option<T> {
    s.value(key)?;
    let mut sub = s.section(key);
    let out = read(&mut sub);
    s.absorb(sub.finish());
    out
}

fn pagerduty(s: &mut Section<'_>) -> Option<PagerDutySettings> {
    let routing_key = s.secret("routing_key", "routing_key_file");
    if routing_key.is_none() && !s.has_problems() {
        let msg = format!(
            "`{}` (or `{}`) is required",
            s.key_path("routing_key"),
            s.key_path("routing_key_file")
        );
        s.section_problem(msg);
    }
    let url = s
        .http_url("url", "https://events.pagerduty.com/v2/enqueue")
        .unwrap_or_else(|| PAGERDUTY_URL.to_string());
    let severity = s.choice(
        "severity",
        &[
            ("critical", "critical"),
            ("error", "error"),
            ("warning", "warning"),
            ("info", "info"),
        ],
        "error",
    );
    Some(PagerDutySettings {
        routing_key: routing_key?,
        url,
        severity,
    })
}

fn email(s: &mut Section<'_>) -> Option<EmailSettings> {
    let host = s.required_string("host");
    let tls = s.choice(
        "tls",
        &[("starttls", SmtpTls::StartTls), ("tls", SmtpTls::Tls)],
        SmtpTls::StartTls,
    );
    let default_port = match tls {
        SmtpTls::StartTls => 587,
        SmtpTls::Tls => 465,
    };
    let port = s.uint("port", default_port, 1);
    let username = s.string("username").filter(|u| !u.trim().is_empty());
    let password = s.secret("password", "password_file");
    if username.is_some() != password.is_some() {
        let msg = format!(
            "set both `{}` and `{}` (or `{}`), or neither",
            s.key_path("username"),
            s.key_path("password"),
            s.key_path("password_file")
        );
        s.section_problem(msg);
    }
    let from = s.required_string("from");
    let to = s.string_list("to").unwrap_or_default();
    if to.is_empty() {
        let msg = format!("`{}` must list at least one address", s.key_path("to"));
        s.section_problem(msg);
    }
    for addr in from.iter().chain(to.iter()) {
        if !is_address(addr) {
            let msg = format!(
                "`{addr}` in `{}` is not an email address",
                s.key_path(if Some(addr) == from.as_ref() {
                    "from"
                } else {
                    "to"
                })
            );
            s.section_problem(msg);
        }
    }
    let ca_file = s.path("ca_file");
    if let Some(p) = &ca_file
        && let Err(e) = std::fs::metadata(p)
    {
        let msg = format!(
            "`{}`: cannot read {}: {e}",
            s.key_path("ca_file"),
            p.display()
        );
        s.problem("ca_file", msg);
    }
    if to.is_empty() {
        return None;
    }
    Some(EmailSettings {
        host: host?,
        port,
        tls,
        username,
        password,
        from: from?,
        to,
        ca_file,
    })
}

/// `local@domain` (possibly as `Name <local@domain>`); the sink parses it fully.
fn is_address(a: &str) -> bool {
    let inner = match (a.find('<'), a.rfind('>')) {
        (Some(l), Some(r)) if l < r => &a[l + 1..r],
        _ => a.trim(),
    };
    matches!(inner.split_once('@'), Some((l, d)) if !l.is_empty() && (d.contains('.') || d == "localhost"))
        && !inner.contains(char::is_whitespace)
}

fn retry(s: &mut Section<'_>) -> Option<AlertRetry> {
    let d = AlertRetry::default();
    let base_delay = s.positive_duration("base_delay", d.base_delay);
    let max_delay = s.positive_duration("max_delay", d.max_delay);
    if max_delay < base_delay {
        let msg = format!(
            "`{}` must not be shorter than `{}`",
            s.key_path("max_delay"),
            s.key_path("base_delay")
        );
        s.problem("max_delay", msg);
    }
    Some(AlertRetry {
        attempts: s.uint("attempts", d.attempts, 1),
        base_delay,
        max_delay,
        timeout: s.positive_duration("timeout", d.timeout),
    })
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
        self.webhook_url.is_some()
            || self.slack_url.is_some()
            || self.teams_url.is_some()
            || self.pagerduty.is_some()
            || self.email.is_some()
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
