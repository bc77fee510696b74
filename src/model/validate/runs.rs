//! PipelineRun and TaskRun validation (bindings, timeouts).

use super::*;

impl<'a> Validator<'a> {
    // ---------------------------------------------------------------- runs

    pub(super) fn pipeline_run(&mut self, pr: &Obj<PipelineRunSpec>) {
        let ctx = self.ctx(pr);
        let s = &pr.spec;
        let pspec: Option<std::borrow::Cow<PipelineSpec>> = match (&s.pipeline_ref, &s.pipeline_spec) {
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
                super::super::propagate_run_into_spec(&mut ps, s);
                self.pipeline_spec(&ctx, "spec.pipelineSpec", &ps);
                self.pipeline_outputs(&ctx, "spec.pipelineSpec", &pr.meta, &ps, true);
                Some(std::borrow::Cow::Owned(ps))
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
                            Some(std::borrow::Cow::Borrowed(&p.spec))
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

    pub(super) fn task_run(&mut self, tr: &Obj<TaskRunSpec>) {
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

    pub(super) fn bindings(&mut self, ctx: &Ctx, ws: &[WorkspaceBinding]) {
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

    pub(super) fn timeouts(&mut self, ctx: &Ctx, s: &PipelineRunSpec) {
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
                        format!("invalid value: {} should be <= {lname}", super::super::format_duration(*d)),
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
                        super::super::format_duration(*a),
                        super::super::format_duration(*b)
                    ),
                );
            }
        }
    }
}
