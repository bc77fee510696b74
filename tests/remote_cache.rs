//! The shared cache (`--cache-repo`) end to end: the real `tenon` binary against Debian's
//! `docker-registry` (Distribution 2.8.2) on 127.0.0.1, started per test with a temporary
//! config (tests/common/registry.rs). "Machines" are separate repository copies (at other
//! paths) with separate stores. Steps run on the host (`--sandbox host`) so they can append
//! to a log outside the sandbox: the log says which tasks really ran.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::registry::{Registry, Variant};
use common::{keygen, task, tenon_command, Run};
use serde_json::Value;

const PIPELINE: &str = r##"
apiVersion: tekton.dev/v1
kind: Task
metadata:
  name: maker
  annotations:
    tenon.dev/inputs: "src/"
    tenon.dev/outputs: "work:out/"
spec:
  workspaces:
    - name: source
      readOnly: true
    - name: work
  steps:
    - name: s
      image: alpine
      script: |
        set -e
        echo make >> "$TASK_LOG"
        o="$(workspaces.work.path)/out"
        mkdir -p "$o/many"
        cp "$(workspaces.source.path)/src/in.txt" "$o/small.txt"
        # 3 MiB: its own blob in the registry
        { head -c 3145728 /dev/zero | tr '\0' 'x'; cat "$(workspaces.source.path)/src/in.txt"; } > "$o/big.bin"
        for i in $(seq 1 @MANY@); do printf 'file %s\n' "$i" > "$o/many/f$i.txt"; done
        ln -s small.txt "$o/link"
        chmod +x "$o/small.txt"
---
apiVersion: tekton.dev/v1
kind: Task
metadata:
  name: user
  annotations:
    tenon.dev/inputs: "src/"
spec:
  workspaces:
    - name: source
      readOnly: true
    - name: work
      readOnly: true
  results:
    - name: sum
  steps:
    - name: s
      image: alpine
      script: |
        set -e
        echo use >> "$TASK_LOG"
        sha256sum "$(workspaces.work.path)/out/big.bin" | cut -c1-64 | tr -d '\n' > "$(results.sum.path)"
---
apiVersion: tekton.dev/v1
kind: Pipeline
metadata:
  name: shared
spec:
  workspaces:
    - name: source
    - name: work
  results:
    - name: sum
      value: $(tasks.use.results.sum)
  tasks:
    - name: make
      taskRef:
        name: maker
      workspaces:
        - name: source
          workspace: source
        - name: work
          workspace: work
    - name: use
      runAfter: [make]
      taskRef:
        name: user
      workspaces:
        - name: source
          workspace: source
        - name: work
          workspace: work
---
apiVersion: tekton.dev/v1
kind: PipelineRun
metadata:
  name: shared-run
  annotations:
    tenon.dev/repo-workspace: source
spec:
  pipelineRef:
    name: shared
  workspaces:
    - name: source
      emptyDir: {}
    - name: work
      volumeClaimTemplate:
        spec:
          accessModes: [ReadWriteOnce]
          resources:
            requests:
              storage: 16Mi
"##;

/// One "machine": its own copy of the repository (at its own path), store and task log.
struct Machine {
    repo: PathBuf,
    store: PathBuf,
    log: PathBuf,
}

struct World {
    tmp: tempfile::TempDir,
    many: usize,
}

impl World {
    fn new() -> World {
        World::with_many(20)
    }

    fn with_many(many: usize) -> World {
        World { tmp: tempfile::tempdir().expect("tempdir"), many }
    }

    /// A machine named `name` with the repository at revision `input`.
    fn machine(&self, name: &str, input: &str) -> Machine {
        let root = self.tmp.path().canonicalize().unwrap().join(name);
        let (repo, store) = (root.join("repo"), root.join("store"));
        std::fs::create_dir_all(repo.join("src")).unwrap();
        std::fs::create_dir_all(&store).unwrap();
        let log = root.join("tasks.log");
        let yaml = PIPELINE.replace("@MANY@", &self.many.to_string());
        std::fs::write(repo.join("pipeline.yaml"), yaml).unwrap();
        std::fs::write(repo.join("src/in.txt"), input).unwrap();
        Machine { repo, store, log }
    }
}

impl Machine {
    /// `tenon ARGS` on this machine; steps append to its task log (`$TASK_LOG`, passed
    /// through: the scripts, hence the keys, are the same on every machine).
    fn tenon(&self, args: &[&str]) -> Run {
        tenon_command(args, &self.store).env("TASK_LOG", &self.log).output().expect("tenon runs").into()
    }

    /// `tenon run REPO --output json -q --sandbox host EXTRA…`, which must exit `code`.
    #[track_caller]
    fn run(&self, extra: &[&str], code: i32) -> (Run, Value) {
        let d = self.repo.to_str().unwrap().to_string();
        let mut args = vec!["run", d.as_str(), "--output", "json", "-q", "--sandbox", "host", "--pass-env", "TASK_LOG"];
        args.extend_from_slice(extra);
        let r = self.tenon(&args);
        assert_eq!(r.code, code, "tenon run {extra:?}\nstdout: {}\nstderr: {}", r.stdout, r.stderr);
        let v = r.json();
        (r, v)
    }

    #[track_caller]
    fn plan(&self, extra: &[&str]) -> Value {
        let d = self.repo.to_str().unwrap().to_string();
        let mut args = vec!["plan", d.as_str(), "--output", "json", "--sandbox", "host"];
        args.extend_from_slice(extra);
        let r = self.tenon(&args);
        assert_eq!(r.code, 0, "tenon plan\nstdout: {}\nstderr: {}", r.stdout, r.stderr);
        r.json()
    }

    /// The tasks that really ran, in order.
    fn ran(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log).unwrap_or_default().lines().map(String::from).collect()
    }

    fn clear_log(&self) {
        let _ = std::fs::remove_file(&self.log);
    }

    /// Every restored or produced copy of `name` under the store's run directories.
    fn outputs_named(&self, name: &str) -> Vec<PathBuf> {
        let mut out = Vec::new();
        walk(&self.store, &mut |p| {
            if p.file_name().is_some_and(|n| n == name) && !p.components().any(|c| c.as_os_str() == "cache") {
                out.push(p.to_path_buf());
            }
        });
        out
    }
}

fn walk(dir: &Path, f: &mut dyn FnMut(&Path)) {
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        let ft = e.file_type().unwrap();
        if ft.is_dir() {
            walk(&p, f);
        } else {
            f(&p);
        }
    }
}

fn sha256_file(p: &Path) -> String {
    use sha2::{Digest, Sha256};
    format!("{:x}", Sha256::digest(std::fs::read(p).unwrap()))
}

fn statuses(report: &Value) -> Vec<(String, String)> {
    report["runs"][0]["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["name"].as_str().unwrap().to_string(), t["status"].as_str().unwrap().to_string()))
        .collect()
}

fn remote(report: &Value) -> &Value {
    &report["remoteCache"]
}

/// Lines of stderr that are warnings about the shared cache.
fn remote_warnings(r: &Run) -> Vec<String> {
    r.stderr.lines().filter(|l| l.contains("remote cache")).map(String::from).collect()
}

fn start() -> Option<Registry> {
    Registry::start(Variant::Plain)
}

/// A registry, and machine A's first run (pushing to `tenon/cache` on it), with `many` small
/// files in make's output: (registry, its `tenon/cache` URL, the world, A, A's report).
fn pushed_by_a(many: usize) -> Option<(Registry, String, World, Machine, Value)> {
    let reg = start()?;
    let url = reg.url("tenon/cache");
    let w = World::with_many(many);
    let a = w.machine("a", "v1\n");
    let (_, ra) = a.run(&["--cache-repo", &url], 0);
    Some((reg, url, w, a, ra))
}

#[test]
fn a_second_machine_with_an_empty_store_gets_every_task_cached_with_identical_outputs() {
    let Some((reg, url, w, a, ra)) = pushed_by_a(20) else { return };
    assert_eq!(a.ran(), ["make", "use"]);
    assert_eq!(remote(&ra)["published"], 2, "{:#}", remote(&ra));
    assert!(remote(&ra)["bytesOut"].as_u64().unwrap() > 3 << 20, "{:#}", remote(&ra));

    // machine B: another path, an empty store
    let b = w.machine("b", "v1\n");
    let plan = b.plan(&["--cache-repo", &url]);
    for t in plan["runs"][0]["tasks"].as_array().unwrap() {
        assert_eq!(t["decision"], "cached", "{t:#}");
        let why = t["reasons"][0].as_str().unwrap();
        assert!(why.starts_with("cached: produced by shared-run ("), "{why}");
        assert!(why.contains(&format!("from {url}")), "{why}");
    }
    let (rb_run, rb) = b.run(&["--cache-repo", &url], 0);
    assert_eq!(b.ran(), Vec::<String>::new(), "no task may run on B: {}", rb_run.stderr);
    assert_eq!(statuses(&rb), [("make".into(), "Cached".into()), ("use".into(), "Cached".into())]);
    let from = &task(&rb, "make")["cachedFrom"]["remote"];
    assert!(from.as_str().unwrap().contains(&url), "{from}");
    assert_eq!(rb["runs"][0]["results"], ra["runs"][0]["results"]);
    assert_eq!(remote(&rb)["hits"], 2, "{:#}", remote(&rb));
    assert_eq!(remote(&rb)["published"], 0);
    assert!(remote(&rb)["bytesIn"].as_u64().unwrap() > 3 << 20);
    // the outputs are restored byte-identical, with the exec bit and the symlink
    for name in ["big.bin", "small.txt", "f7.txt"] {
        let (oa, ob) = (a.outputs_named(name), b.outputs_named(name));
        assert!(!oa.is_empty() && !ob.is_empty(), "{name}: {oa:?} {ob:?}");
        assert_eq!(sha256_file(&oa[0]), sha256_file(&ob[0]), "{name}");
    }
    let small = &b.outputs_named("small.txt")[0];
    use std::os::unix::fs::PermissionsExt;
    assert!(std::fs::metadata(small).unwrap().permissions().mode() & 0o100 != 0);
    let link = small.with_file_name("link");
    assert_eq!(std::fs::read_link(&link).unwrap(), Path::new("small.txt"));
    // B's store now has them: a run without the registry is all local hits
    let (_, again) = b.run(&[], 0);
    assert_eq!(statuses(&again), [("make".into(), "Cached".into()), ("use".into(), "Cached".into())]);
    assert!(b.tenon(&["cache", "verify"]).stdout.contains(", 0 corrupt"));
    // nothing was pushed by B (first writer wins: the tags existed)
    assert_eq!(reg.count_requests("PUT", "/manifests/"), 2);
}

#[test]
fn a_flipped_byte_in_a_stored_blob_is_detected_and_the_task_reruns() {
    let Some((reg, url, w, a, _)) = pushed_by_a(20) else { return };
    let big = &a.outputs_named("big.bin")[0];
    let hex = sha256_file(big);
    let data = reg.blob_data(&hex);
    let mut bytes = std::fs::read(&data).expect("the big output is its own blob");
    bytes[1000] ^= 1;
    std::fs::write(&data, bytes).unwrap();

    let b = w.machine("b", "v1\n");
    let (r, rb) = b.run(&["--cache-repo", &url], 0);
    assert_eq!(b.ran(), ["make"], "make reruns; use is then a hit from the registry: {}", r.stderr);
    assert_eq!(task(&rb, "make")["status"], "Succeeded");
    assert_eq!(task(&rb, "use")["status"], "Cached");
    let warns = remote_warnings(&r);
    assert!(
        warns.iter().any(|l| l.contains("does not match its digest") && l.contains(&hex)),
        "a warning names the digest: {warns:?}"
    );
    assert!(remote(&rb)["errors"].as_u64().unwrap() >= 1);
    assert_eq!(sha256_file(&b.outputs_named("big.bin")[0]), hex);
    let v = b.tenon(&["cache", "verify"]);
    assert!(v.stdout.contains(", 0 corrupt"), "{}", v.stdout);
}

#[test]
fn a_record_retagged_under_another_key_is_a_miss() {
    let Some((_reg, url, w, _a, ra)) = pushed_by_a(20) else { return };
    let key_make = task(&ra, "make")["cacheKey"].as_str().unwrap().to_string();
    let key_use = task(&ra, "use")["cacheKey"].as_str().unwrap().to_string();
    // put make's manifest under use's tag: a registry writer lying about a key
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let client = tenon::oci::Client::new(
            tenon::oci::RepoUrl::parse(&url).unwrap(),
            tenon::oci::ClientConfig { credentials: tenon::oci::CredentialSource::Anonymous, ..Default::default() },
        )
        .unwrap();
        let m = client
            .get_manifest(&tenon::oci::ManifestRef::tag(&format!("r1-{key_make}")).unwrap())
            .await
            .unwrap()
            .unwrap();
        client
            .put_manifest(&tenon::oci::ManifestRef::tag(&format!("r1-{key_use}")).unwrap(), &m.media_type, m.bytes)
            .await
            .unwrap();
    });
    let b = w.machine("b", "v1\n");
    let (r, rb) = b.run(&["--cache-repo", &url], 0);
    assert_eq!(b.ran(), ["use"], "{}", r.stderr);
    assert_eq!(task(&rb, "make")["status"], "Cached");
    let warns = remote_warnings(&r);
    assert!(warns.iter().any(|l| l.contains(&format!("r1-{key_use}")) && l.contains("tagged as")), "{warns:?}");
}

#[test]
fn signed_records_are_used_only_with_the_right_key() {
    let Some(reg) = start() else { return };
    let w = World::new();
    let keys = w.tmp.path().join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let (k1, k1_pub) = keygen(&keys, "ci");
    let (_, k2_pub) = keygen(&keys, "other");
    let (signed, unsigned) = (reg.url("tenon/signed"), reg.url("tenon/unsigned"));
    let a = w.machine("a", "v1\n");
    a.run(&["--cache-repo", &signed, "--cache-sign-key", k1.to_str().unwrap()], 0);
    a.run(&["--cache-repo", &unsigned, "--rerun", "make", "--rerun", "use"], 0);
    // wrong key: both records ignored, with a warning naming them; the tasks run
    let b = w.machine("b", "v1\n");
    let (r, rb) = b.run(&["--cache-repo", &signed, "--cache-verify-key", k2_pub.to_str().unwrap()], 0);
    assert_eq!(b.ran(), ["make", "use"], "{}", r.stderr);
    let warns = remote_warnings(&r);
    assert!(warns.iter().any(|l| l.contains("r1-") && l.contains("signature")), "{warns:?}");
    assert_eq!(remote(&rb)["hits"], 0);
    // unsigned records under a verify key are ignored too
    let c = w.machine("c", "v1\n");
    let (r, _) =
        c.run(&["--cache-repo", &unsigned, "--cache-verify-key", k1_pub.to_str().unwrap(), "--cache-read-only"], 0);
    assert_eq!(c.ran(), ["make", "use"], "{}", r.stderr);
    assert!(remote_warnings(&r).iter().any(|l| l.contains("not signed")), "{}", r.stderr);
    // the right key: hits
    let d = w.machine("d", "v1\n");
    let (r, rd) = d.run(&["--cache-repo", &signed, "--cache-verify-key", k1_pub.to_str().unwrap()], 0);
    assert_eq!(d.ran(), Vec::<String>::new(), "{}", r.stderr);
    assert_eq!(remote(&rd)["hits"], 2);
    // ls --remote says which records are signed
    let ls = d.tenon(&["cache", "ls", "--remote", "--cache-repo", &signed, "--output", "json"]);
    let v = ls.json();
    assert_eq!(v["records"].as_array().unwrap().len(), 2, "{v:#}");
    assert!(v["records"].as_array().unwrap().iter().all(|r| r["signed"] == true));
}

#[test]
fn read_only_mode_never_writes() {
    let Some(reg) = start() else { return };
    let ro = reg.read_only_twin();
    let w = World::new();
    let a = w.machine("a", "v1\n");
    a.run(&["--cache-repo", &reg.url("tenon/cache")], 0);
    // B changes its input: one miss; --cache-read-only (and ?mode=ro) never write
    let b = w.machine("b", "v2\n");
    for url in [format!("{}?mode=ro", ro.url("tenon/cache")), ro.url("tenon/cache")] {
        b.clear_log();
        let (r, rb) = b.run(&["--cache-repo", &url, "--cache-read-only", "--no-cache"], 0);
        assert_eq!(b.ran(), ["make", "use"]);
        let warns = remote_warnings(&r);
        assert_eq!(warns.len(), 1, "{warns:?}");
        assert!(warns[0].contains("not publishing (read-only)"), "{warns:?}");
        assert_eq!(remote(&rb)["published"], 0);
    }
    let writes: Vec<_> = ro.requests().into_iter().filter(|(m, _, _)| !matches!(m.as_str(), "GET" | "HEAD")).collect();
    assert!(writes.is_empty(), "the read-only client wrote: {writes:?}");
    // without the flag, the read-only registry refuses (405): one warning, exit 0
    let c = w.machine("c", "v3\n");
    let (r, rc) = c.run(&["--cache-repo", &ro.url("tenon/cache")], 0);
    let warns = remote_warnings(&r);
    assert_eq!(warns.len(), 1, "{warns:?}");
    assert!(warns[0].contains("cannot publish") && warns[0].contains("405"), "{warns:?}");
    assert_eq!(remote(&rc)["published"], 0);
}

#[test]
fn auth_failures_warn_once_and_never_print_the_credential() {
    let password = "pa55-w0rd-never-shown";
    let Some(reg) = Registry::start(Variant::TlsHtpasswd { user: "ci".into(), password: password.into() }) else {
        return;
    };
    let url = reg.url("tenon/cache");
    let w = World::new();
    let creds = w.tmp.path().join("docker-config.json");
    let b64 = |u: &str, p: &str| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))
    };
    let auth = |u: &str, p: &str| {
        serde_json::json!({"auths": {format!("127.0.0.1:{}", reg.port): {"auth": b64(u, p)}}}).to_string()
    };
    let ca = reg.ca_file();
    let a = w.machine("a", "v1\n");
    // a wrong password
    std::fs::write(&creds, auth("ci", "wrong-s3cret-value")).unwrap();
    let common = ["--cache-repo", &url, "--cache-ca-file", ca.to_str().unwrap(), "--cache-credentials-file"];
    let mut args: Vec<&str> = common.to_vec();
    args.push(creds.to_str().unwrap());
    let (r, ra) = a.run(&args, 0);
    assert_eq!(a.ran(), ["make", "use"]);
    let warns = remote_warnings(&r);
    assert_eq!(warns.len(), 1, "exactly one warning: {warns:?}");
    assert!(warns[0].contains("401"), "{warns:?}");
    for text in [&r.stdout, &r.stderr] {
        assert!(!text.contains("wrong-s3cret-value") && !text.contains(password));
        assert!(!text.contains(&b64("ci", "wrong-s3cret-value")), "no base64 of the credential either");
    }
    assert_eq!(remote(&ra)["unavailable"], true);
    // the right one: published over TLS with the test CA
    std::fs::write(&creds, auth("ci", password)).unwrap();
    let (r, ra) = a.run(&[&args[..], &["--rerun", "make", "--rerun", "use"]].concat(), 0);
    assert_eq!(remote(&ra)["published"], 2, "{}", r.stderr);
    assert!(!r.stderr.contains(password) && !r.stdout.contains(password));
    let b = w.machine("b", "v1\n");
    let (_, rb) = b.run(&args, 0);
    assert_eq!(b.ran(), Vec::<String>::new());
    assert_eq!(remote(&rb)["hits"], 2);
}

#[test]
fn an_unreachable_registry_is_one_warning_and_the_run_goes_on() {
    // a port nothing listens on
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("oci+http://127.0.0.1:{port}/tenon/cache");
    let w = World::new();
    let a = w.machine("a", "v1\n");
    let (r, ra) = a.run(&["--cache-repo", &url], 0);
    assert_eq!(a.ran(), ["make", "use"]);
    let warns = remote_warnings(&r);
    assert_eq!(warns.len(), 1, "{warns:?}");
    assert!(warns[0].contains("unavailable") && warns[0].contains(&url), "{warns:?}");
    assert_eq!(remote(&ra)["unavailable"], true);
    assert_eq!(statuses(&ra), [("make".into(), "Succeeded".into()), ("use".into(), "Succeeded".into())]);
    // the local store still caches
    let (_, again) = a.run(&["--cache-repo", &url], 0);
    assert_eq!(statuses(&again), [("make".into(), "Cached".into()), ("use".into(), "Cached".into())]);
}

#[test]
fn push_pull_ls_and_gc_of_the_shared_cache() {
    let Some(reg) = start() else { return };
    let url = reg.url("tenon/cache");
    let w = World::new();
    let a = w.machine("a", "v1\n");
    a.run(&[], 0);
    let push = a.tenon(&["cache", "push", "--cache-repo", &url, "--output", "json"]);
    assert_eq!(push.code, 0, "{}{}", push.stdout, push.stderr);
    let pv = push.json();
    assert_eq!(pv["records"], 2, "{pv:#}");
    assert_eq!(pv["inRegistry"], 2);
    let ls = a.tenon(&["cache", "ls", "--remote", "--cache-repo", &url, "--output", "json"]);
    let lv = ls.json();
    let tasks: Vec<&str> = lv["records"].as_array().unwrap().iter().map(|r| r["task"].as_str().unwrap()).collect();
    assert_eq!(tasks.len(), 2, "{lv:#}");
    assert!(tasks.contains(&"make") && tasks.contains(&"use"));

    let b = w.machine("b", "v1\n");
    let d = b.repo.to_str().unwrap().to_string();
    let pull = b.tenon(&["cache", "pull", &d, "--cache-repo", &url, "--sandbox", "host", "--output", "json"]);
    assert_eq!(pull.code, 0, "{}{}", pull.stdout, pull.stderr);
    assert_eq!(pull.json()["cached"], 2, "{}", pull.stdout);
    let (_, rb) = b.run(&[], 0);
    assert_eq!(b.ran(), Vec::<String>::new());
    assert_eq!(statuses(&rb), [("make".into(), "Cached".into()), ("use".into(), "Cached".into())]);

    // gc: A's store protects its latest run's records; a store that protects nothing deletes all
    let gc = a.tenon(&["cache", "gc", "--remote", "--older-than", "0s", "--cache-repo", &url, "--output", "json"]);
    assert_eq!(gc.json()["deletedRecords"].as_array().unwrap().len(), 0, "{}", gc.stdout);
    let c = w.machine("c", "v1\n");
    let gc = c.tenon(&["cache", "gc", "--remote", "--older-than", "0s", "--cache-repo", &url, "--output", "json"]);
    assert_eq!(gc.json()["deletedRecords"].as_array().unwrap().len(), 2, "{}", gc.stdout);
    let ls = a.tenon(&["cache", "ls", "--remote", "--cache-repo", &url, "--output", "json"]);
    assert_eq!(ls.json()["records"].as_array().unwrap().len(), 0);
    assert_eq!(reg.count_requests("DELETE", "/manifests/sha256:"), 2);
}

#[test]
fn many_small_files_travel_as_one_pack() {
    let Some((reg, url, w, _, _)) = pushed_by_a(2000) else { return };
    // make: one pack + big.bin + config + manifest; use: config (+ the empty layer)
    let uploads = reg.count_requests("POST", "/blobs/uploads/");
    assert!(uploads <= 6, "{uploads} blob uploads for 2,000 small files");
    let b = w.machine("b", "v1\n");
    let (_, rb) = b.run(&["--cache-repo", &url], 0);
    assert_eq!(b.ran(), Vec::<String>::new());
    assert_eq!(remote(&rb)["hits"], 2);
    assert_eq!(b.outputs_named("f1999.txt").len(), 1);
    assert_eq!(std::fs::read_to_string(&b.outputs_named("f1999.txt")[0]).unwrap(), "file 1999\n");
}

#[test]
fn the_same_outputs_again_upload_no_blob() {
    let Some((reg, url, _w, a, _)) = pushed_by_a(20) else { return };
    let before = reg.count_requests("PUT", "/blobs/uploads/");
    // a spec change that leaves make's outputs identical: a new key, the same blobs
    let p = a.repo.join("pipeline.yaml");
    std::fs::write(&p, std::fs::read_to_string(&p).unwrap().replace("echo make >>", "echo make  >>")).unwrap();
    let (_, ra) = a.run(&["--cache-repo", &url], 0);
    assert_eq!(remote(&ra)["published"], 1, "{:#}", remote(&ra));
    let after = reg.count_requests("PUT", "/blobs/uploads/");
    // only the new config blob is uploaded: the objects and the pack exist (HEAD 200)
    assert_eq!(after - before, 1, "blob uploads for a record whose outputs are unchanged");
}

/// A loopback proxy in front of the registry that cuts blob downloads of `digest` short:
/// each request travels on its own connection (`Connection: close` is forced), and a GET of
/// that blob gets only its first `keep` response bytes before the connection drops.
/// `times`: how many such downloads are cut (then it passes everything).
struct CuttingProxy {
    port: u16,
    cut: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl CuttingProxy {
    fn start(upstream: u16, digest: String, keep: usize, times: usize) -> CuttingProxy {
        use std::io::{Read, Write};
        use std::net::{TcpListener, TcpStream};
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let cut = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let cut2 = cut.clone();
        std::thread::spawn(move || {
            for client in l.incoming().flatten() {
                let (digest, cut) = (digest.clone(), cut2.clone());
                std::thread::spawn(move || {
                    let mut client = client;
                    // the request head
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        match client.read(&mut byte) {
                            Ok(1) => head.push(byte[0]),
                            _ => return,
                        }
                    }
                    let text = String::from_utf8_lossy(&head).to_string();
                    let first = text.lines().next().unwrap_or("").to_string();
                    let mut lines: Vec<&str> =
                        text.split("\r\n").filter(|l| !l.to_ascii_lowercase().starts_with("connection:")).collect();
                    lines.retain(|l| !l.is_empty());
                    let head = format!("{}\r\nConnection: close\r\n\r\n", lines.join("\r\n"));
                    let Ok(mut up) = TcpStream::connect(("127.0.0.1", upstream)) else { return };
                    let _ = up.write_all(head.as_bytes());
                    let mut up_r = up.try_clone().unwrap();
                    let mut client_w = client.try_clone().unwrap();
                    // request body (uploads) upstream, response back
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut client, &mut up);
                    });
                    let victim = first.starts_with("GET ") && first.contains(&format!("/blobs/{digest}"));
                    if victim && cut.load(std::sync::atomic::Ordering::SeqCst) < times {
                        cut.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let mut buf = vec![0u8; keep];
                        let mut got = 0;
                        while got < keep {
                            match up_r.read(&mut buf[got..]) {
                                Ok(0) | Err(_) => break,
                                Ok(n) => got += n,
                            }
                        }
                        let _ = client_w.write_all(&buf[..got]);
                        let _ = client_w.shutdown(std::net::Shutdown::Both);
                        let _ = up_r.shutdown(std::net::Shutdown::Both);
                    } else {
                        let _ = std::io::copy(&mut up_r, &mut client_w);
                        let _ = client_w.shutdown(std::net::Shutdown::Both);
                    }
                });
            }
        });
        CuttingProxy { port, cut }
    }

    fn url(&self, repo: &str) -> String {
        format!("oci+http://127.0.0.1:{}/{repo}", self.port)
    }
}

#[test]
fn a_cut_download_resumes_and_one_that_never_completes_falls_back_to_running() {
    let Some((reg, _, w, a, _)) = pushed_by_a(20) else { return };
    let hex = sha256_file(&a.outputs_named("big.bin")[0]);
    // cut once, 1 MiB in: the download resumes from there (Range) and the task is a hit
    let once = CuttingProxy::start(reg.port, format!("sha256:{hex}"), 1 << 20, 1);
    let b = w.machine("b", "v1\n");
    let (r, rb) = b.run(&["--cache-repo", &once.url("tenon/cache")], 0);
    assert_eq!(once.cut.load(std::sync::atomic::Ordering::SeqCst), 1, "the proxy cut a download");
    assert_eq!(b.ran(), Vec::<String>::new(), "{}", r.stderr);
    assert_eq!(remote(&rb)["hits"], 2);
    assert_eq!(sha256_file(&b.outputs_named("big.bin")[0]), hex);
    let ranged = reg.requests().iter().filter(|(m, p, s)| m == "GET" && p.contains(&hex) && *s == 206).count();
    assert!(ranged >= 1, "the resumed download asked for the rest with Range");
    // cut every time after 64 KiB (a resume makes too little progress to finish within the
    // retries): a warning, make runs, nothing damaged lands in the store
    let always = CuttingProxy::start(reg.port, format!("sha256:{hex}"), 64 << 10, usize::MAX);
    let c = w.machine("c", "v1\n");
    let (r, rc) = c.run(&["--cache-repo", &always.url("tenon/cache")], 0);
    assert_eq!(c.ran(), ["make"], "{}", r.stderr);
    assert_eq!(task(&rc, "use")["status"], "Cached");
    assert!(!remote_warnings(&r).is_empty());
    assert_eq!(sha256_file(&c.outputs_named("big.bin")[0]), hex);
    assert!(c.tenon(&["cache", "verify"]).stdout.contains(", 0 corrupt"));
}

#[test]
fn two_writers_of_one_key_are_harmless() {
    let Some(reg) = start() else { return };
    let url = reg.url("tenon/cache");
    let w = World::new();
    let (a, b) = (w.machine("a", "v1\n"), w.machine("b", "v1\n"));
    let spawn = |m: &Machine| {
        let d = m.repo.to_str().unwrap().to_string();
        tenon_command(
            &["run", &d, "--output", "json", "-q", "--sandbox", "host", "--pass-env", "TASK_LOG", "--cache-repo", &url],
            &m.store,
        )
        .env("TASK_LOG", &m.log)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
    };
    let (pa, pb) = (spawn(&a), spawn(&b));
    for p in [pa, pb] {
        let out = p.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    }
    let c = w.machine("c", "v1\n");
    let (r, rc) = c.run(&["--cache-repo", &url], 0);
    assert_eq!(c.ran(), Vec::<String>::new(), "{}", r.stderr);
    assert_eq!(remote(&rc)["hits"], 2);
    assert!(remote_warnings(&r).is_empty(), "{}", r.stderr);
}

/// `skopeo` (a standard OCI client), or `None` outside CI when it is missing.
fn skopeo() -> Option<&'static str> {
    if Command::new("skopeo").arg("--version").output().is_ok_and(|o| o.status.success()) {
        return Some("skopeo");
    }
    assert!(std::env::var("CI").as_deref() != Ok("true"), "skopeo is missing but CI=true: .ci/run installs it");
    eprintln!("SKIP: skopeo not installed (apt-get install -y skopeo)");
    None
}

#[test]
fn skopeo_reads_and_copies_every_record_tenon_pushes() {
    let Some(skopeo) = skopeo() else { return };
    let Some((reg, _, w, _, ra)) = pushed_by_a(20) else { return };
    for name in ["make", "use"] {
        let key = task(&ra, name)["cacheKey"].as_str().unwrap();
        let image = format!("docker://127.0.0.1:{}/tenon/cache:r1-{key}", reg.port);
        let out = Command::new(skopeo).args(["inspect", "--raw", "--tls-verify=false", &image]).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let m: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(m["artifactType"], "application/vnd.tenon.record.v1");
        assert_eq!(m["annotations"]["dev.tenon.key"], key);
        let dest = w.tmp.path().join(format!("copy-{name}"));
        let out = Command::new(skopeo)
            .args(["copy", "--src-tls-verify=false", &image, &format!("oci:{}:r", dest.display())])
            .output()
            .unwrap();
        assert!(out.status.success(), "skopeo copy: {}", String::from_utf8_lossy(&out.stderr));
        // every layer arrived intact in the OCI layout
        for l in m["layers"].as_array().unwrap() {
            let d = l["digest"].as_str().unwrap().strip_prefix("sha256:").unwrap();
            let blob = dest.join("blobs/sha256").join(d);
            assert_eq!(sha256_file(&blob), d);
        }
    }
}

#[test]
fn a_bad_cache_url_is_a_usage_error_that_never_echoes_credentials() {
    let w = World::new();
    let a = w.machine("a", "v1\n");
    let d = a.repo.to_str().unwrap().to_string();
    for (url, says) in [
        ("http://127.0.0.1:5000/x", "expected oci://"),
        ("oci://ci:hunter2-secret@127.0.0.1:5000/x", "credentials in the URL are not accepted"),
        ("oci+http://127.0.0.1:5000/UPPER", "repository"),
        ("oci+http://127.0.0.1:5000/x?mode=maybe", "mode=ro"),
    ] {
        let r = a.tenon(&["run", &d, "--sandbox", "host", "--cache-repo", url]);
        assert_eq!(r.code, 2, "{url}: {}", r.stderr);
        assert!(r.stderr.contains(says), "{url}: {}", r.stderr);
        assert!(!r.stderr.contains("hunter2"), "{}", r.stderr);
        assert_eq!(a.ran(), Vec::<String>::new(), "nothing runs on a usage error");
    }
    let r = a.tenon(&["cache", "ls", "--remote"]);
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("--cache-repo"), "{}", r.stderr);
}

#[test]
fn the_example_publishes_its_model_as_a_modelkit_that_skopeo_reads_and_a_second_machine_reuses() {
    let Some(reg) = start() else { return };
    let Some(skopeo) = skopeo() else { return };
    let url = reg.url("ml/cache");
    let tmp = tempfile::tempdir().unwrap();
    let copy = |name: &str| {
        let dst = tmp.path().join(name);
        let st =
            Command::new("cp").arg("-a").arg(common::repo_root().join("examples/model-promotion")).arg(&dst).status();
        assert!(st.unwrap().success());
        dst
    };
    let run = |dir: &Path, store: &str, extra: &[&str]| {
        let d = dir.to_str().unwrap().to_string();
        let mut args = vec!["run", d.as_str(), "--output", "json", "-q"];
        args.extend_from_slice(extra);
        let r: Run = tenon_command(&args, &tmp.path().join(store)).output().unwrap().into();
        assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
        r.json()
    };
    // without a registry the result is the task's own file:// URI
    let plain = run(&copy("plain"), "s0", &[]);
    assert!(plain["runs"][0]["results"]["model-uri"].as_str().unwrap().starts_with("file://"));
    // with one, a durable reference to a ModelKit
    let a = run(&copy("a"), "s1", &["--cache-repo", &url]);
    let uri = a["runs"][0]["results"]["model-uri"].as_str().unwrap().to_string();
    let prefix = format!("oci://127.0.0.1:{}/ml/cache/package@sha256:", reg.port);
    assert!(uri.starts_with(&prefix), "{uri}");
    let image = format!("docker://{}", uri.trim_start_matches("oci://"));
    let out = Command::new(skopeo).args(["inspect", "--raw", "--tls-verify=false", &image]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let m: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(m["config"]["mediaType"], "application/vnd.kitops.modelkit.config.v1+json");
    assert_eq!(m["layers"][0]["mediaType"], "application/vnd.kitops.modelkit.model.v1.tar");
    // machine B: everything cached from the registry, the same reference
    let b = run(&copy("b"), "s2", &["--cache-repo", &url]);
    assert_eq!(b["runs"][0]["results"]["model-uri"], uri.as_str());
    for t in b["runs"][0]["tasks"].as_array().unwrap() {
        assert_eq!(t["status"], "Cached", "{t:#}");
    }
}

#[test]
fn a_publish_that_fails_keeps_the_task_result_and_is_not_cached() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("oci+http://127.0.0.1:{port}/ml/cache");
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("ex");
    assert!(Command::new("cp")
        .arg("-a")
        .arg(common::repo_root().join("examples/model-promotion"))
        .arg(&dir)
        .status()
        .unwrap()
        .success());
    let d = dir.to_str().unwrap().to_string();
    let store = tmp.path().join("store");
    for _ in 0..2 {
        let r: Run =
            tenon_command(&["run", &d, "--output", "json", "--cache-repo", &url], &store).output().unwrap().into();
        assert_eq!(r.code, 0, "{}", r.stderr);
        let v = r.json();
        assert!(v["runs"][0]["results"]["model-uri"].as_str().unwrap().starts_with("file://"));
        assert!(r.stderr.contains("work:dist/ not published"), "{}", r.stderr);
        assert_eq!(task(&v, "package")["status"], "Succeeded", "not cached: it runs again");
    }
}

#[test]
fn a_wrong_publish_annotation_is_a_validation_error() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("t.yaml"),
        r#"apiVersion: tekton.dev/v1
kind: Task
metadata:
  name: pkg
  annotations:
    tenon.dev/outputs: "work:dist/"
    tenon.dev/publish: "model-url=work:dist/, model-uri=work:other/, nonsense"
spec:
  workspaces:
    - name: work
  results:
    - name: model-uri
  steps:
    - name: s
      image: alpine
      script: "true"
"#,
    )
    .unwrap();
    let r: Run = tenon_command(&["validate", tmp.path().to_str().unwrap()], tmp.path()).output().unwrap().into();
    assert_eq!(r.code, 2, "{}", r.stderr);
    for says in [
        "names result \"model-url\", which the task does not declare (did you mean \"model-uri\"?)",
        "work:other/ is not one of the task's tenon.dev/outputs",
        "entry \"nonsense\" is not RESULT=workspace:path",
    ] {
        assert!(r.stderr.contains(says), "missing {says:?} in:\n{}", r.stderr);
    }
    assert!(r.stderr.contains("t.yaml:"), "errors name the file: {}", r.stderr);
}
