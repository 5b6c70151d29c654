//! `soarjobd secops ...`: moving a SecOps team's jobs over. `import-state` copies a job's
//! context properties and timestamps from the tenant into the store (so its first run here
//! continues where the platform stopped); `install` builds the integrations' environments.

use std::io::Write;

use chrono::DateTime;
use serde_json::{Value, json};

use crate::app::App;
use soarjobd_clients::soar::{SoarClient, SoarConfig};
use soarjobd_core::error_chain;
use soarjobd_core::exit;

/// The SDK's timestamp key (`fetch_timestamp` / `save_timestamp`).
const TIMESTAMP_KEY: &str = soarjobd_core::DEFAULT_TIMESTAMP_KEY;
/// Job context (soar-api.md §3.8).
const CONTEXT_JOB: i64 = 3;

/// What `import-state` is asked to import.
#[derive(Debug, Clone)]
pub struct ImportState {
    /// soarjobd's job id.
    pub job_id: String,
    /// The job instance's identifier on the tenant (its `unique_identifier`).
    pub identifier: String,
    /// The scripts' `script_name`s (default: the job's name).
    pub script_names: Vec<String>,
    /// Context property keys besides `timestamp`.
    pub keys: Vec<String>,
    pub dry_run: bool,
    pub json: bool,
}

/// One value to write: the tenant's (identifier, key) and where it goes here.
struct Found {
    tenant_identifier: String,
    key: String,
    local_key: String,
    value: Value,
    /// Unix ms, when it is the SDK's timestamp.
    millis: Option<i64>,
}

fn soar_client(app: &App) -> Result<SoarClient, String> {
    let settings = app.settings();
    match SoarConfig::read(settings.sections.get("soar"), &settings.origins) {
        Ok(Some(cfg)) => SoarClient::new(&cfg).map_err(|e| e.to_string()),
        Ok(None) => Err("no SOAR platform is configured (set soar.url and soar.app_key)".into()),
        Err(problems) => Err(problems
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ")),
    }
}

fn as_millis(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn shown(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(120) {
        Some((i, _)) => format!("{}… ({} bytes)", &s[..i], s.len()),
        None => s,
    }
}

/// `soarjobd secops import-state`.
pub async fn import_state(app: &App, req: &ImportState) -> i32 {
    let report = app.load_jobs();
    let Some(def) = report.jobs.iter().find(|d| d.id == req.job_id) else {
        eprintln!("error: no job `{}` (see `soarjobd check`)", req.job_id);
        return exit::USAGE;
    };
    if def.implementation != soarjobd_jobs::secops_script::ID {
        eprintln!(
            "error: `{}` is a `{}` job; import-state is for secops-script jobs",
            req.job_id, def.implementation
        );
        return exit::USAGE;
    }
    let client = match soar_client(app) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return exit::USAGE;
        }
    };
    let names = if req.script_names.is_empty() {
        vec![def.name.clone()]
    } else {
        req.script_names.clone()
    };
    // Where each tenant identifier's state lives here: a `script_name` is the same text; the
    // instance identifier (scoped context, `unique_identifier`) becomes this job's id, as a
    // run's stdin gives it; TIPCommon's `_<unique_identifier>` likewise.
    let mut pairs: Vec<(String, String)> = names.iter().map(|n| (n.clone(), n.clone())).collect();
    pairs.push((req.identifier.clone(), req.job_id.clone()));
    pairs.push((format!("_{}", req.identifier), format!("_{}", req.job_id)));
    let mut keys = vec![TIMESTAMP_KEY.to_string()];
    keys.extend(req.keys.iter().filter(|k| *k != TIMESTAMP_KEY).cloned());

    let mut found = Vec::new();
    for (tenant, local) in &pairs {
        for key in &keys {
            let answer = client.get_context_property(CONTEXT_JOB, tenant, key).await;
            match answer.status {
                204 => continue,
                200 => {}
                status => {
                    let text = String::from_utf8_lossy(&answer.body);
                    eprintln!(
                        "error: reading {tenant:?}/{key} from the tenant: HTTP {status}: {}",
                        text.chars().take(300).collect::<String>()
                    );
                    return exit::FAILURE;
                }
            }
            let value: Value = if answer.body.is_empty() {
                Value::Null
            } else {
                match serde_json::from_slice(&answer.body) {
                    Ok(v) => v,
                    Err(e) => {
                        eprintln!("error: {tenant:?}/{key}: the tenant's answer is not JSON: {e}");
                        return exit::FAILURE;
                    }
                }
            };
            if value.is_null() {
                continue;
            }
            let millis = (key == TIMESTAMP_KEY).then(|| as_millis(&value)).flatten();
            found.push(Found {
                tenant_identifier: tenant.clone(),
                key: key.clone(),
                local_key: format!("{local}/{key}"),
                value,
                millis,
            });
        }
    }

    let store = if req.dry_run {
        None
    } else {
        match app.open_store().await {
            Ok(s) => Some(s),
            Err(e) => {
                eprintln!("error: {}", error_chain(&e));
                return exit::FAILURE;
            }
        }
    };
    let mut out = std::io::stdout().lock();
    let mut rows = Vec::new();
    for f in &found {
        let (kind, shown_value) = match f.millis {
            Some(ms) => (
                "timestamp",
                format!(
                    "{ms} ({})",
                    DateTime::from_timestamp_millis(ms)
                        .map(|t| t.to_rfc3339())
                        .unwrap_or_else(|| "out of range".into())
                ),
            ),
            None => ("context", shown(&f.value)),
        };
        if let Some(store) = &store {
            let written = match f.millis {
                Some(ms) => store.set_timestamp(&req.job_id, &f.local_key, ms).await,
                None => store.context_set(&req.job_id, &f.local_key, &f.value).await,
            };
            if let Err(e) = written {
                eprintln!("error: writing {}: {}", f.local_key, error_chain(&e));
                return exit::FAILURE;
            }
        }
        rows.push(json!({
            "kind": kind,
            "tenant": {"identifier": f.tenant_identifier, "key": f.key},
            "key": f.local_key,
            "value": f.millis.map(Value::from).unwrap_or_else(|| f.value.clone()),
        }));
        if !req.json {
            let _ = writeln!(
                out,
                "{} {kind} {}: {shown_value}  (tenant {:?} / {})",
                if req.dry_run { "would write" } else { "wrote" },
                f.local_key,
                f.tenant_identifier,
                f.key
            );
        }
    }
    if let Some(store) = store {
        store.close().await;
    }
    if req.json {
        let _ = writeln!(
            out,
            "{}",
            serde_json::to_string_pretty(&json!({
                "job": req.job_id, "dry_run": req.dry_run, "values": rows,
            }))
            .unwrap_or_default()
        );
    } else if found.is_empty() {
        let _ = writeln!(
            out,
            "nothing to import: the tenant has no job state under {:?} (keys: {})",
            pairs.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>(),
            keys.join(", ")
        );
    } else if req.dry_run {
        let _ = writeln!(out, "dry run: nothing written");
    }
    exit::SUCCESS
}

/// `soarjobd secops install <integration folder>...`: each integration's environment, built
/// (or found up to date) under `secops.data_dir`; progress on stderr, one summary line per
/// integration on stdout. Offline unless `online` (then the package index after the wheels).
pub fn install(app: &App, folders: &[std::path::PathBuf], online: bool) -> i32 {
    use soarjobd_jobs::secops_script::{DEFAULT_PYTHON, Installed, SecopsSettings, install};
    let settings = app.settings();
    let (secops, problems) =
        SecopsSettings::read(settings.sections.get("secops"), &settings.origins, settings);
    if !problems.is_empty() {
        for p in &problems {
            eprintln!("error: {p}");
        }
        return exit::USAGE;
    }
    let python = secops
        .python
        .clone()
        .unwrap_or_else(|| DEFAULT_PYTHON.to_string());
    let n = folders.len();
    let mut failed = 0;
    let mut out = std::io::stdout().lock();
    for (i, folder) in folders.iter().enumerate() {
        let mut progress = |line: &str| eprintln!("[{}/{n}] {line}", i + 1);
        match install(&secops, &python, folder, !online, &mut progress) {
            Ok(Installed::Built(venv)) => {
                let _ = writeln!(out, "installed {} -> {}", folder.display(), venv.display());
            }
            Ok(Installed::UpToDate(venv)) => {
                let _ = writeln!(out, "up to date {} -> {}", folder.display(), venv.display());
            }
            Err(e) => {
                failed += 1;
                eprintln!("error: {}: {e}", folder.display());
            }
        }
    }
    if failed > 0 {
        exit::FAILURE
    } else {
        exit::SUCCESS
    }
}
