//! Which results and tasks a pipeline task refers to (`$(tasks.X...)`). Pure.

use std::collections::BTreeSet;

use crate::model::subst::{find_refs, Seg};
use crate::model::PipelineTask;

/// `(task, result)` pairs a pipeline task consumes.
pub fn result_refs(pt: &PipelineTask) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut texts: Vec<String> = Vec::new();
    for p in &pt.params {
        texts.extend(p.value.texts().into_iter().map(String::from));
    }
    if let Some(m) = &pt.matrix {
        for p in &m.params {
            texts.extend(p.value.texts().into_iter().map(String::from));
        }
        for i in &m.include {
            for p in &i.params {
                texts.extend(p.value.texts().into_iter().map(String::from));
            }
        }
    }
    for w in &pt.when {
        texts.extend(w.input.clone());
        texts.extend(w.values.clone().unwrap_or_default());
    }
    if let Some(ts) = &pt.task_spec {
        crate::util::for_each_string(&ts.task.steps, &mut |t| {
            if t.contains("$(") {
                texts.push(t.to_string())
            }
        });
    }
    for t in &texts {
        for r in find_refs(t) {
            if let Some(segs) = r.segs() {
                if let [Seg::Name(a), Seg::Name(task), Seg::Name(b), Seg::Name(res), ..] = segs.as_slice() {
                    if a == "tasks" && b == "results" {
                        out.push((task.clone(), res.clone()));
                    }
                }
            }
        }
    }
    out
}

/// Names `X` of every `$(tasks.X...)` a pipeline task mentions.
pub fn referenced_tasks(pt: &PipelineTask) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    crate::util::for_each_string(pt, &mut |t| {
        if !t.contains("tasks") {
            return;
        }
        for r in find_refs(t) {
            if let Some(segs) = r.segs() {
                if let [Seg::Name(a), Seg::Name(task), ..] = segs.as_slice() {
                    if a == "tasks" {
                        out.insert(task.clone());
                    }
                }
            }
        }
    });
    out
}
