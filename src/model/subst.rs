//! Tekton variable substitution: `$(...)` references, pure.
//!
//! Tekton replaces *exact keys* with precomputed values, one phase at a time; unknown
//! references are left untouched (they may be shell command substitutions), and a value
//! inserted by a phase is not rescanned within that phase. Arrays splice into a list only
//! when a whole element is exactly one reference; objects are never stringified.
//!
//! References are parsed into segments so every spelling resolves the same way:
//! `params.x`, `params["x"]`, `params['x']`, `inputs.params.x`, followed by `[i]`, `[*]`
//! or `.key`.

use std::collections::HashMap;

use serde_json::Value;

use crate::model::ParamValue;

/// One segment of a reference expression.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seg {
    Name(String),
    Index(usize),
    Star,
}

/// A `$(...)` occurrence in a string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VarRef<'a> {
    /// Byte offset of `$(`.
    pub start: usize,
    /// Byte offset just past `)`.
    pub end: usize,
    /// The text between the parentheses.
    pub expr: &'a str,
}

impl VarRef<'_> {
    pub fn segs(&self) -> Option<Vec<Seg>> {
        parse_expr(self.expr)
    }
}

/// Every `$(...)` in `s`, left to right. The expression ends at the first `)`.
pub fn find_refs(s: &str) -> Vec<VarRef<'_>> {
    let mut out = Vec::new();
    let bytes = s.as_bytes();
    let mut i = 0;
    while i + 1 < bytes.len() {
        if bytes[i] == b'$' && bytes[i + 1] == b'(' {
            if let Some(rel) = s[i + 2..].find(')') {
                let end = i + 2 + rel + 1;
                if let Some(inner) = s[i + 2..end - 1].rfind("$(") {
                    // `$(echo $(params.x))`: the innermost one is the reference (going
                    // straight to it keeps this linear on `$($($(...`).
                    i += 2 + inner;
                    continue;
                }
                out.push(VarRef { start: i, end, expr: &s[i + 2..end - 1] });
                i = end;
                continue;
            }
            break;
        }
        i += 1;
    }
    out
}

/// Parse `a.b["c.d"][0][*]` into segments. `None` when it is not a Tekton-shaped reference.
pub fn parse_expr(expr: &str) -> Option<Vec<Seg>> {
    let mut segs = Vec::new();
    let b = expr.as_bytes();
    let mut i = 0;
    let mut expect_name = true;
    while i < b.len() {
        match b[i] {
            b'.' => {
                if expect_name {
                    return None;
                }
                expect_name = true;
                i += 1;
            }
            b'[' => {
                let close = expr[i..].find(']')? + i;
                let inner = &expr[i + 1..close];
                let seg = if inner == "*" {
                    Seg::Star
                } else if let Ok(n) = inner.parse::<usize>() {
                    Seg::Index(n)
                } else if inner.len() >= 2
                    && ((inner.starts_with('"') && inner.ends_with('"'))
                        || (inner.starts_with('\'') && inner.ends_with('\'')))
                {
                    Seg::Name(inner[1..inner.len() - 1].to_string())
                } else {
                    return None;
                };
                segs.push(seg);
                expect_name = false;
                i = close + 1;
            }
            _ => {
                if !expect_name {
                    return None;
                }
                let end = expr[i..].find(['.', '[', ']']).map_or(expr.len(), |r| r + i);
                let name = &expr[i..end];
                if name.is_empty()
                    || name.chars().any(|c| c.is_whitespace() || c == '$' || c == '(' || c == '"' || c == '\'')
                {
                    return None;
                }
                segs.push(Seg::Name(name.to_string()));
                expect_name = false;
                i = end;
            }
        }
    }
    if segs.is_empty() || expect_name {
        return None;
    }
    // Legacy `inputs.params.x` is `params.x`.
    if segs.len() > 2 && segs[0] == Seg::Name("inputs".into()) && segs[1] == Seg::Name("params".into()) {
        segs.remove(0);
    }
    Some(segs)
}

/// The canonical dotted key of the leading name segments, `params.x` for `params["x"]`.
pub fn canonical(segs: &[Seg]) -> String {
    let mut s = String::new();
    for seg in segs {
        match seg {
            Seg::Name(n) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(n);
            }
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
            Seg::Star => s.push_str("[*]"),
        }
    }
    s
}

/// A resolved reference.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    Value(ParamValue),
    /// The base exists but the index/key does not (e.g. out of range).
    BadAccess(String),
}

/// The values of one substitution phase, keyed by canonical base key (`params.x`,
/// `tasks.t.results.r`, `context.pipelineRun.name`, ...). A phase replaces every
/// reference it knows in one pass, like Go's `strings.NewReplacer` in Tekton: the text a
/// replacement inserts is not scanned again by the same phase.
#[derive(Debug, Clone, Default)]
struct Phase {
    map: HashMap<String, ParamValue>,
}

/// Substitution variables: one or more phases applied in order, as Tekton applies its
/// phases (a TaskRun's params, then its context, ...). Text inserted by one phase is
/// seen by the later phases only.
#[derive(Debug, Clone)]
pub struct Vars {
    /// Never empty; `set` adds to the last phase.
    phases: Vec<Phase>,
}

impl Default for Vars {
    fn default() -> Self {
        Vars { phases: vec![Phase::default()] }
    }
}

impl Vars {
    pub fn new() -> Self {
        Self::default()
    }
    /// Set a variable: in the phase that already has the key, else in the last phase.
    pub fn set(&mut self, key: impl Into<String>, v: ParamValue) -> &mut Self {
        let key = key.into();
        let i = self.phases.iter().position(|p| p.map.contains_key(&key)).unwrap_or(self.phases.len() - 1);
        self.phases[i].map.insert(key, v);
        self
    }
    pub fn set_str(&mut self, key: impl Into<String>, v: impl Into<String>) -> &mut Self {
        self.set(key, ParamValue::Str(v.into()))
    }
    pub fn remove(&mut self, key: &str) -> &mut Self {
        for p in &mut self.phases {
            p.map.remove(key);
        }
        self
    }
    pub fn contains(&self, key: &str) -> bool {
        self.phases.iter().any(|p| p.map.contains_key(key))
    }
    pub fn get(&self, key: &str) -> Option<&ParamValue> {
        self.phases.iter().find_map(|p| p.map.get(key))
    }
    /// Merge `other`'s variables (of every phase) into these, as [`Vars::set`] does.
    pub fn extend(&mut self, other: &Vars) {
        for p in &other.phases {
            for (k, v) in &p.map {
                self.set(k.clone(), v.clone());
            }
        }
    }
    /// Append `later`'s phases after these: they apply to what these produce.
    pub fn then(&mut self, later: &Vars) -> &mut Self {
        self.phases.extend(later.phases.iter().cloned());
        self
    }
    /// Whether a value of the first phase holds a `$(` reference (text that applying
    /// the phase could bring into what it is applied to).
    pub fn first_phase_has_refs(&self) -> bool {
        self.phases[0].map.values().any(|v| v.texts().iter().any(|t| t.contains("$(")))
    }
    /// The first phase alone.
    pub fn first_phase(&self) -> Vars {
        Vars { phases: vec![self.phases[0].clone()] }
    }
    pub fn is_empty(&self) -> bool {
        self.phases.iter().all(|p| p.map.is_empty())
    }
    /// A copy without the keys starting with `prefix` (the phases stay).
    pub fn without_prefix(&self, prefix: &str) -> Vars {
        let mut out = self.clone();
        for p in &mut out.phases {
            p.map.retain(|k, _| !k.starts_with(prefix));
        }
        out
    }

    /// Resolve a parsed reference in the phase that knows it; the value then passes
    /// through the later phases.
    pub fn resolve(&self, segs: &[Seg]) -> Option<Resolved> {
        for (i, p) in self.phases.iter().enumerate() {
            if let Some(r) = p.resolve(segs) {
                return Some(match r {
                    Resolved::Value(v) => {
                        Resolved::Value(self.phases[i + 1..].iter().fold(v, |v, p| p.apply_value(&v)))
                    }
                    bad => bad,
                });
            }
        }
        None
    }

    pub fn resolve_expr(&self, expr: &str) -> Option<Resolved> {
        self.resolve(&parse_expr(expr)?)
    }

    /// Substitute string-valued references in `s`; anything else stays literal.
    pub fn apply_str(&self, s: &str) -> String {
        if !s.contains("$(") {
            return s.to_string();
        }
        self.phases.iter().fold(s.to_string(), |acc, p| p.apply_str(&acc))
    }

    /// Substitute in a list, splicing isolated array references.
    pub fn apply_list(&self, items: &[String]) -> Vec<String> {
        self.phases.iter().fold(items.to_vec(), |acc, p| p.apply_list(&acc))
    }

    /// Substitute a param value: strings and list elements as usual; a string that is
    /// exactly `$(x[*])` of an array/object becomes that array/object.
    pub fn apply_value(&self, v: &ParamValue) -> ParamValue {
        self.phases.iter().fold(v.clone(), |acc, p| p.apply_value(&acc))
    }

    /// Substitute through a whole JSON tree (a serialized spec): strings in place,
    /// arrays of strings with splicing. Keys listed in `skip` are not entered.
    pub fn apply_json(&self, v: &mut Value, skip: &[&str]) {
        for p in &self.phases {
            p.apply_json(v, skip);
        }
    }
}

impl Phase {
    /// The longest run of leading names that is a key, then index / star / object key
    /// on the value.
    fn resolve(&self, segs: &[Seg]) -> Option<Resolved> {
        let names = segs.iter().take_while(|s| matches!(s, Seg::Name(_))).count();
        for k in (1..=names).rev() {
            let key = canonical(&segs[..k]);
            if let Some(v) = self.map.get(&key) {
                return Some(access(v, &segs[k..]));
            }
        }
        None
    }

    /// One pass: each reference is looked up in the input text only.
    fn apply_str(&self, s: &str) -> String {
        if !s.contains("$(") || self.map.is_empty() {
            return s.to_string();
        }
        let mut out = String::with_capacity(s.len());
        let mut last = 0;
        for r in find_refs(s) {
            if let Some(Resolved::Value(ParamValue::Str(v))) = r.segs().and_then(|segs| self.resolve(&segs)) {
                out.push_str(&s[last..r.start]);
                out.push_str(&v);
                last = r.end;
            }
        }
        out.push_str(&s[last..]);
        out
    }

    /// If `s` is exactly one reference to an array (or `[*]` of one), its elements.
    fn isolated_array(&self, s: &str) -> Option<Vec<String>> {
        let refs = find_refs(s);
        if refs.len() != 1 || refs[0].start != 0 || refs[0].end != s.len() {
            return None;
        }
        match self.resolve(&refs[0].segs()?)? {
            Resolved::Value(ParamValue::Array(a)) => Some(a),
            _ => None,
        }
    }

    fn apply_list(&self, items: &[String]) -> Vec<String> {
        let mut out = Vec::with_capacity(items.len());
        for it in items {
            match self.isolated_array(it) {
                Some(a) => out.extend(a),
                None => out.push(self.apply_str(it)),
            }
        }
        out
    }

    fn apply_value(&self, v: &ParamValue) -> ParamValue {
        match v {
            ParamValue::Str(s) => {
                let refs = find_refs(s);
                if refs.len() == 1 && refs[0].start == 0 && refs[0].end == s.len() {
                    if let Some(Resolved::Value(pv)) = refs[0].segs().and_then(|segs| self.resolve(&segs)) {
                        if !matches!(pv, ParamValue::Str(_)) {
                            return pv;
                        }
                    }
                }
                ParamValue::Str(self.apply_str(s))
            }
            ParamValue::Array(a) => ParamValue::Array(self.apply_list(a)),
            ParamValue::Object(o) => {
                ParamValue::Object(o.iter().map(|(k, v)| (k.clone(), self.apply_str(v))).collect())
            }
        }
    }

    fn apply_json(&self, v: &mut Value, skip: &[&str]) {
        if self.map.is_empty() {
            return;
        }
        match v {
            Value::String(s) => {
                if s.contains("$(") {
                    *s = self.apply_str(s);
                }
            }
            Value::Array(items) => {
                if items.iter().all(|i| i.is_string()) {
                    // a list without references stays as it is (nothing to splice or replace)
                    if !items.iter().any(|i| i.as_str().is_some_and(|s| s.contains("$("))) {
                        return;
                    }
                    let strs: Vec<String> = items.iter().map(|i| i.as_str().unwrap_or_default().to_string()).collect();
                    *items = self.apply_list(&strs).into_iter().map(Value::String).collect();
                } else {
                    for i in items {
                        self.apply_json(i, skip);
                    }
                }
            }
            Value::Object(m) => {
                for (k, child) in m.iter_mut() {
                    if !skip.contains(&k.as_str()) {
                        self.apply_json(child, skip);
                    }
                }
            }
            _ => {}
        }
    }
}

fn access(v: &ParamValue, rest: &[Seg]) -> Resolved {
    match (v, rest) {
        (_, []) => Resolved::Value(v.clone()),
        (ParamValue::Array(_) | ParamValue::Object(_), [Seg::Star]) => Resolved::Value(v.clone()),
        (ParamValue::Array(a), [Seg::Index(i)]) => match a.get(*i) {
            Some(s) => Resolved::Value(ParamValue::Str(s.clone())),
            None => Resolved::BadAccess(format!("index {i} out of range for an array of length {}", a.len())),
        },
        (ParamValue::Object(o), [Seg::Name(k)]) => match o.get(k) {
            Some(s) => Resolved::Value(ParamValue::Str(s.clone())),
            None => Resolved::BadAccess(format!("object has no key {k:?}")),
        },
        (ParamValue::Str(_), _) => Resolved::BadAccess("a string value cannot be indexed".into()),
        _ => Resolved::BadAccess(format!("invalid access {}", canonical(rest))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn vars() -> Vars {
        let mut v = Vars::new();
        v.set_str("params.x", "X");
        v.set_str("params.a.b", "dotted");
        v.set("params.arr", ParamValue::Array(vec!["1".into(), "2".into()]));
        v.set("params.obj", ParamValue::Object(BTreeMap::from([("k".into(), "K".into())])));
        v.set_str("tasks.t.results.r", "R\n");
        v.set_str("params.inj", "$(params.x)");
        v
    }

    #[test]
    fn string_forms() {
        let v = vars();
        let cases = [
            ("$(params.x)", "X"),
            ("a $(params[\"x\"]) b $(params['x'])", "a X b X"),
            ("$(inputs.params.x)", "X"),
            ("$(params[\"a.b\"])", "dotted"),
            ("$(params.arr[1])", "2"),
            ("$(params.obj.k)", "K"),
            ("$(params.obj[\"k\"])", "K"),
            ("$(tasks.t.results.r)", "R\n"),
            // unknown refs and shell substitutions stay literal
            ("$(date) $(params.nope)", "$(date) $(params.nope)"),
            ("$(echo $(params.x))", "$(echo X)"),
            // whole arrays/objects never stringify; out-of-range stays literal
            ("x $(params.arr) y", "x $(params.arr) y"),
            ("$(params.arr[9])", "$(params.arr[9])"),
            // not rescanned within a phase
            ("$(params.inj)", "$(params.x)"),
            ("no refs", "no refs"),
            ("$(", "$("),
        ];
        for (input, want) in cases {
            assert_eq!(v.apply_str(input), want, "{input}");
        }
    }

    #[test]
    fn nested_openers_are_linear() {
        // `$($($(...)` once took quadratic time (each opener rescanned the rest)
        let s = format!("{}params.x)", "$(".repeat(200_000));
        let t = std::time::Instant::now();
        let refs = find_refs(&s);
        assert!(t.elapsed() < std::time::Duration::from_secs(2), "{:?}", t.elapsed());
        assert_eq!(refs.len(), 1);
        assert_eq!((refs[0].expr, refs[0].end), ("params.x", s.len()));
        assert!(vars().apply_str(&s).ends_with("$(X"));
    }

    #[test]
    fn list_splicing() {
        let v = vars();
        let got =
            v.apply_list(&["a".into(), "$(params.arr[*])".into(), "$(params.arr)".into(), "x$(params.arr)".into()]);
        assert_eq!(got, vec!["a", "1", "2", "1", "2", "x$(params.arr)"]);
    }

    #[test]
    fn value_forms() {
        let v = vars();
        assert_eq!(
            v.apply_value(&ParamValue::Str("$(params.arr[*])".into())),
            ParamValue::Array(vec!["1".into(), "2".into()])
        );
        assert!(matches!(v.apply_value(&ParamValue::Str("$(params.obj[*])".into())), ParamValue::Object(_)));
        assert_eq!(v.apply_value(&ParamValue::Str("$(params.x)!".into())), ParamValue::Str("X!".into()));
    }

    /// Tekton's phase order for a TaskRun (params, context, paths, workspaces), each one
    /// pass: what a phase inserts is seen by the later phases only.
    fn task_phases() -> Vars {
        let mut params = Vars::new();
        params
            .set_str("params.secret", "S3CRET")
            .set_str("params.inj", "$(params.secret)")
            .set_str("params.ctx", "$(context.taskRun.name)")
            .set_str("params.res", "$(results.out.path)")
            .set_str("params.ws", "$(workspaces.w.path)")
            .set_str("params.self", "$(params.self)")
            .set("params.arr", ParamValue::Array(vec!["$(params.secret)".into(), "$(context.taskRun.name)".into()]))
            .set("params.obj", ParamValue::Object(BTreeMap::from([("k".into(), "$(params[\"secret\"])".into())])));
        let mut ctx = Vars::new();
        ctx.set_str("context.taskRun.name", "tr-1").set_str("context.task.name", "$(params.secret)");
        let mut paths = Vars::new();
        paths.set_str("results.out.path", "/tekton/results/out");
        let mut ws = Vars::new();
        ws.set_str("workspaces.w.path", "/workspace/w");
        let mut v = params;
        v.then(&ctx).then(&paths).then(&ws);
        v
    }

    #[test]
    fn phases_are_single_pass_in_order() {
        let v = task_phases();
        let cases = [
            // a param value is data for the param phase: never rescanned, in any spelling
            ("$(params.inj)", "$(params.secret)"),
            ("$(params[\"inj\"])", "$(params.secret)"),
            ("$(params['inj'])", "$(params.secret)"),
            ("$(inputs.params.inj)", "$(params.secret)"),
            ("$(params.self)", "$(params.self)"),
            ("$(params.obj.k)", "$(params[\"secret\"])"),
            ("$(params.arr[0])", "$(params.secret)"),
            ("a $(params.inj) b $(params.secret)", "a $(params.secret) b S3CRET"),
            // ... but the later phases do apply to what it inserted
            ("$(params.ctx)", "tr-1"),
            ("$(params.arr[1])", "tr-1"),
            ("$(params.res)", "/tekton/results/out"),
            ("$(params.ws)", "/workspace/w"),
            // a later phase's inserted text is not seen by an earlier one
            ("$(context.task.name)", "$(params.secret)"),
            ("$(context.taskRun.name)/$(params.secret)", "tr-1/S3CRET"),
        ];
        for (input, want) in cases {
            assert_eq!(v.apply_str(input), want, "{input}");
        }
        // arrays splice in the param phase; the spliced elements go through the later phases
        assert_eq!(
            v.apply_list(&["$(params.arr[*])".into(), "$(params.arr)".into(), "$(params.inj)".into()]),
            vec!["$(params.secret)", "tr-1", "$(params.secret)", "tr-1", "$(params.secret)"]
        );
        // a whole-value reference keeps its type and passes the later phases
        assert_eq!(
            v.apply_value(&ParamValue::Str("$(params.arr[*])".into())),
            ParamValue::Array(vec!["$(params.secret)".into(), "tr-1".into()])
        );
        assert_eq!(
            v.apply_value(&ParamValue::Str("$(params.obj[*])".into())),
            ParamValue::Object(BTreeMap::from([("k".into(), "$(params[\"secret\"])".into())]))
        );
        let mut j = serde_json::json!({"script": "$(params.inj) $(params.ctx)", "args": ["$(params.arr[*])"]});
        v.apply_json(&mut j, &[]);
        assert_eq!(j, serde_json::json!({"script": "$(params.secret) tr-1", "args": ["$(params.secret)", "tr-1"]}));
        // resolving a reference gives the text after every later phase
        assert_eq!(v.resolve_expr("params.ctx"), Some(Resolved::Value(ParamValue::Str("tr-1".into()))));
    }

    #[test]
    fn phase_bookkeeping() {
        let mut v = task_phases();
        // `set` replaces a key in its own phase: stabilizing a context value keeps the order
        v.set_str("context.taskRun.name", "$(context.taskRun.name)");
        assert_eq!(v.apply_str("$(params.ctx)"), "$(context.taskRun.name)");
        assert_eq!(
            v.first_phase().apply_str("$(params.ctx) $(results.out.path)"),
            "$(context.taskRun.name) $(results.out.path)"
        );
        let no_params = v.without_prefix("params.");
        assert_eq!(no_params.apply_str("$(params.secret) $(context.task.name)"), "$(params.secret) $(params.secret)");
        v.remove("params.secret");
        assert_eq!(v.apply_str("$(params.secret)"), "$(params.secret)");
        assert!(Vars::new().is_empty() && !v.is_empty());
    }

    #[test]
    fn parse_rejects_non_references() {
        for bad in ["", "a..b", "a.", "echo hi", "a[x]", ".a", "a]"] {
            assert_eq!(parse_expr(bad), None, "{bad}");
        }
        assert_eq!(
            parse_expr("tasks.t.results.r[*]"),
            Some(vec![
                Seg::Name("tasks".into()),
                Seg::Name("t".into()),
                Seg::Name("results".into()),
                Seg::Name("r".into()),
                Seg::Star
            ])
        );
    }

    #[test]
    fn bad_access_is_reported() {
        let v = vars();
        assert!(matches!(v.resolve_expr("params.arr[5]"), Some(Resolved::BadAccess(_))));
        assert!(matches!(v.resolve_expr("params.obj.zz"), Some(Resolved::BadAccess(_))));
        assert_eq!(v.resolve_expr("params.nope"), None);
    }
}
