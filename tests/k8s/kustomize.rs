//! The part of kustomize that `deploy/` and the test overlay (`tests/k8s/overlay`) use, so the
//! in-cluster test needs no kustomize binary on the machine: `resources` (files, and folders
//! with a `kustomization.yaml`), `namespace`, `labels` (with `includeSelectors`) and `patches`
//! (inline JSON 6902 operations, or a strategic merge patch that is only `$patch: delete`).
//! Like kustomize, each kustomization transforms what its own resources produced, the base
//! first. Anything outside this subset fails the test instead of being ignored.
#![allow(dead_code)]

use std::path::Path;

use serde::Deserialize;
use serde_json::{Map, Value};

/// The objects `kustomize build DIR` would print, in resource order.
pub fn build(dir: &Path) -> Vec<Value> {
    let file = dir.join("kustomization.yaml");
    let k: Value = serde_yaml::from_str(&read(&file)).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    for key in k.as_object().expect("a kustomization is a mapping").keys() {
        let known = ["apiVersion", "kind", "resources", "namespace", "labels", "patches"];
        assert!(known.contains(&key.as_str()), "{}: `{key}` is outside the test's kustomize subset", file.display());
    }
    let mut objs = Vec::new();
    for r in k["resources"].as_array().into_iter().flatten() {
        let p = dir.join(r.as_str().expect("a resource is a path"));
        if p.is_dir() {
            objs.extend(build(&p));
        } else {
            for doc in serde_yaml::Deserializer::from_str(&read(&p)) {
                let v = Value::deserialize(doc).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                if !v.is_null() {
                    objs.push(v);
                }
            }
        }
    }
    if let Some(ns) = k["namespace"].as_str() {
        set_namespace(&mut objs, ns);
    }
    for l in k["labels"].as_array().into_iter().flatten() {
        let pairs = l["pairs"].as_object().expect("labels[].pairs");
        let selectors = l["includeSelectors"].as_bool() == Some(true);
        for o in &mut objs {
            add_labels(o, pairs, selectors);
        }
    }
    for p in k["patches"].as_array().into_iter().flatten() {
        let t = &p["target"];
        let hits = |o: &Value| o["kind"] == t["kind"] && o["metadata"]["name"] == t["name"];
        assert!(objs.iter().any(hits), "{}: patch target {t} matches no object", file.display());
        let body: Value = serde_yaml::from_str(p["patch"].as_str().expect("an inline patch")).unwrap();
        if body.is_array() {
            let ops: json_patch::Patch = serde_json::from_value(body).expect("JSON 6902 operations");
            for o in objs.iter_mut().filter(|o| hits(o)) {
                json_patch::patch(o, &ops).unwrap_or_else(|e| panic!("{}: patch {t}: {e}", file.display()));
            }
        } else {
            assert_eq!(body["$patch"], "delete", "{}: only `$patch: delete` merge patches", file.display());
            objs.retain(|o| !hits(o));
        }
    }
    objs
}

/// kustomize's namespace transformer: every object, and the ServiceAccount subjects of role bindings.
pub fn set_namespace(objs: &mut [Value], ns: &str) {
    for o in objs {
        o["metadata"]["namespace"] = ns.into();
        if o["kind"] == "RoleBinding" {
            for s in o["subjects"].as_array_mut().into_iter().flatten() {
                if s["kind"] == "ServiceAccount" {
                    s["namespace"] = ns.into();
                }
            }
        }
    }
}

fn add_labels(o: &mut Value, pairs: &Map<String, Value>, selectors: bool) {
    let mut paths = vec![vec!["metadata", "labels"]];
    if selectors {
        match o["kind"].as_str() {
            Some("Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet") => {
                paths.push(vec!["spec", "selector", "matchLabels"]);
                paths.push(vec!["spec", "template", "metadata", "labels"]);
            }
            Some("Service") => paths.push(vec!["spec", "selector"]),
            _ => {}
        }
    }
    for path in paths {
        let mut at = &mut *o;
        for step in path {
            if at.get(step).is_none() {
                at[step] = Value::Object(Map::new());
            }
            at = &mut at[step];
        }
        for (k, v) in pairs {
            at[k] = v.clone();
        }
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}
