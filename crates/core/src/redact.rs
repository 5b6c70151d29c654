//! Redaction of secrets from text the daemon logs or stores, and escaping of control
//! characters in text that came from outside (a script's output).
//!
//! The daemon knows every secret it hands out: the password parameters of a run (an `exec`
//! program receives them on stdin) and its own platform credentials. A script that prints one
//! (`auth failed key=...`) must not get it into the logs, the run's message or the database, so
//! every line is passed through the run's [`Redactor`] *before* it is logged or stored.
//!
//! A [`Redactor`] looks for each secret in the forms a script is likely to print it in:
//!
//! * the exact value, and its JSON string escaping (`"` and `\` escaped) if that differs;
//! * URL encodings: RFC 3986 (only `A-Za-z0-9-._~` left as is), JavaScript's
//!   `encodeURIComponent` (also `!'()*` left), HTML forms (`+` for space), each with upper- and
//!   lower-case hex digits;
//! * base64, standard and URL-safe alphabets, with and without padding, and also the part of
//!   the encoding that does not depend on what precedes the secret (so `user:secret` encoded as
//!   one unit, as in HTTP Basic auth, is caught too);
//! * hex, lower and upper case;
//! * each line of a multi-line secret (a PEM key), since output is split into lines.
//!
//! Secrets shorter than [`MIN_SECRET_LEN`] bytes are not redacted: replacing every occurrence
//! of a 4-character string would mangle ordinary output while protecting next to nothing (such
//! a secret can be guessed), and the base64 forms of very short values are too short to be
//! specific. A match is replaced by [`MARKER`].

use std::borrow::Cow;
use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use serde_json::Value;

/// Secrets shorter than this (in bytes) are not redacted (see the module docs).
pub const MIN_SECRET_LEN: usize = 8;

/// What a redacted secret is replaced with.
pub const MARKER: &str = "[redacted]";

/// Finds and replaces a set of secrets, in the forms listed in the module docs. Cheap to clone.
/// Its `Debug` output names no secret.
#[derive(Clone, Default)]
pub struct Redactor {
    /// One alternation of every form, longest first (so the longest form at a position wins);
    /// `None` when there is nothing to redact.
    re: Option<std::sync::Arc<regex::bytes::Regex>>,
    /// The number of distinct forms.
    forms: usize,
    /// The length in bytes of the longest form.
    longest: usize,
}

impl fmt::Debug for Redactor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Redactor")
            .field("forms", &self.forms)
            .finish()
    }
}

impl Redactor {
    /// A redactor for these secrets. Values shorter than [`MIN_SECRET_LEN`] are ignored.
    pub fn new<'a>(secrets: impl IntoIterator<Item = &'a str>) -> Redactor {
        let mut forms: Vec<Vec<u8>> = Vec::new();
        let mut secrets_exact: Vec<Vec<u8>> = Vec::new();
        for secret in secrets {
            if secret.len() >= MIN_SECRET_LEN {
                secrets_exact.push(secret.as_bytes().to_vec());
            }
            add_forms(secret, &mut forms);
            if secret.contains('\n') {
                for line in secret.lines() {
                    add_forms(line.trim_end_matches('\r'), &mut forms);
                }
            }
        }
        forms.retain(|f| f.len() >= MIN_SECRET_LEN);
        // Longest first: the regex alternation is leftmost-first, so at one position the full
        // padded base64 form wins over its shorter alignment-independent core.
        forms.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        forms.dedup();
        if forms.is_empty() {
            return Redactor::default();
        }
        match build(&forms) {
            Some(re) => Redactor {
                longest: forms[0].len(),
                forms: forms.len(),
                re: Some(std::sync::Arc::new(re)),
            },
            None => {
                // Only a pathological number of huge secrets can exceed the size limit. Never
                // print the pattern (it holds the secrets).
                tracing::error!(
                    forms = forms.len(),
                    "too many or too large secrets to redact their encodings; only their exact \
                     values are redacted"
                );
                let mut exact: Vec<Vec<u8>> = secrets_exact;
                exact.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
                exact.dedup();
                match build(&exact) {
                    Some(re) if !exact.is_empty() => Redactor {
                        longest: exact[0].len(),
                        forms: exact.len(),
                        re: Some(std::sync::Arc::new(re)),
                    },
                    _ => Redactor::default(),
                }
            }
        }
    }

    /// True when there is nothing to redact.
    pub fn is_empty(&self) -> bool {
        self.re.is_none()
    }

    /// The length in bytes of the longest form searched for (0 when empty): text cut at a
    /// position must be examined this far beyond it to catch a secret straddling the cut.
    pub fn longest(&self) -> usize {
        self.longest
    }

    /// `text` with every secret replaced by [`MARKER`].
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let Some(re) = &self.re else {
            return Cow::Borrowed(text);
        };
        match re.replace_all(text.as_bytes(), MARKER.as_bytes()) {
            Cow::Borrowed(_) => Cow::Borrowed(text),
            // Replacing whole valid-UTF-8 matches with ASCII keeps the text valid UTF-8, but a
            // form could in theory match part of a multi-byte character; lossy is the safe read.
            Cow::Owned(bytes) => Cow::Owned(String::from_utf8_lossy(&bytes).into_owned()),
        }
    }

    /// Redacts an optional string in place.
    pub fn redact_opt(&self, text: &mut Option<String>) {
        if let Some(t) = text
            && let Cow::Owned(r) = self.redact(t)
        {
            *t = r;
        }
    }

    /// Redacts every string (and object key) of a JSON value in place.
    pub fn redact_json(&self, value: &mut Value) {
        if self.is_empty() {
            return;
        }
        match value {
            Value::String(s) => {
                if let Cow::Owned(r) = self.redact(s) {
                    *s = r;
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.redact_json(v)),
            Value::Object(map) => {
                let old = std::mem::take(map);
                for (k, mut v) in old {
                    self.redact_json(&mut v);
                    map.insert(self.redact(&k).into_owned(), v);
                }
            }
            _ => {}
        }
    }

    /// Redacts the start of `bytes` for display: returns the redacted text of the first
    /// `keep` bytes, extended to the end of a secret that straddles `keep` (so no part of a
    /// secret is ever shown), and the number of bytes of `bytes` that text covers. `bytes`
    /// should extend at least [`Redactor::longest`] bytes past `keep` when more input exists,
    /// or a secret straddling the end of `bytes` cannot be recognised. Invalid UTF-8 is
    /// replaced (U+FFFD), and the cut never splits a UTF-8 sequence.
    pub fn redact_prefix(&self, bytes: &[u8], keep: usize) -> (String, usize) {
        let mut keep = keep.min(bytes.len());
        // Back off to the start of a UTF-8 sequence (at most 3 continuation bytes).
        let mut back = 0;
        while keep < bytes.len() && keep > 0 && back < 3 && bytes[keep] & 0xC0 == 0x80 {
            keep -= 1;
            back += 1;
        }
        let mut out: Vec<u8> = Vec::with_capacity(keep + MARKER.len());
        let mut pos = 0;
        if let Some(re) = &self.re {
            for m in re.find_iter(bytes) {
                if m.start() >= keep {
                    break;
                }
                out.extend_from_slice(&bytes[pos..m.start()]);
                out.extend_from_slice(MARKER.as_bytes());
                pos = m.end();
            }
        }
        if pos < keep {
            out.extend_from_slice(&bytes[pos..keep]);
            pos = keep;
        }
        (String::from_utf8_lossy(&out).into_owned(), pos)
    }
}

/// One alternation of escaped literals (the regex crate compiles it to a multi-literal
/// searcher). Forms are valid UTF-8 (secrets are strings, encodings are ASCII), so the lossy
/// conversion changes nothing.
fn build(forms: &[Vec<u8>]) -> Option<regex::bytes::Regex> {
    let pattern = forms
        .iter()
        .map(|f| regex::escape(&String::from_utf8_lossy(f)))
        .collect::<Vec<_>>()
        .join("|");
    regex::bytes::RegexBuilder::new(&pattern)
        .size_limit(64 << 20)
        .build()
        .ok()
}

/// Adds every form of one secret (see the module docs) to `forms`.
fn add_forms(secret: &str, forms: &mut Vec<Vec<u8>>) {
    if secret.len() < MIN_SECRET_LEN {
        return;
    }
    let raw = secret.as_bytes();
    forms.push(raw.to_vec());
    if let Ok(json) = serde_json::to_string(secret) {
        forms.push(json.as_bytes()[1..json.len() - 1].to_vec());
    }
    // URL encodings.
    const RFC3986: &[u8] = b"-._~";
    const URI_COMPONENT: &[u8] = b"-._~!'()*";
    const FORM: &[u8] = b"-._*";
    for (keep, plus_for_space) in [(RFC3986, false), (URI_COMPONENT, false), (FORM, true)] {
        for upper in [true, false] {
            forms.push(percent_encode(raw, keep, plus_for_space, upper));
        }
    }
    // base64, whole and alignment-independent cores, both alphabets.
    for engine in [&STANDARD, &URL_SAFE] {
        forms.push(engine.encode(raw).into_bytes());
    }
    for engine in [&STANDARD_NO_PAD, &URL_SAFE_NO_PAD] {
        forms.push(engine.encode(raw).into_bytes());
        for offset in 0..3 {
            forms.push(base64_core(engine, raw, offset));
        }
    }
    // hex.
    let hex_lower: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    forms.push(hex_lower.to_ascii_uppercase().into_bytes());
    forms.push(hex_lower.into_bytes());
}

/// Percent-encodes every byte except ASCII alphanumerics and `keep`.
fn percent_encode(raw: &[u8], keep: &[u8], plus_for_space: bool, upper: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() * 3);
    for &b in raw {
        if b.is_ascii_alphanumeric() || keep.contains(&b) {
            out.push(b);
        } else if b == b' ' && plus_for_space {
            out.push(b'+');
        } else if upper {
            out.extend_from_slice(format!("%{b:02X}").as_bytes());
        } else {
            out.extend_from_slice(format!("%{b:02x}").as_bytes());
        }
    }
    out
}

/// The base64 characters of `raw` that do not depend on its neighbours when it starts
/// `offset` bytes (mod 3) into a longer encoded value: encode `offset` filler bytes plus the
/// secret and keep the characters whose 6 bits all come from the secret.
fn base64_core(engine: &base64::engine::GeneralPurpose, raw: &[u8], offset: usize) -> Vec<u8> {
    let mut input = vec![0u8; offset];
    input.extend_from_slice(raw);
    let encoded = engine.encode(&input).into_bytes();
    // Character i carries bits [6i, 6i + 6) of the input; the secret's bits are
    // [8 * offset, 8 * (offset + len)).
    let first = (8 * offset).div_ceil(6);
    let end_bits = 8 * (offset + raw.len());
    let last_exclusive = end_bits / 6; // characters ending at or before end_bits
    if last_exclusive <= first {
        return Vec::new();
    }
    encoded[first..last_exclusive.min(encoded.len())].to_vec()
}

/// Characters that change how the text around them is displayed without being seen
/// themselves: the bidirectional marks, embeddings, overrides and isolates (U+061C, U+200E,
/// U+200F, U+202A..U+202E, U+2066..U+2069: a "Trojan Source" name reads differently from what
/// it is), the line and paragraph separators (U+2028, U+2029: a line break that is not `\n`),
/// and the zero-width space and byte-order mark (U+200B, U+FEFF: two names that look alike).
/// The zero-width joiners (U+200C, U+200D) are left: scripts and emoji need them.
pub fn is_bidi_or_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{061c}'
            | '\u{200b}'
            | '\u{200e}'
            | '\u{200f}'
            | '\u{2028}'
            | '\u{2029}'
            | '\u{202a}'..='\u{202e}'
            | '\u{2066}'..='\u{2069}'
            | '\u{feff}'
    )
}

/// Why `text` cannot be a displayed name (a job's `name`, a parameter's name...): the first
/// control character (`\n` and `\t` too: a name is one line) or bidirectional/invisible
/// character ([`is_bidi_or_invisible`]), with its position, or `None`. Names reach terminals,
/// logs and the status page; escaping them everywhere they go is the second line of defence.
pub fn display_name_problem(text: &str) -> Option<String> {
    let (i, c) = text
        .chars()
        .enumerate()
        .find(|(_, c)| c.is_control() || is_bidi_or_invisible(*c))?;
    let kind = if c.is_control() {
        "a control character"
    } else {
        "a bidirectional-formatting or invisible character"
    };
    Some(format!(
        "must not contain {kind} (U+{:04X} at character {})",
        c as u32,
        i + 1
    ))
}

/// `text` with control characters (other than tab) and bidirectional-override characters
/// written as escapes (`\r`, `\x1b`, `\u{9b}`, `\u{202e}`), so output from a script cannot
/// move the cursor, recolour, rewrite or reorder a terminal's view of the log.
pub fn escape_controls(text: &str) -> Cow<'_, str> {
    fn needs_escape(c: char) -> bool {
        (c.is_control() && c != '\t') || is_bidi_or_invisible(c)
    }
    if !text.chars().any(needs_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if !needs_escape(c) {
            out.push(c);
            continue;
        }
        match c {
            '\r' => out.push_str("\\r"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x80 => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
        }
    }
    Cow::Owned(out)
}

/// A database URL safe to log (PostgreSQL URLs may carry a password).
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("********"));
            u.to_string()
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "s3cr3t/Value+with space&more";

    fn r() -> Redactor {
        Redactor::new([SECRET])
    }

    #[test]
    fn exact_and_encoded_forms_are_redacted() {
        let r = r();
        let url_rfc =
            String::from_utf8(percent_encode(SECRET.as_bytes(), b"-._~", false, true)).unwrap();
        let form =
            String::from_utf8(percent_encode(SECRET.as_bytes(), b"-._*", true, false)).unwrap();
        let cases = [
            SECRET.to_string(),
            url_rfc,
            form,
            STANDARD.encode(SECRET),
            STANDARD_NO_PAD.encode(SECRET),
            URL_SAFE.encode(SECRET),
            URL_SAFE_NO_PAD.encode(SECRET),
            SECRET.bytes().map(|b| format!("{b:02x}")).collect(),
            SECRET.bytes().map(|b| format!("{b:02X}")).collect(),
        ];
        for form in cases {
            let line = format!("auth failed key={form} (retrying)");
            let out = r.redact(&line);
            assert_eq!(out, "auth failed key=[redacted] (retrying)", "form {form}");
        }
    }

    #[test]
    fn base64_of_a_secret_inside_a_longer_value_is_caught_at_every_alignment() {
        let r = r();
        for user in ["u", "us", "use", "user"] {
            let basic = STANDARD.encode(format!("{user}:{SECRET}"));
            let out = r.redact(&basic);
            assert!(out.contains(MARKER), "{user}: {out}");
            // What is left is only the user part's characters (and neighbouring bits).
            assert!(out.len() < basic.len() / 2 + MARKER.len(), "{user}: {out}");
        }
    }

    #[test]
    fn json_escaped_and_multi_line_secrets() {
        let quoted = "pa\"ss\\word-123";
        let r = Redactor::new([quoted]);
        let json = serde_json::to_string(&serde_json::json!({"k": quoted})).unwrap();
        assert_eq!(r.redact(&json), "{\"k\":\"[redacted]\"}");
        let pem = "-----BEGIN KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEF\n-----END KEY-----";
        let r = Redactor::new([pem]);
        assert_eq!(r.redact("MIIEvQIBADANBgkqhkiG9w0BAQEF"), "[redacted]");
    }

    #[test]
    fn short_secrets_and_empty_redactors_change_nothing() {
        let r = Redactor::new(["short", ""]);
        assert!(r.is_empty());
        assert_eq!(r.redact("a short line"), "a short line");
        assert!(matches!(r.redact("x"), Cow::Borrowed(_)));
        let r = Redactor::new(["exactly8"]);
        assert_eq!(r.redact("[exactly8]"), "[[redacted]]");
    }

    #[test]
    fn debug_names_no_secret() {
        assert!(!format!("{:?}", r()).contains("s3cr3t"));
    }

    #[test]
    fn json_values_and_keys_are_redacted() {
        let r = r();
        let mut v = serde_json::json!({"ok": 1, "msg": format!("x {SECRET}"), SECRET: [SECRET]});
        r.redact_json(&mut v);
        let text = v.to_string();
        assert!(!text.contains("s3cr3t"), "{text}");
        assert_eq!(v["ok"], 1);
        assert_eq!(v["msg"], "x [redacted]");
    }

    #[test]
    fn a_prefix_never_shows_part_of_a_secret_straddling_the_cut() {
        let r = r();
        let line = format!("0123456789{SECRET}tail");
        for keep in 0..line.len() {
            let (text, covered) = r.redact_prefix(line.as_bytes(), keep);
            assert!(!text.contains("s3cr"), "keep {keep}: {text}");
            assert!(covered >= keep, "keep {keep}");
            if keep > 10 && keep < 10 + SECRET.len() {
                assert!(text.ends_with(MARKER), "keep {keep}: {text}");
                assert_eq!(covered, 10 + SECRET.len());
            }
        }
        // A cut never splits a UTF-8 character.
        let (text, covered) = Redactor::default().redact_prefix("aé".as_bytes(), 2);
        assert_eq!((text.as_str(), covered), ("a", 1));
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape_controls("plain\ttext"), "plain\ttext");
        assert!(matches!(escape_controls("plain"), Cow::Borrowed(_)));
        assert_eq!(
            escape_controls("50%\rdone \x1b[31mred\x1b[0m \u{9b}2J \u{202e}abc"),
            "50%\\rdone \\x1b[31mred\\x1b[0m \\u{9b}2J \\u{202e}abc"
        );
    }
}
