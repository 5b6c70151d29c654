//! Job parameters: the SecOps parameter types, their values and validation.
//!
//! A parameter is declared in the job file (`parameters:`) and/or by the job implementation
//! ([`ParamSpec`]). Its value is resolved once, at load time, from `value`, `value_from_env`,
//! `value_from_file` or `default_value` (in that order), and validated against its type, so a
//! job never starts with a parameter it cannot use. Password values are held as
//! [`SecretString`] and never printed: not by `Debug`, not in errors, not in logs.

use std::fmt;
use std::net::IpAddr;

use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;

/// The SecOps `ScriptParamType`s a job parameter can have, plus `csv`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamType {
    Boolean,
    Integer,
    String,
    Password,
    Ip,
    IpOrHost,
    Url,
    Domain,
    Email,
    /// Comma-separated values, split and trimmed (TIPCommon's `validate_csv`).
    Csv,
}

impl ParamType {
    /// Parses a type name (case-insensitive) or a SecOps numeric code 0-8.
    pub fn parse(s: &str) -> Result<ParamType, String> {
        let t = match s.trim().to_ascii_lowercase().as_str() {
            "0" | "boolean" | "bool" => ParamType::Boolean,
            "1" | "integer" | "int" => ParamType::Integer,
            "2" | "string" => ParamType::String,
            "3" | "password" => ParamType::Password,
            "4" | "ip" => ParamType::Ip,
            "5" | "ip_or_host" | "host" => ParamType::IpOrHost,
            "6" | "url" => ParamType::Url,
            "7" | "domain" => ParamType::Domain,
            "8" | "email" => ParamType::Email,
            "csv" => ParamType::Csv,
            _ => {
                return Err(format!(
                    "unknown parameter type `{s}` (expected one of boolean, integer, string, \
                     password, ip, ip_or_host, url, domain, email, csv, or a code 0-8)"
                ));
            }
        };
        Ok(t)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ParamType::Boolean => "boolean",
            ParamType::Integer => "integer",
            ParamType::String => "string",
            ParamType::Password => "password",
            ParamType::Ip => "ip",
            ParamType::IpOrHost => "ip_or_host",
            ParamType::Url => "url",
            ParamType::Domain => "domain",
            ParamType::Email => "email",
            ParamType::Csv => "csv",
        }
    }
}

impl fmt::Display for ParamType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A parameter value as written in a file, an environment variable or on the command line,
/// before it is checked against its type.
#[derive(Clone, PartialEq)]
pub enum RawValue {
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    /// An explicit `null` or an absent value.
    Null,
}

impl fmt::Debug for RawValue {
    // Raw values may be passwords that have not been typed yet, so they are never shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RawValue(..)")
    }
}

impl RawValue {
    /// The text form, as a SecOps platform would pass it on stdin.
    pub(crate) fn as_text(&self) -> Option<String> {
        match self {
            RawValue::Bool(b) => Some(if *b { "true" } else { "false" }.to_string()),
            RawValue::Int(i) => Some(i.to_string()),
            RawValue::Float(x) => Some(x.to_string()),
            RawValue::Str(s) => Some(s.clone()),
            RawValue::Null => None,
        }
    }
}

/// A typed, validated parameter value.
#[derive(Clone)]
pub enum ParamValue {
    Bool(bool),
    Int(i64),
    Str(String),
    Secret(SecretString),
    List(Vec<String>),
    /// An optional parameter with no value.
    Null,
}

impl fmt::Debug for ParamValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParamValue::Bool(b) => write!(f, "{b}"),
            ParamValue::Int(i) => write!(f, "{i}"),
            ParamValue::Str(s) => write!(f, "{s:?}"),
            ParamValue::Secret(_) => f.write_str("[REDACTED]"),
            ParamValue::List(l) => write!(f, "{l:?}"),
            ParamValue::Null => f.write_str("null"),
        }
    }
}

impl ParamValue {
    /// The value as JSON, with passwords exposed. Only the `exec` job's stdin document uses
    /// this; everything that may be printed uses [`ParamValue::to_redacted_json`].
    pub fn to_exposed_json(&self) -> serde_json::Value {
        match self {
            ParamValue::Secret(s) => serde_json::Value::String(s.expose_secret().to_string()),
            other => other.to_redacted_json(),
        }
    }

    /// The value as JSON with passwords replaced by `"********"`.
    pub fn to_redacted_json(&self) -> serde_json::Value {
        use serde_json::Value as J;
        match self {
            ParamValue::Bool(b) => J::Bool(*b),
            ParamValue::Int(i) => J::from(*i),
            ParamValue::Str(s) => J::String(s.clone()),
            ParamValue::Secret(_) => J::String("********".into()),
            ParamValue::List(l) => J::Array(l.iter().cloned().map(J::String).collect()),
            ParamValue::Null => J::Null,
        }
    }

    fn is_empty(&self) -> bool {
        match self {
            ParamValue::Null => true,
            ParamValue::Str(s) => s.is_empty(),
            ParamValue::Secret(s) => s.expose_secret().is_empty(),
            ParamValue::List(l) => l.is_empty(),
            ParamValue::Bool(_) | ParamValue::Int(_) => false,
        }
    }
}

/// A parameter as an implementation declares it: what the job needs, with its default.
#[derive(Debug, Clone)]
pub struct ParamSpec {
    pub name: String,
    pub ty: ParamType,
    pub mandatory: bool,
    pub default: Option<RawValue>,
    pub description: String,
}

impl ParamSpec {
    pub fn new(name: &str, ty: ParamType) -> ParamSpec {
        ParamSpec {
            name: name.to_string(),
            ty,
            mandatory: false,
            default: None,
            description: String::new(),
        }
    }

    pub fn mandatory(mut self) -> ParamSpec {
        self.mandatory = true;
        self
    }

    pub fn default_value(mut self, v: impl Into<String>) -> ParamSpec {
        self.default = Some(RawValue::Str(v.into()));
        self
    }

    pub fn describe(mut self, d: &str) -> ParamSpec {
        self.description = d.to_string();
        self
    }
}

/// One resolved parameter of a job instance.
#[derive(Debug, Clone)]
pub struct Parameter {
    /// The SecOps display name, e.g. `Max Hours Backwards`.
    pub name: String,
    /// TIPCommon's snake_case form, e.g. `max_hours_backwards`.
    pub snake_name: String,
    pub ty: ParamType,
    pub mandatory: bool,
    pub description: String,
    pub value: ParamValue,
}

/// The resolved parameters of a job instance, readable by display name or snake_case name.
#[derive(Debug, Clone, Default)]
pub struct Parameters {
    list: Vec<Parameter>,
}

/// A typed-access error: the job asked for a parameter in a form it does not have.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParamError {
    #[error("no parameter named `{0}`")]
    Missing(String),
    #[error("parameter `{name}` is {actual}, not {wanted}")]
    WrongType {
        name: String,
        actual: &'static str,
        wanted: &'static str,
    },
    #[error("parameter `{0}` has no value")]
    NoValue(String),
}

impl Parameters {
    pub fn new(list: Vec<Parameter>) -> Parameters {
        Parameters { list }
    }

    pub fn iter(&self) -> impl Iterator<Item = &Parameter> {
        self.list.iter()
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }

    /// Looks a parameter up by its display name (exact, then case-insensitive) or snake_case name.
    pub fn get(&self, name: &str) -> Option<&Parameter> {
        self.list
            .iter()
            .find(|p| p.name == name)
            .or_else(|| self.list.iter().find(|p| p.name.eq_ignore_ascii_case(name)))
            .or_else(|| self.list.iter().find(|p| p.snake_name == name))
    }

    pub(crate) fn get_mut(&mut self, name: &str) -> Option<&mut Parameter> {
        let idx = self.list.iter().position(|p| {
            p.name == name || p.name.eq_ignore_ascii_case(name) || p.snake_name == name
        })?;
        self.list.get_mut(idx)
    }

    pub(crate) fn push(&mut self, p: Parameter) {
        self.list.push(p);
    }

    fn value(&self, name: &str) -> Result<&ParamValue, ParamError> {
        self.get(name)
            .map(|p| &p.value)
            .ok_or_else(|| ParamError::Missing(name.to_string()))
    }

    fn wrong(name: &str, v: &ParamValue, wanted: &'static str) -> ParamError {
        let actual = match v {
            ParamValue::Bool(_) => "a boolean",
            ParamValue::Int(_) => "an integer",
            ParamValue::Str(_) => "a string",
            ParamValue::Secret(_) => "a password",
            ParamValue::List(_) => "a list",
            ParamValue::Null => "empty",
        };
        ParamError::WrongType {
            name: name.to_string(),
            actual,
            wanted,
        }
    }

    /// A string-like parameter (string, ip, url, domain, email, ...); `None` when empty.
    pub fn str(&self, name: &str) -> Result<Option<&str>, ParamError> {
        match self.value(name)? {
            ParamValue::Str(s) => Ok(Some(s)),
            ParamValue::Null => Ok(None),
            v => Err(Self::wrong(name, v, "a string")),
        }
    }

    /// A string-like parameter that must have a value.
    pub fn required_str(&self, name: &str) -> Result<&str, ParamError> {
        self.str(name)?
            .ok_or_else(|| ParamError::NoValue(name.to_string()))
    }

    pub fn int(&self, name: &str) -> Result<Option<i64>, ParamError> {
        match self.value(name)? {
            ParamValue::Int(i) => Ok(Some(*i)),
            ParamValue::Null => Ok(None),
            v => Err(Self::wrong(name, v, "an integer")),
        }
    }

    pub fn bool(&self, name: &str) -> Result<Option<bool>, ParamError> {
        match self.value(name)? {
            ParamValue::Bool(b) => Ok(Some(*b)),
            ParamValue::Null => Ok(None),
            v => Err(Self::wrong(name, v, "a boolean")),
        }
    }

    /// A csv parameter as its list of items (empty when unset).
    pub fn list(&self, name: &str) -> Result<Vec<String>, ParamError> {
        match self.value(name)? {
            ParamValue::List(l) => Ok(l.clone()),
            ParamValue::Str(s) => Ok(split_csv(s)),
            ParamValue::Null => Ok(Vec::new()),
            v => Err(Self::wrong(name, v, "a list")),
        }
    }

    pub fn secret(&self, name: &str) -> Result<Option<&SecretString>, ParamError> {
        match self.value(name)? {
            ParamValue::Secret(s) => Ok(Some(s)),
            ParamValue::Null => Ok(None),
            v => Err(Self::wrong(name, v, "a password")),
        }
    }

    /// Display name -> value with passwords exposed (for the `exec` stdin document only).
    pub fn to_exposed_json(&self) -> serde_json::Map<String, serde_json::Value> {
        self.list
            .iter()
            .map(|p| (p.name.clone(), p.value.to_exposed_json()))
            .collect()
    }

    /// Display name -> value with passwords redacted (safe to print or store).
    pub fn to_redacted_json(&self) -> serde_json::Map<String, serde_json::Value> {
        self.list
            .iter()
            .map(|p| (p.name.clone(), p.value.to_redacted_json()))
            .collect()
    }

    /// Replaces a parameter's value with `raw` (validated against its type). Used by
    /// `run-once --param`.
    pub fn override_value(&mut self, name: &str, raw: &str) -> Result<(), String> {
        let p = self
            .get_mut(name)
            .ok_or_else(|| format!("the job has no parameter named `{name}`"))?;
        let v = convert(&p.name, p.ty, &RawValue::Str(raw.to_string()))?;
        if p.mandatory && v.is_empty() {
            return Err(format!("missing mandatory parameter {}", p.name));
        }
        p.value = v;
        Ok(())
    }
}

/// TIPCommon's parameter-name conversion: remove spaces, split CamelCase, lower-case.
/// `Max Hours Backwards` -> `max_hours_backwards`.
pub fn snake_case(name: &str) -> String {
    // The two regex passes of TIPCommon, done by hand over chars:
    // `(.)([A-Z][a-z]+)` -> `\1_\2` and `([a-z0-9])([A-Z])` -> `\1_\2`.
    let chars: Vec<char> = name.chars().filter(|c| *c != ' ').collect();
    let mut first = String::new();
    for (i, &c) in chars.iter().enumerate() {
        let starts_word = i > 0
            && c.is_ascii_uppercase()
            && chars.get(i + 1).is_some_and(|n| n.is_ascii_lowercase());
        if starts_word {
            first.push('_');
        }
        first.push(c);
    }
    let chars: Vec<char> = first.chars().collect();
    let mut out = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if i > 0
            && c.is_ascii_uppercase()
            && chars
                .get(i - 1)
                .is_some_and(|p| p.is_ascii_lowercase() || p.is_ascii_digit())
        {
            out.push('_');
        }
        out.push(c);
    }
    out.to_lowercase()
}

/// Splits a csv value on commas, trims each item and drops empty ones.
pub fn split_csv(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(str::to_string)
        .collect()
}

/// Converts a raw value to the parameter's type. Errors use TIPCommon's wording:
/// `Invalid parameter "{name}". {msg}`, never including a password.
pub fn convert(name: &str, ty: ParamType, raw: &RawValue) -> Result<ParamValue, String> {
    let invalid = |msg: &str, shown: &str| {
        format!("Invalid parameter \"{name}\". {msg}. Wrong value provided: {shown}")
    };
    if ty == ParamType::Password {
        // Passwords are not trimmed (TIPCommon leaves them as given) and never echoed.
        return Ok(match raw.as_text() {
            Some(s) if !s.is_empty() => ParamValue::Secret(SecretString::from(s)),
            _ => ParamValue::Null,
        });
    }
    let Some(text) = raw.as_text() else {
        return Ok(ParamValue::Null);
    };
    let text = text.trim().to_string();
    if text.is_empty() {
        return Ok(match ty {
            ParamType::Csv => ParamValue::List(Vec::new()),
            _ => ParamValue::Null,
        });
    }
    let v = match ty {
        ParamType::Boolean => match raw {
            RawValue::Bool(b) => ParamValue::Bool(*b),
            _ => match text.to_ascii_lowercase().as_str() {
                "true" => ParamValue::Bool(true),
                "false" => ParamValue::Bool(false),
                _ => return Err(invalid("The value must be true or false", &text)),
            },
        },
        ParamType::Integer => match raw {
            RawValue::Int(i) => ParamValue::Int(*i),
            RawValue::Float(_) => return Err(invalid("The value must be an integer", &text)),
            _ => {
                // Python's int(): optional sign, digits, surrounding spaces (already trimmed).
                let t = text.strip_prefix('+').unwrap_or(&text);
                t.parse::<i64>()
                    .map(ParamValue::Int)
                    .map_err(|_| invalid("The value must be an integer", &text))?
            }
        },
        ParamType::String | ParamType::Password => ParamValue::Str(text),
        ParamType::Ip => {
            text.parse::<IpAddr>()
                .map_err(|_| invalid("The value must be an IP address", &text))?;
            ParamValue::Str(text)
        }
        ParamType::IpOrHost => {
            if text.parse::<IpAddr>().is_err() && !is_hostname(&text, false) {
                return Err(invalid(
                    "The value must be an IP address or a host name",
                    &text,
                ));
            }
            ParamValue::Str(text)
        }
        ParamType::Url => {
            let ok = url::Url::parse(&text)
                .map(|u| u.has_host() && matches!(u.scheme(), "http" | "https"))
                .unwrap_or(false);
            if !ok {
                return Err(invalid("The value must be an http(s) URL", &text));
            }
            ParamValue::Str(text)
        }
        ParamType::Domain => {
            if !is_hostname(&text, true) {
                return Err(invalid("The value must be a domain name", &text));
            }
            ParamValue::Str(text)
        }
        ParamType::Email => {
            if !is_email(&text) {
                return Err(invalid("Invalid email address", &text));
            }
            ParamValue::Str(text)
        }
        ParamType::Csv => ParamValue::List(split_csv(&text)),
    };
    Ok(v)
}

/// Resolves and validates one parameter. `raw` is the first value found among `value`,
/// `value_from_env`, `value_from_file` and `default_value`.
pub fn resolve(
    name: &str,
    ty: ParamType,
    mandatory: bool,
    raw: &RawValue,
) -> Result<ParamValue, String> {
    let v = convert(name, ty, raw)?;
    if mandatory && v.is_empty() {
        return Err(format!("missing mandatory parameter {name}"));
    }
    Ok(v)
}

/// A host name: labels of letters, digits and hyphens, not starting or ending with a hyphen.
/// `need_dot` requires at least two labels (a domain rather than a bare host).
fn is_hostname(s: &str, need_dot: bool) -> bool {
    let s = s.strip_suffix('.').unwrap_or(s);
    if s.is_empty() || s.len() > 253 || (need_dot && !s.contains('.')) {
        return false;
    }
    s.split('.').all(|label| {
        !label.is_empty()
            && label.len() <= 63
            && !label.starts_with('-')
            && !label.ends_with('-')
            && label
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    })
}

/// TIPCommon's email check: `^[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+[.][A-Za-z]{2,}$` on the
/// lower-cased value.
pub fn is_email(s: &str) -> bool {
    let s = s.to_lowercase();
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    let local_ok = !local.is_empty()
        && local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._%+-".contains(c));
    let Some((host, tld)) = domain.rsplit_once('.') else {
        return false;
    };
    let host_ok = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-');
    let tld_ok = tld.len() >= 2 && tld.chars().all(|c| c.is_ascii_alphabetic());
    local_ok && host_ok && tld_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: &str) -> RawValue {
        RawValue::Str(x.to_string())
    }

    #[test]
    fn snake_case_matches_tipcommon() {
        for (input, want) in [
            ("Max Hours Backwards", "max_hours_backwards"),
            ("Tags", "tags"),
            ("API Root", "api_root"),
            ("maxHoursBackwards", "max_hours_backwards"),
            ("Group Type", "group_type"),
            ("Environments", "environments"),
            ("IP Address 2", "ip_address2"),
        ] {
            assert_eq!(snake_case(input), want, "{input}");
        }
    }

    #[test]
    fn type_names_and_codes() {
        assert_eq!(ParamType::parse("STRING").unwrap(), ParamType::String);
        assert_eq!(ParamType::parse("3").unwrap(), ParamType::Password);
        assert_eq!(ParamType::parse("Ip_Or_Host").unwrap(), ParamType::IpOrHost);
        assert_eq!(ParamType::parse("csv").unwrap(), ParamType::Csv);
        assert!(
            ParamType::parse("9")
                .unwrap_err()
                .contains("unknown parameter type")
        );
    }

    #[test]
    fn conversions_table() {
        use ParamType as T;
        let ok: &[(T, RawValue, &str)] = &[
            (T::Boolean, s("TRUE"), "true"),
            (T::Boolean, RawValue::Bool(false), "false"),
            (T::Integer, s(" +42 "), "42"),
            (T::Integer, s("-7"), "-7"),
            (T::Integer, RawValue::Int(24), "24"),
            (T::String, s("  padded  "), "\"padded\""),
            (T::String, RawValue::Int(5), "\"5\""),
            (T::Ip, s("10.0.0.1"), "\"10.0.0.1\""),
            (T::Ip, s("::1"), "\"::1\""),
            (T::IpOrHost, s("soar.example.com"), "\"soar.example.com\""),
            (
                T::Url,
                s("https://x.example/api"),
                "\"https://x.example/api\"",
            ),
            (T::Domain, s("example.org"), "\"example.org\""),
            (
                T::Email,
                s("Alice.B@Example.COM"),
                "\"Alice.B@Example.COM\"",
            ),
            (T::Csv, s(" a, b ,,c "), "[\"a\", \"b\", \"c\"]"),
        ];
        for (ty, raw, want) in ok {
            let v = convert("P", *ty, raw).unwrap();
            assert_eq!(format!("{v:?}"), *want, "{ty} {raw:?}");
        }
        let bad: &[(T, RawValue, &str)] = &[
            (T::Boolean, s("yes"), "must be true or false"),
            (T::Integer, s("1.5"), "must be an integer"),
            (T::Integer, RawValue::Float(1.5), "must be an integer"),
            (T::Integer, s("12abc"), "must be an integer"),
            (T::Ip, s("300.1.1.1"), "IP address"),
            (T::IpOrHost, s("bad host!"), "host name"),
            (T::Url, s("not a url"), "URL"),
            (T::Url, s("ftp://x.example"), "URL"),
            (T::Domain, s("localhost"), "domain"),
            (T::Email, s("a@b"), "Invalid email"),
        ];
        for (ty, raw, want) in bad {
            let e = convert("P", *ty, raw).unwrap_err();
            assert!(e.contains(want), "{ty}: {e}");
            assert!(e.starts_with("Invalid parameter \"P\"."), "{e}");
        }
    }

    #[test]
    fn passwords_are_never_shown_or_trimmed() {
        let v = convert("Key", ParamType::Password, &s(" s3cret ")).unwrap();
        assert_eq!(format!("{v:?}"), "[REDACTED]");
        assert_eq!(v.to_redacted_json(), serde_json::json!("********"));
        assert_eq!(v.to_exposed_json(), serde_json::json!(" s3cret "));
        assert!(!format!("{:?}", s("s3cret")).contains("s3cret"));
    }

    #[test]
    fn mandatory_needs_a_value() {
        let e = resolve("Tags", ParamType::Csv, true, &s(" , ")).unwrap_err();
        assert_eq!(e, "missing mandatory parameter Tags");
        assert!(resolve("Tags", ParamType::String, false, &RawValue::Null).is_ok());
    }

    #[test]
    fn typed_access_by_display_or_snake_name() {
        let mut params = Parameters::new(vec![Parameter {
            name: "Max Hours Backwards".into(),
            snake_name: snake_case("Max Hours Backwards"),
            ty: ParamType::Integer,
            mandatory: false,
            description: String::new(),
            value: ParamValue::Int(24),
        }]);
        assert_eq!(params.int("Max Hours Backwards").unwrap(), Some(24));
        assert_eq!(params.int("max_hours_backwards").unwrap(), Some(24));
        assert!(matches!(
            params.str("max_hours_backwards"),
            Err(ParamError::WrongType { .. })
        ));
        params.override_value("max_hours_backwards", "48").unwrap();
        assert_eq!(params.int("Max Hours Backwards").unwrap(), Some(48));
        assert!(params.override_value("Nope", "1").is_err());
        assert!(
            params
                .override_value("Max Hours Backwards", "x")
                .unwrap_err()
                .contains("integer")
        );
    }
}
