//! Cache keys and their explanations. Pure apart from reading trees from the store.
//!
//! A key is the SHA-256 of a canonical, versioned [`Preimage`]: the task spec after
//! param substitution (run-unique values such as `$(context.pipelineRun.name)`,
//! `$(context.pipelineRun.uid)`, `$(context.taskRun.name/uid)` and
//! `$(context.task.retry-count)` are left unsubstituted, so they do not make every run
//! unique), the param values, the digest of every input tree, the upstream results the
//! task consumes (so an upstream rerun with identical results does not cascade: early
//! cutoff), the digests of upstream outputs on shared workspaces, the workspace kinds and
//! ConfigMap/Secret content digests, the declared outputs and the executor. Images and
//! env are part of the spec (a Secret's value only as the Secret's content digest). The
//! full preimage is kept with every record, so a miss is explained field by field.
//!
//! The encoding is canonical: JSON with the keys of every object sorted (serde_json keeps
//! insertion order in this build, and Kubernetes treats maps such as
//! `computeResources.limits` as unordered), lists in their order.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::hash::{sha256_hex, Kind, Tree};

/// Bump on any change to what goes into a key: old records then miss once, loudly.
/// v2: canonical encoding (sorted object keys), Secret values keyed by digest, unused
/// propagated params left out.
pub const KEY_SCHEMA_VERSION: u32 = 2;

/// Sort the keys of every object in `v`, recursively; lists keep their order.
pub fn canonicalize(v: &mut Value) {
    match v {
        Value::Object(m) => {
            let mut entries: Vec<(String, Value)> = std::mem::take(m).into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            for (k, mut x) in entries {
                canonicalize(&mut x);
                m.insert(k, x);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(canonicalize),
        _ => {}
    }
}

/// The canonical JSON text of any serializable value (what keys are computed over).
pub fn canonical_json<T: Serialize>(x: &T) -> String {
    let mut v = serde_json::to_value(x).unwrap_or_default();
    canonicalize(&mut v);
    serde_json::to_string(&v).unwrap_or_default()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Preimage {
    pub version: u32,
    pub executor: String,
    /// Image -> digest the cluster resolved its tag to (Kubernetes executor); empty, and
    /// then absent from the encoding, elsewhere.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub images: BTreeMap<String, String>,
    /// The TaskSpec after substitution, as JSON.
    pub spec: Value,
    pub params: BTreeMap<String, Value>,
    /// Repository input trees: workspace -> root digest.
    pub inputs: BTreeMap<String, String>,
    /// `tasks.X.results.Y` consumed -> value.
    pub upstream_results: BTreeMap<String, Value>,
    /// `task workspace:path` of upstream outputs on shared workspaces -> tree digest.
    pub upstream_outputs: BTreeMap<String, String>,
    /// Workspace -> what backs it (`emptyDir`, `volumeClaimTemplate`, `configMap:<digest>`, ...).
    pub workspaces: BTreeMap<String, String>,
    /// Declared outputs (`workspace:path`).
    pub outputs: Vec<String>,
    /// Results replaced by the reference of a published ModelKit -> the repository
    /// (`tenon.dev/publish` with `--cache-repo`); absent otherwise.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub publish: BTreeMap<String, String>,
}

impl Preimage {
    pub fn key(&self) -> String {
        // every object's keys sorted, whatever order the manifest (or a struct) had them in
        sha256_hex(canonical_json(self).as_bytes())
    }
}

fn short(d: &str) -> &str {
    &d[..d.len().min(8)]
}

fn render(v: &Value) -> String {
    let s = match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let s = s.replace('\n', "\\n");
    if s.chars().count() > 60 {
        format!("{}…", s.chars().take(60).collect::<String>())
    } else {
        s
    }
}

/// The first JSON path at which two values differ.
pub fn first_difference(a: &Value, b: &Value, path: &str) -> Option<String> {
    match (a, b) {
        (Value::Object(x), Value::Object(y)) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
                match (x.get(k), y.get(k)) {
                    (Some(va), Some(vb)) => {
                        if let Some(d) = first_difference(va, vb, &p) {
                            return Some(d);
                        }
                    }
                    _ => return Some(p),
                }
            }
            None
        }
        (Value::Array(x), Value::Array(y)) => {
            for (i, (va, vb)) in x.iter().zip(y.iter()).enumerate() {
                if let Some(d) = first_difference(va, vb, &format!("{path}[{i}]")) {
                    return Some(d);
                }
            }
            (x.len() != y.len()).then(|| format!("{path}[{}]", x.len().min(y.len())))
        }
        _ => (a != b).then(|| path.to_string()),
    }
}

/// Why a TaskRun reruns instead of reusing a record (like cargo's `DirtyReason`): a
/// value, rendered to text only at the edge (reports, the console). Values in it are
/// already shortened for people (digests to 8 characters, long values to 60).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RerunReason {
    /// `--no-cache` (`None`) or `--rerun TASK`.
    Forced {
        rerun: Option<String>,
    },
    /// The key is recorded but its outputs cannot be restored (the store says why).
    Unusable(String),
    NoEarlierRecord,
    /// The latest record of the task could not be read.
    EarlierUnreadable(String),
    /// The latest record was keyed by another schema and cannot be compared.
    OtherSchemaRecord,
    SchemaChanged {
        old: u32,
        new: u32,
    },
    ExecutorChanged {
        old: String,
        new: String,
    },
    ImageMoved {
        image: String,
        old: String,
        new: String,
    },
    UpstreamResultChanged {
        key: String,
        old: String,
        new: String,
    },
    UpstreamResultAdded {
        key: String,
    },
    UpstreamResultDropped {
        key: String,
    },
    WorkspaceNowInput {
        ws: String,
    },
    WorkspaceNoLongerInput {
        ws: String,
    },
    /// A tree changed but its entries are not known (only its digests).
    TreeChanged {
        ws: String,
        old: String,
        new: String,
    },
    InputAdded {
        path: String,
    },
    InputRemoved {
        path: String,
    },
    InputKindChanged {
        path: String,
        old: &'static str,
        new: &'static str,
    },
    InputRetargeted {
        path: String,
    },
    InputChanged {
        path: String,
        old: String,
        new: String,
    },
    InputMode {
        path: String,
        executable: bool,
    },
    MoreInputChanges(usize),
    /// A tree changed with no entry that differs (e.g. only what the filters saw).
    WorkspaceInputsChanged {
        ws: String,
    },
    UpstreamOutputChanged {
        key: String,
        old: String,
        new: String,
    },
    UpstreamOutputAdded {
        key: String,
    },
    UpstreamOutputGone {
        key: String,
    },
    /// `from`: the run param a pipeline task param passes on, when the user changed that.
    ParamChanged {
        name: String,
        old: String,
        new: String,
        from: Option<String>,
    },
    ParamAdded {
        name: String,
        value: String,
    },
    ParamRemoved {
        name: String,
    },
    WorkspaceBacking {
        ws: String,
        backing: String,
    },
    WorkspaceUnbound {
        ws: String,
    },
    PublishChanged {
        old: String,
        new: String,
    },
    OutputsChanged {
        old: String,
        new: String,
    },
    /// The spec differs (at this JSON path, when one is found).
    SpecChanged {
        at: Option<String>,
    },
    /// Some other field of the preimage differs (`None`: none does; another encoding).
    KeyChanged {
        at: Option<String>,
    },
    PreimageUnencodable,
}

impl std::fmt::Display for RerunReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use RerunReason::*;
        match self {
            Forced { rerun: None } => write!(f, "forced: --no-cache"),
            Forced { rerun: Some(t) } => write!(f, "forced: --rerun {t}"),
            EarlierUnreadable(e) => write!(f, "no earlier record could be read ({e})"),
            Unusable(why) => write!(f, "{why}"),
            NoEarlierRecord => write!(f, "no earlier record"),
            OtherSchemaRecord => write!(f, "the earlier record was written by another cache key schema"),
            SchemaChanged { old, new } => write!(f, "cache key schema changed (v{old} -> v{new})"),
            ExecutorChanged { old, new } => write!(f, "executor changed ({old} -> {new})"),
            ImageMoved { image, old, new } => write!(f, "image {image} now resolves to {new} (was {old})"),
            UpstreamResultChanged { key, old, new } => write!(f, "upstream result {key} changed ({old} -> {new})"),
            UpstreamResultAdded { key } => write!(f, "now consumes upstream result {key}"),
            UpstreamResultDropped { key } => write!(f, "no longer consumes upstream result {key}"),
            WorkspaceNowInput { ws } => write!(f, "now reads workspace {ws} from the repository"),
            WorkspaceNoLongerInput { ws } => write!(f, "no longer reads workspace {ws} from the repository"),
            TreeChanged { ws, old, new } => write!(f, "inputs in workspace {ws} changed (tree {old}..->{new}..)"),
            InputAdded { path } => write!(f, "input {path} added"),
            InputRemoved { path } => write!(f, "input {path} removed"),
            InputKindChanged { path, old, new } => write!(f, "input {path} changed from {old} to {new}"),
            InputRetargeted { path } => write!(f, "input {path} (symlink) retargeted"),
            InputChanged { path, old, new } => write!(f, "input {path} changed (sha256 {old}..->{new}..)"),
            InputMode { path, executable: true } => write!(f, "input {path} became executable"),
            InputMode { path, executable: false } => write!(f, "input {path} is no longer executable"),
            MoreInputChanges(n) => write!(f, "... and {n} more input changes"),
            WorkspaceInputsChanged { ws } => write!(f, "inputs in workspace {ws} changed"),
            UpstreamOutputChanged { key, old, new } => {
                write!(f, "upstream output {key} changed (sha256 {old}..->{new}..)")
            }
            UpstreamOutputAdded { key } => write!(f, "new upstream output {key}"),
            UpstreamOutputGone { key } => write!(f, "upstream output {key} no longer present"),
            ParamChanged { name, old, new, from } => {
                write!(f, "param {name} changed {old} -> {new}")?;
                match from {
                    Some(src) if src != name => write!(f, " (from run param {src})"),
                    _ => Ok(()),
                }
            }
            ParamAdded { name, value } => write!(f, "param {name} added ({value})"),
            ParamRemoved { name } => write!(f, "param {name} removed"),
            WorkspaceBacking { ws, backing } => write!(f, "workspace {ws} is now backed by {backing}"),
            WorkspaceUnbound { ws } => write!(f, "workspace {ws} is no longer bound"),
            PublishChanged { old, new } => write!(f, "published outputs changed ({old} -> {new})"),
            OutputsChanged { old, new } => write!(f, "declared outputs changed ({old} -> {new})"),
            SpecChanged { at: Some(p) } => write!(f, "task spec changed at {p}"),
            SpecChanged { at: None } => write!(f, "task spec changed"),
            KeyChanged { at: Some(p) } => write!(f, "cache key changed at {p}"),
            KeyChanged { at: None } => write!(
                f,
                "cache key changed, but no field of the preimage did (the earlier record was keyed by another encoding)"
            ),
            PreimageUnencodable => write!(f, "cache key changed (a preimage could not be encoded)"),
        }
    }
}

/// Why `new` misses, given the most recent earlier preimage of the same task and a
/// way to fetch input trees by digest. Reasons a person can act on, most specific first.
pub fn explain(old: &Preimage, new: &Preimage, tree: &dyn Fn(&str) -> Option<Tree>) -> Vec<RerunReason> {
    use RerunReason::*;
    let mut out = Vec::new();
    if old.version != new.version {
        out.push(SchemaChanged { old: old.version, new: new.version });
        return out;
    }
    if old.executor != new.executor {
        out.push(ExecutorChanged { old: old.executor.clone(), new: new.executor.clone() });
    }
    for (img, d) in &new.images {
        match old.images.get(img) {
            Some(o) if o != d => out.push(ImageMoved {
                image: img.clone(),
                old: short(o.trim_start_matches("sha256:")).into(),
                new: short(d.trim_start_matches("sha256:")).into(),
            }),
            _ => {}
        }
    }
    explain_upstream(old, new, tree, &mut out);
    explain_params(old, new, &mut out);
    for (k, v) in &new.workspaces {
        if old.workspaces.get(k) != Some(v) {
            out.push(WorkspaceBacking { ws: k.clone(), backing: v.clone() });
        }
    }
    for k in old.workspaces.keys().filter(|k| !new.workspaces.contains_key(*k)) {
        out.push(WorkspaceUnbound { ws: k.clone() });
    }
    if old.publish != new.publish {
        out.push(PublishChanged { old: format!("{:?}", old.publish), new: format!("{:?}", new.publish) });
    }
    if old.outputs != new.outputs {
        out.push(OutputsChanged { old: format!("{:?}", old.outputs), new: format!("{:?}", new.outputs) });
    }
    // a spec difference that only reflects a changed upstream result or param is already said
    if old.spec != new.spec && out.is_empty() {
        out.push(SpecChanged { at: first_difference(&old.spec, &new.spec, "") });
    }
    if out.is_empty() {
        // whatever else differs: name the field of the preimage
        out.push(match (serde_json::to_value(old), serde_json::to_value(new)) {
            (Ok(a), Ok(b)) => KeyChanged { at: first_difference(&a, &b, "") },
            _ => PreimageUnencodable,
        });
    }
    out
}

/// Upstream results, input trees and upstream outputs that differ.
fn explain_upstream(old: &Preimage, new: &Preimage, tree: &dyn Fn(&str) -> Option<Tree>, out: &mut Vec<RerunReason>) {
    use RerunReason::*;
    for (k, v) in &new.upstream_results {
        match old.upstream_results.get(k) {
            Some(o) if o == v => {}
            Some(o) => out.push(UpstreamResultChanged { key: k.clone(), old: render(o), new: render(v) }),
            None => out.push(UpstreamResultAdded { key: k.clone() }),
        }
    }
    for k in old.upstream_results.keys().filter(|k| !new.upstream_results.contains_key(*k)) {
        out.push(UpstreamResultDropped { key: k.clone() });
    }
    for (ws, root) in &new.inputs {
        match old.inputs.get(ws) {
            Some(o) if o == root => {}
            Some(o) => out.extend(diff_trees(ws, o, root, tree)),
            None => out.push(WorkspaceNowInput { ws: ws.clone() }),
        }
    }
    for ws in old.inputs.keys().filter(|k| !new.inputs.contains_key(*k)) {
        out.push(WorkspaceNoLongerInput { ws: ws.clone() });
    }
    for (k, d) in &new.upstream_outputs {
        match old.upstream_outputs.get(k) {
            Some(o) if o == d => {}
            Some(o) => out.push(UpstreamOutputChanged { key: k.clone(), old: short(o).into(), new: short(d).into() }),
            None => out.push(UpstreamOutputAdded { key: k.clone() }),
        }
    }
    for k in old.upstream_outputs.keys().filter(|k| !new.upstream_outputs.contains_key(*k)) {
        out.push(UpstreamOutputGone { key: k.clone() });
    }
}

/// Params that differ; a param that only carries a changed upstream result is already
/// explained by it.
fn explain_params(old: &Preimage, new: &Preimage, out: &mut Vec<RerunReason>) {
    use RerunReason::*;
    let changed_upstream: Vec<(String, String)> = new
        .upstream_results
        .iter()
        .filter_map(|(k, v)| old.upstream_results.get(k).filter(|o| *o != v).map(|o| (render(o), render(v))))
        .collect();
    let carried = |o: &Value, v: &Value| {
        let (ro, rv) = (render(o), render(v));
        changed_upstream.iter().any(|(uo, un)| !uo.is_empty() && ro.contains(uo.as_str()) && rv.contains(un.as_str()))
    };
    for (k, v) in &new.params {
        match old.params.get(k) {
            Some(o) if o == v => {}
            Some(o) if carried(o, v) => {}
            Some(o) => out.push(ParamChanged { name: k.clone(), old: render(o), new: render(v), from: None }),
            None => out.push(ParamAdded { name: k.clone(), value: render(v) }),
        }
    }
    for k in old.params.keys().filter(|k| !new.params.contains_key(*k)) {
        out.push(ParamRemoved { name: k.clone() });
    }
}

fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::File => "file",
        Kind::Dir => "dir",
        Kind::Symlink => "symlink",
    }
}

fn diff_trees(ws: &str, old: &str, new: &str, tree: &dyn Fn(&str) -> Option<Tree>) -> Vec<RerunReason> {
    use RerunReason::*;
    let (Some(a), Some(b)) = (tree(old), tree(new)) else {
        return vec![TreeChanged { ws: ws.into(), old: short(old).into(), new: short(new).into() }];
    };
    let am: BTreeMap<&str, &crate::hash::Entry> = a.entries.iter().map(|e| (e.path.as_str(), e)).collect();
    let bm: BTreeMap<&str, &crate::hash::Entry> = b.entries.iter().map(|e| (e.path.as_str(), e)).collect();
    let mut out = Vec::new();
    for (p, eb) in &bm {
        let path = p.to_string();
        match am.get(p) {
            None => out.push(InputAdded { path }),
            Some(ea) if ea.kind != eb.kind => {
                out.push(InputKindChanged { path, old: kind_name(ea.kind), new: kind_name(eb.kind) })
            }
            Some(ea) if ea.digest != eb.digest => {
                if eb.kind == Kind::Symlink {
                    out.push(InputRetargeted { path });
                } else {
                    out.push(InputChanged { path, old: short(&ea.digest).into(), new: short(&eb.digest).into() });
                }
            }
            Some(ea) if ea.exec != eb.exec => out.push(InputMode { path, executable: eb.exec }),
            _ => {}
        }
    }
    for p in am.keys().filter(|p| !bm.contains_key(*p)) {
        out.push(InputRemoved { path: p.to_string() });
    }
    const MAX: usize = 8;
    if out.len() > MAX {
        let more = out.len() - MAX;
        out.truncate(MAX);
        out.push(MoreInputChanges(more));
    }
    if out.is_empty() {
        out.push(WorkspaceInputsChanged { ws: ws.into() });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(r: Vec<RerunReason>) -> Vec<String> {
        r.iter().map(|r| r.to_string()).collect()
    }
    use crate::hash::Entry;
    use serde_json::json;

    fn pre() -> Preimage {
        Preimage {
            version: KEY_SCHEMA_VERSION,
            executor: "local".into(),
            images: BTreeMap::new(),
            spec: json!({"steps": [{"script": "python train.py --lr 0.1"}]}),
            params: BTreeMap::from([("lr".into(), json!("0.1"))]),
            inputs: BTreeMap::from([("source".into(), "t1".into())]),
            upstream_results: BTreeMap::from([("tasks.prepare.results.digest".into(), json!("abc"))]),
            upstream_outputs: BTreeMap::new(),
            workspaces: BTreeMap::from([("source".into(), "repo".into())]),
            outputs: vec![],
            publish: BTreeMap::new(),
        }
    }

    fn trees(root: &str) -> Option<Tree> {
        let f =
            |p: &str, d: &str| Entry { path: p.into(), kind: Kind::File, exec: false, digest: d.into(), size: None };
        match root {
            "t1" => {
                Some(Tree { root: "t1".into(), entries: vec![f("src/train.py", "1f2e3d4c5b"), f("data.csv", "aa")] })
            }
            "t2" => {
                Some(Tree { root: "t2".into(), entries: vec![f("src/train.py", "9a0b1c2d3e"), f("new.txt", "bb")] })
            }
            _ => None,
        }
    }

    #[test]
    fn keys_are_stable_and_sensitive() {
        let a = pre();
        assert_eq!(a.key(), pre().key());
        assert_eq!(a.key().len(), 64);
        let mut b = pre();
        b.params.insert("lr".into(), json!("0.2"));
        assert_ne!(a.key(), b.key());
    }

    #[test]
    fn explanation_table() {
        type Edit = fn(&mut Preimage);
        let rows: Vec<(Edit, &[&str])> = vec![
            (
                |p| {
                    p.params.insert("lr".into(), json!("0.2"));
                },
                &["param lr changed 0.1 -> 0.2"],
            ),
            (
                |p| {
                    p.inputs.insert("source".into(), "t2".into());
                },
                &[
                    "input new.txt added",
                    "input src/train.py changed (sha256 1f2e3d4c..->9a0b1c2d..)",
                    "input data.csv removed",
                ],
            ),
            (
                |p| {
                    p.upstream_results.insert("tasks.prepare.results.digest".into(), json!("def"));
                },
                &["upstream result tasks.prepare.results.digest changed (abc -> def)"],
            ),
            (
                |p| {
                    p.spec = json!({"steps": [{"script": "python train.py --lr 0.3"}]});
                },
                &["task spec changed at steps[0].script"],
            ),
            (
                |p| {
                    p.version = 99;
                },
                &["cache key schema changed (v2 -> v99)"],
            ),
            (
                |p| {
                    p.executor = "kubernetes".into();
                },
                &["executor changed (local -> kubernetes)"],
            ),
        ];
        for (edit, want) in rows {
            let mut new = pre();
            edit(&mut new);
            assert_eq!(texts(explain(&pre(), &new, &trees)), want.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        }
    }

    #[test]
    fn image_digests_in_keys() {
        // no digests: the encoding (and so every existing local key) is unchanged
        assert!(!serde_json::to_string(&pre()).unwrap().contains("images"));
        let mut old = pre();
        old.images.insert("python:3.11-slim".into(), "sha256:aaaaaaaaaa".into());
        let mut new = old.clone();
        new.images.insert("python:3.11-slim".into(), "sha256:bbbbbbbbbb".into());
        assert_ne!(old.key(), new.key());
        assert_eq!(
            texts(explain(&old, &new, &|_| None)),
            vec!["image python:3.11-slim now resolves to bbbbbbbb (was aaaaaaaa)".to_string()]
        );
    }

    /// Maps Kubernetes treats as unordered (`computeResources.limits`, object params) give
    /// one key whatever order the manifest lists their keys in; lists keep their order.
    #[test]
    fn keys_ignore_map_order_but_not_list_order() {
        let with = |spec: &str, param: &str| {
            let mut p = pre();
            p.spec = serde_json::from_str(spec).unwrap();
            p.params.insert("o".into(), serde_json::from_str(param).unwrap());
            p
        };
        let a = with(
            r#"{"steps": [{"computeResources": {"limits": {"cpu": "1", "memory": "1Gi"}}, "script": "x"}]}"#,
            r#"{"a": "1", "b": "2"}"#,
        );
        let b = with(
            r#"{"steps": [{"script": "x", "computeResources": {"limits": {"memory": "1Gi", "cpu": "1"}}}]}"#,
            r#"{"b": "2", "a": "1"}"#,
        );
        // serde_json keeps insertion order in this build: the texts differ, the keys must not
        assert_ne!(serde_json::to_string(&a).unwrap(), serde_json::to_string(&b).unwrap());
        assert_eq!(a.key(), b.key());
        let c = with(r#"{"steps": [{"args": ["1", "2"]}]}"#, "{}");
        let d = with(r#"{"steps": [{"args": ["2", "1"]}]}"#, "{}");
        assert_ne!(c.key(), d.key());
        assert_eq!(texts(explain(&c, &d, &|_| None)), vec!["task spec changed at steps[0].args[0]".to_string()]);
    }

    /// A miss never says just "cache key changed": the changed field is named, removals too.
    #[test]
    fn every_reason_names_a_field() {
        let mut old = pre();
        old.images.insert("alpine".into(), "sha256:aaaa".into());
        let new = pre();
        assert_eq!(texts(explain(&old, &new, &|_| None)), vec!["cache key changed at images".to_string()]);
        let mut new = pre();
        new.inputs.clear();
        new.workspaces.clear();
        new.upstream_results.clear();
        assert_eq!(
            texts(explain(&pre(), &new, &|_| None)),
            vec![
                "no longer consumes upstream result tasks.prepare.results.digest".to_string(),
                "no longer reads workspace source from the repository".to_string(),
                "workspace source is no longer bound".to_string(),
            ]
        );
    }

    #[test]
    fn first_difference_paths() {
        assert_eq!(first_difference(&json!({"a": [1, 2]}), &json!({"a": [1, 3]}), ""), Some("a[1]".into()));
        assert_eq!(first_difference(&json!({"a": 1}), &json!({"a": 1, "b": 2}), ""), Some("b".into()));
        assert_eq!(first_difference(&json!([1]), &json!([1]), ""), None);
    }
}
