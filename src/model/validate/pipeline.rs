//! Pipeline and pipeline-task validation (task references, result references, the DAG).

use super::*;

impl<'a> Validator<'a> {
    // ---------------------------------------------------------------- pipelines

    /// The task spec a pipeline task runs, if it can be found.
    pub(super) fn resolve_task<'b>(&'b self, pt: &'b PipelineTask) -> Option<&'b TaskSpec> {
        if let Some(ts) = &pt.task_spec {
            return Some(&ts.task);
        }
        let r = pt.task_ref.as_ref()?;
        self.cat.task(r.name.as_deref()?).map(|t| &t.spec)
    }

    /// Validate a pipeline spec: params, workspaces, every DAG and finally task, the DAG
    /// (unknown `runAfter`, cycles) and the pipeline results.
    pub(super) fn pipeline_spec(&mut self, ctx: &Ctx, base: &str, spec: &PipelineSpec) {
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
        let pipe = PipelineScope::new(spec);
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
        let mut seen = BTreeSet::new();
        for (list, is_finally) in [(&spec.tasks, false), (&spec.finally, true)] {
            let lname = if is_finally { "finally" } else { "tasks" };
            for (i, pt) in list.iter().enumerate() {
                let f = format!("{base}.{lname}[{i}]");
                self.pipeline_task_name(ctx, &f, pt, is_finally, &mut seen);
                let scope = PipelineTaskScope { pipe: &pipe, is_finally, this_task: &pt.name };
                self.pipeline_task(ctx, &f, pt, &scope);
            }
        }
        self.pipeline_dag(ctx, base, &pipe);
        self.pipeline_results(ctx, base, &pipe);
    }

    /// Check a pipeline task's name: present, a DNS-1123 label, unique across `tasks` and
    /// `finally` (`seen`), and no `runAfter` on a finally task.
    fn pipeline_task_name(
        &mut self,
        ctx: &Ctx,
        f: &str,
        pt: &PipelineTask,
        is_finally: bool,
        seen: &mut BTreeSet<String>,
    ) {
        if pt.name.is_empty() {
            self.err(ctx, f, "missing field(s): name");
        } else if !dns_label_ok(&pt.name) {
            self.err(ctx, &format!("{f}.name"), format!("invalid value {:?}: a pipeline task name must be a DNS-1123 label (lowercase alphanumerics and '-', at most 63)", pt.name));
        }
        if !pt.name.is_empty() && !seen.insert(pt.name.clone()) {
            self.err(
                ctx,
                &format!("{f}.name"),
                format!("expected exactly one, got both: pipeline task name {:?} is used more than once", pt.name),
            );
        }
        if is_finally && !pt.run_after.is_empty() {
            self.err(
                ctx,
                &format!("{f}.runAfter"),
                format!("no runAfter allowed under spec.finally, final task {} has runAfter specified", pt.name),
            );
        }
    }

    /// Check the DAG of `spec.tasks`: every `runAfter` names a DAG task, and there are no cycles.
    fn pipeline_dag(&mut self, ctx: &Ctx, base: &str, pipe: &PipelineScope) {
        let PipelineScope { spec, dag_names, finally_names, .. } = pipe;
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
    }

    /// Check the pipeline results: each has a value made only of task result references
    /// that name an existing task and a result it declares.
    fn pipeline_results(&mut self, ctx: &Ctx, base: &str, pipe: &PipelineScope) {
        let PipelineScope { spec, dag_names, finally_names, .. } = pipe;
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

    /// Validate one pipeline task: what it runs, its params, workspaces, matrix, `when`
    /// expressions, the references in an embedded spec, onError, retries and timeout.
    pub(super) fn pipeline_task(&mut self, ctx: &Ctx, f: &str, pt: &PipelineTask, scope: &PipelineTaskScope) {
        let task_spec = self.pipeline_task_runs(ctx, f, pt, &scope.pipe.pparams);
        self.pipeline_task_param_refs(ctx, f, pt, scope);
        if let Some(ts) = task_spec {
            self.pipeline_task_supplied_params(ctx, f, pt, ts, scope.pipe.spec);
            self.pipeline_task_workspaces(ctx, f, pt, ts, &scope.pipe.pworkspaces);
        }
        if let Some(m) = &pt.matrix {
            self.pipeline_task_matrix(ctx, f, pt, m, scope);
        }
        self.pipeline_task_when(ctx, f, pt, scope);
        self.embedded_spec_refs(ctx, f, pt, scope);
        self.pipeline_task_on_error(ctx, f, pt);
        self.duration(ctx, &format!("{f}.timeout"), &pt.timeout);
    }

    /// What a pipeline task runs: exactly one of `taskRef` and `taskSpec` (pipelines in
    /// pipelines and custom specs are unsupported). The task spec, if it can be found.
    fn pipeline_task_runs<'b>(
        &mut self,
        ctx: &Ctx,
        f: &str,
        pt: &'b PipelineTask,
        pparams: &BTreeMap<String, ParamType>,
    ) -> Option<&'b TaskSpec>
    where
        'a: 'b,
    {
        match (&pt.task_ref, &pt.task_spec, &pt.pipeline_ref, &pt.pipeline_spec) {
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
        }
    }

    /// Check the `$(...)` references in the values of a pipeline task's params.
    fn pipeline_task_param_refs(&mut self, ctx: &Ctx, f: &str, pt: &PipelineTask, scope: &PipelineTaskScope) {
        for (i, p) in pt.params.iter().enumerate() {
            for (j, s) in p.value.texts().into_iter().enumerate() {
                let field = match &p.value {
                    ParamValue::Str(_) => format!("{f}.params[{i}].value"),
                    _ => format!("{f}.params[{i}].value[{j}]"),
                };
                let list_ctx = matches!(p.value, ParamValue::Array(_)) || is_isolated_ref(s);
                self.pipeline_refs(ctx, &field, s, list_ctx, scope);
            }
        }
    }

    /// Check the params a pipeline task supplies against those its task declares. Matrix
    /// params count as supplied; an embedded spec may also take the pipeline's params
    /// (propagation).
    fn pipeline_task_supplied_params(
        &mut self,
        ctx: &Ctx,
        f: &str,
        pt: &PipelineTask,
        ts: &TaskSpec,
        spec: &PipelineSpec,
    ) {
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
        let mut also: Vec<&str> = matrix_names.iter().map(String::as_str).collect();
        if pt.task_ref.is_none() {
            // embedded specs may take params from the pipeline (propagation)
            also.extend(spec.params.iter().map(|p| p.name.as_str()));
        }
        self.supplied_params(
            ctx,
            &format!("{f}.params"),
            &ts.params,
            &pt.params,
            &also,
            &format!("pipeline task {:?}:", pt.name),
        );
    }

    /// Check a pipeline task's workspace bindings: each names a pipeline workspace (and,
    /// for a `taskRef`, a task workspace), and every required task workspace is bound.
    fn pipeline_task_workspaces(
        &mut self,
        ctx: &Ctx,
        f: &str,
        pt: &PipelineTask,
        ts: &TaskSpec,
        pworkspaces: &BTreeSet<&str>,
    ) {
        for (i, b) in pt.workspaces.iter().enumerate() {
            if let Some(sp) = &b.sub_path {
                self.sub_path(ctx, &format!("{f}.workspaces[{i}].subPath"), sp);
            }
            let target = b.workspace.as_deref().unwrap_or(&b.name);
            if !pworkspaces.contains(target) {
                let hint = did_you_mean(target, pworkspaces.iter().copied());
                self.err(
                    ctx,
                    &format!("{f}.workspaces[{i}].workspace"),
                    format!(
                        "pipeline task {:?} expects workspace {target:?} but the Pipeline does not declare it{hint}",
                        pt.name
                    ),
                );
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

    /// Check a pipeline task's matrix: params are arrays not also given as plain params,
    /// at most 256 combinations, include params are strings; and their references.
    fn pipeline_task_matrix(&mut self, ctx: &Ctx, f: &str, pt: &PipelineTask, m: &Matrix, scope: &PipelineTaskScope) {
        let mut count: Option<usize> = Some(1);
        for (i, p) in m.params.iter().enumerate() {
            let pf = format!("{f}.matrix.params[{i}]");
            if pt.params.iter().any(|x| x.name == p.name) {
                self.err(ctx, &pf, format!("expected exactly one, got both: matrix[{}], params[{}]", p.name, p.name));
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
                self.pipeline_refs(ctx, &format!("{pf}.value"), s, true, scope);
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

    /// Check a pipeline task's `when` expressions and the references in their input and values.
    fn pipeline_task_when(&mut self, ctx: &Ctx, f: &str, pt: &PipelineTask, scope: &PipelineTaskScope) {
        for (i, w) in pt.when.iter().enumerate() {
            let wf = format!("{f}.when[{i}]");
            self.when_expr(ctx, &wf, w);
            if let Some(inp) = &w.input {
                self.pipeline_refs(ctx, &format!("{wf}.input"), inp, false, scope);
            }
            for (j, v) in w.values.iter().flatten().enumerate() {
                self.pipeline_refs(ctx, &format!("{wf}.values[{j}]"), v, true, scope);
            }
        }
    }

    /// Check the pipeline-level references (`$(tasks.*)`) in the steps of an embedded task spec.
    fn embedded_spec_refs(&mut self, ctx: &Ctx, f: &str, pt: &PipelineTask, scope: &PipelineTaskScope) {
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
                                    scope,
                                );
                            }
                        }
                    }
                }
            }
        }
    }

    /// Check a pipeline task's `onError`: a known value, and not `continue` with retries.
    fn pipeline_task_on_error(&mut self, ctx: &Ctx, f: &str, pt: &PipelineTask) {
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
    }

    pub(super) fn task_ref<'b>(&mut self, ctx: &Ctx, f: &str, r: &'b Ref) -> Option<&'b TaskSpec>
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
    pub(super) fn pipeline_refs(
        &mut self,
        ctx: &Ctx,
        field: &str,
        text: &str,
        list_ctx: bool,
        scope: &PipelineTaskScope,
    ) {
        let PipelineScope { spec, pparams, dag_names, finally_names, .. } = scope.pipe;
        let PipelineTaskScope { is_finally, this_task, .. } = *scope;
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
}

/// What the checks of a pipeline see of it: the spec, its declared params (name -> type)
/// and workspaces, and the names of its DAG and finally tasks.
struct PipelineScope<'s> {
    spec: &'s PipelineSpec,
    pparams: BTreeMap<String, ParamType>,
    pworkspaces: BTreeSet<&'s str>,
    dag_names: BTreeSet<&'s str>,
    finally_names: BTreeSet<&'s str>,
}

impl<'s> PipelineScope<'s> {
    fn new(spec: &'s PipelineSpec) -> Self {
        PipelineScope {
            spec,
            pparams: spec.params.iter().map(|p| (p.name.clone(), p.param_type())).collect(),
            pworkspaces: spec.workspaces.iter().map(|w| w.name.as_str()).collect(),
            dag_names: spec.tasks.iter().map(|t| t.name.as_str()).collect(),
            finally_names: spec.finally.iter().map(|t| t.name.as_str()).collect(),
        }
    }
}

/// What a check inside one pipeline task sees: its pipeline, and the task itself.
pub(super) struct PipelineTaskScope<'s> {
    pipe: &'s PipelineScope<'s>,
    /// Whether the task is under `finally`.
    is_finally: bool,
    /// The pipeline task's name.
    this_task: &'s str,
}
