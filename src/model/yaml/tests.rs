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
