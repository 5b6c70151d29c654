//! An SMTP sink on loopback: a real SMTP server (RFC 5321) that keeps every message it accepts,
//! for the email alert sink's tests. It speaks `EHLO`/`HELO`, `STARTTLS` (RFC 3207, TLS by
//! rustls with a test certificate for `localhost` and `127.0.0.1`, signed by [`SmtpSink::ca_pem`]),
//! `AUTH PLAIN` (RFC 4954, only after `STARTTLS`), `MAIL`, `RCPT`, `DATA` (dot-unstuffed),
//! `RSET`, `NOOP` and `QUIT`.
//!
//! A sink can be taken down and brought back ([`SmtpSink::set_up`]): while down it keeps its
//! port but closes every connection at once, without a greeting, as a crashed relay behind a
//! load balancer does.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use base64::Engine;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};

const CA_PEM: &str = include_str!("smtp/test-ca.pem");
const CERT_PEM: &str = include_str!("smtp/localhost.pem");
const KEY_PEM: &str = include_str!("smtp/localhost.key");

/// The longest command line accepted (RFC 5321 allows 512 octets; `AUTH` lines are longer).
const MAX_LINE: usize = 4096;
/// The largest message accepted.
const MAX_MESSAGE: usize = 1 << 20;

/// What the sink asks of its clients.
#[derive(Debug, Clone, Default)]
pub struct SmtpOptions {
    /// `AUTH PLAIN` with this user and password is required before `MAIL`.
    pub login: Option<(String, String)>,
    /// `MAIL` is refused (`530`) before `STARTTLS`.
    pub require_tls: bool,
}

/// One accepted message.
#[derive(Debug, Clone)]
pub struct Mail {
    pub from: String,
    pub to: Vec<String>,
    /// The message as sent (headers and body), CRLF line ends, dot-unstuffed.
    pub data: String,
    /// Whether it came over TLS (after `STARTTLS`).
    pub tls: bool,
    /// The user it authenticated as.
    pub user: Option<String>,
}

impl Mail {
    /// A header's value (the first one; unfolded).
    pub fn header(&self, name: &str) -> Option<String> {
        let head = self.data.split("\r\n\r\n").next().unwrap_or("");
        let mut out: Option<String> = None;
        for line in head.split("\r\n") {
            if line.starts_with([' ', '\t']) {
                if let Some(v) = out.as_mut() {
                    v.push(' ');
                    v.push_str(line.trim());
                }
                continue;
            }
            if out.is_some() {
                break;
            }
            if let Some((k, v)) = line.split_once(':')
                && k.eq_ignore_ascii_case(name)
            {
                out = Some(v.trim().to_string());
            }
        }
        out
    }

    /// The body (after the blank line).
    pub fn body(&self) -> &str {
        self.data.split_once("\r\n\r\n").map_or("", |(_, b)| b)
    }
}

struct Shared {
    opts: SmtpOptions,
    acceptor: TlsAcceptor,
    up: AtomicBool,
    mail: Mutex<Vec<Mail>>,
    refused: AtomicU64,
}

/// A running SMTP sink; stops when dropped.
pub struct SmtpSink {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl SmtpSink {
    /// Starts a sink on 127.0.0.1 (a free port).
    pub async fn start(opts: SmtpOptions) -> std::io::Result<SmtpSink> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            opts,
            acceptor: acceptor()?,
            up: AtomicBool::new(true),
            mail: Mutex::new(Vec::new()),
            refused: AtomicU64::new(0),
        });
        let task = tokio::spawn(accept(listener, shared.clone()));
        Ok(SmtpSink { addr, shared, task })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The certificate authority that signed the sink's certificate (PEM): what a client adds
    /// to its roots.
    pub fn ca_pem() -> &'static str {
        CA_PEM
    }

    /// The messages accepted so far, oldest first.
    pub fn messages(&self) -> Vec<Mail> {
        self.shared.mail.lock().unwrap().clone()
    }

    /// Up (the default) or down: while down every connection is closed unanswered.
    pub fn set_up(&self, up: bool) {
        self.shared.up.store(up, Ordering::SeqCst);
    }

    /// Connections closed unanswered while down.
    pub fn refused(&self) -> u64 {
        self.shared.refused.load(Ordering::SeqCst)
    }
}

fn acceptor() -> std::io::Result<TlsAcceptor> {
    let bad = |e: String| std::io::Error::new(std::io::ErrorKind::InvalidData, e);
    let certs = CertificateDer::pem_slice_iter(CERT_PEM.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("test certificate: {e}")))?;
    let key = PrivateKeyDer::from_pem_slice(KEY_PEM.as_bytes())
        .map_err(|e| bad(format!("test key: {e}")))?;
    // The provider named, not the process default: which one is "default" depends on the
    // features other crates of the build turn on.
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| bad(e.to_string()))?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}

async fn accept(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((socket, _)) = listener.accept().await else {
            continue;
        };
        if !shared.up.load(Ordering::SeqCst) {
            shared.refused.fetch_add(1, Ordering::SeqCst);
            drop(socket);
            continue;
        }
        let shared = shared.clone();
        tokio::spawn(async move {
            let _ = serve(socket, shared).await;
        });
    }
}

/// One connection: in the clear until `STARTTLS`, then the same conversation over TLS.
async fn serve(socket: tokio::net::TcpStream, shared: Arc<Shared>) -> std::io::Result<()> {
    let mut io = BufReader::new(socket);
    io.get_mut()
        .write_all(b"220 localhost ESMTP soarjobd-sim\r\n")
        .await?;
    if let Session::StartTls = converse(&mut io, false, &shared).await? {
        // Anything the client pipelined after STARTTLS would be an injection (RFC 3207 §5).
        if !io.buffer().is_empty() {
            return Ok(());
        }
        let tls = shared.acceptor.accept(io.into_inner()).await?;
        let mut io = BufReader::new(tls);
        converse(&mut io, true, &shared).await?;
    }
    Ok(())
}

enum Session {
    Closed,
    StartTls,
}

#[derive(Default)]
struct Envelope {
    from: Option<String>,
    to: Vec<String>,
}

async fn converse<S>(io: &mut BufReader<S>, tls: bool, shared: &Shared) -> std::io::Result<Session>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut user: Option<String> = None;
    let mut env = Envelope::default();
    loop {
        let Some(line) = read_line(io).await? else {
            return Ok(Session::Closed);
        };
        let (verb, arg) = match line.split_once(' ') {
            Some((v, a)) => (v.to_ascii_uppercase(), a.trim().to_string()),
            None => (line.to_ascii_uppercase(), String::new()),
        };
        let reply: String = match verb.as_str() {
            "EHLO" => {
                env = Envelope::default();
                let mut r = String::from("250-localhost\r\n250-8BITMIME\r\n250-SIZE 1048576\r\n");
                if tls {
                    r.push_str("250 AUTH PLAIN\r\n");
                } else {
                    r.push_str("250 STARTTLS\r\n");
                }
                r
            }
            "HELO" => {
                env = Envelope::default();
                "250 localhost\r\n".into()
            }
            "STARTTLS" if tls => "503 5.5.1 TLS already active\r\n".into(),
            "STARTTLS" => {
                write(io, "220 2.0.0 Ready to start TLS\r\n").await?;
                return Ok(Session::StartTls);
            }
            "AUTH" if !tls => "530 5.7.0 Must issue a STARTTLS command first\r\n".into(),
            "AUTH" => {
                let mut parts = arg.splitn(2, ' ');
                let mech = parts.next().unwrap_or("").to_ascii_uppercase();
                if mech != "PLAIN" {
                    "504 5.5.4 Unrecognized authentication type\r\n".into()
                } else {
                    let initial = match parts.next() {
                        Some(i) => i.to_string(),
                        None => {
                            write(io, "334 \r\n").await?;
                            read_line(io).await?.unwrap_or_default()
                        }
                    };
                    match check_plain(&initial, &shared.opts.login) {
                        Some(u) => {
                            user = Some(u);
                            "235 2.7.0 Authentication successful\r\n".into()
                        }
                        None => "535 5.7.8 Authentication credentials invalid\r\n".into(),
                    }
                }
            }
            "MAIL" if shared.opts.require_tls && !tls => {
                "530 5.7.0 Must issue a STARTTLS command first\r\n".into()
            }
            "MAIL" if shared.opts.login.is_some() && user.is_none() => {
                "530 5.7.0 Authentication required\r\n".into()
            }
            "MAIL" => match path_arg(&arg, "FROM:") {
                Some(p) => {
                    env = Envelope {
                        from: Some(p),
                        to: Vec::new(),
                    };
                    "250 2.1.0 OK\r\n".into()
                }
                None => "501 5.5.4 Syntax: MAIL FROM:<address>\r\n".into(),
            },
            "RCPT" if env.from.is_none() => "503 5.5.1 MAIL first\r\n".into(),
            "RCPT" => match path_arg(&arg, "TO:") {
                Some(p) => {
                    env.to.push(p);
                    "250 2.1.5 OK\r\n".into()
                }
                None => "501 5.5.4 Syntax: RCPT TO:<address>\r\n".into(),
            },
            "DATA" if env.to.is_empty() => "503 5.5.1 RCPT first\r\n".into(),
            "DATA" => {
                write(io, "354 End data with <CR><LF>.<CR><LF>\r\n").await?;
                let Some(data) = read_data(io).await? else {
                    return Ok(Session::Closed);
                };
                if data.len() > MAX_MESSAGE {
                    "552 5.3.4 Message too big\r\n".into()
                } else {
                    let env = std::mem::take(&mut env);
                    shared.mail.lock().unwrap().push(Mail {
                        from: env.from.unwrap_or_default(),
                        to: env.to,
                        data,
                        tls,
                        user: user.clone(),
                    });
                    "250 2.0.0 OK queued\r\n".into()
                }
            }
            "RSET" => {
                env = Envelope::default();
                "250 2.0.0 OK\r\n".into()
            }
            "NOOP" => "250 2.0.0 OK\r\n".into(),
            "QUIT" => {
                write(io, "221 2.0.0 Bye\r\n").await?;
                return Ok(Session::Closed);
            }
            _ => "502 5.5.2 Command not recognized\r\n".into(),
        };
        write(io, &reply).await?;
    }
}

async fn write<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut BufReader<S>,
    text: &str,
) -> std::io::Result<()> {
    io.get_mut().write_all(text.as_bytes()).await?;
    io.get_mut().flush().await
}

/// A line without its CRLF; `None` at the end of the stream.
async fn read_line<S: AsyncRead + Unpin>(io: &mut BufReader<S>) -> std::io::Result<Option<String>> {
    let mut buf = Vec::new();
    let n = (&mut *io)
        .take(MAX_LINE as u64)
        .read_until(b'\n', &mut buf)
        .await?;
    if n == 0 {
        return Ok(None);
    }
    if !buf.ends_with(b"\n") {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "line too long",
        ));
    }
    let text = String::from_utf8_lossy(&buf);
    Ok(Some(text.trim_end_matches(['\r', '\n']).to_string()))
}

/// The message after `DATA`, up to the lone `.`, dot-unstuffed, lines ending CRLF.
async fn read_data<S: AsyncRead + Unpin>(io: &mut BufReader<S>) -> std::io::Result<Option<String>> {
    let mut data = String::new();
    loop {
        let Some(line) = read_line(io).await? else {
            return Ok(None);
        };
        if line == "." {
            return Ok(Some(data));
        }
        if data.len() <= MAX_MESSAGE {
            data.push_str(line.strip_prefix('.').unwrap_or(&line));
            data.push_str("\r\n");
        }
    }
}

/// `FROM:<a@b> SIZE=...` -> `a@b`.
fn path_arg(arg: &str, prefix: &str) -> Option<String> {
    let head = arg.get(..prefix.len())?;
    if !head.eq_ignore_ascii_case(prefix) {
        return None;
    }
    let rest = arg[prefix.len()..].trim_start();
    let inner = rest.strip_prefix('<')?;
    let end = inner.find('>')?;
    Some(inner[..end].to_string())
}

/// `AUTH PLAIN`'s `base64(authzid \0 user \0 password)`: the user when it matches `login`.
fn check_plain(b64: &str, login: &Option<(String, String)>) -> Option<String> {
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let mut parts = raw.split(|b| *b == 0);
    let _authzid = parts.next()?;
    let user = String::from_utf8(parts.next()?.to_vec()).ok()?;
    let pass = String::from_utf8(parts.next()?.to_vec()).ok()?;
    match login {
        Some((u, p)) if *u == user && *p == pass => Some(user),
        Some(_) => None,
        None => Some(user),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_plain_credentials_are_read() {
        assert_eq!(
            path_arg("FROM:<a@b.example> SIZE=10", "FROM:").as_deref(),
            Some("a@b.example")
        );
        assert_eq!(path_arg("to: <c@d>", "TO:").as_deref(), Some("c@d"));
        assert_eq!(path_arg("FROM:a@b", "FROM:"), None);
        let b64 = base64::engine::general_purpose::STANDARD.encode(b"\0ann\0pw");
        let login = Some(("ann".to_string(), "pw".to_string()));
        assert_eq!(check_plain(&b64, &login).as_deref(), Some("ann"));
        let wrong = Some(("ann".to_string(), "other".to_string()));
        assert_eq!(check_plain(&b64, &wrong), None);
    }

    #[test]
    fn the_test_certificate_loads() {
        assert!(acceptor().is_ok());
    }
}
