//! Throw-away PostgreSQL databases for tests: each test gets a database of its own, created
//! on the test server and dropped when the handle is dropped (also when the test panics).
//!
//! The server is `SOARJOBD_TEST_PG` (an admin URL on a maintenance database), by default
//! `postgres://postgres@127.0.0.1:5432/postgres`: the server CI and `.ci/run` expect.

use sqlx::Connection;
use sqlx::postgres::PgConnection;

/// The admin URL of the test server.
pub fn server_url() -> String {
    std::env::var("SOARJOBD_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_string())
}

/// A database created for one test.
#[derive(Debug)]
pub struct TestDb {
    name: String,
    url: String,
}

impl TestDb {
    /// Creates `soarjobd_t_<random>`. Panics with a clear message when the server does not
    /// answer (tests on PostgreSQL need it; `.ci/run` checks it first).
    pub async fn create() -> TestDb {
        let admin = server_url();
        let name = format!("soarjobd_t_{}", uuid::Uuid::new_v4().simple());
        let mut conn = PgConnection::connect(&admin).await.unwrap_or_else(|e| {
            panic!("the PostgreSQL test server {admin} does not answer ({e}); start it or set SOARJOBD_TEST_PG")
        });
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .expect("create the test database");
        let _ = conn.close().await;
        let url = match admin.rfind('/') {
            Some(i) => format!("{}/{name}", &admin[..i]),
            None => panic!("SOARJOBD_TEST_PG must name a database: {admin}"),
        };
        TestDb { name, url }
    }

    /// The URL of this database.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The database's name (for fault tests: `ALTER DATABASE`, `pg_terminate_backend`).
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Drop for TestDb {
    /// Drops the database from a thread of its own (this may run inside a runtime, or while
    /// a test panics), forcing off connections a test left open.
    fn drop(&mut self) {
        let name = self.name.clone();
        let admin = server_url();
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            rt.block_on(async {
                let mut conn = PgConnection::connect(&admin).await.ok()?;
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&mut conn)
                .await
                .ok()?;
                conn.close().await.ok()
            })
        })
        .join();
        if !matches!(dropped, Ok(Some(()))) {
            eprintln!("could not drop the test database {}", self.name);
        }
    }
}
