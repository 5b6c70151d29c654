//! Who is calling: bearer tokens (or the status page's cookie holding one), compared in
//! constant time.
//!
//! Without any token configured (allowed on a loopback bind only, see `config`) every caller
//! is the local operator. With tokens, a read-only call needs either token and a mutating call
//! the operator token: no token is 401, the read token on a mutating call 403.

use axum::http::HeaderMap;
use axum::http::header::{AUTHORIZATION, COOKIE};
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

use crate::error::ApiError;

/// The cookie the status page's login form sets (HttpOnly, SameSite=Strict).
pub const COOKIE_NAME: &str = "soarjobd_token";

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

    /// The caller of a request, or 401.
    pub fn caller(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        if !self.required() {
            return Ok(Caller {
                name: "local",
                role: Role::Operator,
            });
        }
        let Some(given) = presented(headers) else {
            return Err(ApiError::unauthorized());
        };
        // Both comparisons always run, so the time taken does not tell which token matched.
        let op = matches(self.operator.as_ref(), &given);
        let read = matches(self.read.as_ref(), &given);
        if op {
            Ok(Caller {
                name: "operator",
                role: Role::Operator,
            })
        } else if read {
            Ok(Caller {
                name: "read",
                role: Role::Read,
            })
        } else {
            Err(ApiError::unauthorized())
        }
    }

    /// The caller, who must hold the operator token (401 without a valid token, 403 with the
    /// read token).
    pub fn operator(&self, headers: &HeaderMap) -> Result<Caller, ApiError> {
        let c = self.caller(headers)?;
        match c.role {
            Role::Operator => Ok(c),
            Role::Read => Err(ApiError::forbidden()),
        }
    }

    /// Checks a token typed into the login form; true when it is one of the tokens.
    pub fn accepts(&self, given: &str) -> bool {
        let op = matches(self.operator.as_ref(), given);
        let read = matches(self.read.as_ref(), given);
        op | read
    }
}

fn matches(token: Option<&SecretString>, given: &str) -> bool {
    // `ct_eq` on slices of different lengths returns false at once: the length of a token is
    // not a secret worth hiding, its bytes are.
    token.is_some_and(|t| bool::from(t.expose_secret().as_bytes().ct_eq(given.as_bytes())))
}

/// The token a request presents: `Authorization: Bearer`, else the page's cookie.
fn presented(headers: &HeaderMap) -> Option<String> {
    if let Some(v) = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let v = v.trim();
        if let Some(t) = v
            .strip_prefix("Bearer ")
            .or_else(|| v.strip_prefix("bearer "))
        {
            return Some(t.trim().to_string());
        }
    }
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE_NAME)
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

    #[test]
    fn roles_by_token() {
        let t = Tokens {
            read: Some("r-token".to_string().into()),
            operator: Some("o-token".to_string().into()),
        };
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
        assert_eq!(
            t.caller(&headers("Bearer nope"))
                .unwrap_err()
                .status
                .as_u16(),
            401
        );
        assert_eq!(
            t.caller(&HeaderMap::new()).unwrap_err().status.as_u16(),
            401
        );
        let mut c = HeaderMap::new();
        c.insert(COOKIE, "a=b; soarjobd_token=o-token".parse().unwrap());
        assert_eq!(t.caller(&c).unwrap().role, Role::Operator);
        assert_eq!(
            Tokens::default().operator(&HeaderMap::new()).unwrap().name,
            "local"
        );
    }
}
