//! The pipeline task graph: edges from `runAfter` and from result references. Pure.

use std::collections::{BTreeMap, BTreeSet};

use crate::model::{ParamValue, PipelineTask};
use crate::subst::{find_refs, Seg};

/// Task names whose results `pt` consumes (`$(tasks.X.results...)`) in its params,
/// matrix, when expressions, and embedded steps.
pub fn result_deps(pt: &PipelineTask) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut visit = |s: &str| {
        for r in find_refs(s) {
            if let Some(segs) = r.segs() {
                if let [Seg::Name(a), Seg::Name(t), Seg::Name(c), ..] = segs.as_slice() {
                    if a == "tasks" && c == "results" {
                        out.insert(t.clone());
                    }
                }
            }
        }
    };
    let visit_value = |v: &ParamValue, f: &mut dyn FnMut(&str)| match v {
        ParamValue::Str(s) => f(s),
        ParamValue::Array(a) => a.iter().for_each(|s| f(s)),
        ParamValue::Object(o) => o.values().for_each(|s| f(s)),
    };
    for p in &pt.params {
        visit_value(&p.value, &mut visit);
    }
    if let Some(m) = &pt.matrix {
        for p in &m.params {
            visit_value(&p.value, &mut visit);
        }
        for inc in &m.include {
            for p in &inc.params {
                visit_value(&p.value, &mut visit);
            }
        }
    }
    for w in &pt.when {
        for s in w.input.iter().chain(w.values.iter().flatten()).chain(w.cel.iter()) {
            visit(s);
        }
    }
    if let Some(ts) = &pt.task_spec {
        if let Ok(v) = serde_json::to_value(&ts.task) {
            walk_strings(&v, &mut visit);
        }
    }
    if let Some(d) = &pt.display_name {
        visit(d);
    }
    out
}

fn walk_strings(v: &serde_json::Value, f: &mut dyn FnMut(&str)) {
    match v {
        serde_json::Value::String(s) => f(s),
        serde_json::Value::Array(a) => a.iter().for_each(|x| walk_strings(x, f)),
        serde_json::Value::Object(m) => m.values().for_each(|x| walk_strings(x, f)),
        _ => {}
    }
}

/// A DAG over the `tasks` of a pipeline (finally tasks are not part of it).
#[derive(Debug, Clone, Default)]
pub struct Dag {
    /// Task names in declaration order.
    pub names: Vec<String>,
    /// name -> parents (runAfter ∪ result deps), only names that exist.
    pub parents: BTreeMap<String, BTreeSet<String>>,
}

/// Problems building the DAG.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DagError {
    /// (task, index in runAfter or None for a result reference, missing name)
    Unknown {
        task: String,
        run_after_index: Option<usize>,
        missing: String,
    },
    Cycle {
        path: Vec<String>,
    },
}

impl Dag {
    pub fn build(tasks: &[PipelineTask]) -> (Dag, Vec<DagError>) {
        let names: Vec<String> = tasks.iter().map(|t| t.name.clone()).collect();
        let known: BTreeSet<&str> = names.iter().map(String::as_str).collect();
        let mut errors = Vec::new();
        let mut parents = BTreeMap::new();
        for t in tasks {
            let mut ps = BTreeSet::new();
            for (i, r) in t.run_after.iter().enumerate() {
                if known.contains(r.as_str()) {
                    ps.insert(r.clone());
                } else {
                    errors.push(DagError::Unknown {
                        task: t.name.clone(),
                        run_after_index: Some(i),
                        missing: r.clone(),
                    });
                }
            }
            for r in result_deps(t) {
                if known.contains(r.as_str()) {
                    ps.insert(r);
                }
                // unknown result producers are reported by validation with the field path
            }
            parents.insert(t.name.clone(), ps);
        }
        let dag = Dag { names, parents };
        if let Some(path) = dag.find_cycle() {
            errors.push(DagError::Cycle { path });
        }
        (dag, errors)
    }

    /// A cycle as a path `a -> b -> ... -> a`, if any.
    pub fn find_cycle(&self) -> Option<Vec<String>> {
        #[derive(Clone, Copy, PartialEq)]
        enum Mark {
            New,
            Active,
            Done,
        }
        let mut mark: BTreeMap<&str, Mark> = self.names.iter().map(|n| (n.as_str(), Mark::New)).collect();
        fn dfs<'a>(
            n: &'a str,
            dag: &'a Dag,
            mark: &mut BTreeMap<&'a str, Mark>,
            stack: &mut Vec<&'a str>,
        ) -> Option<Vec<String>> {
            mark.insert(n, Mark::Active);
            stack.push(n);
            if let Some(ps) = dag.parents.get(n) {
                for p in ps {
                    match mark.get(p.as_str()).copied() {
                        Some(Mark::Active) => {
                            let start = stack.iter().position(|s| *s == p.as_str()).unwrap_or(0);
                            let mut cyc: Vec<String> = stack[start..].iter().map(|s| s.to_string()).collect();
                            cyc.push(p.clone());
                            return Some(cyc);
                        }
                        Some(Mark::New) => {
                            if let Some(c) = dfs(p.as_str(), dag, mark, stack) {
                                return Some(c);
                            }
                        }
                        _ => {}
                    }
                }
            }
            stack.pop();
            mark.insert(n, Mark::Done);
            None
        }
        for n in &self.names {
            if mark.get(n.as_str()) == Some(&Mark::New) {
                let mut stack = Vec::new();
                if let Some(c) = dfs(n, self, &mut mark, &mut stack) {
                    return Some(c);
                }
            }
        }
        None
    }

    /// Every task `name` transitively depends on.
    pub fn ancestors(&self, name: &str) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let mut stack: Vec<&str> = vec![name];
        while let Some(n) = stack.pop() {
            for p in self.parents.get(n).into_iter().flatten() {
                if out.insert(p.clone()) {
                    stack.push(p);
                }
            }
        }
        out
    }

    /// Like [`Dag::ready`], with lookups instead of sets (no per-call allocation).
    pub fn ready_by(&self, is_done: impl Fn(&str) -> bool, is_started: impl Fn(&str) -> bool) -> Vec<String> {
        self.names
            .iter()
            .filter(|n| !is_started(n) && !is_done(n))
            .filter(|n| self.parents.get(*n).is_none_or(|ps| ps.iter().all(|p| is_done(p))))
            .cloned()
            .collect()
    }

    /// Tasks not yet started whose parents are all done, in declaration order.
    pub fn ready(&self, done: &BTreeSet<String>, started: &BTreeSet<String>) -> Vec<String> {
        self.names
            .iter()
            .filter(|n| !started.contains(*n) && !done.contains(*n))
            .filter(|n| self.parents.get(*n).is_none_or(|ps| ps.iter().all(|p| done.contains(p))))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Param;

    fn pt(name: &str, run_after: &[&str], uses: &[&str]) -> PipelineTask {
        PipelineTask {
            name: name.into(),
            run_after: run_after.iter().map(|s| s.to_string()).collect(),
            params: uses
                .iter()
                .map(|u| Param {
                    name: format!("p-{u}"),
                    value: ParamValue::Str(format!("x $(tasks.{u}.results.r) y")),
                })
                .collect(),
            ..Default::default()
        }
    }

    fn set(xs: &[&str]) -> BTreeSet<String> {
        xs.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn ready_sets_table() {
        // diamond: a -> b (runAfter), a -> c (result), b,c -> d
        let tasks = vec![pt("a", &[], &[]), pt("b", &["a"], &[]), pt("c", &[], &["a"]), pt("d", &["b"], &["c"])];
        let (dag, errs) = Dag::build(&tasks);
        assert!(errs.is_empty());
        let rows: &[(&[&str], &[&str], &[&str])] = &[
            (&[], &[], &["a"]),
            (&[], &["a"], &[]),
            (&["a"], &[], &["b", "c"]),
            (&["a"], &["b"], &["c"]),
            (&["a", "b"], &["c"], &[]),
            (&["a", "b", "c"], &[], &["d"]),
            (&["a", "b", "c", "d"], &[], &[]),
        ];
        for (done, started, want) in rows {
            assert_eq!(
                dag.ready(&set(done), &set(started)),
                set(want).into_iter().collect::<Vec<_>>(),
                "done={done:?} started={started:?}"
            );
        }
    }

    #[test]
    fn errors() {
        let (_, errs) = Dag::build(&[pt("a", &["zz"], &[])]);
        assert_eq!(errs, vec![DagError::Unknown { task: "a".into(), run_after_index: Some(0), missing: "zz".into() }]);
        let (_, errs) = Dag::build(&[pt("a", &["c"], &[]), pt("b", &["a"], &[]), pt("c", &[], &["b"])]);
        match &errs[..] {
            [DagError::Cycle { path }] => {
                assert_eq!(path.first(), path.last());
                assert_eq!(path.len(), 4);
            }
            other => panic!("{other:?}"),
        }
        let (_, errs) = Dag::build(&[pt("a", &["a"], &[])]);
        assert!(matches!(&errs[..], [DagError::Cycle { .. }]));
    }
}
