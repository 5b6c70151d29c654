//! Several replicas of the real binary on one PostgreSQL database (each test in a database
//! of its own, dropped at the end): every tick runs once while replicas are SIGKILLed and
//! restarted, a frozen (SIGSTOPped) replica's late writes are refused by fencing, and
//! `comment-on-tagged-cases` on two replicas comments each case once.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::File;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use soarjobd_core::store::ops::RunLogLine;
use soarjobd_store::testdb::TestDb;
use sqlx::Row;
use sqlx::postgres::PgPool;

use crate::support::*;

/// Short cluster timings, so takeovers happen within the tests' time.
const HEARTBEAT: &str = "500ms";
const DEAD_AFTER: &str = "1500ms";

/// A replica process, SIGKILLed on drop if still running: a failing assertion must not leave
/// replicas behind (they would outlive the test's database and folder).
struct Replica(Child);

impl std::ops::Deref for Replica {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Replica {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// A replica: `soarjobd run` on `db`, its log in `<dir>/<name>.log`.
fn replica(dir: &Path, db: &TestDb, name: &str, env: &[(&str, &str)]) -> Replica {
    let out = File::create(dir.join(format!("{name}.log"))).unwrap();
    let err = out.try_clone().unwrap();
    let mut c = soarjobd_in(dir, &["run"]);
    c.env_remove("SOARJOBD_CONFIG")
        .env("SOARJOBD__DATABASE_URL", db.url())
        .env("SOARJOBD__CLUSTER__HEARTBEAT", HEARTBEAT)
        .env("SOARJOBD__CLUSTER__DEAD_AFTER", DEAD_AFTER)
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err));
    for (k, v) in env {
        c.env(k, v);
    }
    Replica(c.spawn().expect("spawn a replica"))
}

fn signal(child: &Child, sig: i32) {
    // SAFETY: a signal to a child this test spawned (and has not reaped).
    unsafe {
        libc::kill(child.id() as i32, sig);
    }
}

/// SIGTERM, then the exit code (None: it did not stop within `limit`, and was killed).
async fn stop(child: &mut Child, limit: Duration) -> Option<i32> {
    signal(child, libc::SIGTERM);
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if let Some(s) = child.try_wait().unwrap() {
            return s.code();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

fn kill(child: &mut Child) {
    signal(child, libc::SIGKILL);
    let _ = child.wait();
}

async fn pool(db: &TestDb) -> PgPool {
    PgPool::connect(db.url()).await.expect("connect")
}

async fn scalar(pool: &PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.expect(sql)
}

/// Polls `f` until it gives a value or `limit` passes.
async fn poll<T, F, Fut>(limit: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if tokio::time::Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn log(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(format!("{name}.log"))).unwrap_or_default()
}

/// 3 replicas, 50 jobs `every: 1s`, 60 s; one replica SIGKILLed every 15 s and restarted.
/// Every tick runs exactly once (counted from what the jobs themselves ran, not from the
/// rows), the only ticks missed are those of the killed replica's jobs until it is declared
/// dead (the jobs are spread over the replicas; `misfire: skip` here, so they are not caught
/// up), a restarted replica takes its share without a gap, nothing stays `running`, and
/// every run of a killed replica that did not finish is `interrupted` with the takeover
/// reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_run_each_tick_once_while_one_is_killed_every_15s() {
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let ran = dir.path().join("ran");
    std::fs::create_dir_all(dir.path().join("jobs")).unwrap();
    for n in 0..50 {
        std::fs::write(
            dir.path().join(format!("jobs/j{n:02}.yaml")),
            format!(
                "name: j{n:02}\njob: exec\nschedule: {{every: 1s}}\nmisfire: skip\n\
                 command: [/bin/sh, -c, 'echo $SOARJOBD_RUN_ID >> {}']\n",
                ran.display()
            ),
        )
        .unwrap();
    }
    let mut replicas: Vec<Replica> = (0..3)
        .map(|i| replica(dir.path(), &db, &format!("r{i}-0"), &[]))
        .collect();
    let started = chrono::Utc::now();
    let mut killed_pids = Vec::new();
    let mut kills = Vec::new();
    for round in 1..=3 {
        tokio::time::sleep(Duration::from_secs(15)).await;
        let i = (round - 1) % 3;
        killed_pids.push(i64::from(replicas[i].id()));
        kills.push((
            i64::from(replicas[i].id()),
            chrono::Utc::now().timestamp_millis(),
        ));
        kill(&mut replicas[i]);
        tokio::time::sleep(Duration::from_millis(500)).await;
        replicas[i] = replica(dir.path(), &db, &format!("r{i}-{round}"), &[]);
    }
    tokio::time::sleep(Duration::from_secs(15)).await;
    // The last victim's runs are taken over by the survivors once it is declared dead; on a
    // loaded machine that can come later than 15 s after the kill. Wait for it (not a timing
    // assertion: the takeover must come, whenever the heartbeats let it), so the graceful
    // stops below do not end the survivors before they could take over.
    let watch = pool(&db).await;
    let victims = killed_pids.clone();
    let taken_over = poll(Duration::from_secs(120), || {
        let (watch, victims) = (watch.clone(), victims.clone());
        async move {
            let left: i64 = sqlx::query_scalar(
                "SELECT COUNT(*) FROM job_runs WHERE status = 'running' AND owner_pid = ANY($1)",
            )
            .bind(&victims)
            .fetch_one(&watch)
            .await
            .ok()?;
            (left == 0).then_some(())
        }
    })
    .await;
    assert!(
        taken_over.is_some(),
        "the killed replicas' runs were never taken over"
    );
    watch.close().await;
    let ended = chrono::Utc::now();
    for r in &mut replicas {
        assert_eq!(
            stop(r, Duration::from_secs(30)).await,
            Some(0),
            "a graceful stop"
        );
    }

    let pool = pool(&db).await;
    // What stayed `running`, with its owner and times, for the failure message.
    type Stuck = (i64, String, i64, String, i64, Option<i64>, Option<i64>);
    let stuck: Vec<Stuck> = sqlx::query_as(
        "SELECT id, job_id, scheduled_at, \"trigger\", started_at, owner_pid, owner_node \
         FROM job_runs WHERE status = 'running' ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(
        stuck.is_empty(),
        "no run is left running: {} left (id, job, tick, trigger, started, pid, node): {stuck:?}; \
         kills (pid, ms): {kills:?}; stopped at {}",
        stuck.len(),
        ended.timestamp_millis()
    );
    let left: Vec<(i64, String, i64, i64, i64)> =
        sqlx::query_as("SELECT id, role, pid, started_at, heartbeat_at FROM nodes")
            .fetch_all(&pool)
            .await
            .unwrap();
    eprintln!(
        "nodes left: {left:?}, kills: {kills:?}, stopped at {}",
        ended.timestamp_millis()
    );
    assert_eq!(
        scalar(&pool, "SELECT COUNT(*) FROM nodes").await,
        0,
        "every replica removed its node at its graceful stop (killed ones were removed by \
         the others)"
    );
    // What actually ran, by the jobs' own account.
    let executed: Vec<i64> = std::fs::read_to_string(&ran)
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().expect("a run id"))
        .collect();
    let rows = sqlx::query(
        "SELECT id, job_id, scheduled_at, status, owner_pid, message FROM job_runs \
         WHERE \"trigger\" <> 'manual'",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    let mut tick_of: HashMap<i64, (String, i64)> = HashMap::new();
    let mut per_job: BTreeMap<String, BTreeSet<i64>> = BTreeMap::new();
    // (job, killed pid) pairs: the victim claimed ticks of the job in the 3 s before its kill.
    let mut victims_jobs: BTreeSet<(String, i64)> = BTreeSet::new();
    for r in &rows {
        let (id, job, at): (i64, String, i64) =
            (r.get("id"), r.get("job_id"), r.get("scheduled_at"));
        tick_of.insert(id, (job.clone(), at));
        per_job.entry(job.clone()).or_default().insert(at);
        let status: String = r.get("status");
        let pid: i64 = r.get("owner_pid");
        if kills
            .iter()
            .any(|(p, at_kill)| *p == pid && (at_kill - 3000..=*at_kill).contains(&at))
        {
            victims_jobs.insert((job, pid));
        }
        if killed_pids.contains(&pid) && !["succeeded", "skipped"].contains(&status.as_str()) {
            assert_eq!(status, "interrupted", "a killed replica's run: {id}");
            let msg: String = r.get("message");
            assert!(msg.contains("dead_after"), "the reason is recorded: {msg}");
        }
    }
    let mut runs_per_tick: HashMap<&(String, i64), usize> = HashMap::new();
    for id in &executed {
        let tick = tick_of.get(id).expect("every execution has its row");
        *runs_per_tick.entry(tick).or_default() += 1;
    }
    let by_status: BTreeMap<String, usize> = rows.iter().fold(BTreeMap::new(), |mut m, r| {
        *m.entry(r.get::<String, _>("status")).or_default() += 1;
        m
    });
    let reasons: BTreeMap<String, usize> = rows.iter().fold(BTreeMap::new(), |mut m, r| {
        if r.get::<String, _>("status") == "skipped" {
            let msg: String = r.get("message");
            let head: String = msg.chars().take(40).collect();
            *m.entry(head).or_default() += 1;
        }
        m
    });
    eprintln!("skipped: {reasons:?}");
    eprintln!(
        "{} rows {by_status:?}, {} executions",
        rows.len(),
        executed.len()
    );
    let doubled: Vec<_> = runs_per_tick.iter().filter(|(_, n)| **n > 1).collect();
    assert!(doubled.is_empty(), "ticks run more than once: {doubled:?}");
    // Every run recorded as succeeded ran once (an interrupted one may have run before its
    // replica was killed, or not).
    let succeeded: Vec<i64> = rows
        .iter()
        .filter(|r| r.get::<String, _>("status") == "succeeded")
        .map(|r| r.get("id"))
        .collect();
    let executed_set: BTreeSet<i64> = executed.iter().copied().collect();
    let lost: Vec<&i64> = succeeded
        .iter()
        .filter(|id| !executed_set.contains(id))
        .collect();
    assert!(lost.is_empty(), "succeeded but never ran: {lost:?}");
    // Two replicas were always up: every tick between the first and the last full second
    // was claimed by one of them, except the killed replica's jobs' until it was declared
    // dead (dead_after 1.5 s, plus a sweep and a claim-ahead; 3 s of margin for a loaded
    // machine).
    let first = (started.timestamp() + 3) * 1000;
    let last = (ended.timestamp() - 3) * 1000;
    let mut missed = Vec::new();
    for (job, ticks) in &per_job {
        for t in (first..=last).step_by(1000) {
            let victims = kills.iter().any(|(pid, at_kill)| {
                victims_jobs.contains(&(job.clone(), *pid))
                    && (at_kill - 1000..=at_kill + 4500).contains(&t)
            });
            if !ticks.contains(&t) && !victims {
                missed.push((job.clone(), t));
            }
        }
    }
    assert_eq!(per_job.len(), 50);
    let mut notes = String::new();
    if !missed.is_empty() {
        for entry in std::fs::read_dir(dir.path()).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if name.ends_with(".log") {
                for line in std::fs::read_to_string(entry.path())
                    .unwrap_or_default()
                    .lines()
                {
                    if [
                        "ticks missed",
                        "replicas changed",
                        "declared dead",
                        "scheduled here",
                    ]
                    .iter()
                    .any(|k| line.contains(k))
                    {
                        notes.push_str(&format!("{name}: {}\n", &line[..line.len().min(300)]));
                    }
                }
            }
        }
    }
    assert!(
        missed.is_empty(),
        "ticks nobody claimed: {missed:?}\n{notes}"
    );
    pool.close().await;
}

/// A replica frozen with SIGSTOP past `dead_after` while its run is going: another replica
/// marks the run interrupted and makes the catch-up run; when the frozen one is continued,
/// its run's end and its job's context write are refused by the fencing token and logged,
/// and the job's timestamp and context stay the new owner's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_replicas_late_finish_is_fenced() {
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("jobs")).unwrap();
    // A run lasts 3 s and then writes its run id into the context; exit 0 saves the job's
    // timestamp. Ticks are 20 s apart, so only the first tick and the catch-up run here.
    std::fs::write(
        dir.path().join("jobs/slow.yaml"),
        "name: slow\njob: exec\nschedule: {every: 20s}\nmisfire: run_once\noverlap: skip\n\
         command: [/bin/sh, -c, 'sleep 3; echo \"::context {\\\"owner\\\": $SOARJOBD_RUN_ID}\"']\n",
    )
    .unwrap();
    let mut replicas = [
        replica(dir.path(), &db, "a", &[]),
        replica(dir.path(), &db, "b", &[]),
    ];
    let pool = pool(&db).await;
    // (Until a replica has migrated the new database, the query fails: polled again.)
    // The first tick's run, once it has been going for half a second.
    let owner = poll(Duration::from_secs(30), || async {
        sqlx::query(
            "SELECT id, owner_pid, started_at FROM job_runs WHERE status = 'running' \
             AND started_at < (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT - 500",
        )
        .fetch_optional(&pool)
        .await
        .ok()
        .flatten()
        .map(|r| {
            (
                r.get::<i64, _>("id"),
                r.get::<i64, _>("owner_pid"),
                r.get::<i64, _>("started_at"),
            )
        })
    })
    .await;
    let (run, pid, run_start) = owner.expect("no run started");
    let frozen = usize::from(i64::from(replicas[0].id()) != pid);
    let frozen_log = ["a", "b"][frozen];
    signal(&replicas[frozen], libc::SIGSTOP);

    // Taken over, and the catch-up run on the other replica succeeds.
    let status = |id: i64| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, String>("SELECT status FROM job_runs WHERE id = $1")
                .bind(id)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    let taken = eventually(Duration::from_secs(20), || async {
        status(run).await == "interrupted"
    })
    .await;
    assert!(taken, "the frozen replica's run was not taken over");
    let catch_up = poll(Duration::from_secs(20), || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT id FROM job_runs WHERE \"trigger\" = 'catch_up' AND status = 'succeeded'",
        )
        .fetch_optional(&pool)
        .await
        .unwrap()
    })
    .await
    .expect("no catch-up run succeeded on the other replica");
    let stamp_before: i64 = scalar(
        &pool,
        "SELECT value_ms FROM job_timestamps WHERE job_id = 'slow'",
    )
    .await;
    assert!(stamp_before > run_start + 1000, "the new owner's timestamp");

    // The frozen replica comes back: its run ended long ago (the script finished).
    signal(&replicas[frozen], libc::SIGCONT);
    let dir_path = dir.path().to_path_buf();
    let fenced = eventually(Duration::from_secs(20), || async {
        log(&dir_path, frozen_log).contains("run end rejected by its fencing token")
    })
    .await;
    let frozen_text = log(dir.path(), frozen_log);
    assert!(
        fenced,
        "the late finish was not reported as fenced:\n{frozen_text}"
    );
    assert!(
        frozen_text.contains("declared dead"),
        "the frozen replica says it lost its lease:\n{frozen_text}"
    );
    assert_eq!(
        status(run).await,
        "interrupted",
        "the late finish was not applied"
    );
    let context: String = sqlx::query_scalar(
        "SELECT \"value\" FROM job_context WHERE job_id = 'slow' AND \"key\" = 'owner'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        context,
        catch_up.to_string(),
        "the context is the new owner's"
    );
    let stamp_after: i64 = scalar(
        &pool,
        "SELECT value_ms FROM job_timestamps WHERE job_id = 'slow'",
    )
    .await;
    assert_eq!(
        stamp_after, stamp_before,
        "the timestamp is the new owner's"
    );
    // The continued replica registered again and is a healthy member.
    let nodes = scalar(&pool, "SELECT COUNT(*) FROM nodes WHERE role = 'daemon'").await;
    assert_eq!(nodes, 2);
    for r in &mut replicas {
        assert_eq!(stop(r, Duration::from_secs(30)).await, Some(0));
    }
    pool.close().await;
}

/// `comment-on-tagged-cases` with `overlap: skip` on two replicas against the SOAR
/// simulator: every matching case gets exactly one comment, and no two runs of the job
/// overlapped in time, across replicas.
#[cfg(feature = "sim")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn comment_on_tagged_cases_on_two_replicas_comments_each_case_once() {
    use soarjobd_sim::soar as sim;
    use soarjobd_sim::soar::{CasePatch, SoarSimConfig};
    const KEY: &str = "it-cluster-key-5d1f";
    const COMMENT: &str = "Triaged by a soarjobd replica";
    let sim = sim::start(
        SoarSimConfig {
            app_key: KEY.into(),
            cases: 300,
            seed: 41,
            latency_ms: 5,
            ..SoarSimConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
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
    let to_comment: BTreeSet<u64> = sim
        .state()
        .cases()
        .iter()
        .filter(|c| !c.ticket_ids.is_empty())
        .map(|c| c.id)
        .collect();
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("jobs")).unwrap();
    std::fs::write(
        dir.path().join("jobs/tagged.yaml"),
        format!(
            "name: Tagged\njob: comment-on-tagged-cases\nschedule: {{every: 1s}}\n\
             overlap: skip\nmisfire: run_once\ntimeout: 5m\nparameters:\n\
             \x20 - {{name: Tags, type: string, value: \"Phishing\"}}\n\
             \x20 - {{name: Comment, type: string, value: \"{COMMENT}\"}}\n\
             \x20 - {{name: Max Hours Backwards, type: integer, value: 72}}\n\
             \x20 - {{name: Concurrency, type: integer, value: 4}}\n"
        ),
    )
    .unwrap();
    let url = sim.url();
    let env = [
        ("SOARJOBD__SOAR__URL", url.as_str()),
        ("SOARJOBD__SOAR__APP_KEY", KEY),
    ];
    let mut replicas = [
        replica(dir.path(), &db, "a", &env),
        replica(dir.path(), &db, "b", &env),
    ];
    let pool = pool(&db).await;
    let done = eventually(Duration::from_secs(60), || async {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM job_runs WHERE status = 'succeeded'")
            .fetch_one(&pool)
            .await
            .is_ok_and(|n| n >= 3)
    })
    .await;
    for r in &mut replicas {
        assert_eq!(stop(r, Duration::from_secs(30)).await, Some(0));
    }
    assert!(done, "the job did not run three times");

    let mut per_case: BTreeMap<u64, usize> = BTreeMap::new();
    for c in sim.state().comments(None) {
        assert_eq!(c.comment, COMMENT);
        *per_case.entry(c.case_id).or_default() += 1;
    }
    let commented: BTreeSet<u64> = per_case.keys().copied().collect();
    assert_eq!(
        commented, to_comment,
        "every case with alerts, and only those"
    );
    let doubled: Vec<_> = per_case.iter().filter(|(_, n)| **n > 1).collect();
    assert!(doubled.is_empty(), "cases commented twice: {doubled:?}");
    // overlap: skip across replicas: no two runs of the job overlapped.
    let spans: Vec<(i64, i64)> = sqlx::query(
        "SELECT started_at, finished_at FROM job_runs \
         WHERE status NOT IN ('skipped') ORDER BY started_at",
    )
    .fetch_all(&pool)
    .await
    .unwrap()
    .iter()
    .map(|r| (r.get("started_at"), r.get("finished_at")))
    .collect();
    for w in spans.windows(2) {
        assert!(w[1].0 >= w[0].1, "two runs overlapped: {spans:?}");
    }
    pool.close().await;
    sim.shutdown().await.unwrap();
}

/// `migrate-state` moves a SQLite database holding history, timestamps and seen-sets to
/// PostgreSQL, and `comment-on-tagged-cases` carries on there: the cases it commented on
/// SQLite are not commented again, the new ones are, once each. A second copy is refused.
#[cfg(feature = "sim")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn comment_on_tagged_cases_continues_on_postgres_after_migrate_state() {
    use soarjobd_sim::soar as sim;
    use soarjobd_sim::soar::{CasePatch, SoarSimConfig};
    use soarjobd_store::{MigrateStateError, migrate_state};
    const KEY: &str = "it-migrate-key-93be";
    let sim = sim::start(
        SoarSimConfig {
            app_key: KEY.into(),
            cases: 150,
            seed: 43,
            ..SoarSimConfig::default()
        },
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let tag_all = || {
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
    };
    tag_all();
    let with_alerts = || -> BTreeSet<u64> {
        sim.state()
            .cases()
            .iter()
            .filter(|c| !c.ticket_ids.is_empty())
            .map(|c| c.id)
            .collect()
    };
    let mut app = TestApp::new();
    app.settings.set_section(
        "soar",
        serde_json::json!({ "url": sim.url(), "app_key": KEY }),
    );
    app.write_job(
        "tagged",
        "name: Tagged\njob: comment-on-tagged-cases\nschedule: {every: 1h}\nparameters:\n\
         \x20 - {name: Tags, type: string, value: \"Phishing\"}\n\
         \x20 - {name: Comment, type: string, value: \"moved\"}\n\
         \x20 - {name: Max Hours Backwards, type: integer, value: 72}\n",
    );
    assert_eq!(
        soarjobd::inspect::run_once(&app.app(), "tagged", &[]).await,
        0,
        "the run on SQLite"
    );
    let first = with_alerts();
    assert_eq!(sim.state().comments(None).len(), first.len());

    // The operator's state comes along: a pause (of a job that is not run here) and the run's
    // stored log lines.
    {
        let store = app.store().await;
        store
            .pause_job("other", Some("maintenance"), "cli:test", chrono::Utc::now())
            .await
            .unwrap();
        store.close().await;
    }
    // Stored log lines of the run (written here, since this test process captures no logs),
    // more than one page of the copy.
    let sqlite_logs = {
        let store = app.store().await;
        let run = store.history("tagged", 1).await.unwrap()[0].id;
        let lines: Vec<RunLogLine> = (1..=2_500)
            .map(|seq| RunLogLine {
                run_id: run,
                seq,
                at: chrono::Utc::now(),
                level: "INFO".into(),
                target: "soarjobd_jobs::comment_on_tagged_cases".into(),
                message: format!("line {seq}"),
                fields: serde_json::json!({ "n": seq }),
            })
            .collect();
        store.append_run_logs(&lines).await.unwrap();
        let n = store.run_logs(run, 0, 10_000).await.unwrap().len();
        store.close().await;
        (run, n)
    };

    let db = TestDb::create().await;
    let copied = migrate_state(&app.settings.database_url, db.url())
        .await
        .expect("migrate-state");
    assert_eq!(copied.runs, 1);
    assert!(
        copied.timestamps >= 1 && copied.seen >= first.len() as u64,
        "{copied:?}"
    );
    assert_eq!(copied.pauses, 1, "{copied:?}");
    assert_eq!(sqlite_logs.1, 2_500);
    assert_eq!(copied.run_log_lines, sqlite_logs.1 as u64, "{copied:?}");

    // New cases arrive; the job now runs on PostgreSQL.
    for _ in 0..10 {
        sim.state()
            .upsert_case(CasePatch {
                status: Some("OPEN".into()),
                tags: Some(vec!["Phishing".into()]),
                alerts: Some(1),
                creation_time: Some(sim.state().now_ms()),
                modification_time: Some(sim.state().now_ms()),
                ..CasePatch::default()
            })
            .unwrap();
    }
    let sqlite_url = app.settings.database_url.clone();
    app.settings.database_url = db.url().to_string();
    assert_eq!(
        soarjobd::inspect::run_once(&app.app(), "tagged", &[]).await,
        0,
        "the run on PostgreSQL"
    );
    let mut per_case: BTreeMap<u64, usize> = BTreeMap::new();
    for c in sim.state().comments(None) {
        *per_case.entry(c.case_id).or_default() += 1;
    }
    let all = with_alerts();
    assert_eq!(all.len(), first.len() + 10);
    assert_eq!(per_case.keys().copied().collect::<BTreeSet<_>>(), all);
    let doubled: Vec<_> = per_case.iter().filter(|(_, n)| **n > 1).collect();
    assert!(doubled.is_empty(), "cases commented twice: {doubled:?}");
    let pg = app.store().await;
    let history = pg.history("tagged", 10).await.unwrap();
    assert_eq!(history.len(), 2, "the copied run and the new one");
    let pauses = pg.pauses().await.unwrap();
    assert_eq!(pauses.len(), 1, "{pauses:?}");
    assert_eq!(
        (pauses[0].job_id.as_str(), pauses[0].reason.as_deref()),
        ("other", Some("maintenance"))
    );
    assert_eq!(
        pg.run_logs(sqlite_logs.0, 0, 10_000).await.unwrap().len(),
        sqlite_logs.1,
        "the copied run's log lines"
    );
    assert_eq!(history[0].stats["commented"], 10, "{:?}", history[0]);

    // Copying again would mix two histories.
    assert!(matches!(
        migrate_state(&sqlite_url, db.url()).await,
        Err(MigrateStateError::NotEmpty { runs: 2, .. })
    ));
    sim.shutdown().await.unwrap();
}

/// `soarjobd nodes` lists the replicas with their last heartbeat (not itself); on SQLite it
/// says the database is single-node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_lists_the_replicas_and_sqlite_says_single_node() {
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("jobs")).unwrap();
    let mut r = replica(dir.path(), &db, "a", &[]);
    let pid = r.id().to_string();
    let nodes = || {
        soarjobd_in(dir.path(), &["nodes"])
            .env("SOARJOBD__DATABASE_URL", db.url())
            .output()
            .unwrap()
    };
    let listed = poll(Duration::from_secs(20), || async {
        let out = nodes();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        // A replica's node says `starting` until its scheduler runs (it owns no job yet).
        let scheduling = text
            .lines()
            .any(|l| l.contains(&pid) && !l.contains("starting"));
        (out.status.success() && scheduling).then_some(text)
    })
    .await
    .expect("the replica is listed, past `starting`");
    let line = listed.lines().find(|l| l.contains(&pid)).unwrap();
    assert!(
        line.contains("daemon") && line.contains("alive"),
        "{listed}"
    );
    assert_eq!(
        listed.lines().count(),
        2,
        "the header and the replica only: {listed}"
    );
    assert_eq!(stop(&mut r, Duration::from_secs(30)).await, Some(0));
    let out = nodes();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        text.contains("no replica"),
        "a stopped replica is gone at once: {text}"
    );

    let out = soarjobd_in(dir.path(), &["nodes"]).output().unwrap();
    assert!(out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("single-node"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

/// `migrate-state` from a path that does not exist, or from a SQLite file that is not a
/// soarjobd database, exits 2 with a clear message, creates no file and changes nothing (the
/// source opens read-only); the target stays without state. Today's code created an empty
/// database at the typo'd path (or our tables inside the foreign file) and said `copied 0
/// runs`, exit 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_state_refuses_a_missing_or_foreign_source() {
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    let listing = |d: &Path| {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    let migrate = |from: &str| {
        soarjobd_in(
            dir.path(),
            &["migrate-state", "--from", from, "--to", db.url()],
        )
        .output()
        .unwrap()
    };

    // A typo'd path.
    let missing = dir.path().join("sub").join("statee.db");
    let out = migrate(&format!("sqlite:{}", missing.display()));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("does not exist"), "{err}");
    assert!(
        listing(dir.path()).is_empty(),
        "nothing created: {:?}",
        listing(dir.path())
    );

    // A SQLite file of some other program.
    let foreign = dir.path().join("other.db");
    {
        let pool = sqlx::SqlitePool::connect(&format!("sqlite:{}?mode=rwc", foreign.display()))
            .await
            .unwrap();
        sqlx::query("CREATE TABLE notes (id INTEGER PRIMARY KEY, body TEXT)")
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query("INSERT INTO notes (body) VALUES ('keep me')")
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    }
    let before = std::fs::read(&foreign).unwrap();
    let files_before = listing(dir.path());
    let out = migrate(&format!("sqlite:{}", foreign.display()));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("not a soarjobd state database"), "{err}");
    assert_eq!(
        std::fs::read(&foreign).unwrap(),
        before,
        "the file is unchanged"
    );
    assert_eq!(listing(dir.path()), files_before, "no file left behind");

    // A file that is not SQLite at all.
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "not a database\n".repeat(100)).unwrap();
    let out = migrate(&format!("sqlite:{}", text.display()));
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("not a soarjobd state database"), "{err}");
    assert_eq!(
        listing(dir.path()),
        files_before
            .iter()
            .cloned()
            .chain(["notes.txt".to_string()])
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect::<Vec<_>>()
    );

    // The target got no state.
    let pg = PgPool::connect(db.url()).await.unwrap();
    let runs: Option<i64> = sqlx::query_scalar(
        "SELECT COUNT(*) FROM information_schema.tables WHERE table_name = 'job_runs'",
    )
    .fetch_optional(&pg)
    .await
    .unwrap();
    assert_eq!(runs, Some(0), "the target was not even migrated");
    pg.close().await;
}

/// A daemon on a SQLite file in `dir` (the single-node reference beside the replicas).
fn sqlite_daemon(dir: &Path, name: &str) -> Replica {
    let out = File::create(dir.join(format!("{name}.log"))).unwrap();
    let err = out.try_clone().unwrap();
    let mut c = soarjobd_in(dir, &["run"]);
    c.env_remove("SOARJOBD_CONFIG")
        .env(
            "SOARJOBD__DATABASE_URL",
            format!("sqlite:{}", dir.join("state.db").display()),
        )
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err));
    Replica(c.spawn().expect("spawn a daemon"))
}

/// `count` exec jobs `every: 1s` in `dir/jobs`, each appending its run id to `dir/ran` and
/// then taking `secs` seconds.
fn exec_jobs(dir: &Path, count: usize, secs: &str, extra: &str) {
    std::fs::create_dir_all(dir.join("jobs")).unwrap();
    let ran = dir.join("ran");
    for n in 0..count {
        std::fs::write(
            dir.join(format!("jobs/j{n:02}.yaml")),
            format!(
                "name: j{n:02}\njob: exec\nschedule: {{every: 1s}}\noverlap: skip\n{extra}\
                 command: [/bin/sh, -c, 'echo $SOARJOBD_RUN_ID >> {}; sleep {secs}']\n",
                ran.display()
            ),
        )
        .unwrap();
    }
}

/// The run ids the jobs of `dir` executed, by their own account.
fn executed(dir: &Path) -> Vec<i64> {
    std::fs::read_to_string(dir.join("ran"))
        .unwrap_or_default()
        .lines()
        .map(|l| l.trim().parse().expect("a run id"))
        .collect()
}

/// Per job, the ticks that ran (succeeded) within `[from, to)` (unix ms), and whether any
/// executed run id is a row twice or two executions share a tick.
async fn ticks_run(
    store: &std::sync::Arc<dyn soarjobd_core::store::Store>,
    jobs: usize,
    executed: &[i64],
    (from, to): (i64, i64),
) -> (usize, Vec<String>) {
    let mut run = 0;
    let mut problems = Vec::new();
    let mut tick_of: HashMap<i64, (String, i64)> = HashMap::new();
    for n in 0..jobs {
        let job = format!("j{n:02}");
        for r in store.history(&job, 10_000).await.unwrap() {
            let at = r.scheduled_at.timestamp_millis();
            tick_of.insert(r.id, (job.clone(), at - at % 1000));
            if r.status == soarjobd_core::store::RunStatus::Succeeded
                && r.trigger == soarjobd_core::store::Trigger::Schedule
                && (from..to).contains(&at)
            {
                run += 1;
            }
        }
    }
    let mut seen: HashMap<(String, i64), i64> = HashMap::new();
    for id in executed {
        match tick_of.get(id) {
            None => problems.push(format!("run {id} executed without a row")),
            Some(tick) => {
                if let Some(other) = seen.insert(tick.clone(), *id) {
                    problems.push(format!("tick {tick:?} ran twice: runs {other} and {id}"));
                }
            }
        }
    }
    (run, problems)
}

/// Issue 22: 20 exec jobs `every: 1s` whose runs take most of the second, `overlap: skip`.
/// Three replicas on PostgreSQL run as many ticks as one daemon on SQLite in the same test
/// (within 1 %), none twice. Before, a replica's claim 250 ms ahead of the tick saw the
/// previous tick's run on another replica still going and recorded the tick `skipped`:
/// about 40 % of the ticks were lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_run_as_many_long_ticks_as_one_node() {
    const JOBS: usize = 20;
    let db = TestDb::create().await;
    let pg_dir = tempfile::tempdir().unwrap();
    let sqlite_dir = tempfile::tempdir().unwrap();
    exec_jobs(pg_dir.path(), JOBS, "0.75", "misfire: skip\n");
    exec_jobs(sqlite_dir.path(), JOBS, "0.75", "misfire: skip\n");
    let started = chrono::Utc::now();
    let mut daemons: Vec<Replica> = (0..3)
        .map(|i| replica(pg_dir.path(), &db, &format!("r{i}"), &[]))
        .collect();
    daemons.push(sqlite_daemon(sqlite_dir.path(), "sqlite"));
    tokio::time::sleep(Duration::from_secs(22)).await;
    let ended = chrono::Utc::now();
    for d in &mut daemons {
        assert_eq!(stop(d, Duration::from_secs(30)).await, Some(0));
    }
    // Ticks from 5 s after the start (every replica is up) to 2 s before the stop.
    let window = (
        (started.timestamp() + 5) * 1000,
        (ended.timestamp() - 2) * 1000,
    );
    let pg = soarjobd_store::open(db.url()).await.unwrap();
    let (pg_run, pg_problems) = ticks_run(&pg, JOBS, &executed(pg_dir.path()), window).await;
    pg.close().await;
    let url = format!("sqlite:{}", sqlite_dir.path().join("state.db").display());
    let sqlite = soarjobd_store::open(&url).await.unwrap();
    let (sqlite_run, sqlite_problems) =
        ticks_run(&sqlite, JOBS, &executed(sqlite_dir.path()), window).await;
    sqlite.close().await;
    let possible = JOBS as i64 * (window.1 - window.0) / 1000;
    eprintln!("of {possible} ticks: 3 replicas ran {pg_run}, one SQLite daemon {sqlite_run}");
    assert!(pg_problems.is_empty(), "{pg_problems:?}");
    assert!(sqlite_problems.is_empty(), "{sqlite_problems:?}");
    // The comparison means something only if the single node runs most ticks itself (on a
    // loaded debug build it loses some too: each run spawns a shell and a cgroup).
    assert!(
        sqlite_run as i64 * 2 >= possible,
        "the single node itself lost most ticks ({sqlite_run} of {possible}): the machine is \
         too loaded for this comparison"
    );
    assert!(
        pg_run * 100 >= sqlite_run * 99,
        "3 replicas ran {pg_run} ticks, one node {sqlite_run} (of {possible})"
    );
}

/// The test database refuses connections (`ALLOW_CONNECTIONS false`) and every connection to
/// it is killed (`pg_terminate_backend`), or it is let in again.
async fn database_outage(db: &TestDb, down: bool) {
    let admin = PgPool::connect(&soarjobd_store::testdb::server_url())
        .await
        .expect("admin connection");
    let allow = if down { "false" } else { "true" };
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "ALTER DATABASE {} ALLOW_CONNECTIONS {allow}",
        db.name()
    )))
    .execute(&admin)
    .await
    .expect("alter database");
    if down {
        sqlx::query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = $1 AND pid <> pg_backend_pid()",
        )
        .bind(db.name())
        .execute(&admin)
        .await
        .expect("terminate backends");
    }
    admin.close().await;
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `/readyz` of a replica: the status and the body's `code`.
async fn readyz(port: u16) -> Option<(u16, String)> {
    let r = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/readyz"))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    let status = r.status().as_u16();
    let body: serde_json::Value = r.json().await.ok()?;
    Some((status, body["code"].as_str().unwrap_or("").to_string()))
}

/// Issue 22: the database goes away for 20 s (connections killed, new ones refused) and
/// comes back. Every replica recovers by itself: `/readyz` answers 503 `database` meanwhile,
/// the failures are logged once (not at every sweep), nobody is declared dead for an outage
/// everybody saw, the ticks missed are logged and caught up once per job (`misfire:
/// run_once`), the node rows are there again, and no tick ran twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_recover_by_themselves_from_a_database_outage() {
    const JOBS: usize = 10;
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    exec_jobs(dir.path(), JOBS, "0", "misfire: run_once\n");
    let ports = [free_port(), free_port()];
    let mut replicas: Vec<Replica> = ports
        .iter()
        .enumerate()
        .map(|(i, port)| {
            let listen = format!("127.0.0.1:{port}");
            replica(
                dir.path(),
                &db,
                &format!("r{i}"),
                &[("SOARJOBD__ADMIN__LISTEN", listen.as_str())],
            )
        })
        .collect();
    for port in ports {
        let ready = poll(Duration::from_secs(30), || async {
            readyz(port).await.filter(|(s, _)| *s == 200)
        })
        .await;
        assert!(ready.is_some(), "replica on {port} never ready");
    }
    tokio::time::sleep(Duration::from_secs(3)).await;

    database_outage(&db, true).await;
    let down_at = chrono::Utc::now();
    // While it lasts, each replica says why it is not ready.
    for port in ports {
        let answer = poll(Duration::from_secs(10), || async {
            readyz(port).await.filter(|(s, _)| *s == 503)
        })
        .await;
        assert_eq!(
            answer.map(|(_, code)| code).as_deref(),
            Some("database"),
            "readyz of the replica on {port} during the outage"
        );
    }
    tokio::time::sleep(Duration::from_secs(18)).await;
    database_outage(&db, false).await;
    let up_at = chrono::Utc::now();

    for port in ports {
        let ready = poll(Duration::from_secs(30), || async {
            readyz(port).await.filter(|(s, _)| *s == 200)
        })
        .await;
        assert!(ready.is_some(), "replica on {port} did not recover");
    }
    let pool = pool(&db).await;
    let nodes = poll(Duration::from_secs(10), || async {
        let n = scalar(&pool, "SELECT COUNT(*) FROM nodes WHERE role = 'daemon'").await;
        (n == 2).then_some(n)
    })
    .await;
    assert_eq!(nodes, Some(2), "both node rows are back");
    // Each job caught up once for the outage (its owner's catch-up), then ran on.
    let dir_path = dir.path().to_path_buf();
    let caught_up = eventually(Duration::from_secs(20), || async {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(DISTINCT job_id) FROM job_runs WHERE \"trigger\" = 'catch_up' \
             AND scheduled_at > $1 AND status = 'succeeded'",
        )
        .bind(down_at.timestamp_millis())
        .fetch_one(&pool)
        .await
        .unwrap();
        n == JOBS as i64
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    for r in &mut replicas {
        assert_eq!(stop(r, Duration::from_secs(30)).await, Some(0));
    }
    let logs: Vec<String> = (0..2).map(|i| log(&dir_path, &format!("r{i}"))).collect();
    assert!(
        caught_up,
        "not every job was caught up:\n{}",
        logs.join("\n")
    );
    let catch_ups: Vec<(String, i64)> = sqlx::query_as(
        "SELECT job_id, COUNT(*) FROM job_runs WHERE \"trigger\" = 'catch_up' \
         AND scheduled_at > $1 GROUP BY job_id HAVING COUNT(*) > 1",
    )
    .bind(down_at.timestamp_millis())
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(
        catch_ups.is_empty(),
        "more than one catch-up: {catch_ups:?}"
    );
    assert_eq!(
        scalar(
            &pool,
            "SELECT COUNT(*) FROM job_runs WHERE status = 'interrupted'"
        )
        .await,
        0,
        "nobody was declared dead for an outage everybody saw"
    );
    let all = soarjobd_store::open(db.url()).await.unwrap();
    let (_, problems) = ticks_run(&all, JOBS, &executed(dir.path()), (0, i64::MAX)).await;
    all.close().await;
    assert!(problems.is_empty(), "{problems:?}");
    // Logged, but not at every attempt: the sweep alone tries 10 times a heartbeat.
    // Per replica: the first failure, and (for the sweep) the line saying it works again.
    for text in &logs {
        for (line, at_most) in [
            ("cannot look for runs of dead processes", 2),
            ("cannot write the heartbeat", 1),
            ("store failing", 1),
        ] {
            let n = text.matches(line).count();
            assert!(
                (1..=at_most).contains(&n),
                "`{line}` logged {n} times:\n{text}"
            );
        }
    }
    let text = logs.join("\n");
    assert!(text.contains("store recovered"), "{text}");
    assert!(
        text.contains("the state store was failing"),
        "missed ticks logged with their reason:\n{text}"
    );
    eprintln!(
        "outage {} s",
        (up_at - down_at).num_milliseconds() as f64 / 1000.0
    );
    pool.close().await;
}

/// Issue 22: a run that ends while the database is away (8 s, longer than `dead_after`) is
/// recorded once it is back, under its fencing token; nobody takes it over and it does not
/// run a second time. Before, its end was logged as lost, and the other replica marked the
/// successful run interrupted and ran the job again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_ending_during_an_outage_is_recorded_after_it_and_not_run_again() {
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("jobs")).unwrap();
    let ran = dir.path().join("ran");
    std::fs::write(
        dir.path().join("jobs/slow.yaml"),
        format!(
            "name: slow\njob: exec\nschedule: {{every: 1h}}\nmisfire: run_once\n\
             command: [/bin/sh, -c, 'echo $SOARJOBD_RUN_ID >> {}; sleep 4; exit 3']\n",
            ran.display()
        ),
    )
    .unwrap();
    // (Exit 3, partial success: an exit 0 saves the job's last-success timestamp, which
    // fails during the outage and makes the run `failed` honestly; recorded after it all the
    // same.) A past tick, so the replicas' start-up catch-up makes the run.
    {
        let store = soarjobd_store::open(db.url()).await.unwrap();
        store.close().await;
        let pool = pool(&db).await;
        sqlx::query(
            "INSERT INTO job_runs (job_id, scheduled_at, \"trigger\", status, started_at, \
                                   finished_at, duration_ms) \
             VALUES ('slow', 0, 'schedule', 'succeeded', 0, 0, 0)",
        )
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
    }
    let mut replicas = [
        replica(dir.path(), &db, "a", &[]),
        replica(dir.path(), &db, "b", &[]),
    ];
    let pool = pool(&db).await;
    let run = poll(Duration::from_secs(30), || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT id FROM job_runs WHERE status = 'running' AND job_id = 'slow'",
        )
        .fetch_optional(&pool)
        .await
        .ok()
        .flatten()
    })
    .await
    .expect("the run never started");
    pool.close().await;
    // The outage starts while the script runs (after its process was recorded), and
    // outlasts the run and `dead_after` (1.5 s).
    let dir_path = dir.path().to_path_buf();
    assert!(
        eventually(Duration::from_secs(10), || async {
            executed(&dir_path).contains(&run)
        })
        .await,
        "the script never started"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    database_outage(&db, true).await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    database_outage(&db, false).await;
    let pool = self::pool(&db).await;
    let status = poll(Duration::from_secs(20), || async {
        sqlx::query_scalar::<_, String>("SELECT status FROM job_runs WHERE id = $1")
            .bind(run)
            .fetch_one(&pool)
            .await
            .ok()
            .filter(|s| s != "running")
    })
    .await;
    // Give a wrong takeover time to happen.
    tokio::time::sleep(Duration::from_secs(4)).await;
    for r in &mut replicas {
        assert_eq!(stop(r, Duration::from_secs(30)).await, Some(0));
    }
    let text = format!("{}\n{}", log(dir.path(), "a"), log(dir.path(), "b"));
    assert_eq!(status.as_deref(), Some("partial"), "{text}");
    assert!(
        text.contains("run end recorded after the database came back"),
        "{text}"
    );
    let runs: Vec<(i64, String, String)> = sqlx::query_as(
        "SELECT id, \"trigger\", status FROM job_runs WHERE job_id = 'slow' AND scheduled_at > 0",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        runs.len(),
        1,
        "one run of the tick, no takeover: {runs:?}\n{text}"
    );
    assert_eq!(executed(dir.path()), [run], "the job ran once");
    pool.close().await;
}

/// Issue 22: 20 exec jobs `every: 1s` whose runs take ~0.9 s (`overlap: skip`, `misfire:
/// run_once`) on 3 replicas, one SIGKILLed every 10 s and restarted half a second later.
/// No `(job, tick)` runs twice; the only ticks nobody ran are the killed replica's runs
/// going at the kill (`interrupted`) and, with no row, its jobs' ticks from the kill until
/// another replica took each job over, and each such job is caught up at most once
/// (`misfire: run_once`) per kill, whether the replica that took the run over also owns the
/// job or not (not at all when its next tick was already claimed: it runs then). Ticks `skipped` by `overlap: skip` (the previous run, here or on another
/// replica, still going at the tick) are the single-node behaviour and are only counted.
/// No timing is asserted: each job's takeover instant is read from the rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_ticks_on_three_replicas_one_killed_every_10s_lose_only_the_victims_ticks() {
    const JOBS: usize = 20;
    const ROUNDS: usize = 3;
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    exec_jobs(dir.path(), JOBS, "0.9", "misfire: run_once\n");
    let started = chrono::Utc::now();
    let mut replicas: Vec<Replica> = (0..3)
        .map(|i| replica(dir.path(), &db, &format!("r{i}-0"), &[]))
        .collect();
    // (pid killed, unix ms of the kill)
    let mut kills: Vec<(i64, i64)> = Vec::new();
    for round in 1..=ROUNDS {
        tokio::time::sleep(Duration::from_secs(10)).await;
        let i = (round - 1) % 3;
        let pid = i64::from(replicas[i].id());
        kill(&mut replicas[i]);
        kills.push((pid, chrono::Utc::now().timestamp_millis()));
        tokio::time::sleep(Duration::from_millis(500)).await;
        replicas[i] = replica(dir.path(), &db, &format!("r{i}-{round}"), &[]);
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    let ended = chrono::Utc::now();
    for r in &mut replicas {
        assert_eq!(stop(r, Duration::from_secs(30)).await, Some(0));
    }
    let pool = pool(&db).await;
    assert_eq!(
        scalar(
            &pool,
            "SELECT COUNT(*) FROM job_runs WHERE status = 'running'"
        )
        .await,
        0,
        "no run is left running"
    );
    assert_eq!(scalar(&pool, "SELECT COUNT(*) FROM nodes").await, 0);
    // (id, job, scheduled_at, trigger, status, owner_pid, started_at, message)
    type Row = (i64, String, i64, String, String, i64, i64, Option<String>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT id, job_id, scheduled_at, \"trigger\", status, owner_pid, started_at, message \
         FROM job_runs ORDER BY id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    pool.close().await;
    let logs: String = std::fs::read_dir(dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".log"))
        .map(|e| {
            let name = e.file_name().to_string_lossy().to_string();
            std::fs::read_to_string(e.path())
                .unwrap_or_default()
                .lines()
                .filter(|l| {
                    [
                        "ticks missed",
                        "replicas changed",
                        "declared dead",
                        "scheduled here",
                        "catch-up",
                        "interrupted",
                    ]
                    .iter()
                    .any(|k| l.contains(k))
                })
                .map(|l| format!("{name}: {}\n", &l[..l.len().min(300)]))
                .collect::<String>()
        })
        .collect();

    // Nothing ran twice: every executed run id has its row, and no claim key (job, tick)
    // executed twice.
    let by_id: HashMap<i64, &Row> = rows.iter().map(|r| (r.0, r)).collect();
    let mut runs_per_key: HashMap<(&str, i64), usize> = HashMap::new();
    let executed = executed(dir.path());
    for &id in &executed {
        let r = by_id
            .get(&id)
            .unwrap_or_else(|| panic!("run {id} executed without a row"));
        *runs_per_key.entry((r.1.as_str(), r.2)).or_default() += 1;
    }
    let doubled: Vec<_> = runs_per_key.iter().filter(|(_, n)| **n > 1).collect();
    assert!(doubled.is_empty(), "ran more than once: {doubled:?}");

    // Each kill's victim jobs (the killed replica claimed one of their ticks in the 1.5 s
    // before the kill) and when another replica took each over (the start of the first run
    // of the job that another process claimed after the kill and executed).
    let ran_ids: BTreeSet<i64> = executed.iter().copied().collect();
    let mut victims: Vec<(usize, String, i64)> = Vec::new(); // (kill, job, taken over at)
    for (k, (pid, at)) in kills.iter().enumerate() {
        let jobs: BTreeSet<&str> = rows
            .iter()
            .filter(|r| r.5 == *pid && r.3 == "schedule" && (at - 1500..=*at).contains(&r.2))
            .map(|r| r.1.as_str())
            .collect();
        for job in jobs {
            let taken = rows
                .iter()
                .filter(|r| r.1 == job && r.5 != *pid && r.6 > *at && ran_ids.contains(&r.0))
                .map(|r| r.6)
                .min()
                .unwrap_or_else(|| panic!("{job} was never taken over after kill {k}\n{logs}"));
            victims.push((k, job.to_string(), taken));
        }
    }
    assert!(!victims.is_empty(), "the killed replicas ran no job?");

    // Ticks nobody ran, outside the victims' windows.
    let first = (started.timestamp() + 6) * 1000;
    let last = (ended.timestamp() - 3) * 1000;
    let killed: BTreeSet<i64> = kills.iter().map(|(pid, _)| *pid).collect();
    let mut outcome: HashMap<(&str, i64), &str> = HashMap::new();
    for r in rows.iter().filter(|r| r.3 == "schedule") {
        // A killed replica's run that was going at the kill: lost with it.
        let status = if r.4 == "interrupted" && killed.contains(&r.5) {
            "killed"
        } else {
            r.4.as_str()
        };
        outcome.insert((r.1.as_str(), r.2), status);
    }
    let (mut ran, mut skipped, mut excused) = (0, 0, 0);
    let mut missing = Vec::new();
    for n in 0..JOBS {
        let job = format!("j{n:02}");
        for t in (first..=last).step_by(1000) {
            match outcome.get(&(job.as_str(), t)).copied() {
                Some("succeeded") => ran += 1,
                Some("skipped") => skipped += 1,
                Some("killed") => excused += 1,
                other => {
                    let excuse = victims.iter().any(|(k, j, taken)| {
                        *j == job && (kills[*k].1 - 1000..=taken + 1000).contains(&t)
                    });
                    if excuse {
                        excused += 1;
                    } else {
                        missing.push((job.clone(), t, other.map(str::to_string)));
                    }
                }
            }
        }
    }
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for r in rows.iter().filter(|r| r.4 == "skipped") {
        let head: String = r.7.as_deref().unwrap_or("").chars().take(34).collect();
        *reasons.entry(head).or_default() += 1;
    }
    eprintln!(
        "{} ticks: {ran} ran, {skipped} skipped (overlap: {reasons:?}), {excused} lost by the \
         victims until takeover; {} victim jobs; kills {kills:?}",
        JOBS as i64 * ((last - first) / 1000 + 1),
        victims.len()
    );
    assert!(missing.is_empty(), "ticks nobody ran: {missing:?}\n{logs}");

    // At most one catch-up run per victim job and kill (none when the job's next tick was
    // claimed already when its run was taken over), none for the others. (Counted from what
    // ran: a catch-up row may also be `skipped` by `overlap: skip`.)
    let executed = ran_ids;
    let mut catch_ups: BTreeMap<(usize, &str), Vec<i64>> = BTreeMap::new();
    // (Catch-ups after `ended` are the graceful stops' handoffs.)
    let stopping = ended.timestamp_millis();
    for r in rows
        .iter()
        .filter(|r| r.3 == "catch_up" && executed.contains(&r.0) && r.6 < stopping)
    {
        let Some(k) = kills.iter().rposition(|(_, at)| r.6 > *at) else {
            continue; // the replicas' first start
        };
        catch_ups.entry((k, r.1.as_str())).or_default().push(r.0);
    }
    for (k, job, _) in &victims {
        let n = catch_ups.get(&(*k, job.as_str())).map_or(0, Vec::len);
        assert!(n <= 1, "{job} caught up {n} times after kill {k}\n{logs}");
    }
    let others: Vec<_> = catch_ups
        .iter()
        .filter(|((k, job), _)| !victims.iter().any(|(vk, vj, _)| vk == k && vj == job))
        .collect();
    assert!(
        others.is_empty(),
        "catch-ups of jobs no kill touched: {others:?}\n{logs}"
    );
}

/// The rows of the test database: (id, job, scheduled_at, trigger, status, owner_pid).
async fn all_runs(pool: &PgPool) -> Vec<(i64, String, i64, String, String, i64)> {
    sqlx::query_as(
        "SELECT id, job_id, scheduled_at, \"trigger\", status, owner_pid FROM job_runs ORDER BY id",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

/// The database server's clock, unix ms (what the replicas judge liveness by).
async fn server_ms(pool: &PgPool) -> i64 {
    scalar(
        pool,
        "SELECT (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT",
    )
    .await
}

/// Issue 22, fencing of claims: a replica SIGSTOPped right after it claimed ticks ahead of
/// their instant, past `dead_after`, is declared dead, its claims are `interrupted` and its
/// jobs move (caught up once per `misfire: run_once`); SIGCONT: it must not start the ticks
/// it claimed before the freeze (its claims are no longer its own) nor the ticks due while
/// it was frozen (the other replica decided them). Counted from what the jobs executed: no
/// claim key runs twice, no job is caught up twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_replica_does_not_start_the_ticks_it_claimed_before_it_was_declared_dead() {
    const JOBS: usize = 20;
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    exec_jobs(dir.path(), JOBS, "0", "misfire: run_once\n");
    let mut replicas = [
        replica(dir.path(), &db, "a", &[]),
        replica(dir.path(), &db, "b", &[]),
    ];
    let pool = pool(&db).await;
    // Both replicas schedule their share (the jobs are spread once both are members).
    let both = eventually(Duration::from_secs(30), || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(DISTINCT owner_pid) FROM job_runs WHERE status = 'succeeded' \
             AND started_at > (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT - 1500",
        )
        .fetch_one(&pool)
        .await
        .is_ok_and(|n| n == 2)
    })
    .await;
    assert!(both, "the two replicas do not both run jobs");

    // Freeze a replica while it holds ticks claimed ahead: poll for such rows, SIGSTOP their
    // owner, then read which of its claims were still ahead of their instant after the stop
    // (those cannot have fired). A few tries: the stop may land just after they fired.
    let mut frozen = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    while frozen.is_none() && tokio::time::Instant::now() < deadline {
        let ahead: Option<i64> = sqlx::query_scalar(
            "SELECT owner_pid FROM job_runs WHERE status = 'running' \
             AND started_at > (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT + 60 \
             LIMIT 1",
        )
        .fetch_optional(&pool)
        .await
        .unwrap();
        let Some(pid) = ahead else {
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let Some(i) = replicas.iter().position(|r| i64::from(r.id()) == pid) else {
            continue;
        };
        signal(&replicas[i], libc::SIGSTOP);
        let stopped_ms = server_ms(&pool).await;
        let claims: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM job_runs WHERE status = 'running' AND owner_pid = $1 \
             AND started_at > $2",
        )
        .bind(pid)
        .bind(stopped_ms + 20)
        .fetch_all(&pool)
        .await
        .unwrap();
        if claims.is_empty() {
            signal(&replicas[i], libc::SIGCONT);
            tokio::time::sleep(Duration::from_millis(700)).await;
            continue;
        }
        frozen = Some((i, pid, stopped_ms, claims));
    }
    let (victim, pid, stopped_ms, claims) =
        frozen.expect("never froze a replica with claims ahead");
    let name = ["a", "b"][victim];

    // Declared dead: its claims are interrupted by the other replica.
    let claim_list = claims.clone();
    let taken = eventually(Duration::from_secs(20), || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(*) FROM job_runs WHERE id = ANY($1) AND status = 'interrupted'",
        )
        .bind(&claim_list)
        .fetch_one(&pool)
        .await
        .is_ok_and(|n| n == claim_list.len() as i64)
    })
    .await;
    assert!(taken, "the frozen replica's claims were not taken over");
    // A few more of its jobs' ticks pass on the other replica, then it continues.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cont_ms = server_ms(&pool).await;
    signal(&replicas[victim], libc::SIGCONT);
    let dir_path = dir.path().to_path_buf();
    let noticed = eventually(Duration::from_secs(20), || async {
        log(&dir_path, name).contains("declared dead")
    })
    .await;
    assert!(
        noticed,
        "the frozen replica did not notice:\n{}",
        log(dir.path(), name)
    );
    // It runs its share again for a while.
    tokio::time::sleep(Duration::from_secs(5)).await;
    for r in &mut replicas {
        assert_eq!(stop(r, Duration::from_secs(30)).await, Some(0));
    }
    let rows = all_runs(&pool).await;
    pool.close().await;
    let victim_log = log(dir.path(), name);

    let executed = executed(dir.path());
    let ran: BTreeSet<i64> = executed.iter().copied().collect();
    // The claims made before the freeze did not start.
    let started: Vec<&i64> = claims.iter().filter(|id| ran.contains(id)).collect();
    assert!(
        started.is_empty(),
        "the frozen replica started runs it had claimed before it was declared dead: \
         {started:?}\n{victim_log}"
    );
    assert!(
        victim_log.contains("claimed run not started"),
        "the skipped claims are not logged:\n{victim_log}"
    );
    // Nothing of the freeze window ran on the frozen replica afterwards.
    let late: Vec<_> = rows
        .iter()
        .filter(|r| r.5 == pid && r.2 > stopped_ms && r.2 < cont_ms && ran.contains(&r.0))
        .collect();
    assert!(
        late.is_empty(),
        "the frozen replica ran ticks due while it was frozen: {late:?}\n{victim_log}"
    );
    // No claim key executed twice (a catch-up's key is its tick plus 1 ms: counted with its
    // tick), and every execution has its row.
    let by_id: HashMap<i64, _> = rows.iter().map(|r| (r.0, r)).collect();
    let mut per_tick: HashMap<(&str, i64), Vec<i64>> = HashMap::new();
    for id in &executed {
        let r = by_id
            .get(id)
            .unwrap_or_else(|| panic!("run {id} executed without a row"));
        per_tick
            .entry((r.1.as_str(), r.2 - r.2.rem_euclid(1000)))
            .or_default()
            .push(*id);
    }
    let twice: Vec<_> = per_tick.iter().filter(|(_, ids)| ids.len() > 1).collect();
    assert!(twice.is_empty(), "ticks executed twice: {twice:?}");
    // misfire: run_once: at most one catch-up per job for the freeze.
    let mut catch_ups: BTreeMap<&str, usize> = BTreeMap::new();
    for r in rows
        .iter()
        .filter(|r| r.3 == "catch_up" && ran.contains(&r.0))
    {
        *catch_ups.entry(r.1.as_str()).or_default() += 1;
    }
    let twice: Vec<_> = catch_ups.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "jobs caught up more than once: {twice:?}");
    eprintln!(
        "froze pid {pid} with {} claims ahead; {} runs executed, catch-ups {catch_ups:?}",
        claims.len(),
        executed.len()
    );
}

/// Issue 22: a replica started late takes its share of the jobs at once (the rendezvous set
/// is recomputed when it joins: it claims its share as soon as its scheduler runs, and the
/// others leave those jobs to it at their next sweep), with no tick lost or doubled during
/// the handover: every tick of every job from the join on ran exactly once (`misfire: skip`,
/// so a gap would show), counted from what the jobs executed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_started_late_takes_its_share_without_a_gap_or_a_double() {
    const JOBS: usize = 20;
    let db = TestDb::create().await;
    let dir = tempfile::tempdir().unwrap();
    exec_jobs(dir.path(), JOBS, "0", "misfire: skip\n");
    let mut replicas = vec![
        replica(dir.path(), &db, "a", &[]),
        replica(dir.path(), &db, "b", &[]),
    ];
    let pool = pool(&db).await;
    let both = eventually(Duration::from_secs(30), || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT COUNT(DISTINCT owner_pid) FROM job_runs WHERE status = 'succeeded' \
             AND started_at > (EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT - 1500",
        )
        .fetch_one(&pool)
        .await
        .is_ok_and(|n| n == 2)
    })
    .await;
    assert!(both, "the two replicas do not both run jobs");
    tokio::time::sleep(Duration::from_secs(2)).await;
    let join_ms = server_ms(&pool).await;
    replicas.push(replica(dir.path(), &db, "c", &[]));
    let late_pid = i64::from(replicas[2].id());
    tokio::time::sleep(Duration::from_secs(8)).await;
    let end_ms = server_ms(&pool).await;
    for r in &mut replicas {
        assert_eq!(stop(r, Duration::from_secs(30)).await, Some(0));
    }
    let rows = all_runs(&pool).await;
    let joined: Option<i64> = sqlx::query_scalar(
        "SELECT MIN(started_at) FROM job_runs WHERE owner_pid = $1 AND status = 'succeeded'",
    )
    .bind(late_pid)
    .fetch_one(&pool)
    .await
    .unwrap();
    pool.close().await;
    let first_run = joined.expect("the late replica ran nothing");

    let executed = executed(dir.path());
    let by_id: HashMap<i64, _> = rows.iter().map(|r| (r.0, r)).collect();
    let mut per_tick: HashMap<(String, i64), Vec<(i64, i64)>> = HashMap::new();
    for id in &executed {
        let r = by_id
            .get(id)
            .unwrap_or_else(|| panic!("run {id} executed without a row"));
        per_tick
            .entry((r.1.clone(), r.2 - r.2.rem_euclid(1000)))
            .or_default()
            .push((*id, r.5));
    }
    let twice: Vec<_> = per_tick.iter().filter(|(_, ids)| ids.len() > 1).collect();
    assert!(twice.is_empty(), "ticks executed twice: {twice:?}");
    // Every tick from the join (rounded up) to 2 s before the stop ran once.
    let first = join_ms - join_ms.rem_euclid(1000) + 1000;
    let last = end_ms - end_ms.rem_euclid(1000) - 2000;
    let mut missing = Vec::new();
    for n in 0..JOBS {
        let job = format!("j{n:02}");
        for t in (first..=last).step_by(1000) {
            if !per_tick.contains_key(&(job.clone(), t)) {
                missing.push((job.clone(), t));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "ticks nobody ran during the join: {missing:?}"
    );
    // The last 3 s: each job on one replica, and the late one holds a share.
    let mut owners: BTreeMap<String, BTreeSet<i64>> = BTreeMap::new();
    for ((job, t), runs) in &per_tick {
        if *t > last - 3000 && *t <= last {
            owners
                .entry(job.clone())
                .or_default()
                .extend(runs.iter().map(|r| r.1));
        }
    }
    let moving: Vec<_> = owners.iter().filter(|(_, p)| p.len() > 1).collect();
    assert!(
        moving.is_empty(),
        "jobs still moving 5 s after the join: {moving:?}"
    );
    let mut share: BTreeMap<i64, usize> = BTreeMap::new();
    for pids in owners.values() {
        *share.entry(*pids.first().unwrap()).or_default() += 1;
    }
    assert_eq!(share.len(), 3, "jobs per replica pid: {share:?}");
    eprintln!(
        "jobs per replica pid after the join: {share:?} (late replica {late_pid}); its first \
         run started {} ms after it was spawned",
        first_run - join_ms
    );
}
