//! Every file of Tekton's own examples (`../shared/conformance/tekton-examples`, never
//! copied into this repository) is loaded: it either validates, or every error it gets
//! is a precise "unsupported" rejection. Skips with a message when the corpus is absent.

mod common;

use std::path::PathBuf;

fn corpus() -> Option<PathBuf> {
    let dir = std::env::var_os("TENON_CONFORMANCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| common::repo_root().join("../shared/conformance/tekton-examples"));
    dir.join("INDEX.tsv").is_file().then_some(dir)
}

/// Files upstream itself does not expect to work outside its CI cluster config.
const EXPECTED_INVALID: &[&str] = &[
    // relies on the cluster's default-workspace config (no-ci upstream)
    "v1/taskruns/no-ci/default-workspaces.yaml",
];

#[test]
fn every_upstream_example_parses_or_is_rejected_precisely() {
    let Some(dir) = corpus() else {
        eprintln!("SKIP: Tekton conformance corpus not found (set TENON_CONFORMANCE_DIR or place it at ../shared/conformance/tekton-examples)");
        return;
    };
    let index = std::fs::read_to_string(dir.join("INDEX.tsv")).unwrap();
    let store = tempfile::tempdir().unwrap();
    let mut total = 0;
    let mut valid = 0;
    let mut unsupported = 0;
    let mut problems = Vec::new();
    for line in index.lines().skip(1) {
        let path = line.split('\t').next().unwrap();
        total += 1;
        let file = dir.join(path);
        let r = common::tenon(&["validate", file.to_str().unwrap(), "--output", "json"], store.path());
        assert!(!r.stderr.contains("panicked"), "{path}: tenon panicked:\n{}", r.stderr);
        let report = r.json();
        match r.code {
            0 => {
                assert_eq!(report["valid"], true, "{path}");
                valid += 1;
            }
            2 => {
                let errors = report["errors"].as_array().unwrap();
                assert!(!errors.is_empty(), "{path}: exit 2 without errors");
                for e in errors {
                    // every error names a position, and the object and field where there is one
                    assert!(e["line"].as_u64().unwrap() >= 1 && e["column"].as_u64().unwrap() >= 1, "{path}: {e}");
                }
                let all_unsupported = errors.iter().all(|e| e["message"].as_str().unwrap().starts_with("unsupported"));
                if all_unsupported {
                    unsupported += 1;
                } else if !EXPECTED_INVALID.contains(&path) {
                    problems.push(format!("{path}: {}", r.stderr));
                    problems.push(format!("{path}: {:#}", report["errors"]));
                }
            }
            other => problems.push(format!("{path}: unexpected exit {other}: {}", r.stderr)),
        }
    }
    eprintln!("conformance parse: {total} files, {valid} valid, {unsupported} rejected as unsupported");
    assert_eq!(total, 152, "the corpus INDEX lists 152 files");
    assert!(
        problems.is_empty(),
        "files rejected for reasons other than unsupported features:\n{}",
        problems.join("\n")
    );
    // a floor, so a regression in the parser cannot hide behind "unsupported"
    assert!(valid >= 132, "only {valid} of {total} upstream examples validate");
}
