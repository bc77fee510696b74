//! Argument definitions (clap) and their value parsers.

use super::*;

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
    /// Internal: the Kubernetes data plane's init container. Writes each listed file,
    /// streamed from the registry and verified against its digest and size.
    #[command(hide = true)]
    PodFetch(PodFetchArgs),
}

/// `tenon pod-fetch` (run by the init container tenon adds to a task pod).
#[derive(Debug, Args)]
pub struct PodFetchArgs {
    /// The repository: `oci://host/repo` or `oci+http://host:port/repo`.
    #[arg(long, value_name = "URL")]
    pub registry: String,
    /// Docker-format registry credentials (a mounted Secret); default: anonymous.
    #[arg(long, value_name = "FILE")]
    pub credentials_file: Option<PathBuf>,
    /// The files: a JSON list of {path, digest, size, mode, mtime, uid, gid}.
    #[arg(long, value_name = "JSON")]
    pub list: String,
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
    pub(super) fn credentials(&self) -> Result<crate::promote::git::Credentials, Error> {
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

pub(super) fn parse_age(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{s:?}: {e} (e.g. 7d, 36h, 90m)"))
}

pub(super) fn parse_size(s: &str) -> Result<u64, String> {
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
    /// Most TaskRuns running at once (default: number of CPUs; 64 with --executor kubernetes).
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
            digest_sources: false,
        }
    }
}

pub(super) fn parse_param(s: &str) -> Result<(String, ParamValue), String> {
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
    if value.texts().iter().any(|t| crate::model::subst::find_refs(t).iter().any(|r| r.expr.starts_with("tasks."))) {
        return Err(format!("param {k}: result references are not allowed in param values, as in a PipelineRun's"));
    }
    Ok((k.to_string(), value))
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
