//! Bounds on a job file, enforced before and while the YAML parser sees it.
//!
//! A job file is written by whoever can write `jobs/`, and the parser's cost is not linear in
//! its size: deeply nested flow collections (`[[[[...]]]]`) cost time quadratic in the depth,
//! and a large flat map or a few anchors/aliases cost memory far beyond the file's size. So a
//! file is checked in three layers, each with a located error:
//!
//! 1. its size, while reading ([`MAX_FILE_BYTES`]; nothing beyond the limit is read);
//! 2. a linear pre-scan of the text ([`prescan`]) that estimates nesting depth (flow brackets
//!    *and* block indentation, including compact `- - -` items) and the number of nodes,
//!    before the parser runs, so the parser only ever sees bounded input. The scan follows
//!    YAML's rules for quotes, comments and block scalars, and is conservative (it may count a
//!    little more than the parser would, never materially less; a property test checks this);
//!    as a backstop it also bounds unmatched brackets counted with no regard for quoting;
//! 3. for a file that may use aliases (it contains a `&` and a `*`), the parsed events are walked
//!    ([`count_nodes`]) for the exact depth and node count, alias expansions included,
//!    before any `Value` is built. Without aliases the document is no larger than the text,
//!    which the pre-scan bounded; the parser's own recursion limit (128) is a last backstop.

use std::cell::Cell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Visitor};

use crate::config::located::Pos;

/// The largest job file read (1 MiB).
pub const MAX_FILE_BYTES: usize = 1024 * 1024;
/// The deepest nesting of collections (mappings and sequences, block or flow style).
pub const MAX_DEPTH: usize = 64;
/// The most nodes (scalars, mappings, sequences, aliases after expansion) in one file.
pub const MAX_NODES: usize = 100_000;
/// Unmatched `[`/`{` counted without regard for quotes or comments: a backstop in case the
/// pre-scan's reading of quotes ever differs from the parser's.
const MAX_RAW_BRACKETS: usize = 1024;

/// A limit a file exceeds, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitError {
    pub pos: Pos,
    pub message: String,
}

pub(crate) fn too_large(pos: Pos) -> LimitError {
    LimitError {
        pos,
        message: format!(
            "the file is larger than {} KiB, the limit for a job file",
            MAX_FILE_BYTES / 1024
        ),
    }
}

fn too_deep(pos: Pos) -> LimitError {
    LimitError {
        pos,
        message: format!("nesting deeper than {MAX_DEPTH} levels, the limit for a job file"),
    }
}

fn too_many(pos: Pos) -> LimitError {
    LimitError {
        pos,
        message: format!("more than {MAX_NODES} YAML nodes, the limit for a job file"),
    }
}

/// The position of byte `offset` of `text`, clamped to the text and to a character start.
pub(crate) fn pos_at_byte(text: &str, offset: usize) -> Pos {
    let mut at = offset.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    pos_of(text, at)
}

/// A parser location in this module's terms. The parser counts lines its own way (YAML 1.1
/// also breaks lines at `\r`, U+0085, U+2028 and U+2029), so the position is recomputed from
/// its byte offset: lines end at `\n`, as in editors and in [`crate::config::located`].
pub(crate) fn yaml_pos(text: &str, loc: &yaml_serde::Location) -> Pos {
    pos_at_byte(text, loc.index())
}

/// The 1-based position of byte `offset` of `text` (which must be a char boundary or the end).
pub(crate) fn pos_of(text: &str, offset: usize) -> Pos {
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    Pos {
        line,
        column: before[line_start..].chars().count() + 1,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Seq,
    Map,
}

struct Scan {
    /// Open block collections: (column, kind), innermost last.
    block: Vec<(usize, Kind)>,
    /// Open flow collections.
    flow: usize,
    /// Inside a quoted scalar (which may span lines).
    quote: Option<char>,
    /// Whether the next non-blank character in flow context starts a node.
    node_start: bool,
    /// While inside a block scalar: the column its content must be deeper than.
    block_scalar: Option<usize>,
    nodes: usize,
    raw_brackets: usize,
}

/// Checks the text's size, nesting depth and node count before it is parsed. Linear time.
pub fn prescan(text: &str) -> Result<(), LimitError> {
    if text.len() > MAX_FILE_BYTES {
        let mut at = MAX_FILE_BYTES;
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        return Err(too_large(pos_of(text, at)));
    }
    let mut s = Scan {
        block: Vec::new(),
        flow: 0,
        quote: None,
        node_start: true,
        block_scalar: None,
        nodes: 0,
        raw_brackets: 0,
    };
    for (i, raw) in text.split('\n').enumerate() {
        let line = i + 1;
        let l = raw.strip_suffix('\r').unwrap_or(raw);
        s.line(l, line)?;
        s.raw(l, line)?;
    }
    Ok(())
}

impl Scan {
    fn raw(&mut self, l: &str, line: usize) -> Result<(), LimitError> {
        for (i, c) in l.char_indices() {
            match c {
                '[' | '{' => {
                    self.raw_brackets += 1;
                    if self.raw_brackets > MAX_RAW_BRACKETS {
                        return Err(too_deep(at(l, line, i)));
                    }
                }
                ']' | '}' => self.raw_brackets = self.raw_brackets.saturating_sub(1),
                _ => {}
            }
        }
        Ok(())
    }

    fn node(&mut self, l: &str, line: usize, i: usize, n: usize) -> Result<(), LimitError> {
        self.nodes += n;
        if self.nodes > MAX_NODES {
            return Err(too_many(at(l, line, i)));
        }
        Ok(())
    }

    fn depth(&self, l: &str, line: usize, i: usize) -> Result<(), LimitError> {
        if self.block.len() + self.flow > MAX_DEPTH {
            return Err(too_deep(at(l, line, i)));
        }
        Ok(())
    }

    /// Opens (or continues) a block collection of `kind` whose entries stand at `col`.
    fn place(&mut self, col: usize, kind: Kind) {
        while self.block.last().is_some_and(|(c, _)| *c > col) {
            self.block.pop();
        }
        match self.block.last().copied() {
            Some((c, k)) if c == col && k == kind => {}
            // `- a` then `b: c` at the same column: the sequence ended, the mapping continues.
            Some((c, Kind::Seq)) if c == col => {
                self.block.pop();
                self.place(col, kind);
            }
            // `key:` then `- item` at the same column: a sequence nested in the mapping.
            _ => self.block.push((col, kind)),
        }
    }

    fn line(&mut self, l: &str, line: usize) -> Result<(), LimitError> {
        // Continuation of a multi-line quoted scalar or flow collection.
        if self.quote.is_some() || self.flow > 0 {
            return self.inline(l, line, 0);
        }
        let indent = l.len() - l.trim_start_matches(' ').len();
        let rest = &l[indent..];
        if let Some(bi) = self.block_scalar {
            if rest.trim().is_empty() || indent > bi {
                return Ok(());
            }
            self.block_scalar = None;
        }
        if rest.trim().is_empty() || rest.starts_with('#') {
            return Ok(());
        }
        let mut i = indent;
        if indent == 0 && (rest.starts_with("---") || rest.starts_with("...")) {
            let after = &rest[3..];
            if after.is_empty() || after.starts_with([' ', '\t']) {
                self.block.clear();
                i = 3;
            }
        }
        while self.block.last().is_some_and(|(c, _)| *c > indent) {
            self.block.pop();
        }
        // Block sequence items and complex keys, possibly several on one line (`- - x`).
        loop {
            i = skip_blanks(l, i);
            let r = &l[i..];
            let Some(ind) = r.chars().next().filter(|c| *c == '-' || *c == '?') else {
                break;
            };
            let next = r[1..].chars().next();
            if !(next.is_none() || next == Some(' ') || next == Some('\t')) {
                break;
            }
            self.place(i, if ind == '-' { Kind::Seq } else { Kind::Map });
            self.node(l, line, i, 1)?;
            self.depth(l, line, i)?;
            i += 1;
        }
        i = skip_properties(l, i);
        let r = &l[i..];
        if r.is_empty() || r.starts_with('#') {
            return Ok(());
        }
        if r.starts_with(['[', '{', '"', '\'']) {
            self.node_start = true;
            return self.inline(l, line, i);
        }
        if let Some(value_at) = crate::config::located::split_key(r).map(|(_, off)| i + off) {
            self.place(i, Kind::Map);
            self.node(l, line, i, 2)?;
            self.depth(l, line, i)?;
            let v = skip_properties(l, skip_blanks(l, value_at));
            let vr = &l[v..];
            if vr.starts_with(['|', '>']) {
                self.block_scalar = Some(i);
            } else if vr.starts_with(['[', '{', '"', '\'']) {
                self.node_start = true;
                return self.inline(l, line, v);
            }
            return Ok(());
        }
        if r.starts_with(['|', '>']) {
            self.block_scalar = Some(indent);
        }
        self.node(l, line, i, 1)
    }

    /// Scans flow context and quoted scalars from byte `from` of the line.
    fn inline(&mut self, l: &str, line: usize, from: usize) -> Result<(), LimitError> {
        let bytes = l.as_bytes();
        let mut chars = l[from..]
            .char_indices()
            .map(|(j, c)| (from + j, c))
            .peekable();
        let mut prev_blank = true;
        while let Some((i, c)) = chars.next() {
            if let Some(q) = self.quote {
                if q == '"' && c == '\\' {
                    chars.next();
                } else if c == q {
                    if q == '\'' && chars.peek().is_some_and(|(_, n)| *n == '\'') {
                        chars.next();
                    } else {
                        self.quote = None;
                        self.node_start = false;
                    }
                }
                prev_blank = false;
                continue;
            }
            let blank = c == ' ' || c == '\t';
            match c {
                '#' if prev_blank => return Ok(()),
                '"' | '\'' if self.node_start => {
                    self.quote = Some(c);
                    self.node(l, line, i, 1)?;
                }
                '[' | '{' if self.node_start => {
                    self.flow += 1;
                    self.node(l, line, i, 1)?;
                    self.depth(l, line, i)?;
                }
                ']' | '}' if self.flow > 0 => {
                    self.flow -= 1;
                    self.node_start = false;
                    if self.flow == 0 {
                        // The rest of the line can only be a comment (or a syntax error).
                        return Ok(());
                    }
                }
                ',' if self.flow > 0 => {
                    self.node_start = true;
                    self.node(l, line, i, 1)?;
                }
                ':' if self.flow > 0
                    && bytes
                        .get(i + 1)
                        .is_none_or(|b| matches!(b, b' ' | b'\t' | b',' | b']' | b'}')) =>
                {
                    self.node_start = true;
                    self.node(l, line, i, 1)?;
                }
                '?' | '-' if self.node_start && bytes.get(i + 1).is_none_or(|b| *b == b' ') => {}
                '&' | '!' if self.node_start => {
                    // A property (anchor or tag): skip it; the node follows.
                    while chars.peek().is_some_and(|(_, n)| {
                        !matches!(n, ' ' | '\t' | ',' | '[' | ']' | '{' | '}')
                    }) {
                        chars.next();
                    }
                }
                _ if blank => {}
                _ => {
                    if self.node_start {
                        self.node(l, line, i, 1)?;
                    }
                    self.node_start = false;
                }
            }
            prev_blank = blank;
        }
        Ok(())
    }
}

fn skip_blanks(l: &str, mut i: usize) -> usize {
    let b = l.as_bytes();
    while i < b.len() && (b[i] == b' ' || b[i] == b'\t') {
        i += 1;
    }
    i
}

/// Skips anchors (`&a`) and tags (`!t`, `!!str`) before a node's content.
fn skip_properties(l: &str, mut i: usize) -> usize {
    let b = l.as_bytes();
    loop {
        i = skip_blanks(l, i);
        if i < b.len() && (b[i] == b'&' || b[i] == b'!') {
            while i < b.len() && b[i] != b' ' && b[i] != b'\t' {
                i += 1;
            }
        } else {
            return i;
        }
    }
}

fn at(l: &str, line: usize, i: usize) -> Pos {
    Pos {
        line,
        column: l[..i].chars().count() + 1,
    }
}

/// Walks a parsed document without building it, counting nodes (aliases expanded, as they
/// would be when building a value) and depth. Fails at the first node over a limit; the
/// deserializer locates the error at that node.
pub fn count_nodes(text: &str) -> Result<(), (Option<Pos>, String)> {
    let nodes = Cell::new(0usize);
    let exceeded: Cell<Option<&'static str>> = Cell::new(None);
    let seed = Count {
        nodes: &nodes,
        exceeded: &exceeded,
        depth: 0,
    };
    let de = yaml_serde::Deserializer::from_str(text);
    match seed.deserialize(de) {
        Ok(()) => Ok(()),
        Err(e) => {
            let pos = e.location().map(|l| yaml_pos(text, &l));
            match exceeded.get() {
                Some("depth") => Err((pos, too_deep(Pos { line: 0, column: 0 }).message)),
                Some(_) => Err((pos, too_many(Pos { line: 0, column: 0 }).message)),
                // A syntax error: the real parse reports it with its own message.
                None => Ok(()),
            }
        }
    }
}

struct Count<'a> {
    nodes: &'a Cell<usize>,
    exceeded: &'a Cell<Option<&'static str>>,
    depth: usize,
}

impl<'a> Count<'a> {
    fn child(&self) -> Count<'a> {
        Count {
            nodes: self.nodes,
            exceeded: self.exceeded,
            depth: self.depth + 1,
        }
    }

    fn bump<E: de::Error>(&self, collection: bool) -> Result<(), E> {
        self.nodes.set(self.nodes.get() + 1);
        if self.nodes.get() > MAX_NODES {
            self.exceeded.set(Some("nodes"));
            return Err(E::custom("node limit"));
        }
        if collection && self.depth >= MAX_DEPTH {
            self.exceeded.set(Some("depth"));
            return Err(E::custom("depth limit"));
        }
        Ok(())
    }
}

impl<'de> DeserializeSeed<'de> for Count<'_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Count<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any YAML node")
    }
    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.bump(false)
    }
    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.bump(false)
    }
    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.bump(false)
    }
    fn visit_i128<E: de::Error>(self, _: i128) -> Result<(), E> {
        self.bump(false)
    }
    fn visit_u128<E: de::Error>(self, _: u128) -> Result<(), E> {
        self.bump(false)
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.bump(false)
    }
    fn visit_str<E: de::Error>(self, _: &str) -> Result<(), E> {
        self.bump(false)
    }
    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.bump(false)
    }
    fn visit_none<E: de::Error>(self) -> Result<(), E> {
        self.bump(false)
    }
    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        self.bump(true)?;
        while seq.next_element_seed(self.child())?.is_some() {}
        Ok(())
    }
    fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        self.bump(true)?;
        while map.next_key_seed(self.child())?.is_some() {
            map.next_value_seed(self.child())?;
        }
        Ok(())
    }
    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<(), A::Error> {
        // A tagged node (`!tag value`): the tag, then its content.
        use de::VariantAccess;
        self.bump(false)?;
        let ((), variant) = data.variant_seed(self.child())?;
        variant.newtype_variant_seed(self.child())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn depth_err(text: &str) -> Option<Pos> {
        match prescan(text) {
            Err(e) if e.message.contains("nesting deeper") => Some(e.pos),
            _ => None,
        }
    }

    #[test]
    fn flow_nesting_is_bounded_and_located() {
        let ok = format!("a: {}{}\n", "[".repeat(60), "]".repeat(60));
        assert_eq!(prescan(&ok), Ok(()));
        let deep = format!("a: {}\n", "[".repeat(300_000));
        let p = depth_err(&deep).expect("too deep");
        assert_eq!((p.line, p.column), (1, 3 + MAX_DEPTH));
    }

    #[test]
    fn block_nesting_is_bounded() {
        // Indentation style: a mapping inside a mapping...
        let mut text = String::new();
        for d in 0..70 {
            text.push_str(&format!("{}k{d}:\n", "  ".repeat(d)));
        }
        let p = depth_err(&text).expect("indentation nesting");
        assert_eq!(p.line, MAX_DEPTH + 1);
        // ...compact sequences on one line...
        let text = format!("{}x\n", "- ".repeat(100));
        assert!(depth_err(&text).is_some());
        // ...and sequences at their key's indentation, which add depth without indenting.
        let mut text = String::new();
        for d in 0..40 {
            text.push_str(&format!("{}- k{d}:\n", "  ".repeat(d)));
        }
        assert!(depth_err(&text).is_some(), "map/seq alternation: 80 levels");
    }

    #[test]
    fn quotes_comments_and_block_scalars_are_not_structure() {
        let text = format!(
            "a: '{0}'\nb: \"{0}\" # {0}\nc: |\n  {0}\n  {0}\nd: ok # {0}\ne: it's [fine]\n",
            "[".repeat(100)
        );
        // The raw backstop counts these 500 brackets, well under its own limit.
        assert_eq!(prescan(&text), Ok(()));
    }

    #[test]
    fn many_nodes_are_bounded() {
        let text: String = (0..=MAX_NODES / 2).map(|i| format!("k{i}: 1\n")).collect();
        let e = prescan(&text).unwrap_err();
        assert!(e.message.contains("YAML nodes"), "{e:?}");
        let flow = format!("a: [{}]\n", "1,".repeat(MAX_NODES + 1));
        assert!(prescan(&flow).unwrap_err().message.contains("YAML nodes"));
    }

    #[test]
    fn alias_expansion_is_counted() {
        // 150 references to a 1,000-item list: 150,000 nodes from 6 KB.
        let text = format!(
            "a: &a [{}]\nb: [{}]\n",
            "x, ".repeat(1000),
            "*a, ".repeat(150)
        );
        assert_eq!(prescan(&text), Ok(()));
        let (pos, msg) = count_nodes(&text).unwrap_err();
        assert!(msg.contains("YAML nodes"), "{msg}");
        // Located at the node being expanded when the limit was crossed.
        assert!(pos.is_some(), "{pos:?}");
    }
}
