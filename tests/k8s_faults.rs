//! Faults on the test cluster: its own components stopped and started again mid-run (the
//! API server, the kubelet long enough for the node to turn NotReady) and a pod deleted by
//! someone else. Each test gives the documented outcome: no result lost, no duplicate pod.
//! The tests stop shared components, so they run one at a time, in a binary of their own
//! (cargo runs test binaries one after another), and a stopped component is started again
//! when its guard drops, also when a test fails. Needs `TENON_TEST_KUBECONFIG` (see
//! tests/kubernetes.rs) and root (the cluster's components run as root).

#[path = "k8s/cluster.rs"]
mod cluster;
mod common;
#[path = "k8s/pods.rs"]
mod pods;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::*;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, DeleteParams, ListParams};
use pods::*;
use serde_json::Value;

/// One fault at a time: the tests stop components every other test needs.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A component of the test cluster as it runs (`/var/lib/tenon-k8s/run/NAME.pid` holds
/// "PID EXE"): its command line and environment, to start it again the way
/// `shared/k8s/up` started it. The pid file is updated, so `shared/k8s/down` still stops it.
#[derive(Clone)]
struct Component {
    name: String,
    pid: String,
    exe: PathBuf,
    argv: Vec<std::ffi::OsString>,
    env: Vec<(std::ffi::OsString, std::ffi::OsString)>,
}

const RUN_DIR: &str = "/var/lib/tenon-k8s/run";

impl Component {
    fn record(name: &str) -> Component {
        use std::os::unix::ffi::OsStrExt;
        let pidfile = Path::new(RUN_DIR).join(format!("{name}.pid"));
        let text = std::fs::read_to_string(&pidfile).unwrap_or_else(|e| panic!("{}: {e}", pidfile.display()));
        let (pid, exe) = text.trim().split_once(' ').expect("PID EXE");
        let proc_dir = PathBuf::from(format!("/proc/{pid}"));
        assert_eq!(std::fs::read_link(proc_dir.join("exe")).unwrap(), Path::new(exe), "{name} runs {exe}");
        let split = |b: Vec<u8>| -> Vec<std::ffi::OsString> {
            b.split(|c| *c == 0).filter(|s| !s.is_empty()).map(|s| std::ffi::OsStr::from_bytes(s).to_owned()).collect()
        };
        let argv = split(std::fs::read(proc_dir.join("cmdline")).unwrap());
        let env = split(std::fs::read(proc_dir.join("environ")).unwrap())
            .into_iter()
            .filter_map(|kv| {
                let b = kv.as_bytes();
                let i = b.iter().position(|c| *c == b'=')?;
                Some((
                    std::ffi::OsStr::from_bytes(&b[..i]).to_owned(),
                    std::ffi::OsStr::from_bytes(&b[i + 1..]).to_owned(),
                ))
            })
            .collect();
        Component { name: name.into(), pid: pid.into(), exe: PathBuf::from(exe), argv, env }
    }

    /// Whether the process its pid file names runs its program.
    fn running(&self) -> bool {
        let text = std::fs::read_to_string(Path::new(RUN_DIR).join(format!("{}.pid", self.name))).unwrap_or_default();
        let pid = text.split_whitespace().next().unwrap_or("0");
        std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|e| e == self.exe)
    }

    fn start(&self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(format!("/var/lib/tenon-k8s/logs/{}.log", self.name))
            .unwrap();
        // setsid: its own session, as shared/k8s/up starts it (the test's child is no group
        // leader, so setsid execs in place: the pid is the component's)
        let child = std::process::Command::new("setsid")
            .arg(&self.exe)
            .args(&self.argv[1..])
            .env_clear()
            .envs(self.env.iter().cloned())
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("restart the component");
        std::fs::write(
            Path::new(RUN_DIR).join(format!("{}.pid", self.name)),
            format!("{} {}\n", child.id(), self.exe.display()),
        )
        .unwrap();
    }
}

/// A component stopped by [`Stopped::stop`], started again when the guard is restarted or
/// dropped (also when the test fails), so the cluster is never left down.
struct Stopped {
    c: Component,
    started: bool,
}

impl Stopped {
    fn stop(name: &str) -> Stopped {
        let c = Component::record(name);
        let proc_dir = PathBuf::from(format!("/proc/{}", c.pid));
        // SIGTERM, then SIGKILL after 5 s: the API server's graceful shutdown waits for the
        // open watches and streams, and a crash is the fault to survive anyway
        let kill = |sig: &str| std::process::Command::new("kill").args([sig, &c.pid]).status().unwrap();
        assert!(kill("-TERM").success());
        let start = Instant::now();
        while proc_dir.join("exe").exists() {
            if start.elapsed() > Duration::from_secs(5) {
                kill("-KILL");
            }
            assert!(start.elapsed() < Duration::from_secs(30), "{name} did not stop");
            std::thread::sleep(Duration::from_millis(100));
        }
        Stopped { c, started: false }
    }

    fn start(&mut self) {
        if !self.started {
            self.started = true;
            self.c.start();
        }
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        self.start();
    }
}

/// The controller manager and the scheduler exit when they cannot renew their leader lease
/// for 10 s (an API server down that long): recorded before a fault, started again after it
/// (and when the guard drops) if they did.
struct Revive(Vec<Component>);

impl Revive {
    fn record() -> Revive {
        Revive(["kube-controller-manager", "kube-scheduler"].map(Component::record).to_vec())
    }
    fn now(&self) {
        for c in self.0.iter().filter(|c| !c.running()) {
            eprintln!("{} exited during the fault: started again", c.name);
            c.start();
        }
    }
}

impl Drop for Revive {
    fn drop(&mut self) {
        self.now();
    }
}

/// Wait until the API server answers again (at most 90 s).
async fn api_back(c: &Cluster) {
    let until = Instant::now() + Duration::from_secs(90);
    while c.pods_api().list(&ListParams::default()).await.is_err() {
        assert!(Instant::now() < until, "the API server did not come back");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn spawn_debug(c: &Cluster, dir: &str, store: &Path) -> std::process::Child {
    let mut all: Vec<String> = ["run", dir, "--output", "json", "-q"].iter().map(|s| s.to_string()).collect();
    all.extend(c.flags());
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    tenon_command(&refs, store)
        .env("TENON_LOG", "tenon=debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("tenon starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_api_server_restarting_mid_run_loses_no_result_and_makes_no_duplicate() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(c) = Cluster::new("apiserver").await else { return };
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("t.yaml"), SLEEPER.replace("IMG", BUSYBOX).replace("SECS", "12")).unwrap();
    let dir = tmp.path().to_str().unwrap().to_string();
    let child = spawn_debug(&c, &dir, &tmp.path().join("s"));
    c.wait_running_pod().await;
    let others = Revive::record();
    let mut api = Stopped::stop("kube-apiserver");
    tokio::time::sleep(Duration::from_secs(5)).await;
    api.start();
    api_back(&c).await;
    let out = tokio::task::spawn_blocking(move || child.wait_with_output()).await.unwrap().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(task(&report, "sleeper")["results"]["woke"], "yes", "{report:#}");
    assert_eq!(stderr.matches("pod created").count(), 1, "one pod, never a duplicate:\n{stderr}");
    c.assert_no_pods().await;
    // past their lease's renew deadline, whatever was to exit has exited: start it again,
    // then wait until a new namespace gets its default ServiceAccount (pods need it)
    tokio::time::sleep(Duration::from_secs(12)).await;
    others.now();
    Cluster::new("after").await.expect("the cluster works again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_deleted_by_someone_else_fails_the_attempt_with_a_message() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(c) = Cluster::new("deleted").await else { return };
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("t.yaml"), SLEEPER.replace("IMG", BUSYBOX).replace("SECS", "120")).unwrap();
    let child = c.spawn_tenon(&["run", tmp.path().to_str().unwrap(), "--output", "json", "-q"], &tmp.path().join("s"));
    let (name, _) = c.wait_running_pod().await;
    c.pods_api().delete(&name, &DeleteParams::default()).await.expect("delete the pod");
    let out = tokio::task::spawn_blocking(move || child.wait_with_output()).await.unwrap().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    let t = task(&report, "sleeper");
    assert_eq!(t["status"], "Failed", "{t:#}");
    assert!(t["message"].as_str().unwrap_or_default().contains("deleted by someone else"), "{t:#}");
    c.assert_no_pods().await;
}

/// A deletion tenon's pod watch cannot see as an event: tenon is frozen (SIGSTOP) while the
/// API server restarts and the pod is deleted, so its watch resumes from a version the new
/// API server no longer has and lists again; the pod is simply absent from that list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_deleted_while_tenon_was_cut_off_is_noticed_on_the_relist() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(c) = Cluster::new("relist").await else { return };
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("t.yaml"), SLEEPER.replace("IMG", BUSYBOX).replace("SECS", "600")).unwrap();
    let dir = tmp.path().to_str().unwrap().to_string();
    let child = spawn_debug(&c, &dir, &tmp.path().join("s"));
    let pid = child.id().to_string();
    let (name, _) = c.wait_running_pod().await;
    let signal = |sig: &str| assert!(std::process::Command::new("kill").args([sig, &pid]).status().unwrap().success());
    signal("-STOP");
    let others = Revive::record();
    let mut api = Stopped::stop("kube-apiserver");
    api.start();
    api_back(&c).await;
    c.pods_api().delete(&name, &DeleteParams { grace_period_seconds: Some(0), ..Default::default() }).await.unwrap();
    let until = Instant::now() + Duration::from_secs(60);
    while c.pods_api().get_opt(&name).await.unwrap().is_some() {
        assert!(Instant::now() < until, "pod {name} was not deleted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    signal("-CONT");
    let resumed = Instant::now();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output()).await.unwrap().unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("MEASURE relist: tenon resumed -> deletion reported: {:.1} s", resumed.elapsed().as_secs_f64());
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    let t = task(&report, "sleeper");
    assert_eq!(t["status"], "Failed", "{t:#}");
    assert!(t["message"].as_str().unwrap_or_default().contains("deleted by someone else"), "{t:#}");
    assert_eq!(stderr.matches("pod created").count(), 1, "one pod, never a replacement:\n{stderr}");
    c.assert_no_pods().await;
    tokio::time::sleep(Duration::from_secs(12)).await;
    others.now();
    Cluster::new("after").await.expect("the cluster works again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_not_ready_for_a_while_delays_the_run_but_loses_nothing() {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(c) = Cluster::new("notready").await else { return };
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("t.yaml"), SLEEPER.replace("IMG", BUSYBOX).replace("SECS", "8")).unwrap();
    let dir = tmp.path().to_str().unwrap().to_string();
    let child = spawn_debug(&c, &dir, &tmp.path().join("s"));
    c.wait_running_pod().await;
    let mut kubelet = Stopped::stop("kubelet");
    // the node controller marks the node NotReady after its 40 s grace period
    let nodes: Api<Node> = Api::all(c.client.clone());
    let until = Instant::now() + Duration::from_secs(90);
    loop {
        let n = nodes.get("localhost").await.unwrap();
        let ready = n.status.and_then(|s| s.conditions).unwrap_or_default().into_iter().find(|x| x.type_ == "Ready");
        if ready.is_some_and(|r| r.status != "True") {
            break;
        }
        assert!(Instant::now() < until, "the node never became NotReady");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    kubelet.start();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output()).await.unwrap().unwrap();
    // the tests after this one need the node Ready again
    let until = Instant::now() + Duration::from_secs(90);
    loop {
        let n = nodes.get("localhost").await.unwrap();
        let ready = n.status.and_then(|s| s.conditions).unwrap_or_default().into_iter().find(|x| x.type_ == "Ready");
        if ready.is_some_and(|r| r.status == "True") {
            break;
        }
        assert!(Instant::now() < until, "the node did not become Ready again");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(task(&report, "sleeper")["results"]["woke"], "yes", "{report:#}");
    assert_eq!(stderr.matches("pod created").count(), 1, "{stderr}");
}
