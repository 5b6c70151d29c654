//! Token buckets against credential guessing: one per client, one for the login form as a
//! whole.
//!
//! A request that presents a credential takes a token from its client's bucket (and, for the
//! login form, from the global one) *before* the credential is checked, and gives it back
//! unless it was refused with 401: guesses are limited, while a valid token or session costs
//! nothing in the long run. Taking first matters: a limiter that only counted failures would
//! let a guesser keep going and recognise the one answer that is not 429.
//!
//! The global bucket covers the login form only: a flood from many addresses can then make
//! the form answer 429 for everyone for a while, but never a bearer-token client such as
//! Prometheus (whose own address keeps its own bucket). Clients are keyed by IPv4 address or
//! IPv6 /64 (one host usually holds a whole /64). Behind a proxy every client is the proxy.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// A client may try this many credentials in a burst...
pub const PER_CLIENT_BURST: f64 = 10.0;
/// ...then one every this long.
pub const PER_CLIENT_EVERY: Duration = Duration::from_secs(6);
/// The login form takes this many attempts in a burst from all clients together...
pub const LOGIN_BURST: f64 = 100.0;
/// ...then one every this long.
pub const LOGIN_EVERY: Duration = Duration::from_secs(1);
/// The most clients tracked; beyond it, new clients share one bucket (full buckets are
/// forgotten first: a full bucket is the same as none).
const MAX_CLIENTS: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(burst: f64, now: Instant) -> Bucket {
        Bucket {
            tokens: burst,
            at: now,
        }
    }

    fn refill(&mut self, burst: f64, every: Duration, now: Instant) {
        let earned = now.saturating_duration_since(self.at).as_secs_f64() / every.as_secs_f64();
        self.tokens = (self.tokens + earned).min(burst);
        self.at = now;
    }

    /// How long until one token is there (zero when one is).
    fn wait(&self, every: Duration) -> Duration {
        if self.tokens >= 1.0 {
            Duration::ZERO
        } else {
            every.mul_f64(1.0 - self.tokens)
        }
    }
}

struct State {
    clients: HashMap<IpAddr, Bucket>,
    login: Bucket,
}

/// The buckets. One std mutex: each call holds it for a map lookup, never across an await.
pub struct Limiter {
    state: Mutex<State>,
}

impl Default for Limiter {
    fn default() -> Limiter {
        Limiter::new(Instant::now())
    }
}

/// The key of a client: its IPv4 address, or its IPv6 /64.
fn key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6([s[0], s[1], s[2], s[3], 0, 0, 0, 0].into())
            }
        },
    }
}

impl Limiter {
    pub fn new(now: Instant) -> Limiter {
        Limiter {
            state: Mutex::new(State {
                clients: HashMap::new(),
                login: Bucket::full(LOGIN_BURST, now),
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes a token for an attempt by `ip` (`login`: the login form), or says how long to
    /// wait for one. Nothing is taken when either bucket is empty.
    pub fn take(&self, ip: IpAddr, login: bool, now: Instant) -> Result<(), Duration> {
        let mut st = self.state();
        let State {
            clients,
            login: global,
        } = &mut *st;
        let mut k = key(ip);
        if !clients.contains_key(&k) && clients.len() >= MAX_CLIENTS {
            clients.retain(|_, b| {
                b.refill(PER_CLIENT_BURST, PER_CLIENT_EVERY, now);
                b.tokens < PER_CLIENT_BURST
            });
            if clients.len() >= MAX_CLIENTS {
                k = IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED);
            }
        }
        let client = clients
            .entry(k)
            .or_insert_with(|| Bucket::full(PER_CLIENT_BURST, now));
        client.refill(PER_CLIENT_BURST, PER_CLIENT_EVERY, now);
        let mut wait = client.wait(PER_CLIENT_EVERY);
        if login {
            global.refill(LOGIN_BURST, LOGIN_EVERY, now);
            wait = wait.max(global.wait(LOGIN_EVERY));
        }
        if !wait.is_zero() {
            return Err(wait);
        }
        client.tokens -= 1.0;
        if login {
            global.tokens -= 1.0;
        }
        Ok(())
    }

    /// Gives back the token of an attempt that was not refused with 401.
    pub fn give_back(&self, ip: IpAddr, login: bool, now: Instant) {
        let mut st = self.state();
        let State {
            clients,
            login: global,
        } = &mut *st;
        let k = key(ip);
        let k = if clients.contains_key(&k) {
            k
        } else {
            IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED)
        };
        if let Some(b) = clients.get_mut(&k) {
            b.refill(PER_CLIENT_BURST, PER_CLIENT_EVERY, now);
            b.tokens = (b.tokens + 1.0).min(PER_CLIENT_BURST);
        }
        if login {
            global.refill(LOGIN_BURST, LOGIN_EVERY, now);
            global.tokens = (global.tokens + 1.0).min(LOGIN_BURST);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_client_gets_a_burst_then_one_attempt_per_interval() {
        let t0 = Instant::now();
        let l = Limiter::new(t0);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        for _ in 0..10 {
            l.take(ip, true, t0).unwrap();
        }
        let wait = l.take(ip, true, t0).unwrap_err();
        assert_eq!(wait, PER_CLIENT_EVERY);
        // Another client is not affected; the same one after the interval is.
        l.take("10.0.0.2".parse().unwrap(), true, t0).unwrap();
        l.take(ip, true, t0 + PER_CLIENT_EVERY).unwrap();
        assert!(l.take(ip, true, t0 + PER_CLIENT_EVERY).is_err());
        // A success gives its token back.
        l.give_back(ip, true, t0 + PER_CLIENT_EVERY);
        l.take(ip, true, t0 + PER_CLIENT_EVERY).unwrap();
    }

    #[test]
    fn the_login_form_has_a_global_bucket_and_ipv6_clients_are_their_64() {
        let t0 = Instant::now();
        let l = Limiter::new(t0);
        let mut refused = 0;
        for i in 0..200u32 {
            let ip = IpAddr::V4(i.to_be_bytes().into());
            if l.take(ip, true, t0).is_err() {
                refused += 1;
            }
        }
        assert_eq!(refused, 100);
        // Bearer attempts (not the form) do not use the global bucket.
        l.take("10.9.9.9".parse().unwrap(), false, t0).unwrap();
        let a: IpAddr = "2001:db8::1".parse().unwrap();
        let b: IpAddr = "2001:db8::ffff:2".parse().unwrap();
        for _ in 0..10 {
            l.take(a, false, t0).unwrap();
        }
        assert!(l.take(b, false, t0).is_err());
    }
}
