//! The `admin` section of the config file: where the admin server listens, its tokens, the
//! names it answers to, and its connection limits.
//!
//! ```yaml
//! admin:
//!   listen: 127.0.0.1:9180     # `off` disables the server
//!   read_token_file: /run/secrets/soarjobd-read
//!   operator_token_file: /run/secrets/soarjobd-operator
//!   allowed_hosts: [soarjobd.internal:9180]   # names besides the listen address and localhost
//!   public_url: https://soarjobd.example.com/ # an HTTPS front: allowed, and the cookie is Secure
//!   max_connections: 256
//!   header_read_timeout: 10s
//!   idle_timeout: 60s
//!   session_lifetime: 12h
//! ```
//!
//! Binding to anything but a loopback address without tokens is a config error: the API can
//! start and cancel runs, and the status page shows every job. There, a token must also be
//! long and varied enough ([`weak_token`]) to resist guessing from the network.

use std::net::SocketAddr;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde_json::Value;
use soarjobd_core::config::grammar::SecretSource;
use soarjobd_core::config::{Origins, Problem, Section, SectionSpec, Settings};

/// The section's key.
pub const SECTION: &str = "admin";
/// The default listen address: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9180";
/// The shortest token accepted on a non-loopback bind.
pub const MIN_TOKEN_CHARS: usize = 32;
/// The least estimated entropy (bits) of a token on a non-loopback bind: 32 random hex digits
/// (`openssl rand -hex 16`) measure about 110 bits by this estimate, `password` repeated 4 times
/// 88.
const MIN_TOKEN_BITS: f64 = 96.0;
/// The default cap on open connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 256;
/// The default time a client has to send a request's head (also the keep-alive idle time).
pub const DEFAULT_HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// The default time a connection may move no byte before it is closed.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// The default lifetime of a status-page session.
pub const DEFAULT_SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);

/// The admin server's settings.
#[derive(Clone)]
pub struct AdminSettings {
    /// `None`: the server is off.
    pub listen: Option<SocketAddr>,
    /// `listen` was written in the config (not the default): a busy address is then an
    /// error, while the default address being taken (another daemon on the host) only
    /// leaves this daemon without its admin server, with a warning.
    pub listen_set: bool,
    /// Read-only calls (status page, GETs, metrics are open on loopback only).
    pub read_token: Option<SecretString>,
    /// Mutating calls (run now, pause, resume, cancel); reads too.
    pub operator_token: Option<SecretString>,
    /// `Host` (and `Origin`) names accepted besides the listen address and localhost:
    /// `name` (any port) or `name:port`, lowercase.
    pub allowed_hosts: Vec<String>,
    /// The address operators reach the server at through a front (a TLS-terminating proxy):
    /// its host is allowed, and with `https` the session cookie is `Secure`.
    pub public_url: Option<String>,
    /// The most connections open at once; more are closed at once.
    pub max_connections: usize,
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
    pub session_lifetime: Duration,
}

impl Default for AdminSettings {
    /// Every limit at its default, the server off.
    fn default() -> AdminSettings {
        AdminSettings {
            listen: None,
            listen_set: false,
            read_token: None,
            operator_token: None,
            allowed_hosts: Vec::new(),
            public_url: None,
            max_connections: DEFAULT_MAX_CONNECTIONS,
            header_read_timeout: DEFAULT_HEADER_READ_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            session_lifetime: DEFAULT_SESSION_LIFETIME,
        }
    }
}

impl AdminSettings {
    /// True when the status page is reached over HTTPS (`public_url` says so): the session
    /// cookie is then `Secure`. The server itself speaks plain HTTP only.
    pub fn https(&self) -> bool {
        self.public_url
            .as_deref()
            .is_some_and(|u| u.trim().to_ascii_lowercase().starts_with("https://"))
    }
}

impl std::fmt::Debug for AdminSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the tokens.
        f.debug_struct("AdminSettings")
            .field("listen", &self.listen)
            .field("read_token", &self.read_token.is_some())
            .field("operator_token", &self.operator_token.is_some())
            .field("allowed_hosts", &self.allowed_hosts)
            .field("public_url", &self.public_url)
            .field("max_connections", &self.max_connections)
            .field("header_read_timeout", &self.header_read_timeout)
            .field("idle_timeout", &self.idle_timeout)
            .field("session_lifetime", &self.session_lifetime)
            .finish()
    }
}

/// The section declaration for `config::load_with`, so its problems are reported with the rest.
pub fn spec() -> SectionSpec {
    SectionSpec {
        name: SECTION,
        check: |v, origins| read(v, origins).err().unwrap_or_default(),
    }
}

/// The admin settings of `settings` (its `admin` section, or the defaults).
pub fn from_settings(settings: &Settings) -> Result<AdminSettings, Vec<Problem>> {
    let v = match settings.section(SECTION) {
        Value::Null => None,
        v => Some(v),
    };
    read(v, &settings.origins)
}

fn read(value: Option<&Value>, origins: &Origins) -> Result<AdminSettings, Vec<Problem>> {
    let mut s = Section::new(SECTION, value, origins);
    let listen_set = s.is_set("listen");
    let listen_text = s.string("listen").unwrap_or_else(|| DEFAULT_LISTEN.into());
    let listen = if listen_text.trim() == "off" {
        None
    } else {
        match listen_text.trim().parse::<SocketAddr>() {
            Ok(a) => Some(a),
            Err(_) => {
                s.problem(
                    "listen",
                    format!(
                        "`admin.listen` must be an address and port such as {DEFAULT_LISTEN} \
                         (port 0 picks a free one), or `off`; got {listen_text:?}"
                    ),
                );
                None
            }
        }
    };
    let (read_token, read_key) = token(&mut s, "read_token", "read_token_file");
    let (operator_token, operator_key) = token(&mut s, "operator_token", "operator_token_file");
    if let Some(addr) = listen
        && !addr.ip().is_loopback()
    {
        if read_token.is_none() && operator_token.is_none() {
            s.problem(
                "listen",
                format!(
                    "`admin.listen` is {addr}, not a loopback address: set \
                     `admin.read_token_file` and `admin.operator_token_file` (or the inline \
                     keys) so the API is not open to the network"
                ),
            );
        }
        // Reachable from the network, a token must resist guessing (the login form is rate
        // limited, but a bearer token can be tried from anywhere the port is).
        for (t, key) in [(&read_token, read_key), (&operator_token, operator_key)] {
            if let (Some(t), Some(key)) = (t, key)
                && let Some(why) = weak_token(t.expose_secret())
            {
                // Never the token itself: its length and the rule only.
                s.problem(
                    key,
                    format!(
                        "`admin.{key}`: {why}; on a non-loopback `admin.listen` ({addr}) a \
                         token needs at least {MIN_TOKEN_CHARS} random characters (for \
                         example `openssl rand -hex 32`)"
                    ),
                );
            }
        }
    }
    let allowed_hosts = s
        .string_list("allowed_hosts")
        .unwrap_or_default()
        .into_iter()
        .filter_map(|h| match host_entry(&h) {
            Ok(h) => Some(h),
            Err(e) => {
                s.problem("allowed_hosts", format!("`admin.allowed_hosts`: {e}"));
                None
            }
        })
        .collect();
    let public_url = s.http_url("public_url", "https://soarjobd.example.com/");
    let max_connections = s.uint("max_connections", DEFAULT_MAX_CONNECTIONS, 1);
    let header_read_timeout =
        s.positive_duration("header_read_timeout", DEFAULT_HEADER_READ_TIMEOUT);
    let idle_timeout = s.positive_duration("idle_timeout", DEFAULT_IDLE_TIMEOUT);
    let session_lifetime = s.positive_duration("session_lifetime", DEFAULT_SESSION_LIFETIME);
    let problems = s.finish();
    if problems.is_empty() {
        Ok(AdminSettings {
            listen,
            listen_set,
            read_token,
            operator_token,
            allowed_hosts,
            public_url,
            max_connections,
            header_read_timeout,
            idle_timeout,
            session_lifetime,
        })
    } else {
        Err(problems)
    }
}

/// Why `token` is too weak for a server reachable from the network, if it is: shorter than
/// [`MIN_TOKEN_CHARS`], or of low estimated entropy (its characters' Shannon entropy times its
/// length under [`MIN_TOKEN_BITS`], or mostly runs and steps such as `aaaa`, `abcd`, `4321`).
/// An estimate, not a proof: it refuses the obvious (a word repeated, a keyboard walk), while a
/// random token of 32 hex digits or more always passes.
pub fn weak_token(token: &str) -> Option<String> {
    let chars: Vec<char> = token.chars().collect();
    let n = chars.len();
    if n < MIN_TOKEN_CHARS {
        return Some(format!(
            "the token is {n} characters long, shorter than {MIN_TOKEN_CHARS}"
        ));
    }
    let mut counts = std::collections::HashMap::<char, usize>::new();
    for c in &chars {
        *counts.entry(*c).or_default() += 1;
    }
    let per_char: f64 = counts
        .values()
        .map(|&k| {
            let p = k as f64 / n as f64;
            -p * p.log2()
        })
        .sum();
    let bits = per_char * n as f64;
    if bits < MIN_TOKEN_BITS {
        return Some(format!(
            "the token has low entropy (about {bits:.0} bits by its character frequencies, \
             at least {MIN_TOKEN_BITS:.0} needed)"
        ));
    }
    let steps = chars
        .windows(2)
        .filter(|w| (w[1] as i64 - w[0] as i64).abs() <= 1)
        .count();
    if steps * 2 > n - 1 {
        return Some(format!(
            "the token has low entropy ({steps} of its {} neighbouring characters are \
             repeats or steps such as `aa`, `ab`, `21`)",
            n - 1
        ));
    }
    None
}

/// An `allowed_hosts` entry, normalised (lowercase, no trailing dot): `name`, `name:port`,
/// `1.2.3.4[:port]` or `[::1][:port]`; no scheme, path or wildcard.
fn host_entry(raw: &str) -> Result<String, String> {
    let h = raw.trim().to_ascii_lowercase();
    let parsed = crate::guard::Authority::parse(&h);
    match parsed {
        Some(a) if !h.contains("://") && !h.contains('/') && !h.contains('*') => Ok(a.to_string()),
        _ => Err(format!(
            "{raw:?} is not a host name or address, with an optional port \
             (`soarjobd.internal`, `soarjobd.internal:9180`, `10.0.0.5:9180`, `[::1]:9180`)"
        )),
    }
}

/// A token and the key it was set with (inline or `_file`), for located problems.
fn token(
    s: &mut Section<'_>,
    key: &'static str,
    file_key: &'static str,
) -> (Option<SecretString>, Option<&'static str>) {
    let Some(source) = s.secret(key, file_key) else {
        return (None, None);
    };
    match source {
        SecretSource::Inline(t) => (Some(t), Some(key)),
        SecretSource::File(_) => match source.read() {
            Ok(t) => (Some(t), Some(file_key)),
            Err(e) => {
                s.problem(file_key, format!("`admin.{file_key}`: {e}"));
                (None, None)
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn settings(v: Value) -> Settings {
        let mut s = Settings::default();
        s.set_section(SECTION, v);
        s
    }

    #[test]
    fn defaults_to_loopback_and_off_disables() {
        let a = from_settings(&Settings::default()).unwrap();
        assert_eq!(a.listen, Some(DEFAULT_LISTEN.parse().unwrap()));
        let a = from_settings(&settings(json!({"listen": "off"}))).unwrap();
        assert_eq!(a.listen, None);
    }

    #[test]
    fn a_public_bind_needs_tokens_and_problems_are_all_reported() {
        let e = from_settings(&settings(json!({"listen": "0.0.0.0:9180", "tokn": 1}))).unwrap_err();
        let text: Vec<String> = e.iter().map(|p| p.to_string()).collect();
        assert!(
            text.iter().any(|t| t.contains("not a loopback")),
            "{text:?}"
        );
        assert!(text.iter().any(|t| t.contains("admin.tokn")), "{text:?}");
        let strong = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
        let ok = from_settings(&settings(
            json!({"listen": "0.0.0.0:9180", "operator_token": strong}),
        ))
        .unwrap();
        assert!(!format!("{ok:?}").contains(strong));
        let bad = from_settings(&settings(json!({"listen": "localhost"}))).unwrap_err();
        assert_eq!(bad.len(), 1);
    }

    #[test]
    fn weak_tokens_are_refused_on_a_public_bind_only() {
        for weak in [
            "x",
            "op-secret",
            "passwordpasswordpasswordpassword",
            "abcdefghijklmnopqrstuvwxyzABCDEF",
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "01234567890123456789012345678901234567",
        ] {
            assert!(weak_token(weak).is_some(), "{weak}");
        }
        for strong in [
            // openssl rand -hex 16 / -hex 32 / -base64 32
            "5f0c2b8e91d34a67b0e2f9c81d7a3e46",
            "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            "q3Zr7Xv0b9Lk2mWd8Pf1sYt6Hn4Jc5Ge0Ua7Rb3Vx9I=",
        ] {
            assert_eq!(weak_token(strong), None, "{strong}");
        }
        // Loopback: any token (the default setup, and the tests' short ones).
        assert!(
            from_settings(&settings(
                json!({"listen": "127.0.0.1:9180", "operator_token": "x"})
            ))
            .is_ok()
        );
    }

    /// A weak token is a located problem naming the key (file) or the variable (environment),
    /// never quoting the token; all problems come at once.
    #[test]
    fn weak_token_problems_are_located_and_never_quote_the_token() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("c.yaml");
        std::fs::write(dir.path().join("read"), "short-read-token\n").unwrap();
        std::fs::write(
            &cfg,
            "admin:\n  listen: 0.0.0.0:9180\n  read_token_file: read\n  allowed_hosts: [ok.example, 'http://bad/']\n",
        )
        .unwrap();
        let env = [(
            "SOARJOBD__ADMIN__OPERATOR_TOKEN".to_string(),
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa".to_string(),
        )]
        .into_iter()
        .collect();
        let e = soarjobd_core::config::load_with(
            &soarjobd_core::config::Sources {
                file: Some(cfg.clone()),
                env: Some(env),
            },
            &[spec()],
        )
        .unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains(&format!(
                "{}:3:20: `admin.read_token_file`: the token is 16 characters long",
                cfg.display()
            )),
            "{text}"
        );
        assert!(
            text.contains(
                "SOARJOBD__ADMIN__OPERATOR_TOKEN: `admin.operator_token`: the token has low entropy"
            ),
            "{text}"
        );
        assert!(
            text.contains("\"http://bad/\" is not a host name"),
            "{text}"
        );
        assert!(
            !text.contains("short-read-token") && !text.contains("aaaaaaaa"),
            "{text}"
        );
    }

    #[test]
    fn connection_limits_allowed_hosts_and_public_url() {
        let a = from_settings(&settings(json!({
            "allowed_hosts": ["Soarjobd.Internal:9180", "ops.example"],
            "public_url": "https://admin.example.com/",
            "max_connections": 8,
            "header_read_timeout": "2s",
            "idle_timeout": "5s",
            "session_lifetime": "1h",
        })))
        .unwrap();
        assert_eq!(a.allowed_hosts, ["soarjobd.internal:9180", "ops.example"]);
        assert!(a.https());
        assert_eq!(a.max_connections, 8);
        assert_eq!(a.header_read_timeout, Duration::from_secs(2));
        assert_eq!(a.idle_timeout, Duration::from_secs(5));
        assert_eq!(a.session_lifetime, Duration::from_secs(3600));
        let d = from_settings(&Settings::default()).unwrap();
        assert!(!d.https());
        assert_eq!(d.max_connections, DEFAULT_MAX_CONNECTIONS);
        let bad = from_settings(&settings(json!({
            "max_connections": 0, "idle_timeout": "0s", "public_url": "ftp://x"
        })))
        .unwrap_err();
        assert_eq!(bad.len(), 3, "{bad:?}");
    }
}
