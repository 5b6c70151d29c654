//! A TcEx app's `install.json` (spec `tcex-job-app-launch.md` §1): what a job app is, read
//! into the job-file grammar (the manifest hook of the definition loader), and the checks of
//! an instance's values against its params.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

use soarjobd_core::definition::{FieldError, ParamValue, Parameters};

/// The manifest's file name.
pub(crate) const INSTALL_JSON: &str = "install.json";

/// One `params[]` entry, as far as a job needs it.
#[derive(Debug, Clone)]
pub(crate) struct AppParam {
    pub name: String,
    pub ty: String,
    pub required: bool,
    pub default: Option<Value>,
    pub valid_values: Vec<String>,
    pub allow_multiple: bool,
    pub encrypt: bool,
    pub label: String,
}

impl AppParam {
    /// A list value: `MultiChoice`, or any param with `allowMultiple`.
    pub fn is_list(&self) -> bool {
        self.ty == "MultiChoice" || self.allow_multiple
    }

    /// The literal `validValues` that restrict a `Choice`/`MultiChoice` value, if they do (a
    /// list with a platform placeholder like `${OWNERS}` accepts anything).
    pub fn choices(&self) -> Option<&[String]> {
        let restricts = matches!(self.ty.as_str(), "Choice" | "MultiChoice")
            && !self.valid_values.is_empty()
            && self.valid_values.iter().all(|v| !v.contains("${"));
        restricts.then_some(self.valid_values.as_slice())
    }
}

/// The parts of `install.json` a job needs.
#[derive(Debug, Clone)]
pub(crate) struct Manifest {
    /// The app folder (the manifest's folder, absolute).
    pub dir: PathBuf,
    pub display_name: String,
    pub program_main: String,
    pub program_version: String,
    pub list_delimiter: String,
    pub params: Vec<AppParam>,
    /// `feeds[].firstRunParams`: (param, value) for the runs before the first success.
    pub first_run: Vec<(String, String)>,
}

impl Manifest {
    /// Reads `<dir>/install.json`.
    pub fn read(dir: &Path) -> Result<Manifest, Vec<String>> {
        let path = dir.join(INSTALL_JSON);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| vec![format!("cannot read {}: {e}", path.display())])?;
        Manifest::parse(dir, &text)
    }

    /// Parses the manifest of the app in `dir`; every problem at once.
    pub fn parse(dir: &Path, text: &str) -> Result<Manifest, Vec<String>> {
        let doc: Value = serde_json::from_str(text)
            .map_err(|e| vec![format!("install.json is not valid JSON: {e}")])?;
        let Some(obj) = doc.as_object() else {
            return Err(vec!["install.json must be a JSON object".into()]);
        };
        let mut errs = Vec::new();
        let text_of = |k: &str| obj.get(k).and_then(Value::as_str).map(str::to_string);
        // What tcex's own install.json model requires: tcex refuses to start without them.
        let missing: Vec<&str> = [
            "features",
            "languageVersion",
            "listDelimiter",
            "programVersion",
        ]
        .into_iter()
        .filter(|k| obj.get(*k).is_none_or(Value::is_null))
        .collect();
        if !missing.is_empty() {
            errs.push(format!(
                "install.json lacks {} (tcex refuses to start without them)",
                missing
                    .iter()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        match text_of("runtimeLevel").as_deref() {
            Some("Organization" | "System") => {}
            Some(other) => errs.push(format!(
                "runtimeLevel `{other}` is not a job app (soarjobd runs `Organization` and \
                 `System` apps; playbook, service and trigger apps are not supported)"
            )),
            None => errs.push("install.json has no `runtimeLevel`".into()),
        }
        match text_of("programLanguage") {
            Some(l) if l.eq_ignore_ascii_case("PYTHON") => {}
            Some(l) => errs.push(format!(
                "programLanguage `{l}` is not supported (only PYTHON apps run)"
            )),
            None => errs.push("install.json has no `programLanguage`".into()),
        }
        let program_main = match text_of("programMain") {
            Some(m) if !m.trim().is_empty() && !m.contains('/') && !m.contains("..") => {
                let script = dir.join(format!("{m}.py"));
                if !script.is_file() {
                    errs.push(format!(
                        "programMain `{m}`: {} does not exist",
                        script.display()
                    ));
                }
                m
            }
            Some(m) => {
                errs.push(format!(
                    "programMain `{m}` must be a module name in the app folder"
                ));
                String::new()
            }
            None => {
                errs.push("install.json has no `programMain`".into());
                String::new()
            }
        };
        let display_name = text_of("displayName")
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(|| {
                dir.file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or("tcex app")
                    .to_string()
            });
        let list_delimiter = text_of("listDelimiter")
            .filter(|d| !d.is_empty())
            .unwrap_or_else(|| "|".into());
        let mut params = Vec::new();
        match obj.get("params") {
            None | Some(Value::Null) => {}
            Some(Value::Array(items)) => {
                for (i, item) in items.iter().enumerate() {
                    match param(item) {
                        Ok(p) => params.push(p),
                        Err(e) => errs.push(format!("params[{i}]: {e}")),
                    }
                }
            }
            Some(_) => errs.push("`params` must be a list".into()),
        }
        let mut first_run = Vec::new();
        for feed in obj
            .get("feeds")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            for p in feed
                .get("firstRunParams")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                let text = |k: &str| match p.get(k) {
                    Some(Value::String(s)) => Some(s.clone()),
                    Some(Value::Null) | None => None,
                    Some(v) => Some(v.to_string()),
                };
                if let (Some(param), Some(value)) = (text("param"), text("value")) {
                    first_run.push((param, value));
                }
            }
        }
        if !errs.is_empty() {
            return Err(errs);
        }
        Ok(Manifest {
            first_run,
            dir: dir.to_path_buf(),
            display_name,
            program_main,
            program_version: text_of("programVersion").unwrap_or_default(),
            list_delimiter,
            params,
        })
    }

    #[cfg(test)]
    pub fn param(&self, name: &str) -> Option<&AppParam> {
        self.params.iter().find(|p| p.name == name)
    }

    /// The job-file document this app is: its params as parameters (`encrypt` ones as
    /// passwords, lists as csv, booleans as booleans, the rest as strings), `job: tcex-app`
    /// and the app folder under `app`.
    pub fn definition(&self) -> Value {
        let parameters: Vec<Value> = self
            .params
            .iter()
            .map(|p| {
                let ty = if p.encrypt {
                    "password"
                } else if p.is_list() {
                    "csv"
                } else if p.ty == "Boolean" {
                    "boolean"
                } else {
                    "string"
                };
                let mut m = Map::new();
                m.insert("name".into(), json!(p.name));
                m.insert("type".into(), json!(ty));
                m.insert("is_mandatory".into(), json!(p.required));
                if !p.label.is_empty() {
                    m.insert("description".into(), json!(p.label));
                }
                if let Some(d) = &p.default {
                    let d = match d {
                        // A list default is delimited text, as the platform keeps it.
                        Value::String(s) if p.is_list() => {
                            json!(
                                s.split(self.list_delimiter.as_str())
                                    .collect::<Vec<_>>()
                                    .join(",")
                            )
                        }
                        other => other.clone(),
                    };
                    m.insert("default_value".into(), d);
                }
                Value::Object(m)
            })
            .collect();
        let version = if self.program_version.is_empty() {
            String::new()
        } else {
            format!(" {}", self.program_version)
        };
        json!({
            "name": self.display_name,
            "job": super::ID,
            "description": format!("TcEx job app {}{version}", self.display_name),
            "app": self.dir.display().to_string(),
            "parameters": parameters,
        })
    }

    /// The instance's values checked against the params: literal `validValues` of choices.
    /// (Types, required params and `encrypt` sources are checked by the loader through the
    /// definition's parameter types.)
    pub fn check_values(&self, params: &Parameters, errs: &mut Vec<FieldError>) {
        for p in &self.params {
            let Some(choices) = p.choices() else { continue };
            let Some(v) = params.get(&p.name) else {
                continue;
            };
            let given: Vec<String> = match &v.value {
                ParamValue::Str(s) => vec![s.clone()],
                ParamValue::List(l) => l
                    .iter()
                    .flat_map(|i| i.split(self.list_delimiter.as_str()))
                    .map(str::to_string)
                    .collect(),
                _ => continue,
            };
            for g in given {
                if !choices.contains(&g) {
                    errs.push(FieldError::new(
                        format!("parameters.{}", p.name),
                        format!(
                            "`{g}` is not a valid value of `{}` (expected one of: {})",
                            p.name,
                            choices.join(", ")
                        ),
                    ));
                }
            }
        }
    }
}

fn param(item: &Value) -> Result<AppParam, String> {
    let o = item.as_object().ok_or("a param must be an object")?;
    let missing: Vec<String> = ["name", "label", "type"]
        .into_iter()
        .filter(|k| !o.get(*k).is_some_and(Value::is_string))
        .map(|k| format!("`{k}`"))
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "a param needs {} (text; tcex refuses to start without them)",
            missing.join(", ")
        ));
    }
    let name = o
        .get("name")
        .and_then(Value::as_str)
        .filter(|n| !n.trim().is_empty())
        .ok_or("a param needs a `name`")?
        .to_string();
    let ty = o
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("String")
        .to_string();
    const TYPES: &[&str] = &[
        "String",
        "Choice",
        "MultiChoice",
        "Boolean",
        "EditChoice",
        "KeyValueList",
        "StringMixed",
    ];
    if !TYPES.contains(&ty.as_str()) {
        return Err(format!(
            "param `{name}` has the unknown type `{ty}` (expected one of {})",
            TYPES.join(", ")
        ));
    }
    let flag = |k: &str| o.get(k).and_then(Value::as_bool).unwrap_or(false);
    let valid_values = o
        .get("validValues")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let default = o.get("default").filter(|d| !d.is_null()).cloned();
    Ok(AppParam {
        required: flag("required"),
        allow_multiple: flag("allowMultiple"),
        encrypt: flag("encrypt"),
        label: o
            .get("label")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        name,
        ty,
        default,
        valid_values,
    })
}

/// An app param's value in the platform's format (spec §3): text; booleans `"true"`/`"false"`;
/// lists joined with the app's `listDelimiter`; passwords in clear (they travel only in the
/// encrypted params file). `None`: no value (left out).
pub(crate) fn platform_value(v: &ParamValue, delimiter: &str) -> Option<String> {
    match v.to_exposed_json() {
        Value::Null => None,
        Value::String(s) => Some(s),
        Value::Bool(b) => Some(if b { "true" } else { "false" }.into()),
        Value::Array(items) => Some(
            items
                .iter()
                .map(|i| {
                    i.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| i.to_string())
                })
                .collect::<Vec<_>>()
                .join(delimiter),
        ),
        other => Some(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(dir: &Path, install: &Value) {
        std::fs::write(dir.join("install.json"), install.to_string()).unwrap();
        std::fs::write(dir.join("run.py"), "").unwrap();
    }

    #[test]
    fn install_json_becomes_a_definition_and_its_problems_are_all_listed() {
        let tmp = tempfile::tempdir().unwrap();
        app(
            tmp.path(),
            &json!({
                "runtimeLevel": "Organization", "programLanguage": "PYTHON",
                "programMain": "run", "displayName": "Feed", "listDelimiter": "|",
                "features": [], "languageVersion": "3.11", "programVersion": "1.0.0",
                "params": [
                    {"name": "tc_owner", "label": "Owner", "type": "String", "required": true},
                    {"name": "api_key", "label": "Key", "type": "String", "encrypt": true},
                    {"name": "tags", "label": "Tags", "type": "MultiChoice", "validValues": ["a", "b"], "default": "a|b"},
                    {"name": "verbose", "label": "Verbose", "type": "Boolean", "default": false},
                    {"name": "owner", "label": "Owner", "type": "Choice", "validValues": ["${OWNERS}"]},
                ]
            }),
        );
        let m = Manifest::read(tmp.path()).unwrap();
        let d = m.definition();
        let ty: Vec<&str> = d["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["type"].as_str().unwrap())
            .collect();
        assert_eq!(ty, ["string", "password", "csv", "boolean", "string"]);
        assert_eq!(d["parameters"][2]["default_value"], "a,b");
        assert!(m.param("owner").unwrap().choices().is_none());
        assert_eq!(m.param("tags").unwrap().choices().unwrap(), ["a", "b"]);

        app(
            tmp.path(),
            &json!({"runtimeLevel": "Playbook", "programLanguage": "JAVA",
                    "programMain": "main", "params": [{"type": "Number"}]}),
        );
        let errs = Manifest::read(tmp.path()).unwrap_err();
        assert_eq!(errs.len(), 5, "{errs:#?}");
        assert!(
            errs[0]
                .contains("lacks `features`, `languageVersion`, `listDelimiter`, `programVersion`")
        );
        assert!(errs[1].contains("runtimeLevel `Playbook`"));
        assert!(errs[3].contains("main.py does not exist"));
        assert!(
            errs[4].contains("params[0]: a param needs `name`, `label`"),
            "{errs:#?}"
        );
    }

    #[test]
    fn values_in_the_platform_format() {
        assert_eq!(
            platform_value(&ParamValue::List(vec!["a".into(), "b".into()]), "|").unwrap(),
            "a|b"
        );
        assert_eq!(
            platform_value(&ParamValue::Bool(true), "|").unwrap(),
            "true"
        );
        assert_eq!(platform_value(&ParamValue::Int(5), "|").unwrap(), "5");
        assert_eq!(platform_value(&ParamValue::Null, "|"), None);
    }
}
