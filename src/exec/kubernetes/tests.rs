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
    let pod = serde_json::to_value(build_pod("p", &req, &args, "owner1", &plan, None).unwrap()).unwrap();
    let spec = &pod["spec"];
    let names: Vec<&str> = spec["containers"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap()).collect();
    // the holder first: its postStart hook places the steps' entrypoint before they start
    assert_eq!(names, ["tenon-holder", "sidecar-db", "step-a", "step-b"]);
    assert!(spec.get("initContainers").is_none(), "no init container");
    let holder = &spec["containers"][0];
    assert!(holder["lifecycle"]["postStart"]["exec"]["command"][2].as_str().unwrap().contains(BUSYBOX));
    assert_eq!(holder["command"][4], "", "nothing embedded");
    assert_eq!(spec["activeDeadlineSeconds"], 90);
    assert_eq!(spec["automountServiceAccountToken"], false);
    assert_eq!(pod["metadata"]["labels"][OWNER_LABEL], "owner1");
    let a = &spec["containers"][2];
    assert_eq!(a["command"][0], BUSYBOX);
    assert_eq!(a["args"], json!(["tenon-step", "/tekton/scripts/script-0"]));
    assert!(a["command"][3].as_str().unwrap().contains("[ 1 = 1 ]"), "onError: continue");
    assert!(a["command"][3].as_str().unwrap().contains("$R/sidecars"), "step 0 waits for the sidecars");
    assert_eq!(a["resources"]["limits"]["memory"], "64Mi");
    assert_eq!(a["workingDir"], "/workspace");
    let b = &spec["containers"][3];
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
    assert!(spec["containers"][1].get("command").is_none());
    let up = upload_plan(&plan, &BTreeSet::new()).unwrap();
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

#[test]
fn termination_messages_parse_strictly() {
    use super::attempt::parse_message;
    let ok = "tenon1\nt timedOut 2\n2\n\ns out 5\na\nb c\nr big 0\n\nend\n";
    let files = parse_message(ok).unwrap();
    assert_eq!(files.len(), 3);
    assert_eq!(files[1], ("s".to_string(), "out".to_string(), b"a\nb c".to_vec()), "a newline inside a file");
    assert_eq!(files[2].2, b"");
    assert_eq!(parse_message("tenon1\nend\n").unwrap(), vec![]);
    for bad in [
        "tenon1 overflow\n",
        "",
        "other\nend\n",
        "tenon1\ns out 5\nabc\nend\n",      // shorter than it says
        "tenon1\ns out 2\nabc\nend\n",      // longer
        "tenon1\ns out 1\na\n",             // truncated: no end
        "tenon1\ns ../x 1\na\nend\n",       // a path
        "tenon1\ns out 3\n\u{FFFD}\nend\n", // bytes that were not UTF-8
        "tenon1\nend\nmore",
    ] {
        assert!(parse_message(bad).is_none(), "{bad:?}");
    }
}

#[test]
fn results_come_from_the_messages_of_the_steps_that_ran() {
    use super::attempt::files_from_messages;
    let req = request(
        json!({
            "results": [{"name": "out"}],
            "steps": [
                {"name": "a", "image": "x", "script": "true", "results": [{"name": "sr"}]},
                {"name": "b", "image": "x", "script": "false"},
                {"name": "c", "image": "x", "script": "true"},
            ],
        }),
        vec![],
    );
    let plan = plan(&req, &KubeArgs::default(), Path::new("/s")).unwrap();
    let wrapper = plan.steps[0].container["command"][3].as_str().unwrap().to_string();
    assert!(wrapper.contains("a s sr $S/results/sr") && wrapper.contains("a r out /tekton/results/out"), "{wrapper}");
    assert!(wrapper.contains(&format!("-le {}", message_budget(4))), "the budget of a 4-container pod");
    let pod = |msgs: &[(&str, i32, Option<&str>)]| -> Pod {
        let statuses: Vec<Value> = msgs
            .iter()
            .map(|(n, code, m)| {
                json!({"name": n, "image": "x", "imageID": "", "ready": false, "restartCount": 0,
                "state": {"terminated": {"exitCode": code, "message": m}}})
            })
            .collect();
        serde_json::from_value(json!({"status": {"containerStatuses": statuses}})).unwrap()
    };
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("pod-files");
    // b fails for good: it ends the chain and reports the task results; c skipped itself
    let p = pod(&[
        ("step-a", 0, Some("tenon1\ns sr 2\nhi\nend\n")),
        ("step-b", 1, Some("tenon1\nr out 3\nyes\nend\n")),
        ("step-c", 0, None),
    ]);
    let got = files_from_messages(&req, &plan, &p, &dir).unwrap();
    assert_eq!(std::fs::read_to_string(got.join("tekton/steps/step-a/results/sr")).unwrap(), "hi");
    assert_eq!(std::fs::read_to_string(got.join("tekton/results/out")).unwrap(), "yes");
    // a step that ran without a message that parses: read the holder instead
    let p = pod(&[("step-a", 0, Some("tenon1 overflow\n")), ("step-b", 1, Some("tenon1\nend\n"))]);
    assert!(files_from_messages(&req, &plan, &p, &dir).is_none());
    // task results only from the step that ended the chain
    let p = pod(&[("step-a", 0, Some("tenon1\nr out 2\nno\nend\n")), ("step-b", 1, Some("tenon1\nend\n"))]);
    let got = files_from_messages(&req, &plan, &p, &dir).unwrap();
    assert!(!got.join("tekton/results/out").exists());
}

#[test]
fn message_budgets() {
    assert_eq!(message_budget(1), 4096);
    assert_eq!(message_budget(3), 4096);
    assert_eq!(message_budget(4), 3072);
    assert_eq!(message_budget(12), 1024);
}

/// The wrapper itself, run by the host's busybox with its paths moved into a temporary
/// directory: the message it leaves is the one tenon parses.
#[test]
fn the_step_wrapper_writes_a_message_tenon_reads() {
    let Some(bb) = ["/bin/busybox", "/usr/bin/busybox"].into_iter().find(|p| Path::new(p).exists()) else {
        eprintln!("SKIPPED: no busybox on this host (apt-get install busybox-static)");
        return;
    };
    use super::attempt::parse_message;
    let req = request(
        json!({
            "results": [{"name": "out"}, {"name": "missing"}],
            "steps": [{"name": "a", "image": "x", "script": "true", "results": [{"name": "sr"}]}],
        }),
        vec![],
    );
    let plan = plan(&req, &KubeArgs::default(), Path::new("/s")).unwrap();
    let t = tempfile::tempdir().unwrap();
    let root = t.path().display().to_string();
    let wrapper = plan.steps[0].container["command"][3]
        .as_str()
        .unwrap()
        .replace(BUSYBOX, bb)
        .replace("/tekton/", &format!("{root}/tekton/"))
        .replace("/dev/termination-log", &format!("{root}/tl"));
    for d in ["tekton/run", "tekton/results", "tekton/steps/step-a/results"] {
        std::fs::create_dir_all(t.path().join(d)).unwrap();
    }
    std::fs::write(t.path().join("tekton/run/ready"), "ok\n").unwrap();
    let step = format!(
        "printf 'two\\nlines' > {root}/tekton/results/out; printf é > {root}/tekton/steps/step-a/results/sr; exit 3"
    );
    let st = std::process::Command::new(bb)
        .args(["sh", "-c", &wrapper, "tenon-step", bb, "sh", "-c", &step])
        .status()
        .unwrap();
    assert_eq!(st.code(), Some(3));
    assert_eq!(std::fs::read_to_string(t.path().join("tekton/steps/step-a/exitCode")).unwrap(), "3");
    assert_eq!(std::fs::read_to_string(t.path().join("tekton/run/step-0")).unwrap(), "fail\n");
    let msg = std::fs::read_to_string(t.path().join("tl")).unwrap();
    let files = parse_message(&msg).unwrap_or_else(|| panic!("{msg:?}"));
    assert_eq!(
        files,
        vec![
            ("s".to_string(), "sr".to_string(), "é".as_bytes().to_vec()),
            ("r".to_string(), "out".to_string(), b"two\nlines".to_vec())
        ]
    );
    // above the budget: the overflow marker
    let small = wrapper.replace(&format!("-le {}", message_budget(2)), "-le 10");
    assert_ne!(small, wrapper);
    std::fs::remove_file(t.path().join("tekton/run/step-0")).unwrap();
    std::process::Command::new(bb).args(["sh", "-c", &small, "tenon-step", bb, "sh", "-c", &step]).status().unwrap();
    assert_eq!(std::fs::read_to_string(t.path().join("tl")).unwrap(), "tenon1 overflow\n");
}

#[test]
fn secrets_never_travel_in_the_pod_spec() {
    use super::attempt::carries_secrets;
    let ws = |kind: &str| super::super::BoundWorkspace {
        name: "w".into(),
        path: Some(PathBuf::from("/s/runs/r/1/volumes/w")),
        read_only: true,
        claim: String::new(),
        kind: kind.into(),
    };
    let steps = json!({"steps": [{"name": "a", "image": "x", "script": "true"}]});
    assert!(!carries_secrets(&request(steps.clone(), vec![ws("configMap:abc")])));
    assert!(carries_secrets(&request(steps.clone(), vec![ws("secret:abc")])));
    let vol = json!({"volumes": [{"name": "v", "secret": {"secretName": "s"}}],
                     "steps": [{"name": "a", "image": "x", "script": "true"}]});
    assert!(carries_secrets(&request(vol, vec![])));
}
