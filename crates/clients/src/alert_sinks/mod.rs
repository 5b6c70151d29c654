//! The alert sinks, [`Notifier`]s of the engine's alert dispatcher: a generic JSON webhook, a
//! Slack-compatible and a Microsoft Teams incoming webhook, PagerDuty's Events API v2 (here), and
//! email over SMTP ([`email`]).
//!
//! They do not go through [`crate::http`]: that policy logs the path of every failing or
//! retried request, and a webhook's URL (a Slack or Teams hook's path above all) *is* the
//! credential, as PagerDuty's routing key and the SMTP password are. Here nothing logs or
//! returns a URL, key or password: errors are stripped of the URL (`without_url`), the bodies
//! are never logged. Retries use `backon` with exponential backoff and jitter by the configured
//! [`AlertRetry`]; a POST of a notification is resent when its outcome is unknown, since a
//! duplicate alert is better than a lost one (PagerDuty drops a duplicate by its dedup key, an
//! email client threads one by its `Message-ID`). An answer that says the notification itself
//! is wrong (HTTP 4xx other than 408 and 429, SMTP 5xx) is not retried: it would fail again.

mod email;

use std::sync::Arc;

use async_trait::async_trait;
use backon::{ExponentialBuilder, Retryable};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use sha2::{Digest, Sha256};
use soarjobd_core::{AlertRetry, AlertSettings, AlertState, Notification, Notifier, NotifyError};

pub use email::EmailSink;

/// How a sink retries (the config's `alerts.retry`).
pub type SinkRetry = AlertRetry;

/// The body a sink sends.
#[derive(Debug, Clone)]
pub enum Shape {
    /// Every field of the notification (`state`, `rule`, `subject`, `summary`, ...) and `text`.
    Json,
    /// `{"text": ...}`: what Slack, Mattermost and Rocket.Chat hooks take.
    Slack,
    /// A Microsoft Teams incoming webhook's message card (`@type: MessageCard`).
    Teams,
    /// A PagerDuty Events API v2 event: `trigger` on open, `resolve` on resolve, one dedup key
    /// per episode.
    PagerDuty {
        routing_key: SecretString,
        severity: &'static str,
    },
}

impl Shape {
    fn name(&self) -> &'static str {
        match self {
            Shape::Json => "webhook",
            Shape::Slack => "slack",
            Shape::Teams => "teams",
            Shape::PagerDuty { .. } => "pagerduty",
        }
    }
}

/// One attempt's failure: worth another attempt or not.
#[derive(Debug)]
pub(crate) enum Failed {
    Retry(String),
    Permanent(String),
}

impl Failed {
    fn retryable(&self) -> bool {
        matches!(self, Failed::Retry(_))
    }

    fn message(self) -> String {
        match self {
            Failed::Retry(m) | Failed::Permanent(m) => m,
        }
    }
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failed::Retry(m) | Failed::Permanent(m) => f.write_str(m),
        }
    }
}

/// Calls `attempt` until it succeeds, fails for good, or `retry` is used up.
pub(crate) async fn with_retry<F, Fut>(
    sink: &str,
    retry: &AlertRetry,
    attempt: F,
) -> Result<(), NotifyError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), Failed>>,
{
    let backoff = ExponentialBuilder::default()
        .with_min_delay(retry.base_delay)
        .with_max_delay(retry.max_delay)
        .with_max_times(retry.attempts.saturating_sub(1))
        .with_jitter();
    attempt
        .retry(backoff)
        .when(Failed::retryable)
        .notify(|e, delay| {
            tracing::warn!(sink, error = %e, delay_ms = delay.as_millis() as u64, "alert sink failed; retrying");
        })
        .await
        .map_err(|e| NotifyError(e.message()))
}

/// An HTTP sink: a webhook, Slack, Teams or PagerDuty.
pub struct WebhookSink {
    name: &'static str,
    shape: Shape,
    url: SecretString,
    client: reqwest::Client,
    retry: AlertRetry,
}

impl WebhookSink {
    pub fn new(shape: Shape, url: SecretString, retry: SinkRetry) -> Result<WebhookSink, String> {
        let client = reqwest::Client::builder()
            .connect_timeout(retry.timeout)
            .timeout(retry.timeout)
            .user_agent(concat!("soarjobd/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the alert HTTP client: {}", e.without_url()))?;
        Ok(WebhookSink {
            name: shape.name(),
            shape,
            url,
            client,
            retry,
        })
    }

    fn body(&self, n: &Notification) -> serde_json::Value {
        match &self.shape {
            Shape::Slack => json!({ "text": n.text() }),
            Shape::Json => json!({
                "source": "soarjobd",
                "state": n.state,
                "rule": n.rule,
                "subject": n.subject,
                "summary": n.summary,
                "episode_id": n.episode_id,
                "opened_at": n.opened_at,
                "resolved_at": n.resolved_at,
                "text": n.text(),
            }),
            Shape::Teams => teams_card(n),
            Shape::PagerDuty {
                routing_key,
                severity,
            } => pagerduty_event(n, routing_key, severity),
        }
    }

    async fn attempt(&self, body: &serde_json::Value) -> Result<(), Failed> {
        let answer = self
            .client
            .post(self.url.expose_secret())
            .json(body)
            .send()
            .await
            .map_err(|e| Failed::Retry(describe(e)))?;
        let status = answer.status();
        // A Teams connector has been seen answering throttling with a 2xx and the error as
        // its text; read the (small) answer to tell.
        let text = answer.text().await.unwrap_or_default();
        let throttled = matches!(self.shape, Shape::Teams) && text.contains("HTTP error 429");
        if status.is_success() && !throttled {
            Ok(())
        } else if throttled
            || status.is_server_error()
            || status == reqwest::StatusCode::REQUEST_TIMEOUT
            || status == reqwest::StatusCode::TOO_MANY_REQUESTS
        {
            Err(Failed::Retry(format!(
                "the {} answered HTTP {status}",
                self.name
            )))
        } else {
            // Refused as it is (a bad routing key, a malformed event, a deleted hook): sending
            // it again cannot help.
            Err(Failed::Permanent(format!(
                "the {} refused the notification: HTTP {status}",
                self.name
            )))
        }
    }
}

/// A transport error without its URL.
fn describe(e: reqwest::Error) -> String {
    if e.is_timeout() {
        "the receiver did not answer in time".into()
    } else if e.is_connect() {
        "cannot connect to the receiver".into()
    } else {
        format!("request failed: {}", e.without_url())
    }
}

#[async_trait]
impl Notifier for WebhookSink {
    fn name(&self) -> &str {
        self.name
    }

    async fn notify(&self, n: &Notification) -> Result<(), NotifyError> {
        let body = self.body(n);
        with_retry(self.name, &self.retry, || self.attempt(&body)).await
    }
}

/// The episode's PagerDuty dedup key: the same for its trigger and its resolve, different for
/// every episode (the episode id is the store's), at most 255 characters.
pub fn pagerduty_dedup_key(n: &Notification) -> String {
    let key = format!(
        "soarjobd/{}/{}/{}",
        n.rule.as_str(),
        n.subject,
        n.episode_id
    );
    if key.len() <= 255 {
        return key;
    }
    let digest = Sha256::digest(n.subject.as_bytes());
    let hex: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("soarjobd/{}/{hex}/{}", n.rule.as_str(), n.episode_id)
}

/// An Events API v2 event (`trigger` or `resolve`).
fn pagerduty_event(
    n: &Notification,
    routing_key: &SecretString,
    severity: &str,
) -> serde_json::Value {
    let dedup_key = pagerduty_dedup_key(n);
    match n.state {
        AlertState::Resolved => json!({
            "routing_key": routing_key.expose_secret(),
            "event_action": "resolve",
            "dedup_key": dedup_key,
        }),
        AlertState::Firing => {
            let summary: String = n.text().chars().take(1024).collect();
            json!({
                "routing_key": routing_key.expose_secret(),
                "event_action": "trigger",
                "dedup_key": dedup_key,
                "client": "soarjobd",
                "payload": {
                    "summary": summary,
                    "source": "soarjobd",
                    "severity": severity,
                    "timestamp": n.opened_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    "component": n.subject,
                    "group": "soarjobd",
                    "class": n.rule.as_str(),
                    "custom_details": {
                        "rule": n.rule.as_str(),
                        "subject": n.subject,
                        "summary": n.summary,
                        "episode_id": n.episode_id,
                        "opened_at": n.opened_at,
                    },
                },
            })
        }
    }
}

/// A Teams message card: red while firing, green once resolved.
fn teams_card(n: &Notification) -> serde_json::Value {
    let (state, color) = match n.state {
        AlertState::Firing => ("FIRING", "C4314B"),
        AlertState::Resolved => ("RESOLVED", "2EB886"),
    };
    let mut facts = vec![
        json!({"name": "Rule", "value": n.rule.as_str()}),
        json!({"name": "Subject", "value": n.subject}),
        json!({"name": "Opened (UTC)", "value": n.opened_at.format("%Y-%m-%d %H:%M:%S").to_string()}),
    ];
    if let Some(r) = n.resolved_at {
        facts.push(
            json!({"name": "Resolved (UTC)", "value": r.format("%Y-%m-%d %H:%M:%S").to_string()}),
        );
    }
    facts.push(json!({"name": "Episode", "value": n.episode_id.to_string()}));
    json!({
        "@type": "MessageCard",
        "@context": "https://schema.org/extensions",
        "summary": n.text(),
        "themeColor": color,
        "title": format!("[{state}] soarjobd {}: {}", n.rule.as_str(), n.subject),
        "sections": [{
            "activityTitle": n.subject,
            "text": n.summary,
            "facts": facts,
        }],
    })
}

/// Reads a secret URL and checks it is `http(s)` with a host; never quotes it.
fn secret_url(
    src: &soarjobd_core::config::grammar::SecretSource,
    key: &str,
) -> Result<SecretString, String> {
    let url = src.read().map_err(|e| format!("`{key}`: {e}"))?;
    match url::Url::parse(url.expose_secret().trim()) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => Ok(url),
        // Never quote the value: it is a credential.
        _ => Err(format!("`{key}` must be an http(s) URL")),
    }
}

/// The sinks `alerts:` configures (`webhook_url`, `slack_url`, `teams_url`, `pagerduty`,
/// `email`), in that order.
pub fn sinks(settings: &AlertSettings) -> Result<Vec<Arc<dyn Notifier>>, String> {
    let mut out: Vec<Arc<dyn Notifier>> = Vec::new();
    let retry = &settings.retry;
    for (source, shape, key) in [
        (&settings.webhook_url, Shape::Json, "alerts.webhook_url"),
        (&settings.slack_url, Shape::Slack, "alerts.slack_url"),
        (&settings.teams_url, Shape::Teams, "alerts.teams_url"),
    ] {
        if let Some(src) = source {
            let url = secret_url(src, key)?;
            out.push(Arc::new(WebhookSink::new(shape, url, retry.clone())?));
        }
    }
    if let Some(pd) = &settings.pagerduty {
        let routing_key = pd
            .routing_key
            .read()
            .map_err(|e| format!("`alerts.pagerduty.routing_key`: {e}"))?;
        let shape = Shape::PagerDuty {
            routing_key,
            severity: pd.severity,
        };
        let url = SecretString::from(pd.url.clone());
        out.push(Arc::new(WebhookSink::new(shape, url, retry.clone())?));
    }
    if let Some(email) = &settings.email {
        out.push(Arc::new(EmailSink::new(email, retry.clone())?));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use soarjobd_core::store::ops::AlertRule;

    fn note(state: AlertState, subject: &str) -> Notification {
        Notification {
            state,
            rule: AlertRule::FailedRunsInARow,
            subject: subject.into(),
            summary: "3 runs failed in a row".into(),
            episode_id: 7,
            opened_at: chrono::Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap(),
            resolved_at: None,
        }
    }

    /// Trigger and resolve of one episode share a dedup key; a long subject is hashed.
    #[test]
    fn a_pagerduty_episode_keeps_one_dedup_key() {
        let key = SecretString::from("R0UT1NG".to_string());
        let fire = pagerduty_event(&note(AlertState::Firing, "feeds"), &key, "error");
        let end = pagerduty_event(&note(AlertState::Resolved, "feeds"), &key, "error");
        assert_eq!(fire["event_action"], "trigger");
        assert_eq!(end["event_action"], "resolve");
        assert_eq!(fire["dedup_key"], end["dedup_key"]);
        assert_eq!(fire["payload"]["severity"], "error");
        let long = pagerduty_dedup_key(&note(AlertState::Firing, &"x".repeat(400)));
        assert!(long.len() <= 255, "{long}");
        let other = Notification {
            episode_id: 8,
            ..note(AlertState::Firing, "feeds")
        };
        assert_ne!(pagerduty_dedup_key(&other), fire["dedup_key"]);
    }

    #[test]
    fn a_teams_card_is_a_message_card() {
        let card = teams_card(&note(AlertState::Firing, "feeds"));
        assert_eq!(card["@type"], "MessageCard");
        assert_eq!(card["themeColor"], "C4314B");
        assert!(card["title"].as_str().unwrap().contains("[FIRING]"));
    }
}
