//! This handle's node: its row in `nodes`, the heartbeat that keeps it alive, and what
//! happens when another replica declared it dead.
//!
//! Liveness is judged on the database server's clock (`NOW_MS`), never a replica's: two hosts
//! whose clocks disagree still agree on which heartbeats are fresh.

use std::sync::Weak;
use std::sync::atomic::Ordering;
use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::{Inner, NOW_MS};
use crate::Db;
use soarjobd_core::store::{ClusterEvent, StoreResult};

/// Inserts a node row for this process and returns its id and its registration instant
/// (the server's clock, unix ms).
pub(super) async fn register(
    pool: &PgPool,
    host: &str,
    pid: i64,
    role: &str,
) -> StoreResult<(i64, i64)> {
    let row: (i64, i64) = sqlx::query_as(concat!(
        "INSERT INTO nodes (host, pid, version, role, started_at, heartbeat_at) \
         VALUES ($1, $2, $3, $4, ",
        NOW_MS!(),
        ", ",
        NOW_MS!(),
        ") RETURNING id, started_at"
    ))
    .bind(host)
    .bind(pid)
    .bind(env!("CARGO_PKG_VERSION"))
    .bind(role)
    .fetch_one(pool)
    .await
    .db()?;
    Ok(row)
}

impl Inner {
    /// Registers again after finding this node's row gone (another replica found its heartbeat
    /// too old, deleted it and interrupted its runs in the same transaction). Every lease this
    /// handle held is void: the runs still going here are told to stop, and their writes are
    /// refused by their fencing tokens. Does nothing if another caller already re-registered
    /// since `old` was read.
    pub(super) async fn reregister(&self, old: i64) -> StoreResult<i64> {
        let _one = self.reregistering.lock().await;
        let current = self.node.load(Ordering::SeqCst);
        if current != old {
            return Ok(current);
        }
        let (new, at) = register(&self.pool, &self.host, self.pid, self.node_role()).await?;
        self.reregistered_ms.store(at, Ordering::SeqCst);
        self.node.store(new, Ordering::SeqCst);
        // The jobs are spread again at once (this node's new id weighs differently): until
        // the next sweep the old membership would still count the dead id.
        if self.role == "daemon" {
            match super::read_members(&self.pool, self.dead_after_ms).await {
                Ok(nodes) => self.members.set(nodes),
                Err(e) => tracing::warn!(error = %e, "cannot read the live replicas"),
            }
        }
        // The leases stay in the map: they are void (the new owner interrupted their rows),
        // and keeping them is what lets a late finish be recognised and logged as fenced.
        let lost = self
            .leases
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        tracing::error!(
            old_node = old,
            new_node = new,
            runs = lost.len(),
            "this replica was declared dead by another one (its heartbeat was too old) and its \
             runs were taken over; registered again, cancelling the runs still going here"
        );
        let _ = self.events.send(ClusterEvent::LeaseLost {
            old_node: old,
            new_node: new,
        });
        Ok(new)
    }

    /// One heartbeat: refreshes the node row (re-registering if it is gone) and collects the
    /// cancel requests other replicas left for this node's runs.
    async fn beat(&self) -> StoreResult<()> {
        let me = self.node.load(Ordering::SeqCst);
        let updated = sqlx::query(concat!(
            "UPDATE nodes SET heartbeat_at = ",
            NOW_MS!(),
            ", role = $2 WHERE id = $1"
        ))
        .bind(me)
        .bind(self.node_role())
        .execute(&self.pool)
        .await
        .db()?
        .rows_affected();
        if updated == 0 {
            self.reregister(me).await?;
            return Ok(());
        }
        let cancel: Vec<i64> = sqlx::query_scalar(
            "UPDATE job_runs SET cancel_requested = FALSE \
             WHERE owner_node = $1 AND status = 'running' AND cancel_requested \
             RETURNING id",
        )
        .bind(me)
        .fetch_all(&self.pool)
        .await
        .db()?;
        if !cancel.is_empty() {
            let _ = self.events.send(ClusterEvent::CancelRequested(cancel));
        }
        Ok(())
    }
}

/// Beats every `every` until `stop` fires or the store is dropped (the task holds it
/// weakly: a store dropped without `close` stops heartbeating, and its node is declared dead
/// in time instead of looking alive for as long as the process lives). A failing database is
/// logged (once per outage), not fatal: if it lasts past `dead_after`, another replica takes
/// the runs over and the next successful beat finds the row gone.
pub(super) async fn heartbeat_loop(inner: Weak<Inner>, every: Duration, stop: CancellationToken) {
    let mut failing = false;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let beat = inner.beat().await;
        match &beat {
            Ok(()) => inner.db_ok(),
            Err(_) => inner.db_failed(),
        }
        match beat {
            Ok(()) if failing => {
                failing = false;
                tracing::info!("heartbeat written again");
            }
            Ok(()) => {}
            Err(e) if !failing => {
                failing = true;
                tracing::warn!(error = %soarjobd_core::error_chain(&e), "cannot write the heartbeat");
            }
            Err(_) => {}
        }
        if !failing {
            // Run ends that could not be written while the database was down.
            super::PgStore { inner }.retry_unrecorded().await;
        }
    }
}
