//! What both executors share: the Tekton pod conventions a TaskRun attempt follows
//! wherever it runs (container names, the pod's paths and path variables, the entrypoints
//! of known images, image-name normalization) and how an attempt's results and outcome are
//! collected. Neither executor imports the other; both import this.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{AttemptStatus, BoundWorkspace, StepOutcome, TaskOutcome};
use crate::model::subst::Vars;
use crate::model::{ParamType, ParamValue, Step, TaskSpec};

/// Container name of step `i`: `step-<name>` or `step-unnamed-<i>`.
pub fn step_container_name(step: &Step, i: usize) -> String {
    match &step.name {
        Some(n) if !n.is_empty() => format!("step-{n}"),
        _ => format!("step-unnamed-{i}"),
    }
}

/// Where a step sees each of a TaskRun's directories: host paths, or a pod's paths
/// bound from the host dirs in the sandbox.
pub(super) struct Layout {
    pub(super) sandbox: bool,
    pub(super) results: PathBuf,
    pub(super) steps: PathBuf,
    pub(super) home: PathBuf,
    pub(super) scripts: PathBuf,
    pub(super) work: PathBuf,
}

impl Layout {
    /// A pod's paths.
    pub(super) fn pod() -> Layout {
        Layout {
            sandbox: true,
            results: "/tekton/results".into(),
            steps: "/tekton/steps".into(),
            home: "/tekton/home".into(),
            scripts: "/tekton/scripts".into(),
            work: "/workspace".into(),
        }
    }

    /// Where workspace `w` appears to steps.
    pub(super) fn workspace(&self, spec: &TaskSpec, w: &BoundWorkspace) -> Option<String> {
        let host = w.path.as_ref()?;
        if !self.sandbox {
            return Some(host.display().to_string());
        }
        let mp = spec.workspaces.iter().find(|d| d.name == w.name).and_then(|d| d.mount_path.clone());
        Some(mp.filter(|m| !m.is_empty()).unwrap_or_else(|| format!("/workspace/{}", w.name)))
    }
}

/// Executor-level substitution: result, step and workspace paths.
pub(super) fn path_vars(spec: &TaskSpec, l: &Layout, ws: &[BoundWorkspace]) -> Vars {
    let mut v = Vars::new();
    for r in &spec.results {
        v.set_str(format!("results.{}.path", r.name), l.results.join(&r.name).display().to_string());
    }
    for (i, s) in spec.steps.iter().enumerate() {
        let cname = step_container_name(s, i);
        let sdir = l.steps.join(&cname);
        v.set_str(format!("steps.{cname}.exitCode.path"), sdir.join("exitCode").display().to_string());
        v.set_str(format!("steps.{i}.exitCode.path"), sdir.join("exitCode").display().to_string());
    }
    for w in ws {
        let path = l.workspace(spec, w).unwrap_or_default();
        v.set_str(format!("workspaces.{}.path", w.name), path);
        v.set_str(format!("workspaces.{}.bound", w.name), if w.path.is_some() { "true" } else { "false" });
        v.set_str(format!("workspaces.{}.claim", w.name), w.claim.clone());
        v.set_str(
            format!("workspaces.{}.volume", w.name),
            if w.path.is_some() { format!("ws-{}", w.name) } else { String::new() },
        );
    }
    v.set_str("credentials.path", l.home.join(".creds").display().to_string());
    v
}

/// Path variables as a pod sees them (`/tekton/results/x`, `/workspace/<name>`, ...),
/// shared with the Kubernetes executor.
pub(crate) fn pod_path_vars(spec: &TaskSpec, ws: &[BoundWorkspace]) -> Vars {
    path_vars(spec, &Layout::pod(), ws)
}

pub(crate) fn substitute_step(step: &Step, vars: &Vars) -> Step {
    let mut v = serde_json::to_value(step).unwrap_or_default();
    vars.apply_json(&mut v, &["params", "results"]);
    serde_json::from_value(v).unwrap_or_else(|_| step.clone())
}

/// The attempt's outcome from its results (task results sourced from step results added)
/// and its first failure.
pub(crate) fn finish(
    spec: &TaskSpec,
    mut results: BTreeMap<String, String>,
    step_results: &BTreeMap<String, BTreeMap<String, String>>,
    mut failure: Option<(AttemptStatus, String, String)>,
    steps_out: Vec<StepOutcome>,
) -> TaskOutcome {
    for r in &spec.results {
        if let Some(ParamValue::Str(v)) = &r.value {
            if let Some(rest) = v.strip_prefix("$(steps.").and_then(|x| x.strip_suffix(')')) {
                if let Some((s, k)) = rest.split_once(".results.") {
                    if let Some(val) = step_results.get(s).and_then(|m| m.get(k)) {
                        results.insert(r.name.clone(), val.clone());
                    }
                }
            }
        }
    }
    let typed = match type_results(spec, &results) {
        Ok(t) => t,
        Err(msg) if failure.is_none() => {
            failure = Some((AttemptStatus::Failed, "TaskRunValidationFailed".into(), msg));
            BTreeMap::new()
        }
        Err(_) => BTreeMap::new(),
    };
    match failure {
        None => TaskOutcome {
            status: AttemptStatus::Succeeded,
            reason: "Succeeded".into(),
            message: "All Steps have completed executing".into(),
            results: typed,
            steps: steps_out,
            duration: Duration::ZERO,
        },
        Some((status, reason, message)) => {
            TaskOutcome { status, reason, message, results: typed, steps: steps_out, duration: Duration::ZERO }
        }
    }
}

pub(crate) fn failed(reason: &str, message: String, steps: Vec<StepOutcome>) -> TaskOutcome {
    TaskOutcome {
        status: AttemptStatus::Failed,
        reason: reason.into(),
        message,
        results: BTreeMap::new(),
        steps,
        duration: Duration::ZERO,
    }
}

pub(crate) fn collect_results(
    spec: &TaskSpec,
    dir: &Path,
    max: usize,
    into: &mut BTreeMap<String, String>,
) -> Result<(), String> {
    for r in &spec.results {
        let p = dir.join(&r.name);
        let Ok(meta) = std::fs::metadata(&p) else {
            continue;
        };
        if meta.len() as usize > max {
            return Err(format!(
                "result {:?} is {} bytes, above the maximum of {max} bytes (Tekton's 4096-byte termination-message budget by default; raise it with --max-result-size, or pass large data through a workspace)",
                r.name,
                meta.len()
            ));
        }
        let bytes = std::fs::read(&p).map_err(|e| format!("cannot read result {:?}: {e}", r.name))?;
        let s = String::from_utf8(bytes).map_err(|_| format!("result {:?} is not valid UTF-8", r.name))?;
        into.insert(r.name.clone(), s);
    }
    Ok(())
}

/// Parse a JSON array/object result value.
pub(super) fn parse_typed(v: &str) -> Option<ParamValue> {
    let t = v.trim_start();
    if t.starts_with('[') || t.starts_with('{') {
        serde_json::from_str::<ParamValue>(v).ok()
    } else {
        None
    }
}

pub(crate) fn type_results(
    spec: &TaskSpec,
    raw: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, ParamValue>, String> {
    let mut out = BTreeMap::new();
    for r in &spec.results {
        let Some(v) = raw.get(&r.name) else { continue };
        let val = match r.result_type() {
            ParamType::String => ParamValue::Str(v.clone()),
            ParamType::Array => match parse_typed(v) {
                Some(a @ ParamValue::Array(_)) => a,
                _ => return Err(format!("Provided results don't match declared results; may be invalid JSON or missing result declaration: result {:?} is declared array but holds {v:?}", r.name)),
            },
            ParamType::Object => match parse_typed(v) {
                Some(ParamValue::Object(o)) => {
                    if let Some(props) = &r.properties {
                        let missing: Vec<&String> = props.keys().filter(|k| !o.contains_key(*k)).collect();
                        if !missing.is_empty() {
                            return Err(format!("missing keys for these results which are required in TaskResult's properties {:?}: {missing:?}", r.name));
                        }
                    }
                    ParamValue::Object(o)
                }
                _ => return Err(format!("Provided results don't match declared results; may be invalid JSON or missing result declaration: result {:?} is declared object but holds {v:?}", r.name)),
            },
        };
        out.insert(r.name.clone(), val);
    }
    Ok(out)
}

/// Images whose ENTRYPOINT/CMD the local executor knows, for steps with neither
/// `command` nor `script`.
pub const KNOWN_IMAGES: &[&str] = &["alpine", "bash", "busybox", "debian", "ubuntu", "python", "nop"];

/// What a container of `image` would run given `args`, for the images in
/// [`KNOWN_IMAGES`]: their ENTRYPOINT/CMD from Docker Hub.
///
/// | image | ENTRYPOINT | CMD |
/// |---|---|---|
/// | alpine, busybox | none | `sh` |
/// | debian, ubuntu | none | `bash` |
/// | python | none | `python3` |
/// | Tekton's `nop` | exits 0 | |
///
/// Without an ENTRYPOINT, Tekton runs CMD with the step's args appended.
/// | bash | `docker-entrypoint.sh` (prefixes `bash` when the first arg starts with `-`) | `bash` |
pub fn image_default_command(image: &str, args: &[String]) -> Option<Vec<String>> {
    // registry/path/name:tag@digest -> name
    let no_digest = image.split('@').next().unwrap_or(image);
    let last = no_digest.rsplit('/').next().unwrap_or(no_digest);
    let name = last.split(':').next().unwrap_or(last);
    let cmd: &str = match name {
        "alpine" | "busybox" => "sh",
        "debian" | "ubuntu" => "bash",
        "python" => "python3",
        // Tekton's own no-op image
        n if n == "nop" || n.starts_with("nop-") => return Some(vec!["true".into()]),
        "bash" => {
            return Some(match args.first() {
                None => vec!["bash".into()],
                Some(a) if a.starts_with('-') => {
                    std::iter::once("bash".to_string()).chain(args.iter().cloned()).collect()
                }
                Some(_) => args.to_vec(),
            })
        }
        _ => return None,
    };
    // no ENTRYPOINT: Tekton runs the image's CMD with the step's args appended
    Some(std::iter::once(cmd.to_string()).chain(args.iter().cloned()).collect())
}

/// `python:3.11` -> `docker.io/library/python:3.11`, `x/y` -> `docker.io/x/y:latest`.
pub fn normalize_image(r: &str) -> String {
    let (name, tag) = match r.split_once('@') {
        Some(_) => return r.to_string(),
        None => {
            let slash = r.rfind('/').map(|i| i + 1).unwrap_or(0);
            match r[slash..].rfind(':') {
                Some(i) => (&r[..slash + i], &r[slash + i..]),
                None => (r, ":latest"),
            }
        }
    };
    let first = name.split('/').next().unwrap_or("");
    let qualified = if !name.contains('/') {
        format!("docker.io/library/{name}")
    } else if first.contains('.') || first.contains(':') || first == "localhost" {
        name.to_string()
    } else {
        format!("docker.io/{name}")
    };
    format!("{qualified}{tag}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn image_entrypoints() {
        let a = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            image_default_command("mirror.gcr.io/bash@sha256:abc", &a(&["echo", "hi"])),
            Some(a(&["echo", "hi"]))
        );
        assert_eq!(image_default_command("bash:5", &a(&["-c", "echo hi"])), Some(a(&["bash", "-c", "echo hi"])));
        assert_eq!(image_default_command("docker.io/library/busybox", &a(&[])), Some(a(&["sh"])));
        assert_eq!(image_default_command("ubuntu:22.04", &a(&["-c", "ls"])), Some(a(&["bash", "-c", "ls"])));
        assert_eq!(image_default_command("busybox", &a(&["-c", "echo"])), Some(a(&["sh", "-c", "echo"])));
        assert_eq!(image_default_command("gcr.io/kaniko-project/executor:v1", &a(&["--x"])), None);
    }

    #[test]
    fn typed_results() {
        let spec: TaskSpec = serde_json::from_value(serde_json::json!({
            "results": [{"name": "a", "type": "array"}, {"name": "o", "type": "object", "properties": {"k": {}}}, {"name": "s"}]
        }))
        .unwrap();
        let raw = BTreeMap::from([
            ("a".to_string(), "[\"1\",\"2\"]".to_string()),
            ("o".to_string(), "{\"k\":\"v\"}".to_string()),
            ("s".to_string(), "x\n".to_string()),
        ]);
        let t = type_results(&spec, &raw).unwrap();
        assert_eq!(t["a"], ParamValue::Array(vec!["1".into(), "2".into()]));
        assert_eq!(t["s"], ParamValue::Str("x\n".into()));
        let bad = BTreeMap::from([("a".to_string(), "1,2".to_string())]);
        assert!(type_results(&spec, &bad).unwrap_err().contains("declared array"));
        let missing = BTreeMap::from([("o".to_string(), "{}".to_string())]);
        assert!(type_results(&spec, &missing).unwrap_err().contains("missing keys"));
    }
}
