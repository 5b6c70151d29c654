//! The email sink: one message per episode start and one per resolve, over SMTP with `lettre`,
//! TLS required (`STARTTLS` on 587, or TLS from the first byte on 465) and verified against the
//! system's roots plus `ca_file`.
//!
//! The messages of an episode carry stable ids: `Message-ID` names the episode and its state,
//! and the resolve answers (`In-Reply-To`, `References`) the firing one, so a mail client
//! threads them and a resend after an unknown outcome is recognisably the same message.

use std::time::Duration;

use async_trait::async_trait;
use lettre::message::{Mailbox, header::ContentType};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use secrecy::ExposeSecret;
use soarjobd_core::{
    AlertRetry, AlertState, EmailSettings, Notification, Notifier, NotifyError, SmtpTls,
};

use super::{Failed, with_retry};

/// Email over SMTP.
pub struct EmailSink {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
    /// The right-hand side of `Message-ID`s: the sender's domain.
    domain: String,
    retry: AlertRetry,
}

impl EmailSink {
    /// Checks the addresses, reads the password and the extra roots; connects only to send.
    pub fn new(settings: &EmailSettings, retry: AlertRetry) -> Result<EmailSink, String> {
        let from: Mailbox = settings
            .from
            .parse()
            .map_err(|e| format!("`alerts.email.from` `{}`: {e}", settings.from))?;
        let to = settings
            .to
            .iter()
            .map(|t| {
                t.parse::<Mailbox>()
                    .map_err(|e| format!("`alerts.email.to` `{t}`: {e}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut tls = TlsParameters::builder(settings.host.clone());
        if let Some(path) = &settings.ca_file {
            let pem = std::fs::read(path).map_err(|e| {
                format!(
                    "`alerts.email.ca_file`: cannot read {}: {e}",
                    path.display()
                )
            })?;
            let cert = Certificate::from_pem(&pem).map_err(|e| {
                format!(
                    "`alerts.email.ca_file`: {} is not PEM certificates: {e}",
                    path.display()
                )
            })?;
            tls = tls.add_root_certificate(cert);
        }
        let tls = tls
            .build_rustls()
            .map_err(|e| format!("`alerts.email`: cannot set up TLS: {e}"))?;
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&settings.host)
            .port(settings.port)
            .timeout(Some(retry.timeout))
            .tls(match settings.tls {
                SmtpTls::StartTls => Tls::Required(tls),
                SmtpTls::Tls => Tls::Wrapper(tls),
            });
        if let (Some(user), Some(password)) = (&settings.username, &settings.password) {
            let password = password
                .read()
                .map_err(|e| format!("`alerts.email.password`: {e}"))?;
            builder = builder.credentials(Credentials::new(
                user.clone(),
                password.expose_secret().to_string(),
            ));
        }
        let domain = from
            .email
            .domain()
            .trim_matches(|c| c == '[' || c == ']')
            .to_string();
        Ok(EmailSink {
            transport: builder.build(),
            from,
            to,
            domain,
            retry,
        })
    }

    fn message_id(&self, n: &Notification, state: AlertState) -> String {
        let state = match state {
            AlertState::Firing => "firing",
            AlertState::Resolved => "resolved",
        };
        format!(
            "<soarjobd.{}.{}.{state}@{}>",
            n.rule.as_str(),
            n.episode_id,
            self.domain
        )
    }

    fn message(&self, n: &Notification) -> Result<Message, String> {
        let mut b = Message::builder()
            .from(self.from.clone())
            .subject(n.text().chars().take(200).collect::<String>())
            .message_id(Some(self.message_id(n, n.state)));
        for t in &self.to {
            b = b.to(t.clone());
        }
        if n.state == AlertState::Resolved {
            let first = self.message_id(n, AlertState::Firing);
            b = b.in_reply_to(first.clone()).references(first);
        }
        let mut body = format!(
            "{}\n\nRule:     {}\nSubject:  {}\nOpened:   {} UTC\n",
            n.text(),
            n.rule.as_str(),
            n.subject,
            n.opened_at.format("%Y-%m-%d %H:%M:%S")
        );
        if let Some(r) = n.resolved_at {
            body.push_str(&format!(
                "Resolved: {} UTC\n",
                r.format("%Y-%m-%d %H:%M:%S")
            ));
        }
        body.push_str(&format!("Episode:  {}\n", n.episode_id));
        b.header(ContentType::TEXT_PLAIN)
            .body(body)
            .map_err(|e| format!("cannot build the email: {e}"))
    }

    async fn attempt(&self, message: &Message) -> Result<(), Failed> {
        // lettre's timeout is per command; this one bounds the whole exchange.
        let limit = self.retry.timeout * 3 + Duration::from_secs(1);
        match tokio::time::timeout(limit, self.transport.send(message.clone())).await {
            Err(_) => Err(Failed::Retry(
                "the SMTP server did not answer in time".into(),
            )),
            Ok(Ok(_)) => Ok(()),
            // A 5xx answer (a refused sender, recipient or login) would be the same again.
            Ok(Err(e)) if e.is_permanent() => {
                Err(Failed::Permanent(format!("the SMTP server refused: {e}")))
            }
            Ok(Err(e)) => Err(Failed::Retry(format!("SMTP: {e}"))),
        }
    }
}

#[async_trait]
impl Notifier for EmailSink {
    fn name(&self) -> &str {
        "email"
    }

    async fn notify(&self, n: &Notification) -> Result<(), NotifyError> {
        let message = self.message(n).map_err(NotifyError)?;
        with_retry("email", &self.retry, || self.attempt(&message)).await
    }
}
