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

use std::collections::BTreeMap;
use std::rc::Rc;

use libyaml_safer::{EventData, Mark, Parser, ScalarStyle};
use serde_json::{Map, Value};

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
    /// Field path (e.g. `spec.tasks[2].runAfter[0]`) -> position of that node.
    pub positions: BTreeMap<String, Pos>,
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

fn join_key(prefix: &str, key: &str) -> String {
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
    positions: BTreeMap<String, Pos>,
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
        self.positions.entry(path.to_string()).or_insert_with(|| shown_pos(node));
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
                    let key = match k.get() {
                        // Keys keep their text: `n:` or `on:` as a key is a name, not a bool.
                        Node::Scalar(t, _, _) => t.clone(),
                        Node::Null(_) => "null".to_string(),
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
                    let child = join_key(path, &key);
                    if !explicit.insert(key.clone()) {
                        self.errs
                            .push(SyntaxError { pos: k.pos(), message: format!("duplicate key {key:?} in mapping") });
                    }
                    // A field is shown at its key (`runAfter:`), where the reader looks.
                    self.positions.insert(child.clone(), k.pos());
                    let val = self.convert(v, &child);
                    out.insert(key, val);
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

// ---------------------------------------------------------------------------------
// Locating one scalar's bytes, for format-preserving edits (`promote::edit`).
// ---------------------------------------------------------------------------------

/// One step of a field path: a mapping key or a sequence index.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PathSeg {
    Key(String),
    Index(usize),
}

/// How a scalar is written in the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScalarKind {
    Plain,
    SingleQuoted,
    DoubleQuoted,
    /// `|` block scalar.
    Literal,
    /// `>` block scalar.
    Folded,
}

/// Byte span and style of the scalar at a path, in the first document that has it.
///
/// `start..end` are byte offsets into the text handed to [`locate_scalar`]: the
/// scalar's own token, after any anchor or tag (`&a !!str x` -> `x`), quotes included.
/// A block scalar's span runs from its `|`/`>` indicator (header comment included)
/// through the trailing blank lines the parser attributes to it. An empty value
/// (`key:`) has an empty span right after the `:` (or `-`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScalarSpan {
    pub start: usize,
    pub end: usize,
    pub style: ScalarKind,
    /// The scalar's text as parsed (escapes resolved, no type resolution: plain `1.10` is `"1.10"`).
    pub value: String,
    /// The value as tenon's model reads it (Kubernetes rules, as [`parse_documents`]):
    /// plain `1.10` is `"1.1"`, plain `yes` is `"true"`, plain `~` or empty is `None`.
    pub resolved: Option<String>,
    /// 1-based line and column (in characters) of `start`.
    pub line: usize,
    pub col: usize,
    /// Inside a flow collection (`{..}`/`[..]`), where `,[]{}` end a plain scalar.
    pub flow: bool,
}

/// Why [`locate_scalar`] found no editable scalar.
#[derive(Debug, Clone)]
pub enum LocateError {
    /// The text is not valid YAML (anywhere in the stream), or the path's key is duplicated.
    Syntax(SyntaxError),
    /// `missing` (a key, or `[i]` for an index) is the first path segment not found;
    /// `path[..depth]` exists and is a `parent_kind` ("mapping", "sequence", "scalar",
    /// or "document" for an empty stream) at `line:col`. Of several documents, the one
    /// that got furthest is reported.
    NotFound { missing: String, depth: usize, parent_kind: &'static str, line: usize, col: usize },
    /// The path names a collection ("mapping" | "sequence").
    NotScalar { kind: &'static str, line: usize, col: usize },
    /// The path is (or goes through) an alias `*anchor`: editing it in place would
    /// change the anchored node and every other alias of it.
    Alias { anchor: String, line: usize, col: usize },
}

/// Parse a field path as tenon prints them: `spec.model.uri`,
/// `spec.containers[0].image`, `metadata.annotations["a.b/c"]` (quoted keys take
/// `\"`, `\\`, `\n`, `\t`, `\r`, `\0`, `\u{..}` escapes; single quotes work too).
pub fn parse_path(p: &str) -> Result<Vec<PathSeg>, String> {
    let chars: Vec<char> = p.chars().collect();
    if chars.is_empty() {
        return Err("empty path".into());
    }
    let mut segs = Vec::new();
    let mut i = 0;
    loop {
        if chars.get(i) == Some(&'[') {
            i += 1;
            let seg = match chars.get(i) {
                Some(&q) if q == '"' || q == '\'' => {
                    i += 1;
                    let mut key = String::new();
                    loop {
                        match chars.get(i) {
                            None => return Err(format!("unclosed quote in path {p:?}")),
                            Some(&c) if c == q => {
                                i += 1;
                                break;
                            }
                            Some('\\') => {
                                i += 1;
                                match chars.get(i) {
                                    Some('n') => key.push('\n'),
                                    Some('t') => key.push('\t'),
                                    Some('r') => key.push('\r'),
                                    Some('0') => key.push('\0'),
                                    Some(&c @ ('\\' | '"' | '\'')) => key.push(c),
                                    Some('u') if chars.get(i + 1) == Some(&'{') => {
                                        let close = chars[i..].iter().position(|&c| c == '}').map(|o| i + o);
                                        let Some(close) = close else {
                                            return Err(format!("unclosed \\u{{..}} escape in path {p:?}"));
                                        };
                                        let hex: String = chars[i + 2..close].iter().collect();
                                        let c = u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32);
                                        let Some(c) = c else {
                                            return Err(format!("bad \\u{{{hex}}} escape in path {p:?}"));
                                        };
                                        key.push(c);
                                        i = close;
                                    }
                                    _ => return Err(format!("unknown escape at column {} of path {p:?}", i + 1)),
                                }
                                i += 1;
                            }
                            Some(&c) => {
                                key.push(c);
                                i += 1;
                            }
                        }
                    }
                    PathSeg::Key(key)
                }
                _ => {
                    let start = i;
                    while chars.get(i).is_some_and(|c| c.is_ascii_digit()) {
                        i += 1;
                    }
                    if i == start {
                        return Err(format!("expected an index or a quoted key at column {} of path {p:?}", i + 1));
                    }
                    let digits: String = chars[start..i].iter().collect();
                    PathSeg::Index(digits.parse().map_err(|_| format!("index {digits} is too large in path {p:?}"))?)
                }
            };
            if chars.get(i) != Some(&']') {
                return Err(format!("expected ']' at column {} of path {p:?}", i + 1));
            }
            i += 1;
            segs.push(seg);
        } else {
            let start = i;
            while chars.get(i).is_some_and(|&c| c != '.' && c != '[' && c != ']') {
                i += 1;
            }
            if i == start {
                return Err(format!("empty key at column {} of path {p:?}", i + 1));
            }
            segs.push(PathSeg::Key(chars[start..i].iter().collect()));
        }
        match chars.get(i) {
            None => break,
            Some('.') => {
                i += 1;
                if i == chars.len() {
                    return Err(format!("path {p:?} ends with '.'"));
                }
            }
            Some('[') => {}
            Some(c) => return Err(format!("unexpected {c:?} at column {} of path {p:?}", i + 1)),
        }
    }
    Ok(segs)
}

/// Find the scalar at `path` in the first document of `text` that has the path,
/// for an in-place edit. The whole stream must parse. A duplicated key on the path is
/// an error (which one would be meant is ambiguous). Merge keys (`<<: *base`) are not
/// followed: only keys written in the mapping itself are found.
///
/// The parser's `Mark.index` counts bytes of the UTF-8 input (a `\r\n` is 2), after a
/// leading byte-order mark, which is added back here; its `column` counts characters.
pub fn locate_scalar(text: &str, path: &[PathSeg]) -> Result<ScalarSpan, LocateError> {
    // As in `parse_documents`: the parser can panic at an unterminated final line.
    let owned;
    let parse_text = if text.ends_with('\n') {
        text
    } else {
        owned = format!("{text}\n");
        owned.as_str()
    };
    match guarded(parse_text, |progress| locate_inner(parse_text, path, progress)) {
        Ok(Ok(mut span)) => {
            span.end = span.end.min(text.len());
            span.start = span.start.min(span.end);
            Ok(span)
        }
        Ok(Err(e)) => Err(e),
        Err(e) => Err(LocateError::Syntax(e)),
    }
}

struct LocFrame {
    seq: bool,
    flow: bool,
    /// The path up to here matches (`path[..depth]`), and we are still looking.
    on_path: bool,
    depth: usize,
    next_index: usize,
    expect_key: bool,
    /// The current key matched `path[depth]`.
    cur_match: bool,
    /// A child matching `path[depth]` was seen.
    found: bool,
    pos: Pos,
}

/// A parser error at its best position: an unclosed flow collection is shown where it
/// was opened.
fn locate_syntax_error(e: &libyaml_safer::Error, text: &str) -> SyntaxError {
    if e.kind() == libyaml_safer::ErrorKind::Reader {
        return reader_error(e, text);
    }
    let mut pos = e.problem_mark().map(|m| to_pos(&m)).unwrap_or(Pos { line: 1, col: 1 });
    let mut message = e.problem().to_string();
    if let Some(c) = e.context() {
        if c.contains("flow") {
            if let Some(m) = e.context_mark() {
                message = format!("{message} ({c} opened here; the parser gave up at {pos})");
                pos = to_pos(&m);
            }
        } else {
            message = format!("{message} ({c})");
        }
    }
    SyntaxError { pos, message }
}

/// A reader error (a control character, a NUL) has no mark, only a byte offset, which
/// the parser shows in its message only: `... (offset N, value V)`.
fn reader_error(e: &libyaml_safer::Error, text: &str) -> SyntaxError {
    let shown = e.to_string();
    let field = |name: &str| -> Option<i64> {
        let rest = &shown[shown.rfind(&format!("{name} "))? + name.len() + 1..];
        rest[..rest.find([',', ')']).unwrap_or(rest.len())].trim().parse().ok()
    };
    let bom = if text.starts_with('\u{feff}') { '\u{feff}'.len_utf8() } else { 0 };
    let pos = match field("offset").map(|o| o as usize + bom) {
        Some(at) if at <= text.len() && text.is_char_boundary(at) => {
            let (line, col) = line_col_of(text, at);
            Pos { line, col }
        }
        _ => Pos { line: 1, col: 1 },
    };
    let message = match field("value").and_then(|v| u32::try_from(v).ok()) {
        Some(v) => format!("{} (U+{v:04X})", e.problem()),
        None => e.problem().to_string(),
    };
    SyntaxError { pos, message }
}

fn locate_inner(text: &str, path: &[PathSeg], progress: &std::cell::Cell<usize>) -> Result<ScalarSpan, LocateError> {
    use libyaml_safer::{MappingStyle, SequenceStyle};

    let bom = if text.starts_with('\u{feff}') { '\u{feff}'.len_utf8() } else { 0 };
    let mut input = text.as_bytes();
    let mut parser = Parser::new();
    parser.set_input_string(&mut input);
    let mut stack: Vec<LocFrame> = Vec::new();
    // The first document that resolves the path decides; later ones are only parsed.
    let mut result: Option<Result<ScalarSpan, LocateError>> = None;
    let mut done = false;
    let mut missing: Option<LocateError> = None;
    let mut note_missing = |depth: usize, parent_kind: &'static str, pos: Pos| {
        let deeper = match &missing {
            Some(LocateError::NotFound { depth: d, .. }) => depth > *d,
            _ => true,
        };
        if deeper {
            let missing_seg = match &path[depth] {
                PathSeg::Key(k) => k.clone(),
                PathSeg::Index(i) => format!("[{i}]"),
            };
            missing =
                Some(LocateError::NotFound { missing: missing_seg, depth, parent_kind, line: pos.line, col: pos.col });
        }
    };
    loop {
        let ev = parser.parse().map_err(|e| LocateError::Syntax(locate_syntax_error(&e, text)))?;
        progress.set(ev.end_mark.index as usize);
        let pos = to_pos(&ev.start_mark);
        let is_node = matches!(
            ev.data,
            EventData::Scalar { .. }
                | EventData::Alias { .. }
                | EventData::SequenceStart { .. }
                | EventData::MappingStart { .. }
        );
        if is_node {
            // The node's role: on the path (and how deep), a key, or elsewhere.
            let (on_path, depth, is_key, in_flow) = match stack.last_mut() {
                None => (!done, 0, false, false),
                Some(f) if f.seq => {
                    let i = f.next_index;
                    f.next_index += 1;
                    let m = f.on_path && matches!(path.get(f.depth), Some(PathSeg::Index(j)) if *j == i);
                    if m {
                        f.found = true;
                    }
                    (m, f.depth + 1, false, f.flow)
                }
                Some(f) if f.expect_key => {
                    f.expect_key = false;
                    let m = f.on_path
                        && match (&ev.data, path.get(f.depth)) {
                            (EventData::Scalar { value, .. }, Some(PathSeg::Key(k))) => value == k,
                            _ => false,
                        };
                    if m {
                        if f.found {
                            return Err(LocateError::Syntax(SyntaxError {
                                pos,
                                message: format!("duplicate key {:?} in mapping", path_key(&path[f.depth])),
                            }));
                        }
                        f.found = true;
                    }
                    f.cur_match = m;
                    (false, f.depth + 1, true, f.flow)
                }
                Some(f) => {
                    f.expect_key = true;
                    (f.cur_match, f.depth + 1, false, f.flow)
                }
            };
            let on_path = on_path && !is_key && result.is_none();
            match ev.data {
                EventData::Scalar { value, style, anchor, tag, .. } => {
                    if on_path && depth == path.len() {
                        let mut start = ev.start_mark.index as usize + bom;
                        let end = (ev.end_mark.index as usize + bom).min(text.len());
                        if anchor.is_some() || tag.is_some() {
                            start = skip_node_properties(text, start, end);
                        }
                        let start = start.min(end);
                        let (line, col) = line_col_of(text, start);
                        let style = match style {
                            ScalarStyle::SingleQuoted => ScalarKind::SingleQuoted,
                            ScalarStyle::DoubleQuoted => ScalarKind::DoubleQuoted,
                            ScalarStyle::Literal => ScalarKind::Literal,
                            ScalarStyle::Folded => ScalarKind::Folded,
                            _ => ScalarKind::Plain,
                        };
                        let plain = style == ScalarKind::Plain && tag.is_none();
                        let is_null = plain && matches!(value.as_str(), "" | "~" | "null" | "Null" | "NULL");
                        let resolved = if is_null { None } else { Some(scalar_string(&value, plain)) };
                        result = Some(Ok(ScalarSpan { start, end, style, value, resolved, line, col, flow: in_flow }));
                    } else if on_path {
                        note_missing(depth, "scalar", pos);
                    }
                }
                EventData::Alias { anchor } if on_path => {
                    result = Some(Err(LocateError::Alias { anchor, line: pos.line, col: pos.col }));
                }
                EventData::SequenceStart { .. } | EventData::MappingStart { .. } => {
                    let (seq, flow_style) = match &ev.data {
                        EventData::SequenceStart { style, .. } => (true, *style == SequenceStyle::Flow),
                        EventData::MappingStart { style, .. } => (false, *style == MappingStyle::Flow),
                        _ => unreachable!(),
                    };
                    let kind = if seq { "sequence" } else { "mapping" };
                    if on_path && depth == path.len() {
                        result = Some(Err(LocateError::NotScalar { kind, line: pos.line, col: pos.col }));
                    }
                    stack.push(LocFrame {
                        seq,
                        flow: in_flow || flow_style,
                        on_path: on_path && depth < path.len(),
                        depth,
                        next_index: 0,
                        expect_key: true,
                        cur_match: false,
                        found: false,
                        pos,
                    });
                }
                _ => {}
            }
            continue;
        }
        match ev.data {
            EventData::StreamEnd => break,
            EventData::DocumentStart { .. } => stack.clear(),
            EventData::DocumentEnd { .. } => done = result.is_some(),
            EventData::SequenceEnd | EventData::MappingEnd => {
                if let Some(f) = stack.pop() {
                    if f.on_path && !f.found && result.is_none() {
                        note_missing(f.depth, if f.seq { "sequence" } else { "mapping" }, f.pos);
                    }
                }
            }
            _ => {}
        }
    }
    if let Some(r) = result {
        return r;
    }
    Err(missing.unwrap_or_else(|| match path.first() {
        Some(_) => {
            LocateError::NotFound { missing: path_key(&path[0]), depth: 0, parent_kind: "document", line: 1, col: 1 }
        }
        None => LocateError::NotFound { missing: String::new(), depth: 0, parent_kind: "document", line: 1, col: 1 },
    }))
}

fn path_key(seg: &PathSeg) -> String {
    match seg {
        PathSeg::Key(k) => k.clone(),
        PathSeg::Index(i) => format!("[{i}]"),
    }
}

/// Skip a node's anchor (`&a`) and tag (`!!str`, `!<..>`), and the blanks and comments
/// after them, to reach the scalar's own token.
fn skip_node_properties(text: &str, mut i: usize, end: usize) -> usize {
    let b = text.as_bytes();
    while i < end {
        match b[i] {
            b' ' | b'\t' | b'\r' | b'\n' => i += 1,
            b'#' => {
                while i < end && b[i] != b'\n' {
                    i += 1;
                }
            }
            b'!' if b.get(i + 1) == Some(&b'<') => {
                while i < end && b[i] != b'>' {
                    i += 1;
                }
                i += 1;
            }
            b'&' | b'!' => {
                while i < end && !matches!(b[i], b' ' | b'\t' | b'\r' | b'\n' | b',' | b'[' | b']' | b'{' | b'}') {
                    i += 1;
                }
            }
            _ => break,
        }
    }
    i
}

/// 1-based line and character column of byte offset `at` (a BOM is not a column).
fn line_col_of(text: &str, at: usize) -> (usize, usize) {
    let before = &text[..at];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col_text = &before[line_start..];
    let col_text = if line_start == 0 { col_text.trim_start_matches('\u{feff}') } else { col_text };
    (before.matches('\n').count() + 1, col_text.chars().count() + 1)
}

#[cfg(test)]
mod locate_tests {
    use super::*;

    fn loc(text: &str, path: &str) -> Result<ScalarSpan, LocateError> {
        locate_scalar(text, &parse_path(path).unwrap())
    }

    fn span_text<'a>(text: &'a str, path: &str) -> &'a str {
        let s = loc(text, path).unwrap_or_else(|e| panic!("{path}: {e:?}"));
        &text[s.start..s.end]
    }

    #[test]
    fn parse_path_forms() {
        use PathSeg::{Index, Key};
        let k = |s: &str| Key(s.to_string());
        assert_eq!(parse_path("spec.model.uri").unwrap(), vec![k("spec"), k("model"), k("uri")]);
        assert_eq!(
            parse_path("spec.containers[0].image").unwrap(),
            vec![k("spec"), k("containers"), Index(0), k("image")]
        );
        assert_eq!(
            parse_path("metadata.annotations[\"a.b/c\"]").unwrap(),
            vec![k("metadata"), k("annotations"), k("a.b/c")]
        );
        assert_eq!(parse_path("a['x\"y'][12]").unwrap(), vec![k("a"), k("x\"y"), Index(12)]);
        assert_eq!(parse_path("[\"q\\\"\\u{e9}\"].b").unwrap(), vec![k("q\"é"), k("b")]);
        assert_eq!(parse_path("a[0][1]").unwrap(), vec![k("a"), Index(0), Index(1)]);
        for bad in ["", "a.", ".a", "a..b", "a[", "a[x]", "a[0", "a[\"x]", "a]b", "a[0]b"] {
            assert!(parse_path(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn mark_index_is_bytes() {
        // non-ASCII before the target: a comment, a key and a value
        let text = "# café ☕\nnaïve: naïve\nb: \"日本\" # c\nc: x\n";
        assert_eq!(span_text(text, "naïve"), "naïve");
        let s = loc(text, "b").unwrap();
        assert_eq!(&text[s.start..s.end], "\"日本\"");
        assert_eq!((s.line, s.col, s.value.as_str()), (3, 4, "日本"));
        let s = loc(text, "c").unwrap();
        assert_eq!(&text[s.start..s.end], "x");
        assert_eq!((s.line, s.col), (4, 4));
        // a byte-order mark is not counted by the parser
        let text = "\u{feff}a: b\nc: d\n";
        assert_eq!(span_text(text, "c"), "d");
        let s = loc(text, "a").unwrap();
        assert_eq!((&text[s.start..s.end], s.line, s.col), ("b", 1, 4));
    }

    #[test]
    fn styles_and_spans() {
        let text = "a: plain  # c\nb: 'it''s'\nc: \"x\\ty\"\nd: | # keep\n  l1\n  l2\n\ne: >-\n  f1\n  f2\nf: &anc !!str tagged\ng:\nh: multi\n  line\n";
        let cases = [
            ("a", "plain", ScalarKind::Plain, "plain"),
            ("b", "'it''s'", ScalarKind::SingleQuoted, "it's"),
            ("c", "\"x\\ty\"", ScalarKind::DoubleQuoted, "x\ty"),
            ("d", "| # keep\n  l1\n  l2\n\n", ScalarKind::Literal, "l1\nl2\n"),
            ("e", ">-\n  f1\n  f2\n", ScalarKind::Folded, "f1 f2"),
            ("f", "tagged", ScalarKind::Plain, "tagged"),
            ("g", "", ScalarKind::Plain, ""),
            ("h", "multi\n  line", ScalarKind::Plain, "multi line"),
        ];
        for (path, span, style, value) in cases {
            let s = loc(text, path).unwrap();
            assert_eq!(
                (&text[s.start..s.end], s.style, s.value.as_str(), s.flow),
                (span, style, value, false),
                "{path}"
            );
        }
        // `resolved` follows the Kubernetes rules of `parse_documents`
        let typed = "a: 1.10\nb: '1.10'\nc: yes\nd: ~\ne:\nf: !!str yes\ng: \"\"\n";
        let resolved = |p: &str| loc(typed, p).unwrap().resolved;
        assert_eq!(resolved("a").as_deref(), Some("1.1"));
        assert_eq!(resolved("b").as_deref(), Some("1.10"));
        assert_eq!(resolved("c").as_deref(), Some("true"));
        assert_eq!((resolved("d"), resolved("e")), (None, None));
        assert_eq!(resolved("f").as_deref(), Some("yes"));
        assert_eq!(resolved("g").as_deref(), Some(""));
        assert_eq!(loc(text, "g").unwrap().start, text.find("g:").unwrap() + 2, "an empty value sits after the colon");
    }

    #[test]
    fn flow_sequences_quoted_keys_crlf_documents() {
        let text = "m: {a: 1, \"b.c\": [x, 'y']}\nl:\n  - one\n  - k: two\n";
        assert_eq!(span_text(text, "m.a"), "1");
        let s = loc(text, "m[\"b.c\"][1]").unwrap();
        assert_eq!((&text[s.start..s.end], s.flow), ("'y'", true));
        assert_eq!(span_text(text, "l[0]"), "one");
        assert_eq!(span_text(text, "l[1].k"), "two");
        let crlf = "a: 1\r\nb: |\r\n  x\r\nc: \"q\"\r\n";
        assert_eq!(span_text(crlf, "c"), "\"q\"");
        assert_eq!(span_text(crlf, "b"), "|\r\n  x\r\n");
        // the first document that has the path
        let docs = "a: 1\n---\nb: first\n...\n---\nb: second\nc: 3\n";
        assert_eq!(span_text(docs, "b"), "first");
        assert_eq!(span_text(docs, "c"), "3");
        // no trailing newline
        assert_eq!(span_text("a: |\n  x", "a"), "|\n  x");
        assert_eq!(span_text("a: x", "a"), "x");
    }

    #[test]
    fn agrees_with_parse_documents() {
        let text = "\
# c
a: 1.10
b: [x, 'y', {c: yes, \"d.e\": ~}]
f:
  g: |
    block
  h:
    - - nested
      - \"q\\u00e9\"
    -
  \"k\\\"q\": on
  'x y': >-
    folded
";
        let (docs, errs) = parse_documents(text);
        assert!(errs.is_empty(), "{errs:?}");
        let mut checked = 0;
        for (path, _) in &docs[0].positions {
            let mut v = &docs[0].value;
            for seg in parse_path(path).unwrap_or_default() {
                v = match seg {
                    PathSeg::Key(k) => &v[k.as_str()],
                    PathSeg::Index(i) => &v[i],
                };
            }
            if path.is_empty() || v.is_object() || v.is_array() {
                continue;
            }
            let s = loc(text, path).unwrap_or_else(|e| panic!("{path}: {e:?}"));
            assert_eq!(s.resolved.as_deref(), v.as_str(), "{path}");
            checked += 1;
        }
        assert_eq!(checked, 11);
    }

    #[test]
    fn errors() {
        let text = "spec:\n  m:\n    k: v\n  l: [1]\nx: &a {p: 1}\ny: *a\n";
        match loc(text, "spec.m") {
            Err(LocateError::NotScalar { kind: "mapping", line: 3, col: 5 }) => {}
            other => panic!("{other:?}"),
        }
        match loc(text, "spec.l") {
            Err(LocateError::NotScalar { kind: "sequence", line: 4, col: 6 }) => {}
            other => panic!("{other:?}"),
        }
        match loc(text, "spec.m.nope.deeper") {
            Err(LocateError::NotFound { missing, depth: 2, parent_kind: "mapping", line: 3, .. }) => {
                assert_eq!(missing, "nope")
            }
            other => panic!("{other:?}"),
        }
        match loc(text, "spec.l[3]") {
            Err(LocateError::NotFound { missing, depth: 2, parent_kind: "sequence", .. }) => assert_eq!(missing, "[3]"),
            other => panic!("{other:?}"),
        }
        match loc(text, "spec.m.k.z") {
            Err(LocateError::NotFound { missing, parent_kind: "scalar", .. }) => assert_eq!(missing, "z"),
            other => panic!("{other:?}"),
        }
        for path in ["y", "y.p"] {
            match loc(text, path) {
                Err(LocateError::Alias { anchor, line: 6, col: 4 }) => assert_eq!(anchor, "a"),
                other => panic!("{path}: {other:?}"),
            }
        }
        assert_eq!(span_text(text, "x.p"), "1");
        assert!(matches!(loc("a: 1\na: 2\n", "a"), Err(LocateError::Syntax(e)) if e.message.contains("duplicate")));
        // a syntax error anywhere in the stream
        match loc("a: 1\n---\nb: [1, 2\n", "a") {
            Err(LocateError::Syntax(e)) => assert_eq!(e.pos.line, 3),
            other => panic!("{other:?}"),
        }
        assert!(matches!(loc("", "a"), Err(LocateError::NotFound { parent_kind: "document", .. })));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str) -> Document {
        let (mut docs, err) = parse_documents(text);
        assert!(err.is_empty(), "{err:?}");
        assert_eq!(docs.len(), 1);
        docs.remove(0)
    }

    #[test]
    fn scalars_follow_kubernetes_yaml_rules() {
        let cases = [
            ("v: 1", "1"),
            ("v: 1.10", "1.1"),
            ("v: yes", "true"),
            ("v: off", "false"),
            ("v: '1.10'", "1.10"),
            ("v: \"yes\"", "yes"),
            ("v: 0x1F", "31"),
            ("v: 010", "8"),
            ("v: 1e3", "1000"),
            ("v: 1_000", "1000"),
            ("v: hello", "hello"),
            ("v: 1.2.3", "1.2.3"),
            ("v: -5", "-5"),
            ("v: .5", "0.5"),
        ];
        for (src, want) in cases {
            let d = one(src);
            assert_eq!(d.value["v"], Value::String(want.into()), "{src}");
        }
        let d = one("v: ~\nw:\nx: null");
        assert!(d.value["v"].is_null() && d.value["w"].is_null() && d.value["x"].is_null());
        // plain YAML 1.1-only booleans are noted (with where they are) for hints; keys,
        // quoted text and true/false are not
        let d = one("a: [y, 'n', true, Off]\n\"on\": no\nyes: x\n");
        let noted: Vec<_> = d.yaml11_bools.iter().map(|(p, (t, pos))| (p.as_str(), t.as_str(), *pos)).collect();
        let at = |line, col| Pos { line, col };
        assert_eq!(noted, vec![("a[0]", "y", at(1, 5)), ("a[3]", "Off", at(1, 19)), ("on", "no", at(2, 7))]);
        assert_eq!(
            yaml11_bool_hint("Off").as_deref(),
            Some("Off is read as the boolean false by YAML 1.1 (as Kubernetes does); quote it: \"Off\"")
        );
        assert_eq!(yaml11_bool_hint("true"), None);
    }

    #[test]
    fn positions_are_recorded_per_path() {
        let d = one("a:\n  b:\n    - x\n    - y: 1\n  \"c.d\": 2\n");
        // fields are shown at their key, list items at themselves (a mapping item at its first key)
        assert_eq!(d.positions["a"], Pos { line: 1, col: 1 });
        assert_eq!(d.positions["a.b"], Pos { line: 2, col: 3 });
        assert_eq!(d.positions["a.b[1].y"], Pos { line: 4, col: 7 });
        assert_eq!(d.positions["a.b[1]"], Pos { line: 4, col: 7 });
        assert_eq!(d.positions["a.b[0]"], Pos { line: 3, col: 7 });
        assert_eq!(d.positions["a[\"c.d\"]"], Pos { line: 5, col: 3 });
        assert_eq!(d.pos_of("a.b[1].y.zzz"), Pos { line: 4, col: 7 });
    }

    #[test]
    fn multi_document_and_errors() {
        let (docs, err) = parse_documents("a: 1\n---\n---\nb: 2\n");
        assert!(err.is_empty());
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[1].start.line, 4);
        let (_, err) = parse_documents("a: [1, 2\nb: 3\n");
        assert_eq!(err[0].pos, Pos { line: 1, col: 4 }, "shown where the list opens");
        let (docs, err) = parse_documents("a: 1\na: 2\n");
        assert_eq!(docs.len(), 1, "the document is kept");
        let e = &err[0];
        assert!(e.message.contains("duplicate key"), "{}", e.message);
        assert_eq!(e.pos.line, 2);
    }

    #[test]
    fn a_parser_panic_is_a_positioned_error() {
        // libyaml-safer panics ("TODO: What is expected here?") on a tag followed by ','
        // in a flow collection; found by `cargo fuzz run validate`
        for (text, line, col) in [("a: [!!str,]\n", 1, 5), ("a: 1\nb: {k: [x, !t,]}\n", 2, 12)] {
            let (_, errs) = parse_documents(text);
            assert_eq!(errs.len(), 1, "{text:?}: {errs:?}");
            assert_eq!(errs[0].pos, Pos { line, col }, "{text:?}: {errs:?}");
            assert!(errs[0].message.contains("a tag directly followed by ','"), "{errs:?}");
            match locate_scalar(text, &parse_path("a").unwrap()) {
                Err(LocateError::Syntax(e)) => assert_eq!(e.pos, Pos { line, col }, "{text:?}"),
                other => panic!("{text:?}: {other:?}"),
            }
        }
        // other panics still reach the previous hook (here: the test harness)
        let r = std::panic::catch_unwind(|| panic!("not the parser"));
        assert!(r.is_err());
    }

    #[test]
    fn control_characters_are_shown_where_they_are() {
        for (text, line, col, what) in [
            ("\0a: 1\n", 1, 1, "U+0000"),
            ("a: 1\nb: x\u{1}y\n", 2, 5, "U+0001"),
            ("a: 1\n  # é\nc: 'é\u{7f}'\n", 3, 6, "U+007F"),
            ("\u{feff}a: 1\nb: \u{8}\n", 2, 4, "U+0008"),
        ] {
            let (_, errs) = parse_documents(text);
            assert_eq!(errs.len(), 1, "{text:?}: {errs:?}");
            assert_eq!(errs[0].pos, Pos { line, col }, "{text:?}: {errs:?}");
            assert_eq!(errs[0].message, format!("control characters are not allowed ({what})"));
            match locate_scalar(text, &parse_path("a").unwrap()) {
                Err(LocateError::Syntax(e)) => assert_eq!(e.pos, Pos { line, col }, "{text:?}"),
                other => panic!("{text:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn no_trailing_newline_in_block_scalar() {
        let d = one("s: |\n  if x; then\n    y\n  fi");
        assert_eq!(d.value["s"], "if x; then\n  y\nfi\n");
    }

    #[test]
    fn nesting_is_bounded_at_a_documented_depth() {
        let nest = |n: usize| format!("a: {}{}\n", "[".repeat(n), "]".repeat(n));
        // the root mapping is level 1
        let (docs, errs) = parse_documents(&nest(MAX_DEPTH - 1));
        assert!(errs.is_empty() && docs.len() == 1, "{errs:?}");
        for n in [MAX_DEPTH, 20_000, 200_000] {
            let t = std::time::Instant::now();
            let (docs, errs) = parse_documents(&nest(n));
            assert!(docs.is_empty(), "{n}");
            assert_eq!(errs.len(), 1, "{n}: {errs:?}");
            assert_eq!(errs[0].pos, Pos { line: 1, col: 4 + MAX_DEPTH - 1 }, "{n}: at the first bracket too many");
            assert!(errs[0].message.contains("nested deeper than 256 levels"), "{}", errs[0].message);
            assert!(t.elapsed() < std::time::Duration::from_secs(5), "{n} levels took {:?}", t.elapsed());
        }
        // aliases count at their expanded depth: each level re-nests the one before
        let mut text = format!("l0: &l0 {}x{}\n", "[".repeat(100), "]".repeat(100));
        for i in 1..4 {
            text.push_str(&format!("l{i}: &l{i} {}*l{}{}\n", "[".repeat(100), i - 1, "]".repeat(100)));
        }
        let (_, errs) = parse_documents(&text);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].pos.line, 3, "{errs:?}");
        assert!(errs[0].message.contains("nested deeper"), "{errs:?}");
    }

    #[test]
    fn alias_expansion_is_bounded() {
        // billion laughs: 9^10 nodes
        let mut text = "a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n".to_string();
        for i in 1..10 {
            let refs = vec![format!("*a{}", i - 1); 9].join(", ");
            text.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
        }
        let t = std::time::Instant::now();
        let (_, errs) = parse_documents(&text);
        assert!(t.elapsed() < std::time::Duration::from_secs(5), "{:?}", t.elapsed());
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].message.contains("expands the document past"), "{errs:?}");
        // few nodes, much text: a long scalar aliased many times
        let text = format!("s: &s {}\nl: [{}]\n", "x".repeat(1 << 20), vec!["*s"; 100].join(", "));
        let (_, errs) = parse_documents(&text);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].pos.line, 2, "{errs:?}");
        assert!(errs[0].message.contains("64 MiB of text"), "{errs:?}");
        // aliases within the budget still expand
        let d = one("s: &s {k: v}\nl: [*s, *s]\n");
        assert_eq!(d.value["l"][1]["k"], "v");
        assert_eq!(d.positions["l[1].k"], Pos { line: 1, col: 8 }, "an alias is shown where its anchor is");
    }

    #[test]
    fn field_paths_are_bounded() {
        // long keys nested deep would index quadratic bytes of paths
        let key = "k".repeat(60_000);
        let mut text = String::new();
        for i in 0..200 {
            // an explicit key (`? k`), as a plain key may not pass 1024 characters
            text.push_str(&format!("{pad}? {key}{i}\n{pad}:\n", pad = " ".repeat(2 * i)));
        }
        text.push_str(&format!("{}x: y\n", " ".repeat(400)));
        let t = std::time::Instant::now();
        let (_, errs) = parse_documents(&text);
        assert!(t.elapsed() < std::time::Duration::from_secs(10), "{:?}", t.elapsed());
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].message.contains("too large to index"), "{errs:?}");
    }

    #[test]
    fn anchors_and_merge_keys() {
        let d = one("base: &b {x: 1, y: 2}\nder:\n  <<: *b\n  y: 3\n");
        assert_eq!(d.value["der"]["x"], "1");
        assert_eq!(d.value["der"]["y"], "3");
    }
}
