//! Validation like Tekton's admission webhook (docs/tekton-semantics §6), reporting
//! every problem (not just the first) with file, line, column, object and field path.

use std::collections::{BTreeMap, BTreeSet};

use super::annotations::{parse_output, OUTPUTS_ANNOTATION};
use super::diag::{Diagnostic, Diagnostics};
use super::load::{Catalog, Obj, ObjKind, REPO_WORKSPACE_ANNOTATION};
use super::parse_duration;
use super::types::*;
use crate::dag::{Dag, DagError};
use crate::subst::{find_refs, Seg};

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

    fn promotion_policy(&mut self, p: &Obj<PromotionPolicySpec>) {
        let ctx = self.ctx(p);
        let s = &p.spec;
        // the judged run and the tasks/results it offers
        let cat: &Catalog = self.cat;
        let run = cat.pipeline_runs.iter().find(|r| r.name == s.pipeline_run_ref.name);
        if s.pipeline_run_ref.name.is_empty() {
            self.err(&ctx, "spec.pipelineRunRef", "missing field(s): pipelineRunRef.name");
        } else if run.is_none() {
            let hint = did_you_mean(&s.pipeline_run_ref.name, cat.pipeline_runs.iter().map(|r| r.name.as_str()));
            self.err(
                &ctx,
                "spec.pipelineRunRef.name",
                format!("unknown PipelineRun {:?}{hint}", s.pipeline_run_ref.name),
            );
        }
        let pspec: Option<PipelineSpec> = run.and_then(|r| match (&r.spec.pipeline_spec, &r.spec.pipeline_ref) {
            (Some(ps), _) => Some(ps.clone()),
            (None, Some(pr)) => pr.name.as_deref().and_then(|n| cat.pipeline(n)).map(|p| p.spec.clone()),
            _ => None,
        });
        if s.environment.is_empty() {
            self.err(&ctx, "spec", "missing field(s): environment");
        } else if !dns_label_ok(&s.environment) {
            self.err(&ctx, "spec.environment", format!("invalid value {:?}: an environment is a DNS-1123 label (lowercase alphanumerics and '-'), it names ledger paths and branches", s.environment));
        }
        if s.subject.digest.trim().is_empty() {
            self.err(&ctx, "spec.subject", "missing field(s): subject.digest (the identity of what is promoted)");
        }
        let mut texts: Vec<(String, String)> = vec![
            ("spec.subject.uri".into(), s.subject.uri.clone()),
            ("spec.subject.digest".into(), s.subject.digest.clone()),
        ];
        for (i, g) in s.gates.iter().enumerate() {
            let f = format!("spec.gates[{i}]");
            texts.push((format!("{f}.result"), g.result.clone()));
            if find_refs(&g.result).is_empty() {
                self.err(
                    &ctx,
                    &format!("{f}.result"),
                    format!("a gate judges a task result, e.g. $(tasks.evaluate.results.accuracy); got {:?}", g.result),
                );
            }
            match g.operator.as_str() {
                "in" | "notin" => {
                    if g.values.as_ref().is_none_or(|v| v.is_empty()) {
                        self.err(&ctx, &format!("{f}.values"), "expecting non-empty values field");
                    }
                }
                ">=" | ">" | "<=" | "<" | "==" | "!=" => {
                    let ordering = !matches!(g.operator.as_str(), "==" | "!=");
                    match (&g.value, &g.incumbent) {
                        (None, None) => self.err(&ctx, &f, "missing field(s): value (or incumbent)"),
                        (Some(v), None) if ordering && !v.contains("$(") && v.trim().parse::<f64>().is_err() => self
                            .err(
                                &ctx,
                                &format!("{f}.value"),
                                format!("{} compares numbers; {v:?} is not a number", g.operator),
                            ),
                        (_, Some(inc)) => {
                            if inc.file.is_empty() || inc.path.is_empty() {
                                self.err(
                                    &ctx,
                                    &format!("{f}.incumbent"),
                                    "missing field(s): incumbent.file, incumbent.path",
                                );
                            }
                            if let Some(m) = &g.margin {
                                if m.trim().parse::<f64>().is_err() {
                                    self.err(&ctx, &format!("{f}.margin"), format!("margin {m:?} is not a number"));
                                }
                            }
                        }
                        _ => {}
                    }
                }
                other => self.err(
                    &ctx,
                    &format!("{f}.operator"),
                    format!("operator {other:?} is not recognized. valid operators: >=, >, <=, <, ==, !=, in, notin"),
                ),
            }
        }
        if s.target.updates.is_empty() {
            self.err(&ctx, "spec.target", "missing field(s): target.updates");
        }
        for (i, u) in s.target.updates.iter().enumerate() {
            let f = format!("spec.target.updates[{i}]");
            texts.push((format!("{f}.value"), u.value.clone()));
            if u.file.is_empty() || u.file.starts_with('/') || u.file.split('/').any(|c| c == "..") {
                self.err(
                    &ctx,
                    &format!("{f}.file"),
                    format!(
                        "file {:?} must be a relative path inside the repository (no leading '/', no '..')",
                        u.file
                    ),
                );
            }
            if u.path.trim().is_empty() {
                self.err(&ctx, &format!("{f}.path"), "missing field(s): path");
            }
        }
        match s.mode.as_deref() {
            None | Some("direct") | Some("branch") => {}
            Some(m) => self.err(&ctx, "spec.mode", format!("invalid value {m:?}: expected direct or branch")),
        }
        // every task result referenced must exist in the judged pipeline
        if let Some(ps) = &pspec {
            for (field, t) in texts {
                for r in find_refs(&t) {
                    let Some(segs) = r.segs() else { continue };
                    match segs.as_slice() {
                        [Seg::Name(h), Seg::Name(task), Seg::Name(k), Seg::Name(res), ..] if h == "tasks" && k == "results" => {
                            match ps.tasks.iter().chain(ps.finally.iter()).find(|x| &x.name == task) {
                                None => {
                                    let hint = did_you_mean(task, ps.tasks.iter().map(|x| x.name.as_str()));
                                    self.err(&ctx, &field, format!("$({}) refers to unknown pipeline task {task:?}{hint}", r.expr));
                                }
                                Some(pt) => {
                                    if let Some(ts) = self.resolve_task(pt) {
                                        if !ts.results.iter().any(|x| &x.name == res) {
                                            let hint = did_you_mean(res, ts.results.iter().map(|x| x.name.as_str()));
                                            self.err(&ctx, &field, format!("$({}): task {task:?} declares no result {res:?}{hint}", r.expr));
                                        }
                                    }
                                }
                            }
                        }
                        [Seg::Name(h), ..] if h == "subject" || h == "policy" || h == "environment" => {}
                        _ => self.err(&ctx, &field, format!("$({}) is not available to a PromotionPolicy (use $(tasks.X.results.Y), $(subject.uri), $(subject.digest))", r.expr)),
                    }
                }
            }
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

    // ---------------------------------------------------------------- params

    fn param_specs(&mut self, ctx: &Ctx, base: &str, params: &[ParamSpec]) {
        let mut seen = BTreeSet::new();
        for (i, p) in params.iter().enumerate() {
            let f = format!("{base}[{i}]");
            if p.name.is_empty() {
                self.err(ctx, &format!("{f}.name"), "missing field(s): name");
                continue;
            }
            if !seen.insert(p.name.clone()) {
                self.err(ctx, &format!("{f}.name"), format!("parameter {:?} appears more than once", p.name));
            }
            if let Some(t) = &p.type_ {
                if !matches!(t.as_str(), "string" | "array" | "object") {
                    self.err(
                        ctx,
                        &format!("{f}.type"),
                        format!("invalid value: {t} (expected string, array or object)"),
                    );
                    continue;
                }
            }
            let pt = p.param_type();
            if !param_name_ok(&p.name, pt == ParamType::Object) {
                self.err(
                    ctx,
                    &format!("{f}.name"),
                    format!(
                        "invalid param name {:?}: must match ^[_a-zA-Z][_a-zA-Z0-9.-]*$ (no dots for object params)",
                        p.name
                    ),
                );
            }
            if let Some(d) = &p.default {
                if value_type(d) != pt {
                    self.err(
                        ctx,
                        &format!("{f}.default"),
                        format!("{:?} type does not match default value's type: {:?}", pt.as_str(), d.type_name()),
                    );
                }
            }
            if pt == ParamType::Object {
                match &p.properties {
                    None => self.err(ctx, &f, format!("missing field(s): {}.properties", p.name)),
                    Some(props) => {
                        for (k, prop) in props {
                            if prop.type_.as_deref().is_some_and(|t| t != "string") {
                                self.err(
                                    ctx,
                                    &format!("{f}.properties.{k}.type"),
                                    "object property types must be \"string\"",
                                );
                            }
                        }
                        // a partial default is fine: supplied values are merged over it key by key
                    }
                }
            }
            if let Some(e) = &p.enum_ {
                if pt != ParamType::String {
                    self.err(ctx, &format!("{f}.enum"), "enum is only allowed on string params");
                } else if let Some(ParamValue::Str(d)) = &p.default {
                    if !e.contains(d) {
                        self.err(
                            ctx,
                            &format!("{f}.default"),
                            format!("param default value {d:?} is not in the enum list {e:?}"),
                        );
                    }
                }
            }
        }
    }

    /// Check supplied values against declarations: required params present, shapes match.
    fn supplied_params(
        &mut self,
        ctx: &Ctx,
        base: &str,
        decl: &[ParamSpec],
        supplied: &[Param],
        also: &[&str],
        what: &str,
    ) {
        let mut seen = BTreeSet::new();
        for (i, p) in supplied.iter().enumerate() {
            if !seen.insert(p.name.as_str()) {
                self.err(
                    ctx,
                    &format!("{base}[{i}].name"),
                    format!("parameter names must be unique, the parameter {:?} is also defined earlier", p.name),
                );
            }
            if let Some(d) = decl.iter().find(|d| d.name == p.name) {
                let dt = d.param_type();
                let literal = match &p.value {
                    ParamValue::Str(s) => !is_isolated_ref(s),
                    _ => true,
                };
                if literal && value_type(&p.value) != dt {
                    self.err(
                        ctx,
                        &format!("{base}[{i}].value"),
                        format!(
                            "param types don't match the user-specified type: param {:?} is declared {} but given {}",
                            p.name,
                            dt.as_str(),
                            p.value.type_name()
                        ),
                    );
                }
                if let (Some(e), ParamValue::Str(s)) = (&d.enum_, &p.value) {
                    if !s.contains("$(") && !e.contains(s) {
                        self.err(
                            ctx,
                            &format!("{base}[{i}].value"),
                            format!("param `{}` value: {s} is not in the enum list {e:?}", p.name),
                        );
                    }
                }
                if let (Some(props), ParamValue::Object(o)) = (&d.properties, &p.value) {
                    let def = match &d.default {
                        Some(ParamValue::Object(m)) => Some(m),
                        _ => None,
                    };
                    let missing: Vec<&String> = props
                        .keys()
                        .filter(|k| !o.contains_key(*k) && def.is_none_or(|m| !m.contains_key(*k)))
                        .collect();
                    if !missing.is_empty() {
                        self.err(ctx, &format!("{base}[{i}].value"), format!("missing keys for these params which are required in ParamSpec's properties: {missing:?}"));
                    }
                }
            }
        }
        let missing: Vec<&str> = decl
            .iter()
            .filter(|d| d.default.is_none())
            .filter(|d| !supplied.iter().any(|p| p.name == d.name) && !also.contains(&d.name.as_str()))
            .map(|d| d.name.as_str())
            .collect();
        if !missing.is_empty() {
            let field = base.rsplit_once('.').map_or(String::new(), |(p, _)| p.to_string());
            self.err(ctx, &field, format!("{what} missing parameters: {missing:?} (declared without default)"));
        }
    }

    // ---------------------------------------------------------------- tasks

    fn task_spec(&mut self, ctx: &Ctx, base: &str, spec: &TaskSpec, env: &TaskEnv) {
        self.param_specs(ctx, &format!("{base}.params"), &spec.params);
        if spec.steps.is_empty() {
            self.missing_list(ctx, base, "steps");
        }
        // results
        let mut rseen = BTreeSet::new();
        for (i, r) in spec.results.iter().enumerate() {
            let f = format!("{base}.results[{i}]");
            if !result_name_ok(&r.name) {
                self.err(ctx, &format!("{f}.name"), format!("invalid result name {:?}: must consist of alphanumerics, '-', '_' or '.', starting and ending alphanumeric", r.name));
            }
            if !rseen.insert(r.name.clone()) {
                self.err(ctx, &format!("{f}.name"), format!("result {:?} appears more than once", r.name));
            }
            if let Some(t) = &r.type_ {
                if !matches!(t.as_str(), "string" | "array" | "object") {
                    self.err(
                        ctx,
                        &format!("{f}.type"),
                        format!("invalid value: {t} (expected string, array or object)"),
                    );
                }
            }
            if r.type_.as_deref() == Some("object") && r.properties.is_none() {
                self.err(ctx, &f, format!("missing field(s): {}.properties", r.name));
            }
        }
        // workspaces
        let mut wnames = BTreeSet::new();
        let mut wpaths = BTreeSet::new();
        for (i, w) in spec.workspaces.iter().enumerate() {
            let f = format!("{base}.workspaces[{i}]");
            if !wnames.insert(w.name.clone()) {
                self.err(ctx, &format!("{f}.name"), format!("workspace name {:?} must be unique", w.name));
            }
            let mp = w.mount_path.clone().unwrap_or_else(|| format!("/workspace/{}", w.name));
            if !wpaths.insert(mp.clone()) {
                self.err(ctx, &format!("{f}.mountPath"), format!("workspace mount path {mp:?} must be unique"));
            }
        }
        // steps
        let template_image = spec.step_template.as_ref().and_then(|t| t.image.clone());
        let mut snames = BTreeSet::new();
        for (i, s) in spec.steps.iter().enumerate() {
            let f = format!("{base}.steps[{i}]");
            if let Some(n) = &s.name {
                if !dns_label_ok(n) {
                    self.err(ctx, &format!("{f}.name"), format!("invalid value {n:?}: a step name must be a DNS-1123 label (lowercase alphanumerics and '-', at most 63)"));
                }
                if !snames.insert(n.clone()) {
                    self.err(
                        ctx,
                        &format!("{f}.name"),
                        format!("expected exactly one, got both: step name {n:?} is used twice"),
                    );
                }
            }
            self.container(ctx, &f, s, spec, env, true, template_image.is_some(), &snames_before(&spec.steps, i));
        }
        for (i, s) in spec.sidecars.iter().enumerate() {
            let f = format!("{base}.sidecars[{i}]");
            self.container(ctx, &f, s, spec, env, false, template_image.is_some(), &BTreeSet::new());
        }
        if let Some(t) = &spec.step_template {
            self.strings_in_container(ctx, &format!("{base}.stepTemplate"), t, spec, env, &BTreeSet::new());
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn container(
        &mut self,
        ctx: &Ctx,
        f: &str,
        s: &Step,
        spec: &TaskSpec,
        env: &TaskEnv,
        is_step: bool,
        template_image: bool,
        earlier: &BTreeSet<String>,
    ) {
        if let Some(r) = &s.ref_ {
            if s.image.is_some() {
                self.err(ctx, &format!("{f}.image"), "image cannot be used with Ref");
            }
            for (field, set) in [
                ("command", s.command.is_some()),
                ("args", s.args.is_some()),
                ("script", s.script.is_some()),
                ("env", !s.env.is_empty()),
                ("workingDir", s.working_dir.is_some()),
            ] {
                if set {
                    self.err(ctx, &format!("{f}.{field}"), format!("{field} cannot be used with Ref"));
                }
            }
            match &r.name {
                Some(n) if r.resolver.is_none() => {
                    if self.cat.step_action(n).is_none() && !self.cat.broken.contains(&(ObjKind::StepAction, n.clone())) {
                        let names = self.cat.step_actions.iter().map(|a| a.name.as_str());
                        let hint = did_you_mean(n, names);
                        self.err(ctx, &format!("{f}.ref.name"), format!("unknown StepAction {n:?}{hint}"));
                    }
                }
                _ if r.resolver.is_some() => {
                    self.err(ctx, &format!("{f}.ref.resolver"), format!("unsupported: remote resolution ({:?} resolver) of StepActions is not supported locally; define the StepAction in the repository", r.resolver.as_deref().unwrap_or("")))
                }
                _ => self.err(ctx, &format!("{f}.ref"), "missing field(s): ref.name"),
            }
        } else {
            if !s.params.is_empty() && is_step {
                self.err(ctx, &format!("{f}.params"), "params cannot be used without Ref");
            }
            if s.image.is_none() && !template_image {
                self.err(ctx, f, "missing field(s): image");
            }
            if s.script.is_some() && s.command.is_some() {
                self.err(ctx, &format!("{f}.script"), "script cannot be used with command");
            }
        }
        if let Some(oe) = &s.on_error {
            if !matches!(oe.as_str(), "continue" | "stopAndFail") && !oe.contains("$(") {
                self.err(
                    ctx,
                    &format!("{f}.onError"),
                    "Task step onError must be either \"continue\" or \"stopAndFail\"",
                );
            }
        }
        self.duration(ctx, &format!("{f}.timeout"), &s.timeout);
        for (i, m) in s.volume_mounts.iter().enumerate() {
            if m.mount_path.starts_with("/tekton/")
                && m.mount_path != "/tekton/home"
                && !m.mount_path.starts_with("/tekton/home/")
            {
                self.err(
                    ctx,
                    &format!("{f}.volumeMounts[{i}].mountPath"),
                    format!("volumeMount cannot be mounted under /tekton/ ({})", m.mount_path),
                );
            }
        }
        for (i, w) in s.when.iter().enumerate() {
            self.when_expr(ctx, &format!("{f}.when[{i}]"), w);
        }
        for (i, w) in s.workspaces.iter().enumerate() {
            if !spec.workspaces.iter().any(|d| d.name == w.name) {
                self.err(ctx, &format!("{f}.workspaces[{i}].name"), format!("undefined workspace {:?}", w.name));
            }
        }
        self.strings_in_container(ctx, f, s, spec, env, earlier);
    }

    fn strings_in_container(
        &mut self,
        ctx: &Ctx,
        f: &str,
        s: &Step,
        spec: &TaskSpec,
        env: &TaskEnv,
        earlier: &BTreeSet<String>,
    ) {
        if let Some(sc) = &s.script {
            self.task_refs(ctx, &format!("{f}.script"), sc, FieldKind::Script, spec, env, earlier);
        }
        for (name, list) in [("command", &s.command), ("args", &s.args)] {
            for (i, a) in list.iter().flatten().enumerate() {
                self.task_refs(ctx, &format!("{f}.{name}[{i}]"), a, FieldKind::ListElem, spec, env, earlier);
            }
        }
        for (i, e) in s.env.iter().enumerate() {
            if let Some(v) = &e.value {
                self.task_refs(ctx, &format!("{f}.env[{i}].value"), v, FieldKind::Other, spec, env, earlier);
            }
        }
        for (name, v) in [("image", &s.image), ("workingDir", &s.working_dir)] {
            if let Some(v) = v {
                self.task_refs(ctx, &format!("{f}.{name}"), v, FieldKind::Other, spec, env, earlier);
            }
        }
    }

    /// Check `$(...)` references inside a Task's step field.
    #[allow(clippy::too_many_arguments)]
    fn task_refs(
        &mut self,
        ctx: &Ctx,
        field: &str,
        text: &str,
        kind: FieldKind,
        spec: &TaskSpec,
        env: &TaskEnv,
        earlier: &BTreeSet<String>,
    ) {
        for r in find_refs(text) {
            let Some(segs) = r.segs() else { continue };
            let isolated = kind == FieldKind::ListElem && r.start == 0 && r.end == text.len();
            let Seg::Name(head) = &segs[0] else { continue };
            match head.as_str() {
                "params" => {
                    let Some(Seg::Name(name)) = segs.get(1) else {
                        continue;
                    };
                    let ty = spec
                        .params
                        .iter()
                        .find(|p| &p.name == name)
                        .map(|p| (p.param_type(), p.properties.clone()))
                        .or_else(|| env.parent_params.get(name).map(|t| (*t, None)));
                    match ty {
                        None if env.embedded => {}
                        None => {
                            let hint = did_you_mean(name, spec.params.iter().map(|p| p.name.as_str()));
                            self.err(ctx, field, format!("non-existent variable in {:?}: param {name:?} is not declared{hint}", r.expr));
                        }
                        Some((ParamType::String, _)) => {
                            if segs.len() > 2 {
                                self.err(ctx, field, format!("invalid reference $({}): param {name:?} is a string and cannot be indexed", r.expr));
                            }
                        }
                        Some((ParamType::Array, _)) => {
                            let whole = segs.len() == 2 || matches!(segs.get(2), Some(Seg::Star));
                            if whole && !isolated {
                                self.err(ctx, field, format!("variable type invalid in {:?}: array param {name:?} can only be used whole as an isolated element of command or args; use $(params.{name}[i]) for one element", r.expr));
                            }
                        }
                        Some((ParamType::Object, props)) => match segs.get(2) {
                            Some(Seg::Name(k)) => {
                                if let Some(props) = props {
                                    if !props.contains_key(k) {
                                        let hint = did_you_mean(k, props.keys().map(String::as_str));
                                        self.err(ctx, field, format!("non-existent variable in {:?}: object param {name:?} has no key {k:?}{hint}", r.expr));
                                    }
                                }
                            }
                            _ => self.err(ctx, field, format!("variable type invalid in {:?}: object param {name:?} can only be used by key, as $(params.{name}.KEY)", r.expr)),
                        },
                    }
                }
                "results" => {
                    if let Some(Seg::Name(name)) = segs.get(1) {
                        if !spec.results.iter().any(|x| &x.name == name) {
                            let hint = did_you_mean(name, spec.results.iter().map(|x| x.name.as_str()));
                            self.err(
                                ctx,
                                field,
                                format!(
                                    "non-existent variable in {:?}: result {name:?} is not declared in results{hint}",
                                    r.expr
                                ),
                            );
                        }
                    }
                }
                "workspaces" => {
                    if let Some(Seg::Name(name)) = segs.get(1) {
                        if !env.embedded && !spec.workspaces.iter().any(|w| &w.name == name) {
                            let hint = did_you_mean(name, spec.workspaces.iter().map(|w| w.name.as_str()));
                            self.err(
                                ctx,
                                field,
                                format!(
                                    "non-existent variable in {:?}: workspace {name:?} is not declared{hint}",
                                    r.expr
                                ),
                            );
                        }
                    }
                }
                "context" => {
                    let ok = match (segs.get(1), segs.get(2)) {
                        (Some(Seg::Name(a)), Some(Seg::Name(b))) => match a.as_str() {
                            "task" => matches!(b.as_str(), "name" | "retry-count"),
                            "taskRun" => matches!(b.as_str(), "name" | "namespace" | "uid"),
                            _ => true,
                        },
                        _ => true,
                    };
                    if !ok {
                        self.err(ctx, field, format!("non-existent variable in {:?}", r.expr));
                    }
                }
                "artifacts" => {
                    self.err(ctx, field, format!("unsupported: artifacts (alpha, feature flag enable-artifacts) are not supported by tenon: $({})", r.expr));
                }
                "step" if matches!(segs.get(1), Some(Seg::Name(n)) if n == "artifacts") => {
                    self.err(ctx, field, format!("unsupported: artifacts (alpha, feature flag enable-artifacts) are not supported by tenon: $({})", r.expr));
                }
                "steps" => {
                    if kind == FieldKind::Script && segs.iter().any(|s| s == &Seg::Name("results".into())) {
                        self.err(ctx, field, format!("stepResult substitutions are only allowed in env, command and args. Found usage in script: $({})", r.expr));
                    } else if let Some(Seg::Name(sname)) = segs.get(1) {
                        if segs.get(2) == Some(&Seg::Name("results".into())) && !earlier.contains(sname) {
                            self.err(
                                ctx,
                                field,
                                format!(
                                    "invalid reference $({}): step {sname:?} does not come before this step",
                                    r.expr
                                ),
                            );
                        }
                    }
                }
                _ => {}
            }
        }
    }

    fn step_action(&mut self, ctx: &Ctx, spec: &StepActionSpec) {
        self.param_specs(ctx, "spec.params", &spec.params);
        if spec.image.is_none() {
            self.err(ctx, "spec", "missing field(s): image");
        }
        if spec.script.is_some() && spec.command.is_some() {
            self.err(ctx, "spec.script", "script cannot be used with command");
        }
    }

    fn when_expr(&mut self, ctx: &Ctx, f: &str, w: &WhenExpression) {
        if let Some(cel) = &w.cel {
            if w.operator.is_some() || w.input.is_some() || w.values.is_some() {
                self.err(ctx, f, "cel and input+operator+values cannot be set in one WhenExpression");
            } else if cel.trim().is_empty() {
                self.err(ctx, &format!("{f}.cel"), "invalid cel expression: empty");
            }
            return;
        }
        match w.operator.as_deref() {
            Some("in" | "notin") => {}
            Some(op) => self.err(
                ctx,
                &format!("{f}.operator"),
                format!("operator {op:?} is not recognized. valid operators: in,notin"),
            ),
            None => self.err(ctx, f, "missing field(s): operator"),
        }
        if w.values.as_ref().is_none_or(|v| v.is_empty()) {
            self.err(ctx, &format!("{f}.values"), "expecting non-empty values field");
        }
    }

    // ---------------------------------------------------------------- pipelines

    /// The task spec a pipeline task runs, if it can be found.
    fn resolve_task<'b>(&'b self, pt: &'b PipelineTask) -> Option<&'b TaskSpec> {
        if let Some(ts) = &pt.task_spec {
            return Some(&ts.task);
        }
        let r = pt.task_ref.as_ref()?;
        self.cat.task(r.name.as_deref()?).map(|t| &t.spec)
    }

    fn pipeline_spec(&mut self, ctx: &Ctx, base: &str, spec: &PipelineSpec) {
        self.param_specs(ctx, &format!("{base}.params"), &spec.params);
        if spec.tasks.is_empty() {
            if spec.finally.is_empty() {
                self.missing_list(ctx, base, "tasks");
            } else {
                self.err(
                    ctx,
                    &format!("{base}.finally"),
                    format!("spec.tasks is empty but spec.finally has {} tasks", spec.finally.len()),
                );
            }
        }
        let pparams: BTreeMap<String, ParamType> =
            spec.params.iter().map(|p| (p.name.clone(), p.param_type())).collect();
        let pworkspaces: BTreeSet<&str> = spec.workspaces.iter().map(|w| w.name.as_str()).collect();
        let mut wseen = BTreeSet::new();
        for (i, w) in spec.workspaces.iter().enumerate() {
            if !wseen.insert(w.name.as_str()) {
                self.err(
                    ctx,
                    &format!("{base}.workspaces[{i}].name"),
                    format!("workspace name {:?} must be unique", w.name),
                );
            }
        }
        let dag_names: BTreeSet<&str> = spec.tasks.iter().map(|t| t.name.as_str()).collect();
        let finally_names: BTreeSet<&str> = spec.finally.iter().map(|t| t.name.as_str()).collect();
        let mut seen = BTreeSet::new();
        for (list, is_finally) in [(&spec.tasks, false), (&spec.finally, true)] {
            let lname = if is_finally { "finally" } else { "tasks" };
            for (i, pt) in list.iter().enumerate() {
                let f = format!("{base}.{lname}[{i}]");
                if pt.name.is_empty() {
                    self.err(ctx, &f, "missing field(s): name");
                } else if !dns_label_ok(&pt.name) {
                    self.err(ctx, &format!("{f}.name"), format!("invalid value {:?}: a pipeline task name must be a DNS-1123 label (lowercase alphanumerics and '-', at most 63)", pt.name));
                }
                if !pt.name.is_empty() && !seen.insert(pt.name.clone()) {
                    self.err(
                        ctx,
                        &format!("{f}.name"),
                        format!(
                            "expected exactly one, got both: pipeline task name {:?} is used more than once",
                            pt.name
                        ),
                    );
                }
                if is_finally && !pt.run_after.is_empty() {
                    self.err(
                        ctx,
                        &format!("{f}.runAfter"),
                        format!(
                            "no runAfter allowed under spec.finally, final task {} has runAfter specified",
                            pt.name
                        ),
                    );
                }
                self.pipeline_task(ctx, &f, pt, spec, &pparams, &pworkspaces, &dag_names, &finally_names, is_finally);
            }
        }
        // DAG: unknown runAfter, cycles
        let (_, errs) = Dag::build(&spec.tasks);
        for e in errs {
            match e {
                DagError::Unknown { task, run_after_index, missing } => {
                    let idx = spec.tasks.iter().position(|t| t.name == task).unwrap_or(0);
                    let f = match run_after_index {
                        Some(j) => format!("{base}.tasks[{idx}].runAfter[{j}]"),
                        None => format!("{base}.tasks[{idx}]"),
                    };
                    let hint = did_you_mean(&missing, dag_names.iter().copied());
                    let extra = if finally_names.contains(missing.as_str()) {
                        " (finally tasks cannot be referenced by tasks)"
                    } else {
                        ""
                    };
                    self.err(ctx, &f, format!("task {task:?} depends on {missing:?} but {missing:?} wasn't present in Pipeline{hint}{extra}"));
                }
                DagError::Cycle { path } => {
                    let idx = spec.tasks.iter().position(|t| Some(&t.name) == path.first()).unwrap_or(0);
                    self.err(ctx, &format!("{base}.tasks[{idx}]"), format!("cycle detected: {}", path.join(" -> ")));
                }
            }
        }
        // pipeline results
        for (i, r) in spec.results.iter().enumerate() {
            let f = format!("{base}.results[{i}].value");
            let Some(v) = &r.value else {
                self.err(ctx, &format!("{base}.results[{i}]"), "missing field(s): value");
                continue;
            };
            let mut any = false;
            for t in v.texts() {
                for rf in find_refs(t) {
                    let Some(segs) = rf.segs() else { continue };
                    match segs.as_slice() {
                        [Seg::Name(h), Seg::Name(task), Seg::Name(res), Seg::Name(rname), ..]
                            if (h == "tasks" || h == "finally") && res == "results" =>
                        {
                            any = true;
                            let names = if h == "tasks" { &dag_names } else { &finally_names };
                            if !names.contains(task.as_str()) {
                                let hint = did_you_mean(task, names.iter().copied());
                                self.err(
                                    ctx,
                                    &f,
                                    format!("referencing a nonexistent task {task:?} in $({}){hint}", rf.expr),
                                );
                            } else {
                                let list = if h == "tasks" { &spec.tasks } else { &spec.finally };
                                if let Some(ts) =
                                    list.iter().find(|t| &t.name == task).and_then(|pt| self.resolve_task(pt))
                                {
                                    if !ts.results.iter().any(|x| &x.name == rname) {
                                        let hint = did_you_mean(rname, ts.results.iter().map(|x| x.name.as_str()));
                                        self.err(ctx, &f, format!("task {task:?} declares no result {rname:?}{hint}"));
                                    }
                                }
                            }
                        }
                        _ => self.err(
                            ctx,
                            &f,
                            format!("pipeline results may only reference task results, found $({})", rf.expr),
                        ),
                    }
                }
            }
            if !any {
                self.err(
                    ctx,
                    &f,
                    "expected pipeline results to be task result expressions but no expressions were found",
                );
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn pipeline_task(
        &mut self,
        ctx: &Ctx,
        f: &str,
        pt: &PipelineTask,
        spec: &PipelineSpec,
        pparams: &BTreeMap<String, ParamType>,
        pworkspaces: &BTreeSet<&str>,
        dag_names: &BTreeSet<&str>,
        finally_names: &BTreeSet<&str>,
        is_finally: bool,
    ) {
        // what runs
        let task_spec: Option<&TaskSpec> = match (&pt.task_ref, &pt.task_spec, &pt.pipeline_ref, &pt.pipeline_spec) {
            (Some(_), Some(_), _, _) => {
                self.err(ctx, f, "expected exactly one, got both: taskRef, taskSpec");
                None
            }
            (None, None, None, None) => {
                self.err(ctx, f, "expected exactly one, got neither: taskRef, taskSpec");
                None
            }
            (None, None, _, _) => {
                self.err(
                    ctx,
                    &format!("{f}.pipelineRef"),
                    "unsupported: pipelines in pipelines (alpha) are not supported by tenon",
                );
                None
            }
            (Some(r), None, _, _) => self.task_ref(ctx, &format!("{f}.taskRef"), r),
            (None, Some(ts), _, _) => {
                if ts.api_version.is_some() || ts.kind.is_some() || ts.spec.is_some() {
                    self.err(
                        ctx,
                        &format!("{f}.taskSpec"),
                        "unsupported: custom task specs (apiVersion/kind/spec) are not supported by tenon",
                    );
                    None
                } else {
                    let env = TaskEnv { embedded: true, parent_params: pparams.clone() };
                    self.task_spec(ctx, &format!("{f}.taskSpec"), &ts.task, &env);
                    Some(&ts.task)
                }
            }
        };
        // params: refs
        let mut supplied = pt.params.clone();
        // matrix params and include params are supplied per combination
        let matrix_names: Vec<String> = pt
            .matrix
            .iter()
            .flat_map(|m| {
                m.params
                    .iter()
                    .map(|p| p.name.clone())
                    .chain(m.include.iter().flat_map(|i| i.params.iter().map(|p| p.name.clone())))
            })
            .collect();
        for (i, p) in pt.params.iter().enumerate() {
            for (j, s) in p.value.texts().into_iter().enumerate() {
                let field = match &p.value {
                    ParamValue::Str(_) => format!("{f}.params[{i}].value"),
                    _ => format!("{f}.params[{i}].value[{j}]"),
                };
                let list_ctx = matches!(p.value, ParamValue::Array(_)) || is_isolated_ref(s);
                self.pipeline_refs(
                    ctx,
                    &field,
                    s,
                    list_ctx,
                    spec,
                    pparams,
                    dag_names,
                    finally_names,
                    is_finally,
                    &pt.name,
                );
            }
        }
        if let Some(ts) = task_spec {
            if pt.task_ref.is_some() {
                let also: Vec<&str> = matrix_names.iter().map(String::as_str).collect();
                self.supplied_params(
                    ctx,
                    &format!("{f}.params"),
                    &ts.params,
                    &supplied,
                    &also,
                    &format!("pipeline task {:?}:", pt.name),
                );
            } else {
                // embedded specs may take params from the pipeline (propagation)
                supplied.extend(spec.params.iter().filter(|pp| !pt.params.iter().any(|p| p.name == pp.name)).map(
                    |pp| Param {
                        name: pp.name.clone(),
                        value: pp.default.clone().unwrap_or(ParamValue::Str("$(params.x)".into())),
                    },
                ));
                let also: Vec<&str> = matrix_names
                    .iter()
                    .map(String::as_str)
                    .chain(spec.params.iter().map(|p| p.name.as_str()))
                    .collect();
                let mine: Vec<Param> = pt.params.clone();
                self.supplied_params(
                    ctx,
                    &format!("{f}.params"),
                    &ts.params,
                    &mine,
                    &also,
                    &format!("pipeline task {:?}:", pt.name),
                );
            }
            // workspaces
            for (i, b) in pt.workspaces.iter().enumerate() {
                if let Some(sp) = &b.sub_path {
                    self.sub_path(ctx, &format!("{f}.workspaces[{i}].subPath"), sp);
                }
                let target = b.workspace.as_deref().unwrap_or(&b.name);
                if !pworkspaces.contains(target) {
                    let hint = did_you_mean(target, pworkspaces.iter().copied());
                    self.err(ctx, &format!("{f}.workspaces[{i}].workspace"), format!("pipeline task {:?} expects workspace {target:?} but the Pipeline does not declare it{hint}", pt.name));
                }
                if pt.task_ref.is_some() && !ts.workspaces.iter().any(|w| w.name == b.name) {
                    let hint = did_you_mean(&b.name, ts.workspaces.iter().map(|w| w.name.as_str()));
                    self.err(
                        ctx,
                        &format!("{f}.workspaces[{i}].name"),
                        format!("workspace binding {:?} does not match any declared workspace{hint}", b.name),
                    );
                }
            }
            for w in &ts.workspaces {
                if !w.optional
                    && !pt.workspaces.iter().any(|b| b.name == w.name)
                    && !(pt.task_spec.is_some() && pworkspaces.contains(w.name.as_str()))
                {
                    self.err(
                        ctx,
                        &format!("{f}.workspaces"),
                        format!("declared workspace {:?} is required but has not been bound", w.name),
                    );
                }
            }
        }
        // matrix
        if let Some(m) = &pt.matrix {
            let mut count: Option<usize> = Some(1);
            for (i, p) in m.params.iter().enumerate() {
                let pf = format!("{f}.matrix.params[{i}]");
                if pt.params.iter().any(|x| x.name == p.name) {
                    self.err(
                        ctx,
                        &pf,
                        format!("expected exactly one, got both: matrix[{}], params[{}]", p.name, p.name),
                    );
                }
                let texts: Vec<&String> = match &p.value {
                    ParamValue::Array(a) => {
                        count = count.map(|c| c * a.len());
                        a.iter().collect()
                    }
                    ParamValue::Str(s) if is_isolated_ref(s) => {
                        count = None;
                        vec![s]
                    }
                    other => {
                        self.err(
                            ctx,
                            &format!("{pf}.value"),
                            format!("matrix params must be arrays, {:?} is {}", p.name, other.type_name()),
                        );
                        vec![]
                    }
                };
                for s in texts {
                    self.pipeline_refs(
                        ctx,
                        &format!("{pf}.value"),
                        s,
                        true,
                        spec,
                        pparams,
                        dag_names,
                        finally_names,
                        is_finally,
                        &pt.name,
                    );
                }
            }
            if let Some(c) = count {
                if c > 256 {
                    self.err(ctx, &format!("{f}.matrix"), format!("expected 0 <= {c} <= 256: matrix"));
                }
            }
            for (i, inc) in m.include.iter().enumerate() {
                for (j, p) in inc.params.iter().enumerate() {
                    if !matches!(p.value, ParamValue::Str(_)) {
                        self.err(
                            ctx,
                            &format!("{f}.matrix.include[{i}].params[{j}].value"),
                            "matrix include params must be strings",
                        );
                    }
                }
            }
        }
        // when
        for (i, w) in pt.when.iter().enumerate() {
            let wf = format!("{f}.when[{i}]");
            self.when_expr(ctx, &wf, w);
            if let Some(inp) = &w.input {
                self.pipeline_refs(
                    ctx,
                    &format!("{wf}.input"),
                    inp,
                    false,
                    spec,
                    pparams,
                    dag_names,
                    finally_names,
                    is_finally,
                    &pt.name,
                );
            }
            for (j, v) in w.values.iter().flatten().enumerate() {
                self.pipeline_refs(
                    ctx,
                    &format!("{wf}.values[{j}]"),
                    v,
                    true,
                    spec,
                    pparams,
                    dag_names,
                    finally_names,
                    is_finally,
                    &pt.name,
                );
            }
        }
        // embedded task spec: pipeline-level refs (tasks.*, context.pipeline*)
        if let Some(ts) = &pt.task_spec {
            if let Ok(v) = serde_json::to_value(&ts.task.steps) {
                let mut strings = Vec::new();
                collect_strings(&v, &mut strings);
                for s in strings {
                    for r in find_refs(&s) {
                        if let Some(segs) = r.segs() {
                            if matches!(segs.first(), Some(Seg::Name(h)) if h == "tasks") {
                                self.pipeline_refs(
                                    ctx,
                                    &format!("{f}.taskSpec.steps"),
                                    &format!("$({})", r.expr),
                                    false,
                                    spec,
                                    pparams,
                                    dag_names,
                                    finally_names,
                                    is_finally,
                                    &pt.name,
                                );
                            }
                        }
                    }
                }
            }
        }
        // onError, retries, timeout
        if let Some(oe) = &pt.on_error {
            if !matches!(oe.as_str(), "continue" | "stopAndFail") {
                self.err(
                    ctx,
                    &format!("{f}.onError"),
                    "PipelineTask OnError must be either \"continue\" or \"stopAndFail\"",
                );
            } else if oe == "continue" && pt.retries > 0 {
                self.err(
                    ctx,
                    &format!("{f}.onError"),
                    "PipelineTask OnError cannot be set to \"continue\" when Retries is greater than 0",
                );
            }
        }
        self.duration(ctx, &format!("{f}.timeout"), &pt.timeout);
    }

    fn task_ref<'b>(&mut self, ctx: &Ctx, f: &str, r: &'b Ref) -> Option<&'b TaskSpec>
    where
        'a: 'b,
    {
        if r.api_version.is_some() && r.kind.is_some() {
            self.err(
                ctx,
                f,
                format!(
                    "unsupported: custom tasks ({}/{}) are not supported by tenon",
                    r.api_version.as_deref().unwrap_or(""),
                    r.kind.as_deref().unwrap_or("")
                ),
            );
            return None;
        }
        if let Some(res) = &r.resolver {
            self.err(ctx, &format!("{f}.resolver"), format!("unsupported: remote resolution ({res:?} resolver) is not supported yet; put the Task in the repository and reference it by name"));
            return None;
        }
        if r.bundle.is_some() {
            self.err(
                ctx,
                &format!("{f}.bundle"),
                "unsupported: OCI bundles are not supported; put the Task in the repository",
            );
            return None;
        }
        match r.kind.as_deref() {
            None => {}
            Some(k) if k.eq_ignore_ascii_case("Task") || k == "ClusterTask" => {}
            Some(k) => {
                self.err(ctx, &format!("{f}.kind"), format!("unsupported taskRef kind {k:?} (expected Task)"));
                return None;
            }
        }
        let Some(name) = &r.name else {
            self.err(ctx, f, "missing field(s): taskRef.name");
            return None;
        };
        let cat: &'a Catalog = self.cat;
        match cat.task(name) {
            Some(t) => Some(&t.spec),
            None if cat.broken.contains(&(ObjKind::Task, name.clone())) => None,
            None => {
                let hint = did_you_mean(name, cat.tasks.iter().map(|t| t.name.as_str()));
                self.err(ctx, &format!("{f}.name"), format!("unknown Task {name:?}{hint}"));
                None
            }
        }
    }

    /// Check `$(...)` references in a pipeline-level field.
    #[allow(clippy::too_many_arguments)]
    fn pipeline_refs(
        &mut self,
        ctx: &Ctx,
        field: &str,
        text: &str,
        list_ctx: bool,
        spec: &PipelineSpec,
        pparams: &BTreeMap<String, ParamType>,
        dag_names: &BTreeSet<&str>,
        finally_names: &BTreeSet<&str>,
        is_finally: bool,
        this_task: &str,
    ) {
        for r in find_refs(text) {
            let Some(segs) = r.segs() else { continue };
            let isolated = list_ctx && r.start == 0 && r.end == text.len();
            let Seg::Name(head) = &segs[0] else { continue };
            match head.as_str() {
                "params" => {
                    let Some(Seg::Name(name)) = segs.get(1) else {
                        continue;
                    };
                    match pparams.get(name) {
                        None => {
                            let hint = did_you_mean(name, pparams.keys().map(String::as_str));
                            self.err(
                                ctx,
                                field,
                                format!(
                                    "non-existent variable in {:?}: pipeline param {name:?} is not declared{hint}",
                                    r.expr
                                ),
                            );
                        }
                        Some(ParamType::Array) | Some(ParamType::Object) => {
                            let whole = segs.len() == 2 || matches!(segs.get(2), Some(Seg::Star));
                            if whole && !isolated {
                                self.err(ctx, field, format!("variable type invalid in {:?}: param {name:?} is not a string; use it whole only as an isolated value", r.expr));
                            }
                        }
                        Some(ParamType::String) => {}
                    }
                }
                "tasks" => match segs.as_slice() {
                    [_, Seg::Name(s)] if s == "status" => {
                        if !is_finally {
                            self.err(ctx, field, "pipeline tasks can not refer to execution status of any other pipeline task or aggregate status of tasks");
                        }
                    }
                    [_, Seg::Name(t), Seg::Name(k)] if k == "status" || k == "reason" => {
                        if !is_finally {
                            self.err(ctx, field, "pipeline tasks can not refer to execution status of any other pipeline task or aggregate status of tasks");
                        } else if !dag_names.contains(t.as_str()) {
                            let hint = did_you_mean(t, dag_names.iter().copied());
                            self.err(ctx, field, format!("$({}) refers to unknown pipeline task {t:?}{hint}", r.expr));
                        }
                    }
                    [_, Seg::Name(t), Seg::Name(k), Seg::Name(rname), rest @ ..] if k == "results" => {
                        if t == this_task {
                            self.err(
                                ctx,
                                field,
                                format!("pipeline task {t:?} cannot consume its own result in $({})", r.expr),
                            );
                            continue;
                        }
                        if finally_names.contains(t.as_str()) {
                            self.err(ctx, field, format!("invalid task result reference, {} task has task result reference from a final task {t}", if is_finally { "final" } else { "pipeline" }));
                            continue;
                        }
                        let Some(ptask) = spec.tasks.iter().find(|x| &x.name == t) else {
                            let hint = did_you_mean(t, dag_names.iter().copied());
                            self.err(
                                ctx,
                                field,
                                format!(
                                    "invalid result reference $({}): pipeline task {t:?} does not exist{hint}",
                                    r.expr
                                ),
                            );
                            continue;
                        };
                        if let Some(ts) = self.resolve_task(ptask) {
                            match ts.results.iter().find(|x| &x.name == rname) {
                                None => {
                                    let hint = did_you_mean(rname, ts.results.iter().map(|x| x.name.as_str()));
                                    self.err(ctx, field, format!("invalid result reference $({}): task {t:?} declares no result {rname:?}{hint}", r.expr));
                                }
                                Some(res) => {
                                    let whole = rest.is_empty() || matches!(rest.first(), Some(Seg::Star));
                                    if ptask.matrix.is_some() && !matches!(rest.first(), Some(Seg::Star)) {
                                        self.err(ctx, field, format!("A matrixed pipelineTask can only be consumed in aggregate using [*] notation, but is currently set to $({})", r.expr));
                                    } else if res.result_type() != ParamType::String && whole && !isolated {
                                        self.err(ctx, field, format!("variable type invalid in {:?}: result {rname:?} is {}; use it whole only as an isolated value", r.expr, res.result_type().as_str()));
                                    }
                                }
                            }
                        }
                    }
                    _ => {}
                },
                "context" => {
                    let ok = match (segs.get(1), segs.get(2)) {
                        (Some(Seg::Name(a)), Some(Seg::Name(b))) => match a.as_str() {
                            "pipelineRun" => matches!(b.as_str(), "name" | "namespace" | "uid"),
                            "pipeline" => b == "name",
                            "pipelineTask" => b == "retries",
                            _ => true,
                        },
                        _ => true,
                    };
                    if !ok {
                        self.err(ctx, field, format!("non-existent variable in {:?}", r.expr));
                    }
                }
                _ => {}
            }
        }
    }

    // ---------------------------------------------------------------- runs

    fn pipeline_run(&mut self, pr: &Obj<PipelineRunSpec>) {
        let ctx = self.ctx(pr);
        let s = &pr.spec;
        let pspec: Option<PipelineSpec> = match (&s.pipeline_ref, &s.pipeline_spec) {
            (Some(_), Some(_)) => {
                self.err(&ctx, "spec", "expected exactly one, got both: pipelineRef, pipelineSpec");
                None
            }
            (None, None) => {
                self.err(&ctx, "spec", "expected exactly one, got neither: pipelineRef, pipelineSpec");
                None
            }
            (None, Some(ps)) => {
                let mut ps = ps.clone();
                super::propagate_run_into_spec(&mut ps, s);
                self.pipeline_spec(&ctx, "spec.pipelineSpec", &ps);
                self.pipeline_outputs(&ctx, "spec.pipelineSpec", &pr.meta, &ps, true);
                Some(ps)
            }
            (Some(r), None) => {
                if let Some(res) = &r.resolver {
                    self.err(&ctx, "spec.pipelineRef.resolver", format!("unsupported: remote resolution ({res:?} resolver) is not supported yet; put the Pipeline in the repository and reference it by name"));
                    None
                } else if let Some(name) = &r.name {
                    let cat: &Catalog = self.cat;
                    match cat.pipeline(name) {
                        Some(p) => {
                            self.pipeline_outputs(&ctx, "spec", &pr.meta, &p.spec, false);
                            Some(p.spec.clone())
                        }
                        None if cat.broken.contains(&(ObjKind::Pipeline, name.clone())) => None,
                        None => {
                            let hint = did_you_mean(name, cat.pipelines.iter().map(|p| p.name.as_str()));
                            self.err(&ctx, "spec.pipelineRef.name", format!("unknown Pipeline {name:?}{hint}"));
                            None
                        }
                    }
                } else {
                    self.err(&ctx, "spec.pipelineRef", "missing field(s): pipelineRef.name");
                    None
                }
            }
        };
        for (i, p) in s.params.iter().enumerate() {
            for v in p.value.texts() {
                for r in find_refs(v) {
                    if r.expr.starts_with("tasks.") {
                        self.err(
                            &ctx,
                            &format!("spec.params[{i}].value"),
                            "result references are not allowed in PipelineRun param values",
                        );
                    }
                }
            }
        }
        if let Some(ps) = pspec {
            self.supplied_params(&ctx, "spec.params", &ps.params, &s.params, &[], "pipelineRun");
            let bound: BTreeSet<&str> = s.workspaces.iter().map(|w| w.name.as_str()).collect();
            for w in &ps.workspaces {
                if !w.optional && !bound.contains(w.name.as_str()) {
                    self.err(
                        &ctx,
                        "spec.workspaces",
                        format!("pipeline requires workspace with name {:?} be provided by pipelinerun", w.name),
                    );
                }
            }
            for (i, b) in s.workspaces.iter().enumerate() {
                if !ps.workspaces.iter().any(|w| w.name == b.name) {
                    let hint = did_you_mean(&b.name, ps.workspaces.iter().map(|w| w.name.as_str()));
                    self.err(
                        &ctx,
                        &format!("spec.workspaces[{i}].name"),
                        format!(
                            "workspace binding {:?} does not match any workspace declared by the Pipeline{hint}",
                            b.name
                        ),
                    );
                }
            }
            for (i, t) in s.task_run_specs.iter().enumerate() {
                if !ps.tasks.iter().chain(ps.finally.iter()).any(|x| x.name == t.pipeline_task_name) {
                    self.err(
                        &ctx,
                        &format!("spec.taskRunSpecs[{i}].pipelineTaskName"),
                        format!("taskRunSpecs names unknown pipeline task {:?}", t.pipeline_task_name),
                    );
                }
            }
        }
        self.bindings(&ctx, &s.workspaces);
        self.repo_annotation(&ctx, &pr.meta, &s.workspaces);
        self.timeouts(&ctx, s);
    }

    fn task_run(&mut self, tr: &Obj<TaskRunSpec>) {
        let ctx = self.ctx(tr);
        let s = &tr.spec;
        let tspec: Option<&TaskSpec> = match (&s.task_ref, &s.task_spec) {
            (Some(_), Some(_)) => {
                self.err(&ctx, "spec", "expected exactly one, got both: taskRef, taskSpec");
                None
            }
            (None, None) => {
                self.err(&ctx, "spec", "expected exactly one, got neither: taskRef, taskSpec");
                None
            }
            (None, Some(ts)) => {
                let env = TaskEnv {
                    embedded: true,
                    parent_params: s.params.iter().map(|p| (p.name.clone(), value_type(&p.value))).collect(),
                };
                self.task_spec(&ctx, "spec.taskSpec", ts, &env);
                Some(ts)
            }
            (Some(r), None) => self.task_ref(&ctx, "spec.taskRef", r),
        };
        if let Some(ts) = tspec {
            let ws: BTreeSet<&str> = ts.workspaces.iter().map(|w| w.name.as_str()).collect();
            let ws: BTreeSet<&str> = ws.into_iter().chain(s.workspaces.iter().map(|b| b.name.as_str())).collect();
            self.outputs_annotation(&ctx, "metadata.annotations", &tr.meta.annotations, OUTPUTS_ANNOTATION, Some(&ws));
            self.supplied_params(&ctx, "spec.params", &ts.params, &s.params, &[], "taskRun");
            for w in &ts.workspaces {
                if !w.optional && !s.workspaces.iter().any(|b| b.name == w.name) {
                    self.err(
                        &ctx,
                        "spec.workspaces",
                        format!("declared workspace {:?} is required but has not been bound (a cluster may bind it through its default-task-run-workspace-binding config; tenon has no such default: bind it, e.g. with emptyDir: {{}})", w.name),
                    );
                }
            }
            if s.task_ref.is_some() {
                for (i, b) in s.workspaces.iter().enumerate() {
                    if !ts.workspaces.iter().any(|w| w.name == b.name) {
                        self.err(
                            &ctx,
                            &format!("spec.workspaces[{i}].name"),
                            format!("workspace binding {:?} does not match any declared workspace", b.name),
                        );
                    }
                }
            }
        }
        self.duration(&ctx, "spec.timeout", &s.timeout);
        self.bindings(&ctx, &s.workspaces);
        self.repo_annotation(&ctx, &tr.meta, &s.workspaces);
    }

    fn bindings(&mut self, ctx: &Ctx, ws: &[WorkspaceBinding]) {
        let mut seen = BTreeSet::new();
        for (i, b) in ws.iter().enumerate() {
            let f = format!("spec.workspaces[{i}]");
            if !seen.insert(b.name.as_str()) {
                self.err(ctx, &format!("{f}.name"), format!("workspace binding {:?} appears more than once", b.name));
            }
            let given: Vec<&str> = [
                ("emptyDir", b.empty_dir.is_some()),
                ("persistentVolumeClaim", b.persistent_volume_claim.is_some()),
                ("volumeClaimTemplate", b.volume_claim_template.is_some()),
                ("configMap", b.config_map.is_some()),
                ("secret", b.secret.is_some()),
                ("projected", b.projected.is_some()),
                ("csi", b.csi.is_some()),
            ]
            .into_iter()
            .filter(|(_, set)| *set)
            .map(|(n, _)| n)
            .collect();
            match given.len() {
                1 => {}
                0 => self.err(ctx, &f, "expected exactly one, got neither: emptyDir, persistentVolumeClaim, volumeClaimTemplate, configMap, secret, projected, csi"),
                _ => self.err(ctx, &f, format!("expected exactly one, got both: {}", given.join(", "))),
            }
            if let Some(sp) = &b.sub_path {
                self.sub_path(ctx, &format!("{f}.subPath"), sp);
            }
        }
    }

    /// `tenon.dev/outputs` (`key`) in `ann`: each entry `workspace:path` with the path inside
    /// the workspace, and (when known) a workspace the task has.
    fn outputs_annotation(
        &mut self,
        ctx: &Ctx,
        base: &str,
        ann: &BTreeMap<String, String>,
        key: &str,
        workspaces: Option<&BTreeSet<&str>>,
    ) {
        let Some(v) = ann.get(key) else { return };
        let field = format!("{base}[{key:?}]");
        for entry in super::annotations::entries(v) {
            match parse_output(&entry) {
                Err(why) => self.err(ctx, &field, why),
                Ok((w, _)) => {
                    if let Some(ws) = workspaces.filter(|ws| !ws.contains(w.as_str())) {
                        let hint = did_you_mean(&w, ws.iter().copied());
                        let why = super::annotations::output_workspace_unknown(&entry, &w, ws.iter().copied());
                        self.err(ctx, &field, format!("{why}{hint}"));
                    }
                }
            }
        }
    }

    /// `tenon.dev/publish` on a Task: each entry `RESULT=workspace:path` names a result the
    /// task declares and one of its `tenon.dev/outputs` entries.
    fn publish_annotation(&mut self, ctx: &Ctx, ann: &BTreeMap<String, String>, spec: &TaskSpec) {
        use super::annotations::{entries, parse_publish, PUBLISH_ANNOTATION};
        let Some(v) = ann.get(PUBLISH_ANNOTATION) else { return };
        let field = format!("metadata.annotations[{PUBLISH_ANNOTATION:?}]");
        let outputs: Vec<(String, String)> = ann
            .get(OUTPUTS_ANNOTATION)
            .map(|o| entries(o))
            .unwrap_or_default()
            .iter()
            .filter_map(|e| parse_output(e).ok())
            .collect();
        for entry in entries(v) {
            match parse_publish(&entry) {
                Err(why) => self.err(ctx, &field, why),
                Ok((r, w, p)) => {
                    if !spec.results.iter().any(|d| d.name == r) {
                        let hint = did_you_mean(&r, spec.results.iter().map(|d| d.name.as_str()));
                        self.err(
                            ctx,
                            &field,
                            format!("entry {entry:?} names result {r:?}, which the task does not declare{hint}"),
                        );
                    }
                    if !outputs.iter().any(|(ow, op)| ow == &w && op == &p) {
                        self.err(
                            ctx,
                            &field,
                            format!("entry {entry:?}: {w}:{p} is not one of the task's {OUTPUTS_ANNOTATION} (publish what the cache stores)"),
                        );
                    }
                }
            }
        }
    }

    /// Outputs declared for a pipeline's tasks: `tenon.dev/outputs.<task>` on `meta` (the
    /// Pipeline, or the PipelineRun) and, with `embedded`, on each embedded taskSpec.
    fn pipeline_outputs(&mut self, ctx: &Ctx, base: &str, meta: &ObjectMeta, spec: &PipelineSpec, embedded: bool) {
        let all: Vec<(String, &PipelineTask)> = spec
            .tasks
            .iter()
            .enumerate()
            .map(|(i, t)| (format!("{base}.tasks[{i}]"), t))
            .chain(spec.finally.iter().enumerate().map(|(i, t)| (format!("{base}.finally[{i}]"), t)))
            .collect();
        let cat: &Catalog = self.cat;
        let task_ws = |pt: &PipelineTask| -> Option<BTreeSet<String>> {
            let ts = match (&pt.task_spec, &pt.task_ref) {
                (Some(ts), _) => &ts.task,
                (None, Some(r)) => &cat.task(r.name.as_deref()?)?.spec,
                _ => return None,
            };
            let mut ws: BTreeSet<String> = ts.workspaces.iter().map(|w| w.name.clone()).collect();
            ws.extend(pt.workspaces.iter().map(|b| b.name.clone()));
            if pt.task_spec.is_some() {
                // embedded specs may use the pipeline's workspaces by name
                ws.extend(spec.workspaces.iter().map(|w| w.name.clone()));
            }
            Some(ws)
        };
        let prefix = format!("{OUTPUTS_ANNOTATION}.");
        for key in meta.annotations.keys().filter(|k| k.starts_with(&prefix)) {
            let name = &key[prefix.len()..];
            match all.iter().find(|(_, t)| t.name == name) {
                None => {
                    let hint = did_you_mean(name, all.iter().map(|(_, t)| t.name.as_str()));
                    self.err(
                        ctx,
                        &format!("metadata.annotations[{key:?}]"),
                        format!("names pipeline task {name:?}, which the pipeline does not have{hint}"),
                    );
                }
                Some((_, pt)) => {
                    let ws = task_ws(pt);
                    let ws: Option<BTreeSet<&str>> = ws.as_ref().map(|w| w.iter().map(String::as_str).collect());
                    self.outputs_annotation(ctx, "metadata.annotations", &meta.annotations, key, ws.as_ref());
                }
            }
        }
        if embedded {
            for (f, pt) in &all {
                let Some(ann) = pt.task_spec.as_ref().and_then(|t| t.metadata.as_ref()).map(|m| &m.annotations) else {
                    continue;
                };
                let ws = task_ws(pt);
                let ws: Option<BTreeSet<&str>> = ws.as_ref().map(|w| w.iter().map(String::as_str).collect());
                let base = format!("{f}.taskSpec.metadata.annotations");
                self.outputs_annotation(ctx, &base, ann, OUTPUTS_ANNOTATION, ws.as_ref());
            }
        }
    }

    fn repo_annotation(&mut self, ctx: &Ctx, meta: &ObjectMeta, ws: &[WorkspaceBinding]) {
        if let Some(v) = meta.annotations.get(REPO_WORKSPACE_ANNOTATION) {
            for name in v.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                if !ws.iter().any(|w| w.name == name) {
                    let hint = did_you_mean(name, ws.iter().map(|w| w.name.as_str()));
                    self.err(
                        ctx,
                        &format!("metadata.annotations[{REPO_WORKSPACE_ANNOTATION:?}]"),
                        format!("names workspace binding {name:?}, but the run binds no such workspace{hint}"),
                    );
                }
            }
        }
    }

    fn timeouts(&mut self, ctx: &Ctx, s: &PipelineRunSpec) {
        let Some(t) = &s.timeouts else {
            self.duration(ctx, "spec.timeout", &s.timeout);
            return;
        };
        let mut parsed = BTreeMap::new();
        for (name, v) in [("pipeline", &t.pipeline), ("tasks", &t.tasks), ("finally", &t.finally)] {
            if let Some(v) = v {
                match parse_duration(v) {
                    Some(d) => {
                        parsed.insert(name, d);
                    }
                    None => self.err(
                        ctx,
                        &format!("spec.timeouts.{name}"),
                        format!("invalid value: {v} should be >= 0 and a Go duration such as 90s, 5m, 1h30m"),
                    ),
                }
            }
        }
        let pipeline = parsed.get("pipeline").copied();
        let zero = std::time::Duration::ZERO;
        if pipeline == Some(zero) {
            return;
        }
        let limit = pipeline.unwrap_or(std::time::Duration::from_secs(3600));
        let lname = if pipeline.is_some() { "pipeline duration" } else { "default timeout duration" };
        for name in ["tasks", "finally"] {
            if let Some(d) = parsed.get(name) {
                if *d == zero {
                    self.err(
                        ctx,
                        &format!("spec.timeouts.{name}"),
                        format!(
                            "invalid value: 0s: timeouts.{name} may be 0 (no timeout) only when timeouts.pipeline is 0"
                        ),
                    );
                } else if *d > limit {
                    self.err(
                        ctx,
                        &format!("spec.timeouts.{name}"),
                        format!("invalid value: {} should be <= {lname}", super::format_duration(*d)),
                    );
                }
            }
        }
        if let (Some(a), Some(b)) = (parsed.get("tasks"), parsed.get("finally")) {
            if *a + *b > limit {
                self.err(
                    ctx,
                    "spec.timeouts",
                    format!(
                        "invalid value: {} + {} should be <= {lname}",
                        super::format_duration(*a),
                        super::format_duration(*b)
                    ),
                );
            }
        }
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
