//! Safety net for refactoring: `tenon plan --output json` and `tenon run --output json`
//! (fresh store, cache on, `--sandbox host`) on the bundled example and a few of Tekton's
//! own examples, compared with the committed snapshots in `tests/snapshots/*.json`.
//! Times, durations, uids, run ids and temp paths are redacted; everything else (statuses,
//! reasons, messages, results, cache keys and reasons, task order) must stay identical.
//!
//! A difference fails the test and prints the first differing lines. After a deliberate
//! behaviour change, regenerate (and review the diff in git) with:
//! `TENON_UPDATE_SNAPSHOTS=1 cargo test --test snapshots` (refused when `CI=true`).
//!
//! The Tekton examples are read from `TENON_CONFORMANCE_DIR` (or
//! `../shared/conformance/tekton-examples`), never copied here; without them those cases
//! are skipped with a message, except under `CI=true`, where that is a failure.

mod common;

use std::path::{Path, PathBuf};

use common::fixture::Fixture;
use serde_json::Value;

/// Tekton examples (paths in the conformance corpus): finally + when + pipeline results,
/// matrix with results, `when` expressions (plain and CEL), onError, retries.
const CONFORMANCE: &[&str] = &[
    "v1/pipelineruns/6139-regression.yaml",
    "v1/pipelineruns/beta/pipelinerun-with-matrix-and-results.yaml",
    "v1/pipelineruns/pipelinerun-with-when-expressions.yaml",
    "v1/pipelineruns/alpha/pipelinerun-with-cel-when-expressions.yaml",
    "v1/pipelineruns/beta/ignore-task-error.yaml",
    "v1/pipelineruns/beta/using-retries-and-retry-count-variables.yaml",
];

fn in_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

fn corpus() -> Option<PathBuf> {
    let dir = std::env::var_os("TENON_CONFORMANCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| common::repo_root().join("../shared/conformance/tekton-examples"));
    dir.join("INDEX.tsv").is_file().then_some(dir)
}

/// `tenon ARGS` (cache on) in `fx`: exit code and the redacted JSON report.
fn report(fx: &Fixture, args: &[&str]) -> Value {
    let r = common::tenon_cached(args, &fx.store);
    let json: Value = serde_json::from_str(&r.stdout)
        .unwrap_or_else(|e| panic!("tenon {args:?}: stdout is not JSON ({e}):\n{}\nstderr:\n{}", r.stdout, r.stderr));
    let mut v = serde_json::json!({ "exitCode": r.code, "report": json });
    redact(&mut v, &fx.root.to_string_lossy());
    v
}

/// Plan, then run, the repository of `fx`.
fn plan_and_run(fx: &Fixture) -> Value {
    let repo = fx.repo_s();
    let plan = report(fx, &["plan", repo, "--output", "json", "--sandbox", "host"]);
    let run = report(fx, &["run", repo, "--output", "json", "-q", "--sandbox", "host"]);
    serde_json::json!({ "plan": plan, "run": run })
}

/// Replace what differs between two identical runs: times, durations, uids, the temp dir,
/// run directories (`runs/<name>/<uid8>`), and how many files were hashed rather than
/// taken from the stat cache (that depends on how long ago the files were written: the
/// racy-clean rule in `src/hash.rs`).
fn redact(v: &mut Value, root: &str) {
    match v {
        Value::Object(m) => {
            for (k, x) in m.iter_mut() {
                if x.is_null() {
                    continue;
                }
                if k.ends_with("At") || k == "startTime" || k == "completionTime" {
                    *x = Value::from("[time]");
                } else if k.ends_with("Ms") || k.ends_with("Seconds") {
                    *x = Value::from("[duration]");
                } else if k == "hashedFiles" || k == "hashedBytes" || k == "fromStatCache" {
                    *x = Value::from("[count]");
                } else if k == "uid" || k == "runId" {
                    *x = Value::from("[uid]");
                } else {
                    redact(x, root);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|x| redact(x, root)),
        Value::String(s) => *s = redact_str(s, root),
        _ => {}
    }
}

fn redact_str(s: &str, root: &str) -> String {
    let s = s.replace(root, "[tmp]");
    // the uid directory of a run: [tmp]/store/runs/<name>/<8 hex>/...
    let mut out: Vec<String> = Vec::new();
    let parts: Vec<&str> = s.split('/').collect();
    for (i, p) in parts.iter().enumerate() {
        let uid_dir = i >= 2 && parts[i - 2] == "runs" && p.len() == 8 && p.bytes().all(|b| b.is_ascii_hexdigit());
        out.push(if uid_dir { "[uid8]".to_string() } else { p.to_string() });
    }
    out.join("/")
}

/// Compare `got` with `tests/snapshots/NAME.json` (or write it in update mode).
fn check(name: &str, got: &Value) {
    let path = common::repo_root().join("tests").join("snapshots").join(format!("{name}.json"));
    let text = serde_json::to_string_pretty(got).unwrap() + "\n";
    if std::env::var("TENON_UPDATE_SNAPSHOTS").as_deref() == Ok("1") {
        assert!(!in_ci(), "TENON_UPDATE_SNAPSHOTS=1 is refused under CI=true: snapshots are never accepted by CI");
        std::fs::write(&path, &text).unwrap();
        eprintln!("wrote {}", path.display());
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "no snapshot {} ({e}); create it with TENON_UPDATE_SNAPSHOTS=1 cargo test --test snapshots",
            path.display()
        )
    });
    if want != text {
        let first = want
            .lines()
            .zip(text.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(want.lines().count().min(text.lines().count()));
        let show = |s: &str| s.lines().skip(first.saturating_sub(3)).take(8).collect::<Vec<_>>().join("\n");
        panic!(
            "{name}: output differs from {} at line {}\n--- snapshot\n{}\n+++ now\n{}\n\nfull output:\n{text}\n\
             If the change is intended: TENON_UPDATE_SNAPSHOTS=1 cargo test --test snapshots, and review the diff.",
            path.display(),
            first + 1,
            show(&want),
            show(&text)
        );
    }
}

#[test]
fn model_promotion_example() {
    let fx = Fixture::with_copy_of(&common::repo_root().join("examples").join("model-promotion"));
    check("model-promotion", &plan_and_run(&fx));
}

fn conformance_case(rel: &str) {
    let Some(dir) = corpus() else {
        assert!(!in_ci(), "CI=true but the Tekton conformance corpus is missing (set TENON_CONFORMANCE_DIR)");
        eprintln!("SKIP {rel}: Tekton conformance corpus not found (set TENON_CONFORMANCE_DIR or place it at ../shared/conformance/tekton-examples)");
        return;
    };
    let fx = Fixture::new();
    std::fs::copy(dir.join(rel), fx.repo.join("example.yaml")).unwrap();
    let name = format!("tekton-{}", Path::new(rel).file_stem().unwrap().to_string_lossy());
    check(&name, &plan_and_run(&fx));
}

#[test]
fn tekton_examples() {
    for rel in CONFORMANCE {
        conformance_case(rel);
    }
}
