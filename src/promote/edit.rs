//! Format-preserving YAML scalar edits, for GitOps write-back.
//!
//! [`apply`] sets the scalar at a field path (`spec.template.spec.containers[0].image`,
//! `metadata.annotations["tenon.dev/model-digest"]`) to a new string so that only that
//! scalar's bytes change: comments, key order, blank lines, indentation, line endings
//! and the quoting of everything else stay byte-identical.
//!
//! The scalar keeps its quoting style when that style can hold the new value:
//! - plain stays plain only for a value that reads back as that same string under
//!   YAML 1.1 (Kubernetes) rules: not `yes`/`on`/`~`/`1.0`/`0x1F`/`2024-01-01`..., no
//!   leading indicator, no `: ` or ` #`, no surrounding blanks, one line;
//! - single quotes hold any one-line printable value (`'` doubles to `''`);
//! - double quotes hold anything (`\`, `"` and control characters are escaped);
//! - a `|` or `>` block keeps its header (comment included), indentation and line
//!   endings when the value fits (a `>` block only for a one-line value);
//!
//! otherwise the scalar becomes double-quoted. A scalar that already holds the value
//! (as parsed, in any style: `'abc'` or `abc` for "abc", `replicas: 3` for "3") is left
//! untouched; one that spells it but reads differently under tenon's Kubernetes rules
//! (`k: ~` or `k:` for "~"/"", plain `010` for "010", which reads as "8") is rewritten.
//! After every edit the text is parsed again and the path must read back as the new
//! value, or [`apply`] fails.
//!
//! Editing an anchored scalar (`&a value`) changes what its aliases read too; a path that
//! is an alias (`*a`) is refused.

use std::collections::HashMap;

// The locator lives with the YAML parser in `model::yaml`, the only module that uses
// the parser crate.
pub use crate::model::ScalarKind;
use crate::model::{locate_scalar, parse_path, LocateError, PathSeg, ScalarSpan};

/// Set the scalar at `path` to `value`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Edit {
    pub path: String,
    pub value: String,
}

#[derive(Debug, thiserror::Error)]
pub enum EditError {
    #[error("invalid path {path:?}: {reason}")]
    InvalidPath { path: String, reason: String },
    #[error("YAML syntax error at {line}:{col}: {message}")]
    Syntax { line: usize, col: usize, message: String },
    #[error(
        "{path}: {missing:?} not found in {parent} (the nearest existing parent, a {parent_kind} at {line}:{col})"
    )]
    MissingPath {
        path: String,
        /// The first path segment not found: a key, or `[i]`.
        missing: String,
        /// The nearest existing parent's path, or "the document root".
        parent: String,
        parent_kind: &'static str,
        line: usize,
        col: usize,
    },
    #[error("{path} is a {kind} at {line}:{col}, not a scalar; only scalars can be set")]
    NotScalar { path: String, kind: &'static str, line: usize, col: usize },
    #[error("{path} is an alias (*{anchor}) at {line}:{col}; it cannot be edited in place (edit the anchored value)")]
    Alias { path: String, anchor: String, line: usize, col: usize },
    #[error("cannot write {value:?} to {path} (a {style} scalar at {line}:{col}): {reason}")]
    Unrepresentable { path: String, value: String, style: &'static str, line: usize, col: usize, reason: String },
}

/// Apply edits to YAML text, in order (a later edit of the same path wins); returns the
/// new text and whether it differs from `text`.
pub fn apply(text: &str, edits: &[Edit]) -> Result<(String, bool), EditError> {
    let mut cur = text.to_string();
    // path -> (segments, value, whether an edit wrote bytes)
    let mut wanted: Vec<(Vec<PathSeg>, String, String, bool)> = Vec::new();
    let mut index: HashMap<Vec<PathSeg>, usize> = HashMap::new();
    for e in edits {
        let segs = parse_path(&e.path).map_err(|reason| EditError::InvalidPath { path: e.path.clone(), reason })?;
        let span = locate_scalar(&cur, &segs).map_err(|err| locate_error(&e.path, &segs, err))?;
        let wrote = !reads_as(&span, &e.value);
        if wrote {
            let (start, end, replacement) = plan(&cur, &span, &e.value);
            cur.replace_range(start..end, &replacement);
            verify(&cur, &e.path, &segs, &e.value, &span)?;
        }
        match index.get(&segs) {
            Some(&i) => {
                wanted[i].2 = e.value.clone();
                wanted[i].3 |= wrote;
            }
            None => {
                index.insert(segs.clone(), wanted.len());
                wanted.push((segs, e.path.clone(), e.value.clone(), wrote));
            }
        }
    }
    // Every path reads back as its (last) value in the final text.
    for (segs, path, value, wrote) in &wanted {
        let span = locate_scalar(&cur, segs).map_err(|err| locate_error(path, segs, err))?;
        if *wrote {
            verify(&cur, path, segs, value, &span)?;
        } else if !reads_as(&span, value) {
            return Err(unrepresentable(path, value, &span, format!("it reads back as {:?}", span.resolved)));
        }
    }
    let changed = cur != text;
    Ok((cur, changed))
}

/// Check that `path` in `text` reads back as `value`, as a string.
fn verify(text: &str, path: &str, segs: &[PathSeg], value: &str, before: &ScalarSpan) -> Result<(), EditError> {
    let span = locate_scalar(text, segs).map_err(|err| {
        let reason = match locate_error(path, segs, err) {
            EditError::Syntax { line, col, message } => format!("the result does not parse ({line}:{col}: {message})"),
            other => format!("the result does not resolve: {other}"),
        };
        unrepresentable(path, value, before, reason)
    })?;
    if !reads_as(&span, value) {
        let got = span.resolved.as_deref().map_or("null".to_string(), |r| format!("{r:?}"));
        return Err(unrepresentable(path, value, before, format!("it reads back as {got}")));
    }
    if span.style == ScalarKind::Plain && !plain_safe(value, span.flow) {
        return Err(unrepresentable(path, value, before, "it would not read back as a string".into()));
    }
    Ok(())
}

/// The scalar spells exactly `value` and reads as that string (not null, not a
/// number normalised to something else: plain `010` reads as "8").
fn reads_as(span: &ScalarSpan, value: &str) -> bool {
    span.value == value && span.resolved.as_deref() == Some(value)
}

fn unrepresentable(path: &str, value: &str, span: &ScalarSpan, reason: String) -> EditError {
    EditError::Unrepresentable {
        path: path.to_string(),
        value: value.to_string(),
        style: style_name(span.style),
        line: span.line,
        col: span.col,
        reason,
    }
}

fn locate_error(path: &str, segs: &[PathSeg], err: LocateError) -> EditError {
    match err {
        LocateError::Syntax(e) => EditError::Syntax { line: e.pos.line, col: e.pos.col, message: e.message },
        LocateError::NotFound { missing, depth, parent_kind, line, col } => EditError::MissingPath {
            path: path.to_string(),
            missing,
            parent: if depth == 0 { "the document root".into() } else { path_string(&segs[..depth]) },
            parent_kind,
            line,
            col,
        },
        LocateError::NotScalar { kind, line, col } => EditError::NotScalar { path: path.to_string(), kind, line, col },
        LocateError::Alias { anchor, line, col } => EditError::Alias { path: path.to_string(), anchor, line, col },
    }
}

/// A path as tenon prints them (`a.b[0]["c.d"]`).
fn path_string(segs: &[PathSeg]) -> String {
    let mut out = String::new();
    for seg in segs {
        match seg {
            PathSeg::Index(i) => out.push_str(&format!("[{i}]")),
            PathSeg::Key(k) => {
                let simple = !k.is_empty() && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
                if !simple {
                    out.push_str(&format!("[{k:?}]"));
                } else {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(k);
                }
            }
        }
    }
    out
}

fn style_name(style: ScalarKind) -> &'static str {
    match style {
        ScalarKind::Plain => "plain",
        ScalarKind::SingleQuoted => "single-quoted",
        ScalarKind::DoubleQuoted => "double-quoted",
        ScalarKind::Literal => "literal block",
        ScalarKind::Folded => "folded block",
    }
}

/// The bytes to replace (`start..end`) and their replacement.
fn plan(text: &str, span: &ScalarSpan, value: &str) -> (usize, usize, String) {
    match span.style {
        ScalarKind::Plain => {
            let r = if plain_safe(value, span.flow) { value.to_string() } else { double_quoted(value) };
            if span.start < span.end {
                return (span.start, span.end, r);
            }
            // An empty value (`key:` / `- `): the span sits right after the indicator.
            let at = span.start;
            let rest = &text[at..];
            if let Some(after) = rest.strip_prefix(' ') {
                let sep = if after.starts_with('#') { " " } else { "" };
                (at + 1, at + 1, format!("{r}{sep}"))
            } else {
                (at, at, format!(" {r}"))
            }
        }
        ScalarKind::SingleQuoted => {
            (span.start, span.end, single_quoted(value).unwrap_or_else(|| double_quoted(value)))
        }
        ScalarKind::DoubleQuoted => (span.start, span.end, double_quoted(value)),
        ScalarKind::Literal | ScalarKind::Folded => plan_block(text, span, value),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chomp {
    Strip,
    Clip,
    Keep,
}

impl Chomp {
    fn indicator(self) -> &'static str {
        match self {
            Chomp::Strip => "-",
            Chomp::Clip => "",
            Chomp::Keep => "+",
        }
    }
}

/// Replace a block scalar's header and content lines, keeping the header comment, the
/// indentation, the line endings and the trailing blank lines.
fn plan_block(text: &str, span: &ScalarSpan, value: &str) -> (usize, usize, String) {
    let (s, e) = (span.start, span.end);
    let nl = text[s..e].find('\n').map_or(e, |i| s + i);
    let (header_end, lb) = if nl < e && text[..nl].ends_with('\r') { (nl - 1, "\r\n") } else { (nl, "\n") };
    let header = &text[s..header_end];
    let indicator = &header[..1];
    let mut j = 1;
    let mut chomp = Chomp::Clip;
    let mut explicit_indent = false;
    while let Some(&b) = header.as_bytes().get(j) {
        match b {
            b'-' => chomp = Chomp::Strip,
            b'+' => chomp = Chomp::Keep,
            b'1'..=b'9' => explicit_indent = true,
            _ => break,
        }
        j += 1;
    }
    let header_rest = &header[j..];
    // Content lines: their indentation, and where the last one ends.
    let mut indent = None;
    let mut content_end = header_end;
    let mut off = (nl + 1).min(e);
    while off < e {
        let line_end = text[off..e].find('\n').map_or(e, |i| off + i);
        let line = text[off..line_end].trim_end_matches('\r');
        if line.bytes().any(|b| b != b' ') {
            indent.get_or_insert(line.len() - line.trim_start_matches(' ').len());
            content_end = off + line.len();
        }
        off = line_end + 1;
    }
    // Line breaks after the last content line that belong to the scalar (a missing
    // final newline counts as one, as the parser sees it).
    let mut trailing = text[content_end..e].matches('\n').count();
    if e == text.len() && !text.ends_with('\n') {
        trailing += 1;
    }
    let block = match indent {
        Some(n) if !explicit_indent && n > 0 && content_end > header_end => {
            block_body(value, indicator == ">", n, lb, chomp, trailing)
        }
        _ => None,
    };
    let replacement = match block {
        Some((chomp, body)) => format!("{indicator}{}{header_rest}{lb}{body}", chomp.indicator()),
        None => format!("{}{header_rest}", double_quoted(value)),
    };
    (s, content_end, replacement)
}

/// The content lines of a block scalar holding `value` (no final line break: the text
/// after the scalar supplies it and `trailing` breaks in all), and the chomping they
/// need; `None` if a plain block (no indentation indicator) cannot hold `value`.
fn block_body(
    value: &str,
    folded: bool,
    indent: usize,
    lb: &str,
    prefer: Chomp,
    trailing: usize,
) -> Option<(Chomp, String)> {
    let core = value.trim_end_matches('\n');
    let k = value.len() - core.len();
    if core.is_empty() || !core.chars().all(|c| c == '\n' || c == '\t' || is_printable(c)) {
        return None;
    }
    if folded && core.contains('\n') {
        return None;
    }
    let lines: Vec<&str> = core.split('\n').collect();
    // The first non-empty line sets the indentation: it cannot start with a blank. A
    // last line of blanks would read as trailing blank lines.
    let first = lines.iter().find(|l| !l.is_empty())?;
    if first.starts_with([' ', '\t']) || lines.last()?.trim_matches([' ', '\t']).is_empty() {
        return None;
    }
    let fits = |c: Chomp| match c {
        Chomp::Strip => k == 0,
        Chomp::Clip => k == 1 && trailing >= 1,
        Chomp::Keep => k == trailing && trailing >= 1,
    };
    let chomp = [prefer, Chomp::Strip, Chomp::Clip, Chomp::Keep].into_iter().find(|&c| fits(c))?;
    let pad = " ".repeat(indent);
    let body: Vec<String> =
        lines.iter().map(|l| if l.is_empty() { String::new() } else { format!("{pad}{l}") }).collect();
    Some((chomp, body.join(lb)))
}

/// Render `value` as a YAML scalar in `style`, so that it parses back to exactly `value`
/// as a string; a style that cannot hold the value gives a double-quoted scalar. Block
/// styles put `indent` spaces before each content line, use `\n` line breaks, and end
/// without a line break (the document supplies it, followed by a non-blank line or the
/// end). A plain scalar is checked for block context (not inside `{..}`/`[..]`).
pub fn render_scalar(value: &str, style: ScalarKind, indent: usize) -> String {
    match style {
        ScalarKind::Plain if plain_safe(value, false) => value.to_string(),
        ScalarKind::SingleQuoted => single_quoted(value).unwrap_or_else(|| double_quoted(value)),
        ScalarKind::Literal | ScalarKind::Folded => {
            let folded = style == ScalarKind::Folded;
            let k = value.len() - value.trim_end_matches('\n').len();
            let indicator = if folded { ">" } else { "|" };
            match block_body(value, folded, indent.max(1), "\n", Chomp::Clip, k.max(1)) {
                Some((chomp, body)) => {
                    let extra = if chomp == Chomp::Keep { "\n".repeat(k - 1) } else { String::new() };
                    format!("{indicator}{}\n{body}{extra}", chomp.indicator())
                }
                None => double_quoted(value),
            }
        }
        _ => double_quoted(value),
    }
}

/// YAML's printable characters, less the ones that are line breaks or blanks a quoted
/// scalar would fold or trim (tab, NEL, LS, PS) and the byte-order mark.
fn is_printable(c: char) -> bool {
    matches!(c as u32, 0x20..=0x7E | 0xA0..=0x2027 | 0x202A..=0xD7FF | 0xE000..=0xFFFD | 0x10000..=0x10FFFF)
        && c != '\u{feff}'
}

fn single_quoted(value: &str) -> Option<String> {
    value.chars().all(is_printable).then(|| format!("'{}'", value.replace('\'', "''")))
}

fn double_quoted(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\0' => out.push_str("\\0"),
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\x0b' => out.push_str("\\v"),
            '\x0c' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            '\x1b' => out.push_str("\\e"),
            '\u{85}' => out.push_str("\\N"),
            '\u{a0}' => out.push_str("\\_"),
            '\u{2028}' => out.push_str("\\L"),
            '\u{2029}' => out.push_str("\\P"),
            c if is_printable(c) => out.push(c),
            c if (c as u32) <= 0xFF => out.push_str(&format!("\\x{:02X}", c as u32)),
            c if (c as u32) <= 0xFFFF => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push_str(&format!("\\U{:08X}", c as u32)),
        }
    }
    out.push('"');
    out
}

/// Whether `value` can be written as a plain scalar and read back as the same string,
/// by YAML 1.1 (Kubernetes) and 1.2 readers alike. Conservative.
fn plain_safe(value: &str, flow: bool) -> bool {
    let Some(first) = value.chars().next() else { return false };
    if !value.chars().all(is_printable) {
        return false;
    }
    if "-?:,[]{}#&*!|>'\"%@`".contains(first) || first == ' ' || value.ends_with(' ') {
        return false;
    }
    if value.contains(": ") || value.contains(" #") || value.ends_with(':') || value.starts_with("...") {
        return false;
    }
    if flow && value.contains([',', '[', ']', '{', '}']) {
        return false;
    }
    !resolves_to_non_string(value)
}

/// Whether a plain scalar would read as null, a bool, a number, a timestamp, or a
/// merge/value key under YAML 1.1 (or 1.2, or Go's `yaml`): a superset, on purpose.
fn resolves_to_non_string(v: &str) -> bool {
    const WORDS: &[&str] = &[
        "", "~", "null", "Null", "NULL", "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "true", "True",
        "TRUE", "false", "False", "FALSE", "on", "On", "ON", "off", "Off", "OFF", "=", "<<",
    ];
    if WORDS.contains(&v) {
        return true;
    }
    let body = v.strip_prefix(['+', '-']).unwrap_or(v);
    let lower = body.to_ascii_lowercase();
    if matches!(lower.as_str(), ".inf" | ".nan") {
        return true;
    }
    let digits: String = body.chars().filter(|&c| c != '_').collect();
    if digits.is_empty() {
        return false;
    }
    let all = |s: &str, ok: fn(char) -> bool| !s.is_empty() && s.chars().all(ok);
    if let Some(h) = digits.strip_prefix("0x").or_else(|| digits.strip_prefix("0X")) {
        return all(h, |c| c.is_ascii_hexdigit());
    }
    if let Some(o) = digits.strip_prefix("0o") {
        return all(o, |c| c.is_digit(8));
    }
    if let Some(b) = digits.strip_prefix("0b") {
        return all(b, |c| c == '0' || c == '1');
    }
    if all(&digits, |c| c.is_ascii_digit()) {
        return true;
    }
    // sexagesimal (`1:30`, `1:30.5`)
    if body.starts_with(|c: char| c.is_ascii_digit())
        && body.contains(':')
        && body.chars().all(|c| c.is_ascii_digit() || matches!(c, ':' | '.' | '_'))
    {
        return true;
    }
    // floats (`1.0`, `1e3`, `.5`, `1.`; also `inf`/`nan`, harmlessly)
    if digits.parse::<f64>().is_ok() {
        return true;
    }
    // timestamps (`2024-01-31`, `2024-01-31T10:00:00Z`)
    let b = v.as_bytes();
    b.len() >= 8 && b[..4].iter().all(u8::is_ascii_digit) && b[4] == b'-' && b[5].is_ascii_digit()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(text: &str, path: &str, value: &str) -> String {
        let (out, changed) = apply(text, &[Edit { path: path.into(), value: value.into() }])
            .unwrap_or_else(|e| panic!("{path} = {value:?}: {e}"));
        assert!(changed, "{path} = {value:?} should change the text");
        out
    }

    /// The edited text differs from the original only inside the target scalar's span:
    /// everything before the span and after it is byte-identical.
    fn assert_only_span_changed(text: &str, out: &str, path: &str) {
        let span = locate_scalar(text, &parse_path(path).unwrap()).unwrap();
        assert!(out.starts_with(&text[..span.start]), "prefix before {path} changed:\n{out}");
        assert!(out.ends_with(&text[span.end..]), "suffix after {path} changed:\n{out}");
    }

    fn read(text: &str, path: &str) -> String {
        locate_scalar(text, &parse_path(path).unwrap()).unwrap().value
    }

    #[test]
    fn keeps_each_style_and_only_its_bytes() {
        let text = "\
# top comment

a: plain   # trailing comment
b: 'single'
c: \"double\"  # dq
d: | # header comment
  line one
  line two

e: >-
  folded
  text
f: &anchor tagged
g: !!str tag
list:
  - item   # c
  - {k: flow, q: 'x'}   # flow
  - [one, \"two\"]

# tail comment
";
        // (path, new value, expected text of the scalar)
        let cases: &[(&str, &str, &str)] = &[
            ("a", "new-plain", "new-plain"),
            ("a", "needs: quoting", "\"needs: quoting\""),
            ("a", "yes", "\"yes\""),
            ("b", "it's", "'it''s'"),
            ("b", "two\nlines", "\"two\\nlines\""),
            ("c", "say \"hi\"\\", "\"say \\\"hi\\\"\\\\\""),
            ("c", "tab\there", "\"tab\\there\""),
            ("d", "new one\nnew two\n", "| # header comment\n  new one\n  new two"),
            ("d", "no newline", "|- # header comment\n  no newline"),
            ("e", "one line", ">-\n  one line"),
            ("e", "two\nlines", "\"two\\nlines\""),
            ("f", "v2", "v2"),
            ("g", "on", "\"on\""),
            ("list[0]", "item2", "item2"),
            ("list[1].k", "a,b", "\"a,b\""),
            ("list[1].k", "flow2", "flow2"),
            ("list[1].q", "y", "'y'"),
            ("list[2][1]", "three", "\"three\""),
        ];
        for &(path, value, want) in cases {
            let out = set(text, path, value);
            assert_only_span_changed(text, &out, path);
            assert_eq!(read(&out, path), value, "{path}");
            let span = locate_scalar(text, &parse_path(path).unwrap()).unwrap();
            let new_end = out.len() - (text.len() - span.end);
            let got = &out[span.start..new_end];
            // block scalars keep their trailing blank lines: compare without them
            let got = if matches!(span.style, ScalarKind::Literal | ScalarKind::Folded) {
                got.trim_end_matches('\n')
            } else {
                got
            };
            assert_eq!(got, want, "{path} = {value:?}");
            assert!(out.contains("# top comment\n\na: ") && out.ends_with("\n# tail comment\n"));
        }
    }

    #[test]
    fn plain_values_that_need_quoting() {
        let cases = [
            ("1.0", "\"1.0\""),
            ("0x1F", "\"0x1F\""),
            ("~", "\"~\""),
            ("true", "\"true\""),
            ("Off", "\"Off\""),
            ("012", "\"012\""),
            ("1e3", "\"1e3\""),
            ("1:30", "\"1:30\""),
            (".inf", "\".inf\""),
            ("2024-01-31", "\"2024-01-31\""),
            ("", "\"\""),
            (" lead", "\" lead\""),
            ("trail ", "\"trail \""),
            ("a #b", "\"a #b\""),
            ("k: v", "\"k: v\""),
            ("colon:", "\"colon:\""),
            ("-dash", "\"-dash\""),
            ("*star", "\"*star\""),
            ("&amp", "\"&amp\""),
            ("!bang", "\"!bang\""),
            ("%pct", "\"%pct\""),
            ("@at", "\"@at\""),
            ("`tick", "\"`tick\""),
            ("[x", "\"[x\""),
            ("{x", "\"{x\""),
            ("|x", "\"|x\""),
            (">x", "\">x\""),
            ("'q", "\"'q\""),
            ("\"q", "\"\\\"q\""),
            ("#c", "\"#c\""),
            ("bell\x07", "\"bell\\a\""),
            // these stay plain
            ("1.2.3", "1.2.3"),
            ("v1.0", "v1.0"),
            ("a:b", "a:b"),
            ("a#b", "a#b"),
            ("ghcr.io/org/img@sha256:abc", "ghcr.io/org/img@sha256:abc"),
            ("naïve café", "naïve café"),
            ("a, b", "a, b"),
        ];
        for (value, want) in cases {
            let out = set("k: old # c\nz: 1\n", "k", value);
            assert_eq!(out, format!("k: {want} # c\nz: 1\n"), "{value:?}");
            assert_eq!(read(&out, "k"), value);
        }
    }

    #[test]
    fn unicode_before_the_target() {
        let text = "# café ☕ — naïve\nnaïve: naïve\n\"日本\": x\nimage: app:v1 # 🚀\n";
        let out = set(text, "image", "app:v2");
        assert_eq!(out, "# café ☕ — naïve\nnaïve: naïve\n\"日本\": x\nimage: app:v2 # 🚀\n");
        let out = set(text, "naïve", "ünïcödé");
        assert_eq!(out, "# café ☕ — naïve\nnaïve: ünïcödé\n\"日本\": x\nimage: app:v1 # 🚀\n");
        let out = set(text, "[\"日本\"]", "ok");
        assert_eq!(out, "# café ☕ — naïve\nnaïve: naïve\n\"日本\": ok\nimage: app:v1 # 🚀\n");
        let bom = "\u{feff}a: 1\nb: x\n";
        assert_eq!(set(bom, "b", "z"), "\u{feff}a: 1\nb: z\n");
    }

    #[test]
    fn flow_style() {
        let text = "m: {a: 1, b: 'two', c: [x, y]}  # flow\n";
        assert_eq!(set(text, "m.b", "2"), "m: {a: 1, b: '2', c: [x, y]}  # flow\n");
        assert_eq!(set(text, "m.c[1]", "z"), "m: {a: 1, b: 'two', c: [x, z]}  # flow\n");
        assert_eq!(set(text, "m.c[0]", "p,q"), "m: {a: 1, b: 'two', c: [\"p,q\", y]}  # flow\n");
        assert_eq!(set(text, "m.a", "3"), "m: {a: \"3\", b: 'two', c: [x, y]}  # flow\n");
    }

    #[test]
    fn sequence_index_paths() {
        let text = "args:\n  - --flag\n  - value   # second\n  -   third\n";
        assert_eq!(set(text, "args[1]", "v2"), "args:\n  - --flag\n  - v2   # second\n  -   third\n");
        assert_eq!(set(text, "args[2]", "3rd"), "args:\n  - --flag\n  - value   # second\n  -   3rd\n");
        assert_eq!(set(text, "args[0]", "--other"), "args:\n  - \"--other\"\n  - value   # second\n  -   third\n");
    }

    #[test]
    fn crlf_line_endings() {
        let text = "# c\r\na: 1\r\nb: old # x\r\nc: |\r\n  l1\r\n  l2\r\n\r\nd: 'q'\r\n";
        assert_eq!(set(text, "b", "new"), "# c\r\na: 1\r\nb: new # x\r\nc: |\r\n  l1\r\n  l2\r\n\r\nd: 'q'\r\n");
        let out = set(text, "c", "m1\nm2\nm3\n");
        assert_eq!(out, "# c\r\na: 1\r\nb: old # x\r\nc: |\r\n  m1\r\n  m2\r\n  m3\r\n\r\nd: 'q'\r\n");
        assert_eq!(read(&out, "c"), "m1\nm2\nm3\n");
        let out = set(text, "d", "it's");
        assert_eq!(out, "# c\r\na: 1\r\nb: old # x\r\nc: |\r\n  l1\r\n  l2\r\n\r\nd: 'it''s'\r\n");
    }

    #[test]
    fn block_scalars() {
        let text = "s: |\n    four\n    spaces\n\n\nk: |+\n  kept\n\nn: 1\nlast: >\n  end";
        // keeps the 4-space indentation and the blank lines after it
        assert_eq!(set(text, "s", "x\n  y\n"), "s: |\n    x\n      y\n\n\nk: |+\n  kept\n\nn: 1\nlast: >\n  end");
        // `+` (keep): the value's trailing newlines decide the chomping
        assert_eq!(set(text, "k", "a\n\n"), "s: |\n    four\n    spaces\n\n\nk: |+\n  a\n\nn: 1\nlast: >\n  end");
        assert_eq!(set(text, "k", "a\n"), "s: |\n    four\n    spaces\n\n\nk: |\n  a\n\nn: 1\nlast: >\n  end");
        assert_eq!(set(text, "k", "a"), "s: |\n    four\n    spaces\n\n\nk: |-\n  a\n\nn: 1\nlast: >\n  end");
        // no final newline in the file
        assert_eq!(set(text, "last", "fin\n"), "s: |\n    four\n    spaces\n\n\nk: |+\n  kept\n\nn: 1\nlast: >\n  fin");
        // values a block cannot hold become double-quoted, keeping what follows
        assert_eq!(set(text, "s", " lead\n"), "s: \" lead\\n\"\n\n\nk: |+\n  kept\n\nn: 1\nlast: >\n  end");
        assert_eq!(set(text, "s", "a\n\n\n\n"), "s: \"a\\n\\n\\n\\n\"\n\n\nk: |+\n  kept\n\nn: 1\nlast: >\n  end");
        let commented = "a: >- # why\n  x\n# after\nb: 1\n";
        assert_eq!(set(commented, "a", "tab\there"), "a: >- # why\n  tab\there\n# after\nb: 1\n");
        assert_eq!(set(commented, "a", "l1\nl2"), "a: \"l1\\nl2\" # why\n# after\nb: 1\n");
        let explicit = "a: |2\n   lead\n";
        assert_eq!(set(explicit, "a", "x\n"), "a: \"x\\n\"\n");
    }

    #[test]
    fn empty_values_and_documents() {
        assert_eq!(set("a:\nb: 1\n", "a", "x"), "a: x\nb: 1\n");
        assert_eq!(set("a: # note\nb: 1\n", "a", "x"), "a: x # note\nb: 1\n");
        assert_eq!(set("l:\n  -\n  - b\n", "l[0]", "a"), "l:\n  - a\n  - b\n");
        let docs = "kind: A\nspec: {x: 1}\n---\n# second\nkind: B\nspec:\n  y: old\n";
        assert_eq!(set(docs, "spec.y", "new"), "kind: A\nspec: {x: 1}\n---\n# second\nkind: B\nspec:\n  y: new\n");
        assert_eq!(set(docs, "kind", "C"), "kind: C\nspec: {x: 1}\n---\n# second\nkind: B\nspec:\n  y: old\n");
    }

    #[test]
    fn two_edits_in_one_file() {
        let text = "a: one\nb:\n  c: 'two'   # keep me\nd: three\n";
        let edits = [
            Edit { path: "d".into(), value: "a much longer value than before".into() },
            Edit { path: "a".into(), value: "1".into() },
            Edit { path: "b.c".into(), value: "2".into() },
        ];
        let (out, changed) = apply(text, &edits).unwrap();
        assert!(changed);
        assert_eq!(out, "a: \"1\"\nb:\n  c: '2'   # keep me\nd: a much longer value than before\n");
        // the same path twice: the last wins
        let edits = [Edit { path: "a".into(), value: "x".into() }, Edit { path: "a".into(), value: "z".into() }];
        assert_eq!(apply(text, &edits).unwrap().0, "a: z\nb:\n  c: 'two'   # keep me\nd: three\n");
        // and back to the original: unchanged
        let edits = [Edit { path: "a".into(), value: "x".into() }, Edit { path: "a".into(), value: "one".into() }];
        assert_eq!(apply(text, &edits).unwrap(), (text.to_string(), false));
    }

    #[test]
    fn equal_value_leaves_text_untouched() {
        let text = "a: 'abc'\nb: \"x\"\nc: 3\nd: |\n  l\ne: plain\n";
        for (path, value) in [("a", "abc"), ("b", "x"), ("c", "3"), ("d", "l\n"), ("e", "plain")] {
            let (out, changed) = apply(text, &[Edit { path: path.into(), value: value.into() }]).unwrap();
            assert!(!changed, "{path}");
            assert_eq!(out, text);
        }
        assert_eq!(apply(text, &[]).unwrap(), (text.to_string(), false));
        // spelled the same but read differently: rewritten
        assert_eq!(set("k:\n", "k", ""), "k: \"\"\n");
        assert_eq!(set("k: ~\n", "k", "~"), "k: \"~\"\n");
        assert_eq!(set("k: 010\n", "k", "010"), "k: \"010\"\n");
    }

    #[test]
    fn errors_name_what_is_wrong() {
        let text = "spec:\n  template:\n    name: x\n  list: [1]\nbase: &b v\nalias: *b\n";
        let err = |path: &str| apply(text, &[Edit { path: path.into(), value: "v".into() }]).unwrap_err();
        let e = err("spec.template.image");
        assert!(
            matches!(&e, EditError::MissingPath { missing, parent, .. } if missing == "image" && parent == "spec.template"),
            "{e:?}"
        );
        let msg = e.to_string();
        assert!(msg.contains("\"image\"") && msg.contains("spec.template") && msg.contains("mapping at 3:5"), "{msg}");
        let msg = err("nope.x").to_string();
        assert!(msg.contains("\"nope\"") && msg.contains("the document root"), "{msg}");
        let msg = err("spec.list[4]").to_string();
        assert!(msg.contains("[4]") && msg.contains("spec.list") && msg.contains("sequence"), "{msg}");
        let e = err("spec.template");
        assert!(matches!(e, EditError::NotScalar { kind: "mapping", line: 3, col: 5, .. }), "{e:?}");
        assert!(e.to_string().contains("3:5"), "{e}");
        assert!(err("spec.list").to_string().contains("sequence at 4:9"));
        let e = err("alias");
        assert!(matches!(&e, EditError::Alias { anchor, line: 6, col: 8, .. } if anchor == "b"), "{e:?}");
        let e = err("a[");
        assert!(matches!(e, EditError::InvalidPath { .. }), "{e:?}");
        let e = apply("a: [1\nb: 2\n", &[Edit { path: "b".into(), value: "3".into() }]).unwrap_err();
        assert!(matches!(e, EditError::Syntax { line: 1, col: 4, .. }), "{e:?}");
        assert!(e.to_string().starts_with("YAML syntax error at 1:4"), "{e}");
        // editing the anchored value is allowed (its aliases follow)
        assert_eq!(set(text, "base", "w"), "spec:\n  template:\n    name: x\n  list: [1]\nbase: &b w\nalias: *b\n");
    }

    #[test]
    fn render_scalar_round_trips() {
        let values = [
            "plain",
            "yes",
            "1.0",
            "it's",
            "two\nlines\n",
            "one line",
            "trail\n\n",
            "tab\there",
            "ctl\x01\x7f",
            "é\u{2028}",
            "",
            " lead",
            "a: b",
        ];
        let styles = [
            ScalarKind::Plain,
            ScalarKind::SingleQuoted,
            ScalarKind::DoubleQuoted,
            ScalarKind::Literal,
            ScalarKind::Folded,
        ];
        for v in values {
            for style in styles {
                let r = render_scalar(v, style, 2);
                let doc = format!("k: {r}\nz: 1\n");
                assert_eq!(read(&doc, "k"), v, "{style:?} {v:?} -> {r:?}");
                assert_eq!(read(&doc, "z"), "1");
            }
        }
        assert_eq!(render_scalar("x\ny\n", ScalarKind::Literal, 4), "|\n    x\n    y");
        assert_eq!(render_scalar("x", ScalarKind::Folded, 2), ">-\n  x");
        assert_eq!(render_scalar("x\n\n", ScalarKind::Literal, 2), "|+\n  x\n");
        assert_eq!(render_scalar("it's", ScalarKind::SingleQuoted, 0), "'it''s'");
        assert_eq!(render_scalar("on", ScalarKind::Plain, 0), "\"on\"");
    }

    #[test]
    fn random_values_round_trip_in_every_context() {
        let contexts: &[(&str, &str)] = &[
            ("pre: 1\nk: old # c\npost: 2\n", "k"),
            ("k: 'old'\n", "k"),
            ("k: \"old\"  # c\n", "k"),
            ("k: |\n  old\n\npost: 1\n", "k"),
            ("k: >-\n  old\n# c\npost: 1\n", "k"),
            ("k: |+\n  old\n\n", "k"),
            ("k: |\r\n  old\r\nz: 1\r\n", "k"),
            ("m: {k: old, z: 1}\n", "m.k"),
            ("l: [old, z]\n", "l[0]"),
            ("l:\n  - old\n  - z\n", "l[0]"),
            ("k:\nz: 1\n", "k"),
            ("k: old", "k"),
            ("a: &x old\nb: *x\n", "a"),
        ];
        let pool: Vec<char> =
            "ab \n\t:#'\"\\-{}[],10.e~yx?&*!|>%@`é☕\u{85}\u{2028}\u{a0}\r\x01\u{feff}".chars().collect();
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for &(text, path) in contexts {
            let span = locate_scalar(text, &parse_path(path).unwrap()).unwrap();
            for _ in 0..500 {
                let len = (next() % 9) as usize;
                let value: String = (0..len).map(|_| pool[(next() % pool.len() as u64) as usize]).collect();
                let (out, _) = apply(text, &[Edit { path: path.into(), value: value.clone() }])
                    .unwrap_or_else(|e| panic!("{text:?} {path} = {value:?}: {e}"));
                assert_eq!(read(&out, path), value, "{text:?} -> {out:?}");
                // and tenon's model (Kubernetes rules) reads it as that string
                let got = locate_scalar(&out, &parse_path(path).unwrap()).unwrap().resolved;
                assert_eq!(got.as_deref(), Some(value.as_str()), "{text:?} -> {out:?}");
                assert!(out.starts_with(&text[..span.start]), "{text:?} -> {out:?}");
                if span.start < span.end {
                    assert!(out.ends_with(&text[span.end..]), "{text:?} -> {out:?}");
                }
            }
        }
    }

    #[test]
    fn kubernetes_manifest() {
        let text = r#"# Deployment for the model server.
# Managed by tenon: image and digest are written back on promotion.
apiVersion: apps/v1
kind: Deployment
metadata:
  name: model-server   # do not rename
  labels:
    app.kubernetes.io/name: model-server
  annotations:
    tenon.dev/model-digest: "sha256:0000000000000000000000000000000000000000000000000000000000000000"
    tenon.dev/promoted-by: 'pipeline/promote'  # who
spec:
  replicas: 2
  selector:
    matchLabels: {app: model-server}
  template:
    metadata:
      labels:
        app: model-server
    spec:
      containers:
        - name: server
          # pinned by digest; bumped by the promotion pipeline
          image: ghcr.io/acme/model-server:1.4.0
          args: ["--model", "s3://models/candidate/v1"]
          env:
            - name: MODEL_URI
              value: s3://models/candidate/v1

        - name: sidecar
          image: "ghcr.io/acme/sidecar:0.3"
---
# Kustomization overlay
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
images:
  - name: ghcr.io/acme/model-server
    newTag: 1.4.0   # set by tenon
"#;
        let digest = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
        let edits = [
            Edit {
                path: "spec.template.spec.containers[0].image".into(),
                value: "ghcr.io/acme/model-server:1.5.0".into(),
            },
            Edit { path: "metadata.annotations[\"tenon.dev/model-digest\"]".into(), value: digest.into() },
            Edit { path: "spec.template.spec.containers[0].args[1]".into(), value: "s3://models/candidate/v2".into() },
            Edit {
                path: "spec.template.spec.containers[0].env[0].value".into(),
                value: "s3://models/candidate/v2".into(),
            },
            Edit { path: "spec.template.spec.containers[1].image".into(), value: "ghcr.io/acme/sidecar:0.4".into() },
            Edit { path: "images[0].newTag".into(), value: "1.5.0".into() },
        ];
        let (out, changed) = apply(text, &edits).unwrap();
        assert!(changed);
        let want = text
            .replace("model-server:1.4.0", "model-server:1.5.0")
            .replace("sha256:0000000000000000000000000000000000000000000000000000000000000000", digest)
            .replace("\"s3://models/candidate/v1\"]", "\"s3://models/candidate/v2\"]")
            .replace("value: s3://models/candidate/v1", "value: s3://models/candidate/v2")
            .replace("sidecar:0.3", "sidecar:0.4")
            .replace("newTag: 1.4.0   #", "newTag: 1.5.0   #");
        assert_eq!(out, want);
        for e in &edits {
            assert_eq!(read(&out, &e.path), e.value, "{}", e.path);
        }
        // only the first document has `spec...`; the overlay's key is found in the second
        let e = apply(text, &[Edit { path: "spec.template.spec.containers[2].image".into(), value: "x".into() }])
            .unwrap_err();
        assert!(e.to_string().contains("[2]") && e.to_string().contains("spec.template.spec.containers"), "{e}");
        let e = apply(text, &[Edit { path: "spec.template.spec.containers[0].ports".into(), value: "x".into() }])
            .unwrap_err();
        assert!(e.to_string().contains("\"ports\"") && e.to_string().contains("containers[0]"), "{e}");
    }
}
