//! Command-line interface: argument definitions and the commands they run.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::{Args, Parser, Subcommand, ValueEnum};
use tokio_util::sync::CancellationToken;

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
    /// trailers and the target ref, and pushes nothing. An environment held by `tenon
    /// rollback` is reported Held and nothing is committed. Exits 0 when every policy ended
    /// Landed, AlreadyLanded, NoChange, Superseded, GatesFailed, Held or Proposed (branch
    /// mode); 1 on Conflicted or a failure; 2 for invalid manifests.
    Promote(PromoteArgs),
    /// Follow a directory or a git branch and reconcile every change: plan, run what
    /// changed, promote. Serves /healthz, /readyz, /metrics (Prometheus) and /status
    /// (JSON), and POST /hooks/git for push webhooks.
    ///
    /// Runs until SIGTERM/SIGINT (graceful: stops fetching, cancels or finishes running
    /// tasks per --shutdown, kills their process groups). With --once, reconciles the
    /// current state and exits (0 ok, 1 a run failed or the manifests are invalid, 3 the
    /// remote could not be fetched).
    #[command(
        after_help = "Examples:\n  tenon watch --dir examples/model-promotion\n  tenon watch --git https://git.example.com/ml/models.git --branch main --interval 30s --webhook-secret-file /run/secrets/hook\n  tenon watch --git file:///srv/git/models.git --once"
    )]
    Watch(WatchArgs),
    /// List the promotions recorded in the ledger (`.tenon/promotions/<env>/`) on each
    /// policy's target branch, newest first: promotions, rollbacks, releases, and holds.
    History(HistoryArgs),
    /// Restore the field values an earlier promotion set (a new promotion, with its own
    /// id) and hold ENV: automatic promotion reports `Held` and commits nothing until
    /// `tenon release --env ENV`. Exits 0 when it landed (or already had), 1 otherwise.
    Rollback(RollbackArgs),
    /// Remove the hold `tenon rollback` placed on ENV (in a commit; nothing held: no commit).
    Release(RollbackArgs),
}

#[derive(Debug, Args)]
pub struct RollbackArgs {
    /// The environment (a PromotionPolicy's spec.environment).
    #[arg(long, value_name = "ENV")]
    pub env: String,
    /// The promotion to restore: its id or a unique prefix (see `tenon history`). Rollback only.
    #[arg(long, value_name = "ID")]
    pub to: Option<String>,
    /// Why (recorded in the hold). Rollback only.
    #[arg(long, value_name = "TEXT", default_value = "")]
    pub reason: String,
    /// Who (recorded in the hold and the release).
    #[arg(long, value_name = "NAME", env = "USER", default_value = "unknown")]
    pub by: String,
    /// DIR, --policy (when policies of ENV write to different targets), --dry-run, ...
    #[command(flatten)]
    pub common: PromoteArgs,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Follow this directory (filesystem events; the default source is `.`).
    #[arg(long, value_name = "DIR", conflicts_with = "git")]
    pub dir: Option<PathBuf>,
    /// Follow this git remote: a persistent clone under the state directory, fetched
    /// every --interval and on webhooks; each new revision of --branch is reconciled once.
    #[arg(long, value_name = "URL")]
    pub git: Option<String>,
    /// The branch to follow (git mode).
    #[arg(long, default_value = "main", requires = "git")]
    pub branch: String,
    /// How often to fetch (git mode).
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_age)]
    pub interval: std::time::Duration,
    /// Longest wait between retries of an unreachable remote (exponential backoff).
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_age)]
    pub max_backoff: std::time::Duration,
    /// Changes closer together than this are one change (directory mode).
    #[arg(long, value_name = "DURATION", default_value = "100ms", value_parser = parse_age)]
    pub debounce: std::time::Duration,
    /// Poll the directory instead of using native filesystem events.
    #[arg(long)]
    pub poll: bool,
    /// Address of the HTTP endpoint (port 0: any free port; see --listen-file).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9090")]
    pub listen: std::net::SocketAddr,
    /// Write the bound HTTP address to this file once listening.
    #[arg(long, value_name = "PATH")]
    pub listen_file: Option<PathBuf>,
    /// File holding the webhook secret (HMAC-SHA256 key for GitHub/Gitea, token for GitLab).
    /// With a secret, unsigned or wrongly signed webhooks are rejected.
    #[arg(long, value_name = "PATH")]
    pub webhook_secret_file: Option<PathBuf>,
    /// Environment variable holding the webhook secret (never printed).
    #[arg(long, value_name = "VAR", default_value = "TENON_WEBHOOK_SECRET")]
    pub webhook_secret_env: String,
    /// A request's head and body must arrive within this time after the client connects;
    /// slower clients are closed (408 for a webhook body).
    #[arg(long, value_name = "DURATION", default_value = "20s", value_parser = parse_age)]
    pub http_read_timeout: std::time::Duration,
    /// Open HTTP connections at most; past it the oldest is closed, so that /healthz and
    /// /readyz always answer.
    #[arg(long, value_name = "N", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    pub http_max_connections: u32,
    /// Reconcile the current state (directory or branch tip) once and exit.
    #[arg(long)]
    pub once: bool,
    /// On SIGTERM/SIGINT: `cancel` running tasks at once, or let them `finish` (up to
    /// --shutdown-timeout, then cancel).
    #[arg(long, value_enum, default_value_t = crate::watch::ShutdownMode::Cancel)]
    pub shutdown: crate::watch::ShutdownMode,
    /// Longest wait for running tasks on shutdown.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = parse_age)]
    pub shutdown_timeout: std::time::Duration,
    /// Do not promote after successful reconciles.
    #[arg(long)]
    pub no_promote: bool,
    /// Reconcile and promote only while holding a coordination.k8s.io/v1 Lease (for several
    /// replicas in a cluster): the others serve /healthz and /status and wait. Uses the
    /// --k8s-kubeconfig / --k8s-context / in-cluster configuration.
    #[arg(long, env = "TENON_LEADER_ELECT", value_parser = clap::builder::BoolishValueParser::new())]
    pub leader_elect: bool,
    /// The Lease's name.
    #[arg(long, value_name = "NAME", default_value = "tenon-leader", requires = "leader_elect")]
    pub lease_name: String,
    /// The Lease's namespace (default: --k8s-namespace, else the kubeconfig's or pod's namespace).
    #[arg(long, value_name = "NS", requires = "leader_elect")]
    pub lease_namespace: Option<String>,
    /// This replica's identity in the Lease (default: $POD_NAME, else the host name and pid).
    // (no `requires`: $POD_NAME is set in every pod, with or without --leader-elect)
    #[arg(long, value_name = "ID", env = "POD_NAME")]
    pub lease_identity: Option<String>,
    /// Push attempts before a promotion gives up on a moving branch (Conflicted).
    #[arg(long, default_value_t = 8)]
    pub max_attempts: u32,
    #[command(flatten)]
    pub flags: RunFlags,
    /// Do not stream step output to stderr (it is still saved to log files).
    #[arg(long, short)]
    pub quiet: bool,
    #[command(flatten)]
    pub auth: GitAuthArgs,
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
    /// Sign tenon's commits with this SSH private key (no passphrase), in git's SSH
    /// signature format (`ssh-keygen -Y sign -n git`; verify with gpg.format=ssh).
    #[arg(long, value_name = "PATH")]
    pub sign_with_ssh_key: Option<PathBuf>,
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
            signing_key: self.sign_with_ssh_key.clone(),
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
    /// List cache records, newest first (`--remote`: the records in the shared cache).
    Ls(LsArgs),
    /// Push to the shared cache (`--cache-repo`) the records the latest successful run of
    /// each PipelineRun/TaskRun used, outputs included, like `dvc push`. Records already
    /// there are left alone (the first writer wins).
    Push(RemoteStoreArgs),
    /// Import from the shared cache every record DIR's runs would use (outputs included,
    /// every byte verified) into the local store, like `dvc pull`; nothing runs. Exits 1
    /// when the registry could not be used.
    Pull(PlanArgs),
    /// Remove old records and unreferenced outputs. Never removes what the latest
    /// successful run of each PipelineRun/TaskRun used.
    Gc(GcArgs),
    /// Re-hash every stored output; exits 1 and lists them when any is corrupt or
    /// missing. With --repair, removes those objects and the records that name them
    /// (their tasks rerun and store them again) and exits 0.
    Verify(VerifyArgs),
    /// Move a broken store (`<state>/cache`: records, outputs, the stat cache) aside to
    /// `<state>/cache.broken-<time>` and print where; the next run starts with an empty
    /// cache. Run directories, PVC directories and watch clones are kept.
    Reset(StoreArgs),
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Remove corrupt objects and evict the records naming them (or a missing object).
    #[arg(long)]
    pub repair: bool,
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
pub struct LsArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// List the records in the shared cache (`--cache-repo`) instead of the local ones.
    #[arg(long)]
    pub remote: bool,
    #[command(flatten)]
    pub remote_args: RemoteArgs,
}

#[derive(Debug, Args)]
pub struct RemoteStoreArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

#[derive(Debug, Args)]
pub struct GcArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Delete old records from the shared cache (`--cache-repo`) instead: each record
    /// older than --older-than is deleted by its manifest digest, except the ones the local
    /// store protects (the records its latest successful runs used). The registry's own
    /// garbage collection (`registry garbage-collect --delete-untagged`, with the registry
    /// stopped or read-only) then frees the blobs no record names.
    #[arg(long)]
    pub remote: bool,
    #[command(flatten)]
    pub remote_args: RemoteArgs,
    /// Remove records older than this (Go/humantime duration: 7d, 36h, 90m).
    #[arg(long, value_name = "DURATION", value_parser = parse_age)]
    pub older_than: Option<std::time::Duration>,
    /// Remove the oldest records until stored outputs fit in this size (e.g. 10GiB, 500MB).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub max_size: Option<u64>,
    /// Keep this many run directories per PipelineRun/TaskRun name (default 5; the
    /// latest successful run's and those in progress are always kept).
    #[arg(long, env = "TENON_KEEP_RUNS", value_name = "N")]
    pub keep_runs: Option<usize>,
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
    #[command(flatten)]
    pub remote: RemoteArgs,
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
    #[command(flatten)]
    pub flags: RunFlags,
    /// Do not stream step output to stderr (it is still saved to log files).
    #[arg(long, short)]
    pub quiet: bool,
    /// After the runs succeed, promote: judge them with the PromotionPolicies in DIR and
    /// commit the decisions to git (see `tenon promote --help`).
    #[arg(long)]
    pub promote: bool,
    #[command(flatten)]
    pub auth: GitAuthArgs,
    /// Run this pipeline task even when a cached result exists. Repeatable.
    #[arg(long = "rerun", value_name = "TASK")]
    pub rerun: Vec<String>,
    /// `json` prints one RunReport document on stdout and nothing else there.
    #[arg(long, short, value_enum, default_value_t = OutputFormat::Human)]
    pub output: OutputFormat,
}

/// How runs run: the flags `tenon run` and `tenon watch` share.
#[derive(Debug, Clone, Args)]
pub struct RunFlags {
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
    /// tenon's state directory: run directories, step logs, PVC-backed workspaces, the
    /// cache (and for `watch`, the git clone and the reconciled revisions).
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
    /// Run directories (`<store>/runs/<run>/<id>`: logs, restored outputs) kept per
    /// PipelineRun/TaskRun name; older ones are removed when a run (or a watch reconcile)
    /// ends. The latest successful run's and those in progress are always kept.
    #[arg(long, env = "TENON_KEEP_RUNS", value_name = "N", default_value_t = crate::retention::DEFAULT_KEEP_RUNS)]
    pub keep_runs: usize,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

/// The shared cache in an OCI registry: the flags `run`, `plan`, `watch` and `cache`
/// share.
#[derive(Debug, Clone, Args, Default)]
#[command(next_help_heading = "Shared cache (OCI registry)")]
pub struct RemoteArgs {
    /// Share the cache through this OCI repository: `oci://host[:port]/path` (HTTPS) or
    /// `oci+http://host:port/path` (plain HTTP, for loopback). After a local miss a task's
    /// record is looked up there (verified: every byte against its digest, the record
    /// against its key) and its outputs restored; after a success it is pushed. A
    /// registry that fails prints one warning and the run goes on locally.
    /// `?mode=ro` at the end is --cache-read-only.
    #[arg(long, env = "TENON_CACHE_REPO", value_name = "URL")]
    pub cache_repo: Option<String>,
    /// Read from the shared cache, never write to it (laptops, pull-request jobs).
    #[arg(long, env = "TENON_CACHE_READ_ONLY", value_parser = clap::builder::BoolishValueParser::new())]
    pub cache_read_only: bool,
    /// Registry credentials in Docker's config.json format (`auths`, `credHelpers`,
    /// `credsStore`). Default: $DOCKER_CONFIG/config.json, then ~/.docker/config.json,
    /// else anonymous. Never printed.
    #[arg(long, env = "TENON_CACHE_CREDENTIALS_FILE", value_name = "FILE")]
    pub cache_credentials_file: Option<PathBuf>,
    /// Extra CA certificates (PEM) trusted for the registry (a private CA).
    #[arg(long, env = "TENON_CACHE_CA_FILE", value_name = "FILE")]
    pub cache_ca_file: Option<PathBuf>,
    /// Sign the records this run pushes with this OpenSSH Ed25519 private key
    /// (SSHSIG, namespace `tenon-cache`; `ssh-keygen -Y verify` checks it too).
    #[arg(long, env = "TENON_CACHE_SIGN_KEY", value_name = "FILE")]
    pub cache_sign_key: Option<PathBuf>,
    /// Use only records signed by one of these OpenSSH public keys (one per line, or an
    /// allowed_signers file); unsigned or wrongly signed ones are ignored with a warning.
    #[arg(long, env = "TENON_CACHE_VERIFY_KEY", value_name = "FILE")]
    pub cache_verify_key: Option<PathBuf>,
    /// How long the end of a run waits for pushes still under way.
    #[arg(long, value_name = "DURATION", value_parser = parse_age, default_value = "10m")]
    pub cache_upload_timeout: std::time::Duration,
}

impl RemoteArgs {
    pub fn settings(&self) -> Option<crate::remote::RemoteSettings> {
        let url = self.cache_repo.clone().filter(|u| !u.trim().is_empty())?;
        Some(crate::remote::RemoteSettings {
            url,
            read_only: self.cache_read_only,
            credentials_file: self.cache_credentials_file.clone(),
            ca_file: self.cache_ca_file.clone(),
            sign_key: self.cache_sign_key.clone(),
            verify_key: self.cache_verify_key.clone(),
            upload_timeout: self.cache_upload_timeout,
        })
    }
}

impl RunFlags {
    /// The settings the reconcile core takes.
    pub fn settings(&self, rerun: &[String]) -> RunSettings {
        RunSettings {
            run: self.run.clone(),
            params: self.params.clone(),
            parallel: self.parallel,
            state_dir: self.store.clone().unwrap_or_else(default_store),
            max_result_size: self.max_result_size,
            pass_env: self.pass_env.clone(),
            namespace: self.namespace.clone(),
            no_cache: self.no_cache,
            sandbox: self.sandbox,
            executor: self.executor,
            kube: self.kube.clone(),
            rerun: rerun.to_vec(),
            keep_runs: self.keep_runs,
            remote: self.remote.settings(),
            import_on_plan: false,
        }
    }
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
    // as in a PipelineRun's params: the results phase comes after the param phase, so a
    // result reference here would read another task's result
    if value.texts().iter().any(|t| crate::subst::find_refs(t).iter().any(|r| r.expr.starts_with("tasks."))) {
        return Err(format!("param {k}: result references are not allowed in param values, as in a PipelineRun's"));
    }
    Ok((k.to_string(), value))
}

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
        Command::Plan(a) => plan_cmd(a).await,
        Command::Cache(c) => cache_cmd(c).await,
        Command::Promote(a) => promote_cmd(a),
        Command::History(a) => history_cmd(a),
        Command::Rollback(a) => hold_cmd(a, true),
        Command::Release(a) => hold_cmd(a, false),
        Command::Watch(a) => watch_cmd(a, cli.log_format).await,
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
    let output = a.output;
    let args = plan_run_args(a);
    let report = execute(&args, true).await?;
    let plan = PlanReport::from_dry_run(report);
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
    let report = execute_importing(&args, true, true).await?;
    let remote = report.remote_cache.clone().unwrap_or_else(|| crate::remote::RemoteSummary {
        url: String::new(),
        read_only: true,
        hits: 0,
        misses: 0,
        bytes_in: 0,
        bytes_out: 0,
        published: 0,
        errors: 0,
        unavailable: false,
        warnings: vec![],
    });
    let tasks: Vec<&crate::report::TaskSummary> = report.runs.iter().flat_map(|r| r.tasks.iter()).collect();
    let cached = tasks.iter().filter(|t| t.status == "Cached").count();
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

fn print_plan_human(plan: &PlanReport) {
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
        let _ = writeln!(out, "inputs: {} files, {} hashed ({} bytes)", h.files, h.hashed_files, h.hashed_bytes);
    }
}

/// The shared cache named by `--cache-repo`, or a usage error.
fn remote_cache(a: &RemoteArgs) -> Result<crate::remote::RemoteCache, Error> {
    let s = a.settings().ok_or_else(|| Error::Usage("this needs --cache-repo URL (or TENON_CACHE_REPO)".into()))?;
    crate::remote::RemoteCache::new(&s).map_err(|message| ReconcileError::RemoteCache { message }.into())
}

/// A registry failure in a cache command: tenon could not work (exit 3), credentials never shown.
fn registry_error(e: crate::oci::OciError) -> Error {
    Error::Registry { source: e }
}

async fn remote_ls(a: &RemoteArgs, output: OutputFormat) -> Result<Outcome, Error> {
    let r = remote_cache(a)?;
    let list = r.list_records().await.map_err(registry_error)?;
    match output {
        OutputFormat::Json => print_json(
            &serde_json::json!({"apiVersion": API_VERSION, "kind": "RemoteCacheList", "repository": r.url(), "records": list}),
        )?,
        OutputFormat::Human => {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{:16}  {:24}  {:24}  {:>12}  {:6}  CREATED", "KEY", "RUN", "TASK", "SIZE", "SIGNED");
            for e in &list {
                let _ = writeln!(
                    out,
                    "{:16}  {:24}  {:24}  {:>12}  {:6}  {}{}",
                    &e.key[..16],
                    e.run,
                    e.task,
                    e.size,
                    if e.signed { "yes" } else { "no" },
                    e.created,
                    e.problem.as_ref().map(|p| format!("  (unusable: {p})")).unwrap_or_default()
                );
            }
            let _ = writeln!(out, "{} record(s) in {}", list.len(), r.url());
        }
    }
    Ok(Outcome::Ok)
}

async fn remote_gc(a: &GcArgs) -> Result<Outcome, Error> {
    let Some(age) = a.older_than else {
        return Err(Error::Usage("cache gc --remote needs --older-than DURATION".into()));
    };
    let r = remote_cache(&a.remote_args)?;
    let protected = match open_store(a.store.store.as_ref()) {
        Ok(s) => s.protected_keys().map_err(|e| Error::Store(e.to_string()))?,
        Err(_) => Default::default(),
    };
    let cut = std::time::SystemTime::now() - age;
    let list = r.list_records().await.map_err(registry_error)?;
    let (mut deleted, mut kept, mut freed) = (Vec::new(), 0usize, 0u64);
    for e in &list {
        let old = e.created_time().is_some_and(|t| t < cut);
        if !old || protected.contains(&e.key) {
            kept += 1;
            continue;
        }
        let d = crate::oci::Digest::parse(&e.digest).map_err(registry_error)?;
        r.delete(&d).await.map_err(registry_error)?;
        freed += e.size;
        deleted.push(e.key.clone());
    }
    match a.store.output {
        OutputFormat::Json => print_json(&serde_json::json!({
            "apiVersion": API_VERSION, "kind": "RemoteCacheGc", "repository": r.url(),
            "deletedRecords": deleted, "keptRecords": kept, "unreferencedBytes": freed,
        }))?,
        OutputFormat::Human => {
            let _ = writeln!(
                std::io::stdout(),
                "deleted {} record(s) from {} ({} bytes of layers may now be unreferenced), kept {kept}; the registry frees the blobs in its own garbage collection (Distribution: `registry garbage-collect --delete-untagged CONFIG` with the registry stopped or read-only)",
                deleted.len(),
                r.url(),
                freed
            );
        }
    }
    Ok(Outcome::Ok)
}

async fn remote_push(a: &RemoteStoreArgs) -> Result<Outcome, Error> {
    let r = Arc::new(remote_cache(&a.remote)?);
    let s = open_store(a.store.store.as_ref())?;
    let keys = s.protected_keys().map_err(|e| Error::Store(e.to_string()))?;
    let keys = crate::remote::present(&s, &keys);
    let store: Arc<dyn crate::store::Store> = Arc::new(s);
    let mut ok = 0usize;
    for k in &keys {
        if r.publish(k, &store).await {
            ok += 1;
        }
    }
    let sum = r.finish().await;
    match a.store.output {
        OutputFormat::Json => print_json(&serde_json::json!({
            "apiVersion": API_VERSION, "kind": "CachePush", "records": keys.len(), "inRegistry": ok, "remoteCache": sum,
        }))?,
        OutputFormat::Human => {
            let _ = writeln!(
                std::io::stdout(),
                "{ok} of {} record(s) are in {} now ({} pushed, {} bytes uploaded)",
                keys.len(),
                sum.url,
                sum.published,
                sum.bytes_out
            );
        }
    }
    Ok(if ok == keys.len() { Outcome::Ok } else { Outcome::RunFailed })
}

fn open_store(dir: Option<&PathBuf>) -> Result<SqliteStore, Error> {
    reconcile::open_store(&dir.cloned().unwrap_or_else(default_store))
}

async fn cache_cmd(c: CacheCommand) -> Result<Outcome, Error> {
    let db = |e: crate::store::StoreError| Error::Store(e.to_string());
    match c {
        CacheCommand::Ls(a) if a.remote => remote_ls(&a.remote_args, a.store.output).await,
        CacheCommand::Gc(a) if a.remote => remote_gc(&a).await,
        CacheCommand::Push(a) => remote_push(&a).await,
        CacheCommand::Pull(a) => pull_cmd(a).await,
        CacheCommand::Ls(a) => {
            let a = a.store;
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
            if a.older_than.is_none() && a.max_size.is_none() && a.keep_runs.is_none() {
                return Err(Error::Usage(
                    "cache gc needs --older-than DURATION, --max-size SIZE and/or --keep-runs N".into(),
                ));
            }
            let state_dir = a.store.store.clone().unwrap_or_else(default_store);
            let s = open_store(Some(&state_dir))?;
            let (n, freed) = if a.older_than.is_some() || a.max_size.is_some() {
                let cut = a.older_than.map(|d| crate::hash::now_ns() - d.as_nanos() as i64);
                s.gc(cut, a.max_size).map_err(db)?
            } else {
                (0, 0)
            };
            let keep = a.keep_runs.unwrap_or(crate::retention::DEFAULT_KEEP_RUNS);
            let runs = reconcile::prune_run_dirs(&state_dir, &s, keep);
            match a.store.output {
                OutputFormat::Json => print_json(&serde_json::json!({
                    "apiVersion": API_VERSION, "kind": "CacheGc", "removedRecords": n, "freedBytes": freed,
                    "removedRunDirs": runs.removed, "freedRunDirBytes": runs.freed_bytes,
                }))?,
                OutputFormat::Human => {
                    let _ = writeln!(
                        std::io::stdout(),
                        "removed {n} record(s), freed {freed} bytes; removed {} run director{} (keeping {keep} per run), freed {} bytes",
                        runs.removed,
                        if runs.removed == 1 { "y" } else { "ies" },
                        runs.freed_bytes
                    );
                }
            }
            Ok(Outcome::Ok)
        }
        CacheCommand::Verify(a) => {
            let s = open_store(a.store.store.as_ref())?;
            let (n, bad) = s.verify().map_err(db)?;
            let (removed, evicted) = if a.repair { s.repair(&bad).map_err(db)? } else { Default::default() };
            match a.store.output {
                OutputFormat::Json => {
                    let mut v = serde_json::json!({"apiVersion": API_VERSION, "kind": "CacheVerify", "objects": n, "corrupt": bad});
                    if a.repair {
                        v["removedObjects"] = serde_json::json!(removed);
                        v["evictedRecords"] = serde_json::json!(evicted);
                    }
                    print_json(&v)?
                }
                OutputFormat::Human => {
                    let mut out = std::io::stdout().lock();
                    for b in &bad {
                        let _ = writeln!(out, "corrupt or missing: sha256:{b}");
                    }
                    let _ = writeln!(out, "{n} object(s) checked, {} corrupt", bad.len());
                    if a.repair {
                        for d in &removed {
                            let _ = writeln!(out, "removed object sha256:{d}");
                        }
                        for r in &evicted {
                            let _ = writeln!(
                                out,
                                "evicted record {} ({} {}): it reruns next time",
                                &r.key[..16],
                                r.run,
                                r.task
                            );
                        }
                        let _ = writeln!(
                            out,
                            "repaired: {} object(s) removed, {} record(s) evicted",
                            removed.len(),
                            evicted.len()
                        );
                    }
                }
            }
            Ok(if bad.is_empty() || a.repair { Outcome::Ok } else { Outcome::RunFailed })
        }
        CacheCommand::Reset(a) => {
            let state_dir = a.store.clone().unwrap_or_else(default_store);
            let moved = reconcile::reset_store(&state_dir)?;
            match a.output {
                OutputFormat::Json => print_json(&serde_json::json!({
                    "apiVersion": API_VERSION, "kind": "CacheReset",
                    "movedTo": moved.as_ref().map(|p| p.display().to_string()),
                }))?,
                OutputFormat::Human => {
                    let mut out = std::io::stdout().lock();
                    let _ = match &moved {
                        Some(p) => writeln!(
                            out,
                            "moved the store {} aside to {}; the next run starts with an empty cache",
                            state_dir.join("cache").display(),
                            p.display()
                        ),
                        None => writeln!(out, "no store at {}: nothing to reset", state_dir.join("cache").display()),
                    };
                }
            }
            Ok(Outcome::Ok)
        }
    }
}

async fn run_cmd(a: RunArgs) -> Result<Outcome, Error> {
    let report = execute(&a, false).await?;
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
            let subject = if p.subject_digest.is_empty() {
                String::new()
            } else {
                format!("  subject {} {}", p.subject_digest, p.subject_uri)
            };
            let _ = writeln!(out, "  id {}{subject}", crate::promote::git::short(&p.id, 16));
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
        if let (Some(h), false) = (&p.hold, p.state == "Held") {
            let _ = writeln!(out, "  hold {} by {}: {}", crate::promote::git::short(&h.rollback, 16), h.by, h.reason);
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
    execute_importing(a, dry_run, false).await
}

/// [`execute`]; `import`: planning imports what the shared cache has (`cache pull`).
async fn execute_importing(a: &RunArgs, dry_run: bool, import: bool) -> Result<RunReport, Error> {
    let cat = match reconcile::load_valid(&a.dir)? {
        Ok(cat) => cat,
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
            return Err(Error::Invalid { count: diags.len() });
        }
    };
    let console = Arc::new(if dry_run { Console::silent() } else { Console::new(a.quiet) });
    let cancel = CancellationToken::new();
    {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                cancel.cancel();
            }
        });
    }
    let mut settings = a.flags.settings(&a.rerun);
    settings.import_on_plan = import;
    Ok(reconcile::run_catalog(cat, &a.dir, &settings, dry_run, console, cancel).await?.report)
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
    if let Some(rc) = &report.remote_cache {
        let _ = writeln!(
            out,
            "shared cache {}: {} hit(s), {} miss(es), {} published, {} in, {} out{}",
            rc.url,
            rc.hits,
            rc.misses,
            rc.published,
            human_bytes(rc.bytes_in),
            human_bytes(rc.bytes_out),
            if rc.unavailable { " (unavailable: the run went on with the local store)" } else { "" }
        );
    }
}

fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 30 => format!("{:.1} GiB", n as f64 / (1u64 << 30) as f64),
        n if n >= 1 << 20 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n if n >= 1 << 10 => format!("{:.1} KiB", n as f64 / 1024.0),
        n => format!("{n} B"),
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
        // a value is data for the param phase, but the results phase would read it
        assert!(parse_param("a=$(tasks.t.results.r)").unwrap_err().contains("result references"));
        assert!(parse_param("a=[\"x\",\"$(tasks.t.results.r)\"]").is_err());
        assert_eq!(parse_param("a=$(params.b)").unwrap().1, ParamValue::Str("$(params.b)".into()));
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
