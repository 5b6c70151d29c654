//! `comment-on-tagged-cases` against the SOAR simulator over real HTTP: the right cases get
//! exactly one comment, faults and in-doubt writes never double a comment nor move the time
//! window past a failed case, a SIGKILLed daemon process resumes without duplicates, refused
//! credentials and malformed answers are explained in the run's history row, and the API key
//! never reaches a log line or a history row.
//!
//! Every test starts its own simulator on `127.0.0.1:0` and its own [`TestApp`]. Expected
//! results are computed from the simulator's own view of its cases (`state().cases()`), never
//! from anything the job reports.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::{Value, json};
use soarjobd_core::store::{RunRecord, RunStatus, SeenState, Store};
use soarjobd_sim::soar as sim;
use soarjobd_sim::soar::{CasePatch, CaseSummary, Override, SimHandle, SoarSimConfig};

use crate::support::*;

/// The job file's id (its file stem); the implementation is `comment-on-tagged-cases`.
const JOB: &str = "tagged";
/// The key the simulator accepts. Distinctive, so a leak is found by a plain substring search.
const KEY: &str = "it-appkey-7c41e9d2-never-log-me";
/// A wrong key, which must not be logged either.
const WRONG_KEY: &str = "it-wrongkey-0b8f53aa-never-log-me";
const COMMENT: &str = "Triaged by soarjobd (integration test)";
const HOUR_MS: i64 = 3_600_000;
const MINUTE_MS: i64 = 60_000;
const BIN: &str = env!("CARGO_BIN_EXE_soarjobd");

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

async fn start_sim(cfg: SoarSimConfig) -> SimHandle {
    sim::start(
        SoarSimConfig {
            app_key: KEY.into(),
            ..cfg
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .expect("the simulator starts")
}

/// A TestApp whose `soar` section points at `sim` with `key`, plus any `extra` keys.
fn app_for(sim: &SimHandle, key: &str, extra: Value) -> TestApp {
    let mut app = TestApp::new();
    let mut soar = json!({ "url": sim.url(), "app_key": key });
    if let (Some(s), Some(e)) = (soar.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    app.settings.set_section("soar", soar);
    app
}

/// The job's parameters, as a job file states them.
struct Params<'a> {
    tags: &'a str,
    environments: Option<&'a str>,
    hours: u32,
    concurrency: u32,
}

fn job_yaml(p: &Params, schedule: &str) -> String {
    job_yaml_with(p, schedule, "5m", 1)
}

/// [`job_yaml`] with the run's `timeout` and `Recheck In Doubt After` (seconds).
fn job_yaml_with(p: &Params, schedule: &str, timeout: &str, settle_secs: u32) -> String {
    let envs = p
        .environments
        .map(|e| format!("  - {{name: Environments, type: string, value: \"{e}\"}}\n"))
        .unwrap_or_default();
    format!(
        "name: Tagged\njob: comment-on-tagged-cases\n{schedule}timeout: {timeout}\nparameters:\n\
         \x20 - {{name: Tags, type: string, value: \"{}\"}}\n\
         \x20 - {{name: Comment, type: string, value: \"{COMMENT}\"}}\n\
         \x20 - {{name: Max Hours Backwards, type: integer, value: {}}}\n\
         \x20 - {{name: Concurrency, type: integer, value: {}}}\n\
         \x20 - {{name: Recheck In Doubt After, type: integer, value: {settle_secs}}}\n{envs}",
        p.tags, p.hours, p.concurrency
    )
}

/// One manual run (`run-once`) of the job; returns its history row.
async fn run_job(app: &TestApp) -> RunRecord {
    let code = soarjobd::inspect::run_once(&app.app(), JOB, &[]).await;
    let store = app.store().await;
    let run = runs(&store, JOB).await.pop().expect("the run was recorded");
    assert_eq!(
        code,
        soarjobd_core::exit::for_run(run.status),
        "exit code of {run:?}"
    );
    run
}

fn stat(run: &RunRecord, name: &str) -> i64 {
    run.stats[name]
        .as_i64()
        .unwrap_or_else(|| panic!("stat {name} missing in {}", run.stats))
}

/// What the job is asked to match, evaluated against the simulator's own cases.
struct Criteria<'a> {
    tags: &'a [&'a str],
    environments: Option<&'a [&'a str]>,
    since_ms: i64,
}

impl Criteria<'_> {
    /// Open, with one of the tags, in the environments, started or updated since `since_ms`.
    fn matches(&self, c: &CaseSummary) -> bool {
        c.status == "OPEN"
            && c.tags.iter().any(|t| self.tags.contains(&t.as_str()))
            && self
                .environments
                .is_none_or(|e| e.contains(&c.environment.as_str()))
            && (c.creation_time >= self.since_ms || c.modification_time >= self.since_ms)
    }
}

/// (cases the job should match, of them the ones with alerts, i.e. the ones to comment on).
fn expected(cases: &[CaseSummary], crit: &Criteria) -> (BTreeSet<u64>, BTreeSet<u64>) {
    let matched: BTreeSet<u64> = cases
        .iter()
        .filter(|c| crit.matches(c))
        .map(|c| c.id)
        .collect();
    let with_alerts = cases
        .iter()
        .filter(|c| matched.contains(&c.id) && !c.ticket_ids.is_empty())
        .map(|c| c.id)
        .collect();
    (matched, with_alerts)
}

/// Moves every case time within `margin` of `boundary` out of that band (15 minutes earlier),
/// so whether a case is in the job's window does not depend on the second the run starts.
fn clear_band(sim: &SimHandle, boundary: i64, margin: i64) {
    let st = sim.state();
    let in_band = |t: i64| (boundary - margin..=boundary + margin).contains(&t);
    for c in st.cases() {
        if !in_band(c.creation_time) && !in_band(c.modification_time) {
            continue;
        }
        let shift = |t: i64| if in_band(t) { t - 15 * MINUTE_MS } else { t };
        let modification = shift(c.modification_time);
        let creation = shift(c.creation_time).min(modification);
        st.upsert_case(CasePatch {
            id: Some(c.id),
            creation_time: Some(creation),
            modification_time: Some(modification),
            ..CasePatch::default()
        })
        .expect("patch a case");
    }
}

/// Asserts that every case of `expected` has exactly one comment (the job's text, on its first
/// alert's ticket id) and that no other case has any.
fn assert_exactly_once(sim: &SimHandle, expected: &BTreeSet<u64>) {
    let st = sim.state();
    let first_ticket: BTreeMap<u64, Option<String>> = st
        .cases()
        .into_iter()
        .map(|c| (c.id, c.ticket_ids.first().cloned()))
        .collect();
    let mut per_case: BTreeMap<u64, usize> = BTreeMap::new();
    for c in st.comments(None) {
        assert!(
            expected.contains(&c.case_id),
            "case {} is not a matching case but got the comment {:?}",
            c.case_id,
            c.comment
        );
        assert_eq!(c.comment, COMMENT);
        assert_eq!(
            Some(&c.alert_identifier),
            first_ticket.get(&c.case_id),
            "case {}: the comment is not on the first alert's ticket id",
            c.case_id
        );
        *per_case.entry(c.case_id).or_default() += 1;
    }
    let missing: Vec<u64> = expected
        .iter()
        .filter(|id| !per_case.contains_key(id))
        .copied()
        .collect();
    assert!(missing.is_empty(), "cases without the comment: {missing:?}");
    let doubled: Vec<(u64, usize)> = per_case.into_iter().filter(|(_, n)| *n != 1).collect();
    assert!(
        doubled.is_empty(),
        "cases commented more than once: {doubled:?}"
    );
}

async fn stored_timestamp(store: &Arc<dyn Store>) -> Option<i64> {
    store.get_timestamp(JOB, "timestamp").await.unwrap()
}

/// A hand-made case: `(tags, environment, open, created_h_ago, updated_h_ago, alerts)`.
fn add_case(
    sim: &SimHandle,
    now: i64,
    (tags, env, open, created_h, updated_h, alerts): (&[&str], &str, bool, i64, i64, usize),
) -> u64 {
    sim.state()
        .upsert_case(CasePatch {
            status: Some(if open { "OPEN" } else { "CLOSE" }.into()),
            environment: Some(env.into()),
            tags: Some(tags.iter().map(|t| t.to_string()).collect()),
            creation_time: Some(now - created_h * HOUR_MS),
            modification_time: Some(now - updated_h * HOUR_MS),
            alerts: Some(alerts),
            ..CasePatch::default()
        })
        .expect("add a case")
        .id
}

// ---------------------------------------------------------------------------------------------
// The right cases, exactly once
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_right_cases_get_exactly_one_comment_and_a_second_run_adds_none() {
    let now = Utc::now().timestamp_millis();
    let sim = start_sim(SoarSimConfig {
        cases: 600,
        seed: 11,
        // The simulator's clock starts after it generated its cases, so with the real clock
        // it runs that many milliseconds behind ours, and the first comments would be stamped
        // before the run's start. Running it ahead keeps this test about matching; the effect
        // of a lagging server clock is `a_server_clock_behind_ours_does_not_lose_a_case`.
        base_time_ms: Some(now + 2_000),
        ..SoarSimConfig::default()
    })
    .await;
    // Hand-made cases for every reason to match or not, so each rule is exercised whatever
    // the generator drew.
    let edge = [
        (&["Phishing"][..], "Prod", true, 30, 1, 1), // updated since: match
        (&["Malware"][..], "Lab", true, 2, 2, 2),    // started since: match
        (&["Phishing"][..], "Prod", false, 2, 2, 1), // closed: no
        (&["Ransomware"][..], "Prod", true, 2, 2, 1), // other tag: no
        (&["Phishing"][..], "Default Environment", true, 2, 2, 1), // other environment: no
        (&["Phishing"][..], "Prod", true, 30, 26, 1), // too old: no
        (&["Phishing"][..], "Lab", true, 3, 3, 0),   // matches, but no alerts
    ];
    let ids: Vec<u64> = edge.iter().map(|e| add_case(&sim, now, *e)).collect();
    let boundary = now - 24 * HOUR_MS;
    clear_band(&sim, boundary, 5 * MINUTE_MS);

    let tags = ["Phishing", "Malware"];
    let envs = ["Prod", "Lab"];
    let crit = Criteria {
        tags: &tags,
        environments: Some(&envs),
        since_ms: boundary,
    };
    let (matched, to_comment) = expected(&sim.state().cases(), &crit);
    assert!(matched.contains(&ids[0]) && matched.contains(&ids[1]) && matched.contains(&ids[6]));
    assert!(to_comment.contains(&ids[0]) && to_comment.contains(&ids[1]));
    for id in &ids[2..6] {
        assert!(
            !matched.contains(id),
            "hand-made case {id} should not match"
        );
    }
    assert!(!to_comment.contains(&ids[6]));
    assert!(
        to_comment.len() >= 10,
        "too few matching cases to mean anything"
    );

    let app = app_for(&sim, KEY, json!({}));
    let params = Params {
        tags: "Phishing, Malware",
        environments: Some("Prod,Lab"),
        hours: 24,
        concurrency: 4,
    };
    app.write_job(JOB, &job_yaml(&params, ""));

    let first = run_job(&app).await;
    assert_eq!(first.status, RunStatus::Succeeded, "{first:?}");
    assert_eq!(stat(&first, "cases_matched"), matched.len() as i64);
    assert_eq!(stat(&first, "commented"), to_comment.len() as i64);
    assert_eq!(
        stat(&first, "no_alerts"),
        (matched.len() - to_comment.len()) as i64
    );
    assert_eq!(stat(&first, "already_commented"), 0);
    assert_eq!(stat(&first, "failed"), 0);
    assert_eq!(stat(&first, "in_doubt"), 0);
    assert_exactly_once(&sim, &to_comment);
    let stats = sim.state().stats();
    assert_eq!(stats.bad_requests, 0, "the client sent a malformed request");
    assert_eq!(stats.comments_added, to_comment.len() as u64);

    // The window moves to the first run's start: only the cases it touched match again.
    let store = app.store().await;
    let ts = stored_timestamp(&store)
        .await
        .expect("a success saves the timestamp");
    assert!(
        ts >= first.started_at.timestamp_millis(),
        "{ts} vs {first:?}"
    );
    assert!(ts <= first.finished_at.unwrap().timestamp_millis());

    let second = run_job(&app).await;
    assert_eq!(second.status, RunStatus::Succeeded, "{second:?}");
    assert_eq!(stat(&second, "commented"), 0);
    assert_eq!(
        stat(&second, "already_commented"),
        stat(&first, "commented"),
        "{second:?}"
    );
    assert_eq!(
        stat(&second, "cases_matched"),
        stat(&second, "already_commented") + stat(&second, "no_alerts")
    );
    assert_exactly_once(&sim, &to_comment);
    assert_eq!(sim.state().stats().comments_added, to_comment.len() as u64);
    sim.shutdown().await.unwrap();
}

/// BUG (see the report): the window starts exactly at the previous success's start, on our
/// clock, while the platform stamps update times with its own. A case created right after a
/// run's query, on a server whose clock is a couple of seconds behind ours, is stamped before
/// that run's start: the next run's window starts after it, and no run ever sees it. The
/// seen-set makes an overlap free (a re-matched case is `already_commented`), so the window
/// should start a safety margin earlier.
#[tokio::test]
async fn a_server_clock_behind_ours_does_not_lose_a_case() {
    let now = Utc::now().timestamp_millis();
    let sim = start_sim(SoarSimConfig {
        cases: 50,
        // The platform's clock is 3 s behind the daemon's.
        base_time_ms: Some(now - 3_000),
        ..SoarSimConfig::default()
    })
    .await;
    let app = app_for(&sim, KEY, json!({}));
    let params = Params {
        tags: "Fresh",
        environments: None,
        hours: 24,
        concurrency: 4,
    };
    app.write_job(JOB, &job_yaml(&params, ""));
    let first = run_job(&app).await;
    assert_eq!(first.status, RunStatus::Succeeded, "{first:?}");
    assert_eq!(stat(&first, "cases_matched"), 0);

    // A case is opened on the platform just after the first run looked.
    let server_now = sim.state().now_ms();
    let fresh = sim
        .state()
        .upsert_case(CasePatch {
            status: Some("OPEN".into()),
            tags: Some(vec!["Fresh".into()]),
            creation_time: Some(server_now),
            modification_time: Some(server_now),
            alerts: Some(1),
            ..CasePatch::default()
        })
        .unwrap();
    for _ in 0..2 {
        let run = run_job(&app).await;
        assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
    }
    assert_exactly_once(&sim, &BTreeSet::from([fresh.id]));
    sim.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Faults
// ---------------------------------------------------------------------------------------------

/// Slow faults take this long; the client gives up after [`FAULT_TIMEOUT`], so a slow
/// AddComment is in doubt (and lands anyway, after the client left).
const SLOW_MS: u64 = 1_000;
const FAULT_TIMEOUT: &str = "400ms";

/// A simulator answering 20% of API requests with a fault (500, 429 or slow), an app for it,
/// and the cases the job must comment on.
async fn faulty_world(cases: usize) -> (SimHandle, TestApp, BTreeSet<u64>) {
    let sim = start_sim(SoarSimConfig {
        cases,
        seed: 23,
        fault_rate: 0.2,
        // Overridable, to try other fault sequences: SOARJOBD_IT_FAULT_SEED=N.
        fault_seed: std::env::var("SOARJOBD_IT_FAULT_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(99),
        slow_ms: SLOW_MS,
        ..SoarSimConfig::default()
    })
    .await;
    let boundary = Utc::now().timestamp_millis() - 24 * HOUR_MS;
    clear_band(&sim, boundary, 5 * MINUTE_MS);
    let crit = Criteria {
        tags: sim::TAGS,
        environments: None,
        since_ms: boundary,
    };
    let (_, to_comment) = expected(&sim.state().cases(), &crit);
    assert!(to_comment.len() >= 40, "{} cases", to_comment.len());
    let app = app_for(&sim, KEY, json!({ "timeout": FAULT_TIMEOUT }));
    let params = Params {
        tags: &sim::TAGS.join(","),
        environments: None,
        hours: 24,
        // One case at a time makes the request order, and so the seeded fault sequence,
        // the same on every run of the test: whether three runs suffice is then a property
        // of the seed, not of thread timing.
        concurrency: 1,
    };
    app.write_job(JOB, &job_yaml(&params, ""));
    (sim, app, to_comment)
}

/// Up to `max` runs (fewer if one succeeds), each checked for the timestamp rule: a run that
/// left a case failed or in doubt does not save the timestamp, so the window never passes a
/// failed case. Between runs, and after the last, waits for slow writes to land: a recheck
/// happens on a *later* run, as on a real schedule (minutes apart), never right after the
/// timeout. Also checks after each run that no case got a second comment.
async fn faulty_runs(
    sim: &SimHandle,
    app: &TestApp,
    to_comment: &BTreeSet<u64>,
    max: usize,
) -> Vec<RunRecord> {
    let store = app.store().await;
    let mut history: Vec<RunRecord> = Vec::new();
    for _ in 0..max {
        let before = stored_timestamp(&store).await;
        let run = run_job(app).await;
        let after = stored_timestamp(&store).await;
        if run.status == RunStatus::Succeeded {
            assert_eq!(stat(&run, "failed") + stat(&run, "in_doubt"), 0, "{run:?}");
            let ts = after.expect("a success saves the timestamp");
            assert!(ts >= run.started_at.timestamp_millis(), "{run:?}");
        } else {
            // Partial or failed: either cases were left failed or in doubt, or the run could
            // not even list the cases (no per-case stats then).
            let not_done = run.stats["failed"].as_i64().unwrap_or(0)
                + run.stats["in_doubt"].as_i64().unwrap_or(0);
            assert!(
                not_done > 0 || run.stats.get("commented").is_none(),
                "{run:?}"
            );
            assert_eq!(
                after, before,
                "a run that left cases failed or in doubt moved the timestamp: {run:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(SLOW_MS + 300)).await;
        assert_at_most_once(sim, to_comment);
        let done = run.status == RunStatus::Succeeded;
        history.push(run);
        if done {
            break;
        }
    }
    let stats = sim.state().stats();
    assert!(
        stats.faults_500 + stats.faults_429 + stats.faults_slow > 10,
        "too few faults to mean anything: {stats:?}"
    );
    history
}

/// No case has two comments, and only matching cases have any.
fn assert_at_most_once(sim: &SimHandle, expected: &BTreeSet<u64>) {
    let mut per_case: BTreeMap<u64, usize> = BTreeMap::new();
    for c in sim.state().comments(None) {
        assert!(
            expected.contains(&c.case_id),
            "case {} got a comment",
            c.case_id
        );
        *per_case.entry(c.case_id).or_default() += 1;
    }
    let doubled: Vec<(u64, usize)> = per_case.into_iter().filter(|(_, n)| *n > 1).collect();
    assert!(
        doubled.is_empty(),
        "cases commented more than once: {doubled:?}"
    );
}

#[tokio::test]
async fn faults_never_double_a_comment_nor_move_the_window_past_a_failed_case() {
    let (sim, app, to_comment) = faulty_world(150).await;
    let history = faulty_runs(&sim, &app, &to_comment, 3).await;
    // Unanswered writes are rechecked inside the run (`rechecked`) or left in doubt.
    let in_doubt: i64 = history
        .iter()
        .filter_map(|r| Some(r.stats["in_doubt"].as_i64()? + r.stats["rechecked"].as_i64()?))
        .sum();
    assert!(in_doubt > 0, "no write was ever in doubt: {history:#?}");
    // Once the platform recovers, a run finishes the job and writes nothing twice. (Up to
    // three: on a loaded CI machine a healthy reply can still miss the short client timeout,
    // which leaves that write in doubt for the next run.)
    sim.state().set_fault_rate(0.0);
    let store = app.store().await;
    let before = stored_timestamp(&store).await;
    let mut clean = Vec::new();
    for _ in 0..3 {
        let run = run_job(&app).await;
        let done = run.status == RunStatus::Succeeded;
        clean.push(run);
        if done {
            break;
        }
        tokio::time::sleep(Duration::from_millis(SLOW_MS + 300)).await;
    }
    assert_eq!(
        clean.last().map(|r| r.status),
        Some(RunStatus::Succeeded),
        "{clean:#?}"
    );
    let after = stored_timestamp(&store).await;
    assert!(
        after.is_some() && after != before,
        "{before:?} -> {after:?}"
    );
    assert_exactly_once(&sim, &to_comment);
    sim.shutdown().await.unwrap();
}

/// BUG (see the report): `crates/clients/src/http.rs` never retries a `500` answer, even to an idempotent
/// request, so at the simulator's fault mix about one case in ten fails a read in every run
/// (and a 500 on the case query fails the whole run), and "every case within three runs"
/// holds only by luck: with fault seeds 1..=10 (`SOARJOBD_IT_FAULT_SEED`), 3 of 10 failed.
#[tokio::test]
async fn with_twenty_percent_faults_every_case_gets_one_comment_within_three_runs() {
    let (sim, app, to_comment) = faulty_world(150).await;
    let history = faulty_runs(&sim, &app, &to_comment, 3).await;
    assert!(!history.is_empty());
    assert_exactly_once(&sim, &to_comment);
    sim.shutdown().await.unwrap();
}

/// BUG (see the report): an item left in doubt is rechecked on every later run, even when its
/// case no longer exists. The recheck's 404 counts as a failed case, so every run from then on
/// is partial (or failed) and the timestamp never moves again.
#[tokio::test]
async fn an_in_doubt_comment_on_a_deleted_case_does_not_block_the_window_forever() {
    let sim = start_sim(SoarSimConfig {
        cases: 20,
        ..SoarSimConfig::default()
    })
    .await;
    let now = Utc::now().timestamp_millis();
    let solo = add_case(&sim, now, (&["Solo"], "Prod", true, 1, 1, 1));
    let app = app_for(&sim, KEY, json!({}));
    let params = Params {
        tags: "Solo",
        environments: None,
        hours: 24,
        concurrency: 1,
    };
    // A 30 s timeout leaves no room to recheck inside the run (that needs three request
    // timeouts of 30 s after the settle time), so the item stays in doubt for a later run.
    app.write_job(JOB, &job_yaml_with(&params, "", "30s", 1));
    // The comment's answer is a gateway's 502: no answer from the platform, in doubt.
    sim.state().add_override(Override {
        endpoint: "AddComment".into(),
        status: 502,
        body: "{}".into(),
        times: Some(1),
    });
    let first = run_job(&app).await;
    assert_eq!(stat(&first, "in_doubt"), 1, "{first:?}");
    // The case is then deleted: it leaves the filter, and reading it answers 404.
    sim.state()
        .upsert_case(CasePatch {
            id: Some(solo),
            status: Some("CLOSE".into()),
            ..CasePatch::default()
        })
        .unwrap();
    sim.state().add_override(Override {
        endpoint: "FetchCaseComments".into(),
        status: 404,
        body: "{}".into(),
        times: None,
    });
    // Let the in-doubt item settle (`Recheck In Doubt After: 1`).
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let mut statuses = Vec::new();
    for _ in 0..2 {
        statuses.push(run_job(&app).await.status);
    }
    assert!(
        statuses.contains(&RunStatus::Succeeded),
        "a deleted case blocks every run: {statuses:?}"
    );
    let store = app.store().await;
    assert!(stored_timestamp(&store).await.is_some());
    sim.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// In-doubt writes are finished inside the run (issue 8, item 10)
// ---------------------------------------------------------------------------------------------

/// Longer than a run takes to get through the faulty world's cases at Concurrency 1: a run
/// that does not wait for its unanswered writes itself leaves them unsettled for the next,
/// back-to-back run, and that one for the one after.
const LONG_SETTLE_SECS: u32 = 10;

/// The job's parameters for the one hand-made "Solo" case.
fn solo_params() -> Params<'static> {
    Params {
        tags: "Solo",
        environments: None,
        hours: 24,
        concurrency: 1,
    }
}

/// A simulator without random faults, one matching case, and an app whose requests time out
/// after `timeout` (slow replies take [`SLOW_MS`]).
async fn solo_world(timeout: &str) -> (SimHandle, TestApp, u64) {
    let sim = start_sim(SoarSimConfig {
        cases: 20,
        slow_ms: SLOW_MS,
        ..SoarSimConfig::default()
    })
    .await;
    let now = Utc::now().timestamp_millis();
    let solo = add_case(&sim, now, (&["Solo"], "Prod", true, 1, 1, 1));
    let app = app_for(&sim, KEY, json!({ "timeout": timeout }));
    (sim, app, solo)
}

fn requests(sim: &SimHandle, endpoint: &str) -> u64 {
    sim.state()
        .stats()
        .requests
        .get(endpoint)
        .copied()
        .unwrap_or(0)
}

/// Issue 8, item 10: with 20% faults, three back-to-back runs left cases without their
/// comment. A write answered `500` stayed in doubt until a later run, and a later run skipped
/// every in-doubt item younger than `Recheck In Doubt After`, so runs in quick succession
/// never got to them. Now a `500` is settled at once (read the case, write if absent) and a
/// write with no answer is waited for inside the run.
#[tokio::test]
async fn with_twenty_percent_faults_back_to_back_runs_leave_every_case_with_one_comment() {
    let (sim, app, to_comment) = faulty_world(230).await;
    let params = Params {
        tags: &sim::TAGS.join(","),
        environments: None,
        hours: 24,
        concurrency: 1,
    };
    app.write_job(JOB, &job_yaml_with(&params, "", "5m", LONG_SETTLE_SECS));
    let mut history: Vec<RunRecord> = Vec::new();
    for _ in 0..3 {
        let run = run_job(&app).await;
        assert_at_most_once(&sim, &to_comment);
        let done = run.status == RunStatus::Succeeded;
        history.push(run);
        if done {
            break;
        }
    }
    assert_exactly_once(&sim, &to_comment);
    let last = history.last().unwrap();
    assert_eq!(last.status, RunStatus::Succeeded, "{history:#?}");
    let stats = sim.state().stats();
    assert!(
        stats.faults_500 + stats.faults_429 + stats.faults_slow > 10,
        "too few faults to mean anything: {stats:?}"
    );
    let rechecked: i64 = history
        .iter()
        .filter_map(|r| r.stats["rechecked"].as_i64())
        .sum();
    assert!(
        rechecked > 0,
        "no write went unanswered, the test proves nothing: {history:#?}"
    );
    let store = app.store().await;
    let attempting = store
        .seen_list(JOB, "comments", SeenState::Attempting)
        .await
        .unwrap();
    assert!(attempting.is_empty(), "items left in doubt: {attempting:?}");
    sim.shutdown().await.unwrap();
}

/// A write times out on the client but the platform applies it: the run waits the settle
/// time, reads the case, finds the comment and confirms it, without writing again.
#[tokio::test]
async fn a_write_that_times_out_but_lands_is_confirmed_within_the_same_run() {
    let (sim, app, solo) = solo_world(FAULT_TIMEOUT).await;
    app.write_job(JOB, &job_yaml_with(&solo_params(), "", "5m", 2));
    sim.state().slow_next("AddComment", 1);
    let run = run_job(&app).await;
    assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
    assert_eq!(stat(&run, "commented"), 1, "{run:?}");
    assert_eq!(stat(&run, "in_doubt"), 0, "{run:?}");
    assert_eq!(stat(&run, "rechecked"), 1, "{run:?}");
    assert_eq!(sim.state().stats().faults_slow, 1);
    assert_eq!(
        requests(&sim, "AddComment"),
        1,
        "the comment was sent twice"
    );
    assert_exactly_once(&sim, &BTreeSet::from([solo]));
    let store = app.store().await;
    assert!(stored_timestamp(&store).await.is_some());
    sim.shutdown().await.unwrap();
}

/// A write answered `500` (not applied: the override answers before the handler) and then
/// refused with `429` beyond the transport's retries: both say the comment was not written,
/// so the run writes it again at once and succeeds.
#[tokio::test]
async fn writes_answered_with_errors_are_retried_within_the_same_run() {
    // A generous timeout: no write here may go unanswered, however loaded the machine.
    let (sim, app, solo) = solo_world("30s").await;
    app.write_job(
        JOB,
        &job_yaml_with(&solo_params(), "", "5m", LONG_SETTLE_SECS),
    );
    for (status, times) in [(500, 1), (429, 4)] {
        sim.state().add_override(Override {
            endpoint: "AddComment".into(),
            status,
            body: "{}".into(),
            times: Some(times),
        });
    }
    let run = run_job(&app).await;
    assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
    assert_eq!(stat(&run, "commented"), 1, "{run:?}");
    assert_eq!(stat(&run, "in_doubt"), 0, "{run:?}");
    assert_eq!(stat(&run, "rechecked"), 0, "{run:?}");
    // 500; 429 four times (the transport's attempt and its three retries); the one that landed.
    assert_eq!(requests(&sim, "AddComment"), 6);
    // After the 500, and only then, the case was read before writing again.
    assert_eq!(requests(&sim, "FetchCaseComments"), 1);
    assert_exactly_once(&sim, &BTreeSet::from([solo]));
    sim.shutdown().await.unwrap();
}

/// When the run's timeout leaves no room to wait for an unanswered write, the item stays in
/// doubt and the outcome names the instant after which the next run rechecks it; that run
/// confirms the comment that landed meanwhile, without writing it again.
#[tokio::test]
async fn an_in_doubt_write_the_run_cannot_wait_for_names_when_it_is_rechecked() {
    let (sim, app, solo) = solo_world(FAULT_TIMEOUT).await;
    // Settling takes 60 s; the run may take 10 s.
    app.write_job(JOB, &job_yaml_with(&solo_params(), "", "10s", 60));
    sim.state().slow_next("AddComment", 1);
    let before = Utc::now();
    let run = run_job(&app).await;
    let after = Utc::now();
    assert_eq!(run.status, RunStatus::Partial, "{run:?}");
    assert_eq!(stat(&run, "in_doubt"), 1, "{run:?}");
    assert_eq!(stat(&run, "rechecked"), 0, "{run:?}");
    let message = run.message.clone().unwrap_or_default();
    let marker = "1 in doubt: rechecked at the next run after ";
    let at = message
        .split_once(marker)
        .and_then(|(_, rest)| rest.split_once(' '))
        .and_then(|(at, _)| chrono::DateTime::parse_from_rfc3339(at).ok())
        .unwrap_or_else(|| panic!("the outcome does not say when: {message}"));
    assert!(
        at >= before + chrono::Duration::seconds(60) && at <= after + chrono::Duration::seconds(61),
        "{at} is not 60 s after the write ({before} .. {after}): {message}"
    );
    let store = app.store().await;
    assert_eq!(stored_timestamp(&store).await, None);

    // The platform applied the write after the client gave up.
    let st = sim.state().clone();
    assert!(
        eventually(Duration::from_secs(10), || async {
            !st.comments(Some(solo)).is_empty()
        })
        .await
    );
    // A next run once it settled (here: no settle time) finds it and writes nothing.
    app.write_job(JOB, &job_yaml_with(&solo_params(), "", "10s", 0));
    let run = run_job(&app).await;
    assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
    assert_eq!(stat(&run, "already_commented"), 1, "{run:?}");
    assert_eq!(stat(&run, "commented"), 0, "{run:?}");
    assert_eq!(
        requests(&sim, "AddComment"),
        1,
        "the comment was sent twice"
    );
    assert_exactly_once(&sim, &BTreeSet::from([solo]));
    sim.shutdown().await.unwrap();
}

/// Issue 8, item 11: a job's `Concurrency` above `soar.max_concurrency` was capped without a
/// word. The job's first run in a process warns, with the effective value; later runs do not
/// repeat it.
#[tokio::test]
async fn a_concurrency_above_soar_max_concurrency_is_warned_about_once() {
    // See `the_api_key_never_appears_in_logs_or_run_history` for why a second dispatcher.
    let _second = tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());
    let (logs, _guard) = capture_logs();
    tracing::callsite::rebuild_interest_cache();
    let (sim, _, _) = solo_world(FAULT_TIMEOUT).await;
    let app = app_for(&sim, KEY, json!({ "max_concurrency": 2 }));
    let params = Params {
        concurrency: 32,
        ..solo_params()
    };
    app.write_job(JOB, &job_yaml(&params, ""));
    for _ in 0..2 {
        let run = run_job(&app).await;
        assert_eq!(run.status, RunStatus::Succeeded, "{run:?}");
    }
    let text = logs.text();
    let warning = "Concurrency 32 is above soar.max_concurrency 2: the job handles 2 cases at once";
    assert_eq!(
        text.matches(warning).count(),
        1,
        "one warning for two runs: {text}"
    );
    assert!(text.contains("\"effective\":2"), "{text}");
    sim.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// A daemon process killed with SIGKILL mid-run
// ---------------------------------------------------------------------------------------------

fn daemon_process(dir: &Path, url: &str, round: usize) -> Child {
    let out = File::create(dir.join(format!("daemon-{round}.log"))).unwrap();
    let err = out.try_clone().unwrap();
    Command::new(BIN)
        .args(["run", "--log-format", "json", "--log-level", "debug"])
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .env_remove("SOARJOBD_CONFIG")
        .env("SOARJOBD__JOBS_DIR", dir.join("jobs"))
        .env(
            "SOARJOBD__DATABASE_URL",
            format!("sqlite:{}", dir.join("state.db").display()),
        )
        .env("SOARJOBD__SOAR__URL", url)
        .env("SOARJOBD__SOAR__APP_KEY", KEY)
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .spawn()
        .expect("spawn soarjobd")
}

fn wait_exit(child: &mut Child, limit: Duration) -> Option<i32> {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if let Some(s) = child.try_wait().unwrap() {
            return s.code();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkilled_daemon_process_leaves_exactly_one_comment_per_case() {
    // Slow enough that the run lasts seconds: 10 ms per request, 4 cases at a time.
    let sim = start_sim(SoarSimConfig {
        cases: 1_000,
        seed: 31,
        latency_ms: 10,
        ..SoarSimConfig::default()
    })
    .await;
    // Every case matches: open, tagged, inside a 72 h window (cases are at most 48 h old).
    for c in sim.state().cases() {
        sim.state()
            .upsert_case(CasePatch {
                id: Some(c.id),
                status: Some("OPEN".into()),
                tags: Some(vec!["Phishing".into()]),
                ..CasePatch::default()
            })
            .unwrap();
    }
    let crit = Criteria {
        tags: &["Phishing"],
        environments: None,
        since_ms: Utc::now().timestamp_millis() - 72 * HOUR_MS,
    };
    let (matched, to_comment) = expected(&sim.state().cases(), &crit);
    assert_eq!(matched.len(), 1_000);

    let app = TestApp::new();
    let params = Params {
        tags: "Phishing",
        environments: None,
        hours: 72,
        concurrency: 4,
    };
    app.write_job(
        JOB,
        &job_yaml(
            &params,
            "schedule: {every: 1s}\nmisfire: run_once\noverlap: skip\n",
        ),
    );

    let mut child = daemon_process(app.dir.path(), &sim.url(), 0);
    let st = sim.state().clone();
    let started = eventually(Duration::from_secs(30), || async {
        st.comments(None).len() >= 150
    })
    .await;
    unsafe {
        libc::kill(child.id() as i32, libc::SIGKILL);
    }
    let _ = child.wait();
    assert!(started, "the first run never got going");
    // Requests in flight at the kill finish (or not) on the simulator's side.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let at_kill = st.comments(None).len();
    assert!(
        at_kill < to_comment.len(),
        "the run finished before the kill ({at_kill} comments); the test proves nothing"
    );

    let mut child = daemon_process(app.dir.path(), &sim.url(), 1);
    let store = app.store().await;
    let succeeded = eventually(Duration::from_secs(60), || async {
        count(&runs(&store, JOB).await, RunStatus::Succeeded) > 0
    })
    .await;
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    assert_eq!(wait_exit(&mut child, Duration::from_secs(30)), Some(0));
    assert!(succeeded, "no run succeeded after the restart");

    let runs = runs(&store, JOB).await;
    assert_eq!(
        count(&runs, RunStatus::Interrupted),
        1,
        "the killed run is recorded as interrupted: {runs:#?}"
    );
    let first_success = runs
        .iter()
        .find(|r| r.status == RunStatus::Succeeded)
        .unwrap();
    assert_eq!(stat(first_success, "failed"), 0);
    assert_exactly_once(&sim, &to_comment);
    let attempting = store
        .seen_list(JOB, "comments", SeenState::Attempting)
        .await
        .unwrap();
    assert!(attempting.is_empty(), "items left in doubt: {attempting:?}");
    // The process logs (debug level) never carry the key.
    for round in 0..2 {
        let log = std::fs::read_to_string(app.path(&format!("daemon-{round}.log"))).unwrap();
        assert!(
            log.contains("cases matched"),
            "round {round} logged nothing useful"
        );
        assert!(!log.contains(KEY), "the API key is in daemon-{round}.log");
    }
    sim.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Clear errors
// ---------------------------------------------------------------------------------------------

const FILTER_PATH: &str = "/api/external/v1/sdk/GetCasesIdByFilter";

#[tokio::test]
async fn a_wrong_app_key_fails_the_run_with_a_clear_error() {
    let sim = start_sim(SoarSimConfig {
        cases: 50,
        ..SoarSimConfig::default()
    })
    .await;
    let app = app_for(&sim, WRONG_KEY, json!({}));
    app.write_job(JOB, &job_yaml(&all_tags(), ""));
    let run = run_job(&app).await;
    assert_eq!(run.status, RunStatus::Failed, "{run:?}");
    let error = run.error.as_deref().unwrap_or_default();
    let message = run.message.as_deref().unwrap_or_default();
    assert!(
        message.contains("cannot list the matching cases"),
        "{run:?}"
    );
    assert!(error.contains(FILTER_PATH), "{run:?}");
    assert!(error.contains("HTTP 401"), "{run:?}");
    assert!(error.contains("refused the credentials"), "{run:?}");
    assert!(
        error.contains("soar.app_key"),
        "the error says what to fix: {run:?}"
    );
    // Refused credentials are not retried.
    assert_eq!(sim.state().stats().unauthorized, 1);
    assert!(sim.state().comments(None).is_empty());
    sim.shutdown().await.unwrap();
}

fn all_tags() -> Params<'static> {
    Params {
        tags: "Phishing,Malware,Currency,Ransomware,Exfiltration,Brute Force,Insider Threat,Lateral Movement",
        environments: None,
        hours: 72,
        concurrency: 4,
    }
}

#[tokio::test]
async fn a_malformed_answer_fails_the_run_naming_the_path_and_the_json_path() {
    let sim = start_sim(SoarSimConfig {
        cases: 50,
        ..SoarSimConfig::default()
    })
    .await;
    let app = app_for(&sim, KEY, json!({}));
    app.write_job(JOB, &job_yaml(&all_tags(), ""));

    // Ids must be numbers; the third one is not.
    sim.state().add_override(Override {
        endpoint: "GetCasesIdByFilter".into(),
        status: 200,
        body: r#"[1, 2, {"id": 3}]"#.into(),
        times: Some(1),
    });
    let run = run_job(&app).await;
    assert_eq!(run.status, RunStatus::Failed, "{run:?}");
    let error = run.error.as_deref().unwrap_or_default();
    assert!(error.contains(FILTER_PATH), "{run:?}");
    assert!(error.contains("unexpected response"), "{run:?}");
    assert!(
        error.contains("`[2]`"),
        "the JSON path of the bad value: {run:?}"
    );

    // Not JSON at all.
    sim.state().add_override(Override {
        endpoint: "GetCasesIdByFilter".into(),
        status: 200,
        body: "[1, 2".into(),
        times: Some(1),
    });
    let run = run_job(&app).await;
    assert_eq!(run.status, RunStatus::Failed, "{run:?}");
    let error = run.error.as_deref().unwrap_or_default();
    assert!(error.contains(FILTER_PATH), "{run:?}");
    assert!(error.contains("unexpected response"), "{run:?}");
    assert!(sim.state().comments(None).is_empty());
    assert_eq!(sim.state().stats().overrides_served, 2);
    sim.shutdown().await.unwrap();
}

/// BUG (see the report): when every case fails the same way (here, a malformed
/// AlertsTicketIdsByCaseId answer), the run is `failed` but its history row only counts the
/// failures; the reason is in the logs alone.
#[tokio::test]
async fn a_malformed_per_case_answer_is_explained_in_the_history_row() {
    let sim = start_sim(SoarSimConfig {
        cases: 50,
        ..SoarSimConfig::default()
    })
    .await;
    let app = app_for(&sim, KEY, json!({}));
    app.write_job(JOB, &job_yaml(&all_tags(), ""));
    sim.state().add_override(Override {
        endpoint: "AlertsTicketIdsByCaseId".into(),
        status: 200,
        body: r#"{"tickets": []}"#.into(),
        times: None,
    });
    let run = run_job(&app).await;
    assert_eq!(run.status, RunStatus::Failed, "{run:?}");
    let row = format!(
        "{} {}",
        run.message.as_deref().unwrap_or_default(),
        run.error.as_deref().unwrap_or_default()
    );
    assert!(
        row.contains("/api/external/v1/sdk/AlertsTicketIdsByCaseId/"),
        "the row does not say which call failed: {run:?}"
    );
    assert!(row.contains("unexpected response"), "{run:?}");
    sim.shutdown().await.unwrap();
}

/// BUG (see the report): refused credentials in the middle of a run are meant to stop it at
/// once (`failure_of`), but the job collects every case's result before looking at them, so
/// every remaining case still calls the API.
#[tokio::test]
async fn refused_credentials_mid_run_stop_the_run_at_once() {
    let sim = start_sim(SoarSimConfig {
        cases: 200,
        ..SoarSimConfig::default()
    })
    .await;
    let app = app_for(&sim, KEY, json!({}));
    app.write_job(JOB, &job_yaml(&all_tags(), ""));
    sim.state().add_override(Override {
        endpoint: "AlertsTicketIdsByCaseId".into(),
        status: 401,
        body: "{}".into(),
        times: None,
    });
    let run = run_job(&app).await;
    assert_eq!(run.status, RunStatus::Failed, "{run:?}");
    let error = run.error.as_deref().unwrap_or_default();
    assert!(error.contains("refused the credentials"), "{run:?}");
    assert!(
        error.contains("/api/external/v1/sdk/AlertsTicketIdsByCaseId/"),
        "{run:?}"
    );
    // At most the cases already in flight (Concurrency 4) when the first 401 came back.
    let calls = sim.state().stats().requests["AlertsTicketIdsByCaseId"];
    assert!(
        calls <= 8,
        "{calls} calls after the credentials were refused"
    );
    sim.shutdown().await.unwrap();
}

// ---------------------------------------------------------------------------------------------
// Secrets
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_api_key_never_appears_in_logs_or_run_history() {
    // tracing-core caches each callsite's interest globally, and while exactly one dispatcher
    // is registered it computes that interest from whichever thread registers the callsite
    // first. Another test's thread (no subscriber) reaching a callsite first, say the error
    // level "run finished", would then hide that event from this thread's capture too. A
    // second live dispatcher keeps tracing-core on its general path (the interest of every
    // live dispatcher, combined), and the rebuild fixes anything cached before it existed.
    let _second = tracing::Dispatch::new(tracing::subscriber::NoSubscriber::default());
    let (logs, _guard) = capture_logs();
    tracing::callsite::rebuild_interest_cache();
    let sim = start_sim(SoarSimConfig {
        cases: 60,
        seed: 5,
        fault_rate: 0.2,
        slow_ms: 600,
        ..SoarSimConfig::default()
    })
    .await;

    // A run with faults (retries, in-doubt writes, warnings with error chains).
    let good = app_for(&sim, KEY, json!({ "timeout": "300ms" }));
    good.write_job(JOB, &job_yaml(&all_tags(), ""));
    let faulty = run_job(&good).await;
    // A malformed answer.
    sim.state().set_fault_rate(0.0);
    sim.state().add_override(Override {
        endpoint: "GetCasesIdByFilter".into(),
        status: 200,
        body: "{not json".into(),
        times: Some(1),
    });
    let malformed = run_job(&good).await;
    assert_eq!(malformed.status, RunStatus::Failed);
    // A refused key.
    let bad = app_for(&sim, WRONG_KEY, json!({}));
    bad.write_job(JOB, &job_yaml(&all_tags(), ""));
    let refused = run_job(&bad).await;
    assert_eq!(refused.status, RunStatus::Failed);

    let text = logs.text();
    assert!(
        text.contains("\"level\":\"DEBUG\""),
        "debug logs were not captured"
    );
    let finished: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("run finished"))
        .collect();
    assert!(
        text.contains("refused the credentials"),
        "the failing run was not logged: {finished:#?}"
    );
    assert!(text.contains("cases matched"));
    for key in [KEY, WRONG_KEY] {
        assert!(!text.contains(key), "an API key is in the logs");
        for run in [&faulty, &malformed, &refused] {
            let row = serde_json::to_string(run).unwrap();
            assert!(!row.contains(key), "an API key is in a history row: {row}");
        }
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    sim.shutdown().await.unwrap();
}
