//! Fault injection shared by the simulators: adjustable delays, a requests-per-second limit,
//! a deterministic sequence of random faults, "the next N calls of an endpoint" scripts, and
//! the mechanics of answering with a fault (`Retry-After`, injected statuses, a slow reply
//! whose write still lands).
//!
//! Nothing here knows a wire format (invariant 5): each simulator decides the bodies it
//! answers with and the order in which its gate applies these knobs.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::rng::Rng;

/// Sleeps `ms` milliseconds (not at all for 0): added latency.
pub(crate) async fn sleep_ms(ms: u64) {
    if ms > 0 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

/// A delay in milliseconds that tests may change while the server runs (an atomic, so the
/// handlers read it without a lock).
#[derive(Debug)]
pub(crate) struct Delay(AtomicU64);

impl Delay {
    pub(crate) fn new(ms: u64) -> Delay {
        Delay(AtomicU64::new(ms))
    }

    pub(crate) fn set_ms(&self, ms: u64) {
        self.0.store(ms, Ordering::Relaxed);
    }

    pub(crate) fn get(&self) -> Duration {
        Duration::from_millis(self.0.load(Ordering::Relaxed))
    }

    /// Sleeps the current delay.
    pub(crate) async fn wait(&self) {
        sleep_ms(self.0.load(Ordering::Relaxed)).await;
    }
}

/// A requests-per-second limit: a token bucket holding at most one second of requests.
#[derive(Debug)]
pub(crate) struct RateLimit {
    /// `None` (or a configured 0): no limit.
    rate: Option<u32>,
    bucket: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    pub(crate) fn new(rate: Option<u32>) -> RateLimit {
        RateLimit {
            rate: rate.filter(|r| *r > 0),
            bucket: Mutex::new(Bucket {
                tokens: f64::from(rate.unwrap_or(0)),
                last: Instant::now(),
            }),
        }
    }

    /// Takes a token; `Some(wait)` when none is left.
    pub(crate) fn check(&self) -> Option<Duration> {
        let rate = f64::from(self.rate?);
        // A poisoned lock only means a handler panicked; the bucket is still usable.
        let mut b = self.bucket.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        b.tokens = (b.tokens + now.duration_since(b.last).as_secs_f64() * rate).min(rate);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            None
        } else {
            Some(Duration::from_secs_f64((1.0 - b.tokens) / rate))
        }
    }
}

/// A random fault.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Fault {
    /// `500`; for a write, `apply` says whether the write happened first.
    ServerError {
        apply: bool,
    },
    TooMany,
    Slow,
}

/// Random faults at a rate, from a deterministic sequence: the n-th roll depends only on the
/// seed and n, so a failing run can be replayed from its seed. The rate is an atomic (`f64`
/// bits), so tests can change it while the server runs.
#[derive(Debug)]
pub(crate) struct FaultDice {
    rate: AtomicU64,
    seed: u64,
    counter: AtomicU64,
}

impl FaultDice {
    /// `rate` is clamped to `0..=1`.
    pub(crate) fn new(rate: f64, seed: u64) -> FaultDice {
        FaultDice {
            rate: AtomicU64::new(rate.clamp(0.0, 1.0).to_bits()),
            seed,
            counter: AtomicU64::new(0),
        }
    }

    pub(crate) fn set_rate(&self, rate: f64) {
        self.rate
            .store(rate.clamp(0.0, 1.0).to_bits(), Ordering::Relaxed);
    }

    /// The fault for the next request, if any.
    pub(crate) fn roll(&self) -> Option<Fault> {
        let rate = f64::from_bits(self.rate.load(Ordering::Relaxed));
        if rate <= 0.0 {
            return None;
        }
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let mut rng = Rng::new(self.seed ^ n.wrapping_mul(0xD6E8_FEB8_6659_FD93));
        if !rng.chance(rate) {
            return None;
        }
        Some(match rng.below(3) {
            0 => Fault::ServerError {
                apply: rng.chance(0.5),
            },
            1 => Fault::TooMany,
            _ => Fault::Slow,
        })
    }
}

/// Something to do on the next calls of an endpoint (a canned answer, a slow reply): each
/// entry serves `times` calls (`None` = until cleared); the first entry added for an endpoint
/// serves first.
#[derive(Debug)]
pub(crate) struct NextCalls<T> {
    entries: Vec<(String, Option<u32>, T)>,
}

impl<T> Default for NextCalls<T> {
    fn default() -> NextCalls<T> {
        NextCalls {
            entries: Vec::new(),
        }
    }
}

impl<T: Clone> NextCalls<T> {
    pub(crate) fn push(&mut self, endpoint: String, times: Option<u32>, what: T) {
        self.entries.push((endpoint, times, what));
    }

    pub(crate) fn clear(&mut self) {
        self.entries.clear();
    }

    /// What the next call of `endpoint` gets, counting the call.
    pub(crate) fn take(&mut self, endpoint: &str) -> Option<T> {
        let i = self.entries.iter().position(|(e, _, _)| e == endpoint)?;
        let what = self.entries[i].2.clone();
        match &mut self.entries[i].1 {
            Some(1) => {
                self.entries.remove(i);
            }
            Some(n) => *n = n.saturating_sub(1),
            None => {}
        }
        Some(what)
    }
}

/// An injected status code; one `StatusCode` cannot hold is answered as `500`.
pub(crate) fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// `Retry-After` for a wait: whole seconds, rounded up, at least 1.
pub(crate) fn retry_after(wait: Duration) -> HeaderValue {
    let secs = wait.as_secs_f64().ceil().max(1.0) as u64;
    HeaderValue::from(secs)
}

/// `r` with a `Retry-After` header.
pub(crate) fn with_retry_after(mut r: Response, value: HeaderValue) -> Response {
    r.headers_mut().insert(header::RETRY_AFTER, value);
    r
}

/// Runs the rest of the request `delay` late. Spawned, so a write still lands when the client
/// gives up and disconnects: the server was slow, not dead (the "in doubt" case).
pub(crate) async fn slow(delay: Duration, req: Request, next: Next) -> Response {
    let task = tokio::spawn(async move {
        tokio::time::sleep(delay).await;
        next.run(req).await
    });
    task.await
        .unwrap_or_else(|_| (StatusCode::INTERNAL_SERVER_ERROR, "handler failed").into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_calls_serve_their_count_then_stop() {
        let mut n = NextCalls::default();
        n.push("A".into(), Some(2), 1);
        n.push("A".into(), None, 2);
        n.push("B".into(), Some(1), 3);
        assert_eq!(n.take("A"), Some(1));
        assert_eq!(n.take("A"), Some(1));
        // The first entry is used up; the second serves until cleared.
        assert_eq!(n.take("A"), Some(2));
        assert_eq!(n.take("A"), Some(2));
        assert_eq!(n.take("B"), Some(3));
        assert_eq!(n.take("B"), None);
        n.clear();
        assert_eq!(n.take("A"), None);
    }

    #[test]
    fn fault_dice_are_deterministic_and_respect_the_rate() {
        let rolls = |rate, seed| {
            let d = FaultDice::new(rate, seed);
            (0..200)
                .map(|_| format!("{:?}", d.roll()))
                .collect::<Vec<_>>()
        };
        assert_eq!(rolls(0.5, 7), rolls(0.5, 7));
        assert_ne!(rolls(0.5, 7), rolls(0.5, 8));
        assert!(rolls(0.0, 7).iter().all(|r| r == "None"));
        assert!(rolls(1.0, 7).iter().all(|r| r != "None"));
        // Out-of-range rates are clamped.
        assert!(rolls(3.0, 7).iter().all(|r| r != "None"));
    }

    #[test]
    fn rate_limit_runs_dry_and_says_how_long_to_wait() {
        assert_eq!(RateLimit::new(None).check(), None);
        assert_eq!(RateLimit::new(Some(0)).check(), None);
        // One request a second: the bucket starts full (one token) and refills slowly.
        let l = RateLimit::new(Some(1));
        assert_eq!(l.check(), None);
        let wait = l.check().expect("the bucket is empty");
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_secs(1),
            "{wait:?}"
        );
        assert_eq!(retry_after(wait), HeaderValue::from(1u64));
        assert_eq!(
            retry_after(Duration::from_millis(1500)),
            HeaderValue::from(2u64)
        );
    }
}
