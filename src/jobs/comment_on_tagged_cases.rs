//! `job: comment-on-tagged-cases`: the SecOps "Deep Dive: Jobs" example, done right.
//!
//! Every open case carrying one of `Tags` (in `Environments`, if given) that started or was
//! updated since the last success gets `Comment`, exactly once per (case, comment text):
//! across runs, retries and crashes.
//!
//! Exactly-once rests on the seen-set (scope [`SCOPE`]): an item is marked `attempting` before
//! the POST and `done` after it. An item still `attempting` at the start of a later run had
//! its POST interrupted (crash, timeout) or answered ambiguously (a 500, a timeout after
//! sending), so its comment may or may not exist; that run reads the case's comments before
//! writing again. It is checked on a *later* run, never right after the ambiguous answer,
//! because a slow server can still apply the write after the client gave up.
//!
//! What the seed example got wrong and this job does not: its YAML lacked its own parameters,
//! it read `self.params.self.params`, it had a chained assignment, it passed an undefined
//! environment, and it commented again on every run.

use std::collections::HashSet;
use std::time::Duration;

use async_trait::async_trait;
use futures::{StreamExt, TryStreamExt};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::definition::{FieldError, JobSpec, ParamSpec, ParamType, Parameters};
use crate::job::{Job, JobContext, JobError, Outcome};
use crate::jobs::cases::find_cases;
use crate::soar::{SoarClient, SoarError};
use crate::store::SeenState;

/// The seen-set scope of (case, comment) items.
pub const SCOPE: &str = "comments";
/// The most cases handled at once when `Concurrency` is not set.
const DEFAULT_CONCURRENCY: i64 = 8;
const MAX_CONCURRENCY: i64 = 256;
/// How far before the last success the case window starts. The platform stamps update times
/// with its own clock, and a case updated just after the previous run's query on a server a
/// little behind ours would otherwise fall between two windows. Re-matched cases cost a
/// seen-set lookup each (`already_commented`).
pub const WINDOW_OVERLAP: Duration = Duration::from_secs(10 * 60);
/// Default for `Recheck In Doubt After` (seconds): an unanswered write may still land while
/// the server works through it, so it is only checked once it had time to settle.
const DEFAULT_SETTLE_SECS: i64 = 120;

pub struct CommentOnTaggedCases;

impl JobSpec for CommentOnTaggedCases {
    fn summary(&self) -> &'static str {
        "comments once on every open case with one of the tags"
    }

    fn parameters(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::new("Tags", ParamType::Csv)
                .mandatory()
                .describe("Case tags to comment on (any of them)"),
            ParamSpec::new("Comment", ParamType::String)
                .mandatory()
                .describe("The comment written to each matching case"),
            ParamSpec::new("Max Hours Backwards", ParamType::Integer)
                .default_value("24")
                .describe("How far back the first run looks, in hours"),
            ParamSpec::new("Environments", ParamType::Csv)
                .describe("Only cases in these environments (default: all)"),
            ParamSpec::new("Concurrency", ParamType::Integer)
                .default_value("8")
                .describe("How many cases are handled at once"),
            ParamSpec::new("Recheck In Doubt After", ParamType::Integer)
                .default_value(DEFAULT_SETTLE_SECS.to_string())
                .describe(
                    "Seconds a comment whose write went unanswered is left to land before a \
                     run checks the case for it",
                ),
        ]
    }

    fn validate(&self, params: &Parameters, _extra: &Map<String, Value>) -> Vec<FieldError> {
        let mut errs = Vec::new();
        if let Ok(Some(h)) = params.int("Max Hours Backwards")
            && h < 1
        {
            errs.push(FieldError::new(
                "parameters.Max Hours Backwards",
                format!("Invalid parameter \"Max Hours Backwards\". The value can't be lower then 1. Wrong value provided: {h}"),
            ));
        }
        if let Ok(Some(c)) = params.int("Concurrency")
            && !(1..=MAX_CONCURRENCY).contains(&c)
        {
            errs.push(FieldError::new(
                "parameters.Concurrency",
                format!("Invalid parameter \"Concurrency\". The value must be between 1 and {MAX_CONCURRENCY}. Wrong value provided: {c}"),
            ));
        }
        if let Ok(Some(c)) = params.int("Recheck In Doubt After")
            && c < 0
        {
            errs.push(FieldError::new(
                "parameters.Recheck In Doubt After",
                format!("Invalid parameter \"Recheck In Doubt After\". The value can't be lower then 0. Wrong value provided: {c}"),
            ));
        }
        errs
    }
}

/// The seen-set item of a (case, comment text) pair. The text is hashed: comments can be long,
/// and a changed comment text is a new item, to be written once too.
pub fn item_key(case_id: u64, comment: &str) -> String {
    let digest = Sha256::digest(comment.as_bytes());
    let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("case:{case_id}:comment:{hex}")
}

/// What happened to one case.
#[derive(Debug, Clone, PartialEq, Eq)]
enum CaseResult {
    Commented,
    AlreadyCommented,
    NoAlerts,
    /// The write's outcome is unknown; a later run checks the case.
    InDoubt,
    /// An in-doubt item whose case no longer exists: nothing left to do.
    Gone,
    /// The case could not be handled, with the reason (the error chain).
    Failed(String),
}

#[async_trait]
impl Job for CommentOnTaggedCases {
    fn id(&self) -> &'static str {
        "comment-on-tagged-cases"
    }

    async fn run(&self, ctx: &mut JobContext) -> Result<Outcome, JobError> {
        let ctx: &JobContext = ctx;
        let soar = ctx.soar()?.clone();
        let tags = ctx.params().list("Tags")?;
        let comment = ctx.params().required_str("Comment")?.to_string();
        let hours = ctx
            .params()
            .int("Max Hours Backwards")?
            .unwrap_or(24)
            .max(1) as u64;
        let environments = ctx.params().list("Environments")?;
        let concurrency = ctx
            .params()
            .int("Concurrency")?
            .unwrap_or(DEFAULT_CONCURRENCY)
            .clamp(1, MAX_CONCURRENCY) as usize;

        let settle = chrono::Duration::seconds(
            ctx.params()
                .int("Recheck In Doubt After")?
                .unwrap_or(DEFAULT_SETTLE_SECS)
                .max(0),
        );

        let since = ctx
            .last_success_time(Duration::from_secs(hours * 3600))
            .await?;
        // The overlap applies to a stored last success only: the first run's look-back (and
        // a clamped, too old timestamp) stays exactly `Max Hours Backwards`.
        let floor = ctx.job_start_time() - chrono::Duration::hours(hours as i64);
        let query_from =
            (since - chrono::Duration::from_std(WINDOW_OVERLAP).unwrap_or_default()).max(floor);
        let mut cases = find_cases(&soar, &tags, &environments, query_from).await?;
        let matched = cases.len();
        ctx.stats().set("cases_matched", matched as i64);

        // Items left in doubt by earlier runs are resolved even if their case no longer
        // matches the window: the job owes them an answer. Those too recent to have settled
        // are left for a later run.
        let seen_cases: HashSet<u64> = cases.iter().copied().collect();
        let settled_before = ctx.job_start_time() - settle;
        let mut unsettled: HashSet<String> = HashSet::new();
        for entry in ctx.in_doubt(SCOPE).await? {
            if entry.updated_at > settled_before {
                unsettled.insert(entry.item.clone());
            }
            if let Some(id) = parse_case_id(&entry.item)
                && entry.item == item_key(id, &comment)
                && !seen_cases.contains(&id)
            {
                cases.push(id);
            }
        }
        tracing::info!(
            since = %since.to_rfc3339(),
            cases = matched,
            rechecks = cases.len() - matched,
            tags = ?tags,
            "cases matched"
        );

        // `try_collect` stops at the first error (refused credentials, a store failure):
        // the cases still in flight are dropped instead of each hitting the same wall. Items
        // they left `attempting` are rechecked by a later run.
        let results: Vec<CaseResult> = futures::stream::iter(cases)
            .map(|case_id| {
                let soar = &soar;
                let comment = &comment;
                let unsettled = &unsettled;
                async move {
                    ctx.check_cancelled()?;
                    process_case(ctx, soar, case_id, comment, unsettled).await
                }
            })
            .buffer_unordered(concurrency)
            .try_collect()
            .await?;

        let count = |want: &CaseResult| results.iter().filter(|r| *r == want).count() as i64;
        let (commented, already, no_alerts, in_doubt, gone) = (
            count(&CaseResult::Commented),
            count(&CaseResult::AlreadyCommented),
            count(&CaseResult::NoAlerts),
            count(&CaseResult::InDoubt),
            count(&CaseResult::Gone),
        );
        let failures: Vec<&String> = results
            .iter()
            .filter_map(|r| match r {
                CaseResult::Failed(why) => Some(why),
                _ => None,
            })
            .collect();
        let failed = failures.len() as i64;
        let stats = ctx.stats();
        stats.set("commented", commented);
        stats.set("already_commented", already);
        stats.set("no_alerts", no_alerts);
        stats.set("in_doubt", in_doubt);
        stats.set("failed", failed);
        if gone > 0 {
            stats.set("gone", gone);
        }
        tracing::info!(
            commented,
            already_commented = already,
            no_alerts,
            in_doubt,
            failed,
            "comments added"
        );
        let not_done = failed + in_doubt;
        if not_done == 0 {
            ctx.save_timestamp(ctx.job_start_time()).await?;
            return Ok(Outcome::succeeded(format!(
                "{matched} cases matched: {commented} commented, {already} already commented, \
                 {no_alerts} without alerts"
            )));
        }
        let mut message = format!(
            "{not_done} of {} cases not confirmed ({failed} failed, {in_doubt} in doubt); \
             {commented} commented, {already} already commented; they are retried next run",
            results.len()
        );
        // The history row says why, not only how many.
        if let Some(first) = failures.first() {
            message.push_str(&format!("; first failure: {first}"));
        }
        // Failed only when cases failed and nothing else happened; items merely waiting to
        // settle make a partial run.
        if failed > 0 && commented + already + no_alerts + gone + in_doubt == 0 {
            Ok(Outcome::failed(message))
        } else {
            Ok(Outcome::partial(message))
        }
    }
}

fn parse_case_id(item: &str) -> Option<u64> {
    item.strip_prefix("case:")?.split(':').next()?.parse().ok()
}

/// One case: decides from the seen-set whether to write, checks the case when in doubt, and
/// writes the comment at most once. Store errors abort the run (the job cannot keep its
/// exactly-once promise without the store); platform errors are counted per case.
async fn process_case(
    ctx: &JobContext,
    soar: &SoarClient,
    case_id: u64,
    comment: &str,
    unsettled: &HashSet<String>,
) -> Result<CaseResult, JobError> {
    let item = item_key(case_id, comment);
    match ctx.seen(SCOPE, &item).await? {
        Some(SeenState::Done) => return Ok(CaseResult::AlreadyCommented),
        Some(SeenState::Attempting) if unsettled.contains(&item) => {
            tracing::debug!(
                case_id,
                "an in-doubt comment has not settled yet; checked later"
            );
            return Ok(CaseResult::InDoubt);
        }
        Some(SeenState::Attempting) => {
            // An earlier attempt's outcome is unknown: look before writing again.
            match soar.fetch_case_comments(case_id, None).await {
                Ok(comments) => {
                    if comments.iter().any(|c| c.is_live() && c.comment == comment) {
                        tracing::info!(case_id, "an earlier in-doubt comment did land");
                        ctx.mark_seen(SCOPE, &item).await?;
                        return Ok(CaseResult::AlreadyCommented);
                    }
                    tracing::info!(
                        case_id,
                        "an earlier in-doubt comment did not land; writing it"
                    );
                }
                Err(e) if e.is_not_found() => {
                    // The case is gone: there is nothing left to comment on.
                    tracing::info!(case_id, "the case of an in-doubt comment no longer exists");
                    ctx.forget(SCOPE, &item).await?;
                    return Ok(CaseResult::Gone);
                }
                Err(e) => return failure_of(case_id, "cannot check the case's comments", e),
            }
        }
        None => {}
    }
    let tickets = match soar.get_alerts_ticket_ids_by_case_id(case_id).await {
        Ok(t) => t,
        Err(e) => return failure_of(case_id, "cannot read the case's alerts", e),
    };
    let Some(ticket) = tickets.first() else {
        tracing::debug!(case_id, "case has no alerts; skipped");
        return Ok(CaseResult::NoAlerts);
    };
    ctx.mark_attempting(SCOPE, &item).await?;
    match soar.add_comment(case_id, Some(ticket), comment).await {
        Ok(()) => {
            ctx.mark_seen(SCOPE, &item).await?;
            tracing::debug!(case_id, "comment added");
            Ok(CaseResult::Commented)
        }
        Err(e) if e.is_in_doubt() => {
            // Stays `attempting`: the next run reads the case before writing again.
            tracing::warn!(case_id, error = %crate::job::error_chain(&e), "comment in doubt; the next run checks the case");
            Ok(CaseResult::InDoubt)
        }
        Err(e) => {
            // The platform refused or never received the write: it did not happen.
            ctx.forget(SCOPE, &item).await?;
            failure_of(case_id, "cannot add the comment", e)
        }
    }
}

/// A platform error on one case fails that case, except refused credentials: those fail every
/// case the same way, so the run stops at once with the reason instead of hammering the API.
fn failure_of(case_id: u64, what: &str, e: SoarError) -> Result<CaseResult, JobError> {
    if e.is_auth() {
        return Err(JobError::context("SecOps SOAR refused the credentials", e));
    }
    let chain = crate::job::error_chain(&e).replace('\n', ": ");
    tracing::warn!(case_id, what, error = %crate::job::error_chain(&e), "case failed");
    Ok(CaseResult::Failed(format!(
        "case {case_id}: {what}: {chain}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_keys_are_stable_and_parse_back() {
        let k = item_key(42, "Triaged");
        assert_eq!(k, item_key(42, "Triaged"));
        assert_ne!(k, item_key(42, "Triaged!"));
        assert_ne!(k, item_key(43, "Triaged"));
        assert_eq!(parse_case_id(&k), Some(42));
        assert!(k.starts_with("case:42:comment:"));
    }
}
