//! Task, step, container and StepAction validation (params, refs, `when`).

use super::*;

impl<'a> Validator<'a> {
    // ---------------------------------------------------------------- params

    /// A param's or result's `type` (at `<f>.type`), when given, is string, array or
    /// object; false (and an error) otherwise.
    fn value_type_ok(&mut self, ctx: &Ctx, f: &str, t: Option<&str>) -> bool {
        match t {
            Some(t) if !matches!(t, "string" | "array" | "object") => {
                self.err(ctx, &format!("{f}.type"), format!("invalid value: {t} (expected string, array or object)"));
                false
            }
            _ => true,
        }
    }

    pub(super) fn param_specs(&mut self, ctx: &Ctx, base: &str, params: &[ParamSpec]) {
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
            if !self.value_type_ok(ctx, &f, p.type_.as_deref()) {
                continue;
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
    pub(super) fn supplied_params(
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

    pub(super) fn task_spec(&mut self, ctx: &Ctx, base: &str, spec: &TaskSpec, env: &TaskEnv) {
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
            self.value_type_ok(ctx, &f, r.type_.as_deref());
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
    pub(super) fn container(
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

    pub(super) fn strings_in_container(
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
    pub(super) fn task_refs(
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
                    if let Some(msg) = param_ref_error(r.expr, &segs, isolated, spec, env) {
                        self.err(ctx, field, msg);
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

    pub(super) fn step_action(&mut self, ctx: &Ctx, spec: &StepActionSpec) {
        self.param_specs(ctx, "spec.params", &spec.params);
        if spec.image.is_none() {
            self.err(ctx, "spec", "missing field(s): image");
        }
        if spec.script.is_some() && spec.command.is_some() {
            self.err(ctx, "spec.script", "script cannot be used with command");
        }
    }

    pub(super) fn when_expr(&mut self, ctx: &Ctx, f: &str, w: &WhenExpression) {
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
}

/// The error in a `$(params...)` reference inside a Task's step field, if any: the param
/// must be declared (unless the spec is embedded), a string param cannot be indexed, an
/// array param is used whole only as an `isolated` element of command or args, and an
/// object param only by a declared key.
fn param_ref_error(expr: &str, segs: &[Seg], isolated: bool, spec: &TaskSpec, env: &TaskEnv) -> Option<String> {
    let Some(Seg::Name(name)) = segs.get(1) else {
        return None;
    };
    let ty = spec
        .params
        .iter()
        .find(|p| &p.name == name)
        .map(|p| (p.param_type(), p.properties.clone()))
        .or_else(|| env.parent_params.get(name).map(|t| (*t, None)));
    match ty {
        None if env.embedded => None,
        None => {
            let hint = did_you_mean(name, spec.params.iter().map(|p| p.name.as_str()));
            Some(format!("non-existent variable in {expr:?}: param {name:?} is not declared{hint}"))
        }
        Some((ParamType::String, _)) => (segs.len() > 2)
            .then(|| format!("invalid reference $({expr}): param {name:?} is a string and cannot be indexed")),
        Some((ParamType::Array, _)) => {
            let whole = segs.len() == 2 || matches!(segs.get(2), Some(Seg::Star));
            (whole && !isolated).then(|| format!("variable type invalid in {expr:?}: array param {name:?} can only be used whole as an isolated element of command or args; use $(params.{name}[i]) for one element"))
        }
        Some((ParamType::Object, props)) => match segs.get(2) {
            Some(Seg::Name(k)) => {
                let props = props?;
                if props.contains_key(k) {
                    return None;
                }
                let hint = did_you_mean(k, props.keys().map(String::as_str));
                Some(format!("non-existent variable in {expr:?}: object param {name:?} has no key {k:?}{hint}"))
            }
            _ => Some(format!(
                "variable type invalid in {expr:?}: object param {name:?} can only be used by key, as $(params.{name}.KEY)"
            )),
        },
    }
}
