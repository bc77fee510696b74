//! A catalogue of invalid manifests (`tests/fixtures/invalid/NN-name.yaml`), each with
//! exactly one kind of mistake and the diagnostics `tenon validate` must print for it,
//! written at the top of the file as
//!
//! ```text
//! # expect: <line>:<col>: <Kind "name">: <field.path>: <substring of the message>
//! ```
//!
//! For every fixture the real binary runs as `tenon validate <file>` and must exit 2,
//! print `<file>:<expect text>` for every `# expect:` line, print no other diagnostic
//! (the `N error(s)` summary must count exactly the expected ones), and never panic.

mod common;

use std::path::{Path, PathBuf};

use common::{repo_root, tenon, Run};

const EXPECT: &str = "# expect: ";
const MIN_FIXTURES: usize = 35;

fn invalid_dir() -> PathBuf {
    common::fixtures().join("invalid")
}

/// Every `*.yaml` in the catalogue, sorted by name.
fn catalogue() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(invalid_dir())
        .expect("tests/fixtures/invalid exists")
        .map(|e| e.expect("readable directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

/// The `# expect:` lines of the leading comment block of a fixture.
fn expectations(text: &str) -> Vec<String> {
    text.lines()
        .take_while(|l| l.trim_start().starts_with('#') || l.trim().is_empty())
        .filter_map(|l| l.trim_start().strip_prefix(EXPECT))
        .map(|e| e.trim_end().to_string())
        .collect()
}

fn validate(path: &str, extra: &[&str]) -> Run {
    let store = tempfile::tempdir().expect("tempdir");
    let mut args = vec!["validate", path];
    args.extend_from_slice(extra);
    tenon(&args, store.path())
}

/// Check one fixture; `Err` describes every way it failed, with tenon's full stderr.
fn check_fixture(file: &Path) -> Result<(), String> {
    let name = file.file_name().unwrap().to_string_lossy().to_string();
    let text = std::fs::read_to_string(file).map_err(|e| format!("{name}: cannot read: {e}"))?;
    let expects = expectations(&text);
    let path = file.to_str().expect("UTF-8 path").to_string();
    let run = validate(&path, &[]);

    let mut problems = Vec::new();
    if expects.is_empty() {
        problems.push(format!("has no `{EXPECT}` line"));
    }
    if run.code != 2 {
        problems.push(format!("exit code {} (want 2)", run.code));
    }
    if run.stderr.contains("panicked") {
        problems.push("tenon panicked".to_string());
    }
    for e in &expects {
        let want = format!("{path}:{e}");
        if !run.stderr.contains(&want) {
            problems.push(format!("missing diagnostic: {want}"));
        }
    }
    let summary = run.stderr.lines().rev().find(|l| !l.trim().is_empty()).unwrap_or("");
    let want_summary = format!("{} error(s)", expects.len());
    if !expects.is_empty() && summary != want_summary {
        problems.push(format!(
            "summary line is {summary:?}, want {want_summary:?} (one diagnostic per `# expect:` line, nothing else)"
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "--- {name}\n  {}\n  stderr:\n{}\n  stdout:\n{}",
            problems.join("\n  "),
            indent(&run.stderr),
            indent(&run.stdout)
        ))
    }
}

fn indent(s: &str) -> String {
    if s.trim().is_empty() {
        return "    (empty)".to_string();
    }
    s.lines().map(|l| format!("    {l}")).collect::<Vec<_>>().join("\n")
}

#[test]
fn catalogue_is_not_vacuous() {
    let files = catalogue();
    assert!(
        files.len() >= MIN_FIXTURES,
        "only {} fixtures in {}; want at least {MIN_FIXTURES}",
        files.len(),
        invalid_dir().display()
    );
    for f in &files {
        let name = f.file_name().unwrap().to_string_lossy().to_string();
        let ok_name = name.len() > 8
            && name.as_bytes()[..2].iter().all(u8::is_ascii_digit)
            && name.as_bytes()[2] == b'-'
            && name.ends_with(".yaml");
        assert!(ok_name, "{name}: fixtures are named NN-short-name.yaml");
        let text = std::fs::read_to_string(f).unwrap();
        let expects = expectations(&text);
        assert!(!expects.is_empty(), "{name}: no `{EXPECT}` line at the top");
        for e in &expects {
            let mut parts = e.splitn(3, ':');
            let line = parts.next().unwrap_or("");
            let col = parts.next().unwrap_or("");
            assert!(
                line.parse::<usize>().is_ok_and(|n| n > 0) && col.parse::<usize>().is_ok_and(|n| n > 0),
                "{name}: expectation {e:?} does not start with <line>:<col>:"
            );
        }
    }
}

#[test]
fn every_invalid_fixture_reports_its_expected_errors() {
    let files = catalogue();
    assert!(files.len() >= MIN_FIXTURES, "only {} fixtures; want at least {MIN_FIXTURES}", files.len());
    let failures: Vec<String> = files.iter().filter_map(|f| check_fixture(f).err()).collect();
    assert!(failures.is_empty(), "{} of {} fixtures failed:\n\n{}", failures.len(), files.len(), failures.join("\n\n"));
}

#[test]
fn json_report_names_the_first_error_position() {
    let file = invalid_dir().join("11-unknown-runafter.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    let first = expectations(&text).into_iter().next().expect("an expectation");
    let mut parts = first.splitn(3, ':');
    let line: u64 = parts.next().unwrap().parse().unwrap();
    let column: u64 = parts.next().unwrap().parse().unwrap();

    let path = file.to_str().unwrap();
    let run = validate(path, &["--output", "json"]);
    assert_eq!(run.code, 2, "stdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
    assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    let report = run.json();
    assert_eq!(report["apiVersion"], "tenon.dev/v1alpha1", "{report:#}");
    assert_eq!(report["kind"], "ValidationReport", "{report:#}");
    assert_eq!(report["valid"], false, "{report:#}");
    let errors = report["errors"].as_array().unwrap_or_else(|| panic!("no errors array: {report:#}"));
    assert!(!errors.is_empty(), "{report:#}");
    let e = &errors[0];
    assert_eq!(e["file"], path, "{report:#}");
    assert_eq!(e["line"], line, "{report:#}");
    assert_eq!(e["column"], column, "{report:#}");
    assert_eq!(e["object"], "Pipeline \"train\"", "{report:#}");
    assert_eq!(e["field"], "spec.tasks[1].runAfter[0]", "{report:#}");
    assert!(e["message"].as_str().is_some_and(|m| m.contains("(did you mean \"eval\"?)")), "{report:#}");
}

#[test]
fn every_example_validates() {
    let examples = repo_root().join("examples");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&examples)
        .expect("examples/ exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    assert!(!dirs.is_empty(), "no example directories in {}", examples.display());
    let mut failures = Vec::new();
    for d in &dirs {
        let run = validate(d.to_str().unwrap(), &[]);
        if run.code != 0 || !run.stderr.trim().is_empty() || !run.stdout.contains(": valid") {
            failures.push(format!(
                "--- {} (exit {})\n  stdout:\n{}\n  stderr:\n{}",
                d.display(),
                run.code,
                indent(&run.stdout),
                indent(&run.stderr)
            ));
        }
    }
    assert!(failures.is_empty(), "examples that do not validate:\n\n{}", failures.join("\n\n"));
}
