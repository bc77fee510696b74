//! Loading: a directory tree of YAML files -> a [`Catalog`] of typed objects.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::diag::{Diagnostic, Diagnostics};
use super::types::*;
use super::yaml::{parse_documents, Document, Pos};

/// Annotation on a PipelineRun or TaskRun naming the workspace bindings (comma
/// separated) that are bound, read-only, to the repository tree tenon was pointed at.
pub const REPO_WORKSPACE_ANNOTATION: &str = "tenon.dev/repo-workspace";

/// The most bytes read from one manifest file.
const MAX_MANIFEST_BYTES: u64 = 16 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ObjKind {
    Task,
    Pipeline,
    PipelineRun,
    TaskRun,
    StepAction,
    PromotionPolicy,
    ConfigMap,
    Secret,
    PersistentVolumeClaim,
}

impl ObjKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            ObjKind::Task => "Task",
            ObjKind::Pipeline => "Pipeline",
            ObjKind::PipelineRun => "PipelineRun",
            ObjKind::TaskRun => "TaskRun",
            ObjKind::StepAction => "StepAction",
            ObjKind::PromotionPolicy => "PromotionPolicy",
            ObjKind::ConfigMap => "ConfigMap",
            ObjKind::Secret => "Secret",
            ObjKind::PersistentVolumeClaim => "PersistentVolumeClaim",
        }
    }
}

/// A loaded file and its parsed documents.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// Path shown to users (relative to the loaded directory when possible).
    pub path: String,
    /// Each document's positions; its `value` was moved into the typed object (null here).
    pub docs: Vec<Document>,
}

/// One typed object and where it came from.
#[derive(Debug, Clone)]
pub struct Obj<T> {
    pub kind: ObjKind,
    pub api_version: String,
    pub name: String,
    pub meta: ObjectMeta,
    pub spec: T,
    pub file: usize,
    pub doc: usize,
}

impl<T> Obj<T> {
    /// `Kind "name"` as used in messages.
    pub fn label(&self) -> String {
        format!("{} {:?}", self.kind.as_str(), self.name)
    }
}

/// Everything loaded from a directory.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub root: PathBuf,
    pub files: Vec<SourceFile>,
    pub tasks: Vec<Obj<TaskSpec>>,
    pub pipelines: Vec<Obj<PipelineSpec>>,
    pub pipeline_runs: Vec<Obj<PipelineRunSpec>>,
    pub task_runs: Vec<Obj<TaskRunSpec>>,
    pub step_actions: Vec<Obj<StepActionSpec>>,
    pub promotion_policies: Vec<Obj<PromotionPolicySpec>>,
    pub config_maps: Vec<Obj<KeyData>>,
    pub secrets: Vec<Obj<KeyData>>,
    pub pvcs: Vec<Obj<Value>>,
    /// Problems found while reading and decoding (syntax, types).
    pub diagnostics: Diagnostics,
    /// Objects that exist but failed to decode: references to them are not "unknown".
    pub broken: std::collections::BTreeSet<(ObjKind, String)>,
}

impl Catalog {
    pub fn task(&self, name: &str) -> Option<&Obj<TaskSpec>> {
        self.tasks.iter().find(|t| t.name == name)
    }
    pub fn pipeline(&self, name: &str) -> Option<&Obj<PipelineSpec>> {
        self.pipelines.iter().find(|t| t.name == name)
    }
    pub fn step_action(&self, name: &str) -> Option<&Obj<StepActionSpec>> {
        self.step_actions.iter().find(|t| t.name == name)
    }
    pub fn config_map(&self, name: &str) -> Option<&Obj<KeyData>> {
        self.config_maps.iter().find(|t| t.name == name)
    }
    pub fn secret(&self, name: &str) -> Option<&Obj<KeyData>> {
        self.secrets.iter().find(|t| t.name == name)
    }

    /// A diagnostic for `field` of `obj`, positioned at that field (or its nearest parent).
    pub fn diag<T>(&self, obj: &Obj<T>, field: &str, message: impl Into<String>) -> Diagnostic {
        let file = &self.files[obj.file];
        let pos = file.docs.get(obj.doc).map(|d| d.pos_of(field)).unwrap_or_default();
        Diagnostic::new(&file.path, pos, Some(obj.label()), field, message)
    }

    /// Position of a field of an object.
    pub fn pos_of<T>(&self, obj: &Obj<T>, field: &str) -> (String, Pos) {
        let file = &self.files[obj.file];
        (file.path.clone(), file.docs.get(obj.doc).map(|d| d.pos_of(field)).unwrap_or_default())
    }

    /// Whether nothing runnable or referenceable was found.
    pub fn is_empty(&self) -> bool {
        self.tasks.is_empty() && self.pipelines.is_empty() && self.pipeline_runs.is_empty() && self.task_runs.is_empty()
    }
}

/// Read every `.yaml`/`.yml` file under `dir` (hidden directories skipped, symlinks not
/// followed) into a catalog. I/O errors become diagnostics too.
pub fn load_dir(dir: &Path) -> Catalog {
    let mut files = Vec::new();
    let mut diags = Diagnostics::default();
    collect_yaml_files(dir, &mut files, &mut diags);
    files.sort();
    let mut sources = Vec::new();
    for f in files {
        let shown = match f.strip_prefix(dir) {
            Ok(rel) if !rel.as_os_str().is_empty() => rel.display().to_string(),
            _ => f.display().to_string(),
        };
        match std::fs::metadata(&f) {
            Ok(m) if m.len() > MAX_MANIFEST_BYTES => {
                diags.push(Diagnostic::new(
                    &shown,
                    Pos { line: 1, col: 1 },
                    None,
                    "",
                    format!("file is larger than {MAX_MANIFEST_BYTES} bytes; not a manifest"),
                ));
                continue;
            }
            _ => {}
        }
        match std::fs::read(&f) {
            Ok(bytes) => match String::from_utf8(bytes) {
                Ok(text) => sources.push((shown, text)),
                Err(e) => {
                    let (pos, byte) = utf8_error_pos(e.as_bytes(), e.utf8_error().valid_up_to());
                    let msg = format!("file is not valid UTF-8 (byte 0x{byte:02x})");
                    diags.push(Diagnostic::new(&shown, pos, None, "", msg))
                }
            },
            Err(e) => {
                diags.push(Diagnostic::new(&shown, Pos { line: 1, col: 1 }, None, "", format!("cannot read file: {e}")))
            }
        }
    }
    let mut cat = load_sources(sources);
    cat.root = dir.to_path_buf();
    diags.0.extend(cat.diagnostics.0);
    cat.diagnostics = diags;
    cat
}

/// Line and column (in characters) of the invalid byte at `at`, and the byte.
fn utf8_error_pos(bytes: &[u8], at: usize) -> (Pos, u8) {
    let before = &bytes[..at];
    let line_start = before.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    // the bytes before `at` are valid UTF-8
    let col = std::str::from_utf8(&before[line_start..]).map_or(at - line_start, |s| s.chars().count()) + 1;
    (Pos { line, col }, bytes[at])
}

fn collect_yaml_files(dir: &Path, out: &mut Vec<PathBuf>, diags: &mut Diagnostics) {
    let meta = match std::fs::symlink_metadata(dir) {
        Ok(m) => m,
        Err(e) => {
            diags.push(Diagnostic::new(
                &dir.display().to_string(),
                Pos::default(),
                None,
                "",
                format!("cannot read: {e}"),
            ));
            return;
        }
    };
    if meta.is_file() {
        out.push(dir.to_path_buf());
        return;
    }
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            diags.push(Diagnostic::new(
                &dir.display().to_string(),
                Pos::default(),
                None,
                "",
                format!("cannot read directory: {e}"),
            ));
            return;
        }
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().to_string();
        let Ok(ft) = entry.file_type() else { continue };
        if ft.is_dir() {
            if !name.starts_with('.') && name != "target" && name != "node_modules" {
                collect_yaml_files(&path, out, diags);
            }
        } else if ft.is_file() && (name.ends_with(".yaml") || name.ends_with(".yml")) {
            out.push(path);
        }
    }
}

/// Parse in-memory sources `(shown path, text)` into a catalog.
pub fn load_sources(sources: Vec<(String, String)>) -> Catalog {
    let mut cat = Catalog::default();
    for (path, text) in sources {
        let (docs, errs) = parse_documents(&text);
        for e in errs {
            cat.diagnostics.push(Diagnostic::new(&path, e.pos, None, "", format!("invalid YAML: {}", e.message)));
        }
        let file_idx = cat.files.len();
        cat.files.push(SourceFile { path: path.clone(), docs: Vec::new() });
        let mut kept = Vec::new();
        for mut doc in docs {
            let doc_idx = kept.len();
            // the typed object is decoded from the value; the catalog keeps the positions
            let mut value = std::mem::take(&mut doc.value);
            normalize_keys(&mut value, "");
            add_object(&mut cat, &path, &doc, &value, file_idx, doc_idx);
            kept.push(doc);
        }
        cat.files[file_idx].docs = kept;
    }
    cat
}

fn add_object(cat: &mut Catalog, path: &str, doc: &Document, value: &Value, file: usize, doc_idx: usize) {
    let Value::Object(map) = value else { return };
    let api_version = map.get("apiVersion").and_then(Value::as_str).unwrap_or("").to_string();
    let group = api_version.split('/').next().unwrap_or("");
    let Some(kind_s) = map.get("kind").and_then(Value::as_str) else {
        if matches!(group, "tekton.dev" | "tenon.dev") {
            let field = if map.contains_key("kind") { "kind" } else { "apiVersion" };
            let msg = format!("missing field(s): kind (a string; {group} kinds are {})", our_kinds(group).join(", "));
            cat.diagnostics.push(Diagnostic::new(path, doc.pos_of(field), None, "kind", msg));
        }
        return;
    };
    let version = api_version.split('/').nth(1).unwrap_or("");
    let kind = match (group, kind_s) {
        ("tekton.dev", "Task") => ObjKind::Task,
        ("tekton.dev", "Pipeline") => ObjKind::Pipeline,
        ("tekton.dev", "PipelineRun") => ObjKind::PipelineRun,
        ("tekton.dev", "TaskRun") => ObjKind::TaskRun,
        ("tekton.dev", "StepAction") => ObjKind::StepAction,
        ("tenon.dev", "PromotionPolicy") => ObjKind::PromotionPolicy,
        ("v1", "ConfigMap") => ObjKind::ConfigMap,
        ("v1", "Secret") => ObjKind::Secret,
        ("v1", "PersistentVolumeClaim") => ObjKind::PersistentVolumeClaim,
        // tenon's own records (the promotion ledger under `.tenon/`): not manifests.
        ("tenon.dev", k) if TENON_RECORD_KINDS.contains(&k) => return,
        // Our groups: a kind we do not read is a mistake, never silently dropped.
        ("tekton.dev" | "tenon.dev", _) => {
            let name = map.get("metadata").and_then(|m| m.get("name")).and_then(Value::as_str).unwrap_or("");
            let label = if name.is_empty() { format!("{kind_s} (unnamed)") } else { format!("{kind_s} {name:?}") };
            let (msg, meant) = unknown_kind_message(group, kind_s, &api_version);
            cat.diagnostics.push(Diagnostic::new(path, doc.pos_of("kind"), Some(label), "kind", msg));
            // the object exists, misspelt: references to it are not "unknown" as well
            if let Some(k) = meant {
                cat.broken.insert((k, name.to_string()));
            }
            return;
        }
        // GitOps repos mix in everything else: not ours.
        _ => return,
    };
    let meta: ObjectMeta = match decode(map.get("metadata").unwrap_or(&Value::Null)) {
        Ok(m) => m,
        Err((field, msg)) => {
            let f = join("metadata", &field);
            cat.diagnostics.push(Diagnostic::new(path, doc.pos_of(&f), Some(format!("{kind_s} (unnamed)")), &f, msg));
            return;
        }
    };
    let name = match (&meta.name, &meta.generate_name) {
        (Some(n), _) if !n.is_empty() => n.clone(),
        (_, Some(g)) if !g.is_empty() => {
            let mut h = Sha256::new();
            h.update(path.as_bytes());
            h.update(doc_idx.to_le_bytes());
            let hex = format!("{:x}", h.finalize());
            format!("{g}{}", &hex[..5])
        }
        _ => {
            cat.diagnostics.push(Diagnostic::new(
                path,
                doc.pos_of("metadata"),
                Some(format!("{kind_s} (unnamed)")),
                "metadata.name",
                "missing field(s): metadata.name",
            ));
            return;
        }
    };
    let label = format!("{kind_s} {name:?}");
    let supported_version = match kind {
        ObjKind::StepAction => matches!(version, "v1" | "v1beta1" | "v1alpha1"),
        ObjKind::PromotionPolicy => version == "v1alpha1",
        ObjKind::ConfigMap | ObjKind::Secret | ObjKind::PersistentVolumeClaim => true,
        _ => matches!(version, "v1" | "v1beta1"),
    };
    if !supported_version {
        cat.diagnostics.push(Diagnostic::new(path, doc.pos_of("apiVersion"), Some(label), "apiVersion", format!("unsupported apiVersion {api_version:?}: tenon reads tekton.dev/v1 (and v1beta1 where the shape is the same)")));
        return;
    }
    macro_rules! push {
        ($list:ident, $v:expr, $prefix:expr) => {{
            match decode($v) {
                Ok(spec) => {
                    cat.$list.push(Obj { kind, api_version: api_version.clone(), name, meta, spec, file, doc: doc_idx })
                }
                Err((field, msg)) => {
                    let f = join($prefix, &field);
                    cat.diagnostics.push(Diagnostic::new(path, doc.pos_of(&f), Some(label), &f, msg));
                    cat.broken.insert((kind, name));
                }
            }
        }};
    }
    let spec = map.get("spec").unwrap_or(&Value::Null);
    match kind {
        ObjKind::Task => push!(tasks, spec, "spec"),
        ObjKind::Pipeline => push!(pipelines, spec, "spec"),
        ObjKind::PipelineRun => push!(pipeline_runs, spec, "spec"),
        ObjKind::TaskRun => push!(task_runs, spec, "spec"),
        ObjKind::StepAction => push!(step_actions, spec, "spec"),
        ObjKind::PromotionPolicy => push!(promotion_policies, spec, "spec"),
        ObjKind::ConfigMap => push!(config_maps, value, ""),
        ObjKind::Secret => push!(secrets, value, ""),
        ObjKind::PersistentVolumeClaim => push!(pvcs, spec, "spec"),
    }
}

/// Kinds of the `tekton.dev` group that tenon reads, then those Tekton defines (or
/// defined) that tenon does not run.
const TEKTON_KINDS: &[&str] = &["Task", "Pipeline", "PipelineRun", "TaskRun", "StepAction"];
const TEKTON_KINDS_UNSUPPORTED: &[&str] =
    &["ClusterTask", "CustomRun", "Run", "VerificationPolicy", "PipelineResource", "Condition"];
const TENON_KINDS: &[&str] = &["PromotionPolicy"];
/// Documents tenon writes itself (`src/promote`), skipped by the loader.
const TENON_RECORD_KINDS: &[&str] = &["PromotionRecord", "PromotionHold", "PromotionRelease"];

fn our_kinds(group: &str) -> &'static [&'static str] {
    if group == "tekton.dev" {
        TEKTON_KINDS
    } else {
        TENON_KINDS
    }
}

/// Why an object of our groups with kind `kind` is not read, and the kind tenon reads
/// that it is probably a typo of.
fn unknown_kind_message(group: &str, kind: &str, api_version: &str) -> (String, Option<ObjKind>) {
    let known = our_kinds(group);
    let unsupported = if group == "tekton.dev" { TEKTON_KINDS_UNSUPPORTED } else { &[] };
    if unsupported.contains(&kind) {
        return (format!("unsupported kind {kind:?} of {group}: tenon reads {}", known.join(", ")), None);
    }
    let meant = super::validate::closest(kind, known.iter().chain(unsupported).copied());
    let hint = meant.map(|m| format!(" (did you mean {m:?}?)")).unwrap_or_default();
    let msg =
        format!("unknown kind {kind:?} for apiVersion {api_version:?}{hint}; {group} kinds are {}", known.join(", "));
    let ours = [ObjKind::Task, ObjKind::Pipeline, ObjKind::PipelineRun, ObjKind::TaskRun, ObjKind::StepAction];
    let kind = ours.into_iter().chain([ObjKind::PromotionPolicy]).find(|k| meant == Some(k.as_str()));
    (msg, kind)
}

fn join(prefix: &str, field: &str) -> String {
    match (prefix.is_empty(), field.is_empty() || field == ".") {
        (_, true) => prefix.to_string(),
        (true, false) => field.to_string(),
        (false, false) if field.starts_with('[') => format!("{prefix}{field}"),
        (false, false) => format!("{prefix}.{field}"),
    }
}

/// Decode a JSON value into `T`, reporting the failing field path.
fn decode<T: DeserializeOwned + Default>(v: &Value) -> Result<T, (String, String)> {
    if v.is_null() {
        return Ok(T::default());
    }
    serde_path_to_error::deserialize::<_, T>(v).map_err(|e| {
        let path = e.path().to_string();
        let msg = humanize_serde(&e.inner().to_string());
        (if path == "." { String::new() } else { path }, msg)
    })
}

fn humanize_serde(msg: &str) -> String {
    msg.replace("invalid type: string", "invalid type: a string")
        .replace("invalid type: sequence", "invalid type: a list")
        .replace("invalid type: map", "invalid type: a mapping")
        .replace("expected a sequence", "expected a list")
        .replace("expected struct", "expected a mapping for")
}

/// Field names Tekton's decoder matches case-insensitively. Keys under free-form maps
/// (labels, annotations, data, params values, properties) are left alone.
const KNOWN_FIELDS: &[&str] = &[
    "apiVersion",
    "kind",
    "metadata",
    "spec",
    "name",
    "generateName",
    "namespace",
    "labels",
    "annotations",
    "description",
    "displayName",
    "params",
    "steps",
    "stepTemplate",
    "sidecars",
    "results",
    "workspaces",
    "volumes",
    "image",
    "command",
    "args",
    "script",
    "env",
    "envFrom",
    "workingDir",
    "onError",
    "timeout",
    "when",
    "ref",
    "volumeMounts",
    "mountPath",
    "subPath",
    "readOnly",
    "optional",
    "type",
    "properties",
    "default",
    "enum",
    "value",
    "valueFrom",
    "input",
    "operator",
    "values",
    "cel",
    "taskRef",
    "taskSpec",
    "pipelineRef",
    "pipelineSpec",
    "matrix",
    "include",
    "runAfter",
    "retries",
    "finally",
    "tasks",
    "timeouts",
    "pipeline",
    "taskRunSpecs",
    "pipelineTaskName",
    "status",
    "emptyDir",
    "persistentVolumeClaim",
    "claimName",
    "volumeClaimTemplate",
    "configMap",
    "secret",
    "secretName",
    "items",
    "key",
    "path",
    "projected",
    "csi",
    "resolver",
    "bundle",
    "imagePullPolicy",
    "computeResources",
    "securityContext",
    "readinessProbe",
    "startupProbe",
    "serviceAccountName",
    "podTemplate",
    "taskRunTemplate",
    "stdoutConfig",
    "stderrConfig",
    "workspace",
];

const FREE_FORM: &[&str] = &[
    "labels",
    "annotations",
    "data",
    "stringData",
    "binaryData",
    "properties",
    "default",
    "value",
    "nodeSelector",
    "computeResources",
    "resources",
    "podTemplate",
    "volumeClaimTemplate",
    "securityContext",
];

fn normalize_keys(v: &mut Value, parent_key: &str) {
    if FREE_FORM.contains(&parent_key) {
        return;
    }
    match v {
        Value::Object(m) => {
            let renames: Vec<(String, &'static str)> = m
                .keys()
                .filter(|k| !KNOWN_FIELDS.contains(&k.as_str()))
                .filter_map(|k| KNOWN_FIELDS.iter().find(|f| f.eq_ignore_ascii_case(k)).map(|f| (k.clone(), *f)))
                .collect();
            for (from, to) in renames {
                if !m.contains_key(to) {
                    if let Some(val) = m.remove(&from) {
                        m.insert(to.to_string(), val);
                    }
                }
            }
            for (k, child) in m.iter_mut() {
                normalize_keys(child, k);
            }
        }
        Value::Array(items) => {
            for i in items {
                normalize_keys(i, parent_key);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str) -> Catalog {
        load_sources(vec![("t.yaml".into(), text.into())])
    }

    #[test]
    fn loads_kinds_and_ignores_foreign_objects() {
        let cat = load(
            "apiVersion: tekton.dev/v1\nkind: Task\nmetadata: {name: a}\nspec:\n  steps: [{image: x, script: echo}]\n---\n\
             apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n---\n\
             apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm}\ndata: {k: v, n: 1}\n---\n\
             apiVersion: tekton.dev/v1beta1\nkind: PipelineRun\nmetadata: {generateName: run-}\nspec: {pipelineRef: {name: p}}\n",
        );
        assert!(cat.diagnostics.is_empty(), "{}", cat.diagnostics);
        assert_eq!(cat.tasks.len(), 1);
        assert_eq!(cat.config_maps[0].spec.data["n"], "1");
        assert!(cat.pipeline_runs[0].name.starts_with("run-") && cat.pipeline_runs[0].name.len() == 9);
    }

    #[test]
    fn unknown_kinds_of_our_groups_are_errors() {
        let obj =
            |api: &str, kind: &str| format!("apiVersion: {api}\nkind: {kind}\nmetadata: {{name: x}}\nspec: {{}}\n");
        let cases = [
            (
                "tekton.dev/v1",
                "Pipline",
                "unknown kind \"Pipline\" for apiVersion \"tekton.dev/v1\" (did you mean \"Pipeline\"?)",
            ),
            ("tekton.dev/v1beta1", "task", "(did you mean \"Task\"?)"),
            ("tekton.dev/v1alpha1", "PipelineRunn", "(did you mean \"PipelineRun\"?)"),
            ("tekton.dev/v1", "Widget", "tekton.dev kinds are Task, Pipeline, PipelineRun, TaskRun, StepAction"),
            ("tekton.dev/v1beta1", "ClusterTask", "unsupported kind \"ClusterTask\" of tekton.dev"),
            ("tekton.dev/v1beta1", "CustomRun", "unsupported kind \"CustomRun\""),
            ("tenon.dev/v1alpha1", "PromotionPolicyy", "(did you mean \"PromotionPolicy\"?)"),
        ];
        for (api, kind, want) in cases {
            let cat = load(&format!("# a comment\n{}", obj(api, kind)));
            assert_eq!(cat.diagnostics.len(), 1, "{api} {kind}: {}", cat.diagnostics);
            let d = &cat.diagnostics.0[0];
            assert!(d.message.contains(want), "{api} {kind}: {}", d.message);
            assert_eq!((d.line, d.column, d.field.as_str()), (3, 1, "kind"), "{d}");
            assert_eq!(d.object.as_deref(), Some(format!("{kind} \"x\"").as_str()));
        }
        // a missing kind is an error too
        let cat = load("apiVersion: tekton.dev/v1\nmetadata: {name: x}\n");
        assert_eq!(cat.diagnostics.len(), 1, "{}", cat.diagnostics);
        assert!(cat.diagnostics.0[0].message.starts_with("missing field(s): kind"), "{}", cat.diagnostics);
        assert_eq!(cat.diagnostics.0[0].line, 1);
        // tenon's own ledger records are not manifests
        for kind in TENON_RECORD_KINDS {
            let cat = load(&obj("tenon.dev/v1alpha1", kind));
            assert!(cat.diagnostics.is_empty(), "{kind}: {}", cat.diagnostics);
        }
        // other groups stay ignored, typos or not
        for (api, kind) in
            [("apps/v1", "Deploymnet"), ("triggers.tekton.dev/v1beta1", "EventListener"), ("v1", "ConfigMapp")]
        {
            let cat = load(&obj(api, kind));
            assert!(cat.diagnostics.is_empty() && cat.is_empty(), "{api} {kind}: {}", cat.diagnostics);
        }
    }

    #[test]
    fn invalid_utf8_is_shown_at_its_own_line_and_column() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("t.yaml"),
            b"apiVersion: tekton.dev/v1\nkind: Task\nmetadata:\n  name: a\n  labels: {x: \"\xc3\xa9\xff\"}\n",
        )
        .unwrap();
        let cat = load_dir(dir.path());
        assert_eq!(cat.diagnostics.len(), 1, "{}", cat.diagnostics);
        let d = &cat.diagnostics.0[0];
        assert_eq!((d.file.as_str(), d.line, d.column), ("t.yaml", 5, 17), "{d}");
        assert_eq!(d.message, "file is not valid UTF-8 (byte 0xff)");
    }

    #[test]
    fn keys_match_case_insensitively() {
        let cat = load("apiVersion: tekton.dev/v1\nkind: Task\nmetadata: {name: a}\nspec:\n  workspaces: [{name: w, mountpath: /x}]\n  steps: [{image: x, script: echo}]\n");
        assert_eq!(cat.tasks[0].spec.workspaces[0].mount_path.as_deref(), Some("/x"));
    }

    #[test]
    fn type_errors_name_the_field_and_line() {
        let cat = load("apiVersion: tekton.dev/v1\nkind: Pipeline\nmetadata: {name: p}\nspec:\n  tasks:\n    - name: a\n      retries: lots\n");
        let d = &cat.diagnostics.0[0];
        assert_eq!(d.field, "spec.tasks[0].retries");
        assert_eq!(d.line, 7);
        assert!(d.message.contains("non-negative integer"), "{}", d.message);
        assert_eq!(d.object.as_deref(), Some("Pipeline \"p\""));
    }

    #[test]
    fn syntax_errors_keep_earlier_documents() {
        let cat = load("apiVersion: tekton.dev/v1\nkind: Task\nmetadata: {name: a}\n---\nfoo: [\n");
        assert_eq!(cat.tasks.len(), 1);
        assert!(cat.diagnostics.0[0].message.starts_with("invalid YAML"));
    }
}
