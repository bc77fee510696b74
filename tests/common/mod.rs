//! Shared helpers for the integration tests: run the real `tenon` binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// A real OCI registry (Debian's docker-registry) for the registry client's tests.
pub mod registry;

/// The temp repo + store + scratch layout most tests start from.
pub mod fixture;

pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_tenon"))
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixtures() -> PathBuf {
    repo_root().join("tests").join("fixtures")
}

/// The result of one `tenon` invocation.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!("stdout is not one JSON document ({e}):\n{}\nstderr:\n{}", self.stdout, self.stderr)
        })
    }
}

impl From<Output> for Run {
    fn from(o: Output) -> Self {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).to_string(),
            stderr: String::from_utf8_lossy(&o.stderr).to_string(),
        }
    }
}

/// `tenon ARGS` with a private state directory (`TENON_STORE`) and a clean environment
/// apart from PATH/HOME.
pub fn tenon_command(args: &[&str], store: &Path) -> Command {
    let mut cmd = Command::new(bin());
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", store)
        .env("TENON_STORE", store)
        .env("NO_COLOR", "1");
    cmd
}

/// Run `tenon ARGS` with the cache off: most tests are about Tekton semantics, where
/// identical tasks must really run (the cache has its own tests, using `tenon_cached`).
pub fn tenon(args: &[&str], store: &Path) -> Run {
    tenon_command(args, store).env("TENON_NO_CACHE", "true").output().expect("tenon runs").into()
}

/// Run `tenon ARGS` with the cache enabled.
pub fn tenon_cached(args: &[&str], store: &Path) -> Run {
    tenon_command(args, store).output().expect("tenon runs").into()
}

/// Write `yaml` into a fresh temp dir as `pipeline.yaml` and run it with `--output json`.
/// Returns (run, the temp dir guard).
pub fn run_yaml(yaml: &str, extra: &[&str]) -> (Run, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(dir.path().join("pipeline.yaml"), yaml).expect("write");
    let store = dir.path().join(".store");
    let d = dir.path().to_str().unwrap().to_string();
    let mut args = vec!["run", d.as_str(), "--output", "json", "-q"];
    args.extend_from_slice(extra);
    let r = tenon(&args, &store);
    (r, dir)
}

/// The task entry named `name` in the first run of a RunReport.
pub fn task<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["runs"][0]["tasks"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["name"] == name))
        .unwrap_or_else(|| panic!("no task {name} in report: {report:#}"))
}

/// An unencrypted Ed25519 key pair `DIR/NAME` (private, `.pub`), made by `ssh-keygen`.
pub fn keygen(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let key = dir.join(name);
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&key)
        .status()
        .expect("ssh-keygen (openssh-client) is installed");
    assert!(st.success());
    (key.clone(), key.with_extension("pub"))
}
