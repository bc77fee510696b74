//! `tenon watch` end to end: the real binary following a real directory (inotify) or a
//! real bare git remote on disk, its HTTP endpoint spoken to over 127.0.0.1 with raw
//! HTTP/1.1, real signals. Conditions are awaited by polling `/status` with a deadline.
//!
//! Measurements (printed with `--nocapture`): file save -> affected task start (directory
//! mode), webhook -> reconcile start (git mode).

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::fixture::{copy_dir, Fixture};
use serde_json::Value;

const SECRET: &str = "hook-secret-for-tests";

// ---------------------------------------------------------------------------------------
// helpers

/// A running watcher, killed (SIGKILL) if the test ends without stopping it.
struct Watcher {
    child: Option<Child>,
    addr: String,
    log: PathBuf,
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if let Some(c) = &mut self.child {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Watcher {
    /// `tenon watch ARGS --listen 127.0.0.1:0` with `store` as TENON_STORE; waits until it
    /// listens.
    fn start(args: &[&str], store: &Path, env: &[(&str, &str)]) -> Watcher {
        std::fs::create_dir_all(store).unwrap();
        let addr_file = store.join(format!("addr-{}", rand_suffix()));
        let log = store.join(format!("watch-{}.log", rand_suffix()));
        let mut cmd = common::tenon_command(&["watch"], store);
        cmd.args(args)
            .args(["--listen", "127.0.0.1:0", "--listen-file", addr_file.to_str().unwrap(), "-q"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("tenon watch starts");
        let mut w = Watcher { child: Some(child), addr: String::new(), log };
        let deadline = Instant::now() + Duration::from_secs(30);
        while w.addr.is_empty() {
            if let Ok(a) = std::fs::read_to_string(&addr_file) {
                w.addr = a.trim().to_string();
                break;
            }
            if let Some(st) = w.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("tenon watch exited early ({st}):\n{}", w.log_text());
            }
            assert!(Instant::now() < deadline, "tenon watch did not listen:\n{}", w.log_text());
            std::thread::sleep(Duration::from_millis(20));
        }
        w
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn get(&self, path: &str) -> (u16, String) {
        http(&self.addr, "GET", path, &[], b"")
    }

    fn status(&self) -> Value {
        let (code, body) = self.get("/status");
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    fn reconciles(&self) -> u64 {
        self.status()["reconciles"].as_u64().unwrap()
    }

    /// Poll /status until `cond` holds (60 s deadline); returns that status.
    fn wait_status(&self, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let s = self.status();
            if cond(&s) {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; status:\n{s:#}\nlog:\n{}",
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Wait until more than `n` reconciles finished; returns the status.
    fn wait_reconciles(&self, n: u64) -> Value {
        self.wait_status(&format!("reconcile #{}", n + 1), |s| s["reconciles"].as_u64().unwrap() > n)
    }

    fn metric(&self, line_prefix: &str) -> f64 {
        let (_, body) = self.get("/metrics");
        body.lines()
            .find(|l| l.starts_with(line_prefix) && l[line_prefix.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    /// Send `sig` and wait (up to `limit`) for the exit code.
    fn signal_and_wait(&mut self, sig: i32, limit: Duration) -> i32 {
        unsafe { libc::kill(self.pid(), sig) };
        let deadline = Instant::now() + limit;
        let child = self.child.as_mut().unwrap();
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                self.child = None;
                return st.code().unwrap_or(-1);
            }
            assert!(Instant::now() < deadline, "tenon watch did not stop within {limit:?}:\n{}", self.log_text());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

const SIGTERM: i32 = libc::SIGTERM;

fn rand_suffix() -> String {
    format!("{}-{}", std::process::id(), Instant::now().elapsed().as_nanos() ^ now_ns() as u128)
}

fn now_ns() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as i64
}

/// One HTTP/1.1 request; (status code, body).
fn http(addr: &str, method: &str, path: &str, headers: &[(&str, String)], body: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).to_string();
    let code = text.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (code, body)
}

fn hmac_hex(secret: &[u8], body: &[u8]) -> String {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
    mac.update(body);
    mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

/// POST a GitHub-style push event for `main`, signed with `secret`.
fn push_hook(w: &Watcher, secret: Option<&str>) -> (u16, String) {
    let body = br#"{"ref":"refs/heads/main","after":"0000"}"#;
    let mut h = vec![("X-GitHub-Event", "push".to_string()), ("Content-Type", "application/json".to_string())];
    if let Some(s) = secret {
        h.push(("X-Hub-Signature-256", format!("sha256={}", hmac_hex(s.as_bytes(), body))));
    }
    http(&w.addr, "POST", "/hooks/git", &h, body)
}

fn task<'a>(status: &'a Value, name: &str) -> &'a Value {
    status["lastReconcile"]["report"]["runs"][0]["tasks"]
        .as_array()
        .and_then(|ts| ts.iter().find(|t| t["name"] == name))
        .unwrap_or_else(|| panic!("no task {name} in the last reconcile: {status:#}"))
}

fn task_status<'a>(status: &'a Value, name: &str) -> &'a str {
    task(status, name)["status"].as_str().unwrap()
}

fn git(dir: &Path, args: &[&str]) -> String {
    let o = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["-c", "user.name=Test", "-c", "user.email=test@example.com", "-c", "commit.gpgsign=false"])
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .output()
        .expect("git runs");
    assert!(o.status.success(), "git {args:?} failed: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// Two tasks, each reading one input file; `a` reports when it started.
const TWO_TASKS: &str = r#"
apiVersion: tekton.dev/v1
kind: Task
metadata:
  name: use-a
  annotations:
    tenon.dev/inputs: "a.txt"
spec:
  workspaces: [{name: src}]
  results: [{name: started}]
  steps:
    - name: s
      image: debian
      script: |
        date +%s.%N | tr -d '\n' > $(results.started.path)
        cat $(workspaces.src.path)/a.txt
---
apiVersion: tekton.dev/v1
kind: Task
metadata:
  name: use-b
  annotations:
    tenon.dev/inputs: "b.txt"
spec:
  workspaces: [{name: src}]
  steps:
    - name: s
      image: alpine
      script: cat $(workspaces.src.path)/b.txt
---
apiVersion: tekton.dev/v1
kind: Pipeline
metadata: {name: two}
spec:
  workspaces: [{name: source}]
  tasks:
    - {name: a, taskRef: {name: use-a}, workspaces: [{name: src, workspace: source}]}
    - {name: b, taskRef: {name: use-b}, workspaces: [{name: src, workspace: source}]}
---
apiVersion: tekton.dev/v1
kind: PipelineRun
metadata:
  name: two-run
  annotations: {tenon.dev/repo-workspace: source}
spec:
  pipelineRef: {name: two}
  workspaces: [{name: source, emptyDir: {}}]
"#;

// ---------------------------------------------------------------------------------------
// directory mode

#[test]
fn directory_mode_reruns_what_changed_once_per_settled_change() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("repo");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("pipeline.yaml"), TWO_TASKS).unwrap();
    std::fs::write(dir.join("a.txt"), "a0\n").unwrap();
    std::fs::write(dir.join("b.txt"), "b0\n").unwrap();
    std::fs::write(dir.join("notes.md"), "notes\n").unwrap();
    // the store inside the watched directory: its writes must not trigger reconciles
    let store = dir.join(".store");
    // a wide window keeps the burst below one window even on a loaded machine
    let w = Watcher::start(&["--dir", dir.to_str().unwrap(), "--sandbox", "host", "--debounce", "1s"], &store, &[]);
    let s = w.wait_status("the first sync", |s| s["ready"] == true && s["reconciles"] == 1);
    assert_eq!(s["lastReconcile"]["outcome"], "succeeded", "{s:#}");
    assert_eq!((task_status(&s, "a"), task_status(&s, "b")), ("Succeeded", "Succeeded"));
    assert_eq!(w.get("/readyz").0, 200);
    assert_eq!(w.get("/healthz").0, 200);

    // 1. edit an input of a: a reruns, b is cached
    let saved_at = now_ns() as f64 / 1e9;
    std::fs::write(dir.join("a.txt"), "a1\n").unwrap();
    let s = w.wait_reconciles(1);
    assert_eq!((task_status(&s, "a"), task_status(&s, "b")), ("Succeeded", "Cached"), "{s:#}");
    let started: f64 = task(&s, "a")["results"]["started"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap_or_else(|e| panic!("{e}: {:#}", task(&s, "a")));
    println!(
        "MEASURE dir-mode: file save -> affected task start: {:.0} ms (debounce 1 s)",
        (started - saved_at) * 1000.0
    );
    assert_eq!(w.metric("tenon_cache_hits_total"), 1.0);

    // 2. a file outside every task's inputs: a reconcile that runs nothing
    std::fs::write(dir.join("notes.md"), "more notes\n").unwrap();
    let s = w.wait_reconciles(2);
    assert_eq!((task_status(&s, "a"), task_status(&s, "b")), ("Cached", "Cached"), "{s:#}");

    // 3. a burst of 50 writes, then an editor-style save (temp file + rename): one reconcile
    for i in 0..50 {
        std::fs::write(dir.join("a.txt"), format!("burst {i}\n")).unwrap();
    }
    std::fs::write(dir.join(".a.txt.swp"), "saved\n").unwrap();
    std::fs::rename(dir.join(".a.txt.swp"), dir.join("a.txt")).unwrap();
    let s = w.wait_reconciles(3);
    assert_eq!(task_status(&s, "a"), "Succeeded", "{s:#}");
    // settled: nothing else arrives (several debounce windows later)
    std::thread::sleep(Duration::from_millis(3000));
    let s = w.status();
    assert_eq!(s["reconciles"], 4, "the burst caused more than one reconcile:\n{}", w.log_text());
    assert_eq!(s["reconciling"], false);
    assert_eq!(w.metric("tenon_reconciles_total{outcome=\"succeeded\"}"), 4.0);
    assert!(w.metric("tenon_last_successful_reconcile_timestamp_seconds") > 1.0e9);

    // an invalid manifest is reported, the watcher keeps serving, a fix reconciles
    std::fs::write(dir.join("broken.yaml"), "apiVersion: tekton.dev/v1\nkind: Task\nmetadata: {name: broken}\nspec:\n  steps: [{name: s, image: alpine, scriptt: x, scrpt: y}]\n  params: [{name: p, type: nope}]\n").unwrap();
    let s = w.wait_reconciles(4);
    assert_eq!(s["lastReconcile"]["outcome"], "invalid", "{s:#}");
    assert!(s["lastReconcile"]["error"].as_str().unwrap().contains("error(s)"), "{s:#}");
    assert!(s["lastReconcile"]["messages"].to_string().contains("broken.yaml"), "{s:#}");
    assert_eq!(w.get("/readyz").0, 200);
    std::fs::remove_file(dir.join("broken.yaml")).unwrap();
    let s = w.wait_reconciles(5);
    assert_eq!(s["lastReconcile"]["outcome"], "succeeded", "{s:#}");
}

/// `<tmp>/repo` holding [`TWO_TASKS`] and the two input files it reads.
/// `repo/` holding TWO_TASKS and its inputs, `store/` next to it.
fn two_task_fixture() -> Fixture {
    let fx = Fixture::with_yaml(TWO_TASKS);
    fx.write("a.txt", "a0\n");
    fx.write("b.txt", "b0\n");
    fx
}

/// A TaskRun whose step's `securityContext` nests mappings to exactly `depth` levels of the
/// document (root mapping included).
fn nested_task_run(depth: usize) -> String {
    // root(1) spec(2) taskSpec(3) steps(4) step(5) securityContext(6..)
    let n = depth - 5;
    format!(
        "apiVersion: tekton.dev/v1\nkind: TaskRun\nmetadata: {{name: deep}}\nspec:\n  taskSpec:\n    steps:\n      - name: s\n        image: alpine\n        script: echo deep\n        securityContext: {}x{}\n",
        "{a: ".repeat(n),
        "}".repeat(n)
    )
}

/// Hostile nesting (20,000 and 200,000 levels) in the watched tree: each revision is
/// reported `invalid` quickly, the watcher keeps serving, and it recovers when the file
/// is fixed; a document nested exactly to the limit still runs.
#[test]
fn directory_mode_survives_hostile_nesting_and_recovers() {
    let fx = two_task_fixture();
    let (dir, store) = (&fx.repo, &fx.store);
    let w = Watcher::start(&["--dir", dir.to_str().unwrap(), "--sandbox", "host", "--debounce", "300ms"], store, &[]);
    let s = w.wait_status("the first sync", |s| s["ready"] == true && s["reconciles"] == 1);
    assert_eq!(s["lastReconcile"]["outcome"], "succeeded", "{s:#}");

    let mut n = 1;
    for levels in [20_000usize, 200_000] {
        let t0 = Instant::now();
        std::fs::write(dir.join("deep.yaml"), format!("a: {}{}\n", "[".repeat(levels), "]".repeat(levels))).unwrap();
        let s = w.wait_reconciles(n);
        n += 1;
        println!("MEASURE {levels} levels -> invalid reconcile: {} ms", t0.elapsed().as_millis());
        assert_eq!(s["lastReconcile"]["outcome"], "invalid", "{levels} levels: {s:#}");
        let messages = s["lastReconcile"]["messages"].to_string();
        assert!(messages.contains("deep.yaml:1:259") && messages.contains("nested deeper than 256 levels"), "{s:#}");
        assert_eq!(w.get("/healthz").0, 200);
        assert_eq!(w.get("/readyz").0, 200);
    }

    // fixed: at the limit, the deep TaskRun is valid and runs
    std::fs::write(dir.join("deep.yaml"), nested_task_run(256)).unwrap();
    let s = w.wait_reconciles(n);
    n += 1;
    assert_eq!(s["lastReconcile"]["outcome"], "succeeded", "{s:#}\n{}", w.log_text());
    // one level more is invalid again, and removing the file recovers
    std::fs::write(dir.join("deep.yaml"), nested_task_run(257)).unwrap();
    let s = w.wait_reconciles(n);
    n += 1;
    assert_eq!(s["lastReconcile"]["outcome"], "invalid", "{s:#}");
    std::fs::remove_file(dir.join("deep.yaml")).unwrap();
    let s = w.wait_reconciles(n);
    assert_eq!(s["lastReconcile"]["outcome"], "succeeded", "{s:#}");
}

/// SIGTERM while a task runs: a clean exit, no process left, and the next start reruns
/// the interrupted task only.
#[test]
fn sigterm_mid_task_exits_cleanly_and_the_next_start_reruns_only_the_interrupted_task() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("repo");
    std::fs::create_dir_all(&dir).unwrap();
    let block = tmp.path().join("block");
    let started = tmp.path().join("started");
    std::fs::write(&block, "").unwrap();
    let marker = format!("{}.{}", 900 + std::process::id() % 97, std::process::id() % 10007);
    std::fs::write(
        dir.join("pipeline.yaml"),
        format!(
            r#"
apiVersion: tekton.dev/v1
kind: Pipeline
metadata: {{name: slow}}
spec:
  tasks:
    - name: fast
      taskSpec:
        steps: [{{name: s, image: alpine, script: "echo fast"}}]
    - name: slow
      runAfter: [fast]
      taskSpec:
        steps:
          - name: s
            image: alpine
            script: |
              if [ -e {block} ]; then
                touch {started}
                sleep {marker}
              fi
---
apiVersion: tekton.dev/v1
kind: PipelineRun
metadata: {{name: slow-run}}
spec:
  pipelineRef: {{name: slow}}
"#,
            block = block.display(),
            started = started.display(),
        ),
    )
    .unwrap();
    let store = tmp.path().join("store");
    let mut w = Watcher::start(&["--dir", dir.to_str().unwrap(), "--sandbox", "host"], &store, &[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !started.exists() {
        assert!(Instant::now() < deadline, "the slow task never started:\n{}", w.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    let sleeping = || -> Vec<String> {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok().map(|c| (e.file_name(), c)))
            .filter(|(_, c)| String::from_utf8_lossy(c).replace('\0', " ").contains(&format!("sleep {marker}")))
            .map(|(p, _)| p.to_string_lossy().to_string())
            .collect()
    };
    // `touch started` runs just before the sleep: wait for the sleep itself
    let deadline = Instant::now() + Duration::from_secs(10);
    while sleeping().is_empty() {
        assert!(Instant::now() < deadline, "the step's sleep is not running:\n{}", w.log_text());
        std::thread::sleep(Duration::from_millis(10));
    }
    let t0 = Instant::now();
    let code = w.signal_and_wait(SIGTERM, Duration::from_secs(20));
    println!("MEASURE SIGTERM mid-task -> exit: {} ms", t0.elapsed().as_millis());
    assert_eq!(code, 0, "tenon watch did not exit cleanly:\n{}", w.log_text());
    let deadline = Instant::now() + Duration::from_secs(5);
    while !sleeping().is_empty() {
        assert!(Instant::now() < deadline, "orphan processes left: {:?}", sleeping());
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(w.log_text().contains("outcome=cancelled"), "{}", w.log_text());
    // the watcher logs through tracing (level and target), not hand-built lines
    let cancelled = " WARN tenon::watch: reconcile outcome=cancelled duration=";
    assert!(w.log_text().lines().any(|l| l.contains(cancelled)), "{}", w.log_text());

    // next start: fast is cached, slow (interrupted) reruns
    std::fs::remove_file(&block).unwrap();
    let out = common::tenon_command(
        &["watch", "--dir", dir.to_str().unwrap(), "--sandbox", "host", "--once", "-q", "--log-format", "json"],
        &store,
    )
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    for l in err.lines() {
        assert!(serde_json::from_str::<Value>(l).is_ok(), "not a JSON log line: {l}\n{err}");
    }
    let line: Value = err
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v["message"] == "reconcile")
        .unwrap_or_else(|| panic!("no reconcile line:\n{err}"));
    assert_eq!(line["outcome"], "succeeded", "{line}");
    assert_eq!(line["tasks"], "1 cached, 1 succeeded", "{line}");
    // a tracing event (one log path): level, target, timestamp, fields at the top level
    assert_eq!((line["level"].as_str(), line["target"].as_str()), (Some("INFO"), Some("tenon::watch")), "{line}");
    assert!(line["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')), "{line}");
    assert!(line["duration"].as_str().is_some_and(|d| d.ends_with('s')), "{line}");
    assert!(line.get("fields").is_none(), "{line}");
}

// ---------------------------------------------------------------------------------------
// git mode

struct GitFx {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    remote: PathBuf,
    store: PathBuf,
    n: std::cell::Cell<u32>,
}

impl GitFx {
    /// The model-promotion example pushed to a bare remote on disk.
    fn new() -> GitFx {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let seed = root.join("seed");
        copy_dir(&common::repo_root().join("examples").join("model-promotion"), &seed);
        git(&seed, &["init", "-q", "-b", "main"]);
        git(&seed, &["add", "-A"]);
        git(&seed, &["commit", "-q", "-m", "import"]);
        let remote = root.join("remote.git");
        git(&root, &["clone", "-q", "--bare", seed.to_str().unwrap(), remote.to_str().unwrap()]);
        GitFx { store: root.join("store"), remote, root, _tmp: tmp, n: std::cell::Cell::new(0) }
    }

    fn url(&self) -> String {
        format!("file://{}", self.remote.display())
    }

    fn tip(&self) -> String {
        git(&self.remote, &["rev-parse", "refs/heads/main"])
    }

    /// Clone the remote, let `edit` change the work tree, commit and push; the new tip.
    fn push(&self, msg: &str, edit: impl FnOnce(&Path)) -> String {
        self.n.set(self.n.get() + 1);
        let work = self.root.join(format!("work{}", self.n.get()));
        git(&self.root, &["clone", "-q", self.url().as_str(), work.to_str().unwrap()]);
        edit(&work);
        git(&work, &["add", "-A"]);
        git(&work, &["commit", "-q", "-m", msg]);
        git(&work, &["push", "-q", "origin", "main"]);
        self.tip()
    }

    fn watch(&self, extra: &[&str]) -> Watcher {
        let url = self.url();
        let mut args = vec!["--git", url.as_str(), "--branch", "main", "--interval", "1h", "--sandbox", "host"];
        args.extend_from_slice(extra);
        Watcher::start(&args, &self.store, &[("TENON_WEBHOOK_SECRET", SECRET)])
    }
}

#[test]
fn git_mode_reconciles_each_revision_once_and_skips_its_own_promotion_commits() {
    let fx = GitFx::new();
    let base = fx.tip();
    let w = fx.watch(&[]);
    let s = w.wait_status("the first sync", |s| s["ready"] == true && s["reconciles"].as_u64() >= Some(1));
    assert_eq!(s["lastReconcile"]["revision"], base.as_str(), "{s:#}");
    assert_eq!(s["lastReconcile"]["outcome"], "succeeded", "{s:#}");
    // the example's gates pass: tenon promoted into the remote
    assert_eq!(s["promotions"]["prod"]["state"], "Landed", "{s:#}");
    let promoted = fx.tip();
    assert_ne!(promoted, base);
    assert!(git(&fx.remote, &["log", "-1", "--format=%B", "main"]).contains("Tenon-Promotion-Id:"));
    let task_runs = w.metric("tenon_task_runs_total{status=\"Succeeded\"}");

    // webhooks: unsigned and wrongly signed are rejected, nothing is fetched for them
    assert_eq!(push_hook(&w, None).0, 401);
    assert_eq!(push_hook(&w, Some("wrong-secret")).0, 401);
    let gitlab = |token: &str| {
        http(&w.addr, "POST", "/hooks/git", &[("X-Gitlab-Token", token.to_string())], br#"{"ref":"refs/heads/main"}"#)
    };
    assert_eq!(gitlab("not-the-secret").0, 401);
    assert_eq!(w.metric("tenon_webhooks_total{result=\"rejected\"}"), 3.0);
    // another branch's push is ignored
    let other = br#"{"ref":"refs/heads/feature"}"#;
    let sig = format!("sha256={}", hmac_hex(SECRET.as_bytes(), other));
    let (code, body) = http(&w.addr, "POST", "/hooks/git", &[("X-Hub-Signature-256", sig)], other);
    assert_eq!(code, 202, "{body}");
    assert!(body.contains("ignored"), "{body}");

    // tenon's own promotion commit: fetched, recognised, no task runs
    let (code, body) = push_hook(&w, Some(SECRET));
    assert_eq!(code, 202, "{body}");
    let s = w.wait_status("the promotion commit", |s| s["lastReconcile"]["revision"] == promoted.as_str());
    assert_eq!(s["lastReconcile"]["outcome"], "skipped", "{s:#}");
    assert!(s["lastReconcile"].get("report").is_none(), "{s:#}");
    assert_eq!(w.metric("tenon_task_runs_total{status=\"Succeeded\"}"), task_runs);
    assert_eq!(w.remote_tip_count(&fx), 1);

    // a new commit: exactly that revision is reconciled, once, promptly after the webhook
    let n = w.reconciles();
    let rev = fx.push("tweak train.py", |d| {
        let f = d.join("src/train.py");
        let t = std::fs::read_to_string(&f).unwrap();
        std::fs::write(&f, format!("{t}\n# tweak\n")).unwrap();
    });
    let hook_at = now_ns();
    assert_eq!(push_hook(&w, Some(SECRET)).0, 202);
    assert_eq!(push_hook(&w, Some(SECRET)).0, 202);
    let s = w.wait_status("the pushed revision", |s| {
        s["lastReconcile"]["revision"] == rev.as_str() && s["reconciling"] == false
    });
    let start: humantime::Timestamp = s["lastReconcile"]["startedAt"].as_str().unwrap().parse().unwrap();
    let start_ns = std::time::SystemTime::from(start).duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as i64;
    println!("MEASURE git-mode: webhook -> reconcile start: {:.1} ms", (start_ns - hook_at) as f64 / 1e6);
    assert_eq!(s["lastReconcile"]["outcome"], "succeeded", "{s:#}");
    assert_eq!(task_status(&s, "train"), "Succeeded", "{s:#}");
    assert_eq!(task_status(&s, "prepare"), "Cached", "{s:#}");
    assert_eq!(s["reconciles"].as_u64().unwrap(), n + 1, "{s:#}");
    assert_eq!(s["revision"], rev.as_str());
    let (_, metrics) = w.get("/metrics");
    assert!(metrics.contains(&format!("revision=\"{rev}\"")), "{metrics}");
    // a further webhook with nothing new: no reconcile
    assert_eq!(push_hook(&w, Some(SECRET)).0, 202);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(w.reconciles(), n + 1);

    // an invalid manifest: reported, /readyz still answers, the next good commit reconciles
    let bad = fx.push("break a task", |d| {
        std::fs::write(d.join("tekton/broken.yaml"), "apiVersion: tekton.dev/v1\nkind: Pipeline\nmetadata: {name: broken}\nspec:\n  tasks: [{name: x, taskRef: {name: does-not-exist}}]\n").unwrap();
    });
    assert_eq!(push_hook(&w, Some(SECRET)).0, 202);
    let s = w.wait_status("the invalid revision", |s| s["lastReconcile"]["revision"] == bad.as_str());
    assert_eq!(s["lastReconcile"]["outcome"], "invalid", "{s:#}");
    assert!(s["lastReconcile"]["messages"].to_string().contains("broken.yaml"), "{s:#}");
    assert!(s["lastError"]["message"].as_str().is_some(), "{s:#}");
    assert_eq!(w.get("/readyz").0, 200);
    assert_eq!(w.metric("tenon_reconciles_total{outcome=\"invalid\"}"), 1.0);
    let good = fx.push("fix", |d| std::fs::remove_file(d.join("tekton/broken.yaml")).unwrap());
    assert_eq!(push_hook(&w, Some(SECRET)).0, 202);
    let s = w.wait_status("the fixed revision", |s| {
        s["lastReconcile"]["revision"] == good.as_str() && s["reconciling"] == false
    });
    assert_eq!(s["lastReconcile"]["outcome"], "succeeded", "{s:#}");

    // a restart does not redo a reconciled revision
    drop(w);
    let out = common::tenon_command(
        &["watch", "--git", fx.url().as_str(), "--once", "--sandbox", "host", "-q", "--log-format", "json"],
        &fx.store,
    )
    .output()
    .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("\"reconcile\""), "a reconciled revision was reconciled again:\n{err}");
}

impl Watcher {
    /// Promotion commits on the remote's main (each one is a decision).
    fn remote_tip_count(&self, fx: &GitFx) -> usize {
        git(&fx.remote, &["log", "--format=%B", "main"]).matches("Tenon-Promotion-Id:").count()
    }
}

#[test]
fn unreachable_remote_is_retried_and_the_watcher_keeps_serving() {
    let tmp = tempfile::tempdir().unwrap();
    let url = format!("file://{}", tmp.path().join("missing.git").display());
    let w = Watcher::start(&["--git", url.as_str(), "--interval", "1h"], &tmp.path().join("store"), &[]);
    let s = w.wait_status("a fetch error", |s| !s["lastError"].is_null());
    assert!(s["lastError"]["message"].as_str().unwrap().contains("missing.git"), "{s:#}");
    assert_eq!(w.get("/healthz").0, 200);
    assert_eq!(w.get("/readyz").0, 503);
    // retried with backoff (1 s, 2 s, ...), not only at the 1 h interval
    let deadline = Instant::now() + Duration::from_secs(20);
    while w.metric("tenon_fetch_errors_total") < 2.0 {
        assert!(Instant::now() < deadline, "the remote was not retried:\n{}", w.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    // a second watcher of the same remote on the same store is refused
    let out =
        common::tenon_command(&["watch", "--git", url.as_str(), "--once"], &tmp.path().join("store")).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("another tenon watch already follows"), "{err}");
    // unknown paths and methods
    assert_eq!(w.get("/nope").0, 404);
    assert_eq!(w.get("/hooks/git").0, 405);
}

/// `--once` exits like `tenon run`: 0 ok, 1 a run failed, 2 invalid manifests.
#[test]
fn once_exit_codes() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let once = |yaml: &str| {
        let dir = tempfile::tempdir_in(tmp.path()).unwrap();
        std::fs::write(dir.path().join("p.yaml"), yaml).unwrap();
        // inside a pod $POD_NAME is always set: it must not demand --leader-elect
        let out = common::tenon_command(
            &["watch", "--dir", dir.path().to_str().unwrap(), "--once", "--sandbox", "host", "-q"],
            &store,
        )
        .env("POD_NAME", "tenon-0")
        .output()
        .unwrap();
        (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).to_string())
    };
    let run = |script: &str| {
        format!("apiVersion: tekton.dev/v1\nkind: TaskRun\nmetadata: {{name: one}}\nspec:\n  taskSpec:\n    steps: [{{name: s, image: alpine, script: \"{script}\"}}]\n")
    };
    let (code, err) = once(&run("exit 0"));
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("outcome=succeeded"), "{err}");
    let (code, err) = once(&run("exit 3"));
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("outcome=failed"), "{err}");
    let (code, err) =
        once("apiVersion: tekton.dev/v1\nkind: TaskRun\nmetadata: {name: one}\nspec:\n  taskRef: {name: missing}\n");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("p.yaml:") && err.contains("outcome=invalid"), "{err}");
}

/// TWO_TASKS in a fixture: (the fixture, its repo, its store).
fn two_task_dir() -> (Fixture, PathBuf, PathBuf) {
    let fx = two_task_fixture();
    let (dir, store) = (fx.repo.clone(), fx.store.clone());
    (fx, dir, store)
}

/// The leader gate (library API, used by the Kubernetes Lease election): no reconcile while
/// not leading, a reconcile as soon as leadership is granted; `/status` and the metric show it.
#[test]
fn leader_gate_holds_reconciles_until_leadership() {
    let (fx, dir, store) = two_task_dir();
    let addr_file = fx.root.join("addr");
    let (tx, rx) = tokio::sync::watch::channel(false);
    let stop = tokio_util::sync::CancellationToken::new();
    let opts = tenon::watch::WatchOptions {
        source: tenon::watch::Source::Dir(dir.clone()),
        settings: tenon::reconcile::RunSettings {
            run: None,
            params: vec![],
            parallel: None,
            state_dir: store.clone(),
            max_result_size: 4096,
            pass_env: vec![],
            namespace: "default".into(),
            no_cache: false,
            sandbox: tenon::exec::local::SandboxMode::Host,
            executor: tenon::exec::ExecutorKind::Local,
            kube: Default::default(),
            rerun: vec![],
            keep_runs: 5,
            remote: None,
            import_on_plan: false,
            digest_sources: false,
        },
        quiet: true,
        listen: "127.0.0.1:0".parse().unwrap(),
        listen_file: Some(addr_file.clone()),
        debounce: Duration::from_millis(100),
        poll: false,
        interval: Duration::from_secs(3600),
        max_backoff: Duration::from_secs(5),
        webhook_secret: None,
        http_limits: Default::default(),
        once: false,
        shutdown: tenon::watch::ShutdownMode::Cancel,
        shutdown_timeout: Duration::from_secs(10),
        promote: false,
        promote_opts: tenon::promote::run::PromoteOptions {
            dry_run: false,
            policy: None,
            credentials: Default::default(),
            state_dir: store.clone(),
            max_attempts: 1,
        },
        json_logs: false,
        leader: Some(rx),
        stop: stop.clone(),
    };
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let handle = rt.spawn(tenon::watch::watch(opts));
    let deadline = Instant::now() + Duration::from_secs(30);
    while !addr_file.exists() {
        assert!(Instant::now() < deadline, "the watcher did not listen");
        std::thread::sleep(Duration::from_millis(10));
    }
    let w = Watcher { child: None, addr: std::fs::read_to_string(&addr_file).unwrap(), log: fx.root.join("none") };
    let s = w.wait_status("leader=false", |s| s["leader"] == false);
    assert_eq!(s["reconciles"], 0, "{s:#}");
    assert_eq!(w.metric("tenon_leader"), 0.0);
    assert_eq!(w.get("/readyz").0, 503);
    tx.send(true).unwrap();
    let s = w.wait_reconciles(0);
    assert_eq!(s["leader"], true);
    assert_eq!(s["lastReconcile"]["outcome"], "succeeded", "{s:#}");
    assert_eq!(w.metric("tenon_leader"), 1.0);
    stop.cancel();
    let r = rt.block_on(handle).unwrap();
    assert!(matches!(r, Ok(tenon::error::Outcome::Ok)), "{r:?}");
}

/// Commit `seed` (a new repository on `main`), push it to a bare `root/remote.git` (its
/// `origin`); the remote's `file://` URL.
fn seed_remote(root: &Path, seed: &Path, msg: &str) -> String {
    git(seed, &["init", "-q", "-b", "main"]);
    git(seed, &["add", "-A"]);
    git(seed, &["commit", "-q", "-m", msg]);
    let remote = root.join("remote.git");
    git(root, &["clone", "-q", "--bare", seed.to_str().unwrap(), remote.to_str().unwrap()]);
    git(seed, &["remote", "add", "origin", remote.to_str().unwrap()]);
    format!("file://{}", remote.display())
}

/// Revisions pushed during a reconcile are not queued: the next reconcile takes the newest,
/// the ones in between are never reconciled.
#[test]
fn git_mode_newest_revision_wins() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let seed = root.join("seed");
    std::fs::create_dir_all(&seed).unwrap();
    let started = root.join("started");
    let release = root.join("release");
    std::fs::write(
        seed.join("run.yaml"),
        format!(
            r#"apiVersion: tekton.dev/v1
kind: TaskRun
metadata:
  name: one
  annotations: {{tenon.dev/repo-workspace: src}}
spec:
  workspaces: [{{name: src, emptyDir: {{}}}}]
  taskSpec:
    workspaces: [{{name: src}}]
    steps:
      - name: s
        image: debian
        script: |
          cat $(workspaces.src.path)/version.txt
          if [ -e $(workspaces.src.path)/slow ]; then
            touch {started}
            while [ ! -e {release} ]; do sleep 0.05; done
          fi
"#,
            started = started.display(),
            release = release.display()
        ),
    )
    .unwrap();
    std::fs::write(seed.join("version.txt"), "1\n").unwrap();
    std::fs::write(seed.join("slow"), "").unwrap();
    let url = seed_remote(root, &seed, "v1 (slow)");
    let v1 = git(&seed, &["rev-parse", "HEAD"]);
    let w = Watcher::start(&["--git", url.as_str(), "--interval", "1h", "--sandbox", "host"], &root.join("store"), &[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !started.exists() {
        assert!(Instant::now() < deadline, "v1's task did not start:\n{}", w.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    // two more revisions while v1 is reconciling, each announced by a webhook
    let mut revs = vec![];
    for v in ["2", "3"] {
        std::fs::write(seed.join("version.txt"), format!("{v}\n")).unwrap();
        let _ = std::fs::remove_file(seed.join("slow"));
        git(&seed, &["add", "-A"]);
        git(&seed, &["commit", "-q", "-m", &format!("v{v}")]);
        git(&seed, &["push", "-q", "origin", "main"]);
        revs.push(git(&seed, &["rev-parse", "HEAD"]));
        assert_eq!(push_hook(&w, None).0, 202);
    }
    assert_eq!(w.status()["reconciling"], true);
    std::fs::write(&release, "").unwrap();
    let s = w.wait_status("the newest revision", |s| s["lastReconcile"]["revision"] == revs[1].as_str());
    assert_eq!(s["lastReconcile"]["outcome"], "succeeded", "{s:#}");
    assert_eq!(s["reconciles"], 2, "expected v1 then v3 only:\n{}", w.log_text());
    let log = w.log_text();
    assert!(log.contains(&format!("revision={}", &v1[..12])), "{log}");
    assert!(!log.contains(&format!("revision={}", &revs[0][..12])), "the superseded v2 was reconciled:\n{log}");
}

/// A revision superseded while it reconciled does not promote over the newer one: its tasks
/// finish, its promotion is skipped, and the newer revision's decision lands.
#[test]
fn git_mode_superseded_revision_does_not_promote() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let seed = root.join("seed");
    std::fs::create_dir_all(seed.join("deploy")).unwrap();
    let started = root.join("started");
    let release = root.join("release");
    std::fs::write(
        seed.join("release.yaml"),
        format!(
            r#"apiVersion: tekton.dev/v1
kind: Pipeline
metadata: {{name: rel}}
spec:
  workspaces: [{{name: src}}]
  tasks:
    - name: build
      workspaces: [{{name: src, workspace: src}}]
      taskSpec:
        workspaces: [{{name: src}}]
        results: [{{name: version}}]
        steps:
          - name: s
            image: debian
            script: |
              if [ -e $(workspaces.src.path)/slow ]; then
                touch {started}
                while [ ! -e {release} ]; do sleep 0.05; done
              fi
              tr -d '\n' < $(workspaces.src.path)/version.txt > $(results.version.path)
---
apiVersion: tekton.dev/v1
kind: PipelineRun
metadata:
  name: rel-run
  annotations: {{tenon.dev/repo-workspace: src}}
spec:
  pipelineRef: {{name: rel}}
  workspaces: [{{name: src, emptyDir: {{}}}}]
---
apiVersion: tenon.dev/v1alpha1
kind: PromotionPolicy
metadata: {{name: rel-prod}}
spec:
  pipelineRunRef: {{name: rel-run}}
  environment: prod
  subject: {{uri: "v$(tasks.build.results.version)", digest: "version-$(tasks.build.results.version)"}}
  gates:
    - {{result: $(tasks.build.results.version), operator: ">=", value: "0"}}
  target:
    branch: main
    updates:
      - {{file: deploy/env.yaml, path: version, value: $(tasks.build.results.version)}}
  mode: direct
"#,
            started = started.display(),
            release = release.display()
        ),
    )
    .unwrap();
    std::fs::write(seed.join("deploy/env.yaml"), "version: \"0\"\n").unwrap();
    std::fs::write(seed.join("version.txt"), "1\n").unwrap();
    std::fs::write(seed.join("slow"), "").unwrap();
    let url = seed_remote(root, &seed, "v1 (slow)");
    let remote = root.join("remote.git");
    let w = Watcher::start(&["--git", url.as_str(), "--interval", "1h", "--sandbox", "host"], &root.join("store"), &[]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !started.exists() {
        assert!(Instant::now() < deadline, "v1's task did not start:\n{}", w.log_text());
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::write(seed.join("version.txt"), "2\n").unwrap();
    std::fs::remove_file(seed.join("slow")).unwrap();
    git(&seed, &["add", "-A"]);
    git(&seed, &["commit", "-q", "-m", "v2"]);
    git(&seed, &["push", "-q", "origin", "main"]);
    let v2 = git(&seed, &["rev-parse", "HEAD"]);
    std::fs::write(&release, "").unwrap();
    // v1 finishes but does not promote; v2 reconciles and promotes
    let s =
        w.wait_status("v2 promoted", |s| s["lastReconcile"]["revision"] == v2.as_str() && s["reconciling"] == false);
    assert_eq!(s["promotions"]["prod"]["state"], "Landed", "{s:#}");
    assert!(w.log_text().contains("superseded by newer revision"), "{}", w.log_text());
    assert_eq!(git(&remote, &["show", "main:deploy/env.yaml"]), "version: \"2\"");
    let log = git(&remote, &["log", "--format=%B", "main"]);
    assert_eq!(log.matches("Tenon-Promotion-Id:").count(), 1, "{log}");
    assert!(!log.contains("version-1"), "v1's promotion was applied:\n{log}");
}

// ---------------------------------------------------------------------------------------
// the HTTP endpoint under slow clients

/// 300 clients that trickle a request (half the head, half a webhook body) one byte at a
/// time: /healthz still answers within a second while they hang on, and each of them is
/// closed after the read timeout. A 20 MB push payload (GitHub allows 25 MB) is accepted.
#[test]
fn slow_clients_cannot_starve_health_and_large_payloads_are_accepted() {
    let (_tmp, dir, store) = two_task_dir();
    let w = Watcher::start(
        &["--dir", dir.to_str().unwrap(), "--sandbox", "host", "--http-read-timeout", "2s", "--no-promote"],
        &store,
        &[],
    );
    w.wait_reconciles(0);

    // open the slow clients and keep them trickling from one thread
    let n = 300;
    let mut slow: Vec<Option<TcpStream>> = Vec::new();
    for i in 0..n {
        let mut s = TcpStream::connect(&w.addr).expect("connect");
        s.set_nonblocking(true).unwrap();
        let head = if i % 2 == 0 {
            "GET /status HTTP/1.1\r\nHost: x\r\n".to_string()
        } else {
            "POST /hooks/git HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{".to_string()
        };
        let _ = s.write_all(head.as_bytes());
        slow.push(Some(s));
    }
    let opened = Instant::now();
    let trickle = |slow: &mut Vec<Option<TcpStream>>| {
        // one byte each; a closed connection reads EOF (or errors) and is dropped
        let mut buf = [0u8; 4096];
        for c in slow.iter_mut() {
            let Some(s) = c else { continue };
            let _ = s.write_all(b" ");
            match s.read(&mut buf) {
                Ok(_) => *c = None,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => *c = None,
            }
        }
        slow.iter().filter(|c| c.is_some()).count()
    };
    // while they hang on: /healthz answers within a second, every time
    let mut worst = Duration::ZERO;
    for _ in 0..5 {
        trickle(&mut slow);
        let t = Instant::now();
        let (code, body) = w.get("/healthz");
        let took = t.elapsed();
        worst = worst.max(took);
        assert_eq!((code, body.as_str()), (200, "ok\n"));
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("/healthz with {n} slow clients: slowest answer {worst:?}");
    assert!(worst < Duration::from_secs(1), "/healthz took {worst:?}");
    // after the read timeout (2 s, plus the grace to answer), every slow client is closed
    let mut left = n;
    while left > 0 && opened.elapsed() < Duration::from_secs(15) {
        left = trickle(&mut slow);
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("slow clients still open {:?} after they connected: {left}", opened.elapsed());
    assert_eq!(left, 0, "slow clients held open past the read timeout");

    // a 20 MB push payload is read, not refused with 413
    let mut body = br#"{"ref":"refs/heads/main","commits":[""#.to_vec();
    body.resize(20 * 1000 * 1000, b'x');
    body.extend_from_slice(br#""]}"#);
    let (code, reply) = http(&w.addr, "POST", "/hooks/git", &[("Content-Type", "application/json".into())], &body);
    // a directory watcher has no branch to wake: 404 after reading (and checking) the body
    assert_ne!(code, 413, "{reply}");
    assert_eq!(code, 404, "{reply}");
    // past the cap: 413 without reading the body
    let mut s = TcpStream::connect(&w.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(b"POST /hooks/git HTTP/1.1\r\nHost: x\r\nContent-Length: 67108864\r\n\r\n{").unwrap();
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    assert!(reply.starts_with("HTTP/1.1 413"), "{reply}");
}

/// `watch --git`: a revision whose only change is one input file reads that file; every
/// other input's digest comes from the checkout's git index (its blob memo), not a read.
#[test]
fn git_mode_new_revision_reads_only_the_changed_file() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let seed = root.join("seed");
    std::fs::create_dir_all(seed.join("data")).unwrap();
    std::fs::write(
        seed.join("run.yaml"),
        r#"apiVersion: tekton.dev/v1
kind: TaskRun
metadata:
  name: count
  annotations: {tenon.dev/repo-workspace: src}
spec:
  workspaces: [{name: src, emptyDir: {}}]
  taskSpec:
    metadata:
      annotations: {tenon.dev/inputs: "data"}
    workspaces: [{name: src}]
    steps:
      - name: s
        image: debian
        script: cat $(workspaces.src.path)/data/* | wc -l
"#,
    )
    .unwrap();
    const N: u64 = 200;
    for i in 0..N {
        std::fs::write(seed.join(format!("data/{i:03}.txt")), format!("file {i}\n")).unwrap();
    }
    let url = seed_remote(root, &seed, "v1");
    let w = Watcher::start(&["--git", url.as_str(), "--interval", "1h", "--sandbox", "host"], &root.join("store"), &[]);
    let s = w.wait_status("revision 1", |s| s["reconciles"] == 1);
    assert_eq!(s["lastReconcile"]["outcome"], "succeeded", "{s:#}\n{}", w.log_text());
    let h1 = s["lastReconcile"]["report"]["hashing"].clone();
    // the repository workspace: the data files and run.yaml
    assert_eq!(h1["files"], N + 1, "{s:#}");

    std::fs::write(seed.join("data/007.txt"), "file 7, edited\n").unwrap();
    git(&seed, &["commit", "-q", "-am", "v2: one file"]);
    git(&seed, &["push", "-q", "origin", "main"]);
    let v2 = git(&seed, &["rev-parse", "HEAD"]);
    assert_eq!(push_hook(&w, None).0, 202);
    let s = w.wait_status("revision 2", |s| s["lastReconcile"]["revision"] == v2.as_str());
    assert_eq!(s["lastReconcile"]["outcome"], "succeeded", "{s:#}");
    assert_eq!(task_status(&s, "count"), "Succeeded", "the edited input must rerun the task: {s:#}");
    let h2 = &s["lastReconcile"]["report"]["hashing"];
    println!("MEASURE git-mode hashing: revision 1 {h1}, revision 2 (one file changed) {h2}");
    assert_eq!(h2["files"], N + 1, "{h2}");
    let hashed = h2["hashedFiles"].as_u64().unwrap();
    assert!(hashed >= 1 && hashed <= 2, "revision 2 read {hashed} files, expected the changed one: {h2}");
    assert!(h2["fromGitIndex"].as_u64().unwrap() >= N - 1, "{h2}");
}
