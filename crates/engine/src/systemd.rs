//! systemd's notify protocol (`Type=notify`): `READY=1` once the first schedule is loaded,
//! `WATCHDOG=1` while the scheduler loop's heartbeat is fresh, `STOPPING=1` at shutdown.
//!
//! Without `NOTIFY_SOCKET` (not under systemd, tests) every call is a no-op. The watchdog
//! pings come from this task, but only while the scheduler loop's heartbeat is fresh: a stuck
//! loop stops the pings and systemd restarts the service (`WatchdogSec` must exceed
//! [`soarjobd_core::heartbeat_limit`]).

use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

use soarjobd_core::{Status, heartbeat_limit};

/// Sends `READY=1` when the first schedule is loaded, then `WATCHDOG=1` at half the
/// watchdog interval while the heartbeat is fresh, until `shutdown`.
pub async fn notify_loop(status: Status, shutdown: CancellationToken) {
    tokio::select! {
        _ = shutdown.cancelled() => return,
        _ = status.scheduled() => {}
    }
    send(&[NotifyState::Ready]);
    let mut usec = 0u64;
    if !sd_notify::watchdog_enabled(false, &mut usec) || usec == 0 {
        return;
    }
    let every = Duration::from_micros(usec / 2);
    let mut warned = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        if status
            .heartbeat
            .fresh(chrono::Utc::now(), heartbeat_limit())
        {
            send(&[NotifyState::Watchdog]);
            warned = false;
        } else if !warned {
            warned = true;
            tracing::error!(
                limit_s = heartbeat_limit().as_secs(),
                "the scheduler loop has not turned in time; withholding the watchdog ping"
            );
        }
    }
}

/// Tells systemd the service is stopping.
pub fn stopping() {
    send(&[NotifyState::Stopping]);
}

fn send(state: &[NotifyState]) {
    if let Err(e) = sd_notify::notify(false, state) {
        tracing::warn!(error = %e, "cannot notify systemd");
    }
}
