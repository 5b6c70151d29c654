//! What every request passes before a handler sees it, and what every response carries.
//!
//! * **Host** (DNS rebinding): a web page whose name an attacker re-points at 127.0.0.1 makes
//!   the victim's browser talk to this server with the attacker's name in `Host`. Only a `Host`
//!   naming the listen address, `localhost`/`127.0.0.1`/`[::1]` with the server's port, an
//!   `admin.allowed_hosts` entry or `admin.public_url`'s host is answered; anything else is 421
//!   Misdirected Request, reads included. On a wildcard bind (`0.0.0.0`, `::`) any IP literal is
//!   also accepted: no DNS name is involved, so nothing can be rebound, and the operator reaches
//!   such a server by the machine's address (through whatever port mapping).
//! * **Origin** (cross-site requests): a request that can change something (every method but
//!   GET, HEAD, OPTIONS) whose `Origin` (else `Referer`) is not in that same allowed list is 403
//!   `cross_origin`. It is never compared with the request's own `Host`, which a rebinding page
//!   controls; the one exception is a wildcard bind reached by IP literal, where `Host` cannot
//!   have come from DNS and an `Origin` equal to it is the page the server itself served.
//!   `Sec-Fetch-Site: cross-site`/`same-site` is refused the same way.
//! * **Guessing** credentials: a request presenting one (bearer token, session cookie, the login
//!   form) takes a token from its client's bucket (and the login form one from a global
//!   bucket) before it is checked; the token is given back unless the answer is 401. An empty
//!   bucket is 429 with `Retry-After` ([`crate::limit`]).
//! * **Bodies** are read whole (at most [`crate::BODY_LIMIT`], within
//!   `admin.header_read_timeout` of the head, else 408) before the handler runs, so a trickled
//!   body cannot hold a connection and a handler that changes something is never cancelled
//!   half-way by a slow client.
//! * **Headers on every response**: `X-Frame-Options: DENY`, a `Content-Security-Policy` with
//!   `frame-ancestors 'none'` (and only the page's own inline style and script, by hash),
//!   `X-Content-Type-Options: nosniff`, `Referrer-Policy: same-origin`, `Cache-Control: no-store`.
//! * Every refusal is counted in `soarjobd_admin_refused_requests_total{reason}` and logged at
//!   most once per reason every [`LOG_EVERY`], with the number of refusals since the last line.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::metrics::Metrics;
use crate::{BODY_LIMIT, Shared};

/// At most one log line per refusal reason this often.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// Why a request or connection was refused: the metric's `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// 401: no valid token or session.
    Unauthorized,
    /// 403: the read token on a call that needs the operator's.
    Forbidden,
    /// 403: a state-changing request from another site.
    CrossOrigin,
    /// 421: a `Host` this server does not answer to.
    MisdirectedHost,
    /// 429: too many credential attempts.
    RateLimited,
    /// A connection over `admin.max_connections`, closed at once.
    TooManyConnections,
    /// A request head not received within `admin.header_read_timeout`.
    HeaderTimeout,
    /// A connection that moved no byte for `admin.idle_timeout`.
    IdleTimeout,
    /// A body not received within `admin.header_read_timeout` of its head.
    BodyTimeout,
}

impl Refusal {
    pub const ALL: [Refusal; 9] = [
        Refusal::Unauthorized,
        Refusal::Forbidden,
        Refusal::CrossOrigin,
        Refusal::MisdirectedHost,
        Refusal::RateLimited,
        Refusal::TooManyConnections,
        Refusal::HeaderTimeout,
        Refusal::IdleTimeout,
        Refusal::BodyTimeout,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Unauthorized => "unauthorized",
            Refusal::Forbidden => "forbidden",
            Refusal::CrossOrigin => "cross_origin",
            Refusal::MisdirectedHost => "misdirected_host",
            Refusal::RateLimited => "rate_limited",
            Refusal::TooManyConnections => "too_many_connections",
            Refusal::HeaderTimeout => "header_timeout",
            Refusal::IdleTimeout => "idle_timeout",
            Refusal::BodyTimeout => "body_timeout",
        }
    }
}

/// Counts refusals and logs them, at most one line per reason every [`LOG_EVERY`].
pub struct Refusals {
    metrics: Arc<Metrics>,
    /// Per reason: when its last line was written, and the refusals not logged since.
    /// A std mutex: held for a map lookup, never across an await.
    logged: Mutex<HashMap<Refusal, (Instant, u64)>>,
}

impl Refusals {
    pub fn new(metrics: Arc<Metrics>) -> Refusals {
        // Every reason from the start (at 0), so an alert on a rate sees the first refusal.
        for r in Refusal::ALL {
            metrics.seed_refused(r.as_str());
        }
        Refusals {
            metrics,
            logged: Mutex::default(),
        }
    }

    /// Counts one refusal; logs it unless its reason was logged in the last [`LOG_EVERY`].
    /// `what` describes the request (method and path, or the `Host` refused): it is logged
    /// with `{:?}` so that a client's control characters are escaped. Never a credential.
    pub fn note(&self, reason: Refusal, client: IpAddr, what: &str) {
        self.metrics.refused(reason.as_str());
        let now = Instant::now();
        let suppressed = {
            let mut logged = self.logged.lock().unwrap_or_else(|p| p.into_inner());
            match logged.get_mut(&reason) {
                Some((at, n)) if now.duration_since(*at) < LOG_EVERY => {
                    *n += 1;
                    return;
                }
                Some((at, n)) => {
                    *at = now;
                    std::mem::take(n)
                }
                None => {
                    logged.insert(reason, (now, 0));
                    0
                }
            }
        };
        tracing::warn!(
            reason = reason.as_str(),
            client = %client,
            request = ?what,
            refused_since_last_line = suppressed,
            "admin server refused a request (at most one line per reason every {}s; \
             every refusal is counted in soarjobd_admin_refused_requests_total)",
            LOG_EVERY.as_secs()
        );
    }
}

/// A `host[:port]` as `Host`, `Origin` and `allowed_hosts` write it: lowercase, without a
/// trailing dot; an IPv6 address keeps its brackets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authority {
    pub host: String,
    pub port: Option<u16>,
}

impl Authority {
    /// Parses `host`, `host:port`, `[v6]` or `[v6]:port`; `None` for anything else (a path,
    /// credentials, an unbracketed IPv6 address, characters no host name has).
    pub fn parse(s: &str) -> Option<Authority> {
        let s = s.trim();
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (v6, after) = rest.split_once(']')?;
            v6.parse::<Ipv6Addr>().ok()?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':')?.parse::<u16>().ok()?),
            };
            (format!("[{}]", v6.to_ascii_lowercase()), port)
        } else {
            let (h, port) = match s.rsplit_once(':') {
                Some((h, p)) => (h, Some(p.parse::<u16>().ok()?)),
                None => (s, None),
            };
            let h = h.strip_suffix('.').unwrap_or(h).to_ascii_lowercase();
            let valid = !h.is_empty()
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b'_');
            if !valid {
                return None;
            }
            (h, port)
        };
        Some(Authority { host, port })
    }

    /// The authority of an `Origin` or `Referer` (`scheme://host[:port][/...]`), with the
    /// scheme's default port when none is written.
    pub fn of_url(url: &str) -> Option<Authority> {
        let (scheme, rest) = url.trim().split_once("://")?;
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let mut a = Authority::parse(&rest[..end])?;
        if a.port.is_none() {
            a.port = match scheme.to_ascii_lowercase().as_str() {
                "http" => Some(80),
                "https" => Some(443),
                _ => return None,
            };
        }
        Some(a)
    }

    /// True when the host is an IP address literal, not a name.
    pub fn is_ip(&self) -> bool {
        self.host.starts_with('[') || self.host.parse::<Ipv4Addr>().is_ok()
    }

    fn of_addr(ip: IpAddr, port: u16) -> Authority {
        Authority::parse(&SocketAddr::new(ip, port).to_string()).expect("a socket address")
    }
}

impl fmt::Display for Authority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.port {
            Some(p) => write!(f, "{}:{p}", self.host),
            None => f.write_str(&self.host),
        }
    }
}

/// The names this server answers to.
#[derive(Debug, Clone)]
pub struct Hosts {
    /// An entry without a port matches the name on any port.
    allowed: Vec<Authority>,
    /// Bound to `0.0.0.0` or `::`: any IP literal is a `Host` of this server.
    wildcard: bool,
}

impl Hosts {
    /// The listen address (its real port), the loopback names with that port, the
    /// `allowed_hosts` entries and `public_url`'s host.
    pub fn new(listen: SocketAddr, allowed_hosts: &[String], public_url: Option<&str>) -> Hosts {
        let port = listen.port();
        let mut allowed = vec![
            Authority::of_addr(listen.ip(), port),
            Authority {
                host: "localhost".into(),
                port: Some(port),
            },
            Authority::of_addr(Ipv4Addr::LOCALHOST.into(), port),
            Authority::of_addr(Ipv6Addr::LOCALHOST.into(), port),
        ];
        allowed.extend(allowed_hosts.iter().filter_map(|h| Authority::parse(h)));
        if let Some(url) = public_url
            && let Some((_, rest)) = url.trim().split_once("://")
        {
            let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            // As written: without a port, the name is allowed on any port (the front's).
            allowed.extend(Authority::parse(&rest[..end]));
        }
        Hosts {
            allowed,
            wildcard: listen.ip().is_unspecified(),
        }
    }

    /// True when `a` is in the allowed list (a `Host` without a port means port 80: this
    /// server speaks plain HTTP).
    pub fn allows(&self, a: &Authority) -> bool {
        let port = a.port.unwrap_or(80);
        self.allowed
            .iter()
            .any(|e| e.host == a.host && e.port.is_none_or(|p| p == port))
    }

    /// True when this server answers to `Host: a`.
    pub fn answers_to(&self, a: &Authority) -> bool {
        self.allows(a) || (self.wildcard && a.is_ip())
    }

    /// True when a state-changing request from `origin` may be served, `host` being the
    /// request's (already accepted) `Host`.
    pub fn same_site(&self, origin: &Authority, host: &Authority) -> bool {
        if self.allows(origin) {
            return true;
        }
        // A wildcard bind reached by IP literal: that `Host` cannot come from a DNS name, so
        // an `Origin` equal to it is a page this server served (see the module's doc).
        self.wildcard
            && host.is_ip()
            && origin.host == host.host
            && origin.port == Some(host.port.unwrap_or(80))
    }
}

/// The client's address (the connection's peer), unspecified when unknown.
fn client(req: &Request) -> IpAddr {
    req.extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map_or(Ipv4Addr::UNSPECIFIED.into(), |c| c.0.ip())
}

fn header<'a>(h: &'a HeaderMap, name: &header::HeaderName) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

/// The request's host: every `Host` header, and the request target's authority when it is
/// absolute (`GET http://name/ HTTP/1.1`), all of which must be answered to. `None` when there
/// is none or one cannot be parsed.
fn hosts_of(req: &Request) -> Option<Vec<Authority>> {
    let mut out = Vec::new();
    if let Some(a) = req.uri().authority() {
        out.push(Authority::parse(a.as_str())?);
    }
    for v in req.headers().get_all(header::HOST) {
        out.push(Authority::parse(v.to_str().ok()?)?);
    }
    (!out.is_empty()).then_some(out)
}

/// True when the method can change something (everything but GET, HEAD, OPTIONS).
fn changes_state(m: &Method) -> bool {
    !matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Why a state-changing request looks cross-site, if it does.
fn cross_site(hosts: &Hosts, req: &Request, host: &Authority) -> bool {
    let h = req.headers();
    if let Some(site) = header(h, &header::HeaderName::from_static("sec-fetch-site"))
        && matches!(site, "cross-site" | "same-site")
    {
        return true;
    }
    let source = header(h, &header::ORIGIN).or_else(|| header(h, &header::REFERER));
    match source {
        // API clients (curl, scripts) send neither.
        None => false,
        Some(s) => match Authority::of_url(s) {
            // `Origin: null` (a sandboxed frame, a file) or something unparsable.
            None => true,
            Some(o) => !hosts.same_site(&o, host),
        },
    }
}

/// Whether a request presents a credential: a bearer token, a session cookie, or the login
/// form (which is one).
fn presents_credential(req: &Request) -> bool {
    let h = req.headers();
    h.contains_key(header::AUTHORIZATION)
        || crate::auth::session_cookie(h).is_some()
        || (req.method() == Method::POST && req.uri().path() == "/login")
}

fn what(req: &Request) -> String {
    format!("{} {}", req.method(), req.uri().path())
}

/// The checks before any handler (the router's layer just inside [`headers`]).
pub async fn check(State(s): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    let ip = client(&req);
    let hosts = hosts_of(&req);
    let host = match hosts.as_deref() {
        Some(list) if !list.is_empty() && list.iter().all(|a| s.hosts.answers_to(a)) => {
            list[list.len() - 1].clone()
        }
        _ => {
            let given = header(req.headers(), &header::HOST).unwrap_or("(none)");
            s.refusals.note(
                Refusal::MisdirectedHost,
                ip,
                &format!("{} Host: {given}", what(&req)),
            );
            return ApiError::new(
                StatusCode::MISDIRECTED_REQUEST,
                "misdirected_host",
                "this server does not answer to that Host: name it by its listen address or \
                 localhost, or add the name to admin.allowed_hosts",
            )
            .into_response();
        }
    };
    if changes_state(req.method()) && cross_site(&s.hosts, &req, &host) {
        s.refusals.note(Refusal::CrossOrigin, ip, &what(&req));
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "cross_origin",
            "a request from another site is refused",
        )
        .into_response();
    }
    let login = req.method() == Method::POST && req.uri().path() == "/login";
    let charged = presents_credential(&req);
    if charged && let Err(wait) = s.limiter.take(ip, login, Instant::now()) {
        s.refusals.note(Refusal::RateLimited, ip, &what(&req));
        let mut r = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many attempts with a credential: wait before trying again",
        )
        .into_response();
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        return r;
    }
    let desc = what(&req);
    let r = match read_body(req, s.limits.header_read_timeout).await {
        Ok(req) => next.run(req).await,
        Err(e) => {
            if e.status == StatusCode::REQUEST_TIMEOUT {
                s.refusals.note(Refusal::BodyTimeout, ip, &desc);
            }
            e.into_response()
        }
    };
    match r.status() {
        StatusCode::UNAUTHORIZED => s.refusals.note(Refusal::Unauthorized, ip, &desc),
        StatusCode::FORBIDDEN => s.refusals.note(Refusal::Forbidden, ip, &desc),
        _ => {}
    }
    if charged && r.status() != StatusCode::UNAUTHORIZED {
        s.limiter.give_back(ip, login, Instant::now());
    }
    r
}

/// Reads the body whole, within `timeout` and [`BODY_LIMIT`] (see the module's doc).
async fn read_body(req: Request, timeout: Duration) -> Result<Request, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("request bodies are limited to {BODY_LIMIT} bytes"),
        )
    };
    let declared =
        header(req.headers(), &header::CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > BODY_LIMIT as u64) {
        return Err(too_large());
    }
    let (parts, body) = req.into_parts();
    match tokio::time::timeout(timeout, axum::body::to_bytes(body, BODY_LIMIT)).await {
        Err(_) => Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            format!(
                "the request body did not arrive within {}s",
                timeout.as_secs_f64()
            ),
        )),
        Ok(Err(_)) => Err(too_large()),
        Ok(Ok(bytes)) => Ok(Request::from_parts(parts, Body::from(bytes))),
    }
}

/// Adds the security headers to every response (the router's outermost layer).
pub async fn headers(req: Request, next: Next) -> Response {
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CONTENT_SECURITY_POLICY, crate::html::csp());
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Authority {
        Authority::parse(s).unwrap()
    }

    #[test]
    fn authorities_parse_and_normalise() {
        assert_eq!(a("LocalHost.:9180"), a("localhost:9180"));
        assert_eq!(a("[::1]:9180").to_string(), "[::1]:9180");
        assert_eq!(a("10.0.0.5").port, None);
        for bad in [
            "",
            "::1",
            "a b",
            "user@host",
            "host:port",
            "[::1",
            "x/y",
            "*.example",
        ] {
            assert!(Authority::parse(bad).is_none(), "{bad}");
        }
        assert_eq!(
            Authority::of_url("https://Example.com/x?y"),
            Some(a("example.com:443"))
        );
        assert_eq!(
            Authority::of_url("http://127.0.0.1:9180"),
            Some(a("127.0.0.1:9180"))
        );
        assert_eq!(Authority::of_url("null"), None);
        assert_eq!(Authority::of_url("file:///etc"), None);
    }

    #[test]
    fn a_loopback_server_answers_to_its_names_only() {
        let h = Hosts::new("127.0.0.1:9180".parse().unwrap(), &[], None);
        for ok in ["127.0.0.1:9180", "localhost:9180", "[::1]:9180"] {
            assert!(h.answers_to(&a(ok)), "{ok}");
        }
        for bad in [
            "attacker.example:9180",
            "localhost:9181",
            "localhost",
            "127.0.0.1",
            "10.0.0.5:9180",
        ] {
            assert!(!h.answers_to(&a(bad)), "{bad}");
        }
        // The Origin is judged by the list, never by the request's Host.
        let forged = a("attacker.example:9180");
        assert!(!h.same_site(&forged, &forged));
        assert!(h.same_site(&a("localhost:9180"), &a("127.0.0.1:9180")));
    }

    #[test]
    fn allowed_hosts_public_url_and_wildcard_binds() {
        let h = Hosts::new(
            "0.0.0.0:9180".parse().unwrap(),
            &["soarjobd.internal".into(), "ops.example:8443".into()],
            Some("https://admin.example.com/soarjobd/"),
        );
        assert!(h.answers_to(&a("soarjobd.internal:1234")));
        assert!(h.answers_to(&a("ops.example:8443")));
        assert!(!h.answers_to(&a("ops.example:80")));
        assert!(h.answers_to(&a("admin.example.com")));
        // Any IP literal on a wildcard bind, never a name.
        assert!(h.answers_to(&a("10.1.2.3:8080")));
        assert!(h.answers_to(&a("[fd00::1]:9180")));
        assert!(!h.answers_to(&a("rebound.example:9180")));
        // An Origin equal to an IP-literal Host is the server's own page; another is not.
        assert!(h.same_site(&a("10.1.2.3:8080"), &a("10.1.2.3:8080")));
        assert!(!h.same_site(&a("10.1.2.3:8000"), &a("10.1.2.3:8080")));
        assert!(!h.same_site(&a("203.0.113.7:80"), &a("10.1.2.3:8080")));
        assert!(h.same_site(&a("admin.example.com:443"), &a("10.1.2.3:8080")));
        // A specific address is not a wildcard.
        let h = Hosts::new("10.0.0.5:9180".parse().unwrap(), &[], None);
        assert!(h.answers_to(&a("10.0.0.5:9180")));
        assert!(!h.answers_to(&a("10.0.0.6:9180")));
    }
}
