//! The store contract on PostgreSQL (each test in a database of its own), and what only a
//! clustered backend does: migrations raced by several replicas, a schema newer than this
//! build, heartbeats and takeover, fencing.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::Utc;
use serde_json::json;

use super::testdb::TestDb;
use super::{MIGRATOR, PgStore};
use crate::contract::{self, Database, StoreFactory, at, finish, new_run};
use soarjobd_core::store::{
    ClusterEvent, JobStateStore, OpenOptions, RunStatus, RunStore, SeenState, Store, StoreError,
    Trigger,
};

struct PgDb(TestDb);

#[async_trait]
impl Database for PgDb {
    async fn open(&self) -> Arc<dyn Store> {
        Arc::new(
            PgStore::open(self.0.url(), &OpenOptions::default())
                .await
                .expect("open"),
        )
    }
}

struct Postgres;

#[async_trait]
impl StoreFactory for Postgres {
    async fn create(&self) -> Box<dyn Database> {
        Box::new(PgDb(TestDb::create().await))
    }
}

macro_rules! contract_tests {
    ($($name:ident),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            contract::$name(&Postgres).await;
        }
    )*};
}

contract::each_contract_test!(contract_tests);

fn fast() -> OpenOptions {
    OpenOptions {
        role: "daemon",
        heartbeat: Duration::from_millis(100),
        dead_after: Duration::from_millis(400),
    }
}

/// Eight replicas starting at once on an empty database: every one opens (the migrator's
/// advisory lock makes the others wait), and each migration is applied once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_starting_at_once_apply_migrations_once() {
    let db = TestDb::create().await;
    let options = OpenOptions::default();
    let opens = (0..8).map(|_| PgStore::open(db.url(), &options));
    let stores: Vec<PgStore> = futures::future::join_all(opens)
        .await
        .into_iter()
        .map(|r| r.expect("every replica opens"))
        .collect();
    let applied: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM _sqlx_migrations")
        .fetch_one(stores[0].pool())
        .await
        .expect("count");
    assert_eq!(applied, i64::try_from(MIGRATOR.iter().count()).unwrap());
    let nodes = stores[0].nodes().await.expect("nodes").expect("clustered");
    assert_eq!(nodes.len(), 8);
    for s in &stores {
        s.close().await;
    }
}

/// A database a newer soarjobd migrated refuses to open, with an error that says so, and
/// does not keep the migration lock (the next open fails the same way instead of hanging).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_newer_than_this_build_refuses_to_start() {
    let db = TestDb::create().await;
    let store = PgStore::open(db.url(), &OpenOptions::default())
        .await
        .expect("open");
    sqlx::query(
        "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
         VALUES (9999, 'from the future', TRUE, '\\x00', 1)",
    )
    .execute(store.pool())
    .await
    .expect("a future migration");
    store.close().await;
    for _ in 0..2 {
        let err = tokio::time::timeout(
            Duration::from_secs(30),
            PgStore::open(db.url(), &OpenOptions::default()),
        )
        .await
        .expect("no hang on the migration lock")
        .expect_err("newer schema");
        assert!(
            matches!(err, StoreError::SchemaTooNew { version: 9999 }),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("newer than this soarjobd"),
            "{err}"
        );
    }
}

/// A replica that stops heartbeating is declared dead by another: its running run becomes
/// `interrupted` (with the reason) and only that one sweeper gets it back; when the frozen
/// replica comes back, its finish and its state writes are refused by the fencing token, it
/// registers again under a new node id and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_replicas_runs_are_taken_over_and_its_late_writes_fenced() {
    let db = TestDb::create().await;
    let frozen = PgStore::open(db.url(), &fast()).await.expect("open");
    let mut events = frozen.cluster_events().expect("events");
    let live = PgStore::open(db.url(), &fast()).await.expect("open");
    let other = PgStore::open(db.url(), &fast()).await.expect("open");
    let old_node = frozen.node_id();

    let run = frozen
        .claim_runs(&[new_run("job-a", 1_000, Trigger::Schedule)])
        .await
        .unwrap()[0]
        .expect("claimed");
    let state = frozen.for_run(run).expect("a fenced view");
    state
        .set_timestamp("job-a", "timestamp", 1)
        .await
        .expect("while leased");
    state
        .seen_mark(
            "job-a",
            "cases",
            "c1",
            SeenState::Attempting,
            Some(run),
            at(2_000),
        )
        .await
        .expect("while leased");

    // Nothing is taken while the heartbeat is fresh.
    assert!(live.interrupt_running(Utc::now()).await.unwrap().is_empty());
    // Freeze it: its heartbeat stops, as under SIGSTOP.
    frozen.inner.stop.cancel();
    tokio::time::sleep(Duration::from_millis(900)).await;
    let (a, b) = tokio::join!(
        live.interrupt_running(Utc::now()),
        other.interrupt_running(Utc::now())
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(
        a.len() + b.len(),
        1,
        "exactly one replica takes the run: {a:?} {b:?}"
    );
    let taken = a.iter().chain(&b).next().unwrap();
    assert_eq!(taken.id, run);
    assert_eq!(taken.status, RunStatus::Interrupted);
    assert!(
        taken.message.as_deref().unwrap().contains("dead_after"),
        "{taken:?}"
    );

    // The new owner's work.
    live.set_timestamp("job-a", "timestamp", 2).await.unwrap();
    live.context_set("job-a", "cursor", &json!("new"))
        .await
        .unwrap();

    // The frozen replica comes back: every write on behalf of its run is refused.
    assert!(matches!(
        state.set_timestamp("job-a", "timestamp", 3).await,
        Err(StoreError::LeaseLost { run_id }) if run_id == run
    ));
    assert!(matches!(
        state.context_set("job-a", "cursor", &json!("old")).await,
        Err(StoreError::LeaseLost { .. })
    ));
    assert!(matches!(
        state
            .seen_mark(
                "job-a",
                "cases",
                "c1",
                SeenState::Done,
                Some(run),
                at(3_000)
            )
            .await,
        Err(StoreError::LeaseLost { .. })
    ));
    assert!(matches!(
        state.seen_remove("job-a", "cases", "c1").await,
        Err(StoreError::LeaseLost { .. })
    ));
    assert!(
        !frozen
            .finish_run(run, &finish(RunStatus::Succeeded, 5_000))
            .await
            .unwrap()
    );
    let row = live.run(run).await.unwrap().unwrap();
    assert_eq!(row.status, RunStatus::Interrupted);
    assert_eq!(
        live.get_timestamp("job-a", "timestamp").await.unwrap(),
        Some(2)
    );
    assert_eq!(
        live.context_get("job-a", "cursor").await.unwrap(),
        Some(json!("new"))
    );
    let seen = live
        .seen_get("job-a", "cases", "c1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seen.state, SeenState::Attempting);

    // Its next claim finds its node row gone: it registers again, and tells the daemon.
    let next = frozen
        .claim_runs(&[new_run("job-b", 9_000, Trigger::Schedule)])
        .await
        .unwrap();
    assert!(next[0].is_some());
    assert_ne!(frozen.node_id(), old_node);
    let event = tokio::time::timeout(Duration::from_secs(5), events.recv())
        .await
        .expect("an event")
        .expect("open channel");
    assert_eq!(
        event,
        ClusterEvent::LeaseLost {
            old_node,
            new_node: frozen.node_id()
        }
    );
    for s in [frozen, live, other] {
        s.close().await;
    }
}

/// A heartbeat that finds its node row gone registers again by itself (no claim needed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_heartbeat_notices_its_node_was_removed() {
    let db = TestDb::create().await;
    let store = PgStore::open(db.url(), &fast()).await.expect("open");
    let mut events = store.cluster_events().expect("events");
    let old = store.node_id();
    sqlx::query("DELETE FROM nodes WHERE id = $1")
        .bind(old)
        .execute(store.pool())
        .await
        .unwrap();
    let event = tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .expect("an event")
        .unwrap();
    assert!(matches!(event, ClusterEvent::LeaseLost { old_node, .. } if old_node == old));
    let nodes = store.nodes().await.unwrap().unwrap();
    assert_eq!(nodes.len(), 1);
    assert!(nodes[0].this && nodes[0].alive && nodes[0].id != old);
    store.close().await;
    // Closing removes the node: nothing waits for dead_after.
    let reader = PgStore::open(db.url(), &OpenOptions::default())
        .await
        .unwrap();
    let nodes = reader.nodes().await.unwrap().unwrap();
    assert_eq!(nodes.iter().filter(|n| !n.this).count(), 0);
    reader.close().await;
}

/// `replace` across replicas: a cancel request reaches the run's owner at its next heartbeat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_request_reaches_the_owner_within_a_heartbeat() {
    let db = TestDb::create().await;
    let owner = PgStore::open(db.url(), &fast()).await.expect("open");
    let mut events = owner.cluster_events().expect("events");
    let other = PgStore::open(db.url(), &fast()).await.expect("open");
    let run = owner
        .claim_runs(&[new_run("job-a", 1_000, Trigger::Schedule)])
        .await
        .unwrap()[0]
        .unwrap();
    assert!(other.request_cancel(run).await.unwrap());
    let event = tokio::time::timeout(Duration::from_secs(10), events.recv())
        .await
        .expect("an event")
        .unwrap();
    assert_eq!(event, ClusterEvent::CancelRequested(vec![run]));
    // A finished run cannot be asked any more.
    owner
        .finish_run(run, &finish(RunStatus::Cancelled, 2_000))
        .await
        .unwrap();
    assert!(!other.request_cancel(run).await.unwrap());
    owner.close().await;
    other.close().await;
}

/// Issue 22: a server that cannot be reached at all (nothing listens on the port) is
/// reported with its cause ("Connection refused") and the address, not as a pool timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_server_is_reported_with_its_cause() {
    // A port nothing listens on: bound, then released.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("postgres://soarjobd@127.0.0.1:{port}/nowhere");
    let Err(e) = PgStore::open(&url, &OpenOptions::default()).await else {
        panic!("a server that is not there cannot be opened");
    };
    let chain = soarjobd_core::error_chain(&e);
    assert!(
        chain.to_lowercase().contains("refused"),
        "the cause is said: {chain}"
    );
    assert!(
        chain.contains(&port.to_string()),
        "the address is said: {chain}"
    );
    assert!(!chain.contains("pool timed out"), "{chain}");
}
