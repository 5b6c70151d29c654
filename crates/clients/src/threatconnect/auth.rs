//! ThreatConnect API authentication: HMAC (Access ID + Secret Key) and `TC-Token`.
//!
//! HMAC signs `{path}[?{query}]:{METHOD}:{timestamp}`, where `path?query` is the request-target
//! exactly as it goes on the wire. The signature is therefore computed from the final [`Url`]
//! the transport sends (its serialized path and query), never from a path assembled separately:
//! any difference in percent-encoding (`%20` vs `+`) would make the server answer
//! "Access Denied".

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, KeyInit, Mac};
use reqwest::Method;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderName, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;
use url::Url;

/// The `Timestamp` header that carries the signed Unix time.
pub const TIMESTAMP_HEADER: HeaderName = HeaderName::from_static("timestamp");

/// How a request proves who sent it. `Debug` never shows the secret or the token.
#[derive(Clone)]
pub enum Auth {
    /// `Authorization: TC {access_id}:{signature}` plus `Timestamp`.
    Hmac {
        access_id: String,
        secret_key: SecretString,
    },
    /// `Authorization: TC-Token {token}` (plus `Timestamp`, as the reference client sends it).
    Token(SecretString),
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Auth::Hmac { access_id, .. } => f
                .debug_struct("Hmac")
                .field("access_id", access_id)
                .field("secret_key", &"[REDACTED]")
                .finish(),
            Auth::Token(_) => f.debug_tuple("Token").field(&"[REDACTED]").finish(),
        }
    }
}

/// Why auth headers could not be built.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The access id or token holds characters an HTTP header cannot carry. The value itself is
    /// not repeated, since it may be a secret.
    #[error("the ThreatConnect {0} contains characters not allowed in an HTTP header")]
    InvalidHeader(&'static str),
}

impl Auth {
    /// The headers that authenticate `method url` at Unix time `timestamp`. The `Authorization`
    /// value is marked sensitive so header `Debug` output (ours, reqwest's) hides it.
    pub fn headers(
        &self,
        method: &Method,
        url: &Url,
        timestamp: i64,
    ) -> Result<HeaderMap, AuthError> {
        let authorization = match self {
            Auth::Hmac {
                access_id,
                secret_key,
            } => {
                let signature = sign(secret_key, &request_target(url), method.as_str(), timestamp);
                format!("TC {access_id}:{signature}")
            }
            Auth::Token(token) => format!("TC-Token {}", token.expose_secret()),
        };
        let what = match self {
            Auth::Hmac { .. } => "access id",
            Auth::Token(_) => "token",
        };
        let mut value =
            HeaderValue::from_str(&authorization).map_err(|_| AuthError::InvalidHeader(what))?;
        value.set_sensitive(true);
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, value);
        headers.insert(TIMESTAMP_HEADER, HeaderValue::from(timestamp));
        Ok(headers)
    }
}

/// The request-target as sent on the wire: the URL's serialized path, then `?query` if the URL
/// has a query. `Url` keeps the serialization it was built with, and reqwest sends exactly it.
pub fn request_target(url: &Url) -> String {
    match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_string(),
    }
}

/// The HMAC signature: Base64 (standard, padded) of HMAC-SHA256(secret, `{target}:{METHOD}:{ts}`).
pub fn sign(secret_key: &SecretString, target: &str, method: &str, timestamp: i64) -> String {
    let message = format!("{target}:{}:{timestamp}", method.to_ascii_uppercase());
    // HMAC accepts keys of any length, so this cannot fail; a fallback keeps input-derived data
    // away from unwrap all the same.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret_key.expose_secret().as_bytes()) else {
        return String::new();
    };
    mac.update(message.as_bytes());
    BASE64.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACCESS_ID: &str = "12345678901234567890";
    const SECRET: &str = "tc-test-secret-key-0123456789abcdefghijklmnopqrstuvwxyz";

    fn secret() -> SecretString {
        SecretString::from(SECRET)
    }

    /// The spec's vectors (§2.1): method, request-target, timestamp, signature.
    const VECTORS: &[(&str, &str, i64, &str)] = &[
        (
            "GET",
            "/api/v2/owners",
            1513703787,
            "mBBEj+FBu0hwqBg4Qc7ye+N5quIWWZVhxVxJoijXJHg=",
        ),
        (
            "GET",
            "/api/v2/indicators/hosts/example.com?owner=Common%20Community",
            1513703787,
            "s0oumd+czve5aLwUpKnuDcbzhsziccB3itfq+0ptuF4=",
        ),
        (
            "GET",
            "/api/v2/indicators/hosts/example.com?owner=Common+Community",
            1513703787,
            "la2gVMPWPQr27Im9kwkDzbuksryo6fO9scJgg6KiTTo=",
        ),
        (
            "POST",
            "/api/v2/batch",
            1700000000,
            "lt6tYLSlcs1dqdK0pXMnORIeP6pp7Ma471Y2kbnpP9c=",
        ),
        (
            "POST",
            "/api/v2/batch/12345",
            1700000005,
            "RYNys4IZhF5dJXY4PbZ1N32l77Q8JlSSrmPIsdFvI7A=",
        ),
        (
            "GET",
            "/api/v2/batch/12345?includeAdditional=true",
            1700000020,
            "04h5QnIQxEB+x5624NEiUTZ6YYXZ0OAivfrgH3mx82k=",
        ),
    ];

    #[test]
    fn spec_vectors_sign_as_documented() {
        for (method, target, ts, expected) in VECTORS {
            assert_eq!(sign(&secret(), target, method, *ts), *expected, "{target}");
        }
    }

    #[test]
    fn raw_hmac_of_vector_one_matches() {
        let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
        mac.update(b"/api/v2/owners:GET:1513703787");
        let hex: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            hex,
            "9810448fe141bb4870a8183841cef27be379aae216599561c55c49a228d72478"
        );
    }

    #[test]
    fn headers_sign_the_url_as_serialized() {
        let auth = Auth::Hmac {
            access_id: ACCESS_ID.into(),
            secret_key: secret(),
        };
        for (method, target, ts, expected) in VECTORS {
            let url = Url::parse(&format!("https://tc.example{target}")).unwrap();
            // The target is taken from the URL itself, so `%20` and `+` stay distinct.
            assert_eq!(request_target(&url), *target);
            let method = Method::from_bytes(method.as_bytes()).unwrap();
            let h = auth.headers(&method, &url, *ts).unwrap();
            assert_eq!(
                h[AUTHORIZATION].to_str().unwrap(),
                format!("TC {ACCESS_ID}:{expected}")
            );
            assert_eq!(h[TIMESTAMP_HEADER].to_str().unwrap(), ts.to_string());
        }
    }

    #[test]
    fn query_built_with_url_api_is_signed_as_sent() {
        let mut url = Url::parse("https://tc.example/api/v2/indicators/hosts/example.com").unwrap();
        url.query_pairs_mut()
            .append_pair("owner", "Common Community");
        // `url` form-encodes a space as `+`: vector 3.
        assert_eq!(
            sign(&secret(), &request_target(&url), "GET", 1513703787),
            "la2gVMPWPQr27Im9kwkDzbuksryo6fO9scJgg6KiTTo="
        );
    }

    #[test]
    fn token_header_and_redacted_debug() {
        let auth = Auth::Token(SecretString::from("APIV2:430:c8mTcH:secret-part"));
        let url = Url::parse("https://tc.example/api/v2/owners").unwrap();
        let h = auth.headers(&Method::GET, &url, 1).unwrap();
        assert_eq!(
            h[AUTHORIZATION].to_str().unwrap(),
            "TC-Token APIV2:430:c8mTcH:secret-part"
        );
        assert!(h[AUTHORIZATION].is_sensitive());
        assert!(!format!("{h:?}").contains("secret-part"));
        assert!(!format!("{auth:?}").contains("secret-part"));
        let hmac = Auth::Hmac {
            access_id: ACCESS_ID.into(),
            secret_key: secret(),
        };
        let dbg = format!("{hmac:?}");
        assert!(dbg.contains(ACCESS_ID) && !dbg.contains(SECRET), "{dbg}");
    }

    #[test]
    fn a_token_with_a_newline_is_refused_without_echoing_it() {
        let auth = Auth::Token(SecretString::from("abc\ndef"));
        let url = Url::parse("https://tc.example/api/v2/owners").unwrap();
        let err = auth.headers(&Method::GET, &url, 1).unwrap_err();
        assert!(!err.to_string().contains("abc"));
    }
}
