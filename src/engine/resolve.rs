//! Turning declarations plus supplied values into a concrete TaskSpec. Pure apart
//! from reading the catalog.

use std::collections::BTreeMap;

use crate::model::subst::Vars;
use crate::model::{Catalog, EnvVar, ParamSpec, ParamType, ParamValue, Step, TaskSpec};

pub use crate::plan::params::{param_values, param_values_with, param_vars};
/// A run-level failure with Tekton's reason (the scheduler's).
pub use crate::plan::RunFailure as Failure;

/// Strategic merge of `stepTemplate` into each step: scalars in the step win, env merges
/// by name (step wins), lists are replaced wholesale.
pub fn apply_step_template(spec: &mut TaskSpec) {
    let Some(t) = spec.step_template.clone() else {
        return;
    };
    for s in spec.steps.iter_mut() {
        merge_step(s, &t);
    }
}

fn merge_step(s: &mut Step, t: &Step) {
    if s.ref_.is_none() {
        macro_rules! fill {
            ($($f:ident),*) => { $( if s.$f.is_none() { s.$f = t.$f.clone(); } )* };
        }
        fill!(image, command, args, working_dir, image_pull_policy, compute_resources, resources, security_context);
        if s.command.is_some() && s.script.is_some() {
            // a template command never combines with a step script
            s.command = None;
        }
        let mut mounts = t.volume_mounts.clone();
        for m in &s.volume_mounts {
            mounts.retain(|x| x.mount_path != m.mount_path);
            mounts.push(m.clone());
        }
        s.volume_mounts = mounts;
        // a list without a merge key: the step's replaces the template's
        if s.env_from.is_empty() {
            s.env_from = t.env_from.clone();
        }
    }
    let mut env: Vec<EnvVar> = t.env.clone();
    for e in &s.env {
        env.retain(|x| x.name != e.name);
        env.push(e.clone());
    }
    s.env = env;
}

/// Substitute `vars` through a TaskSpec, leaving param declarations alone.
pub fn substitute(spec: &TaskSpec, vars: &Vars) -> TaskSpec {
    let mut s = spec.clone();
    let decls = std::mem::take(&mut s.params);
    let mut v = serde_json::to_value(&s).unwrap_or_default();
    vars.apply_json(&mut v, &[]);
    let mut out: TaskSpec = serde_json::from_value(v).unwrap_or(s);
    out.params = decls;
    out
}

/// Replace steps that `ref` a StepAction with the action's body, its params resolved
/// from the step's `params` (the Task's params are not visible inside).
pub fn inline_step_actions(spec: &mut TaskSpec, cat: &Catalog) -> Result<(), Failure> {
    for step in spec.steps.iter_mut() {
        let Some(r) = step.ref_.clone() else { continue };
        let name = r.name.clone().unwrap_or_default();
        let Some(sa) = cat.step_action(&name) else {
            return Err(Failure::new("TaskRunResolutionFailed", format!("StepAction {name:?} not found")));
        };
        let a = &sa.spec;
        for p in &step.params {
            if !a.params.iter().any(|d| d.name == p.name) {
                return Err(Failure::new(
                    "TaskRunValidationFailed",
                    format!("extra params passed by Step to StepAction: {:?}", p.name),
                ));
            }
        }
        // A param bound to a later-known step result (`$(steps.s.results.r[*])`) is
        // forwarded: its uses in the action become references to that result, which the
        // executor substitutes when the step runs.
        let mut forwards: Vec<(String, String)> = Vec::new();
        for p in &step.params {
            if let ParamValue::Str(s) = &p.value {
                let refs = crate::model::subst::find_refs(s);
                if refs.len() == 1 && refs[0].start == 0 && refs[0].end == s.len() && refs[0].expr.starts_with("steps.")
                {
                    let base = refs[0].expr.strip_suffix("[*]").unwrap_or(refs[0].expr);
                    forwards.push((p.name.clone(), base.to_string()));
                }
            }
        }
        // A value left as an unresolved reference of the wrong shape falls back to the
        // StepAction's default, as Tekton's per-key merge does.
        let supplied: Vec<(String, ParamValue)> = step
            .params
            .iter()
            .filter(|p| !forwards.iter().any(|(n, _)| n == &p.name))
            .filter(|p| match (&p.value, a.params.iter().find(|d| d.name == p.name)) {
                (ParamValue::Str(s), Some(d)) => !(s.contains("$(") && d.param_type() != ParamType::String),
                _ => true,
            })
            .map(|p| (p.name.clone(), p.value.clone()))
            .collect();
        let decls: Vec<ParamSpec> =
            a.params.iter().filter(|d| !forwards.iter().any(|(n, _)| n == &d.name)).cloned().collect();
        let values = param_values(&decls, &supplied, &format!("StepAction {name:?}"))?;
        let vars = param_vars(&values);
        let body = Step {
            name: step.name.clone(),
            image: a.image.clone(),
            command: a.command.clone(),
            args: a.args.clone(),
            script: a.script.clone(),
            env: {
                let mut env = step.env.clone();
                for e in &a.env {
                    if !env.iter().any(|x| x.name == e.name) {
                        env.push(e.clone());
                    }
                }
                env
            },
            working_dir: a.working_dir.clone(),
            on_error: step.on_error.clone(),
            timeout: step.timeout.clone(),
            when: step.when.clone(),
            results: a.results.clone(),
            volume_mounts: a.volume_mounts.clone(),
            ..Default::default()
        };
        let mut v = serde_json::to_value(&body).unwrap_or_default();
        vars.apply_json(&mut v, &[]);
        if !forwards.is_empty() {
            forward_refs(&mut v, &forwards);
        }
        *step = serde_json::from_value(v).unwrap_or(body);
    }
    Ok(())
}

/// Rewrite `$(params.NAME<rest>)` to `$(BASE<rest>)` for each forwarded param.
fn forward_refs(v: &mut serde_json::Value, forwards: &[(String, String)]) {
    match v {
        serde_json::Value::String(s) => {
            for (name, base) in forwards {
                for prefix in
                    [format!("$(params.{name}"), format!("$(params[\"{name}\"]"), format!("$(params['{name}']")]
                {
                    let mut out = String::new();
                    let mut rest = s.as_str();
                    while let Some(i) = rest.find(&prefix) {
                        let after = &rest[i + prefix.len()..];
                        // only whole names: next char must end the name
                        if after.starts_with([')', '[', '.']) {
                            out.push_str(&rest[..i]);
                            out.push_str("$(");
                            out.push_str(base);
                        } else {
                            out.push_str(&rest[..i + prefix.len()]);
                        }
                        rest = after;
                    }
                    out.push_str(rest);
                    *s = out;
                }
            }
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(|x| forward_refs(x, forwards)),
        serde_json::Value::Object(m) => m.values_mut().for_each(|x| forward_refs(x, forwards)),
        _ => {}
    }
}

/// How [`resolve_env`] treats what it reads.
#[derive(Debug, Clone, Copy, Default)]
pub struct EnvMode {
    /// Building the cache key: a Secret's value never enters it; the variable is kept as
    /// its reference plus the Secret's content digest (as Secret workspaces are keyed), so a
    /// changed value changes the key. ConfigMap values are not secret and stay as values.
    pub for_key: bool,
    /// Expand `envFrom` from the repository's ConfigMaps/Secrets (the local executor);
    /// otherwise it is left to the executor (on a cluster the namespace's objects are used).
    pub env_from: bool,
}

/// Kubernetes' rule for names `envFrom` may set (others are skipped, as the kubelet does).
fn env_name_ok(n: &str) -> bool {
    let mut c = n.chars();
    c.next().is_some_and(|f| f.is_ascii_alphabetic() || matches!(f, '-' | '.' | '_'))
        && c.all(|x| x.is_ascii_alphanumeric() || matches!(x, '-' | '.' | '_'))
}

fn flag(v: Option<&serde_json::Value>) -> bool {
    matches!(v, Some(serde_json::Value::Bool(true))) || v.and_then(|v| v.as_str()) == Some("true")
}

/// The content digest of a ConfigMap/Secret (every key), as its workspaces are keyed.
fn content_digest(d: &crate::model::KeyData, secret: bool) -> String {
    format!("sha256:{}", super::workspaces::data_digest(&key_bytes(d, secret), &[]))
}

/// Resolve `env[].valueFrom` (configMapKeyRef / secretKeyRef) and, with `mode.env_from`,
/// `envFrom` (configMapRef / secretRef, `prefix`, `optional`) from objects in the
/// repository. Secret values are never logged, never put in errors and, with
/// `mode.for_key`, never put in the spec.
pub fn resolve_env(spec: &mut TaskSpec, cat: &Catalog, mode: EnvMode) -> Result<(), Failure> {
    for step in spec.steps.iter_mut().chain(spec.sidecars.iter_mut()) {
        for e in step.env.iter_mut() {
            let Some(vf) = e.value_from.take() else {
                continue;
            };
            let (kind, r) = if let Some(r) = vf.get("configMapKeyRef") {
                ("ConfigMap", r)
            } else if let Some(r) = vf.get("secretKeyRef") {
                ("Secret", r)
            } else {
                return Err(Failure::new(
                    "TaskRunValidationFailed",
                    format!("env {:?}: only configMapKeyRef and secretKeyRef are supported locally", e.name),
                ));
            };
            let name = r.get("name").and_then(|v| v.as_str()).unwrap_or_default();
            let key = r.get("key").and_then(|v| v.as_str()).unwrap_or_default();
            let optional = flag(r.get("optional"));
            let obj = if kind == "ConfigMap" { cat.config_map(name) } else { cat.secret(name) };
            let val = obj.and_then(|o| key_value(&o.spec, key, kind == "Secret"));
            if val.is_none() && !optional {
                return Err(Failure::new(
                    "TaskRunValidationFailed",
                    format!("env {:?}: {kind} {name:?} key {key:?} not found in the repository (tenon reads ConfigMaps and Secrets from the manifests it loads)", e.name),
                ));
            }
            if kind == "Secret" && mode.for_key {
                let digest = match (obj, &val) {
                    (Some(o), Some(_)) => content_digest(&o.spec, true),
                    _ => "absent".into(),
                };
                let mut keyed = vf.clone();
                keyed["contentDigest"] = serde_json::Value::String(digest);
                e.value = None;
                e.value_from = Some(keyed);
            } else {
                e.value = Some(val.unwrap_or_default());
            }
        }
        if mode.env_from && !step.env_from.is_empty() {
            let from = expand_env_from(&step.env_from, cat, mode.for_key)?;
            step.env_from.clear();
            // `env` wins over `envFrom` (Kubernetes)
            let mut env: Vec<EnvVar> =
                from.into_iter().filter(|f| !step.env.iter().any(|e| e.name == f.name)).collect();
            env.append(&mut step.env);
            step.env = env;
        }
    }
    if mode.env_from {
        // merged into the steps already
        if let Some(t) = spec.step_template.as_mut() {
            t.env_from.clear();
        }
    }
    Ok(())
}

/// The variables `envFrom` sets, later sources winning. For a key, a Secret's variables
/// carry the Secret's content digest instead of their values.
fn expand_env_from(list: &[serde_json::Value], cat: &Catalog, for_key: bool) -> Result<Vec<EnvVar>, Failure> {
    let mut out: Vec<EnvVar> = Vec::new();
    for (i, src) in list.iter().enumerate() {
        let prefix = src.get("prefix").and_then(|v| v.as_str()).unwrap_or_default();
        let (kind, r) = match (src.get("configMapRef"), src.get("secretRef")) {
            (Some(r), None) => ("ConfigMap", r),
            (None, Some(r)) => ("Secret", r),
            _ => {
                return Err(Failure::new(
                    "TaskRunValidationFailed",
                    format!("envFrom[{i}]: expected exactly one of configMapRef, secretRef"),
                ))
            }
        };
        let secret = kind == "Secret";
        let name = r.get("name").and_then(|v| v.as_str()).unwrap_or_default();
        let obj = if secret { cat.secret(name) } else { cat.config_map(name) };
        let Some(obj) = obj else {
            if flag(r.get("optional")) {
                continue;
            }
            return Err(Failure::new(
                "TaskRunValidationFailed",
                format!("envFrom[{i}]: {kind} {name:?} not found in the repository (tenon reads ConfigMaps and Secrets from the manifests it loads; mark it optional: true if it may be absent)"),
            ));
        };
        let digest = content_digest(&obj.spec, secret);
        for (k, bytes) in key_bytes(&obj.spec, secret) {
            let var = format!("{prefix}{k}");
            if !env_name_ok(&var) {
                tracing::warn!(kind, name, key = %k, "envFrom: skipping a key that is not a valid environment variable name");
                continue;
            }
            let e = if secret && for_key {
                EnvVar {
                    name: var.clone(),
                    value: None,
                    value_from: Some(serde_json::json!({
                        "secretKeyRef": {"name": name, "key": k},
                        "contentDigest": digest,
                    })),
                }
            } else {
                EnvVar {
                    name: var.clone(),
                    value: Some(String::from_utf8_lossy(&bytes).into_owned()),
                    value_from: None,
                }
            };
            out.retain(|x| x.name != var);
            out.push(e);
        }
    }
    Ok(out)
}

use crate::util::base64_decode;

/// The value of `key` in a ConfigMap/Secret (Secret `data` is base64).
pub fn key_value(d: &crate::model::KeyData, key: &str, secret: bool) -> Option<String> {
    if let Some(v) = d.string_data.get(key) {
        return Some(v.clone());
    }
    let v = d.data.get(key)?;
    if secret {
        base64_decode(v).map(|b| String::from_utf8_lossy(&b).to_string())
    } else {
        Some(v.clone())
    }
}

/// Bytes of every key of a ConfigMap/Secret.
pub fn key_bytes(d: &crate::model::KeyData, secret: bool) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for (k, v) in &d.data {
        let bytes = if secret { base64_decode(v).unwrap_or_default() } else { v.as_bytes().to_vec() };
        out.insert(k.clone(), bytes);
    }
    for (k, v) in &d.binary_data {
        out.insert(k.clone(), base64_decode(v).unwrap_or_default());
    }
    for (k, v) in &d.string_data {
        out.insert(k.clone(), v.as_bytes().to_vec());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, default: Option<ParamValue>) -> ParamSpec {
        ParamSpec { name: name.into(), default, ..Default::default() }
    }

    #[test]
    fn param_value_table() {
        let s = |v: &str| ParamValue::Str(v.into());
        // supplied beats default; defaults reference other params
        let decl = vec![spec("a", Some(s("A"))), spec("b", Some(s("$(params.a)-b"))), spec("c", None)];
        let got = param_values(&decl, &[("c".into(), s("C")), ("extra".into(), s("x"))], "t").unwrap();
        assert_eq!(got["b"], s("A-b"));
        assert_eq!(got["c"], s("C"));
        assert!(!got.contains_key("extra"));
        // missing required
        let e = param_values(&decl, &[], "pipelineRun").unwrap_err();
        assert_eq!(e.reason, "ParameterMissing");
        assert!(e.message.contains("[\"c\"]"));
        // type mismatch
        let e = param_values(&decl, &[("c".into(), ParamValue::Array(vec![]))], "t").unwrap_err();
        assert_eq!(e.reason, "ParameterTypeMismatch");
        // cycle
        let cyc = vec![spec("x", Some(s("$(params.y)"))), spec("y", Some(s("$(params.x)")))];
        assert!(param_values(&cyc, &[], "t").is_err());
        // object merge key by key
        let mut o = ParamSpec { name: "o".into(), type_: Some("object".into()), ..Default::default() };
        o.properties = Some(BTreeMap::from([("k1".into(), Default::default()), ("k2".into(), Default::default())]));
        o.default = Some(ParamValue::Object(BTreeMap::from([("k1".into(), "d1".into()), ("k2".into(), "d2".into())])));
        let got =
            param_values(&[o], &[("o".into(), ParamValue::Object(BTreeMap::from([("k2".into(), "v2".into())])))], "t")
                .unwrap();
        assert_eq!(
            got["o"],
            ParamValue::Object(BTreeMap::from([("k1".into(), "d1".into()), ("k2".into(), "v2".into())]))
        );
    }

    #[test]
    fn supplied_values_are_data_defaults_resolve_once() {
        let s = |v: &str| ParamValue::Str(v.into());
        let decl = vec![
            spec("secret", None),
            spec("a", None),
            spec("b", Some(s("$(params.a)-b"))),
            spec("x", Some(s("X"))),
            spec("y", Some(s("$(params.x)y"))),
            spec("z", Some(s("$(params['y'])z $(context.taskRun.name)"))),
            ParamSpec {
                name: "arr".into(),
                type_: Some("array".into()),
                default: Some(ParamValue::Array(vec!["$(params.z)".into(), "$(params.a)".into()])),
                ..Default::default()
            },
        ];
        let supplied = [("secret".to_string(), s("S")), ("a".to_string(), s("$(params.secret)"))];
        let got = param_values(&decl, &supplied, "t").unwrap();
        let rows = [
            // a supplied value is never scanned for params
            ("a", s("$(params.secret)")),
            // a default gets the value it names, which is not scanned again
            ("b", s("$(params.secret)-b")),
            // chains resolve in dependency order; other variables wait for their phase
            ("y", s("Xy")),
            ("z", s("Xyz $(context.taskRun.name)")),
            ("arr", ParamValue::Array(vec!["Xyz $(context.taskRun.name)".into(), "$(params.secret)".into()])),
        ];
        for (name, want) in rows {
            assert_eq!(got[name], want, "{name}");
        }
        // a default may name an outer (propagated) value: the author's text, resolved once
        let outer = BTreeMap::from([("p".to_string(), s("$(params.secret)"))]);
        let got = param_values_with(&[spec("q", Some(s("$(params.p)-q")))], &[], &outer, "t").unwrap();
        assert_eq!(got["q"], s("$(params.secret)-q"));
        // a self reference is a cycle; chains are bounded like Tekton's (10 levels)
        let e = param_values(&[spec("s", Some(s("$(params.s)")))], &[], "t").unwrap_err();
        assert!(e.message.contains("circular"), "{}", e.message);
        let mut deep = vec![spec("p0", Some(s("v")))];
        for i in 1..=5000 {
            deep.push(spec(&format!("p{i}"), Some(s(&format!("$(params.p{})", i - 1)))));
        }
        for n in [12, 5001] {
            let e = param_values(&deep[..n], &[], "t").unwrap_err();
            assert!(e.message.contains("levels deep"), "{}", e.message);
        }
        assert_eq!(param_values(&deep[..11], &[], "t").unwrap()["p10"], s("v"));
    }

    #[test]
    fn step_template_merge() {
        let mut spec: TaskSpec = serde_json::from_value(serde_json::json!({
            "stepTemplate": {"image": "ubuntu", "env": [{"name": "A", "value": "t"}, {"name": "B", "value": "t"}]},
            "steps": [{"name": "s", "script": "x", "env": [{"name": "B", "value": "s"}]}, {"name": "u", "image": "alpine", "script": "y"}]
        }))
        .unwrap();
        apply_step_template(&mut spec);
        assert_eq!(spec.steps[0].image.as_deref(), Some("ubuntu"));
        assert_eq!(spec.steps[1].image.as_deref(), Some("alpine"));
        let env: Vec<(String, String)> =
            spec.steps[0].env.iter().map(|e| (e.name.clone(), e.value.clone().unwrap())).collect();
        assert_eq!(env, vec![("A".into(), "t".into()), ("B".into(), "s".into())]);
    }

    fn env_catalog() -> Catalog {
        let yaml = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: cfg}
data: {A: "1", B: "2"}
---
apiVersion: v1
kind: Secret
metadata: {name: sec}
data: {token: UzNDUkVU}
"#;
        crate::model::load_sources(vec![("objects.yaml".into(), yaml.into())])
    }

    fn env_spec() -> TaskSpec {
        serde_json::from_value(serde_json::json!({"steps": [{
            "name": "s",
            "envFrom": [{"configMapRef": {"name": "cfg"}, "prefix": "P_"}, {"secretRef": {"name": "sec"}}],
            "env": [
                {"name": "P_B", "value": "mine"},
                {"name": "T", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "token"}}},
                {"name": "C", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "A"}}}
            ]
        }]}))
        .unwrap()
    }

    fn env_of(spec: &TaskSpec) -> Vec<(String, Option<String>)> {
        spec.steps[0].env.iter().map(|e| (e.name.clone(), e.value.clone())).collect()
    }

    #[test]
    fn env_for_a_run_has_values_env_from_expanded_env_winning() {
        let cat = env_catalog();
        let mut spec = env_spec();
        resolve_env(&mut spec, &cat, EnvMode { for_key: false, env_from: true }).unwrap();
        let s = |v: &str| Some(v.to_string());
        assert_eq!(
            env_of(&spec),
            vec![
                ("P_A".into(), s("1")),
                ("token".into(), s("S3CRET")),
                ("P_B".into(), s("mine")),
                ("T".into(), s("S3CRET")),
                ("C".into(), s("1")),
            ]
        );
        assert!(spec.steps[0].env_from.is_empty());
    }

    /// The key's spec never holds a Secret's value, only the Secret's content digest.
    #[test]
    fn env_for_a_key_holds_secret_digests_not_values() {
        let cat = env_catalog();
        let mut spec = env_spec();
        resolve_env(&mut spec, &cat, EnvMode { for_key: true, env_from: true }).unwrap();
        let text = serde_json::to_string(&spec).unwrap();
        assert!(!text.contains("S3CRET") && !text.contains("UzNDUkVU"), "{text}");
        let digest = content_digest(&cat.secret("sec").unwrap().spec, true);
        assert_eq!(text.matches(&digest).count(), 2, "{text}");
        // ConfigMap values are not secret: kept as values
        assert!(env_of(&spec).contains(&("P_A".to_string(), Some("1".to_string()))));
        assert!(env_of(&spec).contains(&("C".to_string(), Some("1".to_string()))));
    }

    /// On a cluster `envFrom` is the namespace's: left to the executor.
    #[test]
    fn env_from_left_to_a_cluster_executor() {
        let mut spec = env_spec();
        resolve_env(&mut spec, &env_catalog(), EnvMode { for_key: true, env_from: false }).unwrap();
        assert_eq!(spec.steps[0].env_from.len(), 2);
        assert_eq!(spec.steps[0].env.len(), 3);
    }

    #[test]
    fn base64() {
        assert_eq!(base64_decode("aGVsbG8=").unwrap(), b"hello");
        assert_eq!(base64_decode("c2VjcmV0").unwrap(), b"secret");
        assert!(base64_decode("!!").is_none());
        // the forms the old decoder accepted: unpadded, URL-safe, folded over lines
        assert_eq!(base64_decode("aGVsbG8").unwrap(), b"hello");
        assert_eq!(base64_decode("-_8=").unwrap(), [0xfb, 0xff]);
        assert_eq!(base64_decode("+/8=").unwrap(), [0xfb, 0xff]);
        assert_eq!(base64_decode("aGVs\nbG8=\r\n").unwrap(), b"hello");
        assert_eq!(base64_decode("").unwrap(), b"");
    }

    /// Hostile or broken Secret data is an error (None), never a panic or a silent
    /// truncation (the hand-written decoder turned "QQ=A" and "A" into bytes).
    #[test]
    fn base64_rejects_invalid_input() {
        let long = "A".repeat(1 << 20) + "*";
        for bad in ["A", "QQ=A", "QR==", "a===", "=", "aGVsbG8=x", "héllo", "\u{0}", "%%%%", long.as_str()] {
            assert!(base64_decode(bad).is_none(), "{bad:.20?} decoded");
        }
        // a big valid value decodes in full
        assert_eq!(base64_decode(&"QUFB".repeat(1 << 18)).unwrap().len(), 3 << 18);
    }
}
