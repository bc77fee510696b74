//! `tenon promote` end to end: the real binary, the bundled model-promotion example in a
//! real git checkout, and real remotes (a bare repository over `file://`, `git daemon`
//! over `git://`, a tiny HTTP server that refuses every credential).
//!
//! Every test builds its own layout in a fresh temp dir:
//!
//! ```text
//! <tmp>/repo         a copy of examples/model-promotion, `git init -b main`, one commit,
//!                    `origin` = file://<tmp>/remote.git
//! <tmp>/remote.git   `git clone --bare` of repo (the promotion target)
//! <tmp>/store        TENON_STORE (results of `tenon run <tmp>/repo -q`, git cache)
//! ```
//!
//! Assertions use the real `git` CLI. Expected values are what a correct promoter must
//! do (one commit per decision, never force, never lose a foreign commit, ...), not
//! whatever tenon currently does.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::fixture::copy_dir;
use common::Run;
use serde_json::Value;

const TOKEN: &str = "s3cr3t-token-value";
const ORIG_DIGEST_LINE: &str =
    "    tenon.dev/model-digest: \"sha256:0000000000000000000000000000000000000000000000000000000000000000\"";
const ORIG_ACCURACY_LINE: &str = "    tenon.dev/model-accuracy: \"0.80\"";
const ORIG_URI_LINE: &str = "              value: \"none\"";
const TRAILER_KEYS: [&str; 7] = [
    "Tenon-Promotion-Id",
    "Tenon-Policy",
    "Tenon-Environment",
    "Tenon-Subject-Digest",
    "Tenon-Source-Revision",
    "Tenon-Input-Hash",
    "Tenon-Gate",
];

// ---------------------------------------------------------------------------------------
// helpers

fn example() -> PathBuf {
    common::repo_root().join("examples").join("model-promotion")
}

fn git_cmd(dir: &Path) -> Command {
    let mut c = Command::new("git");
    c.arg("-C")
        .arg(dir)
        .args(["-c", "user.name=Test", "-c", "user.email=test@example.com", "-c", "commit.gpgsign=false"])
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_TERMINAL_PROMPT", "0");
    c
}

/// `git -C dir ARGS`, which must succeed; its stdout.
fn git(dir: &Path, args: &[&str]) -> String {
    let o = git_cmd(dir).args(args).output().expect("git runs");
    assert!(
        o.status.success(),
        "git -C {} {:?} failed:\n{}{}",
        dir.display(),
        args,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// `git -C dir ARGS`: (success, stdout + stderr).
fn git_try(dir: &Path, args: &[&str]) -> (bool, String) {
    let o = git_cmd(dir).args(args).output().expect("git runs");
    (o.status.success(), format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr)))
}

/// `tenon` with a clean environment (like `common::tenon_cached`: the cache stays on,
/// promote reads the recorded results from the store) plus `extra` variables.
fn tenon_cmd(store: &Path, extra: &[(&str, &str)]) -> Command {
    let mut c = Command::new(common::bin());
    c.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", store)
        .env("TENON_STORE", store)
        .env("NO_COLOR", "1");
    for (k, v) in extra {
        c.env(k, v);
    }
    c
}

fn tenon_env(args: &[&str], store: &Path, extra: &[(&str, &str)]) -> Run {
    tenon_cmd(store, extra).args(args).output().expect("tenon runs").into()
}

struct Fx {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    repo: PathBuf,
    remote: PathBuf,
    store: PathBuf,
    /// The commit of the initial import (the remote's `main` before any promotion).
    base: String,
}

impl Fx {
    fn repo_s(&self) -> &str {
        self.repo.to_str().unwrap()
    }

    fn remote_url(&self) -> String {
        format!("file://{}", self.remote.display())
    }

    /// `tenon promote <repo> --output json EXTRA` with this fixture's store.
    fn promote(&self, extra: &[&str]) -> Run {
        self.promote_in(&self.store, extra)
    }

    fn promote_in(&self, store: &Path, extra: &[&str]) -> Run {
        let mut args = vec!["promote", self.repo_s(), "--output", "json"];
        args.extend_from_slice(extra);
        common::tenon_cached(&args, store)
    }

    /// `tenon run <repo> -q` into `store`.
    fn run_into(&self, store: &Path) {
        let r = common::tenon_cached(&["run", self.repo_s(), "-q"], store);
        assert_eq!(r.code, 0, "tenon run failed:\n{}\n{}", r.stdout, r.stderr);
    }

    /// Commit everything in the working copy.
    fn commit_repo(&self, msg: &str) {
        git(&self.repo, &["add", "-A"]);
        git(&self.repo, &["commit", "-q", "-m", msg]);
    }
}

/// The standard layout; `edit` may change the example copy before it is committed.
fn fixture_with(edit: impl FnOnce(&Path)) -> Fx {
    let tmp = tempfile::tempdir().expect("tempdir");
    let root = tmp.path().canonicalize().unwrap();
    let repo = root.join("repo");
    let remote = root.join("remote.git");
    let store = root.join("store");
    copy_dir(&example(), &repo);
    edit(&repo);
    git(&root, &["init", "-q", "-b", "main", repo.to_str().unwrap()]);
    git(&repo, &["add", "-A"]);
    git(&repo, &["commit", "-q", "-m", "import the example"]);
    git(&root, &["clone", "-q", "--bare", repo.to_str().unwrap(), remote.to_str().unwrap()]);
    git(&repo, &["remote", "add", "origin", &format!("file://{}", remote.display())]);
    let base = git(&repo, &["rev-parse", "HEAD"]).trim().to_string();
    let fx = Fx { _tmp: tmp, root, repo, remote, store, base };
    fx.run_into(&fx.store);
    fx
}

fn fixture() -> Fx {
    fixture_with(|_| {})
}

fn the_promotion(r: &Run) -> Value {
    let j = r.json();
    assert_eq!(j["kind"], "PromotionReport", "{j:#}");
    let ps = j["promotions"].as_array().unwrap_or_else(|| panic!("no promotions: {j:#}"));
    assert_eq!(ps.len(), 1, "one policy in the example: {j:#}");
    ps[0].clone()
}

/// All entries of a PromotionReport.
fn entries(r: &Run) -> Vec<Value> {
    let j = r.json();
    assert_eq!(j["kind"], "PromotionReport", "{j:#}");
    j["promotions"].as_array().cloned().unwrap_or_default()
}

fn state(p: &Value) -> &str {
    p["state"].as_str().unwrap_or("")
}

fn rev_list(remote: &Path) -> Vec<String> {
    git(remote, &["rev-list", "main"]).lines().map(String::from).collect()
}

fn refs(remote: &Path) -> String {
    git(remote, &["for-each-ref", "--format=%(objectname) %(refname)"])
}

/// Commits on the remote's main whose message carries `Tenon-Promotion-Id`.
fn promotion_commits(remote: &Path) -> Vec<String> {
    git(remote, &["log", "main", "--format=%H", "--grep=^Tenon-Promotion-Id: "]).lines().map(String::from).collect()
}

/// Trailers (`Key: value` lines of the last paragraph), in order.
fn trailers(message: &str) -> Vec<(String, String)> {
    let para = message.trim_end().rsplit("\n\n").next().unwrap_or("");
    para.lines().filter_map(|l| l.split_once(": ").map(|(k, v)| (k.to_string(), v.to_string()))).collect()
}

fn trailer<'a>(t: &'a [(String, String)], key: &str) -> Vec<&'a str> {
    t.iter().filter(|(k, _)| k == key).map(|(_, v)| v.as_str()).collect()
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

fn original_model_yaml() -> String {
    std::fs::read_to_string(example().join("deploy/prod/model.yaml")).unwrap()
}

/// The original model.yaml with exactly the three scalars replaced (double quotes kept).
fn expected_model_yaml(digest: &str, accuracy: &str, uri: &str) -> String {
    let orig = original_model_yaml();
    let mut hits = [0; 3];
    let out: String = orig
        .split_inclusive('\n')
        .map(|l| {
            let (body, nl) = l.strip_suffix('\n').map(|b| (b, "\n")).unwrap_or((l, ""));
            if body == ORIG_DIGEST_LINE {
                hits[0] += 1;
                format!("    tenon.dev/model-digest: \"{digest}\"{nl}")
            } else if body == ORIG_ACCURACY_LINE {
                hits[1] += 1;
                format!("    tenon.dev/model-accuracy: \"{accuracy}\"{nl}")
            } else if body == ORIG_URI_LINE {
                hits[2] += 1;
                format!("              value: \"{uri}\"{nl}")
            } else {
                l.to_string()
            }
        })
        .collect();
    assert_eq!(hits, [1, 1, 1], "the example's model.yaml changed; update this test");
    out
}

/// Line-by-line difference report of two texts.
fn show_diff(a: &str, b: &str) -> String {
    let (la, lb): (Vec<&str>, Vec<&str>) = (a.split_inclusive('\n').collect(), b.split_inclusive('\n').collect());
    let mut out = String::new();
    for i in 0..la.len().max(lb.len()) {
        let (x, y) = (la.get(i), lb.get(i));
        if x != y {
            out.push_str(&format!("line {}:\n  want {:?}\n  got  {:?}\n", i + 1, x, y));
        }
    }
    out
}

/// A tiny deterministic PRNG (xorshift64*), seeded from the clock; the seed is printed.
struct Rng(u64);

impl Rng {
    fn from_clock(what: &str) -> Rng {
        let seed = std::env::var("TENON_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1
        });
        eprintln!("{what}: seed {seed} (set TENON_TEST_SEED to replay)");
        Rng(seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

/// Kills (SIGKILL) and reaps a child we started, on drop.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `git daemon` serving `root` on a free port of 127.0.0.1, with pushes enabled:
/// (the daemon, its port, its log file), or why it cannot run here.
fn start_daemon(root: &Path) -> Result<(KillOnDrop, u16, PathBuf), String> {
    let port = free_port();
    let log = root.join(format!("daemon-{port}.log"));
    let child = Command::new("git")
        .args([
            "daemon",
            "--verbose",
            "--reuseaddr",
            &format!("--base-path={}", root.display()),
            "--export-all",
            "--enable=receive-pack",
            "--listen=127.0.0.1",
            &format!("--port={port}"),
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .map_err(|e| format!("cannot start `git daemon`: {e}"))?;
    let mut daemon = KillOnDrop(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(status)) = daemon.0.try_wait() {
            return Err(format!(
                "`git daemon` is unavailable (exited {status}): {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            ));
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok((daemon, port, log));
        }
        if Instant::now() > deadline {
            return Err(format!("`git daemon` did not listen on 127.0.0.1:{port}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Insert `url: URL` into the example policy's `spec.target`.
fn set_target_url(repo: &Path, url: &str) {
    let f = repo.join("tekton/promotion.yaml");
    let text = std::fs::read_to_string(&f).unwrap();
    let anchor = "  target:\n    branch: main\n";
    assert!(text.contains(anchor), "the example's promotion.yaml changed; update this test");
    std::fs::write(&f, text.replacen(anchor, &format!("{anchor}    url: {url}\n"), 1)).unwrap();
}

fn base64(b: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in b.chunks(3) {
        let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            out.push(if i <= c.len() { T[(n >> (18 - 6 * i) & 63) as usize] as char } else { '=' });
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// 1. gates pass: one commit, all trailers, the ledger, a byte-exact edit

#[test]
fn gate_pass_lands_one_commit_with_trailers_ledger_and_exact_edit() {
    let fx = fixture();
    let r = fx.promote(&[]);
    assert_eq!(r.code, 0, "stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    let p = the_promotion(&r);
    assert_eq!(state(&p), "Landed", "{p:#}");
    assert_eq!(p["promote"], true, "{p:#}");
    assert_eq!(p["policy"], "pump-failure-prod");
    assert_eq!(p["environment"], "prod");

    // exactly one new commit, on top of the imported one
    let commits = rev_list(&fx.remote);
    assert_eq!(commits.len(), 2, "one commit on top of the import: {commits:?}");
    assert_eq!(commits[1], fx.base);
    let tip = commits[0].clone();
    assert_eq!(p["commit"].as_str(), Some(tip.as_str()), "the report names the pushed commit");
    assert_eq!(git(&fx.remote, &["rev-list", "--parents", "-1", "main"]).trim(), format!("{tip} {}", fx.base));
    assert_eq!(git(&fx.remote, &["log", "-1", "--format=%an <%ae>", "main"]).trim(), "tenon <tenon@localhost>");

    // the message and its trailers
    let msg = git(&fx.remote, &["log", "-1", "--format=%B", "main"]);
    let t = trailers(&msg);
    for k in TRAILER_KEYS {
        assert!(!trailer(&t, k).is_empty(), "trailer {k} missing from:\n{msg}");
    }
    let id = trailer(&t, "Tenon-Promotion-Id")[0];
    assert!(is_hex64(id), "id {id:?}");
    assert_eq!(p["id"].as_str(), Some(id));
    assert_eq!(trailer(&t, "Tenon-Promotion-Id").len(), 1);
    assert_eq!(trailer(&t, "Tenon-Policy"), ["pump-failure-prod"]);
    assert_eq!(trailer(&t, "Tenon-Environment"), ["prod"]);
    let digest = trailer(&t, "Tenon-Subject-Digest")[0];
    assert!(digest.starts_with("sha256:") && is_hex64(&digest[7..]), "digest {digest:?}");
    assert_eq!(p["subjectDigest"].as_str(), Some(digest));
    assert_eq!(trailer(&t, "Tenon-Source-Revision"), [fx.base.as_str()], "HEAD of the checkout");
    assert!(is_hex64(trailer(&t, "Tenon-Input-Hash")[0]), "{msg}");
    let accuracy = p["gates"][0]["observed"].as_str().unwrap().trim().to_string();
    let acc: f64 = accuracy.parse().unwrap();
    assert!(acc >= 0.9, "the example's model passes the 0.9 gate: {accuracy}");
    assert_eq!(
        trailer(&t, "Tenon-Gate"),
        [
            format!("$(tasks.evaluate.results.accuracy) >= 0.9 = {accuracy}"),
            format!("$(tasks.evaluate.results.accuracy) >= 0.805 = {accuracy}"),
        ],
        "{msg}"
    );
    assert!(
        msg.starts_with(&format!("promote(prod): pump-failure model {digest} (accuracy {accuracy})\n\n")),
        "summary line from the policy's template:\n{msg}"
    );
    // git itself reads them as trailers
    let parsed = git(&fx.remote, &["log", "-1", "--format=%(trailers:only,unfold)", "main"]);
    for k in TRAILER_KEYS {
        assert!(parsed.contains(&format!("{k}: ")), "git does not see trailer {k}:\n{parsed}");
    }

    // what changed: the model file and one ledger entry, nothing else
    let ledger = format!(".tenon/promotions/prod/{id}.yaml");
    let changed = git(&fx.remote, &["diff", "--name-status", &fx.base, "main"]);
    let mut changed: Vec<&str> = changed.lines().collect();
    changed.sort();
    assert_eq!(changed, [format!("A\t{ledger}"), "M\tdeploy/prod/model.yaml".to_string()]);

    // the ledger names the id
    let entry = git(&fx.remote, &["show", &format!("main:{ledger}")]);
    let ledger_id = entry.lines().find_map(|l| l.strip_prefix("id: ")).map(|v| v.trim().trim_matches('"'));
    assert_eq!(ledger_id, Some(id), "ledger entry:\n{entry}");
    assert!(entry.contains("kind: PromotionRecord"), "{entry}");

    // only the three scalars changed, every other byte is the same
    let uri = p["subjectUri"].as_str().unwrap();
    assert!(!uri.is_empty() && !uri.contains("$("), "{p:#}");
    let got = git(&fx.remote, &["show", "main:deploy/prod/model.yaml"]);
    let want = expected_model_yaml(digest, &accuracy, uri);
    assert!(got == want, "deploy/prod/model.yaml differs beyond the three scalars:\n{}", show_diff(&want, &got));
    for kept in [
        "# The model server Argo CD / Flux deploy for prod. tenon's PromotionPolicy edits only the\n",
        "    matchLabels: {app: pump-failure-model}\n",
        "      labels: {app: pump-failure-model}\n",
        "          image: python:3.11-slim   # serves the model file named by MODEL_URI\n",
    ] {
        assert!(got.contains(kept), "lost {kept:?}");
    }
    // the reported updates are the values written
    let updates: Vec<(&str, &str)> = p["updates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| (u["path"].as_str().unwrap(), u["value"].as_str().unwrap()))
        .collect();
    assert_eq!(
        updates,
        [
            ("metadata.annotations[\"tenon.dev/model-digest\"]", digest),
            ("metadata.annotations[\"tenon.dev/model-accuracy\"]", accuracy.as_str()),
            ("spec.template.spec.containers[0].env[0].value", uri),
        ]
    );
}

// ---------------------------------------------------------------------------------------
// 2. gates fail: nothing is written, exit 0

#[test]
fn gate_fail_writes_nothing_and_exits_zero() {
    let fx = fixture_with(|repo| {
        let f = repo.join("tekton/promotion.yaml");
        let text = std::fs::read_to_string(&f).unwrap();
        assert_eq!(text.matches("value: \"0.9\"\n").count(), 1, "the example's promotion.yaml changed");
        std::fs::write(&f, text.replace("value: \"0.9\"\n", "value: \"0.99\"\n")).unwrap();
    });
    let before = refs(&fx.remote);
    let r = fx.promote(&[]);
    assert_eq!(r.code, 0, "GatesFailed is not an error:\nstdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    let p = the_promotion(&r);
    assert_eq!(state(&p), "GatesFailed", "{p:#}");
    assert_eq!(p["promote"], false);
    assert_eq!(p["gates"][0]["passed"], false, "{p:#}");
    assert_eq!(p["gates"][0]["threshold"], "0.99", "{p:#}");
    assert!(p["commit"].is_null(), "{p:#}");
    assert!(p["detail"].as_str().unwrap_or("").contains("0.99"), "the detail names the failed gate: {p:#}");
    assert_eq!(refs(&fx.remote), before, "nothing pushed");
    assert_eq!(rev_list(&fx.remote), std::slice::from_ref(&fx.base));
    assert!(promotion_commits(&fx.remote).is_empty());
}

// ---------------------------------------------------------------------------------------
// 3. idempotent: re-running promote never commits again

#[test]
fn rerunning_promote_is_already_landed() {
    let fx = fixture();
    let first = fx.promote(&[]);
    assert_eq!(first.code, 0, "{}\n{}", first.stdout, first.stderr);
    let p = the_promotion(&first);
    assert_eq!(state(&p), "Landed", "{p:#}");
    let id = p["id"].as_str().unwrap().to_string();
    let after_first = refs(&fx.remote);
    for i in 0..3 {
        let r = fx.promote(&[]);
        assert_eq!(r.code, 0, "rerun {i}: {}\n{}", r.stdout, r.stderr);
        let p = the_promotion(&r);
        assert_eq!(state(&p), "AlreadyLanded", "rerun {i}: {p:#}");
        assert_eq!(p["id"].as_str(), Some(id.as_str()), "the same decision, the same id");
        assert!(p["commit"].is_null(), "{p:#}");
    }
    // and after a fresh `tenon run` (same results): still the same decision
    fx.run_into(&fx.store);
    let p = the_promotion(&fx.promote(&[]));
    assert_eq!(state(&p), "AlreadyLanded", "{p:#}");
    assert_eq!(refs(&fx.remote), after_first);
    assert_eq!(promotion_commits(&fx.remote).len(), 1);
    assert_eq!(rev_list(&fx.remote).len(), 2);
}

// ---------------------------------------------------------------------------------------
// 4. dry run: shows the exact diff and message, writes nothing

#[test]
fn dry_run_shows_diff_and_message_and_pushes_nothing() {
    let fx = fixture();
    let refs_before = refs(&fx.remote);
    let objects_before = git(&fx.remote, &["count-objects", "-v"]);
    let r = fx.promote(&["--dry-run"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let p = the_promotion(&r);
    assert_eq!(state(&p), "DryRun", "{p:#}");
    assert!(p["commit"].is_null(), "{p:#}");
    assert_eq!(p["target"].as_str(), Some(format!("{} main", fx.remote_url()).as_str()), "{p:#}");

    let id = p["id"].as_str().unwrap();
    let digest = p["subjectDigest"].as_str().unwrap();
    let accuracy = p["gates"][0]["observed"].as_str().unwrap().trim();
    let uri = p["subjectUri"].as_str().unwrap();

    // the diff: one file, exactly the three changed lines
    let diffs = p["diff"].as_array().unwrap_or_else(|| panic!("no diff: {p:#}"));
    assert_eq!(diffs.len(), 1, "one edited file: {p:#}");
    let d = diffs[0].as_str().unwrap();
    let lines: Vec<&str> = d.lines().collect();
    assert!(lines.contains(&"--- a/deploy/prod/model.yaml") && lines.contains(&"+++ b/deploy/prod/model.yaml"), "{d}");
    let removed: Vec<&str> =
        lines.iter().filter(|l| l.starts_with('-') && !l.starts_with("--- ")).map(|l| &l[1..]).collect();
    let added: Vec<&str> =
        lines.iter().filter(|l| l.starts_with('+') && !l.starts_with("+++ ")).map(|l| &l[1..]).collect();
    assert_eq!(removed, [ORIG_DIGEST_LINE, ORIG_ACCURACY_LINE, ORIG_URI_LINE], "{d}");
    assert_eq!(
        added,
        [
            format!("    tenon.dev/model-digest: \"{digest}\""),
            format!("    tenon.dev/model-accuracy: \"{accuracy}\""),
            format!("              value: \"{uri}\""),
        ],
        "{d}"
    );
    // hunk headers point at the right lines
    let orig = original_model_yaml();
    let line_no = |needle: &str| orig.lines().position(|l| l == needle).unwrap() + 1;
    for needle in [ORIG_DIGEST_LINE, ORIG_ACCURACY_LINE, ORIG_URI_LINE] {
        let n = line_no(needle);
        assert!(
            lines.iter().any(|l| l.starts_with(&format!("@@ -{n},")) || l.starts_with(&format!("@@ -{n} "))),
            "no hunk at line {n}:\n{d}"
        );
    }

    // the message with its trailers
    let msg = p["message"].as_str().unwrap();
    assert!(msg.starts_with(&format!("promote(prod): pump-failure model {digest} (accuracy {accuracy})\n\n")), "{msg}");
    let t = trailers(msg);
    for k in TRAILER_KEYS {
        assert!(!trailer(&t, k).is_empty(), "trailer {k} missing from:\n{msg}");
    }
    assert_eq!(trailer(&t, "Tenon-Promotion-Id"), [id]);
    assert_eq!(trailer(&t, "Tenon-Subject-Digest"), [digest]);

    // nothing written
    assert_eq!(refs(&fx.remote), refs_before, "a dry run pushed a ref");
    assert_eq!(git(&fx.remote, &["count-objects", "-v"]), objects_before, "a dry run wrote objects to the remote");
    assert!(promotion_commits(&fx.remote).is_empty());

    // the human form shows the same
    let h = common::tenon_cached(&["promote", fx.repo_s(), "--dry-run"], &fx.store);
    assert_eq!(h.code, 0, "{}\n{}", h.stdout, h.stderr);
    assert!(h.stdout.contains("DryRun"), "{}", h.stdout);
    assert!(h.stdout.contains(&format!("Tenon-Promotion-Id: {id}")), "{}", h.stdout);
    assert_eq!(refs(&fx.remote), refs_before);

    // what the dry run showed is what lands
    let real = the_promotion(&fx.promote(&[]));
    assert_eq!(state(&real), "Landed", "{real:#}");
    assert_eq!(real["id"].as_str(), Some(id));
    assert_eq!(git(&fx.remote, &["log", "-1", "--format=%B", "main"]).trim_end(), msg.trim_end());
}

// ---------------------------------------------------------------------------------------
// 5. races: foreign commits pushed all the time while two promoters run

/// Keeps committing `other/N.txt` to the remote through its own clone (commit, push;
/// on rejection `pull --rebase` and push again) until `until`; returns the N pushed.
fn foreign_pusher(root: &Path, remote: &Path, tag: &str, until: Instant) -> std::thread::JoinHandle<Vec<u32>> {
    let clone = root.join(format!("pusher-{tag}"));
    git(root, &["clone", "-q", remote.to_str().unwrap(), clone.to_str().unwrap()]);
    std::thread::spawn(move || {
        let mut pushed = Vec::new();
        let mut n = 0u32;
        while Instant::now() < until {
            n += 1;
            std::fs::create_dir_all(clone.join("other")).unwrap();
            std::fs::write(clone.join(format!("other/{n}.txt")), format!("foreign {n}\n")).unwrap();
            git(&clone, &["add", "-A"]);
            git(&clone, &["commit", "-q", "-m", &format!("foreign {n}")]);
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let (ok, out) = git_try(&clone, &["push", "-q", "origin", "HEAD:main"]);
                if ok {
                    pushed.push(n);
                    break;
                }
                assert!(Instant::now() < deadline, "the foreign pusher cannot push: {out}");
                let (ok, out) = git_try(&clone, &["pull", "-q", "--rebase", "origin", "main"]);
                assert!(ok, "pull --rebase failed: {out}");
            }
        }
        pushed
    })
}

/// One race against a fresh remote: a foreign pusher for ~3 s and two `tenon promote`
/// processes (one per store in `stores`) started together while it pushes.
/// tenon reaches the remote at `file://` or, with `daemon_port`, through `git daemon`
/// (`git://`); the foreign pusher always pushes with the git CLI (a compare-and-swap).
fn race_round(fx: &Fx, round: usize, stores: [&Path; 2], daemon_port: Option<u16>) -> Vec<String> {
    let name = format!("race{round}.git");
    let remote = fx.root.join(&name);
    git(&fx.root, &["clone", "-q", "--bare", fx.repo_s(), remote.to_str().unwrap()]);
    let url = match daemon_port {
        Some(port) => format!("git://127.0.0.1:{port}/{name}"),
        None => format!("file://{}", remote.display()),
    };
    git(&fx.repo, &["remote", "set-url", "origin", &url]);
    // the foreign pusher runs for ~3 s; the promoters start 300 ms in
    let pusher = foreign_pusher(&fx.root, &remote, &round.to_string(), Instant::now() + Duration::from_secs(3));
    std::thread::sleep(Duration::from_millis(300));
    let children: Vec<Child> = stores
        .iter()
        .map(|s| {
            tenon_cmd(s, &[])
                .args(["promote", fx.repo_s(), "--output", "json"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let runs: Vec<Run> = children.into_iter().map(|c| c.wait_with_output().unwrap().into()).collect();
    let pushed = pusher.join().expect("the foreign pusher");
    eprintln!("race round {round}: {} foreign commits pushed", pushed.len());

    // collect every problem of the round (a race shows several symptoms at once)
    let mut problems: Vec<String> = Vec::new();
    let mut states = Vec::new();
    let mut ids = BTreeSet::new();
    let mut landed_commits = Vec::new();
    for (i, r) in runs.iter().enumerate() {
        let j = r.json();
        let ps = j["promotions"].as_array().cloned().unwrap_or_default();
        if r.code != 0 || ps.len() != 1 {
            let what: Vec<String> =
                ps.iter().map(|p| format!("{}: {}", state(p), p["detail"].as_str().unwrap_or(""))).collect();
            problems.push(format!(
                "promoter {i} exited {} with {} report entries (one policy): {what:?}",
                r.code,
                ps.len()
            ));
        }
        let Some(p) = ps.into_iter().rev().find(|p| !p["id"].as_str().unwrap_or("").is_empty()) else {
            problems.push(format!("promoter {i}: no decision in its report:\n{}", r.stdout));
            continue;
        };
        eprintln!(
            "race round {round} promoter {i}: {} {} {}",
            state(&p),
            p["detail"].as_str().unwrap_or(""),
            p["commit"].as_str().unwrap_or("")
        );
        states.push(state(&p).to_string());
        ids.insert(p["id"].as_str().unwrap().to_string());
        if let Some(c) = p["commit"].as_str() {
            landed_commits.push((i, c.to_string()));
        }
    }
    assert!(ids.len() <= 1, "both decide the same id: {ids:?}");
    let Some(id) = ids.into_iter().next() else { return problems };
    assert!(pushed.len() >= 3, "round {round}: the race needs foreign pushes, got {}", pushed.len());
    for (i, c) in &landed_commits {
        let (ok, _) = git_try(&remote, &["merge-base", "--is-ancestor", c, "main"]);
        if !ok {
            problems.push(format!(
                "promoter {i} reported Landed with commit {c}, which is not in main's history (overwritten by a later push)"
            ));
        }
    }
    states.sort();
    // exactly one promoter lands; the other finds the ledger entry (two Landed are only
    // acceptable as the very same commit pushed twice: then the remote holds it once)
    let same_commit = landed_commits.len() == 2 && landed_commits[0].1 == landed_commits[1].1;
    if states != ["AlreadyLanded", "Landed"] && !(states == ["Landed", "Landed"] && same_commit) {
        problems.push(format!("states {states:?} (commits {landed_commits:?}): exactly one promoter must land"));
    }

    // linear history, every foreign commit kept, exactly one promotion commit
    let merges = git(&remote, &["rev-list", "--merges", "main"]);
    if !merges.trim().is_empty() {
        problems.push(format!("merge commits in history: {merges}"));
    }
    let files: BTreeSet<String> =
        git(&remote, &["ls-tree", "-r", "--name-only", "main", "other/"]).lines().map(String::from).collect();
    let lost: Vec<u32> = pushed.iter().copied().filter(|n| !files.contains(&format!("other/{n}.txt"))).collect();
    if !lost.is_empty() {
        problems.push(format!(
            "{} of {} foreign commits lost from the tip (their push succeeded, a later push overwrote them): {lost:?}",
            lost.len(),
            pushed.len()
        ));
    }
    let subjects = git(&remote, &["log", "main", "--format=%s"]);
    for n in &pushed {
        let c = subjects.lines().filter(|s| *s == format!("foreign {n}")).count();
        if c > 1 {
            problems.push(format!("foreign {n} appears {c} times in the history"));
        }
    }
    let promos = promotion_commits(&remote);
    if promos.len() != 1 {
        problems.push(format!("{} commits carry Tenon-Promotion-Id: {promos:?}", promos.len()));
    }
    let (ok, ledger) = git_try(&remote, &["show", &format!("main:.tenon/promotions/prod/{id}.yaml")]);
    if !ok || !ledger.contains(&id) {
        problems.push(format!("no ledger entry for {id} at the tip: {ledger}"));
    }
    let model = git(&remote, &["show", "main:deploy/prod/model.yaml"]);
    if model.contains("sha256:0000000000000000") {
        problems.push("the promotion's edit is not at the tip".into());
    }
    problems
}

/// `rounds` races, each against a fresh remote; every problem of every round.
fn race_rounds(rounds: usize, mut round: impl FnMut(usize) -> Vec<String>) -> Vec<String> {
    (0..rounds).flat_map(|r| round(r).into_iter().map(move |p| format!("round {r}: {p}"))).collect()
}

fn assert_no_problems(problems: Vec<String>) {
    assert!(problems.is_empty(), "{} problem(s):\n{}", problems.len(), problems.join("\n"));
}

#[test]
fn race_two_promoters_one_store_with_foreign_pushes() {
    let fx = fixture();
    let problems = race_rounds(6, |round| race_round(&fx, round, [&fx.store, &fx.store], None));
    assert_no_problems(problems);
}

#[test]
fn race_two_promoters_two_stores_with_foreign_pushes() {
    let fx = fixture();
    let store2 = fx.root.join("store2");
    fx.run_into(&store2);
    let problems = race_rounds(6, |round| race_round(&fx, round, [&fx.store, &store2], None));
    assert_no_problems(problems);
}

/// The same race through a real server (`git daemon`, whose receive-pack checks the old
/// value of the ref): tells a promoter bug from a transport that does not compare-and-swap.
#[test]
fn race_two_promoters_two_stores_through_git_daemon() {
    let fx = fixture();
    let (_daemon, port, _log) = match start_daemon(&fx.root) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("SKIP race_two_promoters_two_stores_through_git_daemon: {e}");
            return;
        }
    };
    let store2 = fx.root.join("store2");
    fx.run_into(&store2);
    let problems = race_rounds(4, |round| race_round(&fx, round, [&fx.store, &store2], Some(port)));
    assert_no_problems(problems);
}

// ---------------------------------------------------------------------------------------
// 6. crash: SIGKILL at random points, then a normal run

#[test]
fn sigkill_at_random_points_never_duplicates() {
    let fx = fixture();
    let mut rng = Rng::from_clock("sigkill");
    let mut delays = Vec::new();
    for _ in 0..10 {
        let delay = rng.below(300);
        delays.push(delay);
        let mut c = tenon_cmd(&fx.store, &[])
            .args(["promote", fx.repo_s(), "--output", "json"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay));
        let _ = c.kill(); // SIGKILL (it may already have exited)
        let _ = c.wait();
    }
    eprintln!(
        "sigkill delays (ms): {delays:?}; promotion commits after the kills: {}",
        promotion_commits(&fx.remote).len()
    );
    assert!(promotion_commits(&fx.remote).len() <= 1, "a killed promoter duplicated the promotion");

    let r = fx.promote(&[]);
    assert_eq!(r.code, 0, "after the crashes: stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    let p = the_promotion(&r);
    assert!(matches!(state(&p), "Landed" | "AlreadyLanded"), "{p:#}");
    let id = p["id"].as_str().unwrap();
    assert_eq!(promotion_commits(&fx.remote).len(), 1, "exactly one promotion commit");
    assert_eq!(rev_list(&fx.remote).len(), 2, "nothing but the promotion on top of the import");
    let entry = git(&fx.remote, &["show", &format!("main:.tenon/promotions/prod/{id}.yaml")]);
    let doc: serde_yaml::Value = serde_yaml::from_str(&entry).unwrap();
    assert_eq!(doc["id"].as_str(), Some(id), "{entry}");
    // the remote is not wedged (no stale ref lock left by a killed push)
    let clone = fx.root.join("after");
    git(&fx.root, &["clone", "-q", fx.remote.to_str().unwrap(), clone.to_str().unwrap()]);
    std::fs::write(clone.join("after.txt"), "x\n").unwrap();
    git(&clone, &["add", "-A"]);
    git(&clone, &["commit", "-q", "-m", "after the crashes"]);
    let (ok, out) = git_try(&clone, &["push", "-q", "origin", "HEAD:main"]);
    assert!(ok, "the remote cannot take a push after the crashes: {out}");
    let (ok, out) = git_try(&fx.remote, &["fsck", "--no-dangling"]);
    assert!(ok, "remote fsck: {out}");
    // and tenon still works against it
    let p = the_promotion(&fx.promote(&[]));
    assert_eq!(state(&p), "AlreadyLanded", "{p:#}");
}

/// A copy of `store` without its git cache (the recorded runs only).
fn copy_store(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_name() == "git" {
            continue;
        }
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// A crash while tenon sets up its git cache (`<store>/git/`, the first contact with a
/// target) must not leave the store unusable: every kill is followed by a normal promote
/// with the same store, which must work. The kill is timed from the moment the cache
/// directory appears, plus 0..10 ms, to land inside the cache's creation.
#[test]
fn sigkill_while_the_cache_is_created_never_wedges_the_store() {
    let fx = fixture();
    let mut rng = Rng::from_clock("sigkill-cache");
    let mut wedged = Vec::new();
    let mut killed_in_setup = 0;
    for i in 0..30 {
        let store = fx.root.join(format!("store-k{i}"));
        copy_store(&fx.store, &store);
        let cache = store.join("git");
        let spin = Duration::from_micros(rng.below(10_000));
        let mut c = tenon_cmd(&store, &[])
            .args(["promote", fx.repo_s(), "--output", "json"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if c.try_wait().unwrap().is_some() || Instant::now() > deadline {
                break;
            }
            let appeared = std::fs::read_dir(&cache).map(|d| d.flatten().any(|e| e.path().is_dir())).unwrap_or(false);
            if appeared {
                let t = Instant::now();
                while t.elapsed() < spin {}
                let _ = c.kill();
                killed_in_setup += 1;
                break;
            }
        }
        let _ = c.kill();
        let _ = c.wait();
        if std::env::var("TENON_TEST_DEBUG").is_ok() {
            eprintln!("kill {i} +{spin:?}: {:?}", walk(&cache));
        }
        let r = fx.promote_in(&store, &[]);
        let ps = entries(&r);
        let ok = r.code == 0 && ps.len() == 1 && matches!(state(&ps[0]), "Landed" | "AlreadyLanded");
        if !ok {
            let leftovers: Vec<String> = walk(&cache).into_iter().filter(|p| p.ends_with(".lock")).collect();
            wedged.push(format!(
                "kill {i} (+{spin:?} after the cache dir appeared): the next promote exited {} with {:?}; \
                 lock files left in the cache: {leftovers:?}",
                r.code,
                ps.iter().map(|p| format!("{}: {}", state(p), p["detail"].as_str().unwrap_or(""))).collect::<Vec<_>>()
            ));
        }
    }
    eprintln!("sigkill-cache: {killed_in_setup} of 30 promoters killed while the cache was being created");
    assert!(wedged.is_empty(), "{} store(s) left unusable by a crash:\n{}", wedged.len(), wedged.join("\n"));
    assert_eq!(promotion_commits(&fx.remote).len(), 1, "exactly one promotion commit");
}

/// Every file under `dir`, as paths relative to it.
fn walk(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path().strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

// ---------------------------------------------------------------------------------------
// 7. a real server: git daemon on 127.0.0.1

/// The standard fixture with its policy's target set to `git daemon` serving the remote
/// (no `origin` to fall back to: the policy's url must be used): (fixture, daemon, its
/// log, the url), or None when the daemon cannot run here (`test` is skipped, saying so).
fn daemon_fixture(test: &str) -> Option<(Fx, KillOnDrop, PathBuf, String)> {
    let fx = fixture();
    let (daemon, port, log) = match start_daemon(&fx.root) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("SKIP {test}: {e}");
            return None;
        }
    };
    let url = format!("git://127.0.0.1:{port}/remote.git");
    set_target_url(&fx.repo, &url);
    fx.commit_repo("promote through git daemon");
    git(&fx.repo, &["remote", "remove", "origin"]);
    Some((fx, daemon, log, url))
}

#[test]
fn lands_through_git_daemon() {
    let Some((fx, daemon, log, url)) = daemon_fixture("lands_through_git_daemon") else { return };

    let r = fx.promote(&[]);
    assert_eq!(r.code, 0, "stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    let p = the_promotion(&r);
    assert_eq!(state(&p), "Landed", "{p:#}");
    assert_eq!(p["target"].as_str(), Some(format!("{url} main").as_str()));
    let commits = rev_list(&fx.remote);
    assert_eq!(commits.len(), 2, "{commits:?}");
    assert_eq!(p["commit"].as_str(), Some(commits[0].as_str()));
    assert_eq!(promotion_commits(&fx.remote).len(), 1);
    let id = p["id"].as_str().unwrap();
    git(&fx.remote, &["cat-file", "-e", &format!("main:.tenon/promotions/prod/{id}.yaml")]);
    // and it went through the daemon
    let r2 = fx.promote(&[]);
    assert_eq!(state(&the_promotion(&r2)), "AlreadyLanded");
    drop(daemon);
    let daemon_log = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(daemon_log.contains("receive-pack"), "the daemon saw no push:\n{daemon_log}");
}

/// Install an executable hook script in a bare repository.
fn write_hook(repo: &Path, name: &str, script: &str) {
    use std::os::unix::fs::PermissionsExt;
    let hook = repo.join("hooks").join(name);
    std::fs::create_dir_all(hook.parent().unwrap()).unwrap();
    std::fs::write(&hook, script).unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A pre-receive hook that counts its runs in `count` and declines with words that
/// once meant "race" to tenon.
fn declining_hook(count: &Path) -> String {
    format!(
        "#!/bin/sh\ncat >/dev/null\necho run >> '{}'\necho 'rejected: cannot accept pushes to main while the release lock is held' >&2\nexit 1\n",
        count.display()
    )
}

fn lines_in(f: &Path) -> usize {
    std::fs::read_to_string(f).map(|t| t.lines().count()).unwrap_or(0)
}

/// A shared bare repository over file:// runs its server-side hooks for tenon as for
/// `git push`: a declining pre-receive is `Failed` with the hook's message (not retried,
/// whatever words it prints), the branch unchanged. A stale ref lock on the remote is a
/// permanent failure too, not a race.
#[test]
fn file_remote_runs_hooks_and_permanent_refusals_fail_without_retries() {
    let fx = fixture();
    let count = fx.root.join("hook-runs");
    write_hook(&fx.remote, "pre-receive", &declining_hook(&count));
    let before = refs(&fx.remote);
    let r = fx.promote(&[]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let p = the_promotion(&r);
    assert_eq!(state(&p), "Failed", "the hook-protected remote accepted the promotion: {p:#}");
    let detail = p["detail"].as_str().unwrap();
    assert!(detail.contains("pre-receive hook declined"), "{detail}");
    assert!(detail.contains("while the release lock is held"), "the hook's message: {detail}");
    assert_eq!(refs(&fx.remote), before, "the remote's branch is unchanged");
    assert_eq!(lines_in(&count), 1, "a permanent refusal is not retried");

    // a stale lock left on the remote's branch: refused until someone removes it
    std::fs::remove_file(fx.remote.join("hooks/pre-receive")).unwrap();
    let lock = fx.remote.join("refs/heads/main.lock");
    std::fs::create_dir_all(lock.parent().unwrap()).unwrap();
    std::fs::write(&lock, "").unwrap();
    let t = Instant::now();
    let p = the_promotion(&fx.promote(&[]));
    assert_eq!(state(&p), "Failed", "{p:#}");
    assert!(p["detail"].as_str().unwrap().contains("main.lock"), "git's message: {p:#}");
    assert!(t.elapsed() < Duration::from_secs(5), "retried for {:?}", t.elapsed());
    assert_eq!(refs(&fx.remote), before);

    // without the hook and the lock it lands, once
    std::fs::remove_file(&lock).unwrap();
    let p = the_promotion(&fx.promote(&[]));
    assert_eq!(state(&p), "Landed", "{p:#}");
    assert_eq!(promotion_commits(&fx.remote).len(), 1);
}

/// The same through a real server (`git daemon`): tenon tells a refusal from a race by
/// libgit2's error code, the push status and whether the branch moved, never by words in
/// git's message. The hook's words and a stale ref lock are `Failed` after one push.
#[test]
fn permanent_refusals_through_git_daemon_fail_without_retries() {
    let test = "permanent_refusals_through_git_daemon_fail_without_retries";
    let Some((fx, _daemon, log, _url)) = daemon_fixture(test) else { return };
    let pushes = || std::fs::read_to_string(&log).unwrap_or_default().matches("Request receive-pack").count();
    let count = fx.root.join("hook-runs");
    write_hook(&fx.remote, "pre-receive", &declining_hook(&count));
    let before = refs(&fx.remote);
    let p = the_promotion(&fx.promote(&[]));
    assert_eq!(state(&p), "Failed", "{p:#}");
    let detail = p["detail"].as_str().unwrap();
    assert!(detail.contains("while the release lock is held"), "the hook's message: {detail}");
    assert_eq!((lines_in(&count), pushes()), (1, 1), "one push, no retries");
    assert_eq!(refs(&fx.remote), before);

    std::fs::remove_file(fx.remote.join("hooks/pre-receive")).unwrap();
    let lock = fx.remote.join("refs/heads/main.lock");
    std::fs::write(&lock, "").unwrap();
    let p = the_promotion(&fx.promote(&[]));
    assert_eq!(state(&p), "Failed", "a stale lock is not a race: {p:#}");
    assert_eq!(pushes(), 2, "one more push, no retries");
    assert_eq!(refs(&fx.remote), before);

    std::fs::remove_file(&lock).unwrap();
    let p = the_promotion(&fx.promote(&[]));
    assert_eq!(state(&p), "Landed", "{p:#}");
}

// ---------------------------------------------------------------------------------------
// 8. unreachable targets and wrong credentials: exit 1, a clear error, no secret printed

#[test]
fn missing_remote_fails_clearly_without_printing_the_token() {
    let fx = fixture_with(|repo| set_target_url(repo, "file:///nonexistent/remote.git"));
    let mut counts = Vec::new();
    for extra in [&["--output", "json"][..], &[][..], &["--output", "json", "-vv"][..]] {
        let mut args = vec!["promote", fx.repo_s()];
        args.extend_from_slice(extra);
        let r = tenon_env(&args, &fx.store, &[("TENON_GIT_TOKEN", TOKEN)]);
        assert_eq!(r.code, 1, "{extra:?}: stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
        assert!(!r.stdout.contains(TOKEN) && !r.stderr.contains(TOKEN), "{extra:?}: the token was printed");
        if extra.contains(&"json") {
            let ps = entries(&r);
            for p in &ps {
                assert_eq!(state(p), "Failed", "{p:#}");
                let detail = p["detail"].as_str().unwrap();
                assert!(detail.starts_with("git: "), "{detail}");
                assert!(detail.contains("/nonexistent/remote.git"), "the error names the target: {detail}");
            }
            counts.push(ps.len());
        } else {
            assert!(r.stdout.contains("Failed: git: "), "{}", r.stdout);
            let n = r.stdout.lines().filter(|l| l.starts_with("PromotionPolicy ")).count();
            counts.push(n);
        }
    }
    assert!(
        counts.iter().all(|n| *n == 1),
        "one policy must give one report entry, got {counts:?} (json, human, json -vv)"
    );
}

/// A dry run that cannot read the target must not report the incumbent gate as passed
/// ("nothing deployed yet"): the incumbent is unknown, not absent.
#[test]
fn dry_run_with_unreadable_target_does_not_pass_the_incumbent_gate() {
    let fx = fixture_with(|repo| set_target_url(repo, "file:///nonexistent/remote.git"));
    let r = fx.promote(&["--dry-run"]);
    let ps = entries(&r);
    assert_eq!(ps.len(), 1, "{}", r.stdout);
    let p = &ps[0];
    let incumbent_gate_passed = p["gates"]
        .as_array()
        .unwrap()
        .iter()
        .any(|g| g["passed"] == true && g["note"].as_str() == Some("nothing deployed yet"));
    assert!(
        !incumbent_gate_passed && p["promote"] != true,
        "exit {}: the target could not be read, yet the dry run says the incumbent gate passed \
         and it would promote: {p:#}\nstderr:\n{}",
        r.code,
        r.stderr
    );
}

/// An HTTP server on 127.0.0.1 that answers every request `401` with a Basic challenge;
/// returns its port and the `Authorization` headers it received.
fn refusing_http_server(stop: Arc<AtomicBool>) -> (u16, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = seen.clone();
    std::thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            match l.accept() {
                Ok((mut s, _)) => {
                    s.set_nonblocking(false).unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                    let req = read_request(&mut s).map(|(head, _)| head).unwrap_or_default();
                    for line in req.lines() {
                        if line.to_ascii_lowercase().starts_with("authorization:") {
                            seen2.lock().unwrap().push(line["authorization:".len()..].trim().to_string());
                        }
                    }
                    let _ = s.write_all(
                        b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"tenon-test\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    });
    (port, seen)
}

#[test]
fn wrong_https_credentials_fail_without_printing_the_token() {
    let stop = Arc::new(AtomicBool::new(false));
    let (port, seen) = refusing_http_server(stop.clone());
    let url = format!("http://127.0.0.1:{port}/remote.git");
    let fx = fixture_with(|repo| set_target_url(repo, &url));
    let token_file = fx.root.join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let tf = token_file.to_str().unwrap().to_string();
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)]);
    let cases: [Case; 3] = [
        (&["--output", "json"], &[("TENON_GIT_TOKEN", TOKEN)]),
        (&["--output", "json", "-vv"], &[("TENON_GIT_TOKEN", TOKEN)]),
        (&["--output", "json", "--git-token-file", &tf], &[]),
    ];
    let mut counts = Vec::new();
    for (extra, env) in cases {
        let mut args = vec!["promote", fx.repo_s()];
        args.extend_from_slice(extra);
        let r = tenon_env(&args, &fx.store, env);
        assert_eq!(r.code, 1, "{extra:?}: stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
        assert!(!r.stdout.contains(TOKEN) && !r.stderr.contains(TOKEN), "{extra:?}: the token was printed");
        let encoded = base64(format!("x-access-token:{TOKEN}").as_bytes());
        assert!(
            !r.stdout.contains(&encoded) && !r.stderr.contains(&encoded),
            "{extra:?}: the encoded token was printed"
        );
        let ps = entries(&r);
        for p in &ps {
            assert_eq!(state(p), "Failed", "{p:#}");
            let detail = p["detail"].as_str().unwrap();
            assert!(detail.contains("authentication"), "{extra:?}: not an authentication error: {detail}");
            assert!(detail.contains(&url), "{extra:?}: the error names the target: {detail}");
        }
        counts.push(ps.len());
    }
    stop.store(true, Ordering::SeqCst);
    // the token was offered (so the checks above mean something), as x-access-token
    let want = format!("Basic {}", base64(format!("x-access-token:{TOKEN}").as_bytes()));
    let seen = seen.lock().unwrap().clone();
    assert!(seen.contains(&want), "the server never received the token: {seen:?}");
    assert!(counts.iter().all(|n| *n == 1), "one policy must give one report entry, got {counts:?}");
}

// ---------------------------------------------------------------------------------------
// 9. run --promote

#[test]
fn run_with_promote_prints_one_combined_report() {
    let fx = fixture();
    let r = common::tenon_cached(&["run", fx.repo_s(), "--promote", "--output", "json"], &fx.store);
    assert_eq!(r.code, 0, "stdout:\n{}\nstderr:\n{}", r.stdout, r.stderr);
    let j = r.json();
    assert_eq!(j["kind"], "RunAndPromoteReport", "{j:#}");
    assert_eq!(j["run"]["runs"][0]["status"], "Succeeded", "{j:#}");
    assert_eq!(j["promotion"]["kind"], "PromotionReport", "{j:#}");
    let ps = j["promotion"]["promotions"].as_array().unwrap();
    assert_eq!(ps.len(), 1, "{j:#}");
    assert_eq!(ps[0]["state"], "Landed", "{j:#}");
    let commits = rev_list(&fx.remote);
    assert_eq!(commits.len(), 2);
    assert_eq!(ps[0]["commit"].as_str(), Some(commits[0].as_str()));
    assert_eq!(promotion_commits(&fx.remote).len(), 1);
}

// ---------------------------------------------------------------------------------------
// timing

#[test]
fn measure_promotion_time() {
    let fx = fixture();
    let (mut cold, mut warm, mut landed) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..5 {
        let remote = fx.root.join(format!("t{i}.git"));
        git(&fx.root, &["clone", "-q", "--bare", fx.repo_s(), remote.to_str().unwrap()]);
        git(&fx.repo, &["remote", "set-url", "origin", &format!("file://{}", remote.display())]);
        // first contact (a clone into the cache) + decide, via a dry run
        let t = Instant::now();
        let r = fx.promote(&["--dry-run"]);
        cold.push(t.elapsed());
        assert_eq!(state(&the_promotion(&r)), "DryRun");
        // decide + (incremental) fetch + commit + push
        let t = Instant::now();
        let r = fx.promote(&[]);
        warm.push(t.elapsed());
        assert_eq!(state(&the_promotion(&r)), "Landed", "{}", r.stdout);
        let t = Instant::now();
        let r = fx.promote(&[]);
        landed.push(t.elapsed());
        assert_eq!(state(&the_promotion(&r)), "AlreadyLanded");
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    eprintln!(
        "promotion time (whole `tenon promote` process, {} build, file:// remote, median of 5): \
         land {:?} (decide + fetch + commit + push, cache warm); dry run on a fresh remote {:?}; \
         rerun (AlreadyLanded) {:?}",
        if cfg!(debug_assertions) { "debug" } else { "release" },
        median(&mut warm),
        median(&mut cold),
        median(&mut landed)
    );
}

/// `tenon history` lists what the ledger on the target branch records, from git itself
/// (a store that never promoted sees it too).
#[test]
fn history_lists_the_ledger_of_the_target_branch() {
    let fx = fixture();
    let before = common::tenon_cached(&["history", fx.repo_s(), "--output", "json"], &fx.store);
    assert_eq!(before.code, 0, "{}\n{}", before.stdout, before.stderr);
    assert_eq!(before.json()["promotions"].as_array().map(|a| a.len()), Some(0), "{}", before.stdout);
    let p = the_promotion(&fx.promote(&[]));
    assert_eq!(state(&p), "Landed", "{p:#}");
    let other_store = fx.store.with_file_name("other-store");
    let h = common::tenon_cached(&["history", fx.repo_s(), "--env", "prod", "--output", "json"], &other_store);
    assert_eq!(h.code, 0, "{}\n{}", h.stdout, h.stderr);
    let list = h.json()["promotions"].as_array().cloned().unwrap_or_default();
    assert_eq!(list.len(), 1, "{}", h.stdout);
    assert_eq!(list[0]["id"], p["id"]);
    assert_eq!(list[0]["policy"], "pump-failure-prod");
    assert_eq!(list[0]["subjectDigest"], p["subjectDigest"]);
    assert!(list[0]["decidedAtNs"].as_i64().unwrap() > 0);
    let none = common::tenon_cached(&["history", fx.repo_s(), "--env", "staging", "--output", "json"], &other_store);
    assert_eq!(none.json()["promotions"].as_array().map(|a| a.len()), Some(0));
}

// ---------------------------------------------------------------------------------------
// 10. rollback, hold, release

/// The example without its incumbent gate (so a second decision with the same accuracy
/// can land) and with `suffix` appended to the URI the policy writes.
fn set_uri_suffix(repo: &Path, suffix: &str) {
    let f = repo.join("tekton/promotion.yaml");
    let text = std::fs::read_to_string(&f).unwrap();
    let line =
        text.lines().find(|l| l.trim_start().starts_with("value: $(subject.uri)")).expect("uri update").to_string();
    let indent = &line[..line.len() - line.trim_start().len()];
    std::fs::write(&f, text.replacen(&line, &format!("{indent}value: $(subject.uri){suffix}"), 1)).unwrap();
}

fn without_incumbent_gate(repo: &Path) {
    let f = repo.join("tekton/promotion.yaml");
    let text = std::fs::read_to_string(&f).unwrap();
    let gate = "    # and it must beat what is deployed now\n    - result: $(tasks.evaluate.results.accuracy)\n      operator: \">=\"\n      incumbent:\n        file: deploy/prod/model.yaml\n        path: metadata.annotations[\"tenon.dev/model-accuracy\"]\n      margin: \"0.005\"\n";
    assert!(text.contains(gate), "the example's promotion.yaml changed; update this test");
    std::fs::write(&f, text.replacen(gate, "", 1)).unwrap();
}

/// `tenon ARGS --output json` in the fixture's store.
fn tenon_json(fx: &Fx, args: &[&str]) -> Run {
    let mut a = args.to_vec();
    a.extend_from_slice(&["--output", "json"]);
    common::tenon_cached(&a, &fx.store)
}

fn show(remote: &Path, spec: &str) -> String {
    git(remote, &["show", spec])
}

#[test]
fn rollback_restores_values_holds_promotion_until_release() {
    let fx = fixture_with(without_incumbent_gate);
    let a = the_promotion(&fx.promote(&[]));
    assert_eq!(state(&a), "Landed", "{a:#}");
    let a_id = a["id"].as_str().unwrap().to_string();
    let model_a = show(&fx.remote, "main:deploy/prod/model.yaml");
    set_uri_suffix(&fx.repo, "#v2");
    let b = the_promotion(&fx.promote(&[]));
    assert_eq!(state(&b), "Landed", "{b:#}");
    let b_id = b["id"].as_str().unwrap().to_string();
    let model_b = show(&fx.remote, "main:deploy/prod/model.yaml");
    assert_ne!(model_a, model_b);
    assert!(model_b.contains("#v2\""), "{model_b}");

    // dry run: the diff, the hold, the message; nothing pushed
    let before = refs(&fx.remote);
    let dry = tenon_json(&fx, &["rollback", fx.repo_s(), "--env", "prod", "--to", &a_id[..10], "--dry-run"]);
    assert_eq!(dry.code, 0, "{}\n{}", dry.stdout, dry.stderr);
    assert_eq!(dry.json()["kind"], "RollbackReport");
    let d = &dry.json()["promotions"][0];
    assert_eq!(state(d), "DryRun", "{d:#}");
    let diffs = d["diff"].to_string();
    assert!(diffs.contains("deploy/prod/model.yaml") && diffs.contains(".tenon/holds/prod.yaml"), "{d:#}");
    assert!(d["message"].as_str().unwrap().contains(&format!("Tenon-Rollback-To: {a_id}")), "{d:#}");
    assert_eq!(refs(&fx.remote), before, "a dry run pushes nothing");

    // the rollback: a new promotion restoring A's values, and a hold, in one commit
    let r = tenon_json(
        &fx,
        &["rollback", fx.repo_s(), "--env", "prod", "--to", &a_id[..10], "--reason", "bad model", "--by", "alice"],
    );
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let rb = r.json()["promotions"][0].clone();
    assert_eq!(state(&rb), "Landed", "{rb:#}");
    let rb_id = rb["id"].as_str().unwrap().to_string();
    assert!(is_hex64(&rb_id) && rb_id != a_id && rb_id != b_id, "{rb:#}");
    let commits = rev_list(&fx.remote);
    assert_eq!(commits.len(), 4, "base, A, B, rollback: {commits:?}");
    assert_eq!(rb["commit"].as_str(), Some(commits[0].as_str()));
    assert_eq!(show(&fx.remote, "main:deploy/prod/model.yaml"), model_a, "A's values restored byte for byte");
    let msg = git(&fx.remote, &["log", "-1", "--format=%B", "main"]);
    let t = trailers(&msg);
    assert_eq!(trailer(&t, "Tenon-Promotion-Id"), [rb_id.as_str()], "{msg}");
    assert_eq!(trailer(&t, "Tenon-Rollback-To"), [a_id.as_str()], "{msg}");
    assert_eq!(trailer(&t, "Tenon-Rollback-Of"), [b_id.as_str()], "{msg}");
    let hold = show(&fx.remote, "main:.tenon/holds/prod.yaml");
    let doc: serde_yaml::Value = serde_yaml::from_str(&hold).unwrap();
    assert_eq!((doc["by"].as_str(), doc["reason"].as_str()), (Some("alice"), Some("bad model")), "{hold}");
    assert_eq!((doc["rollback"].as_str(), doc["restored"].as_str()), (Some(rb_id.as_str()), Some(a_id.as_str())));
    git(&fx.remote, &["cat-file", "-e", &format!("main:.tenon/promotions/prod/{rb_id}.yaml")]);
    let changed = git(&fx.remote, &["show", "--name-only", "--format=", "main"]);
    assert_eq!(changed.lines().count(), 3, "model.yaml, the ledger entry and the hold: {changed}");

    // the same rollback again: nothing new
    let again = tenon_json(&fx, &["rollback", fx.repo_s(), "--env", "prod", "--to", &a_id[..10]]);
    assert_eq!(again.code, 0, "{}\n{}", again.stdout, again.stderr);
    assert_eq!(state(&again.json()["promotions"][0]), "AlreadyLanded", "{}", again.stdout);
    assert_eq!(rev_list(&fx.remote).len(), 4);

    // a new decision is held: exit 0, a clear message, nothing committed
    set_uri_suffix(&fx.repo, "#v3");
    let held_refs = refs(&fx.remote);
    let h = fx.promote(&[]);
    assert_eq!(h.code, 0, "Held is not an error: {}\n{}", h.stdout, h.stderr);
    let p = the_promotion(&h);
    assert_eq!(state(&p), "Held", "{p:#}");
    assert!(p["detail"].as_str().unwrap().contains("tenon release --env prod"), "{p:#}");
    assert_eq!(p["hold"]["by"], "alice", "{p:#}");
    let human = common::tenon_cached(&["promote", fx.repo_s()], &fx.store);
    assert_eq!(human.code, 0);
    assert!(human.stdout.contains("Held: ") && human.stdout.contains("`tenon release --env prod`"), "{}", human.stdout);
    let run = common::tenon_cached(&["run", fx.repo_s(), "--promote", "--output", "json"], &fx.store);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert_eq!(run.json()["promotion"]["promotions"][0]["state"], "Held", "{}", run.stdout);
    assert_eq!(refs(&fx.remote), held_refs, "a hold is never bypassed");

    // history: the rollback and the hold
    let hist = tenon_json(&fx, &["history", fx.repo_s()]);
    let j = hist.json();
    let list = j["promotions"].as_array().unwrap();
    assert_eq!(list.len(), 3, "{j:#}");
    assert_eq!(list[0]["kind"], "rollback");
    assert_eq!(list[0]["restores"].as_str(), Some(a_id.as_str()));
    assert_eq!(j["holds"][0]["rollback"].as_str(), Some(rb_id.as_str()), "{j:#}");
    let hh = common::tenon_cached(&["history", fx.repo_s()], &fx.store);
    assert!(hh.stdout.contains("HELD prod"), "{}", hh.stdout);

    // release: a commit removing the hold; a second release has nothing to do
    let dry = tenon_json(&fx, &["release", fx.repo_s(), "--env", "prod", "--dry-run"]);
    assert_eq!(dry.code, 0);
    assert_eq!(state(&dry.json()["promotions"][0]), "DryRun", "{}", dry.stdout);
    assert_eq!(refs(&fx.remote), held_refs);
    let rel = tenon_json(&fx, &["release", fx.repo_s(), "--env", "prod", "--by", "bob"]);
    assert_eq!(rel.code, 0, "{}\n{}", rel.stdout, rel.stderr);
    assert_eq!(rel.json()["kind"], "ReleaseReport");
    assert_eq!(state(&rel.json()["promotions"][0]), "Landed", "{}", rel.stdout);
    assert_eq!(rev_list(&fx.remote).len(), 5);
    assert!(git_try(&fx.remote, &["cat-file", "-e", "main:.tenon/holds/prod.yaml"]).0 == false, "hold removed");
    assert!(git(&fx.remote, &["log", "-1", "--format=%B", "main"]).contains(&format!("Tenon-Released-Hold: {rb_id}")));
    let again = common::tenon_cached(&["release", fx.repo_s(), "--env", "prod"], &fx.store);
    assert_eq!(again.code, 0, "{}\n{}", again.stdout, again.stderr);
    assert!(again.stdout.contains("not held: nothing to release"), "{}", again.stdout);
    assert_eq!(rev_list(&fx.remote).len(), 5, "nothing to release: no commit");

    // automatic promotion resumes
    let c = the_promotion(&fx.promote(&[]));
    assert_eq!(state(&c), "Landed", "{c:#}");
    assert!(show(&fx.remote, "main:deploy/prod/model.yaml").contains("#v3\""));
    let hist = tenon_json(&fx, &["history", fx.repo_s(), "--env", "prod"]).json();
    let kinds: Vec<&str> = hist["promotions"].as_array().unwrap().iter().map(|r| r["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["promotion", "release", "rollback", "promotion", "promotion"], "{hist:#}");
    assert_eq!(hist["holds"].as_array().map(|h| h.len()), Some(0));
}

/// Commit `text` as `path` on the remote's main through a clone of our own (a person
/// editing the branch by hand).
fn commit_by_hand(fx: &Fx, path: &str, text: &str) {
    let clone = fx.root.join("by-hand");
    if !clone.exists() {
        git(&fx.root, &["clone", "-q", fx.remote.to_str().unwrap(), clone.to_str().unwrap()]);
    }
    git(&clone, &["pull", "-q", "--ff-only", "origin", "main"]);
    let f = clone.join(path);
    std::fs::create_dir_all(f.parent().unwrap()).unwrap();
    std::fs::write(&f, text).unwrap();
    git(&clone, &["add", "-A"]);
    git(&clone, &["commit", "-q", "-m", &format!("edit {path} by hand")]);
    git(&clone, &["push", "-q", "origin", "HEAD:main"]);
}

/// tenon's own documents on the branch are YAML read with serde: a hold and a ledger
/// entry rewritten by hand (other indentation, quoting and key order, comments) read as
/// written; a malformed one is invalid input (exit 2) naming the file and line.
#[test]
fn hand_edited_ledger_and_hold_read_as_written_and_malformed_ones_name_file_and_line() {
    let fx = fixture_with(without_incumbent_gate);
    let a = the_promotion(&fx.promote(&[]));
    assert_eq!(state(&a), "Landed", "{a:#}");
    let id = a["id"].as_str().unwrap().to_string();
    let entry = format!(".tenon/promotions/prod/{id}.yaml");
    let doc: serde_yaml::Value = serde_yaml::from_str(&show(&fx.remote, &format!("main:{entry}"))).unwrap();
    let update = &doc["updates"][0];
    let (file, path, value) =
        (update["file"].as_str().unwrap(), update["path"].as_str().unwrap(), update["value"].as_str().unwrap());
    let reformatted = format!(
        "# tidied by hand\nkind: 'PromotionRecord'\napiVersion: \"tenon.dev/v1alpha1\"\ndecidedAt:   1700000000000000000\n\
         id: '{id}'\nenvironment: prod\npolicy: {policy}\nsubject: {{digest: '{digest}', uri: \"{uri}\"}}\n\
         updates:\n    -   value: {value:?}\n        path: {path:?}\n        file: {file}\ngates: []\nprevious: ~\n",
        policy = doc["policy"].as_str().unwrap(),
        digest = doc["subject"]["digest"].as_str().unwrap(),
        uri = doc["subject"]["uri"].as_str().unwrap(),
    );
    commit_by_hand(&fx, &entry, &reformatted);
    let h = tenon_json(&fx, &["history", fx.repo_s(), "--env", "prod"]);
    assert_eq!(h.code, 0, "{}\n{}", h.stdout, h.stderr);
    let j = h.json();
    let rec = &j["promotions"][0];
    assert_eq!(rec["id"].as_str(), Some(id.as_str()), "{j:#}");
    assert_eq!(rec["decidedAtNs"].as_i64(), Some(1_700_000_000_000_000_000), "{j:#}");
    assert_eq!(rec["subjectDigest"], doc["subject"]["digest"].as_str().unwrap(), "{j:#}");
    assert_eq!((rec["updates"][0]["path"].as_str(), rec["updates"][0]["value"].as_str()), (Some(path), Some(value)));

    // a hold placed by hand, formatted its own way
    let (rollback, restored) = ("2".repeat(64), id.clone());
    let hold = format!(
        "# paused by hand during the incident\nkind: 'PromotionHold'\nheldAt:    1700000000000000001\nreason: >-\n  model v2 is\n  bad\n\
         environment: prod  # the environment\nrestored: \"{restored}\"\nrollback: '{rollback}'\nby: carol\napiVersion: tenon.dev/v1alpha1\n"
    );
    commit_by_hand(&fx, ".tenon/holds/prod.yaml", &hold);
    set_uri_suffix(&fx.repo, "#v2");
    let r = fx.promote(&[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let p = the_promotion(&r);
    assert_eq!(state(&p), "Held", "{p:#}");
    assert_eq!(p["hold"]["by"], "carol", "{p:#}");
    assert_eq!(p["hold"]["reason"], "model v2 is bad", "{p:#}");
    assert_eq!(p["hold"]["rollback"].as_str(), Some(rollback.as_str()), "{p:#}");
    assert_eq!(p["hold"]["restored"].as_str(), Some(restored.as_str()), "{p:#}");
    assert_eq!(p["hold"]["heldAtNs"].as_i64(), Some(1_700_000_000_000_000_001), "{p:#}");

    // malformed: invalid input, exit 2, the file and line named; nothing pushed
    let before = refs(&fx.remote);
    commit_by_hand(&fx, ".tenon/holds/prod.yaml", &hold.replace("heldAt:    1700000000000000001", "heldAt: yesterday"));
    let before_malformed = refs(&fx.remote);
    assert_ne!(before, before_malformed);
    let r = fx.promote(&[]);
    assert_eq!(r.code, 2, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("main:.tenon/holds/prod.yaml:3:"), "no file:line: {}", r.stderr);
    assert!(r.stderr.contains("heldAt"), "the field is named: {}", r.stderr);
    assert_eq!(refs(&fx.remote), before_malformed);
    let r = tenon_json(&fx, &["release", fx.repo_s(), "--env", "prod"]);
    assert_eq!(r.code, 2, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("main:.tenon/holds/prod.yaml:3:"), "{}", r.stderr);
    commit_by_hand(&fx, &entry, &reformatted.replace("decidedAt:   1700000000000000000", "decidedAt: [1, 2"));
    let h = tenon_json(&fx, &["history", fx.repo_s(), "--env", "prod"]);
    assert_eq!(h.code, 2, "{}\n{}", h.stdout, h.stderr);
    assert!(h.stderr.contains(&format!("main:{entry}:")), "{}", h.stderr);
}

#[test]
fn rollback_to_an_unknown_id_is_a_usage_error() {
    let fx = fixture();
    assert_eq!(state(&the_promotion(&fx.promote(&[]))), "Landed");
    let before = refs(&fx.remote);
    let r = common::tenon_cached(&["rollback", fx.repo_s(), "--env", "prod", "--to", "ffffffffffff"], &fx.store);
    assert_eq!(r.code, 2, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("no promotion \"ffffffffffff\"") && r.stderr.contains("tenon history"), "{}", r.stderr);
    let r = common::tenon_cached(&["rollback", fx.repo_s(), "--env", "staging", "--to", "ab"], &fx.store);
    assert_eq!(r.code, 2, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stderr.contains("no PromotionPolicy for environment \"staging\""), "{}", r.stderr);
    assert_eq!(refs(&fx.remote), before);
}

// ---------------------------------------------------------------------------------------
// 11. branch mode: a branch per promotion, landed when merged (merge commit or squash)

fn branch_mode(repo: &Path) {
    let f = repo.join("tekton/promotion.yaml");
    let text = std::fs::read_to_string(&f).unwrap();
    assert!(text.contains("\n  mode: direct\n"), "the example's promotion.yaml changed; update this test");
    std::fs::write(&f, text.replace("\n  mode: direct\n", "\n  mode: branch\n")).unwrap();
}

/// Merge `branch` into the remote's main from a fresh clone, like a pull request's merge
/// button (`squash`: one new commit with the branch's changes), then delete the branch.
fn merge_pull_request(fx: &Fx, branch: &str, squash: bool) {
    let work = fx.root.join(format!("merge-{}", branch.replace('/', "-")));
    git(&fx.root, &["clone", "-q", fx.remote.to_str().unwrap(), work.to_str().unwrap()]);
    let theirs = format!("origin/{branch}");
    if squash {
        git(&work, &["merge", "-q", "--squash", &theirs]);
        git(&work, &["commit", "-q", "-m", "Promote the model (#12)"]);
    } else {
        git(&work, &["merge", "-q", "--no-ff", "-m", "Merge pull request #12", &theirs]);
    }
    git(&work, &["push", "-q", "origin", "main", &format!(":{branch}")]);
}

#[test]
fn branch_mode_proposes_once_and_is_landed_after_the_merge() {
    for squash in [true, false] {
        let fx = fixture_with(branch_mode);
        let r = fx.promote(&[]);
        assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
        let p = the_promotion(&r);
        assert_eq!(state(&p), "Proposed", "{p:#}");
        let id = p["id"].as_str().unwrap().to_string();
        let branch = format!("tenon/promote/prod/{}", &id[..12]);
        assert_eq!(p["target"].as_str(), Some(format!("{} {branch}", fx.remote_url()).as_str()), "{p:#}");
        assert!(p["detail"].as_str().unwrap().contains("merged into main"), "{p:#}");
        // main untouched; the branch holds one commit on top of it, with the ledger entry
        assert_eq!(rev_list(&fx.remote), std::slice::from_ref(&fx.base));
        let on_branch: Vec<String> = git(&fx.remote, &["rev-list", &branch]).lines().map(String::from).collect();
        assert_eq!(on_branch.len(), 2, "{on_branch:?}");
        assert_eq!(p["commit"].as_str(), Some(on_branch[0].as_str()));
        git(&fx.remote, &["cat-file", "-e", &format!("{branch}:.tenon/promotions/prod/{id}.yaml")]);
        let msg = git(&fx.remote, &["log", "-1", "--format=%B", &branch]);
        assert_eq!(trailer(&trailers(&msg), "Tenon-Promotion-Id"), [id.as_str()], "{msg}");

        // rerun while the pull request is open: the same branch, no new commit
        let before = refs(&fx.remote);
        for _ in 0..2 {
            let p = the_promotion(&fx.promote(&[]));
            assert_eq!(state(&p), "Proposed", "{p:#}");
            assert_eq!(p["commit"].as_str(), Some(on_branch[0].as_str()), "{p:#}");
        }
        assert_eq!(refs(&fx.remote), before, "a rerun pushes nothing");

        // merged (and the branch deleted): landed; the branch is never recreated
        merge_pull_request(&fx, &branch, squash);
        let merged = refs(&fx.remote);
        assert!(!merged.contains(&branch), "{merged}");
        for _ in 0..2 {
            let r = fx.promote(&[]);
            assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
            let p = the_promotion(&r);
            assert_eq!(state(&p), "AlreadyLanded", "squash {squash}: {p:#}");
        }
        assert_eq!(refs(&fx.remote), merged, "squash {squash}: nothing pushed after the merge");
        let hist = common::tenon_cached(&["history", fx.repo_s(), "--output", "json"], &fx.store);
        assert_eq!(hist.json()["promotions"][0]["id"].as_str(), Some(id.as_str()), "{}", hist.stdout);
    }
}

// ---------------------------------------------------------------------------------------
// 12. SSH: a real OpenSSH server on 127.0.0.1, a key file, strict known_hosts

struct Sshd {
    _daemon: KillOnDrop,
    port: u16,
    log: PathBuf,
    /// The client key in authorized_keys, another key, and their private key texts.
    key: PathBuf,
    other_key: PathBuf,
    /// known_hosts with the server's host key; one with a different key for the host.
    known_hosts: PathBuf,
    wrong_known_hosts: PathBuf,
}

impl Sshd {
    /// sshd's log since it started serving tenon (after the probe with OpenSSH's client).
    fn log(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        log.split_once("TENON-PROBE-DONE").map(|(_, after)| after.to_string()).unwrap_or(log)
    }
}

fn ssh_keygen(path: &Path) -> Result<(), String> {
    let o = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "tenon-test", "-f"])
        .arg(path)
        .output()
        .map_err(|e| format!("cannot run ssh-keygen: {e}"))?;
    o.status.success().then_some(()).ok_or_else(|| format!("ssh-keygen failed: {}", String::from_utf8_lossy(&o.stderr)))
}

/// `sshd -D` on a free port of 127.0.0.1 with generated host and client keys, or why it
/// cannot run here.
fn start_sshd(dir: &Path) -> Result<Sshd, String> {
    let sshd = Path::new("/usr/sbin/sshd");
    if !sshd.exists() {
        return Err("/usr/sbin/sshd is absent (install openssh-server)".into());
    }
    std::fs::create_dir_all(dir).unwrap();
    let (host, key, other) = (dir.join("host_key"), dir.join("client_key"), dir.join("other_key"));
    for k in [&host, &key, &other] {
        ssh_keygen(k)?;
    }
    let pubkey = |k: &Path| std::fs::read_to_string(k.with_extension("pub")).unwrap();
    std::fs::write(dir.join("authorized_keys"), pubkey(&key)).unwrap();
    // sshd's privilege separation directory (as root); without it sshd cannot start
    let _ = std::fs::create_dir_all("/run/sshd");
    let port = free_port();
    let config = dir.join("sshd_config");
    std::fs::write(
        &config,
        format!(
            "ListenAddress 127.0.0.1\nHostKey {host}\nAuthorizedKeysFile {dir}/authorized_keys\nPidFile {dir}/sshd.pid\n\
             StrictModes no\nUsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             PermitRootLogin prohibit-password\n",
            host = host.display(),
            dir = dir.display()
        ),
    )
    .unwrap();
    let log = dir.join("sshd.log");
    let child = Command::new(sshd)
        .arg("-D")
        .arg("-e")
        .arg("-f")
        .arg(&config)
        .args(["-p", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .map_err(|e| format!("cannot start sshd: {e}"))?;
    let mut daemon = KillOnDrop(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(status)) = daemon.0.try_wait() {
            return Err(format!("sshd exited {status}: {}", std::fs::read_to_string(&log).unwrap_or_default()));
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!("sshd did not listen on 127.0.0.1:{port}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let entry = |k: &Path| {
        let p = pubkey(k);
        let mut f = p.split_whitespace();
        format!("[127.0.0.1]:{port} {} {}\n", f.next().unwrap(), f.next().unwrap())
    };
    let (known_hosts, wrong_known_hosts) = (dir.join("known_hosts"), dir.join("wrong_known_hosts"));
    std::fs::write(&known_hosts, entry(&host)).unwrap();
    std::fs::write(&wrong_known_hosts, entry(&other)).unwrap();
    // OpenSSH's own client must get in (a locked account or a missing git on the server's
    // PATH is this machine's problem, not tenon's)
    let user = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout).unwrap();
    let probe = Command::new("ssh")
        .args(["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", "IdentitiesOnly=yes", "-i"])
        .arg(&key)
        .arg("-o")
        .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
        .args([
            "-p",
            &port.to_string(),
            &format!("{}@127.0.0.1", user.trim()),
            "git-receive-pack --help >/dev/null 2>&1; command -v git-upload-pack",
        ])
        .output()
        .map_err(|e| format!("cannot run ssh: {e}"))?;
    if !probe.status.success() {
        return Err(format!(
            "OpenSSH's client cannot use this sshd: {}{}",
            String::from_utf8_lossy(&probe.stderr),
            std::fs::read_to_string(&log).unwrap_or_default()
        ));
    }
    // sshd logs what the probe's connection ends with; mark where tenon's part begins
    std::thread::sleep(Duration::from_millis(200));
    let _ = TcpStream::connect(("127.0.0.1", port)).and_then(|mut c| c.write_all(b"TENON-PROBE-DONE\r\n"));
    let deadline = Instant::now() + Duration::from_secs(5);
    while !std::fs::read_to_string(&log).unwrap_or_default().contains("TENON-PROBE-DONE") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(Sshd { _daemon: daemon, port, log, key, other_key: other, known_hosts, wrong_known_hosts })
}

/// The base64 body lines of a private key file (none may ever be printed).
fn secret_lines(key: &Path) -> Vec<String> {
    std::fs::read_to_string(key).unwrap().lines().filter(|l| !l.starts_with("-----")).map(String::from).collect()
}

/// The standard fixture with its policy's target on a real sshd (in `<root>/sshd`), no
/// `origin`: (fixture, sshd, the url), or None when sshd cannot run here (`test` is
/// skipped, saying so).
fn sshd_fixture(test: &str) -> Option<(Fx, Sshd, String)> {
    let fx = fixture();
    let sshd = match start_sshd(&fx.root.join("sshd")) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("SKIP {test}: {e}");
            return None;
        }
    };
    let user = String::from_utf8(Command::new("id").arg("-un").output().unwrap().stdout).unwrap().trim().to_string();
    let url = format!("ssh://{user}@127.0.0.1:{}{}", sshd.port, fx.remote.display());
    set_target_url(&fx.repo, &url);
    fx.commit_repo("promote over ssh");
    git(&fx.repo, &["remote", "remove", "origin"]);
    Some((fx, sshd, url))
}

#[test]
fn ssh_key_with_strict_known_hosts() {
    let Some((fx, sshd, url)) = sshd_fixture("ssh_key_with_strict_known_hosts") else { return };
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let before = refs(&fx.remote);
    let secrets: Vec<String> = [&sshd.key, &sshd.other_key].iter().flat_map(|k| secret_lines(k)).collect();
    let no_secrets = |r: &Run, what: &str| {
        for l in &secrets {
            assert!(
                !r.stdout.contains(l.as_str()) && !r.stderr.contains(l.as_str()),
                "{what}: private key material printed"
            );
        }
    };

    // the host key is not in known_hosts: refused before authenticating, nothing pushed
    let r = fx.promote(&["--ssh-key", &s(&sshd.key), "--known-hosts", &s(&sshd.wrong_known_hosts), "-vv"]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    no_secrets(&r, "unknown host");
    let p = the_promotion(&r);
    assert_eq!(state(&p), "Failed", "{p:#}");
    let detail = p["detail"].as_str().unwrap();
    assert!(detail.contains("host key") && detail.contains("known_hosts"), "not a host key error: {detail}");
    assert!(detail.contains(&url), "the error names the target: {detail}");
    let log = sshd.log();
    assert!(!log.contains("Accepted publickey"), "authenticated to an unverified host:\n{log}");

    // no --known-hosts: ~/.ssh/known_hosts (absent here) is used, still strictly
    let r = fx.promote(&["--ssh-key", &s(&sshd.key)]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    let p = the_promotion(&r);
    assert!(p["detail"].as_str().unwrap().contains("host key"), "{p:#}");
    assert!(!sshd.log().contains("Accepted publickey"), "unverified host");

    // the wrong client key: an authentication error
    let r = fx.promote(&["--ssh-key", &s(&sshd.other_key), "--known-hosts", &s(&sshd.known_hosts), "-vv"]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    no_secrets(&r, "wrong key");
    let p = the_promotion(&r);
    assert_eq!(state(&p), "Failed", "{p:#}");
    let detail = p["detail"].as_str().unwrap();
    assert!(detail.contains("authentication") && detail.contains(&url), "not an authentication error: {detail}");
    assert_eq!(refs(&fx.remote), before, "nothing pushed");

    // the right key and known_hosts: lands, once
    let r = fx.promote(&["--ssh-key", &s(&sshd.key), "--known-hosts", &s(&sshd.known_hosts)]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    no_secrets(&r, "landed");
    let p = the_promotion(&r);
    assert_eq!(state(&p), "Landed", "{p:#}");
    let commits = rev_list(&fx.remote);
    assert_eq!(commits.len(), 2);
    assert_eq!(p["commit"].as_str(), Some(commits[0].as_str()));
    let r = fx.promote(&["--ssh-key", &s(&sshd.key), "--known-hosts", &s(&sshd.known_hosts)]);
    assert_eq!(state(&the_promotion(&r)), "AlreadyLanded", "{}", r.stdout);
    assert_eq!(promotion_commits(&fx.remote).len(), 1);
    let log = sshd.log();
    assert!(log.contains("Accepted publickey"), "it went through sshd:\n{log}");
}

/// known_hosts as OpenSSH writes it on Debian (`HashKnownHosts yes`: `|1|salt|hash`
/// names, made here with `ssh-keygen -H`) is trusted; a key marked `@revoked` is refused
/// even when a plain line trusts it; a `@cert-authority` line is refused with a message
/// saying host certificates are not checked. Against the real sshd.
#[test]
fn known_hosts_hashed_revoked_and_cert_authority() {
    let Some((fx, sshd, _url)) = sshd_fixture("known_hosts_hashed_revoked_and_cert_authority") else { return };
    let dir = fx.root.join("sshd");
    let s = |p: &Path| p.to_str().unwrap().to_string();
    let plain = std::fs::read_to_string(&sshd.known_hosts).unwrap();
    let host_pub = std::fs::read_to_string(dir.join("host_key.pub")).unwrap();
    let host_key: Vec<&str> = host_pub.split_whitespace().take(2).collect();
    let ca = dir.join("ca_key");
    ssh_keygen(&ca).unwrap();
    let ca_pub = std::fs::read_to_string(ca.with_extension("pub")).unwrap();
    let before = refs(&fx.remote);
    let promote_with = |text: &str, name: &str| {
        let f = dir.join(name);
        std::fs::write(&f, text).unwrap();
        let r = fx.promote(&["--ssh-key", &s(&sshd.key), "--known-hosts", &s(&f)]);
        (r.code, the_promotion(&r))
    };

    // @revoked: refused, although the next line trusts the same key
    let revoked = format!("@revoked [127.0.0.1]:{} {} {}\n{plain}", sshd.port, host_key[0], host_key[1]);
    let (code, p) = promote_with(&revoked, "known_hosts_revoked");
    assert_eq!((code, state(&p)), (1, "Failed"), "{p:#}");
    let detail = p["detail"].as_str().unwrap();
    assert!(detail.contains("@revoked") && detail.contains("known_hosts_revoked:1"), "{detail}");
    assert!(!sshd.log().contains("Accepted publickey"), "authenticated to a revoked host key");

    // @cert-authority only: refused, and the message says why
    let ca_only = format!("@cert-authority [127.0.0.1]:{} {ca_pub}", sshd.port);
    let (code, p) = promote_with(&ca_only, "known_hosts_ca");
    assert_eq!((code, state(&p)), (1, "Failed"), "{p:#}");
    let detail = p["detail"].as_str().unwrap();
    assert!(detail.contains("@cert-authority") && detail.contains("host key"), "{detail}");
    assert_eq!(refs(&fx.remote), before, "nothing pushed");

    // hashed by ssh-keygen -H: trusted, lands
    let hashed = dir.join("known_hosts_hashed");
    std::fs::write(&hashed, &plain).unwrap();
    let o = Command::new("ssh-keygen").arg("-H").arg("-f").arg(&hashed).output().unwrap();
    assert!(o.status.success(), "ssh-keygen -H: {}", String::from_utf8_lossy(&o.stderr));
    let text = std::fs::read_to_string(&hashed).unwrap();
    assert!(text.starts_with("|1|") && !text.contains("127.0.0.1"), "not hashed: {text}");
    let (code, p) = promote_with(&text, "known_hosts_hashed");
    assert_eq!((code, state(&p)), (0, "Landed"), "{p:#}");
    assert!(sshd.log().contains("Accepted publickey"), "it went through sshd");
}

// ---------------------------------------------------------------------------------------
// 13. HTTP token: `git http-backend` (git's own CGI) behind a tiny HTTP server on
//     127.0.0.1 that checks Basic auth. Plain HTTP on loopback (TLS is libgit2's job
//     and would only add a test CA here).

/// Read one HTTP request: (head, body), the body de-chunked.
fn read_request(s: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut rest = buf[head_end..].to_vec();
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    };
    let mut fill = |rest: &mut Vec<u8>, want: usize| {
        while rest.len() < want {
            match s.read(&mut chunk) {
                Ok(0) | Err(_) => return false,
                Ok(n) => rest.extend_from_slice(&chunk[..n]),
            }
        }
        true
    };
    if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(i) = rest.windows(2).position(|w| w == b"\r\n") {
                    break i;
                }
                let n = rest.len() + 1;
                if !fill(&mut rest, n) {
                    return None;
                }
            };
            let size = usize::from_str_radix(String::from_utf8_lossy(&rest[..line_end]).trim(), 16).ok()?;
            rest.drain(..line_end + 2);
            if !fill(&mut rest, size + 2) {
                return None;
            }
            body.extend_from_slice(&rest[..size]);
            rest.drain(..size + 2);
            if size == 0 {
                return Some((head, body));
            }
        }
    }
    let len: usize = header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
    if !fill(&mut rest, len) {
        return None;
    }
    rest.truncate(len);
    Some((head, rest))
}

/// Serve `root` with `git http-backend` on 127.0.0.1 to requests whose Basic credentials
/// are `x-access-token:<token>`; `401` otherwise. Returns the port and the number of
/// requests that reached git.
fn git_http_server(root: PathBuf, token: &str, stop: Arc<AtomicBool>) -> (u16, Arc<Mutex<Vec<String>>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let port = l.local_addr().unwrap().port();
    let served = Arc::new(Mutex::new(Vec::new()));
    let served2 = served.clone();
    let want = format!("Basic {}", base64(format!("x-access-token:{token}").as_bytes()));
    std::thread::spawn(move || {
        while !stop.load(Ordering::SeqCst) {
            let Ok((mut s, _)) = l.accept() else {
                std::thread::sleep(Duration::from_millis(10));
                continue;
            };
            s.set_nonblocking(false).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let Some((head, body)) = read_request(&mut s) else { continue };
            let mut lines = head.lines();
            let mut first = lines.next().unwrap_or("").split_whitespace();
            let (method, target) = (first.next().unwrap_or("GET").to_string(), first.next().unwrap_or("/").to_string());
            let headers: Vec<(String, String)> = lines
                .filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string())))
                .collect();
            let get = |k: &str| headers.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()).unwrap_or_default();
            if get("authorization") != want {
                let _ = s.write_all(b"HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"tenon-test\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                continue;
            }
            let (path, query) = target.split_once('?').unwrap_or((&target, ""));
            served2.lock().unwrap().push(format!("{method} {path}?{query}"));
            let mut cgi = Command::new("git")
                .arg("http-backend")
                .env("GIT_PROJECT_ROOT", &root)
                .env("GIT_HTTP_EXPORT_ALL", "1")
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .env("REQUEST_METHOD", &method)
                .env("PATH_INFO", path)
                .env("QUERY_STRING", query)
                .env("CONTENT_TYPE", get("content-type"))
                .env("CONTENT_LENGTH", body.len().to_string())
                .env("REMOTE_USER", "x-access-token")
                .env("REMOTE_ADDR", "127.0.0.1")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .expect("git http-backend starts");
            let mut stdin = cgi.stdin.take().unwrap();
            let writer = std::thread::spawn(move || {
                let _ = stdin.write_all(&body);
            });
            let out = cgi.wait_with_output().unwrap().stdout;
            let _ = writer.join();
            let split = out
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map(|i| (i, 4))
                .or_else(|| out.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2)));
            let (cgi_head, cgi_body) = match split {
                Some((i, n)) => (String::from_utf8_lossy(&out[..i]).to_string(), &out[i + n..]),
                None => (String::new(), &out[..]),
            };
            let mut status = "200 OK".to_string();
            let mut resp = String::new();
            for l in cgi_head.lines() {
                match l.split_once(':') {
                    Some((k, v)) if k.eq_ignore_ascii_case("status") => status = v.trim().to_string(),
                    Some(_) => resp.push_str(&format!("{}\r\n", l.trim_end())),
                    None => {}
                }
            }
            let _ = s.write_all(
                format!("HTTP/1.1 {status}\r\n{resp}Content-Length: {}\r\nConnection: close\r\n\r\n", cgi_body.len())
                    .as_bytes(),
            );
            let _ = s.write_all(cgi_body);
        }
    });
    (port, served)
}

#[test]
fn http_token_lands_through_git_http_backend() {
    let fx = fixture();
    let stop = Arc::new(AtomicBool::new(false));
    let (port, served) = git_http_server(fx.root.clone(), TOKEN, stop.clone());
    let url = format!("http://127.0.0.1:{port}/remote.git");
    set_target_url(&fx.repo, &url);
    fx.commit_repo("promote over http");
    git(&fx.repo, &["remote", "remove", "origin"]);
    let before = refs(&fx.remote);
    let printed = |r: &Run, what: &str, secret: &str| {
        let encoded = base64(format!("x-access-token:{secret}").as_bytes());
        for s in [secret, encoded.as_str()] {
            assert!(!r.stdout.contains(s) && !r.stderr.contains(s), "{what}: a credential was printed");
        }
    };

    // a wrong token: refused, a clear error, nothing printed, nothing pushed
    let wrong = "wrong-token-value";
    let r = tenon_env(&["promote", fx.repo_s(), "--output", "json", "-vv"], &fx.store, &[("TENON_GIT_TOKEN", wrong)]);
    assert_eq!(r.code, 1, "{}\n{}", r.stdout, r.stderr);
    printed(&r, "wrong token", wrong);
    let p = the_promotion(&r);
    assert_eq!(state(&p), "Failed", "{p:#}");
    let detail = p["detail"].as_str().unwrap();
    assert!(detail.contains("authentication") && detail.contains(&url), "{detail}");
    assert!(served.lock().unwrap().is_empty(), "git was reached without the token");
    assert_eq!(refs(&fx.remote), before);

    // the token from --git-token-env: lands through git http-backend, once
    let args = ["promote", fx.repo_s(), "--output", "json", "--git-token-env", "DEPLOY_TOKEN"];
    let r = tenon_env(&args, &fx.store, &[("DEPLOY_TOKEN", TOKEN)]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    printed(&r, "landed", TOKEN);
    let p = the_promotion(&r);
    assert_eq!(state(&p), "Landed", "{p:#}");
    let commits = rev_list(&fx.remote);
    assert_eq!(commits.len(), 2, "{commits:?}");
    assert_eq!(p["commit"].as_str(), Some(commits[0].as_str()));
    let r = tenon_env(&args, &fx.store, &[("DEPLOY_TOKEN", TOKEN)]);
    assert_eq!(state(&the_promotion(&r)), "AlreadyLanded", "{}", r.stdout);
    assert_eq!(promotion_commits(&fx.remote).len(), 1);
    stop.store(true, Ordering::SeqCst);
    let served = served.lock().unwrap().clone();
    assert!(
        served.iter().any(|r| r.starts_with("POST /remote.git/git-receive-pack")),
        "no push through http-backend: {served:?}"
    );
}

// ---------------------------------------------------------------------------------------
// 14. signed commits: git's SSH signature format, verified by `git verify-commit`

#[test]
fn commits_signed_with_an_ssh_key_verify_with_git() {
    let fx = fixture_with(without_incumbent_gate);
    let key = fx.root.join("signing_key");
    if let Err(e) = ssh_keygen(&key) {
        eprintln!("SKIP commits_signed_with_an_ssh_key_verify_with_git: {e}");
        return;
    }
    let public = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    let allowed = fx.root.join("allowed_signers");
    std::fs::write(&allowed, format!("tenon@localhost namespaces=\"git\" {public}")).unwrap();
    let verify = |rev: &str| {
        git_try(
            &fx.remote,
            &[
                "-c",
                "gpg.format=ssh",
                "-c",
                &format!("gpg.ssh.allowedSignersFile={}", allowed.display()),
                "verify-commit",
                rev,
            ],
        )
    };
    // the check can fail: the unsigned import does not verify
    assert!(!verify("main").0, "an unsigned commit verified");
    let r = fx.promote(&["--sign-with-ssh-key", key.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let p = the_promotion(&r);
    assert_eq!(state(&p), "Landed", "{p:#}");
    let (ok, out) = verify("main");
    assert!(ok, "git verify-commit failed:\n{out}");
    assert!(out.contains("Good \"git\" signature for tenon@localhost"), "{out}");
    // the signed commit is the promotion, with its trailers
    let msg = git(&fx.remote, &["log", "-1", "--format=%B", "main"]);
    assert_eq!(trailer(&trailers(&msg), "Tenon-Promotion-Id"), [p["id"].as_str().unwrap()], "{msg}");
    // a key that cannot sign: a clear terminal error, nothing pushed
    let before = refs(&fx.remote);
    set_uri_suffix(&fx.repo, "#v2");
    let r = fx.promote(&["--sign-with-ssh-key", fx.root.join("no-such-key").to_str().unwrap()]);
    let p = the_promotion(&r);
    assert_eq!(r.code, 1, "{p:#}");
    assert!(p["detail"].as_str().unwrap().contains("cannot sign with"), "{p:#}");
    assert_eq!(refs(&fx.remote), before);
}

/// In branch mode a rollback is proposed on its own branch like a promotion; its hold
/// takes effect once merged.
#[test]
fn branch_mode_rollback_holds_once_merged() {
    let fx = fixture_with(|repo| {
        branch_mode(repo);
        without_incumbent_gate(repo);
    });
    let a = the_promotion(&fx.promote(&[]));
    assert_eq!(state(&a), "Proposed", "{a:#}");
    let a_id = a["id"].as_str().unwrap().to_string();
    merge_pull_request(&fx, &format!("tenon/promote/prod/{}", &a_id[..12]), true);
    let r = tenon_json(&fx, &["rollback", fx.repo_s(), "--env", "prod", "--to", &a_id[..8], "--reason", "hold it"]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let rb = r.json()["promotions"][0].clone();
    assert_eq!(state(&rb), "Proposed", "{rb:#}");
    let branch = format!("tenon/promote/prod/{}", &rb["id"].as_str().unwrap()[..12]);
    git(&fx.remote, &["cat-file", "-e", &format!("{branch}:.tenon/holds/prod.yaml")]);
    assert!(!git_try(&fx.remote, &["cat-file", "-e", "main:.tenon/holds/prod.yaml"]).0, "not on main before the merge");
    merge_pull_request(&fx, &branch, false);
    set_uri_suffix(&fx.repo, "#v2");
    let before = refs(&fx.remote);
    let p = the_promotion(&fx.promote(&[]));
    assert_eq!(state(&p), "Held", "{p:#}");
    assert_eq!(refs(&fx.remote), before, "held: no branch pushed");
}

// ---------------------------------------------------------------------------------------
// 15. exit codes of promotions that cannot work: never 2 ("invalid input") for a git,
//     network or store failure; the cause is printed once

/// The one `error: ` line on stderr; no part of it (split at ": ") is said twice.
fn the_error_said_once(r: &Run) -> String {
    let lines: Vec<&str> = r.stderr.lines().filter(|l| l.starts_with("error: ")).collect();
    assert_eq!(lines.len(), 1, "exactly one error line:\n{}", r.stderr);
    let parts: Vec<&str> = lines[0].split(": ").map(str::trim).filter(|p| p.len() > 8).collect();
    for (i, p) in parts.iter().enumerate() {
        assert!(
            !parts[i + 1..].iter().any(|q| q.contains(p) || p.contains(q)),
            "the cause {p:?} is printed twice: {}",
            lines[0]
        );
    }
    lines[0].to_string()
}

/// Make `table` of the store's SQLite database unreadable (its root page overwritten),
/// as a bad disk or a torn write would; the rest of the database still opens.
fn corrupt_table(store: &Path, table: &str) {
    use std::io::{Seek, SeekFrom};
    let db = store.join("cache/tenon.db");
    let (page, size) = {
        let c = rusqlite::Connection::open(&db).unwrap();
        c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).unwrap();
        let page: i64 =
            c.query_row("SELECT rootpage FROM sqlite_master WHERE name = ?1", [table], |r| r.get(0)).unwrap();
        let size: i64 = c.query_row("PRAGMA page_size", [], |r| r.get(0)).unwrap();
        (page, size)
    };
    let mut f = std::fs::OpenOptions::new().write(true).open(&db).unwrap();
    f.seek(SeekFrom::Start(((page - 1) * size) as u64)).unwrap();
    f.write_all(&vec![0xFF; size as usize]).unwrap();
}

/// Targets tenon cannot use: a git:// port nobody listens on, and a directory that is not
/// a git repository.
fn unusable_targets(root: &Path) -> Vec<String> {
    let plain = root.join("not-a-repo");
    std::fs::create_dir_all(&plain).unwrap();
    std::fs::write(plain.join("README"), "just a directory\n").unwrap();
    vec![format!("git://127.0.0.1:{}/remote.git", free_port()), plain.display().to_string()]
}

#[test]
fn history_of_an_unusable_target_exits_3_with_the_cause_once() {
    let fx = fixture();
    for url in unusable_targets(&fx.root) {
        set_target_url(&fx.repo, &url);
        let r = common::tenon_cached(&["history", fx.repo_s()], &fx.store);
        assert_eq!(r.code, 3, "{url}: tenon could not work (not invalid input):\n{}\n{}", r.stdout, r.stderr);
        let line = the_error_said_once(&r);
        assert!(line.contains(&url), "{url}: the error names the target: {line}");
        assert!(r.stdout.is_empty(), "{url}: {}", r.stdout);
        git(&fx.repo, &["checkout", "-q", "--", "."]);
    }
}

/// A promotion, rollback or release that meets an unusable target is a failed promotion
/// (exit 1, state `Failed` naming the target), not invalid input.
#[test]
fn promote_rollback_release_to_an_unusable_target_fail_with_exit_1() {
    let fx = fixture();
    for url in unusable_targets(&fx.root) {
        set_target_url(&fx.repo, &url);
        for args in [
            vec!["promote", fx.repo_s()],
            vec!["rollback", fx.repo_s(), "--env", "prod", "--to", "cbaa9667"],
            vec!["release", fx.repo_s(), "--env", "prod"],
        ] {
            let r = tenon_json(&fx, &args);
            assert_eq!(r.code, 1, "{url} {args:?}:\n{}\n{}", r.stdout, r.stderr);
            let ps = r.json()["promotions"].as_array().cloned().unwrap_or_default();
            assert_eq!(ps.len(), 1, "{url} {args:?}: {}", r.stdout);
            assert_eq!(state(&ps[0]), "Failed", "{url} {args:?}: {:#}", ps[0]);
            assert!(ps[0]["detail"].as_str().unwrap().contains(&url), "{url} {args:?}: {:#}", ps[0]);
        }
        git(&fx.repo, &["checkout", "-q", "--", "."]);
    }
}

/// The store cannot record the decision (its promotions table is corrupt): tenon could not
/// work (exit 3, the database's own words once), and nothing is pushed.
#[test]
fn a_corrupt_store_during_promotion_exits_3_and_pushes_nothing() {
    let fx = fixture();
    corrupt_table(&fx.store, "promotions");
    let before = refs(&fx.remote);
    for args in [vec!["promote", fx.repo_s()], vec!["run", fx.repo_s(), "-q", "--promote"]] {
        let r = common::tenon_cached(&args, &fx.store);
        assert_eq!(r.code, 3, "{args:?}: tenon could not work (not invalid input):\n{}\n{}", r.stdout, r.stderr);
        let line = the_error_said_once(&r);
        assert!(line.contains("malformed"), "{args:?}: the database's reason is shown: {line}");
        assert!(line.contains("store"), "{args:?}: the error says it is the store: {line}");
        assert_eq!(refs(&fx.remote), before, "{args:?}: nothing may be pushed without a recorded decision");
    }
}
