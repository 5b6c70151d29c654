//! Where the scheduler and the runner get the time from.
//!
//! [`RealClock`] is the wall clock: `now` is `Utc::now()`, [`Clock::sleep_until`] wakes through
//! the precise timer thread ([`crate::timer`]), and [`Clock::sleep`] is a monotonic tokio
//! sleep (run timeouts and grace periods must not stretch or shrink when the wall clock is
//! stepped). [`VirtualClock`] is the clock of tests: its time moves only when the test says so,
//! so schedules, misfires, overlaps, timeouts and shutdowns that span hours run in
//! milliseconds of real time, and deterministically.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::oneshot;

use crate::timer::PreciseTimer;

/// A boxed sleep.
pub type Sleep<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// A source of time and of wake-ups.
pub trait Clock: Send + Sync + 'static {
    /// The current instant.
    fn now(&self) -> DateTime<Utc>;

    /// Resolves once [`Clock::now`] has reached `deadline` (or, rarely, a little earlier:
    /// callers re-read the clock after waking). Dropping the future cancels the sleep.
    fn sleep_until(&self, deadline: DateTime<Utc>) -> Sleep<'_>;

    /// Resolves after `duration` of this clock's time.
    fn sleep(&self, duration: Duration) -> Sleep<'_> {
        let deadline =
            self.now() + chrono::Duration::from_std(duration).unwrap_or(chrono::TimeDelta::MAX);
        self.sleep_until(deadline)
    }
}

/// The wall clock, with sub-millisecond wake-ups from the precise timer thread.
#[derive(Default)]
pub struct RealClock {
    /// Started at the first `sleep_until` (a clock that never sleeps costs no thread).
    timer: OnceLock<Option<PreciseTimer>>,
    /// The precise timer has one deadline at a time (the scheduler loop's wake-up). A second
    /// concurrent `sleep_until` must not replace it, so it uses tokio's timer instead.
    precise_busy: AtomicBool,
}

impl RealClock {
    pub fn new() -> RealClock {
        RealClock::default()
    }

    fn timer(&self) -> Option<&PreciseTimer> {
        self.timer
            .get_or_init(|| match PreciseTimer::new() {
                Ok(t) => Some(t),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot start the timer thread; ticks use tokio's timer (about 1 ms later)");
                    None
                }
            })
            .as_ref()
    }
}

/// Releases [`RealClock::precise_busy`] when the precise sleep ends or is dropped.
struct BusyGuard<'a>(&'a AtomicBool);

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl Clock for RealClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }

    fn sleep_until(&self, deadline: DateTime<Utc>) -> Sleep<'_> {
        // The wall-clock distance, slept on the monotonic clock; the scheduler caps its sleeps
        // (MAX_SLEEP) so that a wall-clock step is noticed.
        let left = (deadline - Utc::now()).to_std().unwrap_or(Duration::ZERO);
        let at = std::time::Instant::now() + left;
        Box::pin(async move {
            if let Some(timer) = self.timer()
                && self
                    .precise_busy
                    .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            {
                let _busy = BusyGuard(&self.precise_busy);
                timer.sleep_until(at).await;
            } else {
                tokio::time::sleep_until(at.into()).await;
            }
        })
    }

    fn sleep(&self, duration: Duration) -> Sleep<'_> {
        Box::pin(tokio::time::sleep(duration))
    }
}

/// A clock for tests: it starts at a given instant and moves only through
/// [`VirtualClock::advance`] / [`VirtualClock::advance_to_next`]. It knows who sleeps until
/// when, so a test can wait until every task it drives is asleep (`wait_for_sleepers`) before
/// moving time on: then nothing can observe an instant out of order.
pub struct VirtualClock {
    state: Mutex<VState>,
    changed: tokio::sync::Notify,
}

struct VState {
    now: DateTime<Utc>,
    next_id: u64,
    sleepers: BTreeMap<(DateTime<Utc>, u64), oneshot::Sender<()>>,
}

impl VirtualClock {
    pub fn new(start: DateTime<Utc>) -> Arc<VirtualClock> {
        Arc::new(VirtualClock {
            state: Mutex::new(VState {
                now: start,
                next_id: 0,
                sleepers: BTreeMap::new(),
            }),
            changed: tokio::sync::Notify::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Moves time to `to` (never backwards) and wakes every sleeper whose deadline passed.
    pub fn advance_to(&self, to: DateTime<Utc>) {
        let mut st = self.lock();
        if to > st.now {
            st.now = to;
        }
        let now = st.now;
        // Sleepers are keyed by deadline: everything up to `now` is at the front.
        while let Some(entry) = st.sleepers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let _ = entry.remove().send(());
        }
        drop(st);
        self.changed.notify_waiters();
    }

    /// Moves time on by `by`.
    pub fn advance(&self, by: Duration) {
        let to = self.lock().now + chrono::Duration::from_std(by).unwrap_or(chrono::TimeDelta::MAX);
        self.advance_to(to);
    }

    /// Moves time to the earliest sleeper's deadline and wakes it; returns that instant.
    pub fn advance_to_next(&self) -> Option<DateTime<Utc>> {
        let next = self.next_deadline()?;
        self.advance_to(next);
        Some(next)
    }

    /// The earliest deadline anyone sleeps until.
    pub fn next_deadline(&self) -> Option<DateTime<Utc>> {
        self.lock().sleepers.keys().next().map(|(d, _)| *d)
    }

    /// How many sleeps are pending.
    pub fn sleepers(&self) -> usize {
        self.lock().sleepers.len()
    }

    /// Waits (in real time, at most `limit`) until exactly `n` sleeps are pending, so the
    /// tasks a test drives have done everything they can at the current instant. Returns false
    /// on timeout.
    pub async fn wait_for_sleepers(&self, n: usize, limit: Duration) -> bool {
        let give_up = tokio::time::Instant::now() + limit;
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.sleepers() == n {
                return true;
            }
            // Registrations notify; a sleep that ends by being dropped notifies too. The short
            // poll covers nothing but is a backstop against a missed wake-up.
            if tokio::time::timeout_at(
                give_up.min(tokio::time::Instant::now() + Duration::from_millis(5)),
                changed,
            )
            .await
            .is_err()
                && tokio::time::Instant::now() >= give_up
            {
                return self.sleepers() == n;
            }
        }
    }
}

/// Deregisters a virtual sleep when it is dropped before its deadline.
struct VSleep {
    clock: Arc<VirtualClock>,
    key: (DateTime<Utc>, u64),
}

impl Drop for VSleep {
    fn drop(&mut self) {
        let removed = self.clock.lock().sleepers.remove(&self.key).is_some();
        if removed {
            self.clock.changed.notify_waiters();
        }
    }
}

/// The handle the daemon's parts hold: `Arc<VirtualClock>` as a [`Clock`].
impl Clock for Arc<VirtualClock> {
    fn now(&self) -> DateTime<Utc> {
        self.lock().now
    }

    fn sleep_until(&self, deadline: DateTime<Utc>) -> Sleep<'_> {
        let (tx, rx) = oneshot::channel();
        let key = {
            let mut st = self.lock();
            if deadline <= st.now {
                return Box::pin(std::future::ready(()));
            }
            let key = (deadline, st.next_id);
            st.next_id += 1;
            st.sleepers.insert(key, tx);
            key
        };
        self.changed.notify_waiters();
        let guard = VSleep {
            clock: self.clone(),
            key,
        };
        Box::pin(async move {
            let _ = rx.await;
            drop(guard);
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(s, 0).expect("instant")
    }

    #[tokio::test]
    async fn virtual_sleeps_end_only_when_time_is_moved_past_them() {
        let clock = VirtualClock::new(at(1_000));
        let c = clock.clone();
        let woke = tokio::spawn(async move {
            c.sleep(Duration::from_secs(60)).await;
            c.now()
        });
        assert!(clock.wait_for_sleepers(1, Duration::from_secs(5)).await);
        clock.advance(Duration::from_secs(59));
        assert_eq!(clock.sleepers(), 1, "not yet");
        assert_eq!(clock.advance_to_next(), Some(at(1_060)));
        assert_eq!(woke.await.unwrap(), at(1_060));
        assert_eq!(clock.sleepers(), 0);
    }

    #[tokio::test]
    async fn a_dropped_virtual_sleep_is_forgotten_and_a_past_deadline_is_ready() {
        let clock = VirtualClock::new(at(1_000));
        let sleep = clock.sleep_until(at(2_000));
        assert_eq!(clock.sleepers(), 1);
        drop(sleep);
        assert_eq!(clock.sleepers(), 0);
        clock.sleep_until(at(999)).await;
        assert_eq!(clock.next_deadline(), None);
    }

    #[tokio::test]
    async fn the_real_clock_serves_concurrent_precise_sleeps() {
        let clock = RealClock::new();
        let deadline = Utc::now() + chrono::Duration::milliseconds(20);
        // Two at once: one on the timer thread, the other on tokio's timer; both end.
        tokio::time::timeout(Duration::from_secs(5), async {
            tokio::join!(clock.sleep_until(deadline), clock.sleep_until(deadline))
        })
        .await
        .expect("both sleeps ended");
    }
}
