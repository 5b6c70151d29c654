//! A job file's `alerts:` key (its overrides of the config's alert rules) and the
//! `no_success_for` value both the job file and the config's `alerts:` section take. What the
//! rules add up to for one job is `crate::alerts::rules`.

use std::time::Duration;

use serde_json::Value;

use crate::config::grammar::duration_value;

/// `no_success_for`: how long a job may go without a successful run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoSuccessFor {
    /// 3 x the job's interval, or 25 h for a cron schedule.
    Default,
    Off,
    After(Duration),
}

/// A job file's `alerts:` key: `off`, or a mapping overriding the config's rules.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobAlerts {
    /// `alerts: off`: no alert about this job (a broken file still is `job_invalid`).
    pub off: bool,
    pub failed_runs_in_a_row: Option<u32>,
    pub no_success_for: Option<NoSuccessFor>,
}

impl JobAlerts {
    /// Reads the value of a job file's `alerts:` key (as JSON). Problems come back as
    /// `(key path, message)` for the loader to locate.
    pub fn from_json(v: &Value) -> (JobAlerts, Vec<(String, String)>) {
        let mut errors = Vec::new();
        let mut a = JobAlerts::default();
        match v {
            Value::Null => {}
            Value::Bool(false) => a.off = true,
            Value::String(s) if matches!(s.trim(), "off" | "false" | "no") => a.off = true,
            Value::Object(m) => {
                for (k, val) in m {
                    match k.as_str() {
                        "failed_runs_in_a_row" => match val.as_u64().and_then(|n| u32::try_from(n).ok()) {
                            Some(n) => a.failed_runs_in_a_row = Some(n),
                            None => errors.push((
                                "alerts.failed_runs_in_a_row".into(),
                                "`alerts.failed_runs_in_a_row` must be a whole number (0: off)".into(),
                            )),
                        },
                        "no_success_for" => match no_success_value(val) {
                            Ok(n) => a.no_success_for = Some(n),
                            Err(e) => errors.push((
                                "alerts.no_success_for".into(),
                                format!("`alerts.no_success_for`: {e}"),
                            )),
                        },
                        other => errors.push((
                            format!("alerts.{other}"),
                            format!(
                                "unknown key `alerts.{other}` (expected failed_runs_in_a_row or no_success_for)"
                            ),
                        )),
                    }
                }
            }
            _ => errors.push((
                "alerts".into(),
                "`alerts` must be `off` or a mapping with failed_runs_in_a_row / no_success_for"
                    .into(),
            )),
        }
        (a, errors)
    }
}

/// `default`, `off` (or `false`), or a duration.
pub(crate) fn no_success_value(v: &Value) -> Result<NoSuccessFor, String> {
    match v {
        Value::String(s) if s.trim() == "default" => Ok(NoSuccessFor::Default),
        Value::String(s) if matches!(s.trim(), "off" | "false" | "no") => Ok(NoSuccessFor::Off),
        Value::Bool(false) => Ok(NoSuccessFor::Off),
        other => match duration_value(other) {
            Ok(d) if d.is_zero() => Ok(NoSuccessFor::Off),
            Ok(d) => Ok(NoSuccessFor::After(d)),
            Err(e) => Err(format!("expected a duration, `default` or `off`: {e}")),
        },
    }
}
