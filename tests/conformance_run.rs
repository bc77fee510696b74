//! Tekton's own examples, run with the local executor and compared with the outcome
//! upstream expects (`INDEX.tsv` in `../shared/conformance/tekton-examples`, never copied
//! here). Files listed in `tests/conformance/expected-pass.txt` must keep passing;
//! `conformance_k8s.rs` runs the same files on pods.
//!
//! Regenerate `tests/conformance/RESULTS.md` (and see what newly passes) with:
//! `TENON_WRITE_CONFORMANCE=1 cargo test --test conformance_run -- --nocapture`

mod common;
#[path = "conformance/harness.rs"]
mod harness;

use harness::{corpus, publish_and_check, run_all, run_file};

#[test]
fn tekton_examples_run_as_upstream_expects() {
    let Some(dir) = corpus() else {
        eprintln!("SKIP: Tekton conformance corpus not found (set TENON_CONFORMANCE_DIR or place it at ../shared/conformance/tekton-examples)");
        return;
    };
    let results = run_all(harness::rows(&dir), 2, |row| run_file(&dir, row, &[]));
    let summary = harness::summary(&results);
    eprintln!("conformance: {summary}");

    publish_and_check(
        &results,
        "upstream examples run with the local executor",
        "TENON_WRITE_CONFORMANCE=1 cargo test --test conformance_run -- --nocapture",
        &summary,
        "RESULTS.md",
        "expected-pass.txt",
        90,
    );
}
