//! PromotionPolicy validation.

use super::*;

impl<'a> Validator<'a> {
    /// Validate a PromotionPolicy: the judged run, environment, subject, gates, target
    /// updates and mode, and that every task result it references exists.
    pub(super) fn promotion_policy(&mut self, p: &Obj<PromotionPolicySpec>) {
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
            self.policy_gate(&ctx, &f, g);
        }
        self.policy_target(&ctx, s, &mut texts);
        match s.mode.as_deref() {
            None | Some("direct") | Some("branch") => {}
            Some(m) => self.err(&ctx, "spec.mode", format!("invalid value {m:?}: expected direct or branch")),
        }
        // every task result referenced must exist in the judged pipeline
        if let Some(ps) = &pspec {
            self.policy_result_refs(&ctx, ps, texts);
        }
    }

    /// Check one gate (`f` is its field path): it judges a task result with a known
    /// operator and the operands that operator needs.
    fn policy_gate(&mut self, ctx: &Ctx, f: &str, g: &Gate) {
        if find_refs(&g.result).is_empty() {
            self.err(
                ctx,
                &format!("{f}.result"),
                format!("a gate judges a task result, e.g. $(tasks.evaluate.results.accuracy); got {:?}", g.result),
            );
        }
        match g.operator.as_str() {
            "in" | "notin" => {
                if g.values.as_ref().is_none_or(|v| v.is_empty()) {
                    self.err(ctx, &format!("{f}.values"), "expecting non-empty values field");
                }
            }
            ">=" | ">" | "<=" | "<" | "==" | "!=" => {
                let ordering = !matches!(g.operator.as_str(), "==" | "!=");
                match (&g.value, &g.incumbent) {
                    (None, None) => self.err(ctx, f, "missing field(s): value (or incumbent)"),
                    (Some(v), None) if ordering && !v.contains("$(") && v.trim().parse::<f64>().is_err() => self.err(
                        ctx,
                        &format!("{f}.value"),
                        format!("{} compares numbers; {v:?} is not a number", g.operator),
                    ),
                    (_, Some(inc)) => {
                        if inc.file.is_empty() || inc.path.is_empty() {
                            self.err(
                                ctx,
                                &format!("{f}.incumbent"),
                                "missing field(s): incumbent.file, incumbent.path",
                            );
                        }
                        if let Some(m) = &g.margin {
                            if m.trim().parse::<f64>().is_err() {
                                self.err(ctx, &format!("{f}.margin"), format!("margin {m:?} is not a number"));
                            }
                        }
                    }
                    _ => {}
                }
            }
            other => self.err(
                ctx,
                &format!("{f}.operator"),
                format!("operator {other:?} is not recognized. valid operators: >=, >, <=, <, ==, !=, in, notin"),
            ),
        }
    }

    /// Check the target updates (relative files inside the repository, non-empty paths) and
    /// add their values to `texts`, the fields whose references are checked.
    fn policy_target(&mut self, ctx: &Ctx, s: &PromotionPolicySpec, texts: &mut Vec<(String, String)>) {
        if s.target.updates.is_empty() {
            self.err(ctx, "spec.target", "missing field(s): target.updates");
        }
        for (i, u) in s.target.updates.iter().enumerate() {
            let f = format!("spec.target.updates[{i}]");
            texts.push((format!("{f}.value"), u.value.clone()));
            if u.file.is_empty() || u.file.starts_with('/') || u.file.split('/').any(|c| c == "..") {
                self.err(
                    ctx,
                    &format!("{f}.file"),
                    format!(
                        "file {:?} must be a relative path inside the repository (no leading '/', no '..')",
                        u.file
                    ),
                );
            }
            if u.path.trim().is_empty() {
                self.err(ctx, &format!("{f}.path"), "missing field(s): path");
            }
        }
    }

    /// Check the references in `texts` (field path, text): each task result referenced must
    /// exist in the judged pipeline `ps`; only `subject`, `policy` and `environment` are
    /// otherwise available.
    fn policy_result_refs(&mut self, ctx: &Ctx, ps: &PipelineSpec, texts: Vec<(String, String)>) {
        for (field, t) in texts {
            for r in find_refs(&t) {
                let Some(segs) = r.segs() else { continue };
                match segs.as_slice() {
                    [Seg::Name(h), Seg::Name(task), Seg::Name(k), Seg::Name(res), ..] if h == "tasks" && k == "results" => {
                        match ps.tasks.iter().chain(ps.finally.iter()).find(|x| &x.name == task) {
                            None => {
                                let hint = did_you_mean(task, ps.tasks.iter().map(|x| x.name.as_str()));
                                self.err(ctx, &field, format!("$({}) refers to unknown pipeline task {task:?}{hint}", r.expr));
                            }
                            Some(pt) => {
                                if let Some(ts) = self.resolve_task(pt) {
                                    if !ts.results.iter().any(|x| &x.name == res) {
                                        let hint = did_you_mean(res, ts.results.iter().map(|x| x.name.as_str()));
                                        self.err(ctx, &field, format!("$({}): task {task:?} declares no result {res:?}{hint}", r.expr));
                                    }
                                }
                            }
                        }
                    }
                    [Seg::Name(h), ..] if h == "subject" || h == "policy" || h == "environment" => {}
                    _ => self.err(ctx, &field, format!("$({}) is not available to a PromotionPolicy (use $(tasks.X.results.Y), $(subject.uri), $(subject.digest))", r.expr)),
                }
            }
        }
    }
}
