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
}

impl Node {
    fn pos(&self) -> Pos {
        match self {
            Node::Null(p) | Node::Scalar(_, _, p) | Node::Seq(_, p) | Node::Map(_, p) => *p,
        }
    }
}

enum Frame {
    Seq(Vec<Node>, Pos, Option<String>),
    Map(Vec<(Node, Node)>, Option<Node>, Pos, Option<String>),
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    docs: Vec<Node>,
    anchors: BTreeMap<String, Node>,
}

fn to_pos(m: &Mark) -> Pos {
    Pos { line: m.line as usize + 1, col: m.column as usize + 1 }
}

impl Builder {
    fn push_node(&mut self, node: Node, anchor: Option<String>) {
        if let Some(a) = anchor {
            self.anchors.insert(a, node.clone());
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
}

/// The most nodes one file may hold (alias expansion included): a guard against
/// "billion laughs" documents.
const MAX_NODES: usize = 1_000_000;

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
    match std::panic::catch_unwind(|| parse_inner(text)) {
        Ok(r) => r,
        Err(_) => (
            vec![],
            vec![SyntaxError { pos: Pos { line: 1, col: 1 }, message: "the YAML parser failed on this file".into() }],
        ),
    }
}

fn parse_inner(text: &str) -> (Vec<Document>, Vec<SyntaxError>) {
    let mut b = Builder::default();
    let mut input = text.as_bytes();
    let mut parser = Parser::new();
    parser.set_input_string(&mut input);
    let mut err = None;
    let mut nodes = 0usize;
    loop {
        let ev = match parser.parse() {
            Ok(ev) => ev,
            Err(e) => {
                let mut pos = e.problem_mark().map(|m| to_pos(&m)).unwrap_or_default();
                let mut message = e.problem().to_string();
                if let Some(c) = e.context() {
                    // an unclosed flow collection is best shown where it was opened
                    if c.contains("flow") {
                        if let Some(m) = e.context_mark() {
                            message = format!("{message} ({c} opened here; the parser gave up at {pos})");
                            pos = to_pos(&m);
                        }
                    } else {
                        message = format!("{message} ({c})");
                    }
                }
                err = Some(SyntaxError { pos, message });
                break;
            }
        };
        let pos = to_pos(&ev.start_mark);
        nodes += 1;
        if nodes > MAX_NODES {
            err = Some(SyntaxError { pos, message: format!("document has more than {MAX_NODES} nodes") });
            break;
        }
        match ev.data {
            EventData::StreamEnd => break,
            EventData::Scalar { value, anchor, tag, style, .. } => {
                let plain = style == ScalarStyle::Plain;
                let is_null = plain && tag.is_none() && matches!(value.as_str(), "" | "~" | "null" | "Null" | "NULL");
                let node = if is_null { Node::Null(pos) } else { Node::Scalar(value, plain && tag.is_none(), pos) };
                b.push_node(node, anchor);
            }
            EventData::SequenceStart { anchor, .. } => b.stack.push(Frame::Seq(Vec::new(), pos, anchor)),
            EventData::MappingStart { anchor, .. } => b.stack.push(Frame::Map(Vec::new(), None, pos, anchor)),
            EventData::SequenceEnd => {
                if let Some(Frame::Seq(items, p, anchor)) = b.stack.pop() {
                    b.push_node(Node::Seq(items, p), anchor);
                }
            }
            EventData::MappingEnd => {
                if let Some(Frame::Map(entries, _, p, anchor)) = b.stack.pop() {
                    b.push_node(Node::Map(entries, p), anchor);
                }
            }
            EventData::Alias { anchor } => match b.anchors.get(&anchor).cloned() {
                Some(n) => {
                    nodes += count_nodes(&n);
                    b.push_node(n, None)
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
    let mut errs: Vec<SyntaxError> = err.into_iter().collect();
    for node in b.docs {
        if matches!(node, Node::Null(_)) {
            continue;
        }
        let start = shown_pos(&node);
        let mut positions = BTreeMap::new();
        let value = convert(&node, "", &mut positions, &mut errs);
        docs.push(Document { value, positions, start });
    }
    errs.sort_by_key(|e| e.pos);
    (docs, errs)
}

fn count_nodes(n: &Node) -> usize {
    match n {
        Node::Seq(items, _) => 1 + items.iter().map(count_nodes).sum::<usize>(),
        Node::Map(entries, _) => 1 + entries.iter().map(|(k, v)| count_nodes(k) + count_nodes(v)).sum::<usize>(),
        _ => 1,
    }
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
    match node {
        Node::Map(entries, p) => entries.first().map_or(*p, |(k, _)| k.pos()),
        other => other.pos(),
    }
}

/// Convert a node; problems (duplicate keys, non-scalar keys) are collected and the
/// document is kept, so one mistake does not hide the objects it belongs to.
fn convert(node: &Node, path: &str, positions: &mut BTreeMap<String, Pos>, errs: &mut Vec<SyntaxError>) -> Value {
    positions.entry(path.to_string()).or_insert_with(|| shown_pos(node));
    match node {
        Node::Null(_) => Value::Null,
        Node::Scalar(text, plain, _) => Value::String(scalar_string(text, *plain)),
        Node::Seq(items, _) => Value::Array(
            items.iter().enumerate().map(|(i, item)| convert(item, &format!("{path}[{i}]"), positions, errs)).collect(),
        ),
        Node::Map(entries, _) => {
            let mut out = Map::new();
            let mut explicit = std::collections::HashSet::new();
            for (k, v) in entries {
                let key = match k {
                    // Keys keep their text: `n:` or `on:` as a key is a name, not a bool.
                    Node::Scalar(t, _, _) => t.clone(),
                    Node::Null(_) => "null".to_string(),
                    _ => {
                        errs.push(SyntaxError { pos: k.pos(), message: "mapping keys must be scalars".into() });
                        continue;
                    }
                };
                if key == "<<" {
                    // YAML merge key: merge the mapping(s) in, without overriding.
                    let maps = match convert(v, path, positions, errs) {
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
                    errs.push(SyntaxError { pos: k.pos(), message: format!("duplicate key {key:?} in mapping") });
                }
                // A field is shown at its key (`runAfter:`), where the reader looks.
                positions.insert(child.clone(), k.pos());
                let val = convert(v, &child, positions, errs);
                out.insert(key, val);
            }
            Value::Object(out)
        }
    }
}

/// Resolve a scalar as `sigs.k8s.io/yaml` would and render it as the string of its JSON form.
fn scalar_string(text: &str, plain: bool) -> String {
    if !plain {
        return text.to_string();
    }
    match text {
        "true" | "True" | "TRUE" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" | "y" | "Y" => return "true".into(),
        "false" | "False" | "FALSE" | "no" | "No" | "NO" | "off" | "Off" | "OFF" | "n" | "N" => return "false".into(),
        _ => {}
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
    fn no_trailing_newline_in_block_scalar() {
        let d = one("s: |\n  if x; then\n    y\n  fi");
        assert_eq!(d.value["s"], "if x; then\n  y\nfi\n");
    }

    #[test]
    fn anchors_and_merge_keys() {
        let d = one("base: &b {x: 1, y: 2}\nder:\n  <<: *b\n  y: 3\n");
        assert_eq!(d.value["der"]["x"], "1");
        assert_eq!(d.value["der"]["y"], "3");
    }
}
