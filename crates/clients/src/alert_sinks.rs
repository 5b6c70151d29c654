//! The alert sinks: a generic JSON webhook and a Slack-compatible incoming webhook, both
//! [`Notifier`]s of the core's alert dispatcher.
//!
//! They do not go through [`crate::http`]: that policy logs the path of every failing or
//! retried request, and a webhook's URL (a Slack hook's path above all) *is* the credential.
//! Here nothing logs or returns the URL: errors are stripped of it (`without_url`). Retries use
//! `backon` with exponential backoff and jitter, like `http`; a POST of a notification is
//! resent when its outcome is unknown, since a duplicate alert is better than a lost one.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use backon::{ExponentialBuilder, Retryable};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;
use soarjobd_core::{AlertSettings, Notification, Notifier, NotifyError};

/// The body a sink sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Every field of the notification (`state`, `rule`, `subject`, `summary`, ...) and `text`.
    Json,
    /// `{"text": ...}`: what Slack, Mattermost, Rocket.Chat and Teams-compatible hooks take.
    Slack,
}

/// How a sink retries.
#[derive(Debug, Clone)]
pub struct SinkRetry {
    pub attempts: usize,
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// The time allowed for one attempt.
    pub timeout: Duration,
}

impl Default for SinkRetry {
    fn default() -> SinkRetry {
        SinkRetry {
            attempts: 6,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(60),
            timeout: Duration::from_secs(10),
        }
    }
}

/// A webhook sink.
pub struct WebhookSink {
    name: &'static str,
    shape: Shape,
    url: SecretString,
    client: reqwest::Client,
    retry: SinkRetry,
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
            name: match shape {
                Shape::Json => "webhook",
                Shape::Slack => "slack",
            },
            shape,
            url,
            client,
            retry,
        })
    }

    fn body(&self, n: &Notification) -> serde_json::Value {
        match self.shape {
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
        }
    }

    async fn attempt(&self, body: &serde_json::Value) -> Result<(), NotifyError> {
        let answer = self
            .client
            .post(self.url.expose_secret())
            .json(body)
            .send()
            .await
            .map_err(|e| NotifyError(describe(e)))?;
        let status = answer.status();
        if status.is_success() {
            Ok(())
        } else {
            Err(NotifyError(format!("the webhook answered HTTP {status}")))
        }
    }
}

/// A transport error without its URL.
fn describe(e: reqwest::Error) -> String {
    if e.is_timeout() {
        "the webhook did not answer in time".into()
    } else if e.is_connect() {
        "cannot connect to the webhook".into()
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
        let backoff = ExponentialBuilder::default()
            .with_min_delay(self.retry.base_delay)
            .with_max_delay(self.retry.max_delay)
            .with_max_times(self.retry.attempts.saturating_sub(1))
            .with_jitter();
        (|| self.attempt(&body))
            .retry(backoff)
            .notify(|e, delay| {
                tracing::warn!(sink = self.name, error = %e, delay_ms = delay.as_millis() as u64, "alert webhook failed; retrying");
            })
            .await
    }
}

/// The sinks `alerts:` configures (`webhook_url`, `slack_url`), in that order.
pub fn sinks(settings: &AlertSettings) -> Result<Vec<Arc<dyn Notifier>>, String> {
    let mut out: Vec<Arc<dyn Notifier>> = Vec::new();
    for (source, shape, key) in [
        (&settings.webhook_url, Shape::Json, "alerts.webhook_url"),
        (&settings.slack_url, Shape::Slack, "alerts.slack_url"),
    ] {
        if let Some(src) = source {
            let url = src.read().map_err(|e| format!("`{key}`: {e}"))?;
            match url::Url::parse(url.expose_secret()) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {}
                // Never quote the value: it is a credential.
                _ => return Err(format!("`{key}` must be an http(s) URL")),
            }
            out.push(Arc::new(WebhookSink::new(
                shape,
                url,
                SinkRetry::default(),
            )?));
        }
    }
    Ok(out)
}
