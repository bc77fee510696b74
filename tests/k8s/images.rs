//! Images the in-cluster tests build from this checkout: tenon's own image, made from the
//! `tenon` binary under test with the test cluster's `image` tool (`shared/k8s/image`).
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Command;

/// The folder with the test cluster's `up`, `image` and `ctr` (`TENON_TEST_K8S_DIR`, which
/// `.ci/run` sets); under `CI=true` its absence fails the test instead of skipping it.
pub fn k8s_dir() -> PathBuf {
    match std::env::var_os("TENON_TEST_K8S_DIR") {
        Some(d) if !d.is_empty() => PathBuf::from(d),
        _ => {
            let guess = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/k8s");
            assert!(
                guess.join("image").exists(),
                "TENON_TEST_K8S_DIR is not set and {} has no `image` tool: set it to the test cluster's folder",
                guess.display()
            );
            guess
        }
    }
}

/// Every image name the cluster's containerd holds.
pub fn loaded() -> Vec<String> {
    let out = Command::new(k8s_dir().join("ctr")).args(["images", "ls", "-q"]).output().expect("run ctr");
    assert!(out.status.success(), "ctr images ls: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(String::from).collect()
}

/// tenon's image (`docker.io/local/tenon:t-...`, entrypoint the binary under test), loaded
/// into the cluster unless this very binary's image already is; returns the name pods use.
/// The tag comes from the binary's size and mtime, so a rebuilt binary gets a new image.
pub fn tenon_image() -> String {
    static ONCE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = ONCE.lock().unwrap_or_else(|e| e.into_inner());
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_tenon"));
    let meta = std::fs::metadata(&bin).expect("tenon binary");
    let mtime = meta.modified().unwrap().duration_since(std::time::UNIX_EPOCH).unwrap();
    let tag = format!("t-{}-{}", meta.len(), mtime.as_nanos());
    let full = format!("docker.io/local/tenon:{tag}");
    if !loaded().contains(&full) {
        let out = Command::new(k8s_dir().join("image"))
            .arg(&full)
            .arg("--binary")
            .arg(&bin)
            .output()
            .expect("run the cluster's image tool");
        assert!(
            out.status.success(),
            "loading {full}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // images of earlier builds are 300 MB each: keep only this one
        for old in loaded().iter().filter(|n| n.starts_with("docker.io/local/tenon:t-") && **n != full) {
            let _ = Command::new(k8s_dir().join("ctr")).args(["images", "rm", old]).output();
        }
    }
    format!("local/tenon:{tag}")
}
