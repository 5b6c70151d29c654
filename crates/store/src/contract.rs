//! The contract every store backend keeps: the behaviours the daemon relies on, written once
//! against the [`Store`] traits (`&dyn`, through a [`StoreFactory`]) and run against every
//! backend. SQLite runs it in `cargo test` (`sqlite.rs`); another backend (PostgreSQL) runs the
//! same functions unchanged, with the `store-contract` feature, from its own tests. Nothing here
//! may know which backend it talks to: no SQL, no file paths, no backend-specific messages.
//!
//! A "handle" ([`Database::open`]) stands for one process: its rows have that process as their
//! owner, and closing it ([`RunStore::close`]) is that process's death as far as run ownership
//! goes. Two handles on one database are two processes (or two connections) sharing it.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, TimeDelta, Utc};
use serde_json::json;

use super::ops::{AlertRule, PauseOutcome, RunLogLine};
use super::{
    Claim, NewRun, Pruned, Retention, RunFinish, RunProcess, RunStatus, SeenEntry, SeenState,
    Store, StoreError, Trigger,
};

/// One database of the backend under test.
#[async_trait]
pub trait Database: Send + Sync {
    /// A new handle on this database, as a new process would open it.
    async fn open(&self) -> Arc<dyn Store>;
}

/// Makes fresh, empty databases of the backend under test.
#[async_trait]
pub trait StoreFactory: Send + Sync {
    async fn create(&self) -> Box<dyn Database>;
}

/// Calls the macro `$then!` with the name of every contract test: the one list that
/// [`run_all`] and each backend's named tests (`sqlite.rs`, `postgres/tests.rs`) are made
/// from, so a new contract test cannot be missed by a backend.
macro_rules! each_contract_test {
    ($then:ident) => {
        $then!(
            a_tick_is_claimed_once_across_two_stores_on_one_file,
            manual_runs_may_share_an_instant,
            a_skipped_run_is_inserted_finished,
            finish_records_the_outcome_once,
            finish_refuses_unknown_runs_and_non_final_statuses,
            interrupt_running_finishes_only_running_rows,
            interrupt_running_spares_live_owners,
            exclusive_claims_respect_live_runs_of_other_processes,
            mark_started_moves_only_running_rows,
            history_is_newest_first_and_limited,
            last_runs_gives_each_jobs_newest_run,
            recent_runs_gives_each_jobs_newest_runs_in_one_read,
            prune_keeps_the_newest_the_recent_and_the_running,
            prune_steps_bound_runs_by_count_or_age_and_keep_failures_apart,
            timestamps_round_trip,
            context_round_trips_json,
            seen_set_round_trips,
            unclaim_releases_only_unstarted_claims,
            run_processes_are_recorded_updated_listed_and_forgotten,
            concurrent_claims_from_two_handles_take_each_tick_once,
            pauses_are_kept_resumed_and_catch_ups_taken_once,
            run_logs_are_kept_in_order_and_pruned_with_their_run,
            alert_episodes_open_once_and_resolve_once,
            alert_history_lists_a_subjects_episodes_newest_first,
            last_successes_gives_each_jobs_newest_success,
        );
    };
}
// Used by the backends' `#[cfg(test)]` modules only; unused in a `store-contract` build.
#[allow(unused_imports)]
pub(crate) use each_contract_test;

/// Every contract test in turn (a backend's tests may also call them one by one, as
/// `sqlite.rs` does, to see each by name).
pub async fn run_all(f: &dyn StoreFactory) {
    macro_rules! call_each {
        ($($name:ident),* $(,)?) => { $( $name(f).await; )* };
    }
    each_contract_test!(call_each);
}

/// An instant from Unix milliseconds (test data).
pub fn at(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).expect("valid instant")
}

/// A run to claim at `scheduled_ms`, started 3 ms later (test data).
pub fn new_run(job_id: &str, scheduled_ms: i64, trigger: Trigger) -> NewRun {
    NewRun {
        job_id: job_id.to_owned(),
        scheduled_at: at(scheduled_ms),
        trigger,
        status: RunStatus::Running,
        started_at: at(scheduled_ms + 3),
        message: None,
    }
}

/// A run end at `finished_ms` with a message and stats (test data).
pub fn finish(status: RunStatus, finished_ms: i64) -> RunFinish {
    RunFinish {
        status,
        finished_at: at(finished_ms),
        message: Some(format!("{status} at {finished_ms}")),
        error: None,
        stats: json!({"processed": 2}),
    }
}

async fn claim_one(store: &Arc<dyn Store>, run: NewRun) -> i64 {
    let ids = store.claim_runs(&[run]).await.expect("claim");
    ids[0].expect("claimed")
}

/// Rows of a live process are never interrupted; once it is gone, they are.
pub async fn interrupt_running_spares_live_owners(f: &dyn StoreFactory) {
    let db = f.create().await;
    let daemon = db.open().await;
    let cli = db.open().await;
    let live = claim_one(&cli, new_run("job-a", 1_000, Trigger::Manual)).await;
    let own = claim_one(&daemon, new_run("job-d", 3_000, Trigger::Schedule)).await;
    // A handle that claimed a tick ahead of its instant and died.
    let dead = db.open().await;
    let ahead = claim_one(
        &dead,
        NewRun {
            started_at: at(50_000),
            ..new_run("job-b", 50_000, Trigger::Schedule)
        },
    )
    .await;
    dead.close().await;
    let ids: Vec<i64> = daemon
        .interrupt_running(at(10_000))
        .await
        .expect("sweep")
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, [ahead]);
    let r = daemon.run(ahead).await.expect("run").expect("exists");
    assert_eq!(r.finished_at, Some(at(50_000)), "not before its start");
    assert_eq!(r.duration_ms, Some(0));
    for id in [live, own] {
        let r = daemon.run(id).await.expect("run").expect("exists");
        assert_eq!(r.status, RunStatus::Running);
    }
    cli.close().await;
    let ids: Vec<i64> = daemon
        .interrupt_running(at(11_000))
        .await
        .expect("sweep")
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, [live]);
    daemon.close().await;
}

/// Two handles claiming the same ticks at the same time: every tick is claimed exactly once.
pub async fn concurrent_claims_from_two_handles_take_each_tick_once(f: &dyn StoreFactory) {
    let db = f.create().await;
    let (a, b) = (db.open().await, db.open().await);
    let batch = |offset: i64| -> Vec<NewRun> {
        (0..50)
            .map(|i| {
                new_run(
                    &format!("job-{}", i % 5),
                    1_000 * ((i + offset) % 50),
                    Trigger::Schedule,
                )
            })
            .collect()
    };
    let claim = |s: Arc<dyn Store>, runs: Vec<NewRun>| async move {
        let mut won = 0;
        for chunk in runs.chunks(5) {
            won += s
                .claim_runs_exclusive(chunk, &[false; 5])
                .await
                .expect("claim")
                .iter()
                .filter(|c| matches!(c, Claim::Claimed(_)))
                .count();
        }
        won
    };
    let (x, y) = tokio::join!(
        tokio::spawn(claim(a.clone(), batch(0))),
        tokio::spawn(claim(b.clone(), batch(25)))
    );
    let total = x.expect("join") + y.expect("join");
    let mut rows = 0;
    for j in 0..5 {
        rows += a
            .history(&format!("job-{j}"), 1000)
            .await
            .expect("history")
            .len();
    }
    assert_eq!(rows, 50, "each distinct tick has one row");
    assert_eq!(total, 50, "each tick was won by exactly one claim");
    a.close().await;
    b.close().await;
}

pub async fn a_tick_is_claimed_once_across_two_stores_on_one_file(f: &dyn StoreFactory) {
    let db = f.create().await;
    let first = db.open().await;
    let second = db.open().await;

    let tick = new_run("job-a", 60_000, Trigger::Schedule);
    let other_job = new_run("job-b", 60_000, Trigger::Schedule);
    let ids = first
        .claim_runs(&[tick.clone(), other_job])
        .await
        .expect("claim");
    assert!(ids.iter().all(Option::is_some), "{ids:?}");

    // The same tick again, through this store and through the other: already taken.
    assert_eq!(
        first
            .claim_runs(std::slice::from_ref(&tick))
            .await
            .expect("claim"),
        [None]
    );
    let catch_up = NewRun {
        trigger: Trigger::CatchUp,
        ..tick.clone()
    };
    let next_tick = new_run("job-a", 61_000, Trigger::Schedule);
    let ids = second
        .claim_runs(&[tick, catch_up, next_tick])
        .await
        .expect("claim");
    assert_eq!(ids[0], None);
    assert_eq!(ids[1], None, "a catch-up run shares the claim key");
    assert!(ids[2].is_some());

    let history = second.history("job-a", 10).await.expect("history");
    assert_eq!(history.len(), 2);
    first.close().await;
    second.close().await;
}

pub async fn manual_runs_may_share_an_instant(f: &dyn StoreFactory) {
    let db = f.create().await;
    let store = db.open().await;
    let scheduled = new_run("job-a", 5_000, Trigger::Schedule);
    let manual = new_run("job-a", 5_000, Trigger::Manual);
    let ids = store
        .claim_runs(&[scheduled, manual.clone(), manual])
        .await
        .expect("claim");
    assert!(ids.iter().all(Option::is_some), "{ids:?}");
    assert_eq!(store.history("job-a", 10).await.expect("history").len(), 3);
    // Manual runs do not count as ticks.
    let manual_later = new_run("job-a", 9_000, Trigger::Manual);
    claim_one(&store, manual_later).await;
    assert_eq!(
        store.last_scheduled_at("job-a").await.expect("last"),
        Some(at(5_000))
    );
    assert_eq!(store.last_scheduled_at("job-b").await.expect("last"), None);
}

pub async fn a_skipped_run_is_inserted_finished(f: &dyn StoreFactory) {
    let db = f.create().await;
    let store = db.open().await;
    let skipped = NewRun {
        status: RunStatus::Skipped,
        message: Some("previous run still running".into()),
        ..new_run("job-a", 1_000, Trigger::Schedule)
    };
    let id = claim_one(&store, skipped).await;
    let run = store.run(id).await.expect("run").expect("exists");
    assert_eq!(run.status, RunStatus::Skipped);
    assert_eq!(run.finished_at, Some(run.started_at));
    assert_eq!(run.duration_ms, Some(0));
    assert_eq!(run.message.as_deref(), Some("previous run still running"));
    assert_eq!(run.stats, json!({}));
    // It is final: neither finishing nor interrupting touches it.
    let done = finish(RunStatus::Succeeded, 2_000);
    assert!(!store.finish_run(id, &done).await.expect("finish"));
    assert!(
        store
            .interrupt_running(at(3_000))
            .await
            .expect("interrupt")
            .is_empty()
    );
}

pub async fn finish_records_the_outcome_once(f: &dyn StoreFactory) {
    let db = f.create().await;
    let store = db.open().await;
    let run = NewRun {
        message: Some("claimed".into()),
        ..new_run("job-a", 10_000, Trigger::Schedule)
    };
    let id = claim_one(&store, run).await;
    let running = store.run(id).await.expect("run").expect("exists");
    assert_eq!(running.status, RunStatus::Running);
    assert_eq!(running.finished_at, None);
    assert_eq!(running.duration_ms, None);

    let outcome = RunFinish {
        error: Some("request failed\ncaused by: timeout".into()),
        ..finish(RunStatus::Partial, 10_503)
    };
    assert!(store.finish_run(id, &outcome).await.expect("finish"));
    let later = finish(RunStatus::Failed, 20_000);
    assert!(!store.finish_run(id, &later).await.expect("finish twice"));

    let run = store.run(id).await.expect("run").expect("exists");
    assert_eq!(run.status, RunStatus::Partial);
    assert_eq!(run.finished_at, Some(at(10_503)));
    assert_eq!(run.duration_ms, Some(500));
    assert_eq!(run.message.as_deref(), Some("partial at 10503"));
    assert_eq!(
        run.error.as_deref(),
        Some("request failed\ncaused by: timeout")
    );
    assert_eq!(run.stats, json!({"processed": 2}));
    assert_eq!(run.trigger, Trigger::Schedule);
    assert_eq!(run.scheduled_at, at(10_000));

    // Without a message of its own, a finish keeps the one the run was claimed with.
    let id = claim_one(
        &store,
        NewRun {
            message: Some("replacing run 1".into()),
            ..new_run("job-a", 11_000, Trigger::Schedule)
        },
    )
    .await;
    let quiet = RunFinish {
        message: None,
        ..finish(RunStatus::Cancelled, 11_100)
    };
    assert!(store.finish_run(id, &quiet).await.expect("finish"));
    let run = store.run(id).await.expect("run").expect("exists");
    assert_eq!(run.message.as_deref(), Some("replacing run 1"));
}

pub async fn finish_refuses_unknown_runs_and_non_final_statuses(f: &dyn StoreFactory) {
    let db = f.create().await;
    let store = db.open().await;
    let done = finish(RunStatus::Succeeded, 1_000);
    assert!(matches!(
        store.finish_run(4242, &done).await,
        Err(StoreError::NoSuchRun(4242))
    ));
    let id = claim_one(&store, new_run("job-a", 0, Trigger::Schedule)).await;
    let still_running = finish(RunStatus::Running, 1_000);
    assert!(store.finish_run(id, &still_running).await.is_err());
    let run = store.run(id).await.expect("run").expect("exists");
    assert_eq!(run.finished_at, None);
}

pub async fn interrupt_running_finishes_only_running_rows(f: &dyn StoreFactory) {
    let db = f.create().await;
    let earlier = db.open().await;
    // The rows of an earlier life of the daemon, which is gone (closed) now.
    let a = claim_one(&earlier, new_run("job-a", 1_000, Trigger::Schedule)).await;
    let b = claim_one(&earlier, new_run("job-b", 2_000, Trigger::Manual)).await;
    let c = claim_one(&earlier, new_run("job-c", 3_000, Trigger::Schedule)).await;
    assert!(
        earlier
            .finish_run(c, &finish(RunStatus::Succeeded, 3_500))
            .await
            .expect("finish")
    );
    earlier.close().await;
    let store = db.open().await;

    let interrupted = store
        .interrupt_running(at(10_003))
        .await
        .expect("interrupt");
    let ids: Vec<i64> = interrupted.iter().map(|r| r.id).collect();
    assert_eq!(ids, [a, b]);
    for run in &interrupted {
        assert_eq!(run.status, RunStatus::Interrupted);
        assert_eq!(run.finished_at, Some(at(10_003)));
        assert!(run.message.is_some(), "the row says why: {run:?}");
    }
    assert_eq!(interrupted[0].duration_ms, Some(9_000));
    let c = store.run(c).await.expect("run").expect("exists");
    assert_eq!(c.status, RunStatus::Succeeded);
    assert!(
        store
            .interrupt_running(at(20_000))
            .await
            .expect("again")
            .is_empty()
    );
    // An interrupted run cannot be finished afterwards.
    assert!(
        !store
            .finish_run(a, &finish(RunStatus::Succeeded, 30_000))
            .await
            .expect("finish")
    );
}

pub async fn exclusive_claims_respect_live_runs_of_other_processes(f: &dyn StoreFactory) {
    let db = f.create().await;
    let daemon = db.open().await;
    let cli = db.open().await;
    let manual = claim_one(&cli, new_run("job-a", 1_000, Trigger::Manual)).await;

    let claims = daemon
        .claim_runs_exclusive(
            &[
                new_run("job-a", 2_000, Trigger::Schedule),
                new_run("job-a", 2_000, Trigger::Manual),
                new_run("job-b", 2_000, Trigger::Schedule),
                new_run("job-a", 3_000, Trigger::Schedule),
            ],
            &[true, true, true, false],
        )
        .await
        .expect("claim");
    // A tick is claimed with its holders, and decided when it fires: not skipped at claim.
    let Claim::Contended {
        run_id: contended,
        holder,
        holders,
    } = &claims[0]
    else {
        panic!("{claims:?}");
    };
    assert_eq!(holder.run_id, manual);
    assert_eq!(holder.trigger, Trigger::Manual);
    assert_eq!(holders, &[manual]);
    assert!(
        holder
            .to_string()
            .contains(&format!("run {manual} (manual, soarjobd pid")),
        "{holder}"
    );
    let row = daemon.run(*contended).await.unwrap().unwrap();
    assert_eq!(row.status, RunStatus::Running);
    assert!(
        matches!(&claims[1], Claim::Busy { holder } if holder.run_id == manual),
        "a refused manual run records nothing: {claims:?}"
    );
    // The fire-time check: held while the manual run goes, free once it ended.
    let held = daemon.holding(&[manual]).await.unwrap();
    assert_eq!(held.map(|h| h.run_id), Some(manual));
    cli.finish_run(manual, &finish(RunStatus::Succeeded, 2_500))
        .await
        .unwrap();
    assert_eq!(daemon.holding(&[manual]).await.unwrap(), None);
    let manual = claim_one(&cli, new_run("job-a", 2_600, Trigger::Manual)).await;
    assert!(matches!(claims[2], Claim::Claimed(_)), "another job");
    assert!(matches!(claims[3], Claim::Claimed(_)), "overlap: allow");
    assert_eq!(daemon.history("job-a", 10).await.unwrap().len(), 4);

    // The other direction: the daemon's claimed tick makes a manual exclusive claim busy,
    // and the claimer's own rows never do.
    let Claim::Claimed(tick) = daemon
        .claim_runs_exclusive(&[new_run("job-c", 5_000, Trigger::Schedule)], &[true])
        .await
        .unwrap()[0]
    else {
        panic!("claim");
    };
    let again = daemon
        .claim_runs_exclusive(&[new_run("job-c", 6_000, Trigger::Schedule)], &[true])
        .await
        .unwrap();
    assert!(matches!(again[0], Claim::Claimed(_)), "own rows: {again:?}");
    let refused = cli
        .claim_runs_exclusive(&[new_run("job-c", 5_500, Trigger::Manual)], &[true])
        .await
        .unwrap();
    assert!(
        matches!(&refused[0], Claim::Busy { holder, .. } if holder.run_id == tick),
        "{refused:?}"
    );

    // When the manual run's process is gone, the claim finds its row dead, marks it
    // interrupted and goes ahead.
    cli.close().await;
    let claims = daemon
        .claim_runs_exclusive(&[new_run("job-a", 7_000, Trigger::Schedule)], &[true])
        .await
        .unwrap();
    assert!(matches!(claims[0], Claim::Claimed(_)), "{claims:?}");
    let row = daemon.run(manual).await.unwrap().unwrap();
    assert_eq!(row.status, RunStatus::Interrupted);
}

pub async fn mark_started_moves_only_running_rows(f: &dyn StoreFactory) {
    let db = f.create().await;
    let store = db.open().await;
    let a = claim_one(&store, new_run("job-a", 1_000, Trigger::Schedule)).await;
    let b = claim_one(&store, new_run("job-b", 1_000, Trigger::Schedule)).await;
    store
        .finish_run(b, &finish(RunStatus::Succeeded, 1_500))
        .await
        .unwrap();
    let check = store
        .mark_started(&[(a, Some(at(6_000))), (b, Some(at(6_000)))])
        .await;
    assert!(check.unconfirmed.is_empty(), "{check:?}");
    assert_eq!(store.run(a).await.unwrap().unwrap().started_at, at(6_000));
    assert_eq!(store.run(b).await.unwrap().unwrap().started_at, at(1_003));
    store
        .finish_run(a, &finish(RunStatus::Succeeded, 6_250))
        .await
        .unwrap();
    assert_eq!(store.run(a).await.unwrap().unwrap().duration_ms, Some(250));
}

pub async fn history_is_newest_first_and_limited(f: &dyn StoreFactory) {
    let db = f.create().await;
    let store = db.open().await;
    let mut claims = Vec::new();
    for (scheduled, started) in [(1_000, 1_000), (3_000, 3_000), (2_000, 2_000)] {
        claims.push(NewRun {
            started_at: at(started),
            ..new_run("job-a", scheduled, Trigger::Schedule)
        });
    }
    // Two manual runs starting at the same instant: the later id comes first.
    for _ in 0..2 {
        claims.push(NewRun {
            started_at: at(3_000),
            ..new_run("job-a", 3_000, Trigger::Manual)
        });
    }
    claims.push(new_run("job-b", 9_000, Trigger::Schedule));
    let ids: Vec<i64> = store
        .claim_runs(&claims)
        .await
        .expect("claim")
        .into_iter()
        .map(|id| id.expect("claimed"))
        .collect();

    let history = store.history("job-a", 10).await.expect("history");
    let order: Vec<i64> = history.iter().map(|r| r.id).collect();
    assert_eq!(order, [ids[4], ids[3], ids[1], ids[2], ids[0]]);
    let limited = store.history("job-a", 2).await.expect("history");
    assert_eq!(limited.len(), 2);
    assert_eq!(limited[0].id, ids[4]);
    assert!(store.history("job-a", 0).await.expect("history").is_empty());
    assert!(
        store
            .history("nobody", 10)
            .await
            .expect("history")
            .is_empty()
    );
}

pub async fn last_runs_gives_each_jobs_newest_run(f: &dyn StoreFactory) {
    let db = f.create().await;
    let store = db.open().await;
    assert!(store.last_runs().await.expect("last runs").is_empty());
    let ids = store
        .claim_runs(&[
            new_run("job-b", 1_000, Trigger::Schedule),
            new_run("job-b", 5_000, Trigger::Schedule),
            new_run("job-a", 7_000, Trigger::Schedule),
            new_run("job-b", 3_000, Trigger::Schedule),
            new_run("job-a", 2_000, Trigger::Manual),
        ])
        .await
        .expect("claim");
    let last = store.last_runs().await.expect("last runs");
    let got: Vec<(&str, Option<i64>)> = last
        .iter()
        .map(|r| (r.job_id.as_str(), Some(r.id)))
        .collect();
    assert_eq!(got, [("job-a", ids[2]), ("job-b", ids[1])]);
}

pub async fn recent_runs_gives_each_jobs_newest_runs_in_one_read(f: &dyn StoreFactory) {
    let db = f.create().await;
    let store = db.open().await;
    let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<String>>();
    assert!(
        store
            .recent_runs(&ids(&["job-a"]), 30)
            .await
            .expect("recent runs")
            .is_empty()
    );
    // job-b: 5 runs, claimed out of order; job-a: 2 runs, one of them manual and finished;
    // job-c: 1 run, not asked for.
    let mut claims = Vec::new();
    for t in [3_000, 1_000, 5_000, 2_000, 4_000] {
        claims.push(new_run("job-b", t, Trigger::Schedule));
    }
    claims.push(new_run("job-a", 7_000, Trigger::Schedule));
    claims.push(new_run("job-a", 8_000, Trigger::Manual));
    claims.push(new_run("job-c", 9_000, Trigger::Schedule));
    let got: Vec<i64> = store
        .claim_runs(&claims)
        .await
        .expect("claim")
        .into_iter()
        .map(|id| id.expect("claimed"))
        .collect();
    assert!(
        store
            .finish_run(got[6], &finish(RunStatus::Failed, 8_500))
            .await
            .expect("finish")
    );

    // Ids in any order, repeated, or without runs: each job once, newest first, at most 3.
    let marks = store
        .recent_runs(&ids(&["job-b", "nobody", "job-a", "job-b"]), 3)
        .await
        .expect("recent runs");
    let order: Vec<(&str, i64)> = marks.iter().map(|m| (m.job_id.as_str(), m.id)).collect();
    assert_eq!(
        order,
        [
            ("job-a", got[6]),
            ("job-a", got[5]),
            ("job-b", got[2]),
            ("job-b", got[4]),
            ("job-b", got[0]),
        ]
    );
    // The marks say what `history` says of the same runs.
    let history = store.history("job-a", 10).await.expect("history");
    for (m, r) in marks.iter().zip(&history) {
        assert_eq!(
            (
                m.id,
                m.status,
                m.trigger,
                m.scheduled_at,
                m.started_at,
                m.duration_ms
            ),
            (
                r.id,
                r.status,
                r.trigger,
                r.scheduled_at,
                r.started_at,
                r.duration_ms
            )
        );
    }
    assert_eq!(marks[0].status, RunStatus::Failed);
    assert_eq!(marks[0].duration_ms, Some(8_500 - 8_003));
    assert_eq!(marks[1].status, RunStatus::Running);
    assert!(
        store
            .recent_runs(&ids(&["job-b"]), 0)
            .await
            .expect("recent runs")
            .is_empty()
    );
    assert!(
        store
            .recent_runs(&[], 30)
            .await
            .expect("recent runs")
            .is_empty()
    );
}

pub async fn prune_keeps_the_newest_the_recent_and_the_running(f: &dyn StoreFactory) {
    let db = f.create().await;
    let store = db.open().await;
    let day = TimeDelta::days(1).num_milliseconds();
    let now = 1_000 * day;
    let older_than = at(now - 30 * day);
    // (job, started days ago, finished?)
    let rows = [
        ("job-a", 60, true),  // beyond the newest 2 and old: deleted
        ("job-a", 50, false), // old and beyond the newest 2, but running: kept
        ("job-a", 40, true),  // deleted
        ("job-a", 10, true),  // beyond the newest 2, but recent: kept
        ("job-a", 5, true),   // newest 2: kept
        ("job-a", 1, true),   // newest 2: kept
        ("job-b", 90, true),  // deleted
        ("job-b", 80, true),  // old, but among the newest 2: kept
        ("job-b", 70, true),  // kept
    ];
    let mut ids = Vec::new();
    for (job, days_ago, finished) in rows {
        let start = now - days_ago * day;
        let id = claim_one(&store, new_run(job, start, Trigger::Schedule)).await;
        if finished {
            assert!(
                store
                    .finish_run(id, &finish(RunStatus::Succeeded, start + 10))
                    .await
                    .expect("finish")
            );
        }
        ids.push(id);
    }
    // A seen entry naming a pruned run loses the reference, not the entry.
    store
        .seen_mark(
            "job-a",
            "alerts",
            "a-1",
            SeenState::Done,
            Some(ids[0]),
            at(now),
        )
        .await
        .expect("mark");

    assert_eq!(store.prune(2, older_than).await.expect("prune"), 3);
    let mut left: Vec<i64> = store
        .history("job-a", 100)
        .await
        .expect("history")
        .into_iter()
        .chain(store.history("job-b", 100).await.expect("history"))
        .map(|r| r.id)
        .collect();
    left.sort();
    assert_eq!(left, [ids[1], ids[3], ids[4], ids[5], ids[7], ids[8]]);
    let entry = store
        .seen_get("job-a", "alerts", "a-1")
        .await
        .expect("seen")
        .expect("kept");
    assert_eq!(entry.run_id, None);

    // Nothing more to do; keeping 0 runs still spares the recent and the running.
    assert_eq!(store.prune(2, older_than).await.expect("prune"), 0);
    assert_eq!(store.prune(0, older_than).await.expect("prune"), 2);
    let left: Vec<i64> = store
        .history("job-a", 100)
        .await
        .expect("history")
        .iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(left, [ids[5], ids[4], ids[3], ids[1]]);
}

pub async fn timestamps_round_trip(f: &dyn StoreFactory) {
    let db = f.create().await;
    let store = db.open().await;
    assert_eq!(
        store
            .get_timestamp("job-a", "timestamp")
            .await
            .expect("get"),
        None
    );
    store
        .set_timestamp("job-a", "timestamp", 1_700_000_000_000)
        .await
        .expect("set");
    store
        .set_timestamp("job-a", "timestamp", 1_700_000_000_500)
        .await
        .expect("set");
    store
        .set_timestamp("job-a", "alerts", 5)
        .await
        .expect("set");
    store
        .set_timestamp("job-b", "timestamp", -1)
        .await
        .expect("set");
    assert_eq!(
        store
            .get_timestamp("job-a", "timestamp")
            .await
            .expect("get"),
        Some(1_700_000_000_500)
    );
    assert_eq!(
        store.get_timestamp("job-a", "other").await.expect("get"),
        None
    );
    let all = store.all_timestamps().await.expect("all");
    let expected = [
        ("job-a", "alerts", 5),
        ("job-a", "timestamp", 1_700_000_000_500),
        ("job-b", "timestamp", -1),
    ]
    .map(|(j, k, v)| (j.to_owned(), k.to_owned(), v));
    assert_eq!(all, expected);
}

pub async fn context_round_trips_json(f: &dyn StoreFactory) {
    let db = f.create().await;
    let store = db.open().await;
    let cursor = json!({"page": "abc", "ids": [1, 2, 3], "nested": {"ok": true}});
    store
        .context_set("job-a", "cursor", &cursor)
        .await
        .expect("set");
    store
        .context_set("job-a", "count", &json!(1))
        .await
        .expect("set");
    store
        .context_set("job-a", "count", &json!(2))
        .await
        .expect("set");
    store
        .context_set("job-a", "name", &json!("x"))
        .await
        .expect("set");
    store
        .context_set("job-b", "count", &json!(99))
        .await
        .expect("set");

    assert_eq!(
        store.context_get("job-a", "cursor").await.expect("get"),
        Some(cursor.clone())
    );
    assert_eq!(
        store.context_get("job-a", "count").await.expect("get"),
        Some(json!(2))
    );
    assert_eq!(
        store.context_get("job-a", "missing").await.expect("get"),
        None
    );
    let all = store.context_all("job-a").await.expect("all");
    assert_eq!(
        serde_json::Value::Object(all),
        json!({"count": 2, "cursor": cursor, "name": "x"})
    );

    assert!(store.context_delete("job-a", "name").await.expect("delete"));
    assert!(!store.context_delete("job-a", "name").await.expect("delete"));
    assert_eq!(store.context_get("job-a", "name").await.expect("get"), None);
    assert!(store.context_all("job-c").await.expect("all").is_empty());
}

pub async fn seen_set_round_trips(f: &dyn StoreFactory) {
    let db = f.create().await;
    let store = db.open().await;
    let run = claim_one(&store, new_run("job-a", 0, Trigger::Schedule)).await;
    let mark = |item: &'static str, state, ms| {
        let store = store.clone();
        async move {
            store
                .seen_mark("job-a", "alerts", item, state, Some(run), at(ms))
                .await
                .expect("mark");
        }
    };
    mark("a-2", SeenState::Attempting, 2_000).await;
    mark("a-1", SeenState::Attempting, 1_000).await;
    mark("a-3", SeenState::Attempting, 3_000).await;
    mark("a-2", SeenState::Done, 4_000).await;
    store
        .seen_mark("job-a", "cases", "a-1", SeenState::Done, None, at(5_000))
        .await
        .expect("mark");

    let entry = store
        .seen_get("job-a", "alerts", "a-2")
        .await
        .expect("get")
        .expect("present");
    assert_eq!(
        entry,
        SeenEntry {
            item: "a-2".into(),
            state: SeenState::Done,
            run_id: Some(run),
            updated_at: at(4_000)
        }
    );
    assert_eq!(
        store.seen_get("job-a", "alerts", "zzz").await.expect("get"),
        None
    );
    assert_eq!(
        store.seen_get("job-b", "alerts", "a-2").await.expect("get"),
        None
    );

    let attempting = store
        .seen_list("job-a", "alerts", SeenState::Attempting)
        .await
        .expect("list");
    let items: Vec<&str> = attempting.iter().map(|e| e.item.as_str()).collect();
    assert_eq!(items, ["a-1", "a-3"], "oldest first");
    let cases = store
        .seen_list("job-a", "cases", SeenState::Done)
        .await
        .expect("list");
    assert_eq!(cases.len(), 1);
    assert_eq!(cases[0].run_id, None);

    assert!(
        store
            .seen_remove("job-a", "alerts", "a-1")
            .await
            .expect("remove")
    );
    assert!(
        !store
            .seen_remove("job-a", "alerts", "a-1")
            .await
            .expect("remove")
    );
    assert_eq!(
        store.seen_get("job-a", "alerts", "a-1").await.expect("get"),
        None
    );
    // The other scope's entry with the same item is untouched.
    assert!(
        store
            .seen_get("job-a", "cases", "a-1")
            .await
            .expect("get")
            .is_some()
    );
}

pub async fn unclaim_releases_only_unstarted_claims(f: &dyn StoreFactory) {
    let db = f.create().await;
    let store = db.open().await;
    let ids = store
        .claim_runs(&[
            new_run("a", 1_000, Trigger::Schedule),
            new_run("a", 2_000, Trigger::Schedule),
            // The same tick twice in one slice is one claim.
            new_run("a", 2_000, Trigger::Schedule),
        ])
        .await
        .unwrap();
    assert!(ids[0].is_some() && ids[1].is_some());
    assert_eq!(ids[2], None);
    let (first, second) = (ids[0].unwrap(), ids[1].unwrap());
    store
        .finish_run(first, &finish(RunStatus::Succeeded, 1_500))
        .await
        .unwrap();
    assert!(!store.unclaim(first).await.unwrap(), "a finished run stays");
    assert!(store.unclaim(second).await.unwrap());
    assert!(store.run(second).await.unwrap().is_none());
    // The tick can be claimed again.
    let again = store
        .claim_runs(&[new_run("a", 2_000, Trigger::Schedule)])
        .await
        .unwrap();
    assert!(again[0].is_some());
}

pub async fn run_processes_are_recorded_updated_listed_and_forgotten(f: &dyn StoreFactory) {
    let db = f.create().await;
    let store = db.open().await;
    let run_id = claim_one(&store, new_run("a", 1_000, Trigger::Manual)).await;
    let mut p = RunProcess {
        run_id,
        host: "h1".into(),
        boot_id: "b1".into(),
        owner_pid: 42,
        owner_start_ticks: u64::from(u32::MAX) + 7,
        pgid: None,
        leader_start_ticks: None,
        token: "tok".into(),
        cgroup: Some("/sys/fs/cgroup/x".into()),
        recorded_at: at(5_000),
    };
    store.record_run_process(&p).await.unwrap();
    assert_eq!(store.run_processes().await.unwrap(), [p.clone()]);
    // The second write (after the spawn) fills in the group.
    p.pgid = Some(4242);
    p.leader_start_ticks = Some(99);
    store.record_run_process(&p).await.unwrap();
    assert_eq!(store.run_processes().await.unwrap(), [p.clone()]);
    assert!(store.forget_run_process(run_id).await.unwrap());
    assert!(!store.forget_run_process(run_id).await.unwrap());
    assert!(store.run_processes().await.unwrap().is_empty());
    // Only existing runs can have processes.
    p.run_id = run_id + 100;
    assert!(store.record_run_process(&p).await.is_err());
}

// --- The operator's part (`OpsStore`): pauses, run logs, alert episodes. ---

/// A pause is kept once (a second pause keeps the first), ended once, remembered after it ended,
/// and its catch-up request is taken by exactly one taker.
pub async fn pauses_are_kept_resumed_and_catch_ups_taken_once(f: &dyn StoreFactory) {
    let db = f.create().await;
    let s = db.open().await;
    let other = db.open().await;
    let p = s
        .pause_job("a", Some("maint"), "cli:x", at(1_000))
        .await
        .expect("pause");
    assert!(
        matches!(&p, PauseOutcome::Paused(j) if j.since == at(1_000)
            && j.reason.as_deref() == Some("maint") && j.actor == "cli:x"),
        "{p:?}"
    );
    let again = other
        .pause_job("a", None, "y", at(2_000))
        .await
        .expect("pause again");
    assert!(
        matches!(&again, PauseOutcome::AlreadyPaused(j) if j.since == at(1_000) && j.actor == "cli:x"),
        "{again:?}"
    );
    s.pause_job("b", None, "y", at(1_500))
        .await
        .expect("pause b");
    let ids: Vec<String> = other
        .pauses()
        .await
        .expect("pauses")
        .into_iter()
        .map(|p| p.job_id)
        .collect();
    assert_eq!(ids, ["a", "b"]);
    assert!(
        s.resume_job("nope", false, "x", at(3_000))
            .await
            .expect("resume unknown")
            .is_none()
    );
    let ended = s
        .resume_job("a", true, "cli:z", at(3_000))
        .await
        .expect("resume")
        .expect("was paused");
    assert_eq!(ended.pause.since, at(1_000));
    assert_eq!(ended.resumed_at, at(3_000));
    assert_eq!(ended.resumed_by, "cli:z");
    assert!(ended.catch_up);
    assert!(
        s.resume_job("a", false, "x", at(3_500))
            .await
            .expect("resume twice")
            .is_none()
    );
    assert_eq!(
        other
            .last_resume("a")
            .await
            .expect("last resume")
            .map(|e| e.resumed_at),
        Some(at(3_000))
    );
    assert!(other.last_resume("b").await.expect("b").is_none());
    let taken = other.take_catch_ups().await.expect("take");
    assert_eq!(taken.len(), 1);
    assert_eq!(taken[0].pause.job_id, "a");
    assert!(taken[0].catch_up);
    assert!(s.take_catch_ups().await.expect("take again").is_empty());
    let ids: Vec<String> = s
        .pauses()
        .await
        .expect("pauses")
        .into_iter()
        .map(|p| p.job_id)
        .collect();
    assert_eq!(ids, ["b"]);
    // Paused again after a resume: a new pause, from its own start.
    let p = s
        .pause_job("a", None, "x", at(4_000))
        .await
        .expect("repause");
    assert!(
        matches!(&p, PauseOutcome::Paused(j) if j.since == at(4_000)),
        "{p:?}"
    );
    s.close().await;
    other.close().await;
}

/// Run log lines are stored once per `(run, seq)`, read in order from a seq on, dropped for
/// runs that do not exist, and deleted with their run when it is pruned.
/// `prune_step`: whichever bound is reached first deletes a run (the newest N of a job *or*
/// the last days), failed runs are counted and aged apart, running rows stay, no step deletes
/// more than its limit, and old run-log lines go while their run stays.
pub async fn prune_steps_bound_runs_by_count_or_age_and_keep_failures_apart(f: &dyn StoreFactory) {
    let db = f.create().await;
    let store = db.open().await;
    let hour = TimeDelta::hours(1).num_milliseconds();
    let day = 24 * hour;
    let now = 1_000 * day;
    // (job, started hours ago, status; Running: left running)
    let mut rows: Vec<(&str, i64, RunStatus)> = vec![("job-a", 12, RunStatus::Running)];
    for d in 1..=12 {
        rows.push(("job-a", d * 24, RunStatus::Succeeded));
    }
    for h in [60, 156, 228] {
        rows.push(("job-a", h, RunStatus::Failed));
    }
    // job-b's newest run is kept whatever its age: it is the job's last tick (misfire
    // catch-up at start reads it).
    rows.push(("job-b", 39 * 24, RunStatus::Succeeded));
    rows.push(("job-b", 40 * 24, RunStatus::Succeeded)); // older than 30 days: deleted
    rows.push(("job-b", 40 * 24 + 1, RunStatus::TimedOut)); // failed, younger than 90 days
    rows.push(("job-b", 100 * 24, RunStatus::Interrupted)); // failed, older than 90 days
    let mut ids = std::collections::HashMap::new();
    for (job, hours_ago, status) in &rows {
        let start = now - hours_ago * hour;
        let id = claim_one(&store, new_run(job, start, Trigger::Schedule)).await;
        if *status != RunStatus::Running {
            assert!(
                store
                    .finish_run(id, &finish(*status, start + 10))
                    .await
                    .expect("finish")
            );
        }
        ids.insert((*job, *hours_ago), id);
    }
    let running = ids[&("job-a", 12)];
    let line = |run_id: i64, seq: i64, at_ms: i64| RunLogLine {
        run_id,
        seq,
        at: at(at_ms),
        level: "INFO".into(),
        target: "t".into(),
        message: format!("line {seq}"),
        fields: json!({}),
    };
    store
        .append_run_logs(&[
            line(running, 1, now - 10 * day),
            line(running, 2, now - 8 * day),
            line(running, 3, now - day),
        ])
        .await
        .expect("append");
    let retention = Retention {
        keep_runs: 5,
        older_than: at(now - 30 * day),
        keep_failed_runs: 2,
        failed_older_than: at(now - 90 * day),
        logs_older_than: at(now - 7 * day),
    };
    let mut total = Pruned::default();
    let mut steps = 0;
    loop {
        let p = store.prune_step(&retention, 4).await.expect("prune step");
        assert!(p.runs <= 4 && p.log_rows <= 4, "{p:?}");
        total.runs += p.runs;
        total.log_rows += p.log_rows;
        steps += 1;
        if p.runs == 0 && p.log_rows == 0 {
            break;
        }
        assert!(steps < 20, "pruning does not end");
    }
    // job-a: the newest five rows (running, 1 d, 2 d, the failure at 60 h, 3 d) are kept;
    // older successes go (9), and of the failures the newest two stay. job-b: the old
    // success and the failure older than 90 days go; its newest run, older than 30 days
    // too, stays.
    assert_eq!(total.runs, 9 + 1 + 2, "{total:?}");
    assert_eq!(total.log_rows, 2, "{total:?}");
    let mut left: Vec<i64> = store
        .history("job-a", 100)
        .await
        .expect("history")
        .into_iter()
        .chain(store.history("job-b", 100).await.expect("history"))
        .map(|r| r.id)
        .collect();
    left.sort();
    let mut want: Vec<i64> = [
        ("job-a", 12),
        ("job-a", 24),
        ("job-a", 48),
        ("job-a", 72),
        ("job-a", 60),
        ("job-a", 156),
        ("job-b", 39 * 24),
        ("job-b", 40 * 24 + 1),
    ]
    .iter()
    .map(|k| ids[k])
    .collect();
    want.sort();
    assert_eq!(left, want);
    let lines = store.run_logs(running, 0, 10).await.expect("lines");
    assert_eq!(lines.iter().map(|l| l.seq).collect::<Vec<_>>(), [3]);
    // Steady: nothing more to delete.
    assert_eq!(
        store.prune_step(&retention, 4).await.expect("prune step"),
        Pruned::default()
    );
    store.close().await;
}

pub async fn run_logs_are_kept_in_order_and_pruned_with_their_run(f: &dyn StoreFactory) {
    let db = f.create().await;
    let s = db.open().await;
    let run = claim_one(&s, new_run("j", 1_000, Trigger::Schedule)).await;
    let line = |run_id: i64, seq: i64, msg: &str| RunLogLine {
        run_id,
        seq,
        at: at(1_000 + seq),
        level: "INFO".into(),
        target: "soarjobd_jobs::exec".into(),
        message: msg.into(),
        fields: json!({"seq": seq, "line": msg}),
    };
    s.append_run_logs(&[line(run, 2, "b"), line(run, 1, "a")])
        .await
        .expect("append");
    s.append_run_logs(&[
        line(run, 2, "duplicate"),
        line(run, 3, "c"),
        line(run + 1_000, 1, "no such run"),
    ])
    .await
    .expect("append again");
    // A batch larger than any one statement needs.
    let many: Vec<RunLogLine> = (4..=503).map(|i| line(run, i, &format!("l{i}"))).collect();
    s.append_run_logs(&many).await.expect("append many");
    let got = s.run_logs(run, 0, 3).await.expect("read");
    assert_eq!(
        got,
        [line(run, 1, "a"), line(run, 2, "b"), line(run, 3, "c")]
    );
    let rest = s.run_logs(run, 3, 1_000).await.expect("read on");
    assert_eq!(rest.len(), 500);
    assert_eq!(rest.last().map(|l| l.seq), Some(503));
    assert!(
        s.run_logs(run + 1_000, 0, 10)
            .await
            .expect("orphans")
            .is_empty()
    );
    assert!(
        s.finish_run(run, &finish(RunStatus::Succeeded, 2_000))
            .await
            .expect("finish")
    );
    assert_eq!(s.prune(0, at(10_000)).await.expect("prune"), 1);
    assert!(s.run_logs(run, 0, 10).await.expect("pruned").is_empty());
    s.close().await;
}

/// At most one open episode per rule and subject, across handles; resolving ends it once; a
/// later episode is a new one.
pub async fn alert_episodes_open_once_and_resolve_once(f: &dyn StoreFactory) {
    let db = f.create().await;
    let s = db.open().await;
    let other = db.open().await;
    let ep = s
        .open_alert(AlertRule::FailedRunsInARow, "j", "3 failed", at(1_000))
        .await
        .expect("open")
        .expect("new");
    assert_eq!(ep.rule, AlertRule::FailedRunsInARow);
    assert_eq!((ep.subject.as_str(), ep.detail.as_str()), ("j", "3 failed"));
    assert_eq!((ep.opened_at, ep.resolved_at), (at(1_000), None));
    assert!(
        other
            .open_alert(AlertRule::FailedRunsInARow, "j", "again", at(2_000))
            .await
            .expect("open again")
            .is_none()
    );
    other
        .open_alert(AlertRule::NoSuccessFor, "j", "quiet", at(2_000))
        .await
        .expect("other rule")
        .expect("new");
    assert_eq!(s.open_alerts().await.expect("open").len(), 2);
    let r = other
        .resolve_alert(AlertRule::FailedRunsInARow, "j", at(3_000))
        .await
        .expect("resolve")
        .expect("was open");
    assert_eq!((r.id, r.resolved_at), (ep.id, Some(at(3_000))));
    assert!(
        s.resolve_alert(AlertRule::FailedRunsInARow, "j", at(3_500))
            .await
            .expect("resolve twice")
            .is_none()
    );
    let next = s
        .open_alert(AlertRule::FailedRunsInARow, "j", "4 failed", at(4_000))
        .await
        .expect("reopen")
        .expect("new");
    assert!(next.id > ep.id);
    let rules: Vec<AlertRule> = s
        .open_alerts()
        .await
        .expect("open")
        .iter()
        .map(|e| e.rule)
        .collect();
    assert_eq!(
        rules,
        [AlertRule::NoSuccessFor, AlertRule::FailedRunsInARow]
    );
    s.close().await;
    other.close().await;
}

/// A subject's episodes, open and resolved, newest first and limited; other subjects' are not
/// listed.
pub async fn alert_history_lists_a_subjects_episodes_newest_first(f: &dyn StoreFactory) {
    let db = f.create().await;
    let s = db.open().await;
    assert!(s.alert_history("j", 10).await.expect("history").is_empty());
    let first = s
        .open_alert(AlertRule::FailedRunsInARow, "j", "3 failed", at(1_000))
        .await
        .expect("open")
        .expect("new");
    s.resolve_alert(AlertRule::FailedRunsInARow, "j", at(2_000))
        .await
        .expect("resolve")
        .expect("was open");
    let quiet = s
        .open_alert(AlertRule::NoSuccessFor, "j", "quiet", at(3_000))
        .await
        .expect("open")
        .expect("new");
    let again = s
        .open_alert(AlertRule::FailedRunsInARow, "j", "5 failed", at(4_000))
        .await
        .expect("open")
        .expect("new");
    s.open_alert(AlertRule::FailedRunsInARow, "other", "x", at(5_000))
        .await
        .expect("open")
        .expect("new");
    let history = s.alert_history("j", 10).await.expect("history");
    let got: Vec<(i64, Option<DateTime<Utc>>)> =
        history.iter().map(|e| (e.id, e.resolved_at)).collect();
    assert_eq!(
        got,
        [
            (again.id, None),
            (quiet.id, None),
            (first.id, Some(at(2_000)))
        ]
    );
    assert_eq!(history[2].detail, "3 failed");
    let limited = s.alert_history("j", 2).await.expect("history");
    assert_eq!(limited.len(), 2);
    assert_eq!(limited[0].id, again.id);
    s.close().await;
}

/// The newest `succeeded` finish of each job; jobs without one are absent.
pub async fn last_successes_gives_each_jobs_newest_success(f: &dyn StoreFactory) {
    let db = f.create().await;
    let s = db.open().await;
    for (job, start, status) in [
        ("j1", 1_000, RunStatus::Succeeded),
        ("j1", 2_000, RunStatus::Failed),
        ("j2", 1_000, RunStatus::Failed),
        ("j3", 3_000, RunStatus::Succeeded),
        ("j3", 4_000, RunStatus::Succeeded),
        ("j4", 1_000, RunStatus::Partial),
    ] {
        let id = claim_one(&s, new_run(job, start, Trigger::Schedule)).await;
        assert!(
            s.finish_run(id, &finish(status, start + 500))
                .await
                .expect("finish")
        );
    }
    assert_eq!(
        s.last_successes().await.expect("successes"),
        [("j1".to_string(), at(1_500)), ("j3".to_string(), at(4_500))]
    );
    s.close().await;
}
