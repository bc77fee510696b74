//! Validation like Tekton's admission webhook (docs/tekton-semantics §6), reporting
//! every problem (not just the first) with file, line, column, object and field path.

use std::collections::{BTreeMap, BTreeSet};

use super::annotations::{parse_output, OUTPUTS_ANNOTATION};
use super::diag::{Diagnostic, Diagnostics};
use super::load::{Catalog, Obj, ObjKind, REPO_WORKSPACE_ANNOTATION};
use super::parse_duration;
use super::types::*;
use crate::model::dag::{Dag, DagError};
use crate::model::subst::{find_refs, Seg};

mod annotations;
mod pipeline;
mod policy;
mod runs;
mod task;

/// Validate everything in the catalog. Load-time diagnostics are included first.
pub fn validate(cat: &Catalog) -> Diagnostics {
    let mut v = Validator { cat, out: Diagnostics::default() };
    v.out.0.extend(cat.diagnostics.0.iter().cloned());
    v.duplicates();
    v.names();
    for t in &cat.tasks {
        let ctx = v.ctx(t);
        v.task_spec(&ctx, "spec", &t.spec, &TaskEnv::default());
        let ws: BTreeSet<&str> = t.spec.workspaces.iter().map(|w| w.name.as_str()).collect();
        v.outputs_annotation(&ctx, "metadata.annotations", &t.meta.annotations, OUTPUTS_ANNOTATION, Some(&ws));
        v.publish_annotation(&ctx, &t.meta.annotations, &t.spec);
    }
    for (objs, secret) in [(&cat.secrets, true), (&cat.config_maps, false)] {
        for o in objs {
            let ctx = v.ctx(o);
            v.key_data(&ctx, &o.spec, secret);
        }
    }
    for p in &cat.pipelines {
        let ctx = v.ctx(p);
        v.pipeline_spec(&ctx, "spec", &p.spec);
        v.pipeline_outputs(&ctx, "spec", &p.meta, &p.spec, true);
    }
    for pr in &cat.pipeline_runs {
        v.pipeline_run(pr);
    }
    for tr in &cat.task_runs {
        v.task_run(tr);
    }
    for p in &cat.promotion_policies {
        v.promotion_policy(p);
    }
    for sa in &cat.step_actions {
        let ctx = v.ctx(sa);
        v.step_action(&ctx, &sa.spec);
    }
    let hints = yaml11_hints(cat, &v.out);
    v.out.0.extend(hints);
    v.out.sorted()
}

/// Whether a field path names something (a task, param, result, workspace, step) or
/// refers to something by name (`runAfter`, `workspace`, `pipelineTaskName`).
fn is_name_field(path: &str) -> bool {
    let last = path.rsplit('.').next().unwrap_or(path);
    last == "name"
        || last == "workspace"
        || last == "pipelineTaskName"
        || (last.starts_with("runAfter[") && last.ends_with(']'))
}

/// For every object with an error: a hint at each name that YAML 1.1 read as a boolean
/// (`y`, `no`, `on`, ...), which is the likely cause (`result "y" is not declared`).
fn yaml11_hints(cat: &Catalog, errors: &Diagnostics) -> Vec<Diagnostic> {
    let files: BTreeMap<&str, &super::load::SourceFile> = cat.files.iter().map(|f| (f.path.as_str(), f)).collect();
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for e in &errors.0 {
        let Some(object) = &e.object else { continue };
        let Some(file) = files.get(e.file.as_str()) else { continue };
        // the document the error is in: the last one starting at or before it
        let Some(doc_idx) = file.docs.iter().rposition(|d| d.start.line <= e.line) else { continue };
        if !seen.insert((e.file.clone(), doc_idx)) {
            continue;
        }
        let doc = &file.docs[doc_idx];
        for (path, (text, pos)) in &doc.yaml11_bools {
            if !is_name_field(path) {
                continue;
            }
            if let Some(hint) = super::yaml::yaml11_bool_hint(text) {
                out.push(Diagnostic::new(&file.path, *pos, Some(object.clone()), path, hint));
            }
        }
    }
    out
}

/// Where diagnostics for one object go.
struct Ctx {
    file: usize,
    doc: usize,
    label: String,
}

#[derive(Default, Clone)]
struct TaskEnv {
    /// Embedded in a Pipeline/PipelineRun/TaskRun: undeclared params and workspaces
    /// propagate from the parent instead of being errors.
    embedded: bool,
    /// Pipeline params visible to an embedded spec (name -> type).
    parent_params: BTreeMap<String, ParamType>,
}

#[derive(Clone, Copy, PartialEq)]
enum FieldKind {
    Script,
    /// An element of `command`/`args`: an isolated array reference splices.
    ListElem,
    /// `env` values, `workingDir`, `image`, ...
    Other,
}

struct Validator<'a> {
    cat: &'a Catalog,
    out: Diagnostics,
}

fn did_you_mean<'b>(name: &str, candidates: impl IntoIterator<Item = &'b str>) -> String {
    match closest(name, candidates) {
        Some(c) => format!(" (did you mean {c:?}?)"),
        None => String::new(),
    }
}

/// The candidate nearest to `name`, if one is near enough to be a typo of it.
pub(super) fn closest<'b>(name: &str, candidates: impl IntoIterator<Item = &'b str>) -> Option<&'b str> {
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(name, c), c))
        .filter(|(d, c)| *d <= 2.max(name.len() / 3) && *d < c.len().max(name.len()))
        .min()
        .map(|(_, c)| c)
}

/// DNS-1123 label: lowercase alphanumerics and '-', starting and ending alphanumeric, ≤ 63.
pub fn dns_label_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// DNS-1123 subdomain (Kubernetes object names): labels joined by '.', ≤ 253.
pub fn dns_subdomain_ok(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// Param names: `^[_a-zA-Z][_a-zA-Z0-9.-]*$` (objects: no dots).
pub fn param_name_ok(s: &str, object: bool) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c == '_' || c.is_ascii_alphabetic() => {}
        _ => return false,
    }
    chars.all(|c| c == '_' || c == '-' || c.is_ascii_alphanumeric() || (c == '.' && !object))
}

fn result_name_ok(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

fn value_type(v: &ParamValue) -> ParamType {
    match v {
        ParamValue::Str(_) => ParamType::String,
        ParamValue::Array(_) => ParamType::Array,
        ParamValue::Object(_) => ParamType::Object,
    }
}

/// Whether a string value is exactly one `$(...)` reference (so its type is decided later).
fn is_isolated_ref(s: &str) -> bool {
    let r = find_refs(s);
    r.len() == 1 && r[0].start == 0 && r[0].end == s.len()
}

impl<'a> Validator<'a> {
    /// A Secret's `data` and any `binaryData` must be base64 (Kubernetes refuses anything
    /// else): a value that is not would be mounted as nothing. The message never shows it.
    fn key_data(&mut self, ctx: &Ctx, d: &crate::model::KeyData, secret: bool) {
        let fields = [("data", &d.data, secret), ("binaryData", &d.binary_data, true)];
        for (field, map, encoded) in fields {
            if !encoded {
                continue;
            }
            for (k, v) in map.iter() {
                if crate::util::base64_decode(v).is_none() {
                    let hint = if field == "data" { " (use stringData for plain text)" } else { "" };
                    self.err(ctx, &crate::model::yaml::join_key(field, k), format!("is not valid base64{hint}"));
                }
            }
        }
    }

    fn ctx<T>(&self, o: &Obj<T>) -> Ctx {
        Ctx { file: o.file, doc: o.doc, label: o.label() }
    }

    fn err(&mut self, ctx: &Ctx, field: &str, msg: impl Into<String>) {
        let file = &self.cat.files[ctx.file];
        let pos = file.docs.get(ctx.doc).map(|d| d.pos_of(field)).unwrap_or_default();
        self.out.push(Diagnostic::new(&file.path, pos, Some(ctx.label.clone()), field, msg));
    }

    /// A required list that is absent (shown at `base`) or empty (shown at its own key).
    fn missing_list(&mut self, ctx: &Ctx, base: &str, list: &str) {
        let f = format!("{base}.{list}");
        let present = self.cat.files[ctx.file].docs.get(ctx.doc).is_some_and(|d| d.positions.contains_key(&f));
        if present {
            self.err(ctx, &f, format!("missing field(s): {list} (the list is empty)"));
        } else {
            self.err(ctx, base, format!("missing field(s): {list}"));
        }
    }

    /// A Go duration field.
    fn duration(&mut self, ctx: &Ctx, field: &str, v: &Option<String>) {
        if let Some(t) = v {
            if parse_duration(t).is_none() {
                self.err(ctx, field, format!("invalid duration {t:?} (use Go syntax such as 90s, 5m, 1h30m)"));
            }
        }
    }

    /// A subPath must stay inside its volume.
    fn sub_path(&mut self, ctx: &Ctx, field: &str, sp: &str) {
        if sp.starts_with('/') || sp.split('/').any(|c| c == "..") {
            self.err(
                ctx,
                field,
                format!("subPath {sp:?} must be a relative path inside the volume (no leading '/', no '..')"),
            );
        }
    }

    /// Kubernetes object names: DNS-1123 subdomains.
    fn names(&mut self) {
        fn check<T>(v: &mut Validator, objs: &[Obj<T>]) {
            for o in objs {
                if o.meta.name.is_some() && !dns_subdomain_ok(&o.name) {
                    let ctx = v.ctx(o);
                    v.err(&ctx, "metadata.name", format!("invalid value {:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', start and end with an alphanumeric character, and be at most 253 characters", o.name));
                }
            }
        }
        check(self, &self.cat.tasks);
        check(self, &self.cat.pipelines);
        check(self, &self.cat.pipeline_runs);
        check(self, &self.cat.task_runs);
        check(self, &self.cat.step_actions);
    }

    fn duplicates(&mut self) {
        fn dups<T>(v: &mut Validator, objs: &[Obj<T>]) {
            let mut seen = BTreeMap::new();
            for o in objs {
                if let Some(first) = seen.insert(o.name.clone(), (o.file, o.doc)) {
                    let (f, _) = first;
                    let first_file = v.cat.files[f].path.clone();
                    let ctx = v.ctx(o);
                    v.err(
                        &ctx,
                        "metadata.name",
                        format!("duplicate {} name {:?} (also defined in {first_file})", o.kind.as_str(), o.name),
                    );
                }
            }
        }
        dups(self, &self.cat.tasks);
        dups(self, &self.cat.pipelines);
        dups(self, &self.cat.pipeline_runs);
        dups(self, &self.cat.task_runs);
        dups(self, &self.cat.step_actions);
    }
}

fn snames_before(steps: &[Step], i: usize) -> BTreeSet<String> {
    steps[..i].iter().filter_map(|s| s.name.clone()).collect()
}

fn collect_strings(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Array(a) => a.iter().for_each(|x| collect_strings(x, out)),
        serde_json::Value::Object(m) => m.values().for_each(|x| collect_strings(x, out)),
        _ => {}
    }
}
