//! The Kubernetes executor's registry data plane on the test cluster: a registry runs as a pod
//! (Debian's `docker-registry`, made an image with the cluster's `image` tool); task pods reach
//! it at its pod IP, tenon on the host through a port-forward this test opens (the host cannot
//! reach pod IPs: only the API server connects the two). Large inputs must reach the task pod
//! from the registry, through an init container of tenon's own image, verified.
//!
//! Runs only with `TENON_TEST_KUBECONFIG` (fails without it under `CI=true`), in a namespace of
//! its own. `TENON_TEST_REGISTRY_MIB` sets the large input's size (default 1024).

#[path = "k8s/cluster.rs"]
mod cluster;
mod common;
#[path = "k8s/images.rs"]
mod images;
#[path = "k8s/pods.rs"]
mod pods;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, AttachParams, PostParams};
use pods::*;
use serde_json::json;
use tenon::oci::{Client, ClientConfig, CredentialSource, Digest, RepoUrl};

const MIB: u64 = 1 << 20;
const REGISTRY_IMAGE: &str = "docker.io/local/registry:2.8";
const REPO: &str = "tenon/data";
const STORAGE: &str = "/var/lib/registry";

/// A registry pod of the test's namespace, with a port-forward to it on 127.0.0.1.
struct Registry {
    name: String,
    /// `oci+http://<pod IP>:5000/tenon/data`: as task pods reach it.
    pod_url: String,
    /// `oci+http://127.0.0.1:<port>/tenon/data`: as tenon and the test reach it.
    host_url: String,
    client: Client,
    forward: tokio::task::JoinHandle<()>,
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.forward.abort();
    }
}

fn registry_image() -> String {
    if !images::loaded().iter().any(|n| n == REGISTRY_IMAGE) {
        let out = std::process::Command::new(images::k8s_dir().join("image"))
            .args([REGISTRY_IMAGE, "--binary", "/usr/bin/docker-registry"])
            .output()
            .expect("run the cluster's image tool");
        assert!(out.status.success(), "loading {REGISTRY_IMAGE}: {}", String::from_utf8_lossy(&out.stderr));
    }
    "local/registry:2.8".into()
}

/// Start the registry pod (plus a busybox container on the same storage, for tampering) and
/// a port-forward to it; returns once `GET /v2/` answers through the forward.
async fn start_registry(c: &Cluster) -> Registry {
    let image = registry_image();
    let config = format!(
        "version: 0.1\nlog: {{level: info}}\nstorage:\n  filesystem: {{rootdirectory: {STORAGE}}}\n  delete: {{enabled: true}}\nhttp: {{addr: 0.0.0.0:5000}}\n"
    );
    let cms: Api<ConfigMap> = Api::namespaced(c.client.clone(), &c.ns);
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": "registry"}, "data": {"config.yml": config}})).unwrap();
    cms.create(&PostParams::default(), &cm).await.expect("create the registry's ConfigMap");
    let storage = json!({"name": "storage", "mountPath": STORAGE});
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "registry"},
        "spec": {
            "containers": [
                {"name": "registry", "image": image, "imagePullPolicy": "Never",
                 "args": ["serve", "/etc/registry/config.yml"],
                 "volumeMounts": [storage, {"name": "config", "mountPath": "/etc/registry"}]},
                {"name": "shell", "image": BUSYBOX, "imagePullPolicy": "Never",
                 "command": ["sh", "-c", "trap 'exit 0' TERM; while true; do sleep 1; done"],
                 "volumeMounts": [storage]},
            ],
            "volumes": [{"name": "storage", "emptyDir": {}}, {"name": "config", "configMap": {"name": "registry"}}],
            "terminationGracePeriodSeconds": 1,
        }
    }))
    .unwrap();
    let pods = c.pods_api();
    pods.create(&PostParams::default(), &pod).await.expect("create the registry pod");
    let until = Instant::now() + Duration::from_secs(90);
    let ip = loop {
        let p = pods.get("registry").await.expect("get the registry pod");
        let st = p.status.unwrap_or_default();
        let running =
            st.container_statuses.iter().flatten().all(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()));
        if let (true, Some(ip), Some(2)) = (running, st.pod_ip.clone(), st.container_statuses.as_ref().map(Vec::len)) {
            break ip;
        }
        assert!(Instant::now() < until, "the registry pod did not run within 90 s: {st:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let forward = tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let pods = pods.clone();
            tokio::spawn(async move {
                let Ok(mut pf) = pods.portforward("registry", &[5000]).await else { return };
                let Some(mut up) = pf.take_stream(5000) else { return };
                let _ = tokio::io::copy_bidirectional(&mut sock, &mut up).await;
                drop(up);
                let _ = pf.join().await;
            });
        }
    });
    let host_url = format!("oci+http://127.0.0.1:{port}/{REPO}");
    let cfg = ClientConfig { credentials: CredentialSource::Anonymous, ..ClientConfig::default() };
    let client = Client::new(RepoUrl::parse(&host_url).unwrap(), cfg).unwrap();
    let until = Instant::now() + Duration::from_secs(30);
    while let Err(e) = client.ping().await {
        assert!(Instant::now() < until, "the registry does not answer through the port-forward: {e}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Registry { name: "registry".into(), pod_url: format!("oci+http://{ip}:5000/{REPO}"), host_url, client, forward }
}

/// A file of `mib` MiB, a pseudo-random MiB numbered per copy (no two MiB alike); its sha256.
fn write_model(path: &Path, mib: u64) -> String {
    use std::io::Write;
    let block: Vec<u8> = (0..MIB).map(|i| (i.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 53) as u8).collect();
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    for i in 0..mib {
        f.write_all(&i.to_le_bytes()).unwrap();
        f.write_all(&block[8..]).unwrap();
    }
    f.flush().unwrap();
    sha256_of_output(&format!("cat {}", path.display()))
}

/// A repository whose PipelineRun sums `model.bin` (bound read-only) in a busybox step.
fn repo_with_model(dir: &Path, mib: u64) -> String {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join("p.yaml"), SUM.replace("IMG", BUSYBOX)).unwrap();
    write_model(&dir.join("model.bin"), mib)
}

/// `tenon run` of `repo` on the cluster, with the data plane when `data` is given.
fn command(
    c: &Cluster,
    repo: &Path,
    store: &Path,
    data: Option<(&Registry, &str)>,
    extra: &[&str],
) -> std::process::Command {
    let mut args: Vec<String> = ["run", repo.to_str().unwrap(), "--output", "json", "-q"].map(String::from).to_vec();
    args.extend(c.flags());
    if let Some((r, image)) = data {
        args.extend(
            ["--cache-repo", &r.host_url, "--k8s-data-registry", &r.pod_url, "--k8s-tenon-image", image]
                .map(String::from),
        );
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut cmd = tenon_command(&refs, store);
    cmd.env("TENON_LOG", "tenon=debug");
    cmd
}

/// The debug line of the data plane: (files, bytes, pushed, tar bytes) of the first pod.
fn data_plane_line(stderr: &str) -> Option<(u64, u64, u64, u64)> {
    let line = stderr.lines().find(|l| l.contains("data plane: inputs from the registry"))?;
    let field = |k: &str| {
        line.split_whitespace().find_map(|w| w.strip_prefix(&format!("{k}="))).and_then(|v| v.parse::<u64>().ok())
    };
    Some((field("files")?, field("bytes")?, field("pushed")?, field("tar_bytes")?))
}

/// A 1 GiB input already in the registry reaches the task pod through the init container,
/// intact, without going through tenon's exec upload, while tenon's peak RSS stays under
/// 100 MiB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_input_comes_from_the_registry_not_the_api_server() {
    let size_mib: u64 = std::env::var("TENON_TEST_REGISTRY_MIB").ok().and_then(|v| v.parse().ok()).unwrap_or(1024);
    const RSS_LIMIT_MIB: u64 = 100;
    let Some(c) = Cluster::new("regdata").await else { return };
    let tenon_image = images::tenon_image();
    let reg = start_registry(&c).await;
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    let want = repo_with_model(&repo, size_mib);
    // already in the registry (pushed by another run, another machine)
    let t = Instant::now();
    let digest = Digest::parse(&format!("sha256:{want}")).unwrap();
    reg.client.push_blob_file(&digest, &repo.join("model.bin"), &[]).await.expect("push the model");
    eprintln!("pushed {size_mib} MiB through the port-forward in {:.1} s", t.elapsed().as_secs_f64());

    let started = Instant::now();
    let cmd = command(&c, &repo, &tmp.path().join("s"), Some((&reg, &tenon_image)), &["--no-cache"]);
    let (r, rss_kib) = tokio::task::spawn_blocking(move || run_measuring_rss(cmd)).await.unwrap();
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let j = r.json();
    assert_eq!(task(&j, "sum")["results"]["insum"], want.as_str(), "the pod read the model intact: {j:#}");
    let (files, bytes, pushed, tar_bytes) = data_plane_line(&r.stderr).expect("the data plane's debug line");
    assert_eq!((files, bytes, pushed), (1, size_mib * MIB, 0), "the model came from the registry, nothing pushed");
    assert!(tar_bytes < MIB, "the tar carried only the small files: {tar_bytes} bytes");
    assert!(!r.stderr.contains("upload started"), "nothing went through an exec upload:\n{}", r.stderr);
    let rss_mib = rss_kib / 1024;
    eprintln!("{size_mib} MiB from the registry in {secs:.1} s (whole run); tenon's peak RSS {rss_mib} MiB");
    assert!(rss_mib < RSS_LIMIT_MIB, "tenon's peak RSS was {rss_mib} MiB (limit {RSS_LIMIT_MIB} MiB)");
    drop(reg);
}

/// A blob missing from the registry is pushed once by tenon and fetched by the pod; the same
/// task without the data plane has the same cache key and result; once the registry's copy is
/// corrupted, the pod's fetch fails the task with a clear message and no result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_blobs_are_pushed_and_a_corrupt_blob_fails_the_task() {
    const SIZE_MIB: u64 = 3;
    let Some(c) = Cluster::new("regbad").await else { return };
    let tenon_image = images::tenon_image();
    let reg = start_registry(&c).await;
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    let want = repo_with_model(&repo, SIZE_MIB);

    // 1. the registry lacks the blob: tenon pushes it, the pod fetches it
    let cmd = command(&c, &repo, &tmp.path().join("a"), Some((&reg, &tenon_image)), &[]);
    let a: Run = output(cmd).await;
    assert_eq!(a.code, 0, "{}\n{}", a.stdout, a.stderr);
    let ja = a.json();
    assert_eq!(task(&ja, "sum")["results"]["insum"], want.as_str(), "{ja:#}");
    let (files, bytes, pushed, _) = data_plane_line(&a.stderr).expect("the data plane's debug line");
    assert_eq!((files, bytes, pushed), (1, SIZE_MIB * MIB, SIZE_MIB * MIB), "pushed once, then fetched");
    let digest = Digest::parse(&format!("sha256:{want}")).unwrap();
    assert_eq!(reg.client.blob_exists(&digest).await.unwrap(), Some(SIZE_MIB * MIB));

    // 2. the same task without the data plane: the same key, the same result
    let cmd = command(&c, &repo, &tmp.path().join("c"), None, &[]);
    let plain: Run = output(cmd).await;
    assert_eq!(plain.code, 0, "{}\n{}", plain.stdout, plain.stderr);
    let jp = plain.json();
    assert!(data_plane_line(&plain.stderr).is_none());
    assert_eq!(task(&jp, "sum")["results"]["insum"], want.as_str());
    let key = task(&ja, "sum")["cacheKey"].as_str().expect("a cache key").to_string();
    assert_eq!(task(&jp, "sum")["cacheKey"].as_str(), Some(key.as_str()), "the data plane must not change the key");

    // 3. flip one byte of the registry's stored copy: it still serves it under the digest
    let hex = digest.hex();
    let data = format!("{STORAGE}/docker/registry/v2/blobs/sha256/{}/{hex}/data", &hex[..2]);
    let orig = std::fs::read(repo.join("model.bin")).unwrap()[1000];
    let flip = if orig == b'X' { "Y" } else { "X" };
    let script = format!("printf {flip} | dd of={data} bs=1 seek=1000 conv=notrunc 2>/dev/null && echo done");
    let out = exec(&c, &reg.name, "shell", &script).await;
    assert_eq!(out.trim(), "done", "tampering with {data}");
    let cmd = command(&c, &repo, &tmp.path().join("b"), Some((&reg, &tenon_image)), &["--no-cache"]);
    let b: Run = output(cmd).await;
    assert_eq!(b.code, 1, "a corrupt blob fails the run:\n{}\n{}", b.stdout, b.stderr);
    let jb = b.json();
    let t = task(&jb, "sum");
    assert_eq!(t["status"], "Failed", "{t:#}");
    let msg = t["message"].as_str().unwrap_or_default();
    assert!(msg.contains("tenon-fetch") && msg.contains("does not match its digest"), "a clear message: {msg}");
    assert!(msg.contains("model.bin"), "the message names the file: {msg}");
    eprintln!("the failed task's message: {msg}");
    assert!(t["results"].as_object().is_none_or(|m| m.is_empty()), "no result: {t:#}");
    // tenon deleted its pods: only the registry is left
    let until = Instant::now() + Duration::from_secs(30);
    loop {
        let left: Vec<String> =
            c.pods().await.into_iter().filter_map(|p| p.metadata.name).filter(|n| n != "registry").collect();
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < until, "pods left behind: {left:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    drop(reg);
}

/// Flags that cannot make a data plane are usage errors (exit 2), found before any cluster is
/// contacted (the kubeconfig named here does not exist): no cluster needed.
#[test]
fn data_plane_flags_without_their_counterpart_are_usage_errors() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(tmp.path().join("p.yaml"), SUM.replace("IMG", BUSYBOX)).unwrap();
    let dir = tmp.path().to_str().unwrap();
    let kc = tmp.path().join("no-such-kubeconfig").display().to_string();
    let base = ["run", dir, "-q", "--executor", "kubernetes", "--k8s-kubeconfig", &kc];
    let cases: [(&[&str], &str); 3] = [
        (&["--k8s-tenon-image", "local/tenon:x"], "--k8s-tenon-image needs a registry"),
        (&["--k8s-data-registry", "oci+http://10.0.0.1:5000/x"], "need --k8s-tenon-image"),
        (
            &[
                "--k8s-tenon-image",
                "local/tenon:x",
                "--cache-repo",
                "oci+http://127.0.0.1:9/x",
                "--k8s-data-registry",
                "10.0.0.1/x",
            ],
            "--k8s-data-registry",
        ),
    ];
    for (extra, want) in cases {
        let args: Vec<&str> = base.iter().chain(extra.iter()).copied().collect();
        let r = tenon(&args, &tmp.path().join("s"));
        assert_eq!(r.code, 2, "{extra:?}: {}", r.stderr);
        assert!(r.stderr.contains(want), "{extra:?}: {}", r.stderr);
    }
}

/// Run a command to its end (off the test's runtime threads).
async fn output(mut cmd: std::process::Command) -> Run {
    tokio::task::spawn_blocking(move || cmd.output().expect("tenon runs")).await.unwrap().into()
}

/// Run `sh -c SCRIPT` in a container; its stdout.
async fn exec(c: &Cluster, pod: &str, container: &str, script: &str) -> String {
    let ap = AttachParams::default().container(container).stdout(true).stderr(false);
    let mut p = c.pods_api().exec(pod, ["sh", "-c", script], &ap).await.expect("exec");
    let mut out = String::new();
    if let Some(mut r) = p.stdout() {
        use tokio::io::AsyncReadExt;
        r.read_to_string(&mut out).await.unwrap();
    }
    let _ = p.join().await;
    out
}

/// A fetched input of a writable workspace is read back only when a step changed it: the
/// holder hashes it in the pod, and an unchanged copy stays out of the read-back (the host
/// holds those bytes already); a changed one comes back and lands on the host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetched_input_is_read_back_only_when_a_step_changed_it() {
    const SIZE_MIB: u64 = 8;
    let Some(c) = Cluster::new("regback").await else { return };
    let tenon_image = images::tenon_image();
    let reg = start_registry(&c).await;
    let tmp = tempfile::tempdir().unwrap();
    let repo = tmp.path().join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    std::fs::write(repo.join("p.yaml"), WRITABLE.replace("IMG", BUSYBOX)).unwrap();
    let want = write_model(&repo.join("model.bin"), SIZE_MIB);
    let cmd = command(&c, &repo, &tmp.path().join("s"), Some((&reg, &tenon_image)), &["--parallel", "1"]);
    let r: Run = output(cmd).await;
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    let j = r.json();
    assert_eq!(task(&j, "look")["results"]["insum"], want.as_str(), "{j:#}\n{}", r.stderr);
    let changed = task(&j, "append")["results"]["insum"].as_str().unwrap().to_string();
    assert_ne!(changed, want);
    // per pod, in order: what the holder found unchanged (look, append: make and check
    // have no fetched input in a workspace they write), and how much each read-back carried
    let field = |l: &str, k: &str| {
        l.split_whitespace().find_map(|w| w.strip_prefix(&format!("{k}="))).and_then(|v| v.parse::<u64>().ok())
    };
    let checks: Vec<(u64, u64)> = r
        .stderr
        .lines()
        .filter(|l| l.contains("unchanged inputs not read back"))
        .map(|l| (field(l, "unchanged").unwrap(), field(l, "of").unwrap()))
        .collect();
    assert_eq!(checks, [(1, 1), (0, 1)], "look left the model as fetched, append changed it:\n{}", r.stderr);
    let reads: Vec<u64> =
        r.stderr.lines().filter(|l| l.contains("download unpacked")).map(|l| field(l, "bytes").unwrap()).collect();
    assert_eq!(reads.len(), 3, "make, look and append read back their work workspace:\n{}", r.stderr);
    assert!(reads[0] > SIZE_MIB * MIB, "make's new model came back: {} bytes", reads[0]);
    assert!(reads[1] < MIB, "look's unchanged model did not come back: {} bytes", reads[1]);
    assert!(reads[2] > SIZE_MIB * MIB, "append's changed model came back: {} bytes", reads[2]);
    // the host held the model through look (not deleted on the way) and got append's change
    assert_eq!(task(&j, "check")["results"]["insum"], changed.as_str(), "{j:#}");
    assert_eq!(task(&j, "check")["results"]["size"], (SIZE_MIB * MIB + 4).to_string().as_str(), "{j:#}");
    drop(reg);
}

/// `make` puts the model into the writable `work` workspace, `look` reads it there, `append`
/// changes it, `check` (read-only) sums what the host then holds.
const WRITABLE: &str = r#"
apiVersion: tekton.dev/v1
kind: PipelineRun
metadata:
  name: regback
  annotations:
    tenon.dev/repo-workspace: source
spec:
  workspaces:
    - {name: source, emptyDir: {}}
    - name: work
      volumeClaimTemplate:
        spec:
          accessModes: [ReadWriteOnce]
          resources: {requests: {storage: 64Mi}}
  pipelineSpec:
    workspaces: [{name: source}, {name: work}]
    tasks:
      - name: make
        workspaces: [{name: source, workspace: source}, {name: work, workspace: work}]
        taskSpec:
          workspaces: [{name: source, readOnly: true}, {name: work}]
          steps:
            - name: copy
              image: IMG
              script: cp $(workspaces.source.path)/model.bin $(workspaces.work.path)/model.bin
      - name: look
        runAfter: [make]
        workspaces: [{name: work, workspace: work}]
        taskSpec:
          workspaces: [{name: work}]
          results: [{name: insum}]
          steps:
            - name: sum
              image: IMG
              script: |
                set -e
                sha256sum $(workspaces.work.path)/model.bin | cut -d' ' -f1 | tr -d '\n' > $(results.insum.path)
      - name: append
        runAfter: [look]
        workspaces: [{name: work, workspace: work}]
        taskSpec:
          workspaces: [{name: work}]
          results: [{name: insum}]
          steps:
            - name: append
              image: IMG
              script: |
                set -e
                printf more >> $(workspaces.work.path)/model.bin
                sha256sum $(workspaces.work.path)/model.bin | cut -d' ' -f1 | tr -d '\n' > $(results.insum.path)
      - name: check
        runAfter: [append]
        workspaces: [{name: work, workspace: work}]
        taskSpec:
          workspaces: [{name: work, readOnly: true}]
          results: [{name: insum}, {name: size}]
          steps:
            - name: sum
              image: IMG
              script: |
                set -e
                sha256sum $(workspaces.work.path)/model.bin | cut -d' ' -f1 | tr -d '\n' > $(results.insum.path)
                wc -c < $(workspaces.work.path)/model.bin | tr -d ' \n' > $(results.size.path)
"#;

const SUM: &str = r#"
apiVersion: tekton.dev/v1
kind: PipelineRun
metadata:
  name: reg
  annotations:
    tenon.dev/repo-workspace: source
spec:
  workspaces:
    - {name: source, emptyDir: {}}
  pipelineSpec:
    workspaces: [{name: source}]
    tasks:
      - name: sum
        workspaces: [{name: source, workspace: source}]
        taskSpec:
          workspaces: [{name: source, readOnly: true}]
          results: [{name: insum}]
          steps:
            - name: sum
              image: IMG
              script: |
                set -e
                sha256sum $(workspaces.source.path)/model.bin | cut -d' ' -f1 | tr -d '\n' > $(results.insum.path)
"#;
