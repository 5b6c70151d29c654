//! The alert sinks SOC teams use, end to end against local receivers: PagerDuty Events API v2
//! and a Microsoft Teams incoming webhook (axum servers speaking their wire formats), email over
//! SMTP with STARTTLS (the simulators' SMTP sink, a real SMTP server on loopback). One message
//! per episode start and one per resolve; a receiver that is down for a minute loses nothing
//! and gets nothing twice; no credential in the logs.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::post;
use secrecy::SecretString;
use serde_json::{Value, json};
use soarjobd_core::config::grammar::SecretSource;
use soarjobd_core::store::RunStatus;
use soarjobd_core::{AlertRetry, EmailSettings, PagerDutySettings, SmtpTls};
use soarjobd_sim::{SmtpOptions, SmtpSink};

use crate::support::*;

const ROUTING_KEY: &str = "R0UT1NG-KEY-5ecret-4f1c";
const SMTP_PASSWORD: &str = "smtp-Pa55-9d2e-secret";
const TEAMS_PATH: &str = "/webhookb2/3f1c-secret-path/IncomingWebhook/77aa";

/// A receiver's state: what it accepted, whether it is up, and the requests turned away.
#[derive(Clone, Default)]
struct Receiver {
    got: Arc<Mutex<Vec<Value>>>,
    down: Arc<AtomicBool>,
    turned_away: Arc<AtomicU64>,
}

impl Receiver {
    fn bodies(&self) -> Vec<Value> {
        self.got.lock().unwrap().clone()
    }
}

/// A listener that, while its receiver is down, closes every connection it accepts unanswered.
struct Gated {
    inner: tokio::net::TcpListener,
    rx: Receiver,
}

impl axum::serve::Listener for Gated {
    type Io = tokio::net::TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            let (io, addr) = axum::serve::Listener::accept(&mut self.inner).await;
            if !self.rx.down.load(Ordering::SeqCst) {
                return (io, addr);
            }
            self.rx.turned_away.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// Serves `app` on 127.0.0.1 behind the receiver's gate.
async fn serve(app: axum::Router, rx: &Receiver) -> String {
    let inner = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = inner.local_addr().unwrap();
    let listener = Gated {
        inner,
        rx: rx.clone(),
    };
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

/// PagerDuty's Events API v2 (`POST /v2/enqueue`), checking events as PagerDuty does: a known
/// routing key, `trigger` with a payload (summary, source, severity) or `resolve`, a dedup key.
async fn pagerduty() -> (String, Receiver) {
    let rx = Receiver::default();
    let app = axum::Router::new()
        .route(
            "/v2/enqueue",
            post(|State(rx): State<Receiver>, Json(ev): Json<Value>| async move {
                // A kept-alive connection made before the receiver went down.
                if rx.down.load(Ordering::SeqCst) {
                    rx.turned_away.fetch_add(1, Ordering::SeqCst);
                    return StatusCode::SERVICE_UNAVAILABLE.into_response();
                }
                let key_ok = ev["routing_key"] == ROUTING_KEY;
                let dedup = ev["dedup_key"].as_str().unwrap_or("").to_string();
                let valid = match ev["event_action"].as_str() {
                    Some("trigger") => {
                        let p = &ev["payload"];
                        p["summary"].is_string()
                            && p["source"].is_string()
                            && ["critical", "error", "warning", "info"]
                                .contains(&p["severity"].as_str().unwrap_or(""))
                    }
                    Some("resolve") => !dedup.is_empty(),
                    _ => false,
                };
                if !key_ok || !valid {
                    return (
                        StatusCode::BAD_REQUEST,
                        Json(json!({"status": "invalid event", "message": "Event object is invalid"})),
                    )
                        .into_response();
                }
                rx.got.lock().unwrap().push(ev);
                (
                    StatusCode::ACCEPTED,
                    Json(json!({"status": "success", "message": "Event processed", "dedup_key": dedup})),
                )
                    .into_response()
            }),
        )
        .with_state(rx.clone());
    let base = serve(app, &rx).await;
    (base, rx)
}

/// A Teams incoming webhook: a message card gets `200` and the text `1`.
async fn teams() -> (String, Receiver) {
    let rx = Receiver::default();
    let app = axum::Router::new()
        .route(
            TEAMS_PATH,
            post(
                |State(rx): State<Receiver>, Json(card): Json<Value>| async move {
                    if rx.down.load(Ordering::SeqCst) {
                        rx.turned_away.fetch_add(1, Ordering::SeqCst);
                        return (StatusCode::SERVICE_UNAVAILABLE, "").into_response();
                    }
                    if card["@type"] != "MessageCard" || !card["summary"].is_string() {
                        return (StatusCode::BAD_REQUEST, "Summary or Text is required.")
                            .into_response();
                    }
                    rx.got.lock().unwrap().push(card);
                    (StatusCode::OK, "1").into_response()
                },
            ),
        )
        .with_state(rx.clone());
    let base = serve(app, &rx).await;
    (format!("{base}{TEAMS_PATH}"), rx)
}

struct Receivers {
    pd: Receiver,
    teams: Receiver,
    smtp: SmtpSink,
}

impl Receivers {
    fn set_down(&self, down: bool) {
        self.pd.down.store(down, Ordering::SeqCst);
        self.teams.down.store(down, Ordering::SeqCst);
        self.smtp.set_up(!down);
    }

    /// (PagerDuty events, Teams cards, emails) received.
    fn counts(&self) -> (usize, usize, usize) {
        (
            self.pd.bodies().len(),
            self.teams.bodies().len(),
            self.smtp.messages().len(),
        )
    }
}

/// The three receivers, and `app` configured to send to them (with `retry`).
async fn receivers(app: &mut TestApp, retry: AlertRetry) -> Receivers {
    let (pd_base, pd) = pagerduty().await;
    let (teams_url, teams) = teams().await;
    let smtp = SmtpSink::start(SmtpOptions {
        login: Some(("soarjobd".into(), SMTP_PASSWORD.into())),
        require_tls: true,
    })
    .await
    .unwrap();
    let ca = app.path("smtp-ca.pem");
    std::fs::write(&ca, SmtpSink::ca_pem()).unwrap();
    let password = app.path("smtp-password");
    std::fs::write(&password, format!("{SMTP_PASSWORD}\n")).unwrap();
    let alerts = &mut app.settings.alerts;
    alerts.teams_url = Some(SecretSource::Inline(SecretString::from(teams_url)));
    alerts.pagerduty = Some(PagerDutySettings {
        routing_key: SecretSource::Inline(SecretString::from(ROUTING_KEY.to_string())),
        url: format!("{pd_base}/v2/enqueue"),
        severity: "error",
    });
    alerts.email = Some(EmailSettings {
        host: "localhost".into(),
        port: smtp.addr().port(),
        tls: SmtpTls::StartTls,
        username: Some("soarjobd".into()),
        password: Some(SecretSource::File(password)),
        from: "soarjobd <alerts@soarjobd.test>".into(),
        to: vec!["soc@soarjobd.test".into(), "oncall@soarjobd.test".into()],
        ca_file: Some(ca),
    });
    alerts.retry = retry;
    Receivers { pd, teams, smtp }
}

/// A job failing every second while `flag` exists.
fn flaky(app: &TestApp) -> std::path::PathBuf {
    let flag = app.path("fail");
    std::fs::write(&flag, "").unwrap();
    app.write_job(
        "flaky",
        &format!(
            "name: Flaky\njob: exec\nschedule: {{every: 1s}}\nmisfire: skip\ncommand: [/bin/sh, -c, 'test ! -e {}']\n",
            flag.display()
        ),
    );
    flag
}

/// The messages of one episode, in order, on all three: a PagerDuty trigger and resolve with
/// one dedup key, a red then a green Teams card, a firing then a resolved email (over TLS,
/// logged in, to both recipients, the second answering the first).
fn assert_one_episode(r: &Receivers) {
    let pd = r.pd.bodies();
    assert_eq!(pd.len(), 2, "{pd:#?}");
    assert_eq!(pd[0]["event_action"], "trigger");
    assert_eq!(pd[1]["event_action"], "resolve");
    assert_eq!(pd[0]["dedup_key"], pd[1]["dedup_key"]);
    assert_eq!(pd[0]["payload"]["component"], "flaky");
    assert_eq!(pd[0]["payload"]["class"], "failed_runs_in_a_row");

    let cards = r.teams.bodies();
    assert_eq!(cards.len(), 2, "{cards:#?}");
    assert!(cards[0]["title"].as_str().unwrap().starts_with("[FIRING]"));
    assert!(
        cards[1]["title"]
            .as_str()
            .unwrap()
            .starts_with("[RESOLVED]")
    );

    let mails = r.smtp.messages();
    assert_eq!(mails.len(), 2, "{mails:#?}");
    for m in &mails {
        assert!(m.tls, "sent before STARTTLS");
        assert_eq!(m.user.as_deref(), Some("soarjobd"));
        assert_eq!(m.from, "alerts@soarjobd.test");
        assert_eq!(m.to, ["soc@soarjobd.test", "oncall@soarjobd.test"]);
    }
    assert!(mails[0].header("Subject").unwrap().starts_with("[FIRING]"));
    assert!(
        mails[1]
            .header("Subject")
            .unwrap()
            .starts_with("[RESOLVED]")
    );
    assert!(mails[0].body().contains("flaky"), "{}", mails[0].data);
    assert_eq!(
        mails[1].header("In-Reply-To"),
        mails[0].header("Message-ID"),
        "the resolve answers the firing email"
    );
}

fn fast_retry() -> AlertRetry {
    AlertRetry {
        attempts: 1000,
        base_delay: Duration::from_millis(100),
        max_delay: Duration::from_secs(1),
        timeout: Duration::from_secs(5),
    }
}

/// Failing then recovering: exactly one trigger and one resolve on each of the three, and no
/// credential (routing key, SMTP password, Teams hook path) anywhere in the logs.
#[tokio::test]
async fn pagerduty_teams_and_email_get_one_message_per_episode_start_and_end() {
    let (logs, _guard) = capture_logs();
    let mut app = TestApp::new();
    let r = receivers(&mut app, fast_retry()).await;
    let flag = flaky(&app);
    let store = app.store().await;
    let daemon = app.start().await;
    assert!(
        eventually(Duration::from_secs(30), || async {
            r.counts() == (1, 1, 1)
        })
        .await,
        "one firing message on each: {:?}",
        r.counts()
    );
    std::fs::remove_file(&flag).unwrap();
    assert!(
        eventually(Duration::from_secs(30), || async {
            r.counts() == (2, 2, 2)
        })
        .await,
        "one resolve on each: {:?}",
        r.counts()
    );
    // More successes resolve nothing more.
    let ok = count(&runs(&store, "flaky").await, RunStatus::Succeeded);
    assert!(
        eventually(Duration::from_secs(20), || async {
            count(&runs(&store, "flaky").await, RunStatus::Succeeded) >= ok + 3
        })
        .await
    );
    daemon.shutdown().await;
    assert_one_episode(&r);
    let text = logs.text();
    assert!(text.contains("alert notification sent"), "{text}");
    for secret in [ROUTING_KEY, SMTP_PASSWORD, "3f1c-secret-path"] {
        assert!(!text.contains(secret), "`{secret}` in the logs");
    }
}

/// All three receivers down for a minute while an episode opens and resolves: the sinks retry
/// (in order, each in its own queue) and, once they are back, each gets the trigger and the
/// resolve exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receivers_down_for_a_minute_lose_nothing_and_get_nothing_twice() {
    let mut app = TestApp::new();
    let retry = AlertRetry {
        attempts: 1000,
        base_delay: Duration::from_millis(200),
        max_delay: Duration::from_secs(2),
        timeout: Duration::from_secs(5),
    };
    let r = receivers(&mut app, retry).await;
    r.set_down(true);
    let went_down = Instant::now();
    let flag = flaky(&app);
    let store = app.store().await;
    let daemon = app.start().await;
    // The firing notification is being tried (and turned away) by all three.
    assert!(
        eventually(Duration::from_secs(30), || async {
            r.pd.turned_away.load(Ordering::SeqCst) > 0
                && r.teams.turned_away.load(Ordering::SeqCst) > 0
                && r.smtp.refused() > 0
        })
        .await,
        "the sinks try while the receivers are down"
    );
    // Recover while still down: the resolve queues behind the firing one.
    std::fs::remove_file(&flag).unwrap();
    assert!(
        eventually(Duration::from_secs(30), || async {
            count(&runs(&store, "flaky").await, RunStatus::Succeeded) >= 2
        })
        .await
    );
    if let Some(rest) = Duration::from_secs(60).checked_sub(went_down.elapsed()) {
        tokio::time::sleep(rest).await;
    }
    assert_eq!(r.counts(), (0, 0, 0), "nothing accepted while down");
    let refused = (
        r.pd.turned_away.load(Ordering::SeqCst),
        r.teams.turned_away.load(Ordering::SeqCst),
        r.smtp.refused(),
    );
    assert!(
        refused.0 >= 5 && refused.1 >= 5 && refused.2 >= 5,
        "kept retrying through the minute: {refused:?}"
    );
    r.set_down(false);
    assert!(
        eventually(Duration::from_secs(30), || async {
            r.counts() == (2, 2, 2)
        })
        .await,
        "everything delivered once back: {:?}",
        r.counts()
    );
    // Nothing more arrives later (no resend of what was delivered).
    tokio::time::sleep(Duration::from_secs(5)).await;
    daemon.shutdown().await;
    assert_one_episode(&r);
}
