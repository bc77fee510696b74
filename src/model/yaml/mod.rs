//! The only module that knows about the YAML parser.
//!
//! Documents are parsed into a positioned tree ([`Node`]) and then converted to a
//! `serde_json::Value` (the shape Tekton's admission webhook sees after
//! `sigs.k8s.io/yaml` turns YAML into JSON) plus an index from field path to source
//! position, so that every later diagnostic can name `file:line:column`.
//!
//! Scalar rules follow Kubernetes (YAML 1.1 via `sigs.k8s.io/yaml`), not YAML 1.2:
//! plain `yes`/`on`/`true` become `"true"`, numbers become the string of their JSON form
//! (`1.10` -> `"1.1"`), `~`/`null`/empty become null. Every scalar lands as a JSON
//! string (or null); typed fields (`retries`, `optional`) parse leniently from strings.
//! The YAML parser crate is used only here so it can be swapped in one place.

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

use libyaml_safer::{EventData, Mark, Parser, ScalarStyle};
use serde_json::{Map, Value};

mod locate;
#[cfg(test)]
mod tests;

use locate::{line_col_of, locate_syntax_error};
pub use locate::{locate_scalar, parse_path, LocateError, PathSeg, ScalarKind, ScalarSpan};

/// A 1-based line and column in a source file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

impl std::fmt::Display for Pos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// One YAML document converted to JSON, with the position of every field path.
#[derive(Debug, Clone)]
pub struct Document {
    pub value: Value,
    /// Field path (e.g. `spec.tasks[2].runAfter[0]`) -> position of that node. Looked
    /// up only (a file's paths share long prefixes: hashing beats ordered comparison).
    pub positions: HashMap<String, Pos, foldhash::fast::RandomState>,
    /// Position of the document's first node.
    pub start: Pos,
    /// Field paths of plain values that YAML 1.1 reads as a boolean although they are
    /// not `true`/`false` (`y`, `no`, `on`, ...) -> their text and position, for hints.
    pub yaml11_bools: BTreeMap<String, (String, Pos)>,
}

impl Document {
    /// Position of `path`, or of its nearest ancestor that has one.
    pub fn pos_of(&self, path: &str) -> Pos {
        let mut p = path.to_string();
        loop {
            if let Some(pos) = self.positions.get(&p) {
                return *pos;
            }
            match parent_path(&p) {
                Some(parent) => p = parent,
                None => return self.start,
            }
        }
    }
}

fn parent_path(p: &str) -> Option<String> {
    if p.is_empty() {
        return None;
    }
    if p.ends_with(']') {
        if let Some(i) = p.rfind('[') {
            return Some(p[..i].to_string());
        }
    }
    match p.rfind('.') {
        Some(i) => Some(p[..i].to_string()),
        None => Some(String::new()),
    }
}

/// A YAML syntax error with its position.
#[derive(Debug, Clone)]
pub struct SyntaxError {
    pub pos: Pos,
    pub message: String,
}

#[derive(Debug, Clone)]
enum Node {
    Null(Pos),
    /// Text, whether it was a plain (unquoted) scalar, position.
    Scalar(String, bool, Pos),
    Seq(Vec<Node>, Pos),
    Map(Vec<(Node, Node)>, Pos),
    /// An anchored node, shared with its aliases (so an alias costs no copy).
    Shared(Rc<Node>),
}

impl Node {
    fn pos(&self) -> Pos {
        match self {
            Node::Null(p) | Node::Scalar(_, _, p) | Node::Seq(_, p) | Node::Map(_, p) => *p,
            Node::Shared(n) => n.pos(),
        }
    }

    /// The node itself, through any sharing.
    fn get(&self) -> &Node {
        match self {
            Node::Shared(n) => n.get(),
            other => other,
        }
    }
}

enum Frame {
    Seq(Vec<Node>, Pos, Option<String>),
    Map(Vec<(Node, Node)>, Option<Node>, Pos, Option<String>),
}

/// What a finished node costs: its height (0 for a scalar, 1 + the deepest child for a
/// collection), and the nodes and scalar bytes it holds (alias expansion included).
#[derive(Clone, Copy, Default)]
struct Size {
    height: usize,
    nodes: usize,
    bytes: usize,
}

/// An open collection's bookkeeping: the deepest child so far and the running totals
/// when it opened.
struct Open {
    child_height: usize,
    nodes_at_start: usize,
    bytes_at_start: usize,
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    open: Vec<Open>,
    docs: Vec<Node>,
    anchors: BTreeMap<String, (Rc<Node>, Size)>,
    /// Nodes and scalar bytes so far, aliases counted at their expanded size.
    nodes: usize,
    bytes: usize,
}

fn to_pos(m: &Mark) -> Pos {
    Pos { line: m.line as usize + 1, col: m.column as usize + 1 }
}

impl Builder {
    fn push_node(&mut self, node: Node, anchor: Option<String>, size: Size) {
        let node = match anchor {
            Some(a) => {
                let shared = Rc::new(node);
                self.anchors.insert(a, (shared.clone(), size));
                Node::Shared(shared)
            }
            None => node,
        };
        if let Some(o) = self.open.last_mut() {
            o.child_height = o.child_height.max(size.height);
        }
        match self.stack.last_mut() {
            None => self.docs.push(node),
            Some(Frame::Seq(items, _, _)) => items.push(node),
            Some(Frame::Map(entries, key, _, _)) => match key.take() {
                None => *key = Some(node),
                Some(k) => entries.push((k, node)),
            },
        }
    }

    fn open(&mut self, frame: Frame) {
        self.stack.push(frame);
        self.open.push(Open { child_height: 0, nodes_at_start: self.nodes, bytes_at_start: self.bytes });
    }

    /// Size of the collection being closed.
    fn close(&mut self) -> Size {
        let o =
            self.open.pop().unwrap_or(Open { child_height: 0, nodes_at_start: self.nodes, bytes_at_start: self.bytes });
        Size { height: o.child_height + 1, nodes: self.nodes - o.nodes_at_start, bytes: self.bytes - o.bytes_at_start }
    }
}

/// The most nodes one file may hold (alias expansion included): a guard against
/// "billion laughs" documents.
const MAX_NODES: usize = 1_000_000;

/// The deepest nesting of collections (mappings and sequences, aliases expanded) a
/// document may have, as serde_json's limit. Every later walk over a document recurses,
/// so this bounds their stack use; Tekton objects need about 15 levels.
pub const MAX_DEPTH: usize = 256;

/// The most scalar text (keys and values, alias expansion included) one file may hold.
const MAX_TEXT_BYTES: usize = 64 * 1024 * 1024;

/// The most bytes of field paths (`spec.tasks[0].name`, ...) indexed for one file: long
/// keys nested deep would otherwise cost quadratic time and memory.
const MAX_PATH_BYTES: usize = 64 * 1024 * 1024;

/// Parse a (possibly multi-document) YAML text. Empty documents are dropped.
/// On a syntax error, the documents before it are returned along with the error.
pub fn parse_documents(text: &str) -> (Vec<Document>, Vec<SyntaxError>) {
    // The parser can panic at an unterminated final line; a trailing newline moves no
    // position, and a panic that still escapes becomes a syntax error.
    let owned;
    let text = if text.ends_with('\n') {
        text
    } else {
        owned = format!("{text}\n");
        owned.as_str()
    };
    match guarded(text, |progress| parse_inner(text, progress)) {
        Ok(r) => r,
        Err(e) => (vec![], vec![e]),
    }
}

/// Run the parser over `text` in `f`, which records in `progress` the byte offset (as
/// the parser counts it) where its last event ended. The parser has a few panics left
/// for input it does not expect (a tag directly followed by `,` in a flow collection):
/// those become a syntax error at the best position known, and their message is kept
/// off stderr (by a panic hook that passes every other panic on).
fn guarded<T>(text: &str, f: impl FnOnce(&std::cell::Cell<usize>) -> T) -> Result<T, SyntaxError> {
    static QUIET: std::sync::Once = std::sync::Once::new();
    QUIET.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !info.location().is_some_and(|l| l.file().contains("libyaml-safer")) {
                previous(info)
            }
        }));
    });
    let progress = std::cell::Cell::new(0);
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&progress))).map_err(|_| {
        let bom = if text.starts_with('\u{feff}') { '\u{feff}'.len_utf8() } else { 0 };
        let from = (progress.get() + bom).min(text.len());
        // the known case: `!tag,` in a flow collection
        let b = text.as_bytes();
        let mut tag = None;
        let mut i = from;
        while i < b.len() && tag.is_none() {
            if b[i] == b'!' {
                // the tag runs to a blank or a comma; each byte is looked at once
                let end = (i..b.len()).find(|&j| matches!(b[j], b' ' | b'\t' | b'\r' | b'\n' | b','));
                let end = end.unwrap_or(b.len());
                if b.get(end) == Some(&b',') {
                    tag = Some(i);
                }
                i = end;
            }
            i += 1;
        }
        let at = tag.unwrap_or(from);
        let at = (0..=at).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
        let (line, col) = line_col_of(text, at);
        let message = match tag {
            Some(_) => "a tag directly followed by ',' (write the value, or a space, after the tag)",
            None => "the YAML parser cannot read what follows here",
        };
        SyntaxError { pos: Pos { line, col }, message: message.into() }
    })
}

fn parse_inner(text: &str, progress: &std::cell::Cell<usize>) -> (Vec<Document>, Vec<SyntaxError>) {
    let mut b = Builder::default();
    let mut input = text.as_bytes();
    let mut parser = Parser::new();
    parser.set_input_string(&mut input);
    let mut err = None;
    loop {
        let ev = match parser.parse() {
            Ok(ev) => ev,
            Err(e) => {
                err = Some(locate_syntax_error(&e, text));
                break;
            }
        };
        progress.set(ev.end_mark.index as usize);
        let pos = to_pos(&ev.start_mark);
        b.nodes += 1;
        if b.nodes > MAX_NODES {
            err = Some(SyntaxError {
                pos,
                message: format!("document has more than {MAX_NODES} nodes (aliases expanded)"),
            });
            break;
        }
        if b.bytes > MAX_TEXT_BYTES {
            let mib = MAX_TEXT_BYTES >> 20;
            err = Some(SyntaxError {
                pos,
                message: format!("document holds more than {mib} MiB of text (aliases expanded)"),
            });
            break;
        }
        let too_deep = || SyntaxError {
            pos,
            message: format!("nested deeper than {MAX_DEPTH} levels (mappings and lists, aliases expanded)"),
        };
        match ev.data {
            EventData::StreamEnd => break,
            EventData::Scalar { value, anchor, tag, style, .. } => {
                let plain = style == ScalarStyle::Plain;
                let is_null = plain && tag.is_none() && matches!(value.as_str(), "" | "~" | "null" | "Null" | "NULL");
                b.bytes += value.len();
                let size = Size { height: 0, nodes: 1, bytes: value.len() };
                let node = if is_null { Node::Null(pos) } else { Node::Scalar(value, plain && tag.is_none(), pos) };
                b.push_node(node, anchor, size);
            }
            EventData::SequenceStart { .. } | EventData::MappingStart { .. } if b.stack.len() >= MAX_DEPTH => {
                err = Some(too_deep());
                break;
            }
            EventData::SequenceStart { anchor, .. } => b.open(Frame::Seq(Vec::new(), pos, anchor)),
            EventData::MappingStart { anchor, .. } => b.open(Frame::Map(Vec::new(), None, pos, anchor)),
            EventData::SequenceEnd => {
                if let Some(Frame::Seq(items, p, anchor)) = b.stack.pop() {
                    let size = b.close();
                    b.push_node(Node::Seq(items, p), anchor, size);
                }
            }
            EventData::MappingEnd => {
                if let Some(Frame::Map(entries, _, p, anchor)) = b.stack.pop() {
                    let size = b.close();
                    b.push_node(Node::Map(entries, p), anchor, size);
                }
            }
            EventData::Alias { anchor } => match b.anchors.get(&anchor) {
                Some((_, size)) if b.stack.len() + size.height > MAX_DEPTH => {
                    err = Some(too_deep());
                    break;
                }
                Some((_, size)) if b.nodes + size.nodes > MAX_NODES || b.bytes + size.bytes > MAX_TEXT_BYTES => {
                    err = Some(SyntaxError {
                        pos,
                        message: format!(
                            "alias *{anchor} expands the document past {MAX_NODES} nodes or {} MiB of text",
                            MAX_TEXT_BYTES >> 20
                        ),
                    });
                    break;
                }
                Some((n, size)) => {
                    let (n, size) = (Node::Shared(n.clone()), *size);
                    b.nodes += size.nodes;
                    b.bytes += size.bytes;
                    b.push_node(n, None, size)
                }
                None => {
                    err = Some(SyntaxError { pos, message: format!("unknown alias {anchor:?}") });
                    break;
                }
            },
            _ => {}
        }
    }
    let mut docs = Vec::new();
    let errs: Vec<SyntaxError> = err.into_iter().collect();
    let mut conv = Converter { errs, ..Default::default() };
    for node in b.docs {
        if matches!(node.get(), Node::Null(_)) {
            continue;
        }
        let start = shown_pos(&node);
        let value = conv.convert(&node, "");
        let positions = std::mem::take(&mut conv.positions);
        let yaml11_bools = std::mem::take(&mut conv.bools);
        docs.push(Document { value, positions, start, yaml11_bools });
    }
    let mut errs = conv.errs;
    errs.sort_by_key(|e| e.pos);
    (docs, errs)
}

/// The field path of `key` under `prefix`, as diagnostics name fields: `a.b`, or `a["k.x"]`
/// for a key that is not a plain word.
pub fn join_key(prefix: &str, key: &str) -> String {
    let simple = !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    match (prefix.is_empty(), simple) {
        (true, true) => key.to_string(),
        (false, true) => format!("{prefix}.{key}"),
        (_, false) => format!("{prefix}[{key:?}]"),
    }
}

/// Where a node is best shown: a mapping's own start marker is unreliable in the
/// parser, so a mapping is shown at its first key.
fn shown_pos(node: &Node) -> Pos {
    match node.get() {
        Node::Map(entries, p) => entries.first().map_or(*p, |(k, _)| k.pos()),
        other => other.pos(),
    }
}

/// Plain scalars YAML 1.1 reads as booleans that YAML 1.2 (and most readers) take as text.
fn yaml11_only_bool(text: &str) -> Option<bool> {
    match text {
        "yes" | "Yes" | "YES" | "on" | "On" | "ON" | "y" | "Y" => Some(true),
        "no" | "No" | "NO" | "off" | "Off" | "OFF" | "n" | "N" => Some(false),
        _ => None,
    }
}

/// The hint for a value YAML 1.1 read as a boolean, `None` for any other text.
pub fn yaml11_bool_hint(text: &str) -> Option<String> {
    let b = yaml11_only_bool(text)?;
    Some(format!("{text} is read as the boolean {b} by YAML 1.1 (as Kubernetes does); quote it: {text:?}"))
}

/// Converts nodes to JSON values, indexing the position of every field path.
#[derive(Default)]
struct Converter {
    positions: HashMap<String, Pos, foldhash::fast::RandomState>,
    errs: Vec<SyntaxError>,
    bools: BTreeMap<String, (String, Pos)>,
    /// Bytes of field paths built so far, against [`MAX_PATH_BYTES`].
    path_bytes: usize,
    over_budget: bool,
}

impl Converter {
    /// Convert a node; problems (duplicate keys, non-scalar keys) are collected and the
    /// document is kept, so one mistake does not hide the objects it belongs to.
    fn convert(&mut self, node: &Node, path: &str) -> Value {
        self.convert_at(node, path, false)
    }

    /// [`Self::convert`]; `indexed`: `path` already has its position (a mapping value,
    /// shown at its key), so the index is not looked up again.
    fn convert_at(&mut self, node: &Node, path: &str, indexed: bool) -> Value {
        self.path_bytes += path.len();
        if self.path_bytes > MAX_PATH_BYTES {
            if !self.over_budget {
                self.over_budget = true;
                let mib = MAX_PATH_BYTES >> 20;
                self.errs.push(SyntaxError {
                    pos: node.pos(),
                    message: format!("document too large to index: its field paths exceed {mib} MiB (keys too long or nested too deep)"),
                });
            }
            return Value::Null;
        }
        if !indexed && !self.positions.contains_key(path) {
            self.positions.insert(path.to_string(), shown_pos(node));
        }
        match node.get() {
            Node::Shared(_) => unreachable!("get() looks through sharing"),
            Node::Null(_) => Value::Null,
            Node::Scalar(text, plain, pos) => {
                if *plain && yaml11_only_bool(text).is_some() {
                    self.bools.insert(path.to_string(), (text.clone(), *pos));
                }
                Value::String(scalar_string(text, *plain))
            }
            Node::Seq(items, _) => Value::Array(
                items.iter().enumerate().map(|(i, item)| self.convert(item, &format!("{path}[{i}]"))).collect(),
            ),
            Node::Map(entries, _) => {
                let mut out = Map::new();
                let mut explicit = std::collections::HashSet::new();
                for (k, v) in entries {
                    let key: &str = match k.get() {
                        // Keys keep their text: `n:` or `on:` as a key is a name, not a bool.
                        Node::Scalar(t, _, _) => t,
                        Node::Null(_) => "null",
                        _ => {
                            self.errs
                                .push(SyntaxError { pos: k.pos(), message: "mapping keys must be scalars".into() });
                            continue;
                        }
                    };
                    if key == "<<" {
                        // YAML merge key: merge the mapping(s) in, without overriding.
                        let maps = match self.convert(v, path) {
                            Value::Object(m) => vec![m],
                            Value::Array(a) => a
                                .into_iter()
                                .filter_map(|x| match x {
                                    Value::Object(m) => Some(m),
                                    _ => None,
                                })
                                .collect(),
                            _ => vec![],
                        };
                        for m in maps {
                            for (mk, mv) in m {
                                out.entry(mk).or_insert(mv);
                            }
                        }
                        continue;
                    }
                    let child = join_key(path, key);
                    if !explicit.insert(key) {
                        self.errs
                            .push(SyntaxError { pos: k.pos(), message: format!("duplicate key {key:?} in mapping") });
                    }
                    // A field is shown at its key (`runAfter:`), where the reader looks.
                    self.positions.insert(child.clone(), k.pos());
                    let val = self.convert_at(v, &child, true);
                    out.insert(key.to_string(), val);
                }
                Value::Object(out)
            }
        }
    }
}

/// Resolve a scalar as `sigs.k8s.io/yaml` would and render it as the string of its JSON form.
fn scalar_string(text: &str, plain: bool) -> String {
    if !plain {
        return text.to_string();
    }
    match text {
        "true" | "True" | "TRUE" => return "true".into(),
        "false" | "False" | "FALSE" => return "false".into(),
        _ => {}
    }
    if let Some(b) = yaml11_only_bool(text) {
        return b.to_string();
    }
    if let Some(n) = normalize_number(text) {
        return n;
    }
    text.to_string()
}

fn normalize_number(text: &str) -> Option<String> {
    // every number starts with a digit or '.', after an optional sign (most scalars are words)
    let b = text.as_bytes();
    let first = if matches!(b.first(), Some(b'+' | b'-')) { b.get(1) } else { b.first() };
    if !text.contains('_') && !first.is_some_and(|c| c.is_ascii_digit() || *c == b'.') {
        return None;
    }
    let t = text.replace('_', "");
    let (neg, digits) = match t.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, t.strip_prefix('+').unwrap_or(&t)),
    };
    if digits.is_empty() {
        return None;
    }
    let sign = if neg { "-" } else { "" };
    if let Some(hex) = digits.strip_prefix("0x") {
        return u64::from_str_radix(hex, 16).ok().map(|v| format!("{sign}{v}"));
    }
    if let Some(oct) = digits.strip_prefix("0o") {
        return u64::from_str_radix(oct, 8).ok().map(|v| format!("{sign}{v}"));
    }
    if digits.bytes().all(|b| b.is_ascii_digit()) {
        // YAML 1.1: a leading 0 means octal.
        if digits.len() > 1 && digits.starts_with('0') {
            if let Ok(v) = u64::from_str_radix(digits, 8) {
                return Some(format!("{sign}{v}"));
            }
            return None;
        }
        return digits.parse::<u64>().ok().map(|v| format!("{sign}{v}"));
    }
    // Floats: digits with one '.', optional exponent.
    let looks_float = digits.bytes().next().is_some_and(|b| b.is_ascii_digit() || b == b'.')
        && digits.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'))
        && digits.bytes().any(|b| b.is_ascii_digit());
    if looks_float {
        if let Ok(f) = t.parse::<f64>() {
            if f.is_finite() {
                return Some(format_float(f));
            }
        }
    }
    None
}

/// Go's `encoding/json` float formatting (shortest repr, exponent outside [1e-6, 1e21)).
fn format_float(f: f64) -> String {
    let a = f.abs();
    if a != 0.0 && !(1e-6..1e21).contains(&a) {
        let s = format!("{f:e}");
        // Go writes e+21 / e-07 style exponents.
        if let Some((m, e)) = s.split_once('e') {
            let (es, ed) = match e.strip_prefix('-') {
                Some(d) => ('-', d),
                None => ('+', e),
            };
            return format!("{m}e{es}{ed:0>2}");
        }
        s
    } else {
        format!("{f}")
    }
}
