//! Where each key of a YAML file (a job file, the config file) stands, so that every error can
//! name `path:line:column`.
//!
//! `yaml_serde` parses the values (with exact YAML 1.2 semantics) but keeps no positions once
//! parsing succeeded, and a serde error stops at the first problem while `check` must report
//! all of them. So this module makes a second, light pass over the text that records the line
//! and column of every mapping key by its path (`schedule.every`, `parameters[2].type`).
//!
//! It understands the block style job files are written in: nested mappings, sequences
//! (`- ` items, also at the parent key's indentation), one-line flow mappings as sequence items
//! (`- {name: Tags, type: csv}`), comments, and block scalars (`|`, `>`), whose contents are
//! skipped. Anything it does not understand simply has no recorded position, and lookups fall
//! back to the nearest recorded parent, so a position is never wrong by more than that.

use std::collections::HashMap;

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pos {
    pub line: usize,
    pub column: usize,
}

/// The positions of the keys and values of one YAML document.
#[derive(Debug, Default)]
pub struct Positions {
    keys: HashMap<String, Pos>,
    values: HashMap<String, Pos>,
    dups: Vec<Duplicate>,
}

/// A key that appears twice in the same mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Duplicate {
    /// The key itself (the last segment of its path).
    pub key: String,
    pub first: Pos,
    pub second: Pos,
}

impl Positions {
    /// Scans `text`. Never fails: unknown constructs are skipped.
    pub fn scan(text: &str) -> Positions {
        let mut out = Positions::default();
        // Open containers, innermost last: (indent, path). A mapping key opens a container at
        // its own column; a sequence item opens one at the column of its content.
        let mut stack: Vec<(usize, String)> = Vec::new();
        // How many items each sequence (by path) has seen so far.
        let mut counters: HashMap<String, usize> = HashMap::new();
        // While inside a block scalar, lines indented deeper than this are its content.
        let mut block_scalar_indent: Option<usize> = None;

        for (lineno, raw) in text.lines().enumerate() {
            let line_no = lineno + 1;
            let trimmed = raw.trim_start();
            let indent = raw.len() - trimmed.len();
            if let Some(bi) = block_scalar_indent {
                if trimmed.is_empty() || indent > bi {
                    continue;
                }
                block_scalar_indent = None;
            }
            if trimmed.is_empty()
                || trimmed.starts_with('#')
                || trimmed.starts_with("---")
                || trimmed.starts_with("...")
            {
                continue;
            }
            let mut col = indent;
            let mut rest = trimmed;
            // Sequence items: one or more `- ` prefixes.
            while rest == "-" || rest.starts_with("- ") {
                while stack.last().is_some_and(|(i, _)| *i > col) {
                    stack.pop();
                }
                let parent = stack.last().map(|(_, p)| p.clone()).unwrap_or_default();
                let n = counters.entry(parent.clone()).or_insert(0);
                let item_path = format!("{parent}[{n}]");
                *n += 1;
                let after = rest[1..].trim_start();
                let content_col = col + (rest.len() - after.len());
                out.keys.entry(item_path.clone()).or_insert(Pos {
                    line: line_no,
                    column: col + 1,
                });
                stack.push((content_col, item_path));
                col = content_col;
                rest = after;
                if rest.is_empty() {
                    break;
                }
            }
            if rest.is_empty() {
                continue;
            }
            if rest.starts_with('{') {
                let parent = stack.last().map(|(_, p)| p.clone()).unwrap_or_default();
                out.scan_flow(&parent, rest, line_no, col);
                continue;
            }
            let Some((key, value_offset)) = split_key(rest) else {
                continue;
            };
            while stack.last().is_some_and(|(i, _)| *i > col) {
                stack.pop();
            }
            // A key at the same column as an open container's key closes it (siblings).
            while stack.last().is_some_and(|(i, _)| *i == col) && !is_item_of(&stack, col) {
                stack.pop();
            }
            let parent = stack.last().map(|(_, p)| p.clone()).unwrap_or_default();
            let path = join(&parent, &key);
            out.record_key(
                &key,
                &path,
                Pos {
                    line: line_no,
                    column: col + 1,
                },
            );
            let value = rest[value_offset..].trim_start();
            let value_col = col + rest.len() - value.len();
            if !value.is_empty() && !value.starts_with('#') {
                out.values.insert(
                    path.clone(),
                    Pos {
                        line: line_no,
                        column: value_col + 1,
                    },
                );
                if value.starts_with('|') || value.starts_with('>') {
                    block_scalar_indent = Some(col);
                }
                if value.starts_with('{') {
                    out.scan_flow(&path, value, line_no, value_col);
                }
            }
            stack.push((col, path));
        }
        out
    }

    /// Records the keys of a one-line flow mapping `{a: 1, b: 2}` that starts at `col`.
    fn scan_flow(&mut self, parent: &str, text: &str, line: usize, col: usize) {
        let mut depth = 0usize;
        let mut start = None;
        let mut in_quote: Option<char> = None;
        for (i, c) in text.char_indices() {
            if let Some(q) = in_quote {
                if c == q {
                    in_quote = None;
                }
                continue;
            }
            match c {
                '\'' | '"' => in_quote = Some(c),
                '{' | '[' => {
                    depth += 1;
                    if depth == 1 {
                        start = Some(i + 1);
                    }
                }
                '}' | ']' => depth = depth.saturating_sub(1),
                ',' if depth == 1 => start = Some(i + 1),
                ':' if depth == 1 => {
                    if let Some(s) = start.take() {
                        let key = text[s..i].trim();
                        let lead = text[s..i].len() - text[s..i].trim_start().len();
                        if !key.is_empty() {
                            let path = join(parent, &unquote(key));
                            let pos = Pos {
                                line,
                                column: col + s + lead + 1,
                            };
                            self.record_key(&unquote(key), &path, pos);
                            let after = &text[i + 1..];
                            let v_lead = after.len() - after.trim_start().len();
                            self.values.insert(
                                path,
                                Pos {
                                    line,
                                    column: col + i + 1 + v_lead + 1,
                                },
                            );
                        }
                    }
                }
                _ => {}
            }
        }
    }

    fn record_key(&mut self, key: &str, path: &str, pos: Pos) {
        if let Some(first) = self.keys.insert(path.to_string(), pos) {
            self.dups.push(Duplicate {
                key: key.to_string(),
                first,
                second: pos,
            });
            // Lookups keep pointing at the first occurrence, which is what the value is
            // read from in messages.
            self.keys.insert(path.to_string(), first);
        }
    }

    /// Keys defined twice in one mapping, in file order.
    pub fn duplicates(&self) -> &[Duplicate] {
        &self.dups
    }

    /// The position of the key at `path`, or of its nearest recorded parent.
    pub fn key(&self, path: &str) -> Option<Pos> {
        let mut p = path;
        loop {
            if let Some(pos) = self.keys.get(p) {
                return Some(*pos);
            }
            p = parent_path(p)?;
        }
    }

    /// The position of the value at `path` (falling back to its key, then parents).
    pub fn value(&self, path: &str) -> Option<Pos> {
        self.values.get(path).copied().or_else(|| self.key(path))
    }
}

/// True when the innermost open container at `col` is a sequence item's content (whose first
/// key stands at that column), so a key at `col` is a sibling inside the item, not after it.
fn is_item_of(stack: &[(usize, String)], col: usize) -> bool {
    stack
        .last()
        .is_some_and(|(i, p)| *i == col && p.ends_with(']'))
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// `a.b[2].c` -> `a.b[2]` -> `a.b` -> `a` -> None.
fn parent_path(p: &str) -> Option<&str> {
    if p.is_empty() {
        return None;
    }
    if p.ends_with(']') {
        return p.rfind('[').map(|i| &p[..i]);
    }
    Some(p.rfind('.').map(|i| &p[..i]).unwrap_or(""))
}

fn unquote(s: &str) -> String {
    let s = s.trim();
    for q in ['"', '\''] {
        if s.len() >= 2 && s.starts_with(q) && s.ends_with(q) {
            return s[1..s.len() - 1].to_string();
        }
    }
    s.to_string()
}

/// Splits `key: value` (or `key:` at the end of the line) into the key and the offset of the
/// value. Quoted keys are supported; a line without a mapping colon returns `None`.
pub(crate) fn split_key(rest: &str) -> Option<(String, usize)> {
    let bytes = rest.as_bytes();
    let (key_end, search_from) = match bytes.first() {
        Some(b'"') | Some(b'\'') => {
            let q = bytes[0] as char;
            let close = rest[1..].find(q)? + 1;
            (close + 1, close + 1)
        }
        _ => (0, 0),
    };
    let mut i = search_from;
    while let Some(off) = rest[i..].find(':') {
        let at = i + off;
        let next = rest[at + 1..].chars().next();
        if next.is_none() || next == Some(' ') || next == Some('\t') {
            let key_text = if key_end > 0 {
                &rest[..key_end]
            } else {
                &rest[..at]
            };
            if key_end == 0 && (key_text.contains(" #") || key_text.starts_with('#')) {
                return None;
            }
            return Some((unquote(key_text), at + 1));
        }
        i = at + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
# a comment
name: Comment on tagged cases
job: exec
description: |
  not: a key
  still text
schedule:
  every: 15m
  timezone: UTC
parameters:
  - name: Tags
    type: csv
    value: Phishing
  -   name: Comment
      type: string
  - {name: Flow, type: integer, default_value: 3}
command:
- /bin/echo
- hi
env:
  A: b
";

    #[test]
    fn positions_of_nested_keys() {
        let p = Positions::scan(DOC);
        let at = |path: &str| p.key(path).map(|x| (x.line, x.column));
        assert_eq!(at("name"), Some((2, 1)));
        assert_eq!(at("description"), Some((4, 1)));
        assert_eq!(at("not"), None, "block scalar content is not a key");
        assert_eq!(at("schedule"), Some((7, 1)));
        assert_eq!(at("schedule.every"), Some((8, 3)));
        assert_eq!(at("schedule.timezone"), Some((9, 3)));
        assert_eq!(at("parameters[0].name"), Some((11, 5)));
        assert_eq!(at("parameters[0].type"), Some((12, 5)));
        assert_eq!(at("parameters[0].value"), Some((13, 5)));
        assert_eq!(at("parameters[1].name"), Some((14, 7)));
        assert_eq!(at("parameters[1].type"), Some((15, 7)));
        assert_eq!(at("parameters[2]"), Some((16, 3)));
        assert_eq!(at("parameters[2].type"), Some((16, 18)));
        assert_eq!(at("command"), Some((17, 1)));
        assert_eq!(at("command[1]"), Some((19, 1)));
        assert_eq!(at("env.A"), Some((21, 3)));
        // Unknown paths fall back to their nearest parent.
        assert_eq!(at("parameters[1].nope"), Some((14, 3)));
        let v = p.value("schedule.every").unwrap();
        assert_eq!((v.line, v.column), (8, 10));
        let v = p.value("parameters[2].type").unwrap();
        assert_eq!((v.line, v.column), (16, 24));
    }

    #[test]
    fn compact_sequences_at_key_indent() {
        let doc = "parameters:\n- name: A\n  type: csv\n- name: B\nenabled: true\n";
        let p = Positions::scan(doc);
        assert_eq!(p.key("parameters[1].name").unwrap().line, 4);
        assert_eq!(p.key("parameters[0].type").unwrap().line, 3);
        assert_eq!(p.key("enabled").unwrap().line, 5);
    }
}
