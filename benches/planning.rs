//! Planning cost for a large pipeline: 1,000 tasks in a layered DAG, each an embedded
//! taskSpec with a param, `runAfter` on a few tasks of the previous layer.
//!
//! Run: `cargo bench --bench planning`. Target: a full dry-run plan of 1,000 tasks in
//! under 100 ms.
//!
//! - `load_validate`: YAML text -> catalog (`load_sources`) -> `validate`.
//! - `plan_dry_run`: `Engine::run_pipeline_run` with a dry-run cache on an empty store
//!   (every task: "no earlier record", would run), as `tenon plan` does after loading.
//! - `load_validate_plan`: both, i.e. `tenon plan` minus process start and store open.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use tenon::engine::cached::CacheCtx;
use tenon::engine::{Engine, EngineOptions, DEFAULT_MAX_RESULT_SIZE};
use tenon::exec::local::LocalExecutor;
use tenon::model::{load_sources, validate, Catalog};
use tenon::store::SqliteStore;
use tenon::ui::Console;
use tokio_util::sync::CancellationToken;

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
            writeln!(
                y,
                "      params:\n        - name: msg\n          value: \"$(params.greeting) from {name}\"\n      taskSpec:\n        params:\n          - name: msg\n            type: string\n        steps:\n          - name: say\n            image: alpine\n            script: |\n              echo \"$(params.msg)\" layer {l}"
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

/// One dry-run plan of the catalog's first PipelineRun, as `tenon plan` wires it.
async fn plan(cat: Arc<Catalog>, state: &Path, store: Arc<SqliteStore>) -> usize {
    let console = Arc::new(Console::silent());
    let exec = Arc::new(LocalExecutor::new(vec![], console.clone()));
    let opts = EngineOptions {
        parallel: 2,
        state_dir: state.to_path_buf(),
        repo_root: state.to_path_buf(),
        param_overrides: vec![],
        max_result_size: DEFAULT_MAX_RESULT_SIZE,
        namespace: "default".into(),
    };
    let cache = Arc::new(CacheCtx::new(store, false, BTreeSet::new(), true).expect("cache ctx"));
    let engine = Engine::new(cat.clone(), exec, opts, console, CancellationToken::new()).with_cache(cache.clone());
    let summary = engine.run_pipeline_run(&cat.pipeline_runs[0]).await;
    cache.flush();
    assert_eq!(summary.status, "Succeeded", "{}: {}", summary.reason, summary.message);
    summary.tasks.len()
}

fn bench_planning(c: &mut Criterion) {
    let yaml = pipeline_yaml();
    let state = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(&state.path().join("cache")).unwrap());
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();

    // one checked pass, and a breakdown printed once (criterion's numbers are the reference)
    let t = std::time::Instant::now();
    let cat = Arc::new(load_validate(&yaml));
    let t_load = t.elapsed();
    let t = std::time::Instant::now();
    let n = rt.block_on(plan(cat.clone(), state.path(), store.clone()));
    let t_plan = t.elapsed();
    assert_eq!(n, TASKS, "every task is in the plan");
    eprintln!(
        "planning: {TASKS} tasks, {} KiB of YAML; first pass: load+validate {:.1} ms, dry-run plan {:.1} ms",
        yaml.len() / 1024,
        t_load.as_secs_f64() * 1e3,
        t_plan.as_secs_f64() * 1e3
    );

    let mut g = c.benchmark_group("planning_1000_tasks");
    g.sample_size(10).measurement_time(Duration::from_secs(5)).warm_up_time(Duration::from_secs(1));
    g.bench_function("load_validate", |b| b.iter(|| black_box(load_validate(&yaml))));
    g.bench_function("load_only", |b| b.iter(|| black_box(load(&yaml))));
    g.bench_function("validate_only", |b| b.iter(|| black_box(validate(&cat))));
    g.bench_function("plan_dry_run", |b| {
        b.iter(|| black_box(rt.block_on(plan(cat.clone(), state.path(), store.clone()))))
    });
    g.bench_function("load_validate_plan", |b| {
        b.iter(|| {
            let cat = Arc::new(load_validate(&yaml));
            black_box(rt.block_on(plan(cat, state.path(), store.clone())))
        })
    });
    g.finish();
}

criterion_group!(benches, bench_planning);
criterion_main!(benches);
