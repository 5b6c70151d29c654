//! What a SecOps script is given: how it is started (a script, or a module of its
//! integration package), its job keys (`script`, `python`, `env`), its parameters as the SDK
//! reads them, and the job instance `GetInstalledJobs` lists.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

use soarjobd_core::JobContext;
use soarjobd_core::definition::{FieldError, ParamValue};

/// How a script is started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Launch {
    /// As `python <script>`, in the script's folder.
    Script,
    /// As `python -m <module>`, in `root` (on `PYTHONPATH` too). A script whose file name is
    /// not an identifier (`Clear Empty Cases Job.py`) runs under a derived name inside its
    /// package (`<integration>.jobs.Clear_Empty_Cases_Job`), its file unchanged.
    Module { module: String, root: PathBuf },
}

/// The launcher every script starts through (`python -c BOOTSTRAP <script> <module or ""> <API
/// key> [--logPath=...]`): it makes `sys.argv` what the platform gives (`[<script>, <API key>,
/// options...]`), lets the SDK's run folder follow `RUN_FOLDER`, and runs the script as
/// `__main__`: by path, or as a module of its integration package (relative imports work; a
/// non-identifier file name is loaded from its file under the derived module name).
pub(super) const BOOTSTRAP: &str = r#"
import importlib.util, os, runpy, sys, types
script, module = sys.argv[1], sys.argv[2]
sys.argv = [script] + sys.argv[3:]
rf = os.environ.get("RUN_FOLDER")
if rf:
    # The SDK reads its run folder from its sdk_config.ini; the job's RUN_FOLDER wins.
    for name in ("SiemplifySdkConfig", "soar_sdk.SiemplifySdkConfig"):
        try:
            m = importlib.import_module(name)
        except Exception:
            continue
        cls = getattr(m, "SiemplifySdkConfig", None)
        if cls is not None and not getattr(cls, "_soarjobd_run_folder", False):
            init = cls.__init__
            def patched(self, *a, __init=init, **k):
                __init(self, *a, **k)
                self.run_folder_path = os.environ["RUN_FOLDER"]
            cls.__init__ = patched
            cls._soarjobd_run_folder = True
if not module:
    sys.path[0] = os.path.dirname(os.path.abspath(script))
    runpy.run_path(script, run_name="__main__")
else:
    package, _, leaf = module.rpartition(".")
    importlib.import_module(package)
    spec = importlib.util.spec_from_file_location(module, script)
    main = types.ModuleType("__main__")
    main.__file__ = script
    main.__spec__ = spec
    main.__loader__ = spec.loader
    main.__package__ = package
    sys.modules["__main__"] = main
    sys.modules[module] = main
    with open(script, "rb") as f:
        code = compile(f.read(), script, "exec")
    exec(code, main.__dict__)
"#;

pub(super) struct Config {
    pub script: PathBuf,
    pub python: Option<String>,
    pub env: Vec<(String, String)>,
}

impl Config {
    pub(super) fn parse(extra: &Map<String, Value>, errs: &mut Vec<FieldError>) -> Option<Config> {
        let script = match extra.get("script") {
            Some(Value::String(s)) if !s.is_empty() => Some(PathBuf::from(s)),
            Some(_) => {
                errs.push(FieldError::new("script", "`script` must be a path"));
                None
            }
            None => {
                errs.push(FieldError::new(
                    "job",
                    "a `secops-script` job needs `script` (or a `<Name>.py` beside its definition)",
                ));
                None
            }
        };
        let python = match extra.get("python") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(_) => {
                errs.push(FieldError::new(
                    "python",
                    "`python` must be a program name or path",
                ));
                None
            }
        };
        let env = crate::process::parse_env(
            extra,
            |k| {
                matches!(k, "APP_IP" | "APP_PORT" | "APP_USE_SSL")
                    .then(|| format!("`{k}` is set by soarjobd (it points at the SDK gateway)"))
            },
            errs,
        );
        Some(Config {
            script: script?,
            python,
            env,
        })
    }

    /// The script's path: absolute, or relative to the job file's folder. Made absolute,
    /// since the script runs in another working directory than the daemon's.
    pub(super) fn script_path(&self, job_file: &Path) -> PathBuf {
        absolute(
            &job_file
                .parent()
                .unwrap_or(Path::new(""))
                .join(&self.script),
        )
    }
}

/// `p` against the daemon's working directory (a relative jobs folder gives relative paths).
pub(super) fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        return p.to_path_buf();
    }
    std::env::current_dir()
        .map(|d| d.join(p))
        .unwrap_or_else(|_| p.to_path_buf())
}

/// Whether the script imports its integration package-relatively, and if so how to run it
/// as a module: `<integration>/jobs/<Name>.py` -> `<integration>.jobs.<Name>` from the
/// integration's parent.
pub(super) fn launch_for(script: &Path, source: &str) -> Result<Launch, String> {
    let relative = source.lines().any(|l| {
        let l = l.trim_start();
        l.starts_with("from .") || l.starts_with("import .")
    });
    if !relative {
        return Ok(Launch::Script);
    }
    let ident = |s: &str| {
        let mut c = s.chars();
        c.next()
            .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
            && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
    };
    let stem = script.file_stem().and_then(|s| s.to_str()).unwrap_or("");
    let jobs = script.parent();
    let integration = jobs.and_then(Path::parent);
    let (Some(jobs), Some(integration)) = (jobs, integration) else {
        return Err(
            "a script with package-relative imports must sit in <integration>/jobs/".into(),
        );
    };
    let name = |p: &Path| {
        p.file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("")
            .to_string()
    };
    let parts = [name(integration), name(jobs), derived_name(stem)];
    if let Some(bad) = parts[..2].iter().find(|p| !ident(p)) {
        return Err(format!(
            "the script uses package-relative imports, so it runs as the module \
             `{}`; the folder name `{bad}` is not a Python identifier",
            parts.join(".")
        ));
    }
    Ok(Launch::Module {
        module: parts.join("."),
        root: integration.parent().unwrap_or(Path::new("/")).to_path_buf(),
    })
}

/// A module name for a file stem: itself when it is an identifier, else every other character
/// as `_` (and a leading `_` before a digit): `Clear Empty Cases Job` -> `Clear_Empty_Cases_Job`.
pub(super) fn derived_name(stem: &str) -> String {
    let mut out: String = stem
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// Whether `program` can be started: a path to an executable file, or a name found in the
/// daemon's `PATH` (as `exec` checks its program).
pub(crate) fn find_program(program: &str) -> bool {
    use crate::process::{executable, in_path};
    if program.contains('/') {
        return executable(Path::new(program)).is_ok();
    }
    let cwd = std::env::current_dir().unwrap_or_default();
    std::env::var("PATH").is_ok_and(|path| in_path(program, &path, &cwd))
}

/// This job instance as `GetInstalledJobs` lists it (TIPCommon reads its parameter list from
/// there, matching `uniqueIdentifier` with the stdin's `unique_identifier`). Values are the
/// instance's, except passwords, which travel only on stdin.
pub(super) fn installed_job(ctx: &JobContext) -> Value {
    use soarjobd_core::definition::ParamType;
    let parameters: Vec<Value> = ctx
        .params()
        .iter()
        .map(|p| {
            // ScriptParamType codes (soar-api.md §6); csv is a string there.
            let code = match p.ty {
                ParamType::Boolean => 0,
                ParamType::Integer => 1,
                ParamType::String | ParamType::Csv => 2,
                ParamType::Password => 3,
                ParamType::Ip => 4,
                ParamType::IpOrHost => 5,
                ParamType::Url => 6,
                ParamType::Domain => 7,
                ParamType::Email => 8,
            };
            let value = match p.ty {
                ParamType::Password => String::new(),
                _ => param_text(&p.value),
            };
            json!({
                "name": p.name,
                "displayName": p.name,
                "isMandatory": p.mandatory,
                "mandatory": p.mandatory,
                "type": code,
                "value": value,
            })
        })
        .collect();
    json!([{
        "uniqueIdentifier": ctx.job_id(),
        "name": ctx.definition().name,
        "isEnabled": ctx.definition().enabled,
        "parameters": parameters,
    }])
}

/// A parameter as the SDK gets it: its text, as typed in the SecOps UI.
pub(super) fn param_text(v: &ParamValue) -> String {
    match v.to_exposed_json() {
        Value::String(s) => s,
        Value::Null => String::new(),
        Value::Array(items) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| i.to_string())
            })
            .collect::<Vec<_>>()
            .join(","),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::{Launch, launch_for};

    #[test]
    fn package_relative_imports_run_as_a_module() {
        let script = Path::new("/srv/integrations/tools/jobs/TagCases.py");
        assert_eq!(launch_for(script, "import json\n"), Ok(Launch::Script));
        assert_eq!(
            launch_for(script, "from ..core.Manager import Manager\n"),
            Ok(Launch::Module {
                module: "tools.jobs.TagCases".into(),
                root: "/srv/integrations".into(),
            })
        );
        let spaced = Path::new("/srv/integrations/tools/jobs/Tag Cases.py");
        assert_eq!(
            launch_for(spaced, "from ..core import x\n"),
            Ok(Launch::Module {
                module: "tools.jobs.Tag_Cases".into(),
                root: "/srv/integrations".into(),
            })
        );
        let bad = Path::new("/srv/integrations/my tools/jobs/Tag.py");
        let e = launch_for(bad, "from ..core import x\n").unwrap_err();
        assert!(e.contains("`my tools` is not a Python identifier"), "{e}");
    }
}
