//! The command line: subcommands and their output. `main` only calls [`main`] here.
//!
//! Every subcommand returns an exit code from [`soarjobd_core::exit`]; this is the one place that
//! turns errors into codes and messages.

use std::io::Write;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};
use serde_json::json;

use crate::app::{App, AppBuilder};
pub use crate::demo::SimCmd;
use soarjobd_core::config;
use soarjobd_core::config::{LogFormat, Settings, Sources};
use soarjobd_core::definition::LoadError;
use soarjobd_core::error_chain;
use soarjobd_core::exit;
use soarjobd_core::{Schedule, parse_timezone};

#[derive(Parser, Debug)]
#[command(name = "soarjobd", version, about = "Runs scheduled SOAR jobs", long_about = None)]
pub struct Cli {
    /// The config file (default: config/soarjobd.yaml, if it exists).
    #[arg(long, global = true, env = "SOARJOBD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log format: pretty or json (overrides log.format).
    #[arg(long, global = true, value_parser = ["pretty", "json"])]
    pub log_format: Option<String>,
    /// Log level or filter such as info or soarjobd=debug (overrides log.level; RUST_LOG wins).
    #[arg(long, global = true)]
    pub log_level: Option<String>,
    #[command(subcommand)]
    pub command: Option<Cmd>,
}

/// `soarjobd secops ...`.
#[derive(Subcommand, Debug)]
pub enum SecopsCmd {
    /// Copy a job's context properties and SDK timestamps from the tenant into the store, so
    /// its first run here continues where the platform stopped.
    ImportState {
        /// soarjobd's job id.
        job_id: String,
        /// The job instance's identifier on the tenant (its unique_identifier).
        #[arg(long)]
        identifier: String,
        /// A script_name the script sets (repeatable; default: the job's name).
        #[arg(long = "script-name")]
        script_names: Vec<String>,
        /// A context property key to import besides `timestamp` (repeatable).
        #[arg(long = "key")]
        keys: Vec<String>,
        /// Show what would be written; write nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
    /// Build each integration's Python environment (its dependencies from local wheels,
    /// secops.wheels; the SOAR SDK from secops.sdk) under secops.data_dir. Idempotent.
    Install {
        /// Integration folders (holding pyproject.toml or requirements.txt, and jobs/).
        #[arg(required = true)]
        folders: Vec<PathBuf>,
        /// Also use the package index (after the local wheels); default: offline.
        #[arg(long)]
        online: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Run the daemon (the default).
    Run,
    /// Validate the config and every job file; show each job's next fire times.
    Check {
        #[arg(long)]
        json: bool,
        /// Also list, per job, the definition it uses and the SecOps-only keys it ignores.
        #[arg(long, short)]
        verbose: bool,
    },
    /// Show the next fire times of a cron expression or `@every 15m`.
    Next {
        /// A cron expression (5 fields, or 6 with seconds first, or @hourly...) or `@every DURATION`.
        expr: String,
        /// IANA time zone for cron expressions.
        #[arg(long, default_value = "UTC")]
        tz: String,
        /// Start from this instant (RFC 3339) instead of now.
        #[arg(long)]
        from: Option<String>,
        /// How many instants to show.
        #[arg(short = 'n', default_value_t = 5)]
        n: usize,
    },
    /// List every job with its last run, last success and next fire time.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show a job's runs, newest first.
    History {
        job_id: String,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
    /// Run one job now, in the foreground, through the same runner (a manual run).
    RunOnce {
        job_id: String,
        /// Override a parameter: --param "Name=value" (repeatable).
        #[arg(long = "param", value_name = "NAME=VALUE")]
        params: Vec<String>,
    },
    /// Pause a job: it claims no ticks (and misses none) until resumed. Works next to a
    /// running daemon, which applies it within seconds.
    Pause {
        job_id: String,
        /// Why (shown by `list` and in the audit log).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Resume a paused job. The ticks inside the pause are skipped unless --catch-up.
    Resume {
        job_id: String,
        /// Make one catch-up run for the ticks that fell inside the pause.
        #[arg(long)]
        catch_up: bool,
    },
    /// Show what a run logged (kept with the run; pruned with it).
    Logs {
        run_id: i64,
        /// Keep printing new lines until the run has finished.
        #[arg(long, short = 'f')]
        follow: bool,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Run the product end to end with built-in simulators and nothing external.
    Demo {
        /// Where to keep the demo's database (default: a temporary folder).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// How many simulated cases.
        #[arg(long, default_value_t = 200)]
        cases: usize,
    },
    /// Ask the running daemon's admin server whether it is alive (exit 0) or not (exit 1):
    /// the container HEALTHCHECK, without curl in the image.
    Probe {
        /// The admin server's address (default: `admin.listen` of the config).
        #[arg(long)]
        addr: Option<std::net::SocketAddr>,
        /// The path to ask.
        #[arg(long, default_value = "/livez")]
        path: String,
    },
    /// List the replicas registered on a PostgreSQL database, with their last heartbeat.
    Nodes {
        #[arg(long)]
        json: bool,
    },
    /// Copy a SQLite state database (history, timestamps, context, seen-sets) into an empty
    /// PostgreSQL database, to move to several replicas. Stop the daemon first.
    MigrateState {
        /// The SQLite database: sqlite:PATH.
        #[arg(long)]
        from: String,
        /// The PostgreSQL database: postgres://USER@HOST/DB (created tables if new).
        #[arg(long)]
        to: String,
    },
    /// Moving SecOps jobs over: import a job's state from the tenant, install integrations.
    Secops {
        #[command(subcommand)]
        cmd: SecopsCmd,
    },
    /// Run a platform simulator.
    Sim {
        #[command(subcommand)]
        which: SimCmd,
    },
    /// ThreatConnect TcEx job apps.
    Tcex {
        #[command(subcommand)]
        which: TcexCmd,
    },
}

/// `soarjobd tcex ...`.
#[derive(Subcommand, Debug)]
pub enum TcexCmd {
    /// Build an app's `lib_<python version>` folder from its requirements.txt (`pip install
    /// --target`, as TcEx's packager does) and link `lib_latest` to it.
    Deps {
        /// The app folder (with install.json and requirements.txt).
        app: std::path::PathBuf,
        /// The interpreter the app will run with (its version names the folder).
        #[arg(long, default_value = soarjobd_jobs::tcex_app::DEFAULT_PYTHON)]
        python: String,
    },
}

/// Parses arguments, runs the command, returns the exit code: the `soarjobd` binary, with the
/// built-in jobs and platforms.
pub fn main() -> i32 {
    main_with(App::builder())
}

/// The whole CLI over your own app: a custom binary hands its builder (its jobs and
/// platforms) here, and `run`, `check`, `list`, `history`, `run-once` and `demo` all know its
/// jobs. The settings are loaded from the usual sources and given to the builder. Call it
/// first in `main`, before starting any thread: it takes the `SOARJOBD__*` variables out of
/// the process environment, which is only sound while the process is single-threaded.
///
/// ```no_run
/// use soarjobd::app::App;
/// # use soarjobd_jobs::exec::Exec as MyJob;
/// fn main() {
///     std::process::exit(soarjobd::cli::main_with(App::builder().register(MyJob)));
/// }
/// ```
pub fn main_with(app: AppBuilder) -> i32 {
    let config_env = harden_process();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return exit::FAILURE;
        }
    };
    let code = runtime.block_on(dispatch(cli, app, config_env));
    // Dropping a runtime waits for every blocking task; one may still be loading the jobs
    // folder (shutdown stops waiting for it), and it must not hold up the exit of a daemon
    // that has already shut down. The wait is bounded regardless.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    code
}

/// The first thing the binary does, before any credential is read (see the README's
/// "Security"):
///
/// * The process becomes non-dumpable (`PR_SET_DUMPABLE` 0): its `/proc/<pid>/environ`,
///   `mem`, `maps`... become root's, so a job process of the same (non-root) user cannot read
///   them or attach a debugger, and no core dump holds the credentials.
/// * The configuration variables (`SOARJOBD__*`: app keys, secret keys, webhook URLs...) are
///   taken out of the process environment and handed to the config loader instead, and their
///   values are overwritten in the memory `/proc/<pid>/environ` shows (the block the kernel
///   copied at `exec`, which `unsetenv` does not touch).
///
/// Returns the variables taken.
fn harden_process() -> std::collections::HashMap<String, String> {
    // SAFETY: prctl(PR_SET_DUMPABLE) changes a flag of this process; no memory is involved.
    unsafe {
        libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0);
    }
    let prefix = format!("{}__", config::ENV_PREFIX);
    let taken: std::collections::HashMap<String, String> = std::env::vars_os()
        .filter_map(|(k, v)| {
            let k = k.into_string().ok()?;
            k.starts_with(&prefix)
                .then(|| (k, v.to_string_lossy().into_owned()))
        })
        .collect();
    if taken.is_empty() {
        return taken;
    }
    scrub_initial_environment(prefix.as_bytes());
    for name in taken.keys() {
        // SAFETY: `remove_var` must not race another thread reading or writing the
        // environment. This runs first thing in `main_with`, before the async runtime (or any
        // other thread of ours) exists: the process is single-threaded here. A custom binary
        // calling `main_with` from a multi-threaded state would break that; the docs of
        // `main_with` say to call it first.
        unsafe {
            std::env::remove_var(name);
        }
    }
    taken
}

/// Overwrites (with NUL bytes) the values of the variables starting with `prefix` in the
/// environment block the kernel placed at `exec` (`env_start`..`env_end` of
/// `/proc/self/stat`), which is what `/proc/<pid>/environ` reads. Best effort: a kernel that
/// does not give the addresses leaves the block as it is (the process is non-dumpable anyway).
fn scrub_initial_environment(prefix: &[u8]) {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return;
    };
    // Fields after the command name (which may hold spaces) start at field 3.
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // env_start and env_end are fields 50 and 51 (1-based), so 47 and 48 of `rest`.
    let (Some(start), Some(end)) = (
        fields.get(47).and_then(|f| f.parse::<usize>().ok()),
        fields.get(48).and_then(|f| f.parse::<usize>().ok()),
    ) else {
        return;
    };
    if start == 0 || end <= start {
        return;
    }
    // SAFETY: [start, end) is this process's own environment block, mapped writable at the
    // top of the main thread's stack for the life of the process; nothing else runs (see
    // `harden_process`), and the only writes are NUL bytes inside the block. Entries that
    // `environ` still points to read as empty values until they are removed just after.
    let block = unsafe { std::slice::from_raw_parts_mut(start as *mut u8, end - start) };
    let mut i = 0;
    while i < block.len() {
        let len = block[i..]
            .iter()
            .position(|b| *b == 0)
            .unwrap_or(block.len() - i);
        let entry = &mut block[i..i + len];
        if entry.starts_with(prefix)
            && let Some(eq) = entry.iter().position(|b| *b == b'=')
        {
            entry[eq + 1..].fill(0);
        }
        i += len + 1;
    }
}

async fn dispatch(
    cli: Cli,
    app: AppBuilder,
    config_env: std::collections::HashMap<String, String>,
) -> i32 {
    let command = cli.command.unwrap_or(Cmd::Run);
    // `next` needs no config at all.
    if let Cmd::Next { expr, tz, from, n } = &command {
        return next(expr, tz, from.as_deref(), *n);
    }
    // Nor does `tcex deps`: it works on an app folder.
    if let Cmd::Tcex {
        which: TcexCmd::Deps { app, python },
    } = &command
    {
        return match soarjobd_jobs::tcex_app::build_deps(app, python) {
            Ok(lib) => {
                println!("{}", lib.display());
                exit::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                exit::FAILURE
            }
        };
    }
    // Nor does `migrate-state`: both databases are named on the command line.
    if let Cmd::MigrateState { from, to } = &command {
        return crate::replicas::migrate_state(from, to).await;
    }
    // The platform sections are checked with the rest: `check` and `run` report every
    // problem of the file and the environment at once.
    let loaded = config::load_with(
        &Sources {
            file: cli.config.clone(),
            // Taken out of the process environment at start (`harden_process`).
            env: Some(config_env),
        },
        &app.section_specs(),
    );
    if let Cmd::Check { json, verbose } = command {
        return check(app, loaded, json, verbose);
    }
    let mut settings = match loaded {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::USAGE;
        }
    };
    if let Some(f) = cli.log_format.as_deref().and_then(LogFormat::parse) {
        settings.log.format = f;
    }
    if let Some(l) = cli.log_level {
        settings.log.level = l;
    }
    soarjobd_engine::telemetry::init(settings.log.format, &settings.log.level);
    match command {
        Cmd::Run => run(app.settings(settings)).await,
        // `list` and `history` read the store and the job files: a broken platform section
        // (which `check` reports) must not hide the history.
        Cmd::List { json } => {
            crate::inspect::list(&app.settings(settings).assemble().0, json).await
        }
        Cmd::History {
            job_id,
            limit,
            json,
        } => {
            let app = app.settings(settings).assemble().0;
            crate::inspect::history(&app, &job_id, limit, json).await
        }
        Cmd::RunOnce { job_id, params } => match app.settings(settings).build() {
            Ok(app) => crate::inspect::run_once(&app, &job_id, &params).await,
            Err(e) => {
                for p in &e.problems {
                    eprintln!("error: {p}");
                }
                exit::USAGE
            }
        },
        Cmd::Pause { job_id, reason } => {
            let app = app.settings(settings).assemble().0;
            crate::ops_cli::pause(&app, &job_id, reason.as_deref()).await
        }
        Cmd::Resume { job_id, catch_up } => {
            let app = app.settings(settings).assemble().0;
            crate::ops_cli::resume(&app, &job_id, catch_up).await
        }
        Cmd::Logs {
            run_id,
            follow,
            json,
        } => {
            let app = app.settings(settings).assemble().0;
            crate::ops_cli::logs(&app, run_id, follow, json).await
        }
        Cmd::Demo { data_dir, cases } => crate::demo::run(app, settings, data_dir, cases).await,
        Cmd::Sim { which } => crate::demo::sim(which).await,
        Cmd::Secops { cmd } => {
            let app = app.settings(settings).assemble().0;
            match cmd {
                SecopsCmd::ImportState {
                    job_id,
                    identifier,
                    script_names,
                    keys,
                    dry_run,
                    json,
                } => {
                    let req = crate::secops_cli::ImportState {
                        job_id,
                        identifier,
                        script_names,
                        keys,
                        dry_run,
                        json,
                    };
                    crate::secops_cli::import_state(&app, &req).await
                }
                SecopsCmd::Install { folders, online } => {
                    crate::secops_cli::install(&app, &folders, online)
                }
            }
        }
        Cmd::Probe { addr, path } => probe(&settings, addr, &path).await,
        Cmd::Nodes { json } => {
            crate::replicas::nodes(&app.settings(settings).assemble().0, json).await
        }
        Cmd::Check { .. } | Cmd::Next { .. } | Cmd::MigrateState { .. } | Cmd::Tcex { .. } => {
            unreachable!("handled above")
        }
    }
}

async fn run(app: AppBuilder) -> i32 {
    let app = match app.build() {
        Ok(app) => app,
        Err(e) => {
            tracing::error!(error = %error_chain(&e), "cannot start the daemon");
            return exit::FAILURE;
        }
    };
    let admin = match crate::admin::Admin::bind(app.settings()).await {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the admin server");
            return exit::FAILURE;
        }
    };
    match admin.daemon(app.daemon()).start().await {
        Ok(d) => {
            let server = match admin.start(&d) {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the admin server");
                    d.shutdown().await;
                    return exit::FAILURE;
                }
            };
            d.run_until_signal().await;
            if let Some(s) = server {
                s.stop().await;
            }
            exit::SUCCESS
        }
        Err(soarjobd_engine::DaemonError::StoppedDuringStart) => {
            tracing::info!("shutdown requested during startup; daemon stopped");
            exit::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %error_chain(&e), "cannot start the daemon");
            match e {
                // A second daemon on one database is a usage error: say who holds it.
                soarjobd_engine::DaemonError::Lock(soarjobd_store::LockError::InUse { .. })
                | soarjobd_engine::DaemonError::Exec(_) => {
                    eprintln!("error: {e}");
                    exit::USAGE
                }
                _ => exit::FAILURE,
            }
        }
    }
}

/// `soarjobd probe`.
async fn probe(settings: &Settings, addr: Option<std::net::SocketAddr>, path: &str) -> i32 {
    let addr = match addr {
        Some(a) => a,
        None => match soarjobd_admin::config::from_settings(settings) {
            Ok(a) => match a.listen {
                Some(a) if a.ip().is_unspecified() => {
                    std::net::SocketAddr::new(std::net::Ipv4Addr::LOCALHOST.into(), a.port())
                }
                Some(a) => a,
                None => {
                    eprintln!("error: the admin server is off (admin.listen: off)");
                    return exit::USAGE;
                }
            },
            Err(p) => {
                eprintln!("error: {}", soarjobd_core::config::grammar::join(&p));
                return exit::USAGE;
            }
        },
    };
    match crate::admin::probe(addr, path).await {
        Ok(true) => exit::SUCCESS,
        Ok(false) => {
            eprintln!("unhealthy: http://{addr}{path} did not answer 200");
            exit::FAILURE
        }
        Err(e) => {
            eprintln!("unhealthy: {e}");
            exit::FAILURE
        }
    }
}

/// `soarjobd next`.
pub fn next(expr: &str, tz: &str, from: Option<&str>, n: usize) -> i32 {
    let tz = match parse_timezone(tz) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::USAGE;
        }
    };
    let from: DateTime<Utc> = match from {
        None => Utc::now(),
        Some(s) => match DateTime::parse_from_rfc3339(s) {
            Ok(t) => t.with_timezone(&Utc),
            Err(e) => {
                eprintln!(
                    "error: invalid --from `{s}`: {e} (expected RFC 3339, e.g. 2027-03-13T00:00:00Z)"
                );
                return exit::USAGE;
            }
        },
    };
    let schedule = match Schedule::parse_expr(expr, tz) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::USAGE;
        }
    };
    let mut out = std::io::stdout().lock();
    for t in schedule.ticks_after(from, n) {
        let _ = writeln!(out, "{}", format_instant(t, tz));
    }
    exit::SUCCESS
}

/// An instant in the zone's local time with its offset, to the second.
pub fn format_instant(t: DateTime<Utc>, tz: chrono_tz::Tz) -> String {
    t.with_timezone(&tz)
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// `soarjobd check`.
fn check(
    app: AppBuilder,
    loaded: Result<Settings, config::ConfigError>,
    json_out: bool,
    verbose: bool,
) -> i32 {
    let mut errors: Vec<LoadError> = Vec::new();
    let settings = match loaded {
        Ok(s) => s,
        Err(e) => {
            let file = e.file.clone().unwrap_or_else(|| PathBuf::from("<config>"));
            for p in &e.problems {
                // Located like job files; a value from the environment names its variable.
                let (file, line, column) = match &p.origin {
                    Some(config::Origin::File { file, pos }) => {
                        (file.clone(), pos.line, pos.column)
                    }
                    Some(config::Origin::Env { var }) => (PathBuf::from(var), 0, 0),
                    None => (file.clone(), 0, 0),
                };
                errors.push(LoadError {
                    file,
                    line,
                    column,
                    message: p.message.clone(),
                });
            }
            Settings::default()
        }
    };
    let config_file = settings
        .file
        .clone()
        .unwrap_or_else(|| PathBuf::from("<config>"));
    let (app, problems) = app.settings(settings).assemble();
    errors.extend(problems.into_iter().map(|message| LoadError {
        file: config_file.clone(),
        line: 0,
        column: 0,
        message,
    }));
    let report = app.load_jobs();
    errors.extend(report.errors.iter().cloned());
    let now = Utc::now();
    let jobs: Vec<_> = report
        .jobs
        .iter()
        .map(|d| {
            let tz = d.schedule.timezone();
            let next: Vec<String> = if d.enabled {
                d.schedule
                    .ticks_after(now, 3)
                    .into_iter()
                    .map(|t| format_instant(d.schedule.fire_at(&d.id, t), tz))
                    .collect()
            } else {
                Vec::new()
            };
            (d, next)
        })
        .collect();
    let mut out = std::io::stdout().lock();
    if json_out {
        let doc = json!({
            "jobs": jobs.iter().map(|(d, next)| json!({
                "id": d.id,
                "name": d.name,
                "job": d.implementation,
                "enabled": d.enabled,
                "schedule": d.schedule.describe(),
                "next": next,
                "uses": d.uses.as_ref().map(|u| u.display().to_string()),
                "ignored_keys": d.ignored_keys,
            })).collect::<Vec<_>>(),
            "warnings": report.warnings.iter().map(|e| json!({
                "file": e.file.display().to_string(),
                "line": e.line,
                "column": e.column,
                "message": e.message,
            })).collect::<Vec<_>>(),
            "errors": errors.iter().map(|e| json!({
                "file": e.file.display().to_string(),
                "line": e.line,
                "column": e.column,
                "message": e.message,
            })).collect::<Vec<_>>(),
        });
        let _ = writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&doc).unwrap_or_default()
        );
    } else {
        for (d, next) in &jobs {
            let _ = writeln!(
                out,
                "{}  job={}  {}  {}  next: {}",
                d.id,
                d.implementation,
                if d.enabled { "enabled" } else { "disabled" },
                d.schedule.describe(),
                if next.is_empty() {
                    "-".to_string()
                } else {
                    next.join(", ")
                }
            );
            if verbose {
                if let Some(u) = &d.uses {
                    let _ = writeln!(out, "  uses: {}", u.display());
                }
                if !d.ignored_keys.is_empty() {
                    let _ = writeln!(
                        out,
                        "  ignored SecOps-only keys: {}",
                        d.ignored_keys.join(", ")
                    );
                }
            }
        }
        for w in &report.warnings {
            let _ = writeln!(out, "warning: {w}");
        }
        for e in &errors {
            let _ = writeln!(out, "{e}");
        }
        let _ = writeln!(
            out,
            "{} job(s) valid, {} error(s)",
            jobs.len(),
            errors.len()
        );
    }
    if errors.is_empty() {
        exit::SUCCESS
    } else {
        exit::FAILURE
    }
}
