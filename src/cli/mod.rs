//! Command-line interface: argument definitions and the commands they run.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Args, Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;

use crate::engine::planner::{Decision as PlanDecision, PlannedTask};
use crate::engine::DEFAULT_MAX_RESULT_SIZE;
use crate::error::{Error, Outcome};
use crate::exec::kubernetes::KubeArgs;
use crate::exec::local::SandboxMode;
use crate::exec::ExecutorKind;
use crate::model::{self, Catalog, ParamValue};
use crate::promote::run::{promote_all, results_of, PromoteOptions, PromotionReport};
use crate::reconcile::{self, ReconcileError, RunSettings};
use crate::report::{PlanReport, RunReport, RunSummary, ValidationReport, API_VERSION};
use crate::store::SqliteStore;
use crate::telemetry::LogFormat;
use crate::ui::Console;

mod args;
mod cache;
mod render;

pub use args::*;
use cache::*;
use render::*;

pub use crate::reconcile::default_store;

/// Print a JSON document on stdout. A closed pipe is not an error.
fn print_json<T: serde::Serialize>(v: &T) -> Result<(), Error> {
    let s = serde_json::to_string_pretty(v).map_err(|e| Error::Usage(format!("cannot render JSON: {e}")))?;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{s}");
    Ok(())
}

fn load(dir: &Path) -> Result<Catalog, Error> {
    reconcile::load(dir)
}

pub async fn run(cli: Cli) -> Result<Outcome, Error> {
    match cli.command {
        Command::Validate(a) => validate(a),
        Command::Run(a) => run_cmd(a).await,
        Command::Plan(a) => plan_cmd(a, cli.verbose > 0).await,
        Command::Cache(c) => cache_cmd(c).await,
        Command::Promote(a) => promote_cmd(a),
        Command::History(a) => history_cmd(a),
        Command::Rollback(a) => hold_cmd(a, true),
        Command::Release(a) => hold_cmd(a, false),
        Command::Watch(a) => watch_cmd(a, cli.log_format).await,
        Command::PodFetch(a) => {
            crate::exec::kubernetes::pod_fetch(&a.registry, a.credentials_file.as_deref(), &a.list).await.map_err(
                |e| Error::Io { context: format!("pod-fetch: {e}"), source: std::io::Error::other("no input written") },
            )?;
            Ok(Outcome::Ok)
        }
    }
}

fn validate(a: ValidateArgs) -> Result<Outcome, Error> {
    let cat = load(&a.dir)?;
    let diags = model::validate(&cat);
    match a.output {
        OutputFormat::Json => {
            let objects = [
                ("Task", cat.tasks.len()),
                ("Pipeline", cat.pipelines.len()),
                ("PipelineRun", cat.pipeline_runs.len()),
                ("TaskRun", cat.task_runs.len()),
                ("StepAction", cat.step_actions.len()),
            ]
            .into_iter()
            .collect();
            print_json(&ValidationReport {
                api_version: API_VERSION,
                kind: "ValidationReport",
                valid: diags.is_empty(),
                errors: diags.0.clone(),
                objects,
            })?;
        }
        OutputFormat::Human => {
            let mut err = std::io::stderr().lock();
            for d in &diags.0 {
                let _ = writeln!(err, "{d}");
            }
            if diags.is_empty() {
                let n = cat.tasks.len()
                    + cat.pipelines.len()
                    + cat.pipeline_runs.len()
                    + cat.task_runs.len()
                    + cat.step_actions.len();
                let _ = writeln!(std::io::stdout(), "{} Tekton object(s) in {} file(s): valid", n, cat.files.len());
            } else {
                let _ = writeln!(err, "{} error(s)", diags.len());
            }
        }
    }
    if diags.is_empty() {
        Ok(Outcome::Ok)
    } else {
        Err(Error::Invalid { count: diags.len() })
    }
}

async fn plan_cmd(a: PlanArgs, verbose: bool) -> Result<Outcome, Error> {
    let output = a.output;
    let args = plan_run_args(a);
    let planned = plan_with(&args, false, verbose).await?;
    let mut plan = planned.plan.report(Some(planned.hashing));
    plan.remote_cache = planned.remote_cache;
    match output {
        OutputFormat::Json => print_json(&plan)?,
        OutputFormat::Human => print_plan_human(&plan),
    }
    Ok(Outcome::Ok)
}

/// `tenon cache pull DIR`: plan DIR with the shared cache, importing every record it has
/// for the plan's keys (outputs included, verified) into the local store.
async fn pull_cmd(a: PlanArgs) -> Result<Outcome, Error> {
    if a.remote.settings().is_none() {
        return Err(Error::Usage("cache pull needs --cache-repo URL (or TENON_CACHE_REPO)".into()));
    }
    let output = a.output;
    let args = plan_run_args(a);
    let planned = plan(&args, true).await?;
    let remote = planned.remote_cache.clone().unwrap_or_default();
    let tasks: Vec<&PlannedTask> = planned.plan.runs.iter().flat_map(|r| r.tasks.iter()).collect();
    let cached = tasks.iter().filter(|t| matches!(t.decision, PlanDecision::Cached(_))).count();
    match output {
        OutputFormat::Json => print_json(&serde_json::json!({
            "apiVersion": API_VERSION, "kind": "CachePull", "tasks": tasks.len(), "cached": cached, "remoteCache": remote,
        }))?,
        OutputFormat::Human => {
            let _ = writeln!(
                std::io::stdout(),
                "pulled {} record(s) ({} bytes) from {}; {cached} of {} task(s) are cached locally now",
                remote.hits,
                remote.bytes_in,
                remote.url,
                tasks.len()
            );
        }
    }
    Ok(if remote.unavailable { Outcome::RunFailed } else { Outcome::Ok })
}

fn plan_run_args(a: PlanArgs) -> RunArgs {
    RunArgs {
        dir: a.dir,
        flags: RunFlags {
            run: a.run,
            params: a.params,
            parallel: None,
            store: a.store,
            max_result_size: DEFAULT_MAX_RESULT_SIZE,
            pass_env: vec![],
            namespace: a.namespace,
            no_cache: false,
            sandbox: a.sandbox,
            executor: a.executor,
            kube: a.kube,
            keep_runs: crate::retention::DEFAULT_KEEP_RUNS,
            remote: a.remote,
        },
        quiet: true,
        promote: false,
        auth: GitAuthArgs {
            git_token_env: "TENON_GIT_TOKEN".into(),
            git_token_file: None,
            git_username: None,
            ssh_key: None,
            known_hosts: None,
            sign_with_ssh_key: None,
        },
        rerun: a.rerun,
        output: a.output,
    }
}

async fn run_cmd(a: RunArgs) -> Result<Outcome, Error> {
    let report = execute(&a).await?;
    if let Some(e) = &report.store_error {
        // the report is still printed (what ran, and where its logs are), then exit 3
        match a.output {
            OutputFormat::Json => print_json(&report)?,
            OutputFormat::Human => print_human(&report),
        }
        return Err(Error::Store(format!("tenon could not use its state directory, so what ran is not recorded: {e}")));
    }
    let promotion = if a.promote && report.all_ok() {
        let cat = load(&a.dir)?;
        let store = open_store(a.flags.store.as_ref())?;
        let opts = promote_options(a.flags.store.as_ref(), false, None, &a.auth, 8)?;
        Some(promote_all(&cat, &a.dir, &store, Some(&results_of(&report)), &opts)?)
    } else {
        None
    };
    match a.output {
        OutputFormat::Json => match &promotion {
            Some(p) => print_json(
                &serde_json::json!({"apiVersion": API_VERSION, "kind": "RunAndPromoteReport", "run": report, "promotion": p}),
            )?,
            None => print_json(&report)?,
        },
        OutputFormat::Human => {
            print_human(&report);
            if let Some(p) = &promotion {
                print_promotions(p);
            }
        }
    }
    let promotion_failed = promotion.as_ref().is_some_and(|p| p.failed());
    Ok(if report.all_ok() && !promotion_failed { Outcome::Ok } else { Outcome::RunFailed })
}

fn promote_options(
    store: Option<&PathBuf>,
    dry_run: bool,
    policy: Option<String>,
    auth: &GitAuthArgs,
    max_attempts: u32,
) -> Result<PromoteOptions, Error> {
    Ok(PromoteOptions {
        dry_run,
        policy,
        credentials: auth.credentials()?,
        state_dir: store.cloned().unwrap_or_else(default_store),
        max_attempts: max_attempts.max(1),
    })
}

fn promote_cmd(a: PromoteArgs) -> Result<Outcome, Error> {
    let cat = load(&a.dir)?;
    let diags = model::validate(&cat);
    if !diags.is_empty() {
        let mut err = std::io::stderr().lock();
        for d in &diags.0 {
            let _ = writeln!(err, "{d}");
        }
        return Err(Error::Invalid { count: diags.len() });
    }
    if cat.promotion_policies.is_empty() {
        return Err(Error::Usage(format!("no PromotionPolicy found in {}", a.dir.display())));
    }
    if let Some(p) = &a.policy {
        if !cat.promotion_policies.iter().any(|x| &x.name == p) {
            return Err(Error::Usage(format!("no PromotionPolicy named {p:?} in {}", a.dir.display())));
        }
    }
    let store = open_store(a.store.as_ref())?;
    let opts = promote_options(a.store.as_ref(), a.dry_run, a.policy.clone(), &a.auth, a.max_attempts)?;
    let report = promote_all(&cat, &a.dir, &store, None, &opts)?;
    match a.output {
        OutputFormat::Json => print_json(&report)?,
        OutputFormat::Human => print_promotions(&report),
    }
    Ok(if report.failed() { Outcome::RunFailed } else { Outcome::Ok })
}

/// `tenon rollback` (`rollback`) and `tenon release`.
fn hold_cmd(r: RollbackArgs, rollback: bool) -> Result<Outcome, Error> {
    let a = &r.common;
    let cat = load(&a.dir)?;
    let opts = promote_options(a.store.as_ref(), a.dry_run, a.policy.clone(), &a.auth, a.max_attempts)?;
    let report = if rollback {
        let Some(to) = r.to.as_deref() else {
            return Err(Error::Usage("tenon rollback needs --to ID (see `tenon history --env ENV`)".into()));
        };
        let store = open_store(a.store.as_ref())?;
        crate::promote::run::rollback(&cat, &a.dir, &store, &r.env, to, &r.by, &r.reason, &opts)
    } else if r.to.is_some() || !r.reason.is_empty() {
        return Err(Error::Usage("tenon release takes no --to or --reason: it lifts the hold on --env".into()));
    } else {
        crate::promote::run::release(&cat, &a.dir, &r.env, &r.by, &opts)
    }?;
    match a.output {
        OutputFormat::Json => print_json(&report)?,
        OutputFormat::Human => print_promotions(&report),
    }
    let ok = report
        .promotions
        .iter()
        .all(|p| matches!(p.state.as_str(), "Landed" | "AlreadyLanded" | "Proposed" | "NotHeld" | "DryRun"));
    Ok(if ok { Outcome::Ok } else { Outcome::RunFailed })
}

async fn watch_cmd(a: WatchArgs, log_format: LogFormat) -> Result<Outcome, Error> {
    let webhook_secret = match &a.webhook_secret_file {
        Some(f) => Some(
            std::fs::read_to_string(f)
                .map_err(|e| Error::Usage(format!("cannot read --webhook-secret-file {}: {e}", f.display())))?
                .trim()
                .to_string(),
        ),
        None => std::env::var(&a.webhook_secret_env).ok(),
    }
    .filter(|s| !s.is_empty());
    let source = match &a.git {
        Some(url) => crate::watch::Source::Git { url: url.clone(), branch: a.branch.clone() },
        None => crate::watch::Source::Dir(a.dir.clone().unwrap_or_else(|| PathBuf::from("."))),
    };
    let settings = a.flags.settings(&[]);
    let opts = crate::watch::WatchOptions {
        source,
        promote_opts: promote_options(a.flags.store.as_ref(), false, None, &a.auth, a.max_attempts)?,
        settings,
        quiet: a.quiet,
        listen: a.listen,
        listen_file: a.listen_file.clone(),
        debounce: a.debounce,
        poll: a.poll,
        interval: a.interval.max(std::time::Duration::from_millis(100)),
        max_backoff: a.max_backoff.max(std::time::Duration::from_secs(1)),
        webhook_secret,
        http_limits: crate::watch::http::Limits {
            read_timeout: a.http_read_timeout.max(std::time::Duration::from_millis(100)),
            max_connections: a.http_max_connections as usize,
        },
        once: a.once,
        shutdown: a.shutdown,
        shutdown_timeout: a.shutdown_timeout,
        promote: !a.no_promote,
        json_logs: log_format == LogFormat::Json,
        leader: None,
        stop: tokio_util::sync::CancellationToken::new(),
    };
    let mut opts = opts;
    let lease_stop = CancellationToken::new();
    let lease_task = if a.leader_elect {
        let k = &a.flags.kube;
        let client = crate::exec::kubernetes::client(k.kubeconfig.as_deref(), k.context.as_deref())
            .await
            .map_err(|e| Error::Usage(format!("--leader-elect: {e}")))?;
        let namespace = a
            .lease_namespace
            .clone()
            .or_else(|| k.k8s_namespace.clone())
            .unwrap_or_else(|| client.default_namespace().to_string());
        let identity = a.lease_identity.clone().filter(|s| !s.is_empty()).unwrap_or_else(|| {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_else(|_| "tenon".into());
            format!("{host}-{}", std::process::id())
        });
        let (tx, rx) = tokio::sync::watch::channel(false);
        opts.leader = Some(rx);
        tracing::info!(lease = %format!("{namespace}/{}", a.lease_name), %identity, "leader election: waiting for the lease");
        let (name, stop) = (a.lease_name.clone(), lease_stop.clone());
        Some(tokio::spawn(async move {
            if let Err(e) = crate::lease::hold_lease(client, namespace, name, identity, tx, stop).await {
                // the receiver then reads false for good: this replica never leads
                tracing::error!(error = %e, "leader election stopped; this replica will not reconcile");
            }
        }))
    } else {
        None
    };
    let outcome = crate::watch::watch(opts).await;
    lease_stop.cancel();
    if let Some(t) = lease_task {
        // release the lease so another replica takes over at once (bounded)
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), t).await;
    }
    outcome
}

fn history_cmd(a: HistoryArgs) -> Result<Outcome, Error> {
    let cat = load(&a.dir)?;
    if cat.promotion_policies.is_empty() {
        return Err(Error::Usage(format!("no PromotionPolicy found in {}", a.dir.display())));
    }
    let opts = promote_options(a.store.as_ref(), true, a.policy.clone(), &a.auth, 1)?;
    let (records, holds) = crate::promote::run::history(&cat, &a.dir, a.env.as_deref(), &opts)?;
    let time = |ns: i64| {
        humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_nanos(ns.max(0) as u64))
    };
    let short = |s: &str| crate::promote::git::short(s, 16).to_string();
    match a.output {
        OutputFormat::Json => print_json(
            &serde_json::json!({"apiVersion": API_VERSION, "kind": "PromotionHistory", "promotions": records, "holds": holds}),
        )?,
        OutputFormat::Human => {
            let mut out = std::io::stdout().lock();
            for r in &records {
                let what = match (r.restores.as_deref(), r.releases.as_deref()) {
                    (Some(to), _) => format!("rollback  restores {} and holds", short(to)),
                    (_, Some(h)) => format!("release   lifts the hold of {}", short(h)),
                    _ => format!("promotion {} {}", r.policy, r.subject_digest),
                };
                let _ = writeln!(out, "{}  {:10}  {}  {what}", time(r.decided_at_ns), r.environment, short(&r.id));
            }
            let _ = writeln!(out, "{} entr{}", records.len(), if records.len() == 1 { "y" } else { "ies" });
            for h in &holds {
                let _ = writeln!(out, "HELD {} since {}: {}", h.environment, time(h.held_at_ns), h.describe());
            }
        }
    }
    Ok(Outcome::Ok)
}

/// Load, validate and run the selected runs.
async fn execute(a: &RunArgs) -> Result<RunReport, Error> {
    let cat = load_valid(a)?;
    let console = Arc::new(Console::new(a.quiet));
    let cancel = CancellationToken::new();
    {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                cancel.cancel();
            }
        });
    }
    let settings = a.flags.settings(&a.rerun);
    Ok(reconcile::run_catalog(cat, &a.dir, &settings, console, cancel).await?.report)
}

/// Load, validate and plan the selected runs; `import`: planning imports what the shared
/// cache has (`cache pull`).
async fn plan(a: &RunArgs, import: bool) -> Result<reconcile::Planned, Error> {
    plan_with(a, import, false).await
}

/// [`plan`], recording each input file's digest source when `sources` (`tenon plan -v`).
async fn plan_with(a: &RunArgs, import: bool, sources: bool) -> Result<reconcile::Planned, Error> {
    let cat = load_valid(a)?;
    let mut settings = a.flags.settings(&a.rerun);
    settings.import_on_plan = import;
    settings.digest_sources = sources;
    reconcile::plan_catalog(cat, &a.dir, &settings).await
}

/// The directory's catalog when it is valid; otherwise the diagnostics are printed
/// (and, with `--output json`, a validation report) and nothing runs.
fn load_valid(a: &RunArgs) -> Result<crate::model::Catalog, Error> {
    match reconcile::load_valid(&a.dir)? {
        Ok(cat) => Ok(cat),
        Err(diags) => {
            if a.output == OutputFormat::Json {
                print_json(&ValidationReport {
                    api_version: API_VERSION,
                    kind: "ValidationReport",
                    valid: false,
                    errors: diags.0.clone(),
                    objects: Default::default(),
                })?;
            }
            let mut err = std::io::stderr().lock();
            for d in &diags.0 {
                let _ = writeln!(err, "{d}");
            }
            let _ = writeln!(err, "{} error(s); nothing was run", diags.len());
            Err(Error::Invalid { count: diags.len() })
        }
    }
}
