//! The store's operational behaviour, with the real binary: owner-only permissions, run
//! directory retention and Secret clean-up, a full disk, a broken database, a locked
//! database, and Ctrl-C while waiting for another process's key lock.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{tenon_cached, tenon_command};

/// A TaskRun `name` whose step writes `bytes` bytes (`source`: /dev/zero or /dev/urandom)
/// to its declared output; with `secret`, it also reads a Secret workspace.
fn output_taskrun(name: &str, bytes: u64, source: &str, secret: bool) -> String {
    let (object, binding, decl, check) = if secret {
        (
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: creds\nstringData:\n  token: S3CRET-VALUE-4711\n---\n",
            "    - name: creds\n      secret:\n        secretName: creds\n",
            "      - name: creds\n",
            "          test -s $(workspaces.creds.path)/token\n",
        )
    } else {
        ("", "", "", "")
    };
    format!(
        r#"{object}apiVersion: tekton.dev/v1
kind: TaskRun
metadata:
  name: {name}
  annotations:
    tenon.dev/outputs: "out:data.bin"
spec:
  workspaces:
    - name: out
      emptyDir: {{}}
{binding}  taskSpec:
    workspaces:
      - name: out
{decl}    steps:
      - name: w
        image: busybox
        script: |
{check}          head -c {bytes} {source} > $(workspaces.out.path)/data.bin
"#
    )
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).permissions().mode() & 0o7777
}

fn run_dirs(store: &Path, run: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(store.join("runs").join(run))
        .map(|rd| rd.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

/// Every file under `dir` whose bytes contain `needle`.
fn files_containing(dir: &Path, needle: &[u8]) -> Vec<PathBuf> {
    let mut out = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let t = e.file_type().unwrap();
            if t.is_dir() {
                stack.push(e.path());
            } else if t.is_file() {
                let b = std::fs::read(e.path()).unwrap_or_default();
                if b.windows(needle.len()).any(|w| w == needle) {
                    out.push(e.path());
                }
            }
        }
    }
    out
}

fn setup(yaml: &str) -> (tempfile::TempDir, String, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("m");
    std::fs::create_dir_all(&m).unwrap();
    std::fs::write(m.join("run.yaml"), yaml).unwrap();
    let store = tmp.path().join("store");
    (tmp, m.display().to_string(), store)
}

#[test]
fn store_and_run_directories_are_owner_only_even_for_an_existing_store() {
    let (_tmp, m, store) = setup(&output_taskrun("build", 200_000, "/dev/zero", true));
    let r = tenon_cached(&["run", &m, "-q", "--sandbox", "host"], &store);
    assert_eq!(r.code, 0, "{}", r.stderr);
    // loosen everything as an older tenon (umask 022) left it, then run again
    for p in [store.clone(), store.join("cache"), store.join("cache/objects"), store.join("runs")] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(store.join("cache/tenon.db"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let r = tenon_cached(&["run", &m, "-q", "--sandbox", "host"], &store);
    assert_eq!(r.code, 0, "{}", r.stderr);
    for d in ["", "cache", "cache/objects", "cache/tmp", "cache/locks", "runs", "runs/build"] {
        assert_eq!(mode(&store.join(d)), 0o700, "{d}");
    }
    for d in run_dirs(&store, "build") {
        assert_eq!(mode(&d), 0o700, "{}", d.display());
    }
    assert_eq!(mode(&store.join("cache/tenon.db")), 0o600);
    let objects: Vec<PathBuf> = std::fs::read_dir(store.join("cache/objects"))
        .unwrap()
        .flat_map(|a| std::fs::read_dir(a.unwrap().path()).unwrap().map(|e| e.unwrap().path()))
        .collect();
    assert!(!objects.is_empty());
    for o in objects {
        assert_eq!(mode(o.parent().unwrap()), 0o700);
        assert_eq!(mode(&o), 0o400, "{}", o.display());
    }
}

#[test]
fn run_directories_are_pruned_to_keep_runs_and_secret_material_is_removed() {
    let (_tmp, m, store) = setup(&output_taskrun("build", 200_000, "/dev/zero", true));
    let mut sizes = vec![];
    for i in 0..8 {
        let r = tenon_cached(&["run", &m, "-q", "--sandbox", "host", "--keep-runs", "3"], &store);
        assert_eq!(r.code, 0, "run {i}: {}", r.stderr);
        assert_eq!(run_dirs(&store, "build").len(), (i + 1).min(3), "after run {i}");
        sizes.push(tenon::retention::tree_size(&store.join("runs")));
        // the run has ended: no Secret value is left on disk anywhere in the state dir
        let leaked = files_containing(&store, b"S3CRET-VALUE-4711");
        assert!(leaked.is_empty(), "Secret material left after run {i}: {leaked:?}");
    }
    // each run dir holds a 200 KB copy of the (restored) output: 3 are kept, not 8
    let per_run = sizes[0];
    assert!(per_run >= 200_000, "{sizes:?}");
    assert!(*sizes.last().unwrap() <= 3 * per_run + 4096, "{sizes:?}");
    eprintln!("runs/ bytes after each of 8 runs with --keep-runs 3: {sizes:?} (without retention: ~{})", 8 * per_run);
    // the environment variable, and `cache gc --keep-runs`
    let r: common::Run = tenon_command(&["cache", "gc", "--output", "json"], &store)
        .env("TENON_KEEP_RUNS", "1")
        .output()
        .unwrap()
        .into();
    assert_eq!(r.code, 0, "{}", r.stderr);
    let j = r.json();
    assert_eq!(j["removedRunDirs"], 2, "{j}");
    assert!(j["freedRunDirBytes"].as_u64().unwrap() >= 2 * 200_000, "{j}");
    assert_eq!(run_dirs(&store, "build").len(), 1);
    // PVC directories are never touched
    std::fs::create_dir_all(store.join("pvc/claim")).unwrap();
    std::fs::write(store.join("pvc/claim/keep"), "x").unwrap();
    let r = tenon_cached(&["cache", "gc", "--keep-runs", "0"], &store);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(store.join("pvc/claim/keep").exists());
    // the latest successful run's directory is kept even with --keep-runs 0
    assert_eq!(run_dirs(&store, "build").len(), 1);
}

#[test]
fn every_watch_reconcile_prunes_run_directories_even_all_cached_ones() {
    let (_tmp, m, store) = setup(&output_taskrun("build", 200_000, "/dev/zero", true));
    for i in 0..4 {
        let r = tenon_cached(
            &["watch", "--dir", &m, "--once", "--listen", "127.0.0.1:0", "--sandbox", "host", "--keep-runs", "2"],
            &store,
        );
        assert_eq!(r.code, 0, "reconcile {i}: {}", r.stderr);
        assert_eq!(run_dirs(&store, "build").len(), (i + 1).min(2), "after reconcile {i}");
        assert!(files_containing(&store, b"S3CRET-VALUE-4711").is_empty(), "Secret material left after reconcile {i}");
    }
}

/// The store on a 2 MiB tmpfs (in a private mount namespace: `unshare -rm`, so nothing
/// outlives the test): the step's 1.2 MB output fits, storing its copy does not. Then the
/// same disk already full when a run starts, and a state directory whose `runs/` has no
/// inode left.
#[test]
fn a_full_disk_is_reported_with_its_cause_and_exit_3_leaving_no_temporary_file() {
    let (_tmp, m, store) = setup(&output_taskrun("big", 1_200_000, "/dev/urandom", false));
    std::fs::create_dir_all(&store).unwrap();
    let script = format!(
        "mount -t tmpfs -o size=2m tmpfs '{s}' || exit 99; '{bin}' run '{m}' -q --sandbox host --store '{s}'; echo \"rc=$?\"; echo tmp:; ls -A '{s}/cache/tmp'; echo :tmp; \
         head -c 4M /dev/zero > '{s}/filler' 2>/dev/null; '{bin}' run '{m}' -q --sandbox host --no-cache --store '{s}'; echo \"rc2=$?\"; \
         mkdir -p '{s}2/runs' && mount -t tmpfs -o size=1m,nr_inodes=1 tmpfs '{s}2/runs' || exit 99; \
         '{bin}' run '{m}' -q --sandbox host --store '{s}2'; echo \"rc3=$?\"",
        s = store.display(),
        bin = common::bin().display(),
    );
    let out =
        std::process::Command::new("unshare").args(["-rm", "sh", "-c", &script]).env("NO_COLOR", "1").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_ne!(out.status.code(), Some(99), "cannot mount a tmpfs in a private mount namespace: {stderr}");
    assert!(stdout.contains("rc=3"), "a full store is exit 3, not a task failure:\n{stdout}\n{stderr}");
    assert!(stderr.contains("No space left on device"), "the cause is reported:\n{stderr}");
    assert!(stderr.contains("not recorded"), "{stderr}");
    let tmp_listing = stdout.split("tmp:\n").nth(1).and_then(|t| t.split(":tmp").next()).unwrap_or("missing");
    assert_eq!(tmp_listing.trim(), "", "no partial temporary file is left in cache/tmp:\n{stdout}");
    // a disk already full when the run starts: exit 3 too, and the message says so
    assert!(stdout.contains("rc2=3"), "{stdout}\n{stderr}");
    let second = stderr.rsplit("error: ").next().unwrap_or_default();
    assert!(second.contains("no space left") || second.contains("No space left"), "{stderr}");
    assert!(!second.contains("tenon cache reset"), "a full disk is no reason to reset the store:\n{stderr}");
    // the store opens, but the run directory cannot be created (no inode left): exit 3
    assert!(stdout.contains("rc3=3"), "{stdout}\n{stderr}");
    let third = stderr.rsplit("error: ").next().unwrap_or_default();
    assert!(third.contains("cannot create run directory") && third.contains("No space left on device"), "{stderr}");
}

#[test]
fn a_broken_database_names_its_cause_once_and_cache_reset_recovers() {
    let (_tmp, m, store) = setup(&output_taskrun("big", 1_200_000, "/dev/urandom", false));
    std::fs::create_dir_all(store.join("cache")).unwrap();
    std::fs::write(store.join("cache/tenon.db"), "this is not a database, just garbage text ".repeat(100)).unwrap();
    let r = tenon_cached(&["run", &m, "-q", "--sandbox", "host"], &store);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("file is not a database"), "SQLite's reason is kept:\n{}", r.stderr);
    assert_eq!(r.stderr.matches("cannot open").count(), 1, "no clause repeated:\n{}", r.stderr);
    assert!(r.stderr.contains("tenon cache reset --store"), "the way out is named:\n{}", r.stderr);
    let r = tenon_cached(&["cache", "reset"], &store);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let aside: Vec<PathBuf> = std::fs::read_dir(&store)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("cache.broken-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert!(r.stdout.contains(&aside[0].display().to_string()), "it says where:\n{}", r.stdout);
    assert!(std::fs::read(aside[0].join("tenon.db")).unwrap().starts_with(b"this is not a database"));
    let r = tenon_cached(&["run", &m, "-q", "--sandbox", "host"], &store);
    assert_eq!(r.code, 0, "a fresh store works:\n{}", r.stderr);
}

const ONE_TASK: &str = r#"
apiVersion: tekton.dev/v1
kind: TaskRun
metadata:
  name: one
spec:
  taskSpec:
    steps:
      - name: s
        image: busybox
        script: echo hello
"#;

#[test]
fn a_locked_database_is_announced_with_its_holder_and_an_unrecorded_run_exits_3() {
    let (_tmp, m, store) = setup(ONE_TASK);
    let r = tenon_cached(&["cache", "ls"], &store);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let conn = rusqlite::Connection::open(store.join("cache/tenon.db")).unwrap();
    conn.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let t0 = Instant::now();
    let r: common::Run = tenon_command(&["run", &m, "-q", "--sandbox", "host"], &store)
        .env("TENON_DB_BUSY_TIMEOUT", "1s")
        .output()
        .unwrap()
        .into();
    let took = t0.elapsed();
    conn.execute_batch("ROLLBACK").unwrap();
    assert_eq!(r.code, 3, "a run that could not be recorded is not a success:\n{}", r.stderr);
    assert!(r.stderr.contains("waiting for the store database"), "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!("locked by pid {}", std::process::id())),
        "the lock holder (this test) is named:\n{}",
        r.stderr
    );
    assert!(r.stderr.contains("database is locked"), "{}", r.stderr);
    assert!(took < Duration::from_secs(10), "the configured timeout is used, once: {took:?}");
}

const SLOW: &str = r#"
apiVersion: tekton.dev/v1
kind: TaskRun
metadata:
  name: slow
spec:
  taskSpec:
    steps:
      - name: s
        image: busybox
        script: sleep 30
"#;

/// Spawn `tenon run` and forward its stderr lines.
fn spawn_run(m: &str, store: &Path) -> (std::process::Child, mpsc::Receiver<String>) {
    let mut child = tenon_command(&["run", m, "--sandbox", "host"], store)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (child, rx)
}

fn wait_for_line(rx: &mpsc::Receiver<String>, needle: &str, within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    let mut seen = vec![];
    while Instant::now() < deadline {
        if let Ok(l) = rx.recv_timeout(Duration::from_millis(100)) {
            let hit = l.contains(needle);
            seen.push(l);
            if hit {
                return seen;
            }
        }
    }
    panic!("no line containing {needle:?} within {within:?}; saw:\n{}", seen.join("\n"));
}

fn wait_exit(child: &mut std::process::Child, within: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}

#[test]
fn ctrl_c_while_waiting_for_another_process_key_lock_cancels_promptly() {
    let (_tmp, m, store) = setup(SLOW);
    let (mut a, a_err) = spawn_run(&m, &store);
    wait_for_line(&a_err, "slow started", Duration::from_secs(30));
    let (mut b, b_err) = spawn_run(&m, &store);
    wait_for_line(&b_err, "waiting for another run of the same task to finish", Duration::from_secs(30));
    let t0 = Instant::now();
    // SAFETY: plain kill(2) of our own child
    unsafe { libc::kill(b.id() as i32, libc::SIGINT) };
    let status = wait_exit(&mut b, Duration::from_secs(5));
    let took = t0.elapsed();
    unsafe { libc::kill(a.id() as i32, libc::SIGINT) };
    let _ = wait_exit(&mut a, Duration::from_secs(10));
    let _ = a.kill();
    let Some(status) = status else {
        let _ = b.kill();
        panic!("tenon did not end within 5 s of SIGINT while waiting for the key lock");
    };
    assert!(took < Duration::from_secs(2), "took {took:?}");
    assert_eq!(status.code(), Some(1), "a cancelled run is exit 1");
}

/// A state directory this user does not own (a PVC's mount point, group-writable through
/// an `fsGroup`) cannot be made owner-only; tenon uses it as it is and makes what it creates
/// inside owner-only.
#[test]
fn a_state_dir_owned_by_another_user_is_used_as_it_is() {
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to give the state directory to another user");
        return;
    }
    let (tmp, m, _) = setup(ONE_TASK);
    for p in [tmp.path().to_path_buf(), tmp.path().join("m"), tmp.path().join("m/run.yaml")] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    // the mount point: root's, group nogroup, setgid and group-writable; tenon runs as nobody
    let store = tmp.path().join("pvc");
    std::fs::create_dir(&store).unwrap();
    let st = std::process::Command::new("chown").args(["root:nogroup", store.to_str().unwrap()]).status().unwrap();
    assert!(st.success());
    std::fs::set_permissions(&store, std::fs::Permissions::from_mode(0o2775)).unwrap();
    let out = std::process::Command::new("setpriv")
        .args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
        .arg(common::bin())
        .args(["run", &m, "-q", "--sandbox", "host", "--store", store.to_str().unwrap()])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("HOME", &store)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert_eq!(mode(&store) & 0o7777, 0o2775, "the mount point is left as it is");
    assert_eq!(mode(&store.join("cache")) & 0o777, 0o700);
    assert_eq!(mode(&store.join("runs")) & 0o777, 0o700);
}
