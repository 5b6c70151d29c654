//! A complete custom job: your own binary with the built-in jobs plus one of yours, and the
//! whole `soarjobd` command line (`check`, `list` and `run-once` know your job too).
//!
//! `StaleCaseReminder` shows the parts of the `JobContext` most jobs need: typed parameters,
//! the SecOps last-success window, a seen-set so an item is handled once across runs and
//! crashes, stats, cancellation, and saving the timestamp only when everything worked.
//!
//! Run it with a job file that uses it:
//!
//! ```sh
//! mkdir -p /tmp/custom/jobs && cat > /tmp/custom/jobs/reminder.yaml <<'YAML'
//! name: Stale case reminder
//! job: stale-case-reminder
//! schedule: {every: 10s}
//! parameters:
//!   - {name: Items, type: csv, value: "case-1, case-2, case-3"}
//! YAML
//! export SOARJOBD__JOBS_DIR=/tmp/custom/jobs SOARJOBD__DATABASE_URL=sqlite:/tmp/custom/state.db
//! cargo run --example custom_job -- check            # validates reminder.yaml
//! cargo run --example custom_job -- run-once reminder
//! cargo run --example custom_job                     # the daemon
//! ```

use std::time::Duration;

use async_trait::async_trait;
use soarjobd::app::App;
use soarjobd_core::definition::{FieldError, JobSpec, ParamSpec, ParamType, Parameters};
use soarjobd_core::{Job, JobContext, JobError, Outcome};

/// Reminds about each item once. A real job would call an API where this one logs.
pub struct StaleCaseReminder;

/// The seen-set scope for reminders already sent.
const SCOPE: &str = "reminded";

impl JobSpec for StaleCaseReminder {
    fn summary(&self) -> &'static str {
        "logs one reminder per item, once across runs"
    }

    /// The parameters this job reads; a job file may omit them to get these defaults.
    fn parameters(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::new("Items", ParamType::Csv)
                .mandatory()
                .describe("The items to remind about"),
            ParamSpec::new("Max Hours Backwards", ParamType::Integer)
                .default_value("24")
                .describe("How far back the first run looks"),
        ]
    }

    /// Checks that only make sense for this job run when the file is loaded, so `check`
    /// reports them with the file's line and column.
    fn validate(
        &self,
        params: &Parameters,
        _extra: &serde_json::Map<String, serde_json::Value>,
    ) -> Vec<FieldError> {
        match params.int("Max Hours Backwards") {
            Ok(Some(h)) if h >= 1 => Vec::new(),
            _ => vec![FieldError::new(
                "parameters.Max Hours Backwards",
                "Max Hours Backwards must be an integer >= 1",
            )],
        }
    }
}

#[async_trait]
impl Job for StaleCaseReminder {
    fn id(&self) -> &'static str {
        "stale-case-reminder"
    }

    async fn run(&self, ctx: &mut JobContext) -> Result<Outcome, JobError> {
        let hours = ctx.params().int("max_hours_backwards")?.unwrap_or(24) as u64;
        let since = ctx
            .last_success_time(Duration::from_secs(hours * 3600))
            .await?;
        tracing::info!(since = %since.to_rfc3339(), "looking for items");
        for item in ctx.params().list("Items")? {
            // Stop between items when the run is cancelled (timeout, shutdown).
            ctx.check_cancelled()?;
            if ctx.seen(SCOPE, &item).await?.is_some() {
                ctx.stats().incr("already_reminded");
                continue;
            }
            // Mark first, act second: a crash in between leaves the item "attempting", which
            // a later run can check instead of acting twice.
            ctx.mark_attempting(SCOPE, &item).await?;
            tracing::info!(item = %item, "reminder sent");
            ctx.mark_seen(SCOPE, &item).await?;
            ctx.stats().incr("reminded");
        }
        // Nothing is saved unless the job says so: only a fully successful run moves the
        // window forward.
        ctx.save_timestamp(ctx.job_start_time()).await?;
        Ok(Outcome::succeeded("reminders sent"))
    }
}

/// The whole `soarjobd` command line (`run`, `check`, `list`, `history`, `run-once`, `demo`...)
/// with the built-in jobs and platforms plus `stale-case-reminder`.
fn main() -> std::process::ExitCode {
    let app = App::builder().register(StaleCaseReminder);
    let code = soarjobd::cli::main_with(app);
    std::process::ExitCode::from(u8::try_from(code).unwrap_or(1))
}
