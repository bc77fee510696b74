//! Validation of tenon's annotations (outputs, publish, repo workspace).

use super::*;

impl<'a> Validator<'a> {
    /// `tenon.dev/outputs` (`key`) in `ann`: each entry `workspace:path` with the path inside
    /// the workspace, and (when known) a workspace the task has.
    pub(super) fn outputs_annotation(
        &mut self,
        ctx: &Ctx,
        base: &str,
        ann: &BTreeMap<String, String>,
        key: &str,
        workspaces: Option<&BTreeSet<&str>>,
    ) {
        let Some(v) = ann.get(key) else { return };
        let field = format!("{base}[{key:?}]");
        for entry in super::super::annotations::entries(v) {
            match parse_output(&entry) {
                Err(why) => self.err(ctx, &field, why),
                Ok((w, _)) => {
                    if let Some(ws) = workspaces.filter(|ws| !ws.contains(w.as_str())) {
                        let hint = did_you_mean(&w, ws.iter().copied());
                        let why = super::super::annotations::output_workspace_unknown(&entry, &w, ws.iter().copied());
                        self.err(ctx, &field, format!("{why}{hint}"));
                    }
                }
            }
        }
    }

    /// `tenon.dev/publish` on a Task: each entry `RESULT=workspace:path` names a result the
    /// task declares and one of its `tenon.dev/outputs` entries.
    pub(super) fn publish_annotation(&mut self, ctx: &Ctx, ann: &BTreeMap<String, String>, spec: &TaskSpec) {
        use super::super::annotations::{entries, parse_publish, PUBLISH_ANNOTATION};
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
    pub(super) fn pipeline_outputs(
        &mut self,
        ctx: &Ctx,
        base: &str,
        meta: &ObjectMeta,
        spec: &PipelineSpec,
        embedded: bool,
    ) {
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

    pub(super) fn repo_annotation(&mut self, ctx: &Ctx, meta: &ObjectMeta, ws: &[WorkspaceBinding]) {
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
}
