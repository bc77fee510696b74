//! The shared Tekton semantics table (`tests/behaviour/cases.rs`, which `run_behaviour.rs`
//! runs with the local executor) on pods of the test cluster: the same manifests, flags and
//! checks, with `--executor kubernetes` (budgets marked `# longer on pods` ×12: a pod needs
//! seconds to start where a process needs milliseconds). Needs `TENON_TEST_KUBECONFIG` and
//! the stand-in images of `tests/k8s/make-images.sh`; without the kubeconfig it prints that
//! it skipped, except under CI (`CI=true`), where a missing cluster fails the test.

#[path = "behaviour/cases.rs"]
mod cases;
mod common;

#[path = "k8s/cluster.rs"]
mod cluster;

#[test]
fn shared_cases_on_pods() {
    let Some(kc) = cluster::test_kubeconfig("shared_cases_on_pods") else { return };
    let cluster = cluster::Namespaced::new(
        kc,
        "tenon-behaviour",
        &["docker.io/library/alpine:latest", "docker.io/library/busybox:latest"],
    );
    cases::run_table("kubernetes", &cluster.flags(), 4, 12);
}
