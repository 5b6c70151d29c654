//! `soarjobd demo` and `soarjobd sim`: the product end to end with built-in simulators.
//!
//! The demo starts the SOAR simulator in-process on loopback (seeded, so every demo shows the
//! same cases), points a temporary configuration at it (SQLite in a temporary or given
//! folder), loads the repository's `jobs/`, runs every job once at start and then on its
//! schedule, and logs what happened. Ctrl-C shuts everything down gracefully.
//!
//! The simulators are the `soarjobd-sim` crate, in this binary behind the default cargo feature
//! `sim`. Built without it, the commands still parse (the CLI is the same) but say they are not
//! built in and exit with the usage code.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Subcommand;
#[cfg(feature = "sim")]
use serde_json::json;

use crate::app::AppBuilder;
use soarjobd_core::config::Settings;
#[cfg(feature = "sim")]
use soarjobd_core::error_chain;
use soarjobd_core::exit;
#[cfg(feature = "sim")]
use soarjobd_sim as sim;

/// The seed of the demo's cases.
#[cfg(feature = "sim")]
const DEMO_SEED: u64 = 42;

#[derive(Subcommand, Debug)]
pub enum SimCmd {
    /// The Google SecOps SOAR API simulator.
    Soar {
        #[arg(long, default_value = "127.0.0.1:8443")]
        listen: SocketAddr,
        #[arg(long, default_value_t = 200)]
        cases: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, env = "SOAR_SIM_APP_KEY", default_value = "sim-app-key")]
        app_key: String,
        #[arg(long, default_value_t = 0)]
        latency_ms: u64,
        #[arg(long)]
        rate_limit: Option<u32>,
        #[arg(long, default_value_t = 0.0)]
        fault_rate: f64,
    },
    /// The ThreatConnect API simulator.
    Threatconnect {
        #[arg(long, default_value = "127.0.0.1:8444")]
        listen: SocketAddr,
        #[arg(long, env = "TC_SIM_ACCESS_ID", default_value = "sim-access-id")]
        access_id: String,
        #[arg(long, env = "TC_SIM_SECRET_KEY", default_value = "sim-secret-key")]
        secret_key: String,
        #[arg(long, default_value_t = 0)]
        latency_ms: u64,
        /// How long a batch job takes from upload to Completed.
        #[arg(long, default_value_t = 200)]
        processing_delay_ms: u64,
    },
}

/// `soarjobd demo`: `app` (the built-in jobs and platforms, plus a custom binary's own) pointed
/// at the simulators.
#[cfg(feature = "sim")]
pub async fn run(
    app: AppBuilder,
    mut settings: Settings,
    data_dir: Option<PathBuf>,
    cases: usize,
) -> i32 {
    // The status page first: its address is the first line the demo prints, so a newcomer
    // can open it and watch the jobs run.
    let admin = match crate::admin::Admin::bind_or_any(&settings).await {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the admin server");
            return exit::FAILURE;
        }
    };
    if let Some(url) = admin.url() {
        println!("status page: {url}");
    }
    // A fresh random key per demo: the simulator checks it like the real platform would.
    let app_key = uuid::Uuid::new_v4().to_string();
    let loopback: SocketAddr = ([127, 0, 0, 1], 0).into();
    let soar = match sim::soar::start(
        sim::soar::SoarSimConfig {
            cases,
            seed: DEMO_SEED,
            app_key: app_key.clone(),
            ..Default::default()
        },
        loopback,
    )
    .await
    {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the SOAR simulator");
            return exit::FAILURE;
        }
    };
    let tc_secret = uuid::Uuid::new_v4().to_string();
    let tc = match sim::threatconnect::start(
        sim::threatconnect::TcSimConfig {
            access_id: "demo-access-id".into(),
            secret_key: tc_secret.clone(),
            ..Default::default()
        },
        loopback,
    )
    .await
    {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the ThreatConnect simulator");
            return exit::FAILURE;
        }
    };
    // Keep the temporary folder alive for the whole demo; it is removed at exit.
    let tmp = match tempfile::Builder::new().prefix("soarjobd-demo-").tempdir() {
        Ok(t) => t,
        Err(e) => {
            tracing::error!(error = %e, "cannot create a temporary folder");
            return exit::FAILURE;
        }
    };
    let data = data_dir.unwrap_or_else(|| tmp.path().to_path_buf());
    settings.database_url = format!("sqlite:{}", data.join("demo.db").display());
    settings.set_section("soar", json!({ "url": soar.url(), "app_key": app_key }));
    settings.set_section(
        "threatconnect",
        json!({
        "url": tc.api_url(),
        "access_id": "demo-access-id",
        "secret_key": tc_secret,
            "poll_initial": "200ms",
        }),
    );
    tracing::info!(
        soar_sim = %soar.url(),
        threatconnect_sim = %tc.api_url(),
        cases,
        jobs_dir = %settings.jobs_dir.display(),
        database = %settings.database_url,
        "demo: simulators started; every job runs once now, then on its schedule (Ctrl-C to stop)"
    );
    let app = match app.settings(settings).build() {
        Ok(app) => app,
        Err(e) => {
            tracing::error!(error = %error_chain(&e), "cannot start the daemon");
            return exit::FAILURE;
        }
    };
    let daemon = match admin.daemon(app.daemon()).run_at_start(true).start().await {
        Ok(d) => d,
        Err(e) => {
            tracing::error!(error = %error_chain(&e), "cannot start the daemon");
            return exit::FAILURE;
        }
    };
    let server = match admin.start(&daemon) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the admin server");
            daemon.shutdown().await;
            return exit::FAILURE;
        }
    };
    daemon.run_until_signal().await;
    if let Some(s) = server {
        s.stop().await;
    }
    let stats = soar.state().stats();
    let comments = soar.state().comments(None).len();
    tracing::info!(
        comments_on_simulator = comments,
        requests = ?stats.requests,
        "demo finished"
    );
    let _ = soar.shutdown().await;
    let _ = tc.shutdown().await;
    exit::SUCCESS
}

/// `soarjobd sim ...`.
#[cfg(feature = "sim")]
pub async fn sim(which: SimCmd) -> i32 {
    match which {
        SimCmd::Soar {
            listen,
            cases,
            seed,
            app_key,
            latency_ms,
            rate_limit,
            fault_rate,
        } => {
            let cfg = sim::soar::SoarSimConfig {
                cases,
                seed,
                app_key,
                latency_ms,
                rate_limit,
                fault_rate,
                ..Default::default()
            };
            let handle = match sim::soar::start(cfg, listen).await {
                Ok(h) => h,
                Err(e) => {
                    eprintln!("error: cannot listen on {listen}: {e}");
                    return exit::FAILURE;
                }
            };
            match handle.serve_until(shutdown_signal()).await {
                Ok(()) => exit::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    exit::FAILURE
                }
            }
        }
        SimCmd::Threatconnect {
            listen,
            access_id,
            secret_key,
            latency_ms,
            processing_delay_ms,
        } => {
            let cfg = sim::threatconnect::TcSimConfig {
                access_id,
                secret_key,
                behaviour: sim::threatconnect::Behaviour {
                    latency_ms,
                    processing_delay_ms,
                    ..Default::default()
                },
                ..Default::default()
            };
            let handle = match sim::threatconnect::start(cfg, listen).await {
                Ok(h) => h,
                Err(e) => {
                    eprintln!("error: cannot listen on {listen}: {e}");
                    return exit::FAILURE;
                }
            };
            match handle.serve_until(shutdown_signal()).await {
                Ok(()) => exit::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    exit::FAILURE
                }
            }
        }
    }
}

#[cfg(feature = "sim")]
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// `soarjobd demo` in a binary built without the simulators.
#[cfg(not(feature = "sim"))]
pub async fn run(
    _app: AppBuilder,
    _settings: Settings,
    _data_dir: Option<PathBuf>,
    _cases: usize,
) -> i32 {
    not_built_in("demo")
}

/// `soarjobd sim ...` in a binary built without the simulators.
#[cfg(not(feature = "sim"))]
pub async fn sim(_which: SimCmd) -> i32 {
    not_built_in("sim")
}

#[cfg(not(feature = "sim"))]
fn not_built_in(command: &str) -> i32 {
    eprintln!(
        "error: `soarjobd {command}` is not built into this binary (build it with the cargo feature `sim`, on by default)"
    );
    exit::USAGE
}
