//! Mutation fuzzing of the loader and validator, in `cargo test`: the bundled example
//! (`examples/model-promotion`) and Tekton's own examples (`TENON_CONFORMANCE_DIR`, or
//! `../shared/conformance/tekton-examples`; never copied here) are mutated with byte
//! flips, truncation, duplication, deep nesting, long scalars, anchors and aliases,
//! non-UTF-8 and NUL bytes, and YAML/Tekton tokens, driven by proptest with a fixed seed
//! and a fixed number of cases. Every input is loaded and validated in-process (plus the
//! substitution and CEL code over what loads), and a sample goes through the real
//! `tenon validate`. Asserted: no panic, no abort, no hang (each input under a time
//! limit), exit code in {0, 1, 2}, and every diagnostic with file:line:col.
//!
//! The coverage-guided counterpart, for long campaigns, is `fuzz/` (README: Fuzzing).

mod common;

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};

/// The fixed seed: the same inputs on every run and every machine.
const SEED: [u8; 32] = *b"tenon-fuzz-manifests-seed-000001";
/// Cases per run: about 20-30 s in a debug build on a slow 2-core machine.
const CASES: u32 = 10_000;
/// Every `BINARY_EVERY`th case also runs the real binary.
const BINARY_EVERY: u32 = 100;
/// The most one input may take in-process (a debug build; typical inputs take ms).
const CASE_LIMIT: Duration = Duration::from_secs(10);

fn conformance_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("TENON_CONFORMANCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| common::repo_root().join("../shared/conformance/tekton-examples"));
    dir.join("INDEX.tsv").is_file().then_some(dir)
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            yaml_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "yaml" || x == "yml") {
            out.push(p);
        }
    }
}

/// The manifests mutated: the example's always, the conformance corpus's when present.
fn seeds() -> Vec<Vec<u8>> {
    let mut files = Vec::new();
    yaml_files(&common::repo_root().join("examples/model-promotion/tekton"), &mut files);
    let example = files.len();
    assert!(example >= 5, "the bundled example has only {example} manifests");
    match conformance_dir() {
        Some(dir) => yaml_files(&dir, &mut files),
        None => eprintln!(
            "fuzz: Tekton conformance corpus not found (set TENON_CONFORMANCE_DIR): mutating the bundled example only"
        ),
    }
    eprintln!("fuzz: {} seed manifests ({example} from examples/model-promotion)", files.len());
    files.iter().map(|f| std::fs::read(f).unwrap()).collect()
}

/// Tokens spliced in: YAML structure, YAML 1.1 scalars, Tekton references and kinds.
const TOKENS: &[&str] = &[
    "&a ",
    "*a",
    "<<: *a\n",
    "&b [*a, *a, *a]",
    "? ",
    ": ",
    "- ",
    "[",
    "]",
    "{",
    "}",
    ",",
    "\n",
    "\n  ",
    "---\n",
    "...\n",
    "!!str ",
    "!!binary ",
    "!t,",
    "'",
    "\"",
    "|\n",
    ">-\n",
    "#",
    "~",
    "y",
    "no",
    "on",
    "0x1F",
    "1.10",
    "\t",
    "$(",
    ")",
    "$(params.",
    "$(tasks.",
    ".results.",
    "$(context.taskRun.name)",
    "$(workspaces.",
    "[*]",
    "[0]",
    "kind: Pipline\n",
    "apiVersion: tekton.dev/v1\n",
    "kind: Task\n",
    "name: ",
    "runAfter: [",
    "taskRef: {name: ",
    "cel: \"",
    "(((",
    "!!!",
    "\u{feff}",
    "\r\n",
    "\\u0000",
    "\\x",
    "é",
    "\u{10ffff}",
];

/// Values put in place of a line's value: the structure stays valid YAML, so the
/// validator sees them.
const VALUES: &[&str] = &[
    "y",
    "no",
    "Off",
    "~",
    "",
    "''",
    "[]",
    "{}",
    "[a, b]",
    "{k: v}",
    "-1",
    "0",
    "1e400",
    "0x7fffffffffffffffff",
    "$(params.x)",
    "\"$(params.x[*])\"",
    "$(tasks.a.results.r)",
    "\"$(tasks.a.results.r[0])\"",
    "$(context.pipelineRun.name)",
    "\"$(workspaces.w.path)\"",
    "$(params[\"a.b\"])",
    "$($(params.x))",
    "Pipline",
    "Task",
    "tekton.dev/v2",
    "tenon.dev/v1alpha1",
    "notin",
    "in",
    "continue",
    "stopAndFail",
    "1h",
    "-5s",
    "\"'a' == 'a' && (1 < 2)\"",
    "\"((((((((((true))))))))))\"",
    "*undefined",
    "&x {a: *x}",
    "../..",
    "/abs",
    "a/../../b",
    "\"\\0\\x01\"",
    "[!!str, x]",
];

#[derive(Debug, Clone)]
enum Mutation {
    /// Replace the value of the first `key: value` line at or after a place.
    Value(f64, usize),
    /// XOR one byte (at a fraction of the length) with a non-zero mask.
    Flip(f64, u8),
    Truncate(f64),
    /// Copy a slice (start, len as fractions) to another place.
    Duplicate(f64, f64, f64),
    /// Open `n` flow collections (maps or lists) at a place, and maybe close them.
    Nest(f64, usize, bool, bool),
    /// A scalar of `n` bytes, plain or quoted.
    LongScalar(f64, usize, bool),
    /// Anchor a line's value and alias it from many places.
    Aliases(f64, usize),
    /// An invalid UTF-8 byte or a NUL.
    Byte(f64, u8),
    Token(f64, usize),
}

fn at(len: usize, f: f64) -> usize {
    ((len as f64) * f).floor().min(len as f64) as usize
}

fn apply(input: &mut Vec<u8>, m: &Mutation) {
    let len = input.len();
    match *m {
        Mutation::Value(f, v) => {
            let i = at(len, f);
            let Some(colon) = input[i..].windows(2).position(|w| w == b": ") else { return };
            let start = i + colon + 2;
            let end = input[start..].iter().position(|&b| b == b'\n').map_or(len, |e| start + e);
            input.splice(start..end, VALUES[v % VALUES.len()].bytes());
        }
        Mutation::Flip(f, mask) if len > 0 => {
            let i = at(len - 1, f);
            input[i] ^= mask;
        }
        Mutation::Flip(..) => {}
        Mutation::Truncate(f) => input.truncate(at(len, f)),
        Mutation::Duplicate(s, l, to) => {
            let start = at(len, s);
            let end = (start + at(len - start, l)).min(len);
            let piece = input[start..end].to_vec();
            let to = at(len, to);
            input.splice(to..to, piece);
        }
        Mutation::Nest(f, n, map, close) => {
            let (open, shut) = if map { ("{a: ", "}") } else { ("[", "]") };
            let mut s = open.repeat(n);
            if close {
                s.push('x');
                s.push_str(&shut.repeat(n));
            }
            let i = at(len, f);
            input.splice(i..i, s.into_bytes());
        }
        Mutation::LongScalar(f, n, quoted) => {
            let body = "x".repeat(n);
            let s = if quoted { format!("\"{body}\"") } else { body };
            let i = at(len, f);
            input.splice(i..i, s.into_bytes());
        }
        Mutation::Aliases(f, n) => {
            // turn `key: value` into `key: &z value` and add a list of aliases to it
            let i = at(len, f);
            if let Some(colon) = input[i..].windows(2).position(|w| w == b": ") {
                input.splice(i + colon + 2..i + colon + 2, b"&z ".iter().copied());
            }
            let refs = vec!["*z"; n].join(", ");
            input.extend_from_slice(format!("\nfuzzAliases: [{refs}]\n").as_bytes());
        }
        Mutation::Byte(f, b) => {
            let i = at(len, f);
            input.insert(i, b);
        }
        Mutation::Token(f, t) => {
            let i = at(len, f);
            input.splice(i..i, TOKENS[t % TOKENS.len()].bytes());
        }
    }
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let frac = 0.0..1.0f64;
    prop_oneof![
        8 => (frac.clone(), any::<usize>()).prop_map(|(f, v)| Mutation::Value(f, v)),
        4 => (frac.clone(), 1..=255u8).prop_map(|(f, m)| Mutation::Flip(f, m)),
        1 => frac.clone().prop_map(Mutation::Truncate),
        2 => (frac.clone(), 0.0..0.3f64, frac.clone()).prop_map(|(s, l, t)| Mutation::Duplicate(s, l, t)),
        2 => (frac.clone(), prop_oneof![1..300usize, Just(256usize), Just(257usize), 20_000..30_000usize], any::<bool>(), any::<bool>())
            .prop_map(|(f, n, m, c)| Mutation::Nest(f, n, m, c)),
        1 => (frac.clone(), prop_oneof![1..2_000usize, 100_000..300_000usize], any::<bool>())
            .prop_map(|(f, n, q)| Mutation::LongScalar(f, n, q)),
        1 => (frac.clone(), 1..2_000usize).prop_map(|(f, n)| Mutation::Aliases(f, n)),
        2 => (frac.clone(), prop_oneof![Just(0u8), Just(0xffu8), Just(0xc3u8), Just(0x80u8), 0x80..=0xffu8])
            .prop_map(|(f, b)| Mutation::Byte(f, b)),
        4 => (frac, any::<usize>()).prop_map(|(f, t)| Mutation::Token(f, t)),
    ]
}

/// Load and validate `dir` in-process, then substitute into and evaluate what loaded;
/// every diagnostic must have a position.
fn check_in_process(dir: &Path) -> Result<usize, String> {
    let cat = tenon::model::load_dir(dir);
    let diags = tenon::model::validate(&cat);
    for d in &diags.0 {
        if d.file.is_empty() || d.line == 0 || d.column == 0 {
            return Err(format!("diagnostic without file:line:col: {d:?}"));
        }
    }
    let mut vars = tenon::subst::Vars::new();
    vars.set_str("params.x", "X").set_str("tasks.a.results.r", "$(params.x)");
    for t in &cat.tasks {
        let mut v = serde_json::to_value(&t.spec).map_err(|e| e.to_string())?;
        vars.apply_json(&mut v, &[]);
    }
    for p in &cat.pipelines {
        for pt in p.spec.tasks.iter().chain(&p.spec.finally) {
            for w in &pt.when {
                if let Some(cel) = &w.cel {
                    let _ = tenon::cel::eval_bool(&vars.apply_str(cel));
                }
            }
        }
    }
    Ok(diags.len())
}

/// The real binary on `dir`, with a deadline: exit 0/1/2, and every diagnostic line on
/// stderr is `file:line:col: ...`.
fn check_binary(dir: &Path, store: &Path) -> Result<(), String> {
    let mut child = common::tenon_command(&["validate", dir.to_str().unwrap()], store)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;
    let stderr = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(st) = child.try_wait().map_err(|e| e.to_string())? {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err("tenon validate hung (60 s)".into());
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let err = reader.join().unwrap();
    let code = status.code().ok_or_else(|| format!("killed by a signal ({status}):\n{err}"))?;
    if !(0..=2).contains(&code) || err.contains("panicked") {
        return Err(format!("exit {code}:\n{err}"));
    }
    let prefix = format!("{}/", dir.display());
    for line in err.lines().filter(|l| !l.trim().is_empty() && !l.ends_with(" error(s)")) {
        let mut parts = line.strip_prefix(&prefix).unwrap_or(line).splitn(4, ':');
        let (file, l, c) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let ok = !file.is_empty() && l.parse::<usize>().is_ok_and(|n| n > 0) && c.parse::<usize>().is_ok_and(|n| n > 0);
        if !ok {
            return Err(format!("a diagnostic without file:line:col: {line:?}\n{err}"));
        }
    }
    Ok(())
}

#[test]
fn mutated_manifests_never_panic_hang_or_lose_positions() {
    let seeds = seeds();
    let scratch = tempfile::tempdir().unwrap();
    let store = scratch.path().join("store");
    let config = Config { cases: CASES, failure_persistence: None, max_shrink_iters: 200, ..Config::default() };
    let mut runner = TestRunner::new_with_rng(config, TestRng::from_seed(RngAlgorithm::ChaCha, &SEED));
    let strategy = (0..seeds.len(), proptest::collection::vec(mutation(), 1..5));
    let started = Instant::now();
    // counters (the property is a `Fn`)
    let (case, binary_runs, with_errors) = (Cell::new(0u32), Cell::new(0u32), Cell::new(0u32));
    let slowest = Cell::new(Duration::ZERO);
    let result = runner.run(&strategy, |(seed, mutations)| {
        case.set(case.get() + 1);
        let case = case.get();
        let mut input = seeds[seed].clone();
        for m in &mutations {
            apply(&mut input, m);
        }
        let dir = scratch.path().join(format!("case-{case}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("input.yaml"), &input).unwrap();
        let t = Instant::now();
        let r = std::panic::catch_unwind(|| check_in_process(&dir));
        let took = t.elapsed();
        slowest.set(slowest.get().max(took));
        let n = match r {
            Ok(Ok(n)) => n,
            Ok(Err(e)) => return Err(TestCaseError::fail(format!("seed {seed} {mutations:?}: {e}"))),
            Err(_) => return Err(TestCaseError::fail(format!("seed {seed} {mutations:?}: panicked"))),
        };
        prop_assert!(took < CASE_LIMIT, "seed {} {:?}: took {:?}", seed, mutations, took);
        with_errors.set(with_errors.get() + (n > 0) as u32);
        if case % BINARY_EVERY == 0 {
            binary_runs.set(binary_runs.get() + 1);
            check_binary(&dir, &store).map_err(|e| TestCaseError::fail(format!("seed {seed} {mutations:?}: {e}")))?;
        }
        std::fs::remove_dir_all(&dir).unwrap();
        Ok(())
    });
    let (case, binary_runs, with_errors, slowest) = (case.get(), binary_runs.get(), with_errors.get(), slowest.get());
    eprintln!(
        "fuzz: {case} inputs ({with_errors} with diagnostics, {binary_runs} through the binary) in {:.1} s; slowest {:?}",
        started.elapsed().as_secs_f64(),
        slowest
    );
    if let Err(e) = result {
        panic!("{e}");
    }
    assert!(case >= CASES, "only {case} of {CASES} cases ran");
    assert!(binary_runs >= CASES / BINARY_EVERY, "only {binary_runs} binary runs");
    assert!(with_errors > CASES / 4, "only {with_errors} inputs got diagnostics: the mutations are too mild");
}
