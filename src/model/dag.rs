//! The pipeline task graph: edges from `runAfter` and from result references. Pure.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::model::subst::{find_refs, Seg};
use crate::model::{ParamValue, PipelineTask};

/// Task names whose results `pt` consumes (`$(tasks.X.results...)`) in its params,
/// matrix, when expressions, and embedded steps.
pub fn result_deps(pt: &PipelineTask) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut visit = |s: &str| {
        for r in find_refs(s) {
            // a result reference names `tasks` and `results` (quoted or not): others are
            // not parsed (most are `$(params.x)`)
            if !(r.expr.contains("tasks") && r.expr.contains("results")) {
                continue;
            }
            if let Some(segs) = r.segs() {
                if let [Seg::Name(a), Seg::Name(t), Seg::Name(c), ..] = segs.as_slice() {
                    if a == "tasks" && c == "results" {
                        out.insert(t.clone());
                    }
                }
            }
        }
    };
    let visit_value = |v: &ParamValue, f: &mut dyn FnMut(&str)| v.texts().into_iter().for_each(f);
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
        crate::util::for_each_string(&ts.task, &mut visit);
    }
    if let Some(d) = &pt.display_name {
        visit(d);
    }
    out
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
        let no_parents = BTreeSet::new();
        // Depth-first, with an explicit stack: a chain of many thousands of tasks must not
        // exhaust the thread's stack. Each entry is a task on the current path and its
        // parents still to visit.
        for root in &self.names {
            if mark.get(root.as_str()) != Some(&Mark::New) {
                continue;
            }
            let mut path: Vec<(&str, std::collections::btree_set::Iter<'_, String>)> = Vec::new();
            mark.insert(root, Mark::Active);
            path.push((root, self.parents.get(root).unwrap_or(&no_parents).iter()));
            while let Some((n, parents)) = path.last_mut() {
                let n = *n;
                match parents.next() {
                    Some(p) => match mark.get(p.as_str()).copied() {
                        Some(Mark::Active) => {
                            let start = path.iter().position(|(s, _)| *s == p.as_str()).unwrap_or(0);
                            let mut cyc: Vec<String> = path[start..].iter().map(|(s, _)| s.to_string()).collect();
                            cyc.push(p.clone());
                            return Some(cyc);
                        }
                        Some(Mark::New) => {
                            mark.insert(p, Mark::Active);
                            path.push((p, self.parents.get(p).unwrap_or(&no_parents).iter()));
                        }
                        _ => {}
                    },
                    None => {
                        mark.insert(n, Mark::Done);
                        path.pop();
                    }
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

/// Incremental readiness for one phase of a run: which tasks have every parent done, in
/// declaration order, without rescanning the whole DAG after each finished task.
#[derive(Debug)]
pub struct Readiness {
    names: Vec<String>,
    index: HashMap<String, usize>,
    children: Vec<Vec<usize>>,
    /// Parents not yet done (a parent outside the phase is never done).
    left: Vec<usize>,
    done: Vec<bool>,
    taken: Vec<bool>,
    ready: BTreeSet<usize>,
}

impl Readiness {
    /// `phase`: the tasks scheduled together, in declaration order.
    pub fn new<'a>(dag: &Dag, phase: impl IntoIterator<Item = &'a str>) -> Readiness {
        let names: Vec<String> = phase.into_iter().map(str::to_string).collect();
        let index: HashMap<String, usize> = names.iter().enumerate().map(|(i, n)| (n.clone(), i)).collect();
        let mut children = vec![Vec::new(); names.len()];
        let mut left = vec![0; names.len()];
        for (i, n) in names.iter().enumerate() {
            for p in dag.parents.get(n).into_iter().flatten() {
                left[i] += 1;
                if let Some(&pi) = index.get(p) {
                    children[pi].push(i);
                }
            }
        }
        let ready = (0..names.len()).filter(|&i| left[i] == 0).collect();
        let n = names.len();
        Readiness { names, index, children, left, done: vec![false; n], taken: vec![false; n], ready }
    }

    /// Record that `name` finished (any outcome); idempotent.
    pub fn mark_done(&mut self, name: &str) {
        let Some(&i) = self.index.get(name) else { return };
        if std::mem::replace(&mut self.done[i], true) {
            return;
        }
        self.taken[i] = true;
        self.ready.remove(&i);
        for c in 0..self.children[i].len() {
            let c = self.children[i][c];
            self.left[c] -= 1;
            if self.left[c] == 0 && !self.taken[c] {
                self.ready.insert(c);
            }
        }
    }

    /// Tasks that became ready since the last call, in declaration order (each once).
    pub fn take_ready(&mut self) -> Vec<String> {
        let ready = std::mem::take(&mut self.ready);
        ready
            .into_iter()
            .filter(|&i| !std::mem::replace(&mut self.taken[i], true))
            .map(|i| self.names[i].clone())
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
    fn incremental_readiness_matches_the_ready_sets() {
        let tasks = vec![pt("a", &[], &[]), pt("b", &["a"], &[]), pt("c", &[], &["a"]), pt("d", &["b"], &["c"])];
        let (dag, _) = Dag::build(&tasks);
        let mut r = Readiness::new(&dag, ["a", "b", "c", "d"]);
        // (finished before the call, ready after it)
        let rows: &[(&[&str], &[&str])] =
            &[(&[], &["a"]), (&[], &[]), (&["a"], &["b", "c"]), (&["c"], &[]), (&["c", "b"], &["d"]), (&["d"], &[])];
        for (done, want) in rows {
            for d in *done {
                r.mark_done(d);
            }
            assert_eq!(r.take_ready(), *want, "after {done:?}");
        }
        // a parent outside the phase is never done: its child never becomes ready
        let mut r = Readiness::new(&dag, ["b", "d"]);
        assert!(r.take_ready().is_empty());
        r.mark_done("b");
        assert!(r.take_ready().is_empty());
        // a task finished before it was taken is never handed out
        let mut r = Readiness::new(&dag, ["a", "b", "c", "d"]);
        r.mark_done("a");
        assert_eq!(r.take_ready(), vec!["b", "c"]);
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

    #[test]
    fn a_long_chain_needs_no_deep_stack() {
        // 50,000 tasks, each after the previous, closed into a cycle; on a small stack
        let n = 50_000;
        let names: Vec<String> = (0..n).map(|i| format!("t{i}")).collect();
        let tasks: Vec<PipelineTask> = (0..n)
            .map(|i| {
                let prev = names[(i + n - 1) % n].as_str();
                pt(&names[i], if i == 0 { &[] } else { std::slice::from_ref(&prev) }, &[])
            })
            .collect();
        let mut cyclic = tasks.clone();
        cyclic[0].run_after = vec![names[n - 1].clone()];
        let (ok, bad) = std::thread::Builder::new()
            .stack_size(128 * 1024)
            .spawn(move || (Dag::build(&tasks).1, Dag::build(&cyclic).1))
            .unwrap()
            .join()
            .expect("no stack overflow");
        assert!(ok.is_empty(), "{ok:?}");
        match &bad[..] {
            [DagError::Cycle { path }] => assert_eq!(path.len(), n + 1),
            other => panic!("{:?}", other.len()),
        }
    }
}
