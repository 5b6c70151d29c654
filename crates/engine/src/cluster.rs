//! What a replica does about its membership in a cluster (PostgreSQL): the store's heartbeat
//! reports events, and this task acts on the runs in progress here.

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::runner::StopReason;
use crate::scheduler::RunningRuns;
use crate::store::ClusterEvent;

/// Follows the store's cluster events until shutdown:
///
/// * **lease lost** (another replica declared this one dead and took its runs over): every
///   run still going here is cancelled. Their rows are already `interrupted` by the new
///   owner, and whatever they still try to write is refused by fencing, so cancelling only
///   stops wasted (and possibly duplicated remote) work as early as possible.
/// * **cancel requested** (overlap `replace` on another replica): those runs are stopped as
///   replaced.
pub async fn follow_events(
    mut events: mpsc::UnboundedReceiver<ClusterEvent>,
    running: RunningRuns,
    shutdown: CancellationToken,
) {
    loop {
        let event = tokio::select! {
            _ = shutdown.cancelled() => return,
            e = events.recv() => match e {
                Some(e) => e,
                None => return,
            },
        };
        match event {
            ClusterEvent::LeaseLost { old_node, new_node } => {
                tracing::error!(
                    old_node,
                    new_node,
                    cancelled = running.len(),
                    "lease lost: cancelling the runs going here (another replica took them over)"
                );
                running.stop_all(StopReason::Shutdown);
            }
            ClusterEvent::CancelRequested(ids) => {
                for run_id in ids {
                    if running.stop_run(run_id, StopReason::Replaced) {
                        tracing::info!(
                            run_id,
                            "run cancelled at another replica's request (overlap: replace)"
                        );
                    }
                }
            }
        }
    }
}
