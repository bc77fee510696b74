//! Command-line interface: argument definitions and the commands they run.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Args, Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;

use crate::engine::cached::CacheCtx;
use crate::engine::{Engine, EngineOptions, DEFAULT_MAX_RESULT_SIZE};
use crate::error::{Error, Outcome};
use crate::exec::kubernetes::{KubeArgs, KubernetesExecutor};
use crate::exec::local::{LocalExecutor, Sandbox, SandboxMode};
use crate::exec::ExecutorKind;
use crate::model::{self, Catalog, ParamValue};
use crate::promote::run::{promote_all, results_of, PromoteOptions, PromotionReport};
use crate::report::{HashingStats, PlanReport, RunReport, RunSummary, ValidationReport, API_VERSION};
use crate::store::SqliteStore;
use crate::telemetry::LogFormat;
use crate::ui::Console;

/// tenon runs Tekton pipelines incrementally, locally or on Kubernetes, and promotes
/// what passes back to git.
///
/// Point it at a directory of Tekton v1 manifests (Task, Pipeline, PipelineRun, TaskRun;
/// other kinds are ignored). `tenon validate` checks them like Tekton's admission webhook
/// does, with file:line:column errors; `tenon run` runs every PipelineRun and TaskRun it
/// finds with the local executor: each step is a process on this host.
///
/// Exit codes: 0 ok, 1 a run failed, 2 invalid input or usage, 3 tenon could not work
/// (e.g. its state directory is unusable).
#[derive(Debug, Parser)]
#[command(name = "tenon", version, about, long_about, max_term_width = 100)]
#[command(
    after_help = "Examples:\n  tenon validate examples/model-promotion\n  tenon run examples/model-promotion\n  tenon run examples/model-promotion --param learning-rate=0.2 --output json"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    /// Log format for diagnostics on stderr (`json` for services).
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// More log detail (-v info, -vv debug). `TENON_LOG` overrides (EnvFilter syntax).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Check manifests like Tekton would and print every problem with file:line:column.
    ///
    /// Exits 0 when there is nothing to report and 2 otherwise.
    Validate(ValidateArgs),
    /// Run every PipelineRun and TaskRun found in DIR (or the one named by --run).
    ///
    /// Step output streams to stderr prefixed `task/step`; the summary goes to stdout
    /// (with --output json, exactly one RunReport JSON document). Exits 0 when every run
    /// succeeds, 1 when one fails, 2 for invalid manifests or usage.
    Run(RunArgs),
    /// Say, for every task, whether a run would run it, reuse a cached result, or skip
    /// it, and why, without running anything.
    ///
    /// Reasons are specific: `input src/train.py changed (sha256 1f2e..->9a0b..)`,
    /// `param lr changed 0.1 -> 0.2`, `upstream result tasks.prepare.results.digest
    /// changed`, `task spec changed at steps[0].script`, `no earlier record`; a task whose
    /// key depends on a task that must run first says `run (after prepare)`. Exits 0, or 2
    /// for invalid manifests. `--output json` prints a `Plan` document (stable, for
    /// pull-request comments).
    Plan(PlanArgs),
    /// Inspect and maintain the cache: `ls`, `gc`, `verify`.
    #[command(subcommand)]
    Cache(CacheCommand),
    /// Judge the latest successful run of each PromotionPolicy's PipelineRun and commit
    /// the promotion to git (never force-pushing; retrying races; one commit per decision).
    ///
    /// `--dry-run` prints the gate table, the exact diff, the commit message with its
    /// trailers and the target ref, and pushes nothing. Exits 0 when every policy ended
    /// Landed, AlreadyLanded, NoChange, Superseded or GatesFailed; 1 on Conflicted or a
    /// failure; 2 for invalid manifests.
    Promote(PromoteArgs),
    /// List the promotions recorded in the ledger (`.tenon/promotions/<env>/`) on each
    /// policy's target branch, newest first.
    History(HistoryArgs),
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Only this environment.
    #[arg(long, value_name = "ENV")]
    pub env: Option<String>,
    /// Only this PromotionPolicy's target.
    #[arg(long, value_name = "NAME")]
    pub policy: Option<String>,
    #[arg(long, env = "TENON_STORE", value_name = "PATH")]
    pub store: Option<PathBuf>,
    #[command(flatten)]
    pub auth: GitAuthArgs,
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Human)]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct GitAuthArgs {
    /// Environment variable holding an HTTPS token for the target remote (never printed).
    #[arg(long, value_name = "VAR", default_value = "TENON_GIT_TOKEN")]
    pub git_token_env: String,
    /// File holding an HTTPS token for the target remote.
    #[arg(long, value_name = "PATH")]
    pub git_token_file: Option<PathBuf>,
    /// User name sent with the token (default x-access-token).
    #[arg(long, value_name = "NAME")]
    pub git_username: Option<String>,
    /// SSH private key for the target remote.
    #[arg(long, value_name = "PATH")]
    pub ssh_key: Option<PathBuf>,
    /// known_hosts file: with it, SSH host keys are checked strictly.
    #[arg(long, value_name = "PATH")]
    pub known_hosts: Option<PathBuf>,
}

impl GitAuthArgs {
    fn credentials(&self) -> Result<crate::promote::git::Credentials, Error> {
        let token = match &self.git_token_file {
            Some(f) => Some(
                std::fs::read_to_string(f)
                    .map_err(|e| Error::Usage(format!("cannot read --git-token-file {}: {e}", f.display())))?
                    .trim()
                    .to_string(),
            ),
            None => std::env::var(&self.git_token_env).ok().filter(|t| !t.is_empty()),
        };
        Ok(crate::promote::git::Credentials {
            token,
            username: self.git_username.clone(),
            ssh_key: self.ssh_key.clone(),
            known_hosts: self.known_hosts.clone(),
        })
    }
}

#[derive(Debug, Args)]
pub struct PromoteArgs {
    /// Directory of manifests (with the PromotionPolicy objects).
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Only this PromotionPolicy.
    #[arg(long, value_name = "NAME")]
    pub policy: Option<String>,
    /// Decide and show, but write nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[arg(long, env = "TENON_STORE", value_name = "PATH")]
    pub store: Option<PathBuf>,
    /// Push attempts before giving up on a moving branch (Conflicted).
    #[arg(long, default_value_t = 8)]
    pub max_attempts: u32,
    #[command(flatten)]
    pub auth: GitAuthArgs,
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Human)]
    pub output: OutputFormat,
}

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// List cache records, newest first.
    Ls(StoreArgs),
    /// Remove old records and unreferenced outputs. Never removes what the latest
    /// successful run of each PipelineRun/TaskRun used.
    Gc(GcArgs),
    /// Re-hash every stored output; exits 1 and lists them when any is corrupt.
    Verify(StoreArgs),
}

#[derive(Debug, Args)]
pub struct StoreArgs {
    /// tenon's state directory (see `tenon run --help`).
    #[arg(long, env = "TENON_STORE", value_name = "PATH")]
    pub store: Option<PathBuf>,
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Human)]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct GcArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Remove records older than this (Go/humantime duration: 7d, 36h, 90m).
    #[arg(long, value_name = "DURATION", value_parser = parse_age)]
    pub older_than: Option<std::time::Duration>,
    /// Remove the oldest records until stored outputs fit in this size (e.g. 10GiB, 500MB).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_size: Option<u64>,
}

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// Directory of manifests (also the repository tree).
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Plan only the PipelineRun or TaskRun with this name.
    #[arg(long = "run", value_name = "NAME")]
    pub run: Option<String>,
    /// Override a run param: NAME=VALUE (as for `tenon run`).
    #[arg(long = "param", short = 'p', value_name = "NAME=VALUE", value_parser = parse_param)]
    pub params: Vec<(String, ParamValue)>,
    /// tenon's state directory, where the cache lives.
    #[arg(long, env = "TENON_STORE", value_name = "PATH")]
    pub store: Option<PathBuf>,
    /// Plan as if these pipeline tasks were forced to run (`--rerun`). Repeatable.
    #[arg(long = "rerun", value_name = "TASK")]
    pub rerun: Vec<String>,
    /// The sandbox the run would use (it is part of cache keys); see `tenon run --help`.
    #[arg(long, value_enum, env = "TENON_SANDBOX", default_value_t = SandboxMode::Auto)]
    pub sandbox: SandboxMode,
    /// The executor the run would use (it is part of cache keys).
    #[arg(long, value_enum, env = "TENON_EXECUTOR", default_value_t = ExecutorKind::Local)]
    pub executor: ExecutorKind,
    #[command(flatten)]
    pub kube: KubeArgs,
    #[arg(long, default_value = "default")]
    pub namespace: String,
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Human)]
    pub output: OutputFormat,
}

fn parse_age(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e} (e.g. 7d, 36h, 90m)"))
}

fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (n, unit) = t.split_at(split);
    let n: f64 = n.parse().map_err(|_| format!("{s:?}: expected a size such as 500MB or 10GiB"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kb" => 1e3,
        "kib" => 1024.0,
        "m" | "mb" => 1e6,
        "mib" => 1024.0 * 1024.0,
        "g" | "gb" => 1e9,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tb" => 1e12,
        "tib" => 1024f64.powi(4),
        _ => return Err(format!("{s:?}: unknown unit (use B, KB, MB, GB, KiB, MiB, GiB)")),
    };
    Ok((n * mult) as u64)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Human,
    Json,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Directory (or file) of manifests.
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// `json` prints one ValidationReport document on stdout.
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Human)]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// Directory of manifests; it is also the repository tree that the
    /// `tenon.dev/repo-workspace` annotation binds.
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// Run only the PipelineRun or TaskRun with this name.
    #[arg(long = "run", value_name = "NAME")]
    pub run: Option<String>,
    /// Override a run param: NAME=VALUE. A VALUE that is a JSON list or object of
    /// strings (`["a","b"]`, `{"k":"v"}`) is an array or object param. Repeatable.
    #[arg(long = "param", short = 'p', value_name = "NAME=VALUE", value_parser = parse_param)]
    pub params: Vec<(String, ParamValue)>,
    /// Most TaskRuns running at once (default: number of CPUs).
    #[arg(long, value_name = "N")]
    pub parallel: Option<usize>,
    /// tenon's state directory: run directories, step logs, PVC-backed workspaces.
    /// Default: $XDG_CACHE_HOME/tenon or ~/.cache/tenon.
    #[arg(long, env = "TENON_STORE", value_name = "PATH")]
    pub store: Option<PathBuf>,
    /// Largest result a task may write, in bytes (Tekton's termination-message budget).
    #[arg(long, value_name = "BYTES", default_value_t = DEFAULT_MAX_RESULT_SIZE)]
    pub max_result_size: usize,
    /// Pass this host environment variable through to steps (steps otherwise see only
    /// their declared env plus a minimal PATH and HOME). Repeatable.
    #[arg(long = "pass-env", value_name = "NAME")]
    pub pass_env: Vec<String>,
    /// Namespace reported by $(context.*.namespace).
    #[arg(long, default_value = "default")]
    pub namespace: String,
    /// Do not stream step output to stderr (it is still saved to log files).
    #[arg(long, short)]
    pub quiet: bool,
    /// After the runs succeed, promote: judge them with the PromotionPolicies in DIR and
    /// commit the decisions to git (see `tenon promote --help`).
    #[arg(long)]
    pub promote: bool,
    #[command(flatten)]
    pub auth: GitAuthArgs,
    /// Run every task even when a cached result exists (results are still recorded).
    #[arg(long, env = "TENON_NO_CACHE", value_parser = clap::builder::BoolishValueParser::new())]
    pub no_cache: bool,
    /// How steps see the filesystem: `bwrap` runs each step in private mount and PID
    /// namespaces with a pod's paths (/tekton/results, /workspace/<name>, Task volumes);
    /// `host` uses host paths; `auto` picks bwrap when it is installed and works.
    #[arg(long, value_enum, env = "TENON_SANDBOX", default_value_t = SandboxMode::Auto)]
    pub sandbox: SandboxMode,
    /// Where tasks run: `local` (processes on this host) or `kubernetes` (one pod per
    /// TaskRun; see the --k8s-* flags). Part of cache keys.
    #[arg(long, value_enum, env = "TENON_EXECUTOR", default_value_t = ExecutorKind::Local)]
    pub executor: ExecutorKind,
    #[command(flatten)]
    pub kube: KubeArgs,
    /// Run this pipeline task even when a cached result exists. Repeatable.
    #[arg(long = "rerun", value_name = "TASK")]
    pub rerun: Vec<String>,
    /// `json` prints one RunReport document on stdout and nothing else there.
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Human)]
    pub output: OutputFormat,
}

fn parse_param(s: &str) -> Result<(String, ParamValue), String> {
    let (k, v) = s.split_once('=').ok_or_else(|| format!("expected NAME=VALUE, got {s:?}"))?;
    if k.is_empty() {
        return Err(format!("expected NAME=VALUE, got {s:?}"));
    }
    let t = v.trim_start();
    let value = if t.starts_with('[') || t.starts_with('{') {
        serde_json::from_str::<ParamValue>(v)
            .map_err(|e| format!("param {k}: {v:?} looks like JSON but is not a list or object of strings: {e}"))?
    } else {
        ParamValue::Str(v.to_string())
    };
    Ok((k.to_string(), value))
}

pub fn default_store() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("tenon");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".cache").join("tenon"),
        None => std::env::temp_dir().join("tenon"),
    }
}

/// Print a JSON document on stdout. A closed pipe is not an error.
fn print_json<T: serde::Serialize>(v: &T) -> Result<(), Error> {
    let s = serde_json::to_string_pretty(v).map_err(|e| Error::Usage(format!("cannot render JSON: {e}")))?;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{s}");
    Ok(())
}

fn load(dir: &Path) -> Result<Catalog, Error> {
    if !dir.exists() {
        return Err(Error::Usage(format!("{}: no such file or directory", dir.display())));
    }
    Ok(model::load_dir(dir))
}

pub async fn run(cli: Cli) -> Result<Outcome, Error> {
    match cli.command {
        Command::Validate(a) => validate(a),
        Command::Run(a) => run_cmd(a).await,
        Command::Plan(a) => plan_cmd(a).await,
        Command::Cache(c) => cache_cmd(c),
        Command::Promote(a) => promote_cmd(a),
        Command::History(a) => history_cmd(a),
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

async fn plan_cmd(a: PlanArgs) -> Result<Outcome, Error> {
    let args = RunArgs {
        dir: a.dir,
        run: a.run,
        params: a.params,
        parallel: None,
        store: a.store,
        max_result_size: DEFAULT_MAX_RESULT_SIZE,
        pass_env: vec![],
        namespace: a.namespace,
        quiet: true,
        no_cache: false,
        promote: false,
        auth: GitAuthArgs {
            git_token_env: "TENON_GIT_TOKEN".into(),
            git_token_file: None,
            git_username: None,
            ssh_key: None,
            known_hosts: None,
        },
        sandbox: a.sandbox,
        executor: a.executor,
        kube: a.kube,
        rerun: a.rerun,
        output: a.output,
    };
    let report = execute(&args, true).await?;
    let plan = PlanReport::from_dry_run(report);
    match a.output {
        OutputFormat::Json => print_json(&plan)?,
        OutputFormat::Human => {
            let mut out = std::io::stdout().lock();
            for r in &plan.runs {
                let _ = writeln!(
                    out,
                    "{} {}{}",
                    r.kind,
                    r.name,
                    r.pipeline.as_ref().map(|p| format!(" (pipeline {p})")).unwrap_or_default()
                );
                if let Some(e) = &r.error {
                    let _ = writeln!(out, "  cannot plan: {e}");
                }
                let w = r.tasks.iter().map(|t| t.name.len()).max().unwrap_or(4).max(4);
                for t in &r.tasks {
                    let first = t.reasons.first().cloned().unwrap_or_default();
                    let _ = writeln!(out, "  {:w$}  {:7}  {first}", t.name, t.decision);
                    for more in t.reasons.iter().skip(1) {
                        let _ = writeln!(out, "  {:w$}  {:7}  {more}", "", "");
                    }
                }
            }
            if let Some(h) = &plan.hashing {
                let _ =
                    writeln!(out, "inputs: {} files, {} hashed ({} bytes)", h.files, h.hashed_files, h.hashed_bytes);
            }
        }
    }
    Ok(Outcome::Ok)
}

fn open_store(dir: Option<&PathBuf>) -> Result<SqliteStore, Error> {
    let store = dir.cloned().unwrap_or_else(default_store);
    std::fs::create_dir_all(&store)
        .map_err(|e| Error::Io { context: format!("cannot create state directory {}", store.display()), source: e })?;
    SqliteStore::open(&store.join("cache")).map_err(|e| Error::Io {
        context: format!("cannot open the cache in {}: {e}", store.display()),
        source: std::io::Error::other(e.to_string()),
    })
}

fn cache_cmd(c: CacheCommand) -> Result<Outcome, Error> {
    let db = |e: crate::store::StoreError| Error::Io {
        context: "cache error".into(),
        source: std::io::Error::other(e.to_string()),
    };
    match c {
        CacheCommand::Ls(a) => {
            let s = open_store(a.store.as_ref())?;
            let list = s.list().map_err(db)?;
            match a.output {
                OutputFormat::Json => {
                    print_json(&serde_json::json!({"apiVersion": API_VERSION, "kind": "CacheList", "records": list}))?
                }
                OutputFormat::Human => {
                    let mut out = std::io::stdout().lock();
                    let _ = writeln!(
                        out,
                        "{:16}  {:24}  {:24}  {:>10}  {:>12}  CREATED",
                        "KEY", "RUN", "TASK", "DURATION", "OUTPUTS"
                    );
                    for r in &list {
                        let created = humantime::format_rfc3339_seconds(
                            std::time::UNIX_EPOCH + std::time::Duration::from_nanos(r.created_ns.max(0) as u64),
                        );
                        let _ = writeln!(
                            out,
                            "{:16}  {:24}  {:24}  {:>9.1}s  {:>12}  {created}",
                            &r.key[..16],
                            r.run,
                            r.task,
                            r.duration_ms as f64 / 1000.0,
                            r.output_bytes
                        );
                    }
                    let _ = writeln!(out, "{} record(s)", list.len());
                }
            }
            Ok(Outcome::Ok)
        }
        CacheCommand::Gc(a) => {
            if a.older_than.is_none() && a.max_size.is_none() {
                return Err(Error::Usage("cache gc needs --older-than DURATION and/or --max-size SIZE".into()));
            }
            let s = open_store(a.store.store.as_ref())?;
            let cut = a.older_than.map(|d| crate::hash::now_ns() - d.as_nanos() as i64);
            let (n, freed) = s.gc(cut, a.max_size).map_err(db)?;
            match a.store.output {
                OutputFormat::Json => print_json(
                    &serde_json::json!({"apiVersion": API_VERSION, "kind": "CacheGc", "removedRecords": n, "freedBytes": freed}),
                )?,
                OutputFormat::Human => {
                    let _ = writeln!(std::io::stdout(), "removed {n} record(s), freed {freed} bytes");
                }
            }
            Ok(Outcome::Ok)
        }
        CacheCommand::Verify(a) => {
            let s = open_store(a.store.as_ref())?;
            let (n, bad) = s.verify().map_err(db)?;
            match a.output {
                OutputFormat::Json => print_json(
                    &serde_json::json!({"apiVersion": API_VERSION, "kind": "CacheVerify", "objects": n, "corrupt": bad}),
                )?,
                OutputFormat::Human => {
                    let mut out = std::io::stdout().lock();
                    for b in &bad {
                        let _ = writeln!(out, "corrupt or missing: sha256:{b}");
                    }
                    let _ = writeln!(out, "{n} object(s) checked, {} corrupt", bad.len());
                }
            }
            Ok(if bad.is_empty() { Outcome::Ok } else { Outcome::RunFailed })
        }
    }
}

async fn run_cmd(a: RunArgs) -> Result<Outcome, Error> {
    let report = execute(&a, false).await?;
    let promotion = if a.promote && report.all_ok() {
        let cat = load(&a.dir)?;
        let store = open_store(a.store.as_ref())?;
        let opts = promote_options(a.store.as_ref(), false, None, &a.auth, 8)?;
        Some(promote_all(&cat, &a.dir, &store, Some(&results_of(&report)), &opts).map_err(Error::Usage)?)
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
    let report = promote_all(&cat, &a.dir, &store, None, &opts).map_err(Error::Usage)?;
    match a.output {
        OutputFormat::Json => print_json(&report)?,
        OutputFormat::Human => print_promotions(&report),
    }
    Ok(if report.failed() { Outcome::RunFailed } else { Outcome::Ok })
}

fn history_cmd(a: HistoryArgs) -> Result<Outcome, Error> {
    let cat = load(&a.dir)?;
    if cat.promotion_policies.is_empty() {
        return Err(Error::Usage(format!("no PromotionPolicy found in {}", a.dir.display())));
    }
    let opts = promote_options(a.store.as_ref(), true, a.policy.clone(), &a.auth, 1)?;
    let records = crate::promote::run::history(&cat, &a.dir, a.env.as_deref(), &opts).map_err(Error::Usage)?;
    match a.output {
        OutputFormat::Json => print_json(
            &serde_json::json!({"apiVersion": API_VERSION, "kind": "PromotionHistory", "promotions": records}),
        )?,
        OutputFormat::Human => {
            let mut out = std::io::stdout().lock();
            for r in &records {
                let at = humantime::format_rfc3339_seconds(
                    std::time::UNIX_EPOCH + std::time::Duration::from_nanos(r.decided_at_ns.max(0) as u64),
                );
                let _ = writeln!(
                    out,
                    "{at}  {:10}  {}  {}  {}",
                    r.environment,
                    &r.id[..16.min(r.id.len())],
                    r.policy,
                    r.subject_digest
                );
            }
            let _ = writeln!(out, "{} promotion(s)", records.len());
        }
    }
    Ok(Outcome::Ok)
}

fn print_promotions(r: &PromotionReport) {
    let mut out = std::io::stdout().lock();
    for p in &r.promotions {
        let _ = writeln!(
            out,
            "PromotionPolicy {} ({}): {}{}",
            p.policy,
            p.environment,
            p.state,
            if p.detail.is_empty() { String::new() } else { format!(": {}", p.detail) }
        );
        if !p.id.is_empty() {
            let _ =
                writeln!(out, "  id {}  subject {} {}", &p.id[..16.min(p.id.len())], p.subject_digest, p.subject_uri);
        }
        for g in &p.gates {
            let _ = writeln!(
                out,
                "  gate {} {} {:<10} observed {:<10} {}{}",
                if g.passed { "PASS" } else { "FAIL" },
                g.operator,
                g.threshold,
                g.observed.as_deref().unwrap_or("-").trim_end(),
                g.result,
                if g.note.is_empty() { String::new() } else { format!(" ({})", g.note) }
            );
        }
        if !p.target.is_empty() {
            let _ = writeln!(out, "  target {}", p.target);
        }
        if let Some(c) = &p.commit {
            let _ = writeln!(out, "  commit {c}");
        }
        for d in &p.diff {
            for l in d.lines() {
                let _ = writeln!(out, "  {l}");
            }
        }
        if p.state == "DryRun" {
            let _ = writeln!(out, "  message:");
            for l in p.message.lines() {
                let _ = writeln!(out, "    {l}");
            }
        }
    }
}

/// Load, validate and run (or, with `dry_run`, plan) the selected runs.
async fn execute(a: &RunArgs, dry_run: bool) -> Result<RunReport, Error> {
    let cat = load(&a.dir)?;
    let diags = model::validate(&cat);
    if !diags.is_empty() {
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
        return Err(Error::Invalid { count: diags.len() });
    }
    let names: Vec<&str> = cat
        .pipeline_runs
        .iter()
        .map(|r| r.name.as_str())
        .chain(cat.task_runs.iter().map(|r| r.name.as_str()))
        .collect();
    if names.is_empty() {
        return Err(Error::Usage(format!("no PipelineRun or TaskRun found in {}", a.dir.display())));
    }
    if let Some(want) = &a.run {
        if !names.contains(&want.as_str()) {
            let hint = names
                .iter()
                .min_by_key(|n| strsim::levenshtein(n, want))
                .map(|n| format!(" (did you mean {n:?}?)"))
                .unwrap_or_default();
            return Err(Error::Usage(format!(
                "no PipelineRun or TaskRun named {want:?} in {}{hint}; found: {}",
                a.dir.display(),
                names.join(", ")
            )));
        }
    }
    let store = a.store.clone().unwrap_or_else(default_store);
    std::fs::create_dir_all(&store)
        .map_err(|e| Error::Io { context: format!("cannot create state directory {}", store.display()), source: e })?;
    let mut pass_env = Vec::new();
    for name in &a.pass_env {
        if let Ok(v) = std::env::var(name) {
            pass_env.push((name.clone(), v));
        }
    }
    let console = Arc::new(if dry_run { Console::silent() } else { Console::new(a.quiet) });
    let state_dir = a.store.clone().unwrap_or_else(default_store);
    let _ = std::fs::create_dir_all(&state_dir);
    let mut image_digests = Default::default();
    let (exec, executor_id): (Arc<dyn crate::exec::Executor>, &str) = match a.executor {
        ExecutorKind::Local => {
            let sandbox = Sandbox::detect_cached(a.sandbox, &state_dir).map_err(Error::Usage)?;
            let id = if sandbox.is_bwrap() { "local+bwrap" } else { "local" };
            (Arc::new(LocalExecutor::new(pass_env, console.clone()).with_sandbox(sandbox)), id)
        }
        ExecutorKind::Kubernetes => {
            let k8s_err = |e: String| Error::Io {
                context: e,
                source: std::io::Error::other("the kubernetes executor cannot start"),
            };
            let k = KubernetesExecutor::connect(a.kube.clone(), &state_dir, console.clone()).await.map_err(k8s_err)?;
            if !dry_run {
                k.sweep().await.map_err(k8s_err)?;
            }
            image_digests = k.image_digests().await;
            (Arc::new(k), "kubernetes")
        }
    };
    let cancel = CancellationToken::new();
    {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                cancel.cancel();
            }
        });
    }
    let opts = EngineOptions {
        parallel: a
            .parallel
            .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2))
            .max(1),
        state_dir: store,
        repo_root: if a.dir.is_dir() {
            a.dir.clone()
        } else {
            a.dir.parent().map(Path::to_path_buf).unwrap_or_default()
        },
        param_overrides: a.params.clone(),
        max_result_size: a.max_result_size,
        namespace: a.namespace.clone(),
    };
    let cat = Arc::new(cat);
    let store = Arc::new(open_store(Some(&opts.state_dir))?);
    let rerun: std::collections::BTreeSet<String> = a.rerun.iter().cloned().collect();
    let mut cache_ctx = CacheCtx::new(store, a.no_cache, rerun, dry_run)
        .map_err(|e| Error::Io { context: e, source: std::io::Error::other("stat cache") })?;
    cache_ctx.executor = executor_id.to_string();
    cache_ctx.image_digests = image_digests;
    let cache = Arc::new(cache_ctx);
    let engine = Engine::new(cat.clone(), exec, opts, console.clone(), cancel.clone()).with_cache(cache.clone());
    let mut runs = Vec::new();
    for pr in cat.pipeline_runs.iter().filter(|r| a.run.as_ref().is_none_or(|n| n == &r.name)) {
        runs.push(engine.run_pipeline_run(pr).await);
        if cancel.is_cancelled() {
            break;
        }
    }
    for tr in cat.task_runs.iter().filter(|r| a.run.as_ref().is_none_or(|n| n == &r.name)) {
        if cancel.is_cancelled() {
            break;
        }
        runs.push(engine.run_task_run(tr).await);
    }
    cache.flush();
    let mut report = RunReport::new(runs);
    use std::sync::atomic::Ordering;
    report.hashing = Some(HashingStats {
        files: cache.hash_stats.files.load(Ordering::Relaxed),
        hashed_files: cache.hash_stats.hashed_files.load(Ordering::Relaxed),
        hashed_bytes: cache.hash_stats.hashed_bytes.load(Ordering::Relaxed),
    });
    Ok(report)
}

fn print_human(report: &RunReport) {
    let mut out = std::io::stdout().lock();
    for r in &report.runs {
        let _ = writeln!(out, "{}", run_header(r));
        if !r.tasks.is_empty() {
            let w = r.tasks.iter().map(|t| t.name.len()).max().unwrap_or(4).max(4);
            let _ = writeln!(out, "  {:w$}  {:9}  {:>8}  {:>9}  REASON", "TASK", "STATUS", "ATTEMPTS", "DURATION");
            for t in &r.tasks {
                let reason = if t.status == "Succeeded" {
                    String::new()
                } else if t.message.is_empty() {
                    t.reason.clone()
                } else {
                    format!("{}: {}", t.reason, t.message)
                };
                let _ = writeln!(
                    out,
                    "  {:w$}  {:9}  {:>8}  {:>8.1}s  {}",
                    t.name,
                    t.status,
                    t.attempts,
                    t.duration_ms as f64 / 1000.0,
                    reason
                );
            }
        }
        for (k, v) in &r.results {
            let _ = writeln!(out, "  result {k} = {v}");
        }
        if let Some(d) = &r.run_dir {
            let _ = writeln!(out, "  logs: {d}");
        }
    }
}

fn run_header(r: &RunSummary) -> String {
    format!("{} {}: {} ({}) in {:.1}s", r.kind, r.name, r.status, r.reason, r.duration_ms as f64 / 1000.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn param_flag_forms() {
        assert_eq!(parse_param("a=b=c").unwrap(), ("a".into(), ParamValue::Str("b=c".into())));
        assert_eq!(parse_param("a=").unwrap(), ("a".into(), ParamValue::Str("".into())));
        assert_eq!(parse_param("a=[\"x\",\"y\"]").unwrap().1, ParamValue::Array(vec!["x".into(), "y".into()]));
        assert!(matches!(parse_param("o={\"k\":\"v\"}").unwrap().1, ParamValue::Object(_)));
        assert!(parse_param("noequals").is_err());
        assert!(parse_param("=v").is_err());
        assert!(parse_param("a=[1,").is_err());
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
