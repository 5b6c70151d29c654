//! Who is calling: a bearer token (compared in constant time), or the status page's session.
//!
//! Without any token configured (allowed on a loopback bind only, see `config`) every caller
//! is the local operator. With tokens, a read-only call needs either token and a mutating call
//! the operator token: no token is 401, the read token on a mutating call 403.
//!
//! The login form exchanges a token for a session: a random id (256 bits) in an HttpOnly,
//! SameSite=Strict cookie (and `Secure` behind an HTTPS front), kept server-side with the role
//! it grants until it expires or the operator signs out. The token itself never travels in a
//! cookie, so a cookie that leaks (a proxy log, a backup of the browser profile) expires, and
//! signing out ends it. Sessions live in memory: a restart signs everyone out.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use axum::http::header::{AUTHORIZATION, COOKIE};
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

use crate::error::ApiError;

/// The session cookie the status page's login form sets.
pub const COOKIE_NAME: &str = "soarjobd_session";
/// The most sessions kept; a new one beyond it ends the oldest.
pub const MAX_SESSIONS: usize = 1024;

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Read,
    Operator,
}

/// An authenticated caller; `name` is what audit events record (never the token).
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    pub name: &'static str,
    pub role: Role,
}

/// The configured tokens.
#[derive(Clone, Default)]
pub struct Tokens {
    pub read: Option<SecretString>,
    pub operator: Option<SecretString>,
}

impl Tokens {
    /// True when calls must carry a token.
    pub fn required(&self) -> bool {
        self.read.is_some() || self.operator.is_some()
    }

    /// The caller a token typed into the login form stands for, if it is one of the tokens.
    pub fn login(&self, given: &str) -> Option<Caller> {
        self.by_token(given)
    }

    fn by_token(&self, given: &str) -> Option<Caller> {
        // Both comparisons always run, so the time taken does not tell which token matched.
        let op = matches(self.operator.as_ref(), given);
        let read = matches(self.read.as_ref(), given);
        if op {
            Some(Caller {
                name: "operator",
                role: Role::Operator,
            })
        } else if read {
            Some(Caller {
                name: "read",
                role: Role::Read,
            })
        } else {
            None
        }
    }
}

struct Session {
    caller: Caller,
    created: Instant,
    expires: Instant,
}

/// The status page's sessions, by id.
///
/// A std mutex around a map: each call holds it for a lookup or an insert, never across an
/// await. The ids are 256 random bits: a lookup's timing cannot be used to guess one (a
/// guesser would have to find a hash-map bucket's worth of matching bits per try).
pub struct Sessions {
    lifetime: Duration,
    map: Mutex<HashMap<String, Session>>,
}

impl Sessions {
    pub fn new(lifetime: Duration) -> Sessions {
        Sessions {
            lifetime,
            map: Mutex::default(),
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How long a session lasts.
    pub fn lifetime(&self) -> Duration {
        self.lifetime
    }

    /// Starts a session for `caller`; its id, for the cookie. Expired sessions are dropped
    /// first; with [`MAX_SESSIONS`] still open the oldest is ended.
    pub fn start(&self, caller: Caller, now: Instant) -> String {
        use rand::Rng;
        let bytes: [u8; 32] = rand::rng().random();
        let id: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        let mut map = self.map();
        if map.len() >= MAX_SESSIONS {
            map.retain(|_, s| s.expires > now);
        }
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map
                .iter()
                .min_by_key(|(_, s)| s.created)
                .map(|(k, _)| k.clone())
        {
            map.remove(&oldest);
        }
        map.insert(
            id.clone(),
            Session {
                caller,
                created: now,
                expires: now + self.lifetime,
            },
        );
        id
    }

    /// The caller of a live session.
    pub fn caller(&self, id: &str, now: Instant) -> Option<Caller> {
        let mut map = self.map();
        match map.get(id) {
            Some(s) if s.expires > now => Some(s.caller),
            Some(_) => {
                map.remove(id);
                None
            }
            None => None,
        }
    }

    /// Ends a session (signing out); true when there was one.
    pub fn end(&self, id: &str) -> bool {
        self.map().remove(id).is_some()
    }

    /// How many sessions are kept (expired ones not yet dropped included).
    pub fn len(&self) -> usize {
        self.map().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Tokens and sessions: who a request is.
pub struct Auth {
    pub tokens: Tokens,
    pub sessions: Sessions,
}

impl Auth {
    /// True when calls must carry a token or a session.
    pub fn required(&self) -> bool {
        self.tokens.required()
    }

    /// The caller of a request, or 401: its bearer token when it sends one (a wrong one is
    /// 401, whatever cookie comes with it), else its session cookie.
    pub fn caller(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        if !self.tokens.required() {
            return Ok(Caller {
                name: "local",
                role: Role::Operator,
            });
        }
        if let Some(given) = bearer(headers) {
            return self
                .tokens
                .by_token(&given)
                .ok_or_else(ApiError::unauthorized);
        }
        session_cookie(headers)
            .and_then(|id| self.sessions.caller(&id, Instant::now()))
            .ok_or_else(ApiError::unauthorized)
    }

    /// The caller, who must be an operator (401 without a valid token or session, 403 with
    /// the read token's).
    pub fn operator(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        let c = self.caller(headers)?;
        match c.role {
            Role::Operator => Ok(c),
            Role::Read => Err(ApiError::forbidden()),
        }
    }
}

fn matches(token: Option<&SecretString>, given: &str) -> bool {
    // `ct_eq` on slices of different lengths returns false at once: the length of a token is
    // not a secret worth hiding, its bytes are.
    token.is_some_and(|t| bool::from(t.expose_secret().as_bytes().ct_eq(given.as_bytes())))
}

/// The token of an `Authorization: Bearer` header (an `Authorization` of another scheme is
/// an empty token, so it is 401 rather than ignored).
fn bearer(headers: &HeaderMap) -> Option<String> {
    let v = headers.get(AUTHORIZATION)?;
    let v = v.to_str().unwrap_or("").trim();
    Some(
        v.strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
            .map_or_else(String::new, |t| t.trim().to_string()),
    )
}

/// The session id of the page's cookie, if the request carries one.
pub fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, v)| *k == COOKIE_NAME && !v.is_empty())
        .map(|(_, v)| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(AUTHORIZATION, auth.parse().unwrap());
        h
    }

    fn auth() -> Auth {
        Auth {
            tokens: Tokens {
                read: Some("r-token".to_string().into()),
                operator: Some("o-token".to_string().into()),
            },
            sessions: Sessions::new(Duration::from_secs(60)),
        }
    }

    fn cookie(v: &str) -> HeaderMap {
        let mut c = HeaderMap::new();
        c.insert(COOKIE, v.parse().unwrap());
        c
    }

    #[test]
    fn roles_by_token() {
        let t = auth();
        assert_eq!(
            t.caller(&headers("Bearer r-token")).unwrap().role,
            Role::Read
        );
        assert_eq!(
            t.operator(&headers("Bearer o-token")).unwrap().name,
            "operator"
        );
        assert_eq!(
            t.operator(&headers("Bearer r-token"))
                .unwrap_err()
                .status
                .as_u16(),
            403
        );
        for bad in ["Bearer nope", "Basic o-token", "Bearer "] {
            assert_eq!(t.caller(&headers(bad)).unwrap_err().status.as_u16(), 401);
        }
        assert_eq!(
            t.caller(&HeaderMap::new()).unwrap_err().status.as_u16(),
            401
        );
        let open = Auth {
            tokens: Tokens::default(),
            sessions: Sessions::new(Duration::from_secs(60)),
        };
        assert_eq!(open.operator(&HeaderMap::new()).unwrap().name, "local");
    }

    #[test]
    fn a_cookie_is_a_session_never_a_token() {
        let t = auth();
        // The raw token in a cookie (what the page used to set) is no credential.
        for old in ["soarjobd_token=o-token", "soarjobd_session=o-token"] {
            assert_eq!(t.caller(&cookie(old)).unwrap_err().status.as_u16(), 401);
        }
        let now = Instant::now();
        let op = t.tokens.login("o-token").unwrap();
        let id = t.sessions.start(op, now);
        assert_eq!(id.len(), 64);
        let c = cookie(&format!("a=b; {COOKIE_NAME}={id}"));
        assert_eq!(t.caller(&c).unwrap().role, Role::Operator);
        // A bearer token, when sent, decides (a wrong one is not rescued by the cookie).
        let mut both = c.clone();
        both.insert(AUTHORIZATION, "Bearer nope".parse().unwrap());
        assert!(t.caller(&both).is_err());
        // Signing out ends it; expiry ends it.
        assert!(t.sessions.end(&id));
        assert!(t.caller(&c).is_err());
        let id = t.sessions.start(op, now);
        assert!(
            t.sessions
                .caller(&id, now + Duration::from_secs(59))
                .is_some()
        );
        assert!(
            t.sessions
                .caller(&id, now + Duration::from_secs(60))
                .is_none()
        );
        assert!(t.tokens.login("nope").is_none());
    }

    #[test]
    fn sessions_are_bounded() {
        let s = Sessions::new(Duration::from_secs(60));
        let now = Instant::now();
        let c = Caller {
            name: "read",
            role: Role::Read,
        };
        let first = s.start(c, now);
        for i in 1..=MAX_SESSIONS {
            s.start(c, now + Duration::from_millis(i as u64));
        }
        assert_eq!(s.len(), MAX_SESSIONS);
        assert!(s.caller(&first, now).is_none(), "the oldest was ended");
    }
}
