//! Locating one scalar's bytes, for format-preserving edits (`promote::edit`).

use super::*;

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

pub(super) struct LocFrame {
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
pub(super) fn locate_syntax_error(e: &libyaml_safer::Error, text: &str) -> SyntaxError {
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
pub(super) fn reader_error(e: &libyaml_safer::Error, text: &str) -> SyntaxError {
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

/// Find the scalar at `path` in `text`: the first document that resolves the path decides,
/// else the deepest point where the path could not be followed. `progress` is the byte
/// offset parsed so far.
pub(super) fn locate_inner(
    text: &str,
    path: &[PathSeg],
    progress: &std::cell::Cell<usize>,
) -> Result<ScalarSpan, LocateError> {
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
        if is_node(&ev.data) {
            // The node's role: on the path (and how deep), a key, or elsewhere.
            let (on_path, depth, is_key, in_flow) = node_role(stack.last_mut(), done, &ev.data, path, pos)?;
            let on_path = on_path && !is_key && result.is_none();
            match ev.data {
                EventData::Scalar { value, style, anchor, tag, .. } => {
                    if on_path && depth == path.len() {
                        let end = (ev.end_mark.index as usize + bom).min(text.len());
                        let span = (ev.start_mark.index as usize + bom, end);
                        result = Some(Ok(scalar_span(text, span, value, style, anchor, tag, in_flow)));
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
    Err(missing.unwrap_or_else(|| not_found_in_document(path)))
}

/// Whether an event is a node: a scalar, an alias, or the start of a collection.
fn is_node(data: &EventData) -> bool {
    matches!(
        data,
        EventData::Scalar { .. }
            | EventData::Alias { .. }
            | EventData::SequenceStart { .. }
            | EventData::MappingStart { .. }
    )
}

/// The role of a node event in the frame that holds it: (on the path, depth, is a mapping
/// key, inside a flow collection). Advances the frame (next index, key or value) and marks
/// the path's child as found; a second key matching the path is a duplicate-key error.
fn node_role(
    frame: Option<&mut LocFrame>,
    done: bool,
    data: &EventData,
    path: &[PathSeg],
    pos: Pos,
) -> Result<(bool, usize, bool, bool), LocateError> {
    Ok(match frame {
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
                && match (data, path.get(f.depth)) {
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
    })
}

/// The span of the scalar event found at the path: `raw` is its (start, end) byte range
/// in `text`, past any anchor and tag, with its style and resolved value.
fn scalar_span(
    text: &str,
    raw: (usize, usize),
    value: String,
    style: ScalarStyle,
    anchor: Option<String>,
    tag: Option<String>,
    flow: bool,
) -> ScalarSpan {
    let (mut start, end) = raw;
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
    ScalarSpan { start, end, style, value, resolved, line, col, flow }
}

/// The error when no document followed the path at all: its first segment is missing.
fn not_found_in_document(path: &[PathSeg]) -> LocateError {
    match path.first() {
        Some(_) => {
            LocateError::NotFound { missing: path_key(&path[0]), depth: 0, parent_kind: "document", line: 1, col: 1 }
        }
        None => LocateError::NotFound { missing: String::new(), depth: 0, parent_kind: "document", line: 1, col: 1 },
    }
}

pub(super) fn path_key(seg: &PathSeg) -> String {
    match seg {
        PathSeg::Key(k) => k.clone(),
        PathSeg::Index(i) => format!("[{i}]"),
    }
}

/// Skip a node's anchor (`&a`) and tag (`!!str`, `!<..>`), and the blanks and comments
/// after them, to reach the scalar's own token.
pub(super) fn skip_node_properties(text: &str, mut i: usize, end: usize) -> usize {
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
pub(super) fn line_col_of(text: &str, at: usize) -> (usize, usize) {
    let before = &text[..at];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let col_text = &before[line_start..];
    let col_text = if line_start == 0 { col_text.trim_start_matches('\u{feff}') } else { col_text };
    (before.matches('\n').count() + 1, col_text.chars().count() + 1)
}

#[cfg(test)]
mod tests {
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
