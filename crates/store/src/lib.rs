//! soarjobd-store: the backends of the core's store traits (`soarjobd_core::store`).
//!
//! [`SqliteStore`] (the default: one daemon per database file, with its [`DaemonLock`] and
//! run owner records) and [`PgStore`] (several replicas on one database: run leases, node
//! heartbeats, takeover), their schemas (this crate's `migrations/<backend>/`, embedded at
//! compile time), [`migrate_state()`] (SQLite -> PostgreSQL), and `contract`: the behaviours
//! every backend keeps, run against both here and offered to other backends behind the
//! feature `store-contract`. [`open`] picks the backend a database URL names. The modules
//! are private: what other crates use is re-exported here (and `testdb`, a throw-away
//! PostgreSQL database per test, behind the feature `test-db`).
//!
//! Only the composition root (and the engine's daemon, which opens its own store) depend on
//! this crate: the clients and the jobs never build a database driver.

#[cfg(any(test, feature = "store-contract"))]
pub mod contract;
mod lock;
mod migrate_state;
mod owner;
mod postgres;
mod rows;
mod sqlite;

// The surface other crates use; the modules stay private.
pub use lock::{DaemonLock, LockError};
pub use migrate_state::{Copied, MigrateStateError, migrate_state};
pub use postgres::PgStore;
#[cfg(any(test, feature = "test-db"))]
pub use postgres::testdb;
pub use soarjobd_core::store::RunOwner;
pub use sqlite::{SqliteStore, database_path};

use std::sync::Arc;

// The core's store traits, row types and errors, which every module below implements or
// returns: in scope for them (`super::RunStore`), not re-exported.
use soarjobd_core::store::*;

/// An error of the driver as the core's [`StoreError::Db`] (the core names no driver, so the
/// conversion `?` would make lives here: `.map_err(db)?`, or [`Db::db`]).
pub(crate) fn db(e: sqlx::Error) -> StoreError {
    StoreError::Db(Box::new(e))
}

/// `?` for driver results: `query.execute(..).await.db()?`.
pub(crate) trait Db<T> {
    fn db(self) -> StoreResult<T>;
}

impl<T> Db<T> for Result<T, sqlx::Error> {
    fn db(self) -> StoreResult<T> {
        self.map_err(db)
    }
}

impl<T> Db<T> for StoreResult<T> {
    fn db(self) -> StoreResult<T> {
        self
    }
}

/// Maps a migration error, telling a schema newer than this build apart.
pub(crate) fn from_migrate(e: sqlx::migrate::MigrateError) -> StoreError {
    match e {
        sqlx::migrate::MigrateError::VersionMissing(version) => {
            StoreError::SchemaTooNew { version }
        }
        e => StoreError::Migrate(Box::new(e)),
    }
}

/// Takes the one-daemon-per-database lock (see [`lock`]) for a database URL. `None` for
/// PostgreSQL, where several daemons (replicas) share one database by design.
pub fn lock_daemon(url: &str) -> Result<Option<DaemonLock>, LockError> {
    if is_postgres_url(url) {
        return Ok(None);
    }
    let path = sqlite::database_path(url).map_err(|e| LockError::Io {
        path: url.into(),
        source: std::io::Error::other(e.to_string()),
    })?;
    DaemonLock::acquire(&path).map(Some)
}

/// Opens the store a database URL names (`sqlite:PATH` or `postgres://...`), as a client.
pub async fn open(url: &str) -> StoreResult<Arc<dyn Store>> {
    open_with(url, &OpenOptions::default()).await
}

/// [`open`] with the cluster options (the daemon: its role and `cluster.*` settings).
pub async fn open_with(url: &str, options: &OpenOptions) -> StoreResult<Arc<dyn Store>> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(sqlite::SqliteStore::open(url).await?))
    } else if is_postgres_url(url) {
        Ok(Arc::new(postgres::PgStore::open(url, options).await?))
    } else {
        Err(StoreError::UnsupportedUrl(url.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::DateTime;
    use soarjobd_core::store::{NewRun, RunProcess, RunProcessLog, RunStatus, RunStore, Trigger};
    use std::sync::Arc;

    /// A job's process record handle reaches only its own run.
    #[tokio::test]
    async fn a_run_process_log_records_only_its_own_run() {
        let dir = tempfile::tempdir().expect("tempdir");
        let url = format!("sqlite:{}", dir.path().join("s.db").display());
        let store = open(&url).await.expect("open");
        let now = DateTime::from_timestamp(1_000, 0).expect("instant");
        let run = |job: &str| NewRun {
            job_id: job.into(),
            scheduled_at: now,
            trigger: Trigger::Schedule,
            status: RunStatus::Running,
            started_at: now,
            message: None,
        };
        let ids = store
            .claim_runs(&[run("a"), run("b")])
            .await
            .expect("claim");
        let (a, b) = (ids[0].expect("a"), ids[1].expect("b"));
        let record = |run_id| RunProcess {
            run_id,
            host: "h".into(),
            boot_id: "boot".into(),
            owner_pid: 1,
            owner_start_ticks: 2,
            pgid: None,
            leader_start_ticks: None,
            token: "t".into(),
            cgroup: None,
            recorded_at: now,
        };
        let runs: Arc<dyn RunStore> = store.clone();
        let log = RunProcessLog::new(runs, a);
        log.record(&record(a)).await.expect("own run");
        assert!(matches!(
            log.record(&record(b)).await,
            Err(StoreError::NoSuchRun(id)) if id == b
        ));
        let listed: Vec<i64> = store
            .run_processes()
            .await
            .expect("list")
            .iter()
            .map(|p| p.run_id)
            .collect();
        assert_eq!(listed, [a]);
        assert!(log.forget().await.expect("forget"));
        assert!(store.run_processes().await.expect("list").is_empty());
        store.close().await;
    }

    /// `check` validates the URL with `config::check_database_url`; `run` opens the store. They must
    /// agree on every URL.
    #[tokio::test]
    async fn database_url_check_agrees_with_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().display();
        let urls = [
            format!("sqlite:{p}/a.db"),
            format!("sqlite://{p}/b.db"),
            "sqlite::memory:".to_string(),
            "sqlite://:memory:".to_string(),
            format!("sqlite:{p}/c.db?mode=ro"),
            format!("sqlite://{p}/d.db?cache=shared"),
            "sqlite:".to_string(),
            "sqlite://".to_string(),
            "mysql://u:p@h/db".to_string(),
        ];
        for url in &urls {
            let checked = soarjobd_core::config::check_database_url(url).is_ok();
            let opened = match open(url).await {
                Ok(s) => {
                    s.close().await;
                    true
                }
                Err(StoreError::UnsupportedUrl(_)) => false,
                Err(e) => panic!("{url}: unexpected store error {e}"),
            };
            assert_eq!(
                checked, opened,
                "{url}: check says {checked}, run says {opened}"
            );
        }
    }
}
