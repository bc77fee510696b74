//! The import direction of `src/`: every `crate::X` path in a file of top-level module `M`
//! is an edge `M -> X`. Edges must be in `ALLOWED` (which only holds edges that follow
//! the data-flow order in `LAYERS`) or in `DEBT` (edges against the order that exist
//! today and are to be removed; see issue 15 and the architecture review, section 1.7).
//!
//! - A new edge not in either table fails, naming the edge and its file:line.
//! - An edge against the order can never be added to `ALLOWED` (the tables are checked).
//! - A `DEBT` entry that no longer occurs fails too: delete it, so the debt only shrinks.
//! - The two executors (`exec/local.rs`, `exec/kubernetes.rs` and their submodules) do not import each other:
//!   what both need lives in `exec/common.rs`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The data-flow order, lowest first: a module may import from its own tier or a lower
/// one. `error` (the one exit-code map) stands outside the order; see `OUTSIDE`.
const LAYERS: &[&[&str]] = &[
    &["util", "telemetry", "lease", "ui"],
    &["model"],
    // cache: key preimages and miss reasons (pure; planned to become plan::key)
    &["hash", "cache", "plan"],
    &["report"],
    &["store", "exec", "oci"],
    // retention: run directories (locks, pruning, scrubbing Secret material)
    &["remote", "retention"],
    &["engine"],
    &["promote"],
    &["reconcile"],
    &["watch"],
    &["cli"],
];

/// Modules outside the order: `error` maps every stage's errors to exit codes, so it may
/// import stage error types and be named by the stages (until typed errors settle).
const OUTSIDE: &[&str] = &["error"];

/// Edges that follow the order (lower tiers only). Entries that no longer occur are fine
/// (some are there for the planned `util` and `plan` modules).
const ALLOWED: &[(&str, &str)] = &[
    ("cache", "hash"),
    ("cache", "model"),
    ("cache", "util"),
    ("cli", "engine"),
    ("cli", "error"),
    ("cli", "exec"),
    ("cli", "hash"),
    ("cli", "lease"),
    ("cli", "model"),
    ("cli", "oci"),
    ("cli", "plan"),
    ("cli", "promote"),
    ("cli", "reconcile"),
    ("cli", "remote"),
    ("cli", "report"),
    ("cli", "retention"),
    ("cli", "store"),
    ("cli", "telemetry"),
    ("cli", "ui"),
    ("cli", "util"),
    ("cli", "watch"),
    ("engine", "cache"),
    ("engine", "exec"),
    ("engine", "hash"),
    ("engine", "model"),
    ("engine", "plan"),
    ("engine", "remote"),
    ("engine", "report"),
    ("engine", "retention"),
    ("engine", "store"),
    ("engine", "ui"),
    ("engine", "util"),
    ("error", "model"),
    ("error", "store"),
    ("error", "exec"),
    ("error", "oci"),
    ("error", "remote"),
    ("error", "engine"),
    ("error", "promote"),
    ("error", "reconcile"),
    ("error", "watch"),
    ("exec", "hash"),
    ("exec", "model"),
    ("exec", "oci"),
    ("exec", "ui"),
    ("exec", "util"),
    ("hash", "util"),
    ("model", "util"),
    ("oci", "hash"),
    ("oci", "util"),
    ("plan", "cache"),
    ("plan", "model"),
    ("plan", "util"),
    ("promote", "hash"),
    ("promote", "model"),
    ("promote", "report"),
    ("promote", "store"),
    ("promote", "util"),
    ("reconcile", "engine"),
    ("reconcile", "error"),
    ("reconcile", "exec"),
    ("reconcile", "model"),
    ("reconcile", "plan"),
    ("reconcile", "promote"),
    ("reconcile", "remote"),
    ("reconcile", "report"),
    ("reconcile", "retention"),
    ("reconcile", "store"),
    ("reconcile", "ui"),
    ("reconcile", "util"),
    ("remote", "cache"),
    ("remote", "hash"),
    ("remote", "oci"),
    ("remote", "report"),
    ("remote", "store"),
    ("remote", "util"),
    ("report", "model"),
    ("report", "plan"),
    ("retention", "store"),
    ("store", "hash"),
    ("store", "model"),
    ("store", "util"),
    ("watch", "error"),
    ("watch", "hash"),
    ("watch", "model"),
    ("watch", "promote"),
    ("watch", "reconcile"),
    ("watch", "remote"),
    ("watch", "report"),
    ("watch", "store"),
    ("watch", "ui"),
    ("watch", "util"),
];

/// Edges against the order that exist today: debt to remove, never to add to. Each names
/// where it comes from and where the code should go.
const DEBT: &[(&str, &str, &str)] = &[];

fn rank(m: &str) -> Option<usize> {
    LAYERS.iter().position(|tier| tier.contains(&m))
}

/// The top-level module a file under `src/` belongs to (`engine/cached.rs` -> `engine`).
fn top_module(rel: &Path) -> String {
    let first = rel.components().next().unwrap().as_os_str().to_string_lossy().to_string();
    first.trim_end_matches(".rs").to_string()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The code of a file with line comments (`//`, `///`, `//!`) blanked, so that doc links
/// do not count; line numbers are kept.
fn code_of(text: &str) -> String {
    text.lines().map(|l| if l.trim_start().starts_with("//") { "" } else { l }).collect::<Vec<_>>().join("\n")
}

/// Every `crate::X` (and each first name in `crate::{X, Y::z}`) with its 1-based line.
fn crate_refs(code: &str) -> Vec<(String, usize)> {
    let ident = |s: &str| -> String { s.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect() };
    let line_of = |at: usize| code[..at].matches('\n').count() + 1;
    let mut out = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        if at > 0 && code[..at].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == '$') {
            continue; // `$crate::` in macros, `foo_crate::`
        }
        let rest = &code[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // a group: split at top-level commas up to the matching brace
            let (mut depth, mut start) = (0usize, 0usize);
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        out.push((ident(group[start..i].trim_start()), line_of(at)));
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.push((ident(group[start..i].trim_start()), line_of(at)));
                        start = i + 1;
                    }
                    _ => {}
                }
            }
        } else {
            out.push((ident(rest), line_of(at)));
        }
    }
    out.retain(|(m, _)| !m.is_empty() && m != "self");
    out
}

/// edge -> places (`src/file.rs:line`)
fn edges() -> BTreeMap<(String, String), Vec<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut out: BTreeMap<(String, String), Vec<String>> = BTreeMap::new();
    for f in files {
        let rel = f.strip_prefix(&src).unwrap();
        let from = top_module(rel);
        if from == "main" || from == "lib" {
            continue; // the binary uses the library as `tenon::`; lib.rs only declares modules
        }
        let code = code_of(&std::fs::read_to_string(&f).unwrap());
        for (to, line) in crate_refs(&code) {
            if to != from {
                out.entry((from.clone(), to)).or_default().push(format!("src/{}:{line}", rel.display()));
            }
        }
    }
    out
}

fn forward(from: &str, to: &str) -> bool {
    if OUTSIDE.contains(&from) || OUTSIDE.contains(&to) {
        return true;
    }
    matches!((rank(from), rank(to)), (Some(a), Some(b)) if b <= a)
}

#[test]
fn tables_are_consistent() {
    for (from, to) in ALLOWED {
        for m in [from, to] {
            assert!(rank(m).is_some() || OUTSIDE.contains(m), "module {m} (in ALLOWED) is not in LAYERS");
        }
        assert!(forward(from, to), "ALLOWED has {from} -> {to}, which goes against the order in LAYERS");
    }
    for (from, to, _) in DEBT {
        assert!(!forward(from, to), "DEBT has {from} -> {to}, which follows the order: move it to ALLOWED");
        assert!(!ALLOWED.contains(&(from, to)), "{from} -> {to} is in both ALLOWED and DEBT");
    }
}

#[test]
fn imports_follow_the_data_flow_order() {
    let found = edges();
    let mut problems = Vec::new();
    for ((from, to), places) in &found {
        let (f, t) = (from.as_str(), to.as_str());
        if ALLOWED.contains(&(f, t)) || DEBT.iter().any(|(a, b, _)| (*a, *b) == (f, t)) {
            continue;
        }
        let at = places.join(", ");
        if rank(f).is_none() && !OUTSIDE.contains(&f) || rank(t).is_none() && !OUTSIDE.contains(&t) {
            problems
                .push(format!("new module in edge {f} -> {t} ({at}): add it to a tier of LAYERS in tests/layering.rs"));
        } else if forward(f, t) {
            problems.push(format!(
                "new import edge {f} -> {t} at {at}: it follows the order; if it is intended, add (\"{f}\", \"{t}\") to ALLOWED in tests/layering.rs"
            ));
        } else {
            problems.push(format!(
                "new import edge {f} -> {t} at {at} goes against the data-flow order ({t} is a later stage than {f}): move what {f} needs down into {f}'s layer or below instead"
            ));
        }
    }
    for (from, to, why) in DEBT {
        if !found.contains_key(&(from.to_string(), to.to_string())) {
            problems.push(format!(
                "the debt edge {from} -> {to} ({why}) is gone: delete it from DEBT in tests/layering.rs"
            ));
        }
    }
    assert!(problems.is_empty(), "layering (tests/layering.rs):\n  {}", problems.join("\n  "));
}

/// Neither executor imports the other; their shared pod conventions live in exec/common.rs.
/// (Empty: kubernetes.rs took them from local.rs until they moved to exec/common.rs.)
const EXECUTOR_DEBT: &[(&str, &str)] = &[];

#[test]
fn executors_do_not_import_each_other() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join("exec");
    let mut problems = Vec::new();
    let mut seen = BTreeSet::new();
    for (me, other) in [("local", "kubernetes"), ("kubernetes", "local")] {
        // the executor's file and its submodules (exec/<me>/**), each with the paths that
        // reach the other executor from there
        let mut files = vec![(dir.join(format!("{me}.rs")), format!("super::{other}"))];
        let sub = dir.join(me);
        if sub.is_dir() {
            let mut subs = Vec::new();
            rust_files(&sub, &mut subs);
            files.extend(subs.into_iter().map(|f| (f, format!("super::super::{other}"))));
        }
        for (file, sibling) in files {
            let code = code_of(&std::fs::read_to_string(&file).unwrap());
            let shown = file.strip_prefix(env!("CARGO_MANIFEST_DIR")).unwrap_or(&file).display().to_string();
            for (n, line) in code.lines().enumerate() {
                if [sibling.clone(), format!("crate::exec::{other}")].iter().any(|p| line.contains(p.as_str())) {
                    seen.insert((me, other));
                    if !EXECUTOR_DEBT.contains(&(me, other)) {
                        problems.push(format!(
                            "{shown}:{} imports exec::{other}: move the shared code to exec/common.rs",
                            n + 1
                        ));
                    }
                }
            }
        }
    }
    for d in EXECUTOR_DEBT {
        if !seen.contains(d) {
            problems.push(format!("exec/{} no longer imports exec/{}: delete it from EXECUTOR_DEBT", d.0, d.1));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
