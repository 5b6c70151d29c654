//! The `secops` section: the interpreter, the data directory (per-job run folders, the
//! integrations' environments), where `secops install` takes the SDK and the wheels from.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use soarjobd_core::config::{Origins, Problem, Section, Settings};

/// `secops.integrations`: integration instances answered locally by the gateway (the SDK's and
/// TIPCommon's configuration calls), keyed by the identifier the script asks for (the
/// integration's name, or an instance identifier). Values may be secrets, so `Debug` shows
/// the names only.
#[derive(Clone, Default)]
pub struct Integrations(pub BTreeMap<String, Map<String, Value>>, Vec<String>);

impl fmt::Debug for Integrations {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map()
            .entries(
                self.0
                    .iter()
                    .map(|(k, v)| (k, v.keys().collect::<Vec<_>>())),
            )
            .finish()
    }
}

impl Integrations {
    /// The instance the SDK asks for by `identifier`: exactly, else ignoring case.
    pub fn get(&self, identifier: &str) -> Option<&Map<String, Value>> {
        self.0.get(identifier).or_else(|| {
            self.0
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(identifier))
                .map(|(_, v)| v)
        })
    }

    /// Every value that came from `value_from_env`/`value_from_file` (to redact).
    pub fn secrets(&self) -> Vec<String> {
        self.1.clone()
    }
}

/// A SecOps vault placeholder (`[Vault:::Provider:::Instance:::Secret]`): the SDK resolves it
/// against the platform's vault, which soarjobd does not have.
fn is_vault_placeholder(s: &str) -> bool {
    s.matches(":::").count() >= 1 && s.contains('[') && s.contains(']')
}

fn read_integrations(value: Option<&Value>, s: &mut Section<'_>) -> Integrations {
    let mut out = BTreeMap::new();
    let mut secrets = Vec::new();
    let Some(value) = value else {
        return Integrations(out, secrets);
    };
    let Some(map) = value.as_object() else {
        s.problem(
            "integrations",
            "`secops.integrations` must be a mapping of integration instances",
        );
        return Integrations(out, secrets);
    };
    for (name, params) in map {
        let Some(params) = params.as_object() else {
            s.problem(
                "integrations",
                format!(
                    "`secops.integrations.{name}` must be a mapping of parameter names to values"
                ),
            );
            continue;
        };
        let mut resolved = Map::new();
        for (param, v) in params {
            let at = format!("secops.integrations.{name}.{param}");
            let (text, secret) = match v {
                Value::String(t) => (Some(t.clone()), false),
                Value::Number(_) | Value::Bool(_) => (Some(v.to_string()), false),
                Value::Null => (Some(String::new()), false),
                Value::Object(o) if o.len() == 1 && o.contains_key("value_from_env") => {
                    let var = o["value_from_env"].as_str().unwrap_or_default();
                    match std::env::var(var) {
                        Ok(t) => (Some(t), true),
                        Err(_) => {
                            s.problem(
                                "integrations",
                                format!("`{at}`: the environment variable `{var}` is not set"),
                            );
                            (None, true)
                        }
                    }
                }
                Value::Object(o) if o.len() == 1 && o.contains_key("value_from_file") => {
                    let file = o["value_from_file"].as_str().unwrap_or_default();
                    match std::fs::read_to_string(file) {
                        Ok(t) => (Some(t.strip_suffix('\n').unwrap_or(&t).to_string()), true),
                        Err(e) => {
                            s.problem("integrations", format!("`{at}`: cannot read `{file}`: {e}"));
                            (None, true)
                        }
                    }
                }
                _ => {
                    s.problem(
                        "integrations",
                        format!("`{at}` must be a text, a number, a boolean, or one of value_from_env / value_from_file"),
                    );
                    (None, false)
                }
            };
            let Some(text) = text else { continue };
            if is_vault_placeholder(&text) {
                // Never quote a value that may be a secret.
                s.problem(
                    "integrations",
                    format!(
                        "`{at}` is a SecOps vault placeholder{}; soarjobd has no vault: give the \
                         value with value_from_env or value_from_file",
                        if secret { "" } else { " ([...:::...])" }
                    ),
                );
                continue;
            }
            if secret && !text.is_empty() {
                secrets.push(text.clone());
            }
            resolved.insert(param.clone(), Value::String(text));
        }
        out.insert(name.clone(), resolved);
    }
    Integrations(out, secrets)
}

/// What the `secops` section says.
#[derive(Debug, Clone, Default)]
pub struct SecopsSettings {
    /// `secops.python`: the interpreter of jobs whose integration has no environment.
    pub python: Option<String>,
    /// `secops.data_dir`: per-job run folders (`run/<job>`) and the integrations'
    /// environments (`venvs/`). Default: `secops/` beside the SQLite database, else
    /// `/var/lib/soarjobd/secops`.
    pub data_dir: PathBuf,
    /// `secops.sdk`: the SOAR SDK, a source folder (holding `soar_sdk/`, or the `soar_sdk`
    /// folder itself) or a wheel.
    pub sdk: Option<PathBuf>,
    /// `secops.wheels`: folders of wheels (TIPCommon, EnvironmentCommon, ...) installed from
    /// before any index.
    pub wheels: Vec<PathBuf>,
    /// `secops.integrations`: instances answered locally.
    pub integrations: Integrations,
}

impl SecopsSettings {
    /// Reads the section (absent: the defaults), with every problem.
    pub fn read(
        value: Option<&Value>,
        origins: &Origins,
        settings: &Settings,
    ) -> (SecopsSettings, Vec<Problem>) {
        let mut s = Section::new("secops", value, origins);
        let python = s.string("python").filter(|p| !p.trim().is_empty());
        let data_dir = s
            .path("data_dir")
            .unwrap_or_else(|| default_data_dir(&settings.database_url));
        let sdk = s.path("sdk");
        let wheels = s
            .string_list("wheels")
            .unwrap_or_default()
            .into_iter()
            .map(PathBuf::from)
            .collect();
        let raw = s.value("integrations");
        let integrations = read_integrations(raw, &mut s);
        (
            SecopsSettings {
                python,
                data_dir,
                sdk,
                wheels,
                integrations,
            },
            s.finish(),
        )
    }

    /// The job's run folder (`RUN_FOLDER` unless its `env` sets one): `run/<job id>`.
    pub fn run_folder(&self, job_id: &str) -> PathBuf {
        self.data_dir.join("run").join(job_id)
    }

    /// Where the integrations' virtual environments live.
    pub fn venvs(&self) -> PathBuf {
        self.data_dir.join("venvs")
    }
}

fn default_data_dir(database_url: &str) -> PathBuf {
    let file = database_url
        .strip_prefix("sqlite://")
        .or_else(|| database_url.strip_prefix("sqlite:"))
        .map(|p| p.split('?').next().unwrap_or(p));
    match file {
        Some(f) if !f.is_empty() && f != ":memory:" => {
            let dir = Path::new(f).parent().unwrap_or(Path::new("."));
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            dir.join("secops")
        }
        _ => PathBuf::from("/var/lib/soarjobd/secops"),
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    #[test]
    fn vault_placeholders_are_recognised() {
        assert!(super::is_vault_placeholder(
            "[AAA:::CyberArkVault:::CyberArkVault_1:::id]"
        ));
        assert!(!super::is_vault_placeholder("https://vt.example/api"));
        assert!(!super::is_vault_placeholder("plain:password"));
    }

    #[test]
    fn the_data_dir_defaults_beside_the_sqlite_database() {
        assert_eq!(
            super::default_data_dir("sqlite:/srv/soarjobd/state.db"),
            PathBuf::from("/srv/soarjobd/secops")
        );
        assert_eq!(
            super::default_data_dir("sqlite:state.db?mode=rwc"),
            PathBuf::from("./secops")
        );
        assert_eq!(
            super::default_data_dir("postgres://db/soarjobd"),
            PathBuf::from("/var/lib/soarjobd/secops")
        );
    }
}
