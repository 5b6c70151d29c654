//! The integrations' Python environments (`soarjobd secops install`): one virtual
//! environment per integration, keyed by what it is built from (its dependency lock, the
//! SDK, the local wheels, the interpreter), under `<secops.data_dir>/venvs/<integration>/`.
//! Built offline from local wheels (`pip install --no-index --find-links`), the SOAR SDK
//! made importable as it needs (its package folder itself on `sys.path`); a finished one is
//! reused (idempotent). A job whose script sits in `<integration>/jobs/` runs with its
//! integration's environment unless it names a `python`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use super::settings::SecopsSettings;

/// A provisioning failure, with what was being done.
#[derive(Debug)]
pub struct ProvisionError(pub String);

impl fmt::Display for ProvisionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ProvisionError {}

fn err(msg: impl Into<String>) -> ProvisionError {
    ProvisionError(msg.into())
}

/// The file, in an integration's environments folder, naming the current environment.
const CURRENT: &str = "current";
/// Written last into a finished environment.
const COMPLETE: &str = ".soarjobd-complete";
/// Names of the SDK as a dependency: it comes from `secops.sdk`, not from the wheels.
const SDK_NAMES: &[&str] = &["soar-sdk", "soar_sdk", "siemplify", "soarsdk"];

/// The integration a script belongs to: `<integration>/jobs/<Name>.py` gives the
/// integration's folder name and path.
pub fn integration_of(script: &Path) -> Option<(String, PathBuf)> {
    let jobs = script.parent()?;
    if jobs.file_name()?.to_str()? != "jobs" {
        return None;
    }
    let integration = jobs.parent()?;
    let name = integration.file_name()?.to_str()?.to_string();
    Some((name, integration.to_path_buf()))
}

/// Whether the integration declares dependencies (so it needs an environment).
pub fn declares_dependencies(folder: &Path) -> bool {
    folder.join("pyproject.toml").is_file() || folder.join("requirements.txt").is_file()
}

/// The interpreter of the integration's installed environment, if there is one.
pub fn installed_python(settings: &SecopsSettings, integration: &str) -> Option<PathBuf> {
    let dir = settings.venvs().join(integration);
    let key = std::fs::read_to_string(dir.join(CURRENT)).ok()?;
    let venv = dir.join(key.trim());
    venv.join(COMPLETE)
        .is_file()
        .then(|| venv.join("bin").join("python"))
}

/// The requirements an integration declares: `[project] dependencies` of its
/// `pyproject.toml` (the list of strings), else `requirements.txt` (one per line, comments
/// and options left out). The SDK itself is left out: it comes from `secops.sdk`.
pub fn dependencies(folder: &Path) -> Result<Vec<String>, ProvisionError> {
    let mut deps = Vec::new();
    let pyproject = folder.join("pyproject.toml");
    if pyproject.is_file() {
        let text = std::fs::read_to_string(&pyproject)
            .map_err(|e| err(format!("cannot read {}: {e}", pyproject.display())))?;
        deps = pyproject_dependencies(&text);
    } else {
        let req = folder.join("requirements.txt");
        if req.is_file() {
            let text = std::fs::read_to_string(&req)
                .map_err(|e| err(format!("cannot read {}: {e}", req.display())))?;
            deps = text
                .lines()
                .map(|l| l.split('#').next().unwrap_or("").trim())
                .filter(|l| !l.is_empty() && !l.starts_with('-'))
                .map(str::to_string)
                .collect();
        }
    }
    deps.retain(|d| {
        let name = d
            .split(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.'))
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        !SDK_NAMES.contains(&name.as_str())
    });
    Ok(deps)
}

/// `dependencies = [ "a>=1", "b" ]` of the `[project]` table (a list of strings, possibly
/// over several lines). Enough of TOML for the content hub's `pyproject.toml` files.
fn pyproject_dependencies(text: &str) -> Vec<String> {
    let mut in_project = false;
    let mut collecting = false;
    let mut list = String::new();
    for line in text.lines() {
        let t = line.trim();
        if !collecting && t.starts_with('[') {
            in_project = t == "[project]";
            continue;
        }
        if in_project && !collecting {
            if let Some(rest) = t.strip_prefix("dependencies")
                && let Some(rest) = rest.trim_start().strip_prefix('=')
            {
                collecting = true;
                list.push_str(rest);
            }
        } else if collecting {
            list.push_str(t);
        }
        if collecting && list.contains(']') {
            break;
        }
    }
    let mut out = Vec::new();
    let mut chars = list.chars();
    while let Some(c) = chars.next() {
        if c == '"' || c == '\'' {
            let s: String = chars.by_ref().take_while(|x| *x != c).collect();
            if !s.trim().is_empty() {
                out.push(s.trim().to_string());
            }
        } else if c == ']' {
            break;
        }
    }
    out
}

/// What the environment of `folder` is built from, hashed: its key.
fn env_key(
    python_version: &str,
    folder: &Path,
    deps: &[String],
    settings: &SecopsSettings,
) -> Result<String, ProvisionError> {
    let mut h = Sha256::new();
    h.update(python_version.as_bytes());
    for d in deps {
        h.update(b"\0dep\0");
        h.update(d.as_bytes());
    }
    // The lock, when there is one, pins what the ranges leave open.
    for lock in ["uv.lock", "requirements.txt", "pyproject.toml"] {
        if let Ok(bytes) = std::fs::read(folder.join(lock)) {
            h.update(b"\0lock\0");
            h.update(lock.as_bytes());
            h.update(&bytes);
        }
    }
    if let Some(sdk) = &settings.sdk {
        h.update(b"\0sdk\0");
        hash_tree(&mut h, sdk)?;
    }
    for dir in &settings.wheels {
        h.update(b"\0wheels\0");
        hash_tree(&mut h, dir)?;
    }
    let digest = h.finalize();
    Ok(digest.iter().take(8).map(|b| format!("{b:02x}")).collect())
}

/// Names and contents of the files under `p` (sorted), into `h`.
fn hash_tree(h: &mut Sha256, p: &Path) -> Result<(), ProvisionError> {
    let meta = std::fs::metadata(p).map_err(|e| err(format!("{}: {e}", p.display())))?;
    if meta.is_file() {
        let bytes = std::fs::read(p).map_err(|e| err(format!("{}: {e}", p.display())))?;
        h.update(
            p.file_name()
                .map(|n| n.as_encoded_bytes())
                .unwrap_or_default(),
        );
        h.update(&bytes);
        return Ok(());
    }
    let mut entries: Vec<PathBuf> = std::fs::read_dir(p)
        .map_err(|e| err(format!("{}: {e}", p.display())))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|e| {
            let n = e.file_name().and_then(|n| n.to_str()).unwrap_or("");
            n != "__pycache__" && !n.starts_with('.')
        })
        .collect();
    entries.sort();
    for e in entries {
        h.update(
            e.file_name()
                .map(|n| n.as_encoded_bytes())
                .unwrap_or_default(),
        );
        hash_tree(h, &e)?;
    }
    Ok(())
}

/// What `install` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Installed {
    /// Built now, at this path.
    Built(PathBuf),
    /// Already there (same key), at this path.
    UpToDate(PathBuf),
}

fn run(cmd: &mut Command, what: &str) -> Result<(), ProvisionError> {
    let out = cmd
        .output()
        .map_err(|e| err(format!("{what}: cannot start: {e}")))?;
    if out.status.success() {
        return Ok(());
    }
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let tail: Vec<&str> = text.lines().rev().take(15).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    Err(err(format!(
        "{what} failed ({}):\n{}",
        out.status,
        tail.join("\n")
    )))
}

/// The SDK's package folder in a source tree: `<sdk>` itself when it is `soar_sdk`, else
/// `<sdk>/soar_sdk` or `<sdk>/src/soar_sdk`.
fn sdk_package(sdk: &Path) -> Option<PathBuf> {
    [
        sdk.to_path_buf(),
        sdk.join("soar_sdk"),
        sdk.join("src").join("soar_sdk"),
    ]
    .into_iter()
    .find(|p| p.file_name().is_some_and(|n| n == "soar_sdk") && p.join("__init__.py").is_file())
}

fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for e in std::fs::read_dir(from)? {
        let e = e?;
        let name = e.file_name();
        if name == "__pycache__" {
            continue;
        }
        let (src, dst) = (e.path(), to.join(&name));
        if e.file_type()?.is_dir() {
            copy_tree(&src, &dst)?;
        } else {
            std::fs::copy(&src, &dst)?;
        }
    }
    Ok(())
}

/// Builds (or finds) the environment of the integration in `folder`, reporting progress
/// through `progress`.
pub fn install(
    settings: &SecopsSettings,
    python: &str,
    folder: &Path,
    offline: bool,
    progress: &mut dyn FnMut(&str),
) -> Result<Installed, ProvisionError> {
    let name = folder
        .canonicalize()
        .ok()
        .and_then(|p| p.file_name().and_then(|n| n.to_str()).map(str::to_string))
        .ok_or_else(|| err(format!("{} is not an integration folder", folder.display())))?;
    if !folder.join("jobs").is_dir() && !declares_dependencies(folder) {
        return Err(err(format!(
            "{} has neither jobs/ nor pyproject.toml/requirements.txt: not an integration folder",
            folder.display()
        )));
    }
    let deps = dependencies(folder)?;
    let version = Command::new(python)
        .arg("--version")
        .output()
        .map_err(|e| err(format!("cannot start `{python}`: {e}")))?;
    let version = String::from_utf8_lossy(&version.stdout).trim().to_string();
    let key = env_key(&version, folder, &deps, settings)?;
    let base = settings.venvs().join(&name);
    let venv = base.join(&key);
    if venv.join(COMPLETE).is_file() {
        std::fs::write(base.join(CURRENT), &key)
            .map_err(|e| err(format!("{}: {e}", base.display())))?;
        progress(&format!("{name}: up to date ({})", venv.display()));
        return Ok(Installed::UpToDate(venv));
    }
    std::fs::create_dir_all(&base).map_err(|e| err(format!("{}: {e}", base.display())))?;
    // Built beside, then renamed: a half-built environment is never `current`.
    let tmp = base.join(format!(".building-{key}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let result = build(settings, python, &name, &deps, &tmp, offline, progress);
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let _ = std::fs::remove_dir_all(&venv);
    std::fs::rename(&tmp, &venv).map_err(|e| err(format!("{}: {e}", venv.display())))?;
    std::fs::write(venv.join(COMPLETE), &key)
        .map_err(|e| err(format!("{}: {e}", venv.display())))?;
    std::fs::write(base.join(CURRENT), &key)
        .map_err(|e| err(format!("{}: {e}", base.display())))?;
    progress(&format!("{name}: ready ({})", venv.display()));
    Ok(Installed::Built(venv))
}

fn build(
    settings: &SecopsSettings,
    python: &str,
    name: &str,
    deps: &[String],
    venv: &Path,
    offline: bool,
    progress: &mut dyn FnMut(&str),
) -> Result<(), ProvisionError> {
    progress(&format!("{name}: creating the environment"));
    run(
        Command::new(python).arg("-m").arg("venv").arg(venv),
        &format!("{python} -m venv"),
    )?;
    let vpy = venv.join("bin").join("python");
    let mut wanted: Vec<String> = deps.to_vec();
    let sdk_wheel = settings
        .sdk
        .as_ref()
        .filter(|p| p.extension().is_some_and(|e| e == "whl"));
    if let Some(w) = sdk_wheel {
        wanted.push(w.display().to_string());
    }
    if !wanted.is_empty() {
        progress(&format!(
            "{name}: installing {} ({})",
            wanted.join(", "),
            if offline {
                "local wheels only"
            } else {
                "local wheels first"
            }
        ));
        let mut pip = Command::new(&vpy);
        pip.args([
            "-m",
            "pip",
            "install",
            "--disable-pip-version-check",
            "--no-input",
            "-q",
        ]);
        if offline {
            pip.arg("--no-index");
        }
        for dir in &settings.wheels {
            pip.arg("--find-links").arg(dir);
        }
        pip.args(&wanted);
        run(&mut pip, &format!("{name}: pip install"))?;
    }
    // The SDK imports its own modules by top-level name: its package folder itself goes on
    // the path (a .pth file), after its parent.
    let site = site_packages(&vpy)?;
    let pkg = match (&settings.sdk, sdk_wheel) {
        (Some(_), Some(_)) => Some(site.join("soar_sdk")),
        (Some(src), None) => {
            let pkg = sdk_package(src).ok_or_else(|| {
                err(format!(
                    "secops.sdk {}: no soar_sdk package folder in it (looked at soar_sdk/, \
                     src/soar_sdk/ and the folder itself)",
                    src.display()
                ))
            })?;
            progress(&format!(
                "{name}: adding the SOAR SDK from {}",
                pkg.display()
            ));
            copy_tree(&pkg, &site.join("soar_sdk"))
                .map_err(|e| err(format!("copying the SDK: {e}")))?;
            Some(site.join("soar_sdk"))
        }
        (None, _) => None,
    };
    if pkg.is_some() {
        // Relative to site-packages (as `site` reads .pth lines), so the environment stays
        // valid when its folder is renamed into place.
        std::fs::write(site.join("soarjobd_soar_sdk.pth"), "soar_sdk\n")
            .map_err(|e| err(format!("{}: {e}", site.display())))?;
    }
    Ok(())
}

fn site_packages(vpy: &Path) -> Result<PathBuf, ProvisionError> {
    let out = Command::new(vpy)
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_paths()['purelib'])",
        ])
        .output()
        .map_err(|e| err(format!("{}: {e}", vpy.display())))?;
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || path.is_empty() {
        return Err(err("cannot find the environment's site-packages"));
    }
    Ok(PathBuf::from(path))
}

/// The top-level modules a script imports (absolute imports at any indentation, not
/// `__future__`).
pub fn imported_modules(source: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for line in source.lines() {
        let t = line.trim_start();
        let names: Vec<&str> = if let Some(rest) = t.strip_prefix("import ") {
            rest.split(',')
                .map(|p| p.split_whitespace().next().unwrap_or(""))
                .collect()
        } else if let Some(rest) = t.strip_prefix("from ") {
            vec![rest.split_whitespace().next().unwrap_or("")]
        } else {
            continue;
        };
        for n in names {
            let top = n.split('.').next().unwrap_or("");
            if top.is_empty()
                || n.starts_with('.')
                || top == "__future__"
                || !top.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                continue;
            }
            if !out.iter().any(|o| o == top) {
                out.push(top.to_string());
            }
        }
    }
    out
}

/// Which of `modules` the interpreter cannot find (with `path` first on `sys.path`).
pub fn missing_modules(
    python: &Path,
    modules: &[String],
    path: &[PathBuf],
) -> Result<Vec<String>, String> {
    if modules.is_empty() {
        return Ok(Vec::new());
    }
    let code = "import importlib.util, sys\n\
                missing = [m for m in sys.argv[1:] if importlib.util.find_spec(m) is None]\n\
                print('\\n'.join(missing))\n";
    let mut cmd = Command::new(python);
    cmd.arg("-c").arg(code).args(modules);
    if let Ok(joined) = std::env::join_paths(path) {
        cmd.env("PYTHONPATH", joined);
    }
    let out = cmd
        .output()
        .map_err(|e| format!("cannot start {}: {e}", python.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} failed: {}",
            python.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}

#[cfg(test)]
mod tests {
    #[test]
    fn dependencies_are_read_from_pyproject_without_the_sdk() {
        let text = "[build-system]\nrequires = [\"x\"]\n[project]\nname = \"Acme\"\n\
                    dependencies = [\n  \"TIPCommon==2.0.0\",\n  'acme-helpers>=1.0',\n  \
                    \"soar-sdk\",\n]\n[tool.uv]\ndev-dependencies = [\"pytest\"]\n";
        let mut deps = super::pyproject_dependencies(text);
        assert_eq!(deps, ["TIPCommon==2.0.0", "acme-helpers>=1.0", "soar-sdk"]);
        deps.retain(|d| !d.starts_with("soar"));
        assert_eq!(deps.len(), 2);
    }

    #[test]
    fn imported_modules_are_the_absolute_top_levels() {
        let src = "import json, os.path as p\nfrom soar_sdk.SiemplifyJob import SiemplifyJob\n\
                   from ..core.X import Y\nfrom __future__ import annotations\n    import acme_helpers\n";
        assert_eq!(
            super::imported_modules(src),
            ["json", "os", "soar_sdk", "acme_helpers"]
        );
    }
}
