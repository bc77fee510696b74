//! Planning cost for a large pipeline: 1,000 tasks in a layered DAG, each an embedded
//! taskSpec with a param and a result, `runAfter` on a few tasks of the previous layer,
//! and a chain of result references (each task of a layer consumes a result of one of
//! the layer before).
//!
//! Run: `cargo bench --bench planning`. Target (issue 15): a complete `tenon plan` of it,
//! as a process, under 50 ms (see bench/NOTES.md for the process numbers).
//!
//! - `load_validate`: YAML text -> catalog (`load_sources`) -> `validate`.
//! - `plan_no_cache`: the planner alone: the scheduler's facts, every TaskRun prepared,
//!   no cache (no SQLite, no tokio runtime).
//! - `plan_sqlite`: the planner against an empty SQLite store, as `tenon plan` does
//!   after loading (keys computed, looked up, misses explained).
//! - `load_validate_plan`: both, i.e. `tenon plan` minus process start and store open.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use tenon::engine::cached::CacheCtx;
use tenon::engine::planner::Planner;
use tenon::engine::{EngineOptions, DEFAULT_MAX_RESULT_SIZE};
use tenon::model::{load_sources, validate, Catalog};
use tenon::store::SqliteStore;

const TASKS: usize = 1_000;
const LAYERS: usize = 20;
const FAN_IN: usize = 3;

/// A Pipeline of `TASKS` tasks in `LAYERS` layers, and a PipelineRun of it.
fn pipeline_yaml() -> String {
    let per_layer = TASKS / LAYERS;
    let mut y = String::new();
    y.push_str(
        "apiVersion: tekton.dev/v1\nkind: Pipeline\nmetadata:\n  name: big\nspec:\n  params:\n    - name: greeting\n      type: string\n      default: hello\n  tasks:\n",
    );
    for l in 0..LAYERS {
        for i in 0..per_layer {
            let name = format!("t-{l:02}-{i:03}");
            writeln!(y, "    - name: {name}").unwrap();
            if l > 0 {
                y.push_str("      runAfter:\n");
                for k in 0..FAN_IN {
                    let p = (i * 7 + k * 13) % per_layer;
                    writeln!(y, "        - t-{:02}-{p:03}", l - 1).unwrap();
                }
            }
            let up = if l > 0 {
                format!("$(tasks.t-{:02}-{:03}.results.out)", l - 1, (i * 7) % per_layer)
            } else {
                "start".to_string()
            };
            writeln!(
                y,
                "      params:\n        - name: msg\n          value: \"$(params.greeting) from {name}\"\n        - name: up\n          value: \"{up}\"\n      taskSpec:\n        params:\n          - name: msg\n            type: string\n          - name: up\n            type: string\n        results:\n          - name: out\n        steps:\n          - name: say\n            image: alpine\n            script: |\n              echo \"$(params.msg) after $(params.up)\" layer {l} | tee $(results.out.path)"
            )
            .unwrap();
        }
    }
    y.push_str(
        "---\napiVersion: tekton.dev/v1\nkind: PipelineRun\nmetadata:\n  name: big-run\nspec:\n  pipelineRef:\n    name: big\n  params:\n    - name: greeting\n      value: hi\n",
    );
    y
}

fn load(yaml: &str) -> Catalog {
    load_sources(vec![("p.yaml".into(), yaml.to_string())])
}

fn load_validate(yaml: &str) -> Catalog {
    let cat = load(yaml);
    let d = validate(&cat);
    assert!(d.is_empty(), "generated pipeline is invalid: {:?}", d.0.first());
    cat
}

fn options(state: &Path) -> EngineOptions {
    EngineOptions {
        parallel: 2,
        state_dir: state.to_path_buf(),
        repo_root: state.to_path_buf(),
        param_overrides: vec![],
        max_result_size: DEFAULT_MAX_RESULT_SIZE,
        namespace: "default".into(),
    }
}

/// One plan of the catalog's first PipelineRun; the number of rows.
fn plan(cat: &Catalog, opts: &EngineOptions, cache: Option<&Arc<CacheCtx>>) -> usize {
    let planned = Planner::new(cat, opts, cache).plan_pipeline_run(&cat.pipeline_runs[0]);
    assert!(planned.error.is_none(), "{:?}", planned.error);
    planned.tasks.len()
}

fn bench_planning(c: &mut Criterion) {
    let yaml = pipeline_yaml();
    let state = tempfile::tempdir().unwrap();
    let opts = options(state.path());
    let store = Arc::new(SqliteStore::open(&state.path().join("cache")).unwrap());
    let cache = Arc::new(CacheCtx::new(store, false, BTreeSet::new()).expect("cache ctx"));

    // one checked pass, and a breakdown printed once (criterion's numbers are the reference)
    let t = std::time::Instant::now();
    let cat = load_validate(&yaml);
    let t_load = t.elapsed();
    let t = std::time::Instant::now();
    let n = plan(&cat, &opts, Some(&cache));
    let t_plan = t.elapsed();
    assert_eq!(n, TASKS, "every task is in the plan");
    eprintln!(
        "planning: {TASKS} tasks, {} KiB of YAML; first pass: load+validate {:.1} ms, plan {:.1} ms",
        yaml.len() / 1024,
        t_load.as_secs_f64() * 1e3,
        t_plan.as_secs_f64() * 1e3
    );

    let mut g = c.benchmark_group("planning_1000_tasks");
    g.sample_size(10).measurement_time(Duration::from_secs(5)).warm_up_time(Duration::from_secs(1));
    g.bench_function("load_validate", |b| b.iter(|| black_box(load_validate(&yaml))));
    g.bench_function("load_only", |b| b.iter(|| black_box(load(&yaml))));
    g.bench_function("validate_only", |b| b.iter(|| black_box(validate(&cat))));
    g.bench_function("plan_no_cache", |b| b.iter(|| black_box(plan(&cat, &opts, None))));
    g.bench_function("plan_sqlite", |b| b.iter(|| black_box(plan(&cat, &opts, Some(&cache)))));
    g.bench_function("load_validate_plan", |b| {
        b.iter(|| {
            let cat = load_validate(&yaml);
            black_box(plan(&cat, &opts, Some(&cache)))
        })
    });
    g.finish();
}

criterion_group!(benches, bench_planning);
criterion_main!(benches);
