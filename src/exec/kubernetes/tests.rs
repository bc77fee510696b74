use super::transfer::{upload_plan, write_back};
use super::*;

#[test]
fn image_names() {
    assert_eq!(normalize_image("python:3.11-slim"), "docker.io/library/python:3.11-slim");
    assert_eq!(normalize_image("local/busybox:1.35"), "docker.io/local/busybox:1.35");
    assert_eq!(normalize_image("busybox"), "docker.io/library/busybox:latest");
    assert_eq!(normalize_image("ghcr.io/a/b:1"), "ghcr.io/a/b:1");
    assert_eq!(normalize_image("localhost:5000/a"), "localhost:5000/a:latest");
}

#[test]
fn pod_names_are_valid() {
    let d = Path::new("/s/runs/r/1/taskruns/run-train/attempt-0");
    let n = pod_name("run-train", 0, d);
    assert!(n.starts_with("run-train-pod-") && n.len() == "run-train-pod-".len() + 5, "{n}");
    assert!(pod_name("run-train", 2, d).starts_with("run-train-pod-retry2-"));
    assert_ne!(n, pod_name("run-train", 0, Path::new("/s/runs/r/2/taskruns/run-train/attempt-0")));
    let long = pod_name(&"x".repeat(80), 0, d);
    assert!(long.len() <= 63, "{long}");
    let odd = pod_name("run-train[1]", 0, d);
    assert!(odd.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'), "{odd}");
    assert_ne!(pod_name("a_b", 0, d), pod_name("a.b", 0, d));
}

#[test]
fn write_back_merges_changes_only() {
    let t = tempfile::tempdir().unwrap();
    let (pod, host) = (t.path().join("pod"), t.path().join("host"));
    for d in [&pod, &host] {
        std::fs::create_dir_all(d.join("sub")).unwrap();
    }
    // uploaded: keep.txt, gone.txt, sub/x; meanwhile another task wrote other.txt on the host
    std::fs::write(host.join("keep.txt"), "same").unwrap();
    std::fs::write(host.join("gone.txt"), "old").unwrap();
    std::fs::write(host.join("sub/x"), "1").unwrap();
    std::fs::write(host.join("other.txt"), "theirs").unwrap();
    let uploaded: BTreeSet<String> = ["keep.txt", "gone.txt", "sub/x"].iter().map(|s| s.to_string()).collect();
    // the pod kept keep.txt, deleted gone.txt, changed sub/x, added new.txt
    std::fs::write(pod.join("keep.txt"), "same").unwrap();
    std::fs::write(pod.join("sub/x"), "2").unwrap();
    std::fs::write(pod.join("new.txt"), "n").unwrap();
    // and a symlink dir on the host must not be followed
    let outside = t.path().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::os::unix::fs::symlink(&outside, host.join("link")).unwrap();
    std::fs::create_dir_all(pod.join("link")).unwrap();
    std::fs::write(pod.join("link/f"), "x").unwrap();
    write_back(&pod, &host, &uploaded).unwrap();
    let read = |p: &str| std::fs::read_to_string(host.join(p)).ok();
    assert_eq!(read("keep.txt").as_deref(), Some("same"));
    assert_eq!(read("gone.txt"), None);
    assert_eq!(read("sub/x").as_deref(), Some("2"));
    assert_eq!(read("new.txt").as_deref(), Some("n"));
    assert_eq!(read("other.txt").as_deref(), Some("theirs"), "another writer's file survives");
    assert_eq!(read("link/f").as_deref(), Some("x"));
    assert!(!outside.join("f").exists(), "wrote through a host symlink");
}

#[test]
fn probe_scalars_get_kubernetes_types() {
    let v = typed(json!({"exec": {"command": ["test", "1"]}, "periodSeconds": "1", "failureThreshold": "3",
                             "runAsUser": "1000", "readOnlyRootFilesystem": "true", "name": "7"}));
    assert_eq!(v["periodSeconds"], 1);
    assert_eq!(v["failureThreshold"], 3);
    assert_eq!(v["runAsUser"], 1000);
    assert_eq!(v["readOnlyRootFilesystem"], true);
    assert_eq!(v["exec"]["command"][1], "1", "command words stay strings");
    assert_eq!(v["name"], "7");
}

fn request(yaml_steps: Value, workspaces: Vec<super::super::BoundWorkspace>) -> TaskRunRequest {
    let spec: crate::model::TaskSpec = serde_json::from_value(yaml_steps).unwrap();
    TaskRunRequest {
        name: "run-t".into(),
        label: "t".into(),
        spec,
        workspaces,
        timeout: Some(Duration::from_secs(60)),
        attempt: 0,
        dir: PathBuf::from("/s/runs/r/1/taskruns/run-t/attempt-0"),
        max_result_size: 4096,
        volumes: BTreeMap::new(),
    }
}

#[test]
fn pod_spec_from_a_task() {
    let ws = |name: &str, path: &str, kind: &str, claim: &str, ro: bool| super::super::BoundWorkspace {
        name: name.into(),
        path: Some(PathBuf::from(path)),
        read_only: ro,
        claim: claim.into(),
        kind: kind.into(),
    };
    let req = request(
        json!({
            "workspaces": [{"name": "src", "readOnly": true}, {"name": "data"}],
            "sidecars": [{"name": "db", "image": "redis:7"}],
            "steps": [
                {"name": "a", "image": "alpine:3", "script": "echo hi", "onError": "continue",
                 "computeResources": {"limits": {"memory": "64Mi"}}},
                {"name": "b", "image": "alpine:3", "command": ["cat"], "args": ["$(workspaces.data.path)/x"],
                 "workingDir": "/w"},
            ],
        }),
        vec![
            ws("src", "/repo", "repo", "", true),
            ws("data", "/s/pvc/team-data/sub", "persistentVolumeClaim:team-data", "team-data", false),
        ],
    );
    let args =
        KubeArgs { pull_policy: "IfNotPresent".into(), helper_image: "busybox:1.36".into(), ..Default::default() };
    let plan = plan(&req, &args, Path::new("/s")).unwrap();
    assert_eq!(plan.claims, vec![("ws-data".to_string(), "team-data".to_string())]);
    assert_eq!(plan.copied.len(), 1, "only the repo is copied");
    assert!(!plan.copied[0].write_back, "a read-only workspace is not written back");
    let pod = serde_json::to_value(build_pod("p", &req, &args, "owner1", &plan).unwrap()).unwrap();
    let spec = &pod["spec"];
    let names: Vec<&str> = spec["containers"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["sidecar-db", "step-a", "step-b", "tenon-holder"]);
    assert_eq!(spec["initContainers"][0]["name"], "prepare");
    assert_eq!(spec["activeDeadlineSeconds"], 90);
    assert_eq!(spec["automountServiceAccountToken"], false);
    assert_eq!(pod["metadata"]["labels"][OWNER_LABEL], "owner1");
    let a = &spec["containers"][1];
    assert_eq!(a["command"][0], BUSYBOX);
    assert_eq!(a["args"], json!(["tenon-step", "/tekton/scripts/script-0"]));
    assert!(a["command"][3].as_str().unwrap().contains("[ 1 = 1 ]"), "onError: continue");
    assert!(a["command"][3].as_str().unwrap().contains("$R/sidecars"), "step 0 waits for the sidecars");
    assert_eq!(a["resources"]["limits"]["memory"], "64Mi");
    assert_eq!(a["workingDir"], "/workspace");
    let b = &spec["containers"][2];
    assert_eq!(b["args"], json!(["tenon-step", "cat", "/workspace/data/x"]));
    assert_eq!(b["workingDir"], "/w");
    assert!(b["command"][3].as_str().unwrap().contains("$R/step-0"));
    let data = b["volumeMounts"].as_array().unwrap().iter().find(|m| m["name"] == "ws-data").unwrap();
    assert_eq!(data["subPath"], "sub");
    assert_eq!(data["mountPath"], "/workspace/data");
    let src = b["volumeMounts"].as_array().unwrap().iter().find(|m| m["name"] == "ws-src").unwrap();
    assert_eq!(src["readOnly"], true);
    let vols = spec["volumes"].as_array().unwrap();
    assert!(vols.iter().any(|v| v["persistentVolumeClaim"]["claimName"] == "team-data"));
    // the sidecar without command runs its image's entrypoint
    assert!(spec["containers"][0].get("command").is_none());
    let up = upload_plan(&plan).unwrap();
    assert!(up.size > 0 && up.manifests.contains_key("tenon/ws/ws-src"));
}

#[test]
fn unsupported_features_are_named() {
    let args = KubeArgs::default();
    let when = json!([{"input": "$(steps.s.results.r)", "operator": "in", "values": ["a"]}]);
    let req = request(json!({"steps": [{"name": "a", "image": "x", "script": "true", "when": when}]}), vec![]);
    let e = plan(&req, &args, Path::new("/s")).err().unwrap();
    assert!(e.contains("unsupported by the kubernetes executor") && e.contains("when"), "{e}");
    let req = request(json!({"steps": [{"name": "a", "image": "quay.io/x/y:1"}]}), vec![]);
    let e = plan(&req, &args, Path::new("/s")).err().unwrap();
    assert!(e.contains("neither command nor script"), "{e}");
}

#[test]
fn tolerations() {
    assert_eq!(parse_toleration("gpu:NoSchedule").unwrap()["operator"], "Exists");
    assert_eq!(parse_toleration("k=v:NoExecute").unwrap()["value"], "v");
    assert!(parse_toleration("k=v").is_err());
}
