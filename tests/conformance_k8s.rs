//! Tekton's own examples through `--executor kubernetes`, on pods of the test cluster: the
//! files `conformance_run.rs` runs locally, judged the same way, where every image they name
//! is on the cluster (the stand-ins of `tests/k8s/make-images.sh`); the others are listed as
//! unsupported with the image that is missing (and so are files that hit a documented limit
//! of the executor, `unsupported by the kubernetes executor`). `persistentVolumeClaim`
//! workspaces use `--k8s-copy-pvc`, as the local executor does. Files listed in
//! `tests/conformance/expected-pass-k8s.txt` must keep passing. Needs `TENON_TEST_KUBECONFIG`
//! (skips, saying so, without it; fails under `CI=true`).
//!
//! Regenerate `tests/conformance/RESULTS-k8s.md` with:
//! `TENON_WRITE_CONFORMANCE=1 cargo test --test conformance_k8s -- --nocapture`

#[path = "k8s/cluster.rs"]
mod cluster;
mod common;
#[path = "conformance/harness.rs"]
mod harness;

use std::path::Path;
use std::time::Instant;

use harness::{corpus, publish_and_check, run_all, run_file, Outcome, Row};

/// The first image `file` names that the cluster does not have (`$(…)` references are
/// resolved at run time: they are not judged here).
fn missing_image(file: &Path, on_cluster: &[String]) -> Option<String> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    text.lines()
        .filter_map(|l| l.trim_start().trim_start_matches("- ").strip_prefix("image:"))
        .map(|v| v.trim().trim_matches(|c| c == '"' || c == '\'').to_string())
        .filter(|v| !v.is_empty() && !v.contains("$("))
        .find(|v| !on_cluster.contains(&tenon::exec::common::normalize_image(v)))
}

#[test]
fn tekton_examples_on_pods() {
    let Some(kc) = cluster::test_kubeconfig("tekton_examples_on_pods") else { return };
    let Some(dir) = corpus() else {
        panic!("the Tekton conformance corpus is needed with a test cluster (set TENON_CONFORMANCE_DIR)");
    };
    let cluster = cluster::Namespaced::new(kc, "tenon-conformance", &["docker.io/library/alpine:latest"]);
    let images = cluster.images();
    // a persistentVolumeClaim workspace uses `<store>/pvc/<claim>` as the local executor does
    // (the examples' PVC objects are not applied to the cluster)
    let mut flags = cluster.flags();
    flags.push("--k8s-copy-pvc".into());
    let t0 = Instant::now();
    let results = run_all(harness::rows(&dir), 4, |row: &Row| {
        let runs = row.local_runnable || row.needs.split(',').all(|n| n == "image-entrypoint");
        match missing_image(&dir.join(&row.path), &images).filter(|_| runs) {
            Some(image) => Outcome {
                row: row.clone(),
                parsed: true,
                ran: false,
                got: String::new(),
                verdict: "unsupported",
                why: format!("image {image} has no stand-in on the test cluster"),
            },
            None => {
                let mut o = run_file(&dir, row, &flags);
                // a documented limit of the executor, named in its error
                if o.verdict == "fail" && o.why.contains("unsupported by the kubernetes executor") {
                    o.verdict = "unsupported";
                }
                o
            }
        }
    });
    let summary = harness::summary(&results);
    eprintln!("conformance on pods: {summary} ({:.0} s)", t0.elapsed().as_secs_f64());
    publish_and_check(
        &results,
        "upstream examples run with the Kubernetes executor (pods of the test cluster)",
        "TENON_WRITE_CONFORMANCE=1 cargo test --test conformance_k8s -- --nocapture",
        &summary,
        "RESULTS-k8s.md",
        "expected-pass-k8s.txt",
        90,
    );
}
