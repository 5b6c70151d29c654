//! A wake-up source with sub-millisecond precision for the scheduler loop.
//!
//! tokio's timer wheel has a resolution of one millisecond and rounds deadlines up, and the
//! runtime's driver parks with a millisecond timeout, so a `sleep_until` wakes 1-2 ms after
//! its instant. That is most of a tick's lateness when nothing else is slow. This timer runs
//! one OS thread that waits on a condition variable with the exact deadline (a futex wait,
//! precise to tens of microseconds) and then wakes the async scheduler through a `Notify`.
//! Only the scheduler's one wake-up per fire instant goes through it (as `clock::RealClock`'s
//! `sleep_until`); everything else keeps using tokio's timers.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use tokio::sync::Notify;

#[derive(Default)]
struct State {
    deadline: Option<Instant>,
    shutdown: bool,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    fired: Notify,
}

/// The timer. Dropping it stops its thread.
pub struct PreciseTimer {
    shared: Arc<Shared>,
}

impl PreciseTimer {
    /// Starts the timer thread.
    pub fn new() -> std::io::Result<PreciseTimer> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            fired: Notify::new(),
        });
        let t = shared.clone();
        std::thread::Builder::new()
            .name("soarjobd-timer".into())
            .spawn(move || run(&t))?;
        Ok(PreciseTimer { shared })
    }

    /// Resolves at `deadline` (or, rarely, earlier: a wake-up left over from an abandoned
    /// sleep; callers re-check the clock, so an early wake-up only costs a loop turn).
    pub async fn sleep_until(&self, deadline: Instant) {
        let fired = self.shared.fired.notified();
        tokio::pin!(fired);
        // Register as a waiter before the thread can fire, so the wake-up is not lost.
        fired.as_mut().enable();
        {
            let mut st = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
            st.deadline = Some(deadline);
        }
        self.shared.changed.notify_one();
        fired.await;
    }
}

impl Drop for PreciseTimer {
    fn drop(&mut self) {
        self.shared
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .shutdown = true;
        self.shared.changed.notify_one();
    }
}

fn run(shared: &Shared) {
    let mut st = shared.state.lock().unwrap_or_else(|p| p.into_inner());
    loop {
        if st.shutdown {
            return;
        }
        match st.deadline {
            None => {
                st = shared.changed.wait(st).unwrap_or_else(|p| p.into_inner());
            }
            Some(d) => {
                let now = Instant::now();
                if now >= d {
                    st.deadline = None;
                    shared.fired.notify_one();
                    continue;
                }
                st = shared
                    .changed
                    .wait_timeout(st, d - now)
                    .map(|(g, _)| g)
                    .unwrap_or_else(|p| p.into_inner().0);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn wakes_at_the_deadline_not_before() {
        let timer = PreciseTimer::new().unwrap();
        for ms in [1u64, 5, 20] {
            let deadline = Instant::now() + Duration::from_millis(ms);
            timer.sleep_until(deadline).await;
            assert!(Instant::now() >= deadline, "woke before the deadline");
        }
    }

    #[tokio::test]
    async fn a_new_deadline_replaces_an_abandoned_one() {
        let timer = PreciseTimer::new().unwrap();
        // Abandon a long sleep, then a short one must still fire.
        let _ = tokio::time::timeout(
            Duration::from_millis(5),
            timer.sleep_until(Instant::now() + Duration::from_secs(3600)),
        )
        .await;
        let deadline = Instant::now() + Duration::from_millis(10);
        tokio::time::timeout(Duration::from_secs(5), timer.sleep_until(deadline))
            .await
            .expect("the timer fired");
    }
}
