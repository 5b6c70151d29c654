//! `soarjobd tcex deps <app folder>`: the app's dependency folder, built the way TcEx's
//! packager builds it (spec §1): `pip install -r requirements.txt --target
//! lib_<major>.<minor>.<micro>` with the interpreter the app will run with, and `lib_latest`
//! a link to it. An app's `run.py` then finds it on its own, so an app runs from its source
//! checkout.

use std::path::{Path, PathBuf};
use std::process::Command;

/// Why the dependency folder could not be built.
#[derive(Debug, thiserror::Error)]
pub enum DepsError {
    #[error("{0} has no requirements.txt")]
    NoRequirements(PathBuf),
    #[error("cannot run `{python}`: {source}")]
    Python {
        python: String,
        source: std::io::Error,
    },
    #[error("`{python}` did not say its version: {output}")]
    Version { python: String, output: String },
    #[error("pip failed ({status}): {output}")]
    Pip { status: String, output: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

/// Builds `<app>/lib_<version of python>` from `<app>/requirements.txt` (replacing an older
/// one) and points `lib_latest` at it; returns the folder.
pub fn build_deps(app: &Path, python: &str) -> Result<PathBuf, DepsError> {
    let requirements = app.join("requirements.txt");
    if !requirements.is_file() {
        return Err(DepsError::NoRequirements(app.to_path_buf()));
    }
    let run = |cmd: &mut Command| {
        cmd.output().map_err(|source| DepsError::Python {
            python: python.to_string(),
            source,
        })
    };
    let out =
        run(Command::new(python)
            .args(["-c", "import sys; print('%d.%d.%d' % sys.version_info[:3])"]))?;
    let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success()
        || version.is_empty()
        || !version.chars().all(|c| c.is_ascii_digit() || c == '.')
    {
        return Err(DepsError::Version {
            python: python.to_string(),
            output: format!("{version}{}", String::from_utf8_lossy(&out.stderr)),
        });
    }
    let name = format!("lib_{version}");
    let target = app.join(&name);
    let io = |what: String| move |source| DepsError::Io { what, source };
    if target.exists() {
        std::fs::remove_dir_all(&target)
            .map_err(io(format!("cannot remove the old {}", target.display())))?;
    }
    let out = run(Command::new(python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(["--ignore-installed", "-r"])
        .arg(&requirements)
        .arg("--target")
        .arg(&target))?;
    if !out.status.success() {
        return Err(DepsError::Pip {
            status: out.status.to_string(),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        });
    }
    let latest = app.join("lib_latest");
    if latest.symlink_metadata().is_ok() {
        std::fs::remove_file(&latest)
            .map_err(io(format!("cannot replace {}", latest.display())))?;
    }
    std::os::unix::fs::symlink(&name, &latest)
        .map_err(io(format!("cannot link {}", latest.display())))?;
    Ok(target)
}
