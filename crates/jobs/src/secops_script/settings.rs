//! The `secops` section: the interpreter, the data directory (per-job run folders, the
//! integrations' environments), where `secops install` takes the SDK and the wheels from.

use std::path::{Path, PathBuf};

use serde_json::Value;

use soarjobd_core::config::{Origins, Problem, Section, Settings};

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
        // Read by `integrations` (instances answered locally).
        s.accept("integrations");
        (
            SecopsSettings {
                python,
                data_dir,
                sdk,
                wheels,
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
