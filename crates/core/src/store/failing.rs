//! Rate-limited logging of a store operation that keeps failing while the database is down.
//!
//! A background task (the sweep, the run-log writer, the alert evaluator) retries its work
//! every few hundred milliseconds; during an outage each attempt fails the same way. Like the
//! scheduler's `store still failing`, the first failure is logged at once, then at most once
//! per [`LOG_EVERY`] (with the count), and the recovery once.

use std::time::{Duration, Instant};

/// While an operation keeps failing, it is logged at most this often.
pub const LOG_EVERY: Duration = Duration::from_secs(60);

/// One operation's failure state; `what` is the log message of its failures.
#[derive(Debug)]
pub struct FailureLog {
    what: &'static str,
    failing: Option<Failing>,
}

#[derive(Debug)]
struct Failing {
    since: Instant,
    failures: u64,
    last_logged: Instant,
}

impl FailureLog {
    pub fn new(what: &'static str) -> FailureLog {
        FailureLog {
            what,
            failing: None,
        }
    }

    /// Whether the last attempt failed.
    pub fn is_failing(&self) -> bool {
        self.failing.is_some()
    }

    /// One failed attempt: logged at once if it is the first, else at most every
    /// [`LOG_EVERY`].
    pub fn failed(&mut self, error: &str) {
        let now = Instant::now();
        match &mut self.failing {
            None => {
                self.failing = Some(Failing {
                    since: now,
                    failures: 1,
                    last_logged: now,
                });
                tracing::warn!(error, "{}", self.what);
            }
            Some(f) => {
                f.failures += 1;
                if now.duration_since(f.last_logged) >= LOG_EVERY {
                    f.last_logged = now;
                    tracing::warn!(
                        error,
                        failures = f.failures,
                        failing_for_s = f.since.elapsed().as_secs(),
                        "{} (still failing)",
                        self.what
                    );
                }
            }
        }
    }

    /// One successful attempt: logs the recovery if it was failing.
    pub fn ok(&mut self) {
        if let Some(f) = self.failing.take() {
            tracing::info!(
                failures = f.failures,
                failed_for_ms = f.since.elapsed().as_millis() as u64,
                "{} (works again)",
                self.what
            );
        }
    }
}
