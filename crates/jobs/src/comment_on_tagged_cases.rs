//! `job: comment-on-tagged-cases`: the SecOps "Deep Dive: Jobs" example, done right.
//!
//! Every open case carrying one of `Tags` (in `Environments`, if given) that started or was
//! updated since the last success gets `Comment`, exactly once per (case, comment text):
//! across runs, retries and crashes.
//!
//! Exactly-once rests on the seen-set (scope [`SCOPE`]): an item is marked `attempting` before
//! the POST and `done` after it, and a failed POST is handled by what its failure says about
//! the write ([`WriteFate`]):
//!
//! * not applied (`429` after the transport's retries, a connection that never reached the
//!   server): the item is forgotten and the write is sent again in the same run, a bounded
//!   number of times ([`MAX_WRITES_PER_CASE`]);
//! * answered `500` (or another non-gateway 5xx): the server is done with the request, but
//!   may have applied it first, so the case's comments are read at once and the comment is
//!   written again only if absent;
//! * no answer (a timeout or reset after sending, a gateway's `502/503/504`): the server may
//!   still apply it, so the case is only read once the write had `Recheck In Doubt After`
//!   seconds to settle. The run waits for that itself when its `timeout` leaves room for the
//!   wait and the recheck; otherwise the item stays `attempting` and the outcome names the
//!   instant after which the next run rechecks it.
//!
//! An item still `attempting` at the start of a run (a crash, a timeout, a run that could not
//! wait) is rechecked the same way: at once if it settled, after the rest of the run if not.
//!
//! What the seed example got wrong and this job does not: its YAML lacked its own parameters,
//! it read `self.params.self.params`, it had a chained assignment, it passed an undefined
//! environment, and it commented again on every run.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use futures::{StreamExt, TryStreamExt};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use crate::cases::find_cases;
use soarjobd_clients::soar::{SoarClient, SoarError, WriteFate};
use soarjobd_core::Configured;
use soarjobd_core::definition::{FieldError, JobSpec, ParamSpec, ParamType, Parameters};
use soarjobd_core::store::SeenState;
use soarjobd_core::{Job, JobContext, JobError, Outcome};

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
/// Most AddComment requests per case in one run. Only writes known not to have landed are
/// repeated (refused, never sent, or answered `500` with the comment absent), so this bounds
/// the load a failing platform gets, not the number of comments.
pub const MAX_WRITES_PER_CASE: u32 = 3;
/// Pause before sending again a write that was not applied. The transport has already backed
/// off within the attempt (honouring `Retry-After` on 429); this spaces the job's own attempts.
const REWRITE_PAUSE: Duration = Duration::from_millis(300);
/// Time kept free at the end of a run, after the last recheck, to record the outcome.
const FINISH_MARGIN: Duration = Duration::from_secs(2);

/// `comment-on-tagged-cases`, holding the SOAR client it was built with.
pub struct CommentOnTaggedCases {
    soar: Configured<SoarClient>,
}

impl CommentOnTaggedCases {
    /// The job with its SOAR client (or the reason there is none, its error if it runs).
    pub fn new(soar: Configured<SoarClient>) -> CommentOnTaggedCases {
        CommentOnTaggedCases { soar }
    }
}

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
                .describe(
                    "How many cases are handled at once (at most soar.max_concurrency, the \
                     requests in flight to the platform)",
                ),
            ParamSpec::new("Recheck In Doubt After", ParamType::Integer)
                .default_value(DEFAULT_SETTLE_SECS.to_string())
                .describe(
                    "Seconds a comment whose write went unanswered is left to land before \
                     the case is checked for it (by the same run when its timeout allows)",
                ),
        ]
    }

    /// Besides [`JobSpec::validate`]: a `Concurrency` above `soar.max_concurrency` is warned
    /// about when the file is loaded (the job holds its client, so it knows the cap), once per
    /// file and setting.
    fn validate_file(
        &self,
        file: &std::path::Path,
        params: &Parameters,
        extra: &Map<String, Value>,
    ) -> Vec<FieldError> {
        if let (Ok(soar), Ok(Some(c))) = (self.soar.get(), params.int("Concurrency"))
            && let Ok(requested) = usize::try_from(c)
        {
            effective_concurrency(
                &file.display().to_string(),
                requested,
                soar.max_concurrency(),
            );
        }
        self.validate(params, extra)
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

/// What happened to one case (so far).
#[derive(Debug, Clone, PartialEq, Eq)]
enum CaseResult {
    /// This run's write landed: confirmed by its answer, or by reading the case afterwards.
    Commented,
    AlreadyCommented,
    NoAlerts,
    /// A write went unanswered (in this run or an earlier one): the comment may still land, so
    /// the case is only read at `settles_at`. `writes` counts this run's AddComment requests.
    Unsettled {
        settles_at: DateTime<Utc>,
        writes: u32,
    },
    /// An in-doubt item whose case no longer exists: nothing left to do.
    Gone,
    /// The case could not be handled, with the reason (the error chain).
    Failed(String),
}

/// The settings of one run, shared by the futures handling its cases.
struct Work<'a> {
    ctx: &'a JobContext,
    soar: &'a SoarClient,
    comment: &'a str,
    /// `Recheck In Doubt After`.
    settle: chrono::Duration,
    /// When the runner stops this run (its `timeout`), on the monotonic clock.
    deadline: Instant,
    /// Time a recheck may take once its item settled: a read of the comments, of the alerts
    /// and a write, of up to `soar.timeout` each, plus [`FINISH_MARGIN`]. A recheck that still
    /// overruns (a request retried many times) is cut by the run's timeout, which leaves its
    /// item `attempting`: safe, only later.
    reserve: Duration,
}

#[async_trait]
impl Job for CommentOnTaggedCases {
    fn id(&self) -> &'static str {
        "comment-on-tagged-cases"
    }

    async fn run(&self, ctx: &mut JobContext) -> Result<Outcome, JobError> {
        let ctx: &JobContext = ctx;
        let soar = self.soar.get()?.clone();
        let tags = ctx.params().list("Tags")?;
        let comment = ctx.params().required_str("Comment")?.to_string();
        let hours = ctx
            .params()
            .int("Max Hours Backwards")?
            .unwrap_or(24)
            .max(1) as u64;
        let environments = ctx.params().list("Environments")?;
        let requested = ctx
            .params()
            .int("Concurrency")?
            .unwrap_or(DEFAULT_CONCURRENCY)
            .clamp(1, MAX_CONCURRENCY) as usize;
        let concurrency = effective_concurrency(
            &ctx.definition().source.display().to_string(),
            requested,
            soar.max_concurrency(),
        );

        let settle = chrono::Duration::seconds(
            ctx.params()
                .int("Recheck In Doubt After")?
                .unwrap_or(DEFAULT_SETTLE_SECS)
                .max(0),
        );
        // The runner's timer starts a moment after `job_start_time`, so this deadline is a
        // little early, never late.
        let elapsed = (Utc::now() - ctx.job_start_time())
            .to_std()
            .unwrap_or_default();
        let work = Work {
            ctx,
            soar: &soar,
            comment: &comment,
            settle,
            deadline: Instant::now() + ctx.definition().timeout.saturating_sub(elapsed),
            reserve: soar.request_timeout() * 3 + FINISH_MARGIN,
        };

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
        // matches the window: the job owes them an answer. Their last attempt's time says
        // when they settle.
        let seen_cases: HashSet<u64> = cases.iter().copied().collect();
        let mut last_attempt: HashMap<String, DateTime<Utc>> = HashMap::new();
        for entry in ctx.in_doubt(SCOPE).await? {
            if let Some(id) = parse_case_id(&entry.item)
                && entry.item == item_key(id, &comment)
                && !seen_cases.contains(&id)
            {
                cases.push(id);
            }
            last_attempt.insert(entry.item, entry.updated_at);
        }
        tracing::info!(
            since = %since.to_rfc3339(),
            cases = matched,
            rechecks = cases.len() - matched,
            tags = ?tags,
            "cases matched"
        );

        // Phase 1: every case once. `try_collect` stops at the first error (refused
        // credentials, a store failure): the cases still in flight are dropped instead of
        // each hitting the same wall. Items they left `attempting` are rechecked by a later
        // run.
        let work = &work;
        let last_attempt = &last_attempt;
        let mut results: BTreeMap<u64, CaseResult> = futures::stream::iter(cases)
            .map(|case_id| async move {
                ctx.check_cancelled()?;
                let known = last_attempt.get(&item_key(case_id, work.comment)).copied();
                let r = work.process(case_id, known, 0).await?;
                Ok::<_, JobError>((case_id, r))
            })
            .buffer_unordered(concurrency)
            .try_collect()
            .await?;

        // Phase 2: writes that went unanswered are given their settle time inside the run,
        // when the run's timeout leaves room for the wait and the recheck, then the case is
        // read and the comment written if it did not land (which may leave it unanswered
        // again: each round costs a write, so `MAX_WRITES_PER_CASE` bounds the rounds).
        let mut rechecked = 0i64;
        let mut stopped = false;
        loop {
            let waiting: Vec<(u64, DateTime<Utc>, u32)> = results
                .iter()
                .filter_map(|(&id, r)| match r {
                    CaseResult::Unsettled { settles_at, writes } if work.fits(*settles_at) => {
                        Some((id, *settles_at, *writes))
                    }
                    _ => None,
                })
                .collect();
            let Some(next) = waiting.iter().map(|w| w.1).min() else {
                break;
            };
            if next > Utc::now() {
                tracing::info!(
                    in_doubt = waiting.len(),
                    until = %next.to_rfc3339_opts(SecondsFormat::Millis, true),
                    "waiting for unanswered comment writes to settle before checking their cases"
                );
                if !work.sleep_until(next).await {
                    stopped = true;
                    break;
                }
            }
            let now = Utc::now();
            let due: Vec<(u64, DateTime<Utc>, u32)> =
                waiting.into_iter().filter(|w| w.1 <= now).collect();
            rechecked += due.len() as i64;
            let settle = work.settle;
            let rechecks: Vec<(u64, CaseResult)> = futures::stream::iter(due)
                .map(|(case_id, settles_at, writes)| async move {
                    if ctx.is_cancelled() {
                        return Ok((case_id, CaseResult::Unsettled { settles_at, writes }));
                    }
                    let r = work
                        .process(case_id, Some(settles_at - settle), writes)
                        .await?;
                    Ok::<_, JobError>((case_id, r))
                })
                .buffer_unordered(concurrency)
                .try_collect()
                .await?;
            results.extend(rechecks);
            if ctx.is_cancelled() {
                stopped = true;
                break;
            }
        }

        let count = |want: fn(&CaseResult) -> bool| results.values().filter(|r| want(r)).count();
        let commented = count(|r| *r == CaseResult::Commented) as i64;
        let already = count(|r| *r == CaseResult::AlreadyCommented) as i64;
        let no_alerts = count(|r| *r == CaseResult::NoAlerts) as i64;
        let gone = count(|r| *r == CaseResult::Gone) as i64;
        let in_doubt = count(|r| matches!(r, CaseResult::Unsettled { .. })) as i64;
        let failures: Vec<&String> = results
            .values()
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
        stats.set("rechecked", rechecked);
        if gone > 0 {
            stats.set("gone", gone);
        }
        tracing::info!(
            commented,
            already_commented = already,
            no_alerts,
            in_doubt,
            rechecked,
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
             {commented} commented, {already} already commented",
            results.len()
        );
        if failed > 0 {
            message.push_str(&format!("; {failed} failed: retried at the next run"));
        }
        let latest_settle = results
            .values()
            .filter_map(|r| match r {
                CaseResult::Unsettled { settles_at, .. } => Some(*settles_at),
                _ => None,
            })
            .max();
        if let Some(at) = latest_settle {
            let why = if stopped {
                "the run was stopped before they settled"
            } else {
                "the run's timeout leaves no time to wait for them to settle"
            };
            message.push_str(&format!(
                "; {in_doubt} in doubt: rechecked at the next run after {} ({why})",
                whole_second_after(at)
            ));
        }
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

/// `at` rounded up to the whole second, as RFC 3339 in UTC (`2026-12-01T20:31:00Z`): a run
/// starting after the printed instant finds the item settled.
fn whole_second_after(at: DateTime<Utc>) -> String {
    let secs = at.timestamp() + i64::from(at.timestamp_subsec_nanos() > 0);
    DateTime::<Utc>::from_timestamp(secs, 0)
        .unwrap_or(at)
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Job and setting pairs already warned about by [`effective_concurrency`]: one warning per
/// job and setting for the life of the process, not one per run.
static CAPPED_WARNED: Mutex<BTreeSet<(String, usize, usize)>> = Mutex::new(BTreeSet::new());

/// The job's `Concurrency`, capped at the client's `soar.max_concurrency`: more cases in
/// flight than requests allowed would only queue inside the client. A capped value is warned
/// about once per process for each job file and setting: when the file is loaded, or at the
/// latest when the job runs (a definition built in code skips the load check).
fn effective_concurrency(who: &str, requested: usize, max_concurrency: usize) -> usize {
    let cap = max_concurrency.max(1);
    if requested <= cap {
        return requested;
    }
    let first = CAPPED_WARNED
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert((who.to_string(), requested, cap));
    if first {
        tracing::warn!(
            job = who,
            requested,
            max_concurrency = cap,
            effective = cap,
            "Concurrency {requested} is above soar.max_concurrency {cap}: the job handles {cap} \
             cases at once (the cap is shared by every SOAR job); raise soar.max_concurrency or \
             lower Concurrency"
        );
    }
    cap
}

impl Work<'_> {
    /// One case: decides from the seen-set whether to write, reads the case when an earlier
    /// write is in doubt and has settled, and writes the comment at most once. `last_attempt`
    /// is when the item's last write was attempted, if known; `writes` counts this run's
    /// writes for the case so far. Store errors abort the run (the job cannot keep its
    /// exactly-once promise without the store); platform errors are counted per case.
    async fn process(
        &self,
        case_id: u64,
        last_attempt: Option<DateTime<Utc>>,
        writes: u32,
    ) -> Result<CaseResult, JobError> {
        let ctx = self.ctx;
        let item = item_key(case_id, self.comment);
        match ctx.seen(SCOPE, &item).await? {
            Some(SeenState::Done) => return Ok(CaseResult::AlreadyCommented),
            Some(SeenState::Attempting) => {
                // An attempt with no known time was started after this run listed the
                // in-doubt items: another run of this job may have it in flight right now,
                // so it is treated as just attempted.
                let settles_at = last_attempt.unwrap_or_else(Utc::now) + self.settle;
                if settles_at > Utc::now() {
                    tracing::debug!(
                        case_id,
                        "an unanswered comment write has not settled yet; checked later"
                    );
                    return Ok(CaseResult::Unsettled { settles_at, writes });
                }
                match self.comment_present(case_id).await {
                    Ok(true) => {
                        tracing::info!(case_id, "an in-doubt comment did land");
                        ctx.mark_seen(SCOPE, &item).await?;
                        return Ok(if writes > 0 {
                            CaseResult::Commented
                        } else {
                            CaseResult::AlreadyCommented
                        });
                    }
                    Ok(false) => {
                        // Known absent: nothing is in doubt any more.
                        tracing::info!(case_id, "an in-doubt comment did not land; writing it");
                        ctx.forget(SCOPE, &item).await?;
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
        let tickets = match self.soar.get_alerts_ticket_ids_by_case_id(case_id).await {
            Ok(t) => t,
            Err(e) => return failure_of(case_id, "cannot read the case's alerts", e),
        };
        let Some(ticket) = tickets.first() else {
            tracing::debug!(case_id, "case has no alerts; skipped");
            return Ok(CaseResult::NoAlerts);
        };
        self.write(case_id, &item, ticket, writes).await
    }

    /// Writes the comment until it is known to have landed, known not to be writable, or
    /// unanswered. Only writes known not to have landed are sent again, at most
    /// [`MAX_WRITES_PER_CASE`] per case and run.
    async fn write(
        &self,
        case_id: u64,
        item: &str,
        ticket: &str,
        mut writes: u32,
    ) -> Result<CaseResult, JobError> {
        let ctx = self.ctx;
        let mut last_error: Option<String> = None;
        loop {
            if writes >= MAX_WRITES_PER_CASE {
                let why = last_error.unwrap_or_else(|| {
                    "the earlier writes went unanswered and did not land".into()
                });
                tracing::warn!(case_id, writes, error = %why, "case failed");
                return Ok(CaseResult::Failed(format!(
                    "case {case_id}: cannot add the comment in {writes} attempts: {why}"
                )));
            }
            ctx.mark_attempting(SCOPE, item).await?;
            writes += 1;
            let e = match self
                .soar
                .add_comment(case_id, Some(ticket), self.comment)
                .await
            {
                Ok(()) => {
                    ctx.mark_seen(SCOPE, item).await?;
                    tracing::debug!(case_id, "comment added");
                    return Ok(CaseResult::Commented);
                }
                Err(e) => e,
            };
            match e.write_fate() {
                WriteFate::Unanswered => {
                    // Marked again so the item's time is when the client gave up: the server
                    // may have received the request as late as that, and settles from there.
                    ctx.mark_attempting(SCOPE, item).await?;
                    let settles_at = Utc::now() + self.settle;
                    tracing::warn!(
                        case_id,
                        error = %soarjobd_core::error_chain(&e),
                        settles_at = %settles_at.to_rfc3339_opts(SecondsFormat::Millis, true),
                        "comment in doubt (no answer); the case is checked once the write had time to land"
                    );
                    return Ok(CaseResult::Unsettled { settles_at, writes });
                }
                WriteFate::Answered => {
                    // The server answered an error, so it is done with the request: what the
                    // case shows now is what the write did.
                    match self.comment_present(case_id).await {
                        Ok(true) => {
                            tracing::info!(case_id, "the comment answered with an error did land");
                            ctx.mark_seen(SCOPE, item).await?;
                            return Ok(CaseResult::Commented);
                        }
                        Ok(false) => {
                            ctx.forget(SCOPE, item).await?;
                        }
                        Err(r) if r.is_not_found() => {
                            tracing::info!(case_id, "the case no longer exists");
                            ctx.forget(SCOPE, item).await?;
                            return Ok(CaseResult::Gone);
                        }
                        // Stays `attempting`: a later run reads the case before writing.
                        Err(r) => {
                            return failure_of(
                                case_id,
                                "the comment was answered with an error and the case's \
                                 comments cannot be read",
                                r,
                            );
                        }
                    }
                }
                WriteFate::NotApplied => {
                    // Refused or never sent: it did not happen.
                    ctx.forget(SCOPE, item).await?;
                    if e.is_auth() || !e.is_transient() {
                        return failure_of(case_id, "cannot add the comment", e);
                    }
                }
            }
            let chain = soarjobd_core::error_chain(&e).replace('\n', ": ");
            tracing::warn!(case_id, attempt = writes, error = %chain, "comment not written; writing it again");
            last_error = Some(chain);
            if writes < MAX_WRITES_PER_CASE {
                tokio::select! {
                    _ = tokio::time::sleep(REWRITE_PAUSE) => {}
                    _ = ctx.cancelled() => return Err(JobError::Cancelled),
                }
            }
        }
    }

    /// Whether the case carries the comment (live, same text).
    async fn comment_present(&self, case_id: u64) -> Result<bool, SoarError> {
        let comments = self.soar.fetch_case_comments(case_id, None).await?;
        Ok(comments
            .iter()
            .any(|c| c.is_live() && c.comment == self.comment))
    }

    /// Whether an item settling at `settles_at` can still be rechecked in this run.
    fn fits(&self, settles_at: DateTime<Utc>) -> bool {
        let wait = (settles_at - Utc::now()).to_std().unwrap_or_default();
        Instant::now() + wait + self.reserve <= self.deadline
    }

    /// Sleeps until `at` (wall clock); false if the run was asked to stop first.
    async fn sleep_until(&self, at: DateTime<Utc>) -> bool {
        let wait = (at - Utc::now()).to_std().unwrap_or_default();
        tokio::select! {
            _ = tokio::time::sleep(wait) => true,
            _ = self.ctx.cancelled() => false,
        }
    }
}

/// A platform error on one case fails that case, except refused credentials: those fail every
/// case the same way, so the run stops at once with the reason instead of hammering the API.
fn failure_of(case_id: u64, what: &str, e: SoarError) -> Result<CaseResult, JobError> {
    if e.is_auth() {
        return Err(JobError::context("SecOps SOAR refused the credentials", e));
    }
    let chain = soarjobd_core::error_chain(&e).replace('\n', ": ");
    tracing::warn!(case_id, what, error = %soarjobd_core::error_chain(&e), "case failed");
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

    #[test]
    fn the_recheck_instant_is_rounded_up_to_the_second() {
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        assert_eq!(
            whole_second_after(at("2026-12-01T20:30:59.001Z")),
            "2026-12-01T20:31:00Z"
        );
        assert_eq!(
            whole_second_after(at("2026-12-01T20:31:00Z")),
            "2026-12-01T20:31:00Z"
        );
    }

    /// The cap is warned about when the job file is loaded, before any run: the job holds its
    /// client, so it knows `soar.max_concurrency`.
    #[test]
    fn a_concurrency_above_the_cap_is_warned_about_at_load() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("capped.yaml");
        std::fs::write(
            &file,
            "name: Capped\njob: comment-on-tagged-cases\nschedule: {every: 5m}\nparameters:\n\
             \x20 - {name: Tags, type: string, is_mandatory: true, value: Phishing}\n\
             \x20 - {name: Comment, type: string, is_mandatory: true, value: Seen}\n\
             \x20 - {name: Concurrency, type: integer, is_mandatory: false, value: \"32\"}\n",
        )
        .unwrap();
        let mut cfg = soarjobd_clients::soar::SoarConfig::legacy("http://127.0.0.1:9", "k");
        cfg.max_concurrency = 2;
        let client = SoarClient::new(&cfg).unwrap();
        let mut registry = soarjobd_core::Registry::new();
        registry.register(CommentOnTaggedCases::new(Configured::ready(client)));
        let report = soarjobd_core::definition::load_dir(
            dir.path(),
            &registry,
            soarjobd_containment::open_nonblocking,
        );
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert_eq!(report.jobs.len(), 1);
        let key = (file.display().to_string(), 32, 2);
        assert!(CAPPED_WARNED.lock().unwrap().contains(&key));
    }

    #[test]
    fn concurrency_is_capped_at_the_clients_limit() {
        assert_eq!(effective_concurrency("unit-cap", 4, 8), 4);
        assert_eq!(effective_concurrency("unit-cap", 8, 8), 8);
        assert_eq!(effective_concurrency("unit-cap", 32, 8), 8);
        // Warned once per job and setting.
        assert!(
            CAPPED_WARNED
                .lock()
                .unwrap()
                .contains(&("unit-cap".to_string(), 32, 8))
        );
        assert_eq!(effective_concurrency("unit-cap", 32, 8), 8);
    }
}
