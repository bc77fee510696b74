//! What the watcher shares between its loop and its HTTP endpoint: counters for
//! `/metrics`, the document behind `/status`, readiness and leadership.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use prometheus_client::metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram};
use prometheus_client::registry::Registry;

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::model::Diagnostic;
use crate::promote::run::{PromotionReport, PromotionSummary};
use crate::report::{PlanReport, RunReport, API_VERSION};

/// How one reconcile ended: defined with the store, which records it per revision.
pub use crate::store::ReconcileOutcome;

/// What is followed, as `/status` shows it (credentials removed from URLs).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum SourceDoc {
    Dir { dir: String },
    Git { url: String, branch: String },
}

/// The document `/status` serves.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WatchStatus {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub source: SourceDoc,
    pub ready: bool,
    /// `null` without a leader gate.
    pub leader: Option<bool>,
    pub reconciling: bool,
    pub revision: Option<String>,
    pub reconciles: u64,
    pub last_reconcile: Option<LastReconcile>,
    pub last_error: Option<LastError>,
    /// By environment: the last promotion decision and when it was made.
    pub promotions: BTreeMap<String, PromotionEntry>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reconcile_started_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_success_at: Option<String>,
}

/// The last finished reconcile.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct LastReconcile {
    pub revision: Option<String>,
    pub outcome: ReconcileOutcome,
    pub finished_at: String,
    pub duration_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
    #[serde(flatten)]
    pub details: Details,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub report: Option<RunReport>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan: Option<PlanReport>,
}

/// What a reconcile adds to its outcome (each part only when it applies).
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Details {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The validation errors of invalid manifests, and the same as text.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<Diagnostic>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub messages: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub promotion: Option<PromotionReport>,
    /// `environment=state,...`
    #[serde(skip_serializing_if = "Option::is_none")]
    pub promotions: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub promotion_note: Option<String>,
}

/// The last error: a failed fetch, reconcile or promotion.
#[derive(Debug, Clone, Serialize)]
pub struct LastError {
    pub at: String,
    pub message: String,
    /// A reconcile's error names its revision (`null` in directory mode).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub revision: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub promotion: Option<PromotionReport>,
}

impl LastError {
    pub fn now(message: impl Into<String>) -> Self {
        LastError { at: rfc3339_now(), message: message.into(), revision: None, promotion: None }
    }
}

/// One environment's last promotion decision.
#[derive(Debug, Clone, Serialize)]
pub struct PromotionEntry {
    #[serde(flatten)]
    pub summary: PromotionSummary,
    pub at: String,
}

/// One label: `{name="value"}`.
type Label = [(&'static str, String); 1];

/// Upper bounds (seconds) of the reconcile duration histogram: a cached no-op reconcile
/// takes well under a second, a real one minutes to an hour.
const RECONCILE_BUCKETS: [f64; 14] =
    [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0];

/// The shared cache's counters, in the order of [`crate::remote::RemoteSummary`]'s fields.
const REMOTE_COUNTERS: [(&str, &str); 8] = [
    ("hits", "Records found and verified in the shared cache (--cache-repo)"),
    ("misses", "Lookups the shared cache could not answer with a usable record"),
    ("bytes_in", "Bytes downloaded (and verified) from the shared cache"),
    ("bytes_out", "Bytes uploaded to the shared cache"),
    ("errors", "Shared cache faults and records that failed a check"),
    ("published", "Records pushed to the shared cache"),
    ("git_memo_rows_in", "Git blob memo rows imported from the shared cache (files not read)"),
    ("git_memo_rows_out", "Git blob memo rows the shared cache gained"),
];

/// The watcher's Prometheus metrics (`prometheus-client`: lock-free counters, a real
/// histogram; rendered in the Prometheus text format 0.0.4). Counters are registered
/// without their `_total` suffix, which the encoder adds.
pub struct Metrics {
    registry: Registry,
    pub reconciles: Family<Label, Counter>,
    pub task_runs: Family<Label, Counter>,
    pub cache_hits: Counter,
    pub cache_misses: Counter,
    pub hashed_bytes: Counter,
    pub hashed_files: Counter,
    pub hash_seconds: Counter<f64, AtomicU64>,
    pub reconcile_duration: Histogram,
    pub promotions: Family<Label, Counter>,
    pub last_success_ts: Gauge<f64, AtomicU64>,
    pub fetch_errors: Counter,
    pub webhooks: Family<Label, Counter>,
    /// The shared cache: hits, misses, bytes_in, bytes_out, errors, published, git memo
    /// rows in and out.
    pub remote: [Counter; 8],
    revision_info: Family<[(&'static str, String); 2], Gauge>,
    ready: Gauge,
    leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        fn reg<M: prometheus_client::registry::Metric + Clone>(r: &mut Registry, name: &str, help: &str, m: M) -> M {
            r.register(name, help, m.clone());
            m
        }
        let mut r = Registry::default();
        let r = &mut r;
        let reconciles = reg(r, "tenon_reconciles", "Reconciles by outcome", Family::default());
        let task_runs = reg(r, "tenon_task_runs", "Tasks of reconciles by status", Family::default());
        let cache_hits = reg(r, "tenon_cache_hits", "Tasks reused from the cache", Counter::default());
        let cache_misses = reg(r, "tenon_cache_misses", "Cacheable tasks that had to run", Counter::default());
        let remote =
            REMOTE_COUNTERS.map(|(k, help)| reg(r, &format!("tenon_remote_cache_{k}"), help, Counter::default()));
        let hashed_bytes = reg(r, "tenon_hashed_bytes", "Input bytes read and hashed", Counter::default());
        let hashed_files = reg(r, "tenon_hashed_files", "Input files read and hashed", Counter::default());
        let hash_seconds = reg(r, "tenon_hashing_seconds", "Time spent hashing inputs", Counter::default());
        let reconcile_duration = reg(
            r,
            "tenon_reconcile_duration_seconds",
            "Time a reconcile took, from the start of loading to its outcome",
            Histogram::new(RECONCILE_BUCKETS),
        );
        let promotions = reg(r, "tenon_promotions", "Promotions by state", Family::default());
        let fetch_errors = reg(r, "tenon_fetch_errors", "Failed fetches of the git source", Counter::default());
        let webhooks = reg(r, "tenon_webhooks", "Webhook requests by result", Family::default());
        let last_success_ts = reg(
            r,
            "tenon_last_successful_reconcile_timestamp_seconds",
            "Unix time of the last successful reconcile (0: none yet)",
            Gauge::default(),
        );
        let revision_info = reg(r, "tenon_revision_info", "The revision reconciled last", Family::default());
        let ready = reg(r, "tenon_ready", "1 once the first sync is done", Gauge::default());
        let leader = reg(r, "tenon_leader", "1 while this replica may reconcile and promote", Gauge::default());
        Metrics {
            registry: std::mem::take(r),
            reconciles,
            task_runs,
            cache_hits,
            cache_misses,
            hashed_bytes,
            hashed_files,
            hash_seconds,
            reconcile_duration,
            promotions,
            last_success_ts,
            fetch_errors,
            webhooks,
            remote,
            revision_info,
            ready,
            leader,
        }
    }
}

/// The label set `{name="value"}`.
pub fn label(name: &'static str, value: &str) -> Label {
    [(name, value.to_string())]
}

/// State shared by the loop and the HTTP server.
pub struct Shared {
    pub metrics: Metrics,
    pub status: Mutex<WatchStatus>,
    /// The first sync (a fetch and a reconcile attempt) is done.
    pub ready: AtomicBool,
    /// This replica may reconcile and promote (always true without a leader gate).
    pub leader: AtomicBool,
    pub has_leader_gate: bool,
    pub state_dir: PathBuf,
    /// A webhook asks the loop for an immediate fetch.
    pub trigger: tokio::sync::Notify,
    pub webhook_secret: Option<String>,
    /// Git mode: the branch followed (webhooks for other refs are ignored).
    pub branch: Option<String>,
    /// A label for the source (`git <url> <branch>` or `dir <path>`), credentials removed.
    pub source_label: String,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn now_secs() -> f64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

pub fn rfc3339_now() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

impl Shared {
    pub fn new(source: SourceDoc, state_dir: PathBuf, webhook_secret: Option<String>) -> Self {
        let (source_label, branch) = match &source {
            SourceDoc::Git { url, branch } => (format!("{url}#{branch}"), Some(branch.clone())),
            SourceDoc::Dir { dir } => (dir.clone(), None),
        };
        Shared {
            metrics: Metrics::default(),
            status: Mutex::new(WatchStatus {
                api_version: API_VERSION,
                kind: "WatchStatus",
                source,
                ready: false,
                leader: None,
                reconciling: false,
                revision: None,
                reconciles: 0,
                last_reconcile: None,
                last_error: None,
                promotions: BTreeMap::new(),
                reconcile_started_at: None,
                last_success_at: None,
            }),
            ready: AtomicBool::new(false),
            leader: AtomicBool::new(true),
            has_leader_gate: false,
            state_dir,
            trigger: tokio::sync::Notify::new(),
            webhook_secret,
            branch,
            source_label,
        }
    }

    /// The `/status` document, to read or update.
    pub fn status(&self) -> std::sync::MutexGuard<'_, WatchStatus> {
        lock(&self.status)
    }

    /// `/status` as served: readiness and leadership as of now.
    pub fn status_json(&self) -> Value {
        let mut s = self.status();
        s.ready = self.ready.load(Ordering::Relaxed);
        s.leader = self.has_leader_gate.then(|| self.leader.load(Ordering::Relaxed));
        serde_json::to_value(&*s).unwrap_or(Value::Null)
    }

    pub fn count_webhook(&self, result: &str) {
        self.metrics.webhooks.get_or_create(&label("result", result)).inc();
    }

    /// Account one finished reconcile: its outcome, its tasks and hashing.
    pub fn count_reconcile(&self, outcome: ReconcileOutcome, seconds: f64, report: Option<&RunReport>, hash_ns: u64) {
        let m = &self.metrics;
        m.reconciles.get_or_create(&label("outcome", outcome.as_str())).inc();
        m.reconcile_duration.observe(seconds);
        if outcome.is_success() {
            m.last_success_ts.set(now_secs());
        }
        if let Some(r) = report {
            for run in &r.runs {
                for t in &run.tasks {
                    m.task_runs.get_or_create(&label("status", &t.status)).inc();
                    if t.status == "Cached" {
                        m.cache_hits.inc();
                    } else if t.cache_key.is_some() && t.status != "Skipped" {
                        m.cache_misses.inc();
                    }
                }
            }
            if let Some(h) = &r.hashing {
                m.hashed_bytes.inc_by(h.hashed_bytes);
                m.hashed_files.inc_by(h.hashed_files);
            }
            if let Some(rc) = &r.remote_cache {
                let values = [
                    rc.hits,
                    rc.misses,
                    rc.bytes_in,
                    rc.bytes_out,
                    rc.errors,
                    rc.published,
                    rc.git_memo_rows_in,
                    rc.git_memo_rows_out,
                ];
                for (c, v) in m.remote.iter().zip(values) {
                    c.inc_by(v);
                }
            }
        }
        m.hash_seconds.inc_by(hash_ns as f64 / 1e9);
    }

    pub fn count_promotions(&self, p: &PromotionReport) {
        for s in &p.promotions {
            self.metrics.promotions.get_or_create(&label("state", &s.state)).inc();
        }
        let mut st = self.status();
        for s in &p.promotions {
            st.promotions.insert(s.environment.clone(), PromotionEntry { summary: s.clone(), at: rfc3339_now() });
        }
    }

    /// The Prometheus text exposition (format 0.0.4, [`METRICS_CONTENT_TYPE`]).
    pub fn render_metrics(&self) -> String {
        let m = &self.metrics;
        let revision = self.status().revision.clone().unwrap_or_default();
        m.revision_info.clear();
        m.revision_info.get_or_create(&[("source", self.source_label.clone()), ("revision", revision)]).set(1);
        m.ready.set(self.ready.load(Ordering::Relaxed) as i64);
        m.leader.set(self.leader.load(Ordering::Relaxed) as i64);
        let mut o = String::new();
        // writing to a String cannot fail
        let _ = prometheus_client::encoding::prometheus_text::encode(&mut o, &m.registry);
        o
    }
}

/// The `Content-Type` of [`Shared::render_metrics`].
pub const METRICS_CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn shared_cache_counters_add_up_across_reconciles_in_the_exposition() {
        let s = Shared::new(SourceDoc::Dir { dir: "/x".into() }, PathBuf::from("/tmp"), None);
        let mut report = RunReport::new(vec![]);
        report.remote_cache = Some(crate::remote::RemoteSummary {
            url: "oci+http://127.0.0.1:1/c".into(),
            read_only: false,
            hits: 2,
            misses: 1,
            bytes_in: 1000,
            bytes_out: 500,
            published: 1,
            errors: 0,
            git_memo_rows_in: 7,
            git_memo_rows_out: 0,
            unavailable: false,
            warnings: vec![],
        });
        s.count_reconcile(ReconcileOutcome::Succeeded, 1.0, Some(&report), 0);
        s.count_reconcile(ReconcileOutcome::Succeeded, 1.0, Some(&report), 0);
        let m = s.render_metrics();
        for line in [
            "tenon_remote_cache_hits_total 4",
            "tenon_remote_cache_misses_total 2",
            "tenon_remote_cache_bytes_in_total 2000",
            "tenon_remote_cache_bytes_out_total 1000",
            "tenon_remote_cache_published_total 2",
            "tenon_remote_cache_errors_total 0",
            "tenon_remote_cache_git_memo_rows_in_total 14",
        ] {
            assert!(m.lines().any(|l| l == line), "{line} missing from:\n{m}");
        }
        assert!(m.contains("# TYPE tenon_remote_cache_hits_total counter"));
    }

    /// Reconcile durations are a real histogram (cumulative buckets, `+Inf`, `_sum`,
    /// `_count`), and the other families keep their names, labels and types.
    #[test]
    fn exposition_has_a_duration_histogram_and_the_families() {
        let s = Shared::new(SourceDoc::Dir { dir: "/x".into() }, PathBuf::from("/tmp"), None);
        for secs in [0.2, 0.7, 42.0] {
            s.count_reconcile(ReconcileOutcome::Succeeded, secs, None, 1_500_000_000);
        }
        s.count_reconcile(ReconcileOutcome::Invalid, 0.01, None, 0);
        s.count_webhook("rejected");
        s.metrics.fetch_errors.inc();
        s.ready.store(true, Ordering::Relaxed);
        s.status().revision = Some("abc".into());
        let m = s.render_metrics();
        for line in [
            "# TYPE tenon_reconcile_duration_seconds histogram",
            "tenon_reconcile_duration_seconds_bucket{le=\"0.05\"} 1",
            "tenon_reconcile_duration_seconds_bucket{le=\"0.25\"} 2",
            "tenon_reconcile_duration_seconds_bucket{le=\"1\"} 3",
            "tenon_reconcile_duration_seconds_bucket{le=\"30\"} 3",
            "tenon_reconcile_duration_seconds_bucket{le=\"60\"} 4",
            "tenon_reconcile_duration_seconds_bucket{le=\"+Inf\"} 4",
            "tenon_reconcile_duration_seconds_count 4",
            "tenon_reconciles_total{outcome=\"succeeded\"} 3",
            "tenon_reconciles_total{outcome=\"invalid\"} 1",
            "# TYPE tenon_reconciles_total counter",
            "tenon_webhooks_total{result=\"rejected\"} 1",
            "tenon_fetch_errors_total 1",
            "tenon_hashing_seconds_total 4.5",
            "# TYPE tenon_last_successful_reconcile_timestamp_seconds gauge",
            "tenon_revision_info{source=\"/x\",revision=\"abc\"} 1",
            "tenon_ready 1",
            "tenon_leader 1",
        ] {
            assert!(m.lines().any(|l| l == line), "{line} missing from:\n{m}");
        }
        let sum = m.lines().find_map(|l| l.strip_prefix("tenon_reconcile_duration_seconds_sum ")).unwrap();
        assert!((sum.parse::<f64>().unwrap() - 42.91).abs() < 1e-9, "{sum}");
        let ts = m.lines().find_map(|l| l.strip_prefix("tenon_last_successful_reconcile_timestamp_seconds "));
        assert!(ts.unwrap().parse::<f64>().unwrap() > 1.0e9, "{m}");
        // the revision label follows the status, escaped
        s.status().revision = Some("a\"b\\c".into());
        let m = s.render_metrics();
        assert!(m.contains("tenon_revision_info{source=\"/x\",revision=\"a\\\"b\\\\c\"} 1"), "{m}");
        assert!(!m.contains("revision=\"abc\""), "{m}");
    }

    /// The typed `/status` document serializes to the JSON the `serde_json::Value` built
    /// before: same keys, same order, `null`s where nothing happened yet.
    #[test]
    fn watch_status_json_is_unchanged() {
        let git = SourceDoc::Git { url: "https://example.com/r.git".into(), branch: "main".into() };
        let s = Shared::new(git, PathBuf::from("/tmp"), None);
        assert_eq!(s.source_label, "https://example.com/r.git#main");
        assert_eq!(s.branch.as_deref(), Some("main"));
        assert_eq!(
            s.status_json().to_string(),
            format!(
                r#"{{"apiVersion":"{API_VERSION}","kind":"WatchStatus","source":{{"kind":"git","url":"https://example.com/r.git","branch":"main"}},"ready":false,"leader":null,"reconciling":false,"revision":null,"reconciles":0,"lastReconcile":null,"lastError":null,"promotions":{{}}}}"#
            )
        );
        let mut s = Shared::new(SourceDoc::Dir { dir: "/x".into() }, PathBuf::from("/tmp"), None);
        s.has_leader_gate = true;
        s.ready.store(true, Ordering::Relaxed);
        {
            let mut st = s.status();
            st.reconcile_started_at = Some("t0".into());
            st.last_error = Some(LastError { revision: Some(None), ..LastError::now("2 error(s)") });
            st.last_reconcile = Some(LastReconcile {
                revision: None,
                outcome: ReconcileOutcome::Invalid,
                finished_at: "t1".into(),
                duration_ms: 5,
                started_at: Some("t0".into()),
                details: Details {
                    error: Some("2 error(s)".into()),
                    messages: vec!["a.yaml:1: x".into()],
                    ..Details::default()
                },
                report: None,
                plan: None,
            });
        }
        let v = s.status_json();
        assert_eq!(v["source"].to_string(), r#"{"kind":"dir","dir":"/x"}"#);
        assert_eq!((v["ready"].clone(), v["leader"].clone()), (json!(true), json!(true)));
        assert_eq!(
            v["lastReconcile"].to_string(),
            r#"{"revision":null,"outcome":"invalid","finishedAt":"t1","durationMs":5,"startedAt":"t0","error":"2 error(s)","messages":["a.yaml:1: x"]}"#
        );
        assert_eq!(v["lastError"]["revision"], Value::Null);
        assert_eq!(v["lastError"]["message"], "2 error(s)");
        assert!(v["lastError"].as_object().unwrap().contains_key("revision"));
        assert_eq!(v["reconcileStartedAt"], "t0");
        assert!(v.get("lastSuccessAt").is_none());
        assert_eq!(
            ["up-to-date", "succeeded", "cancelled"],
            [ReconcileOutcome::UpToDate, ReconcileOutcome::Succeeded, ReconcileOutcome::Cancelled].map(|o| {
                assert_eq!(json!(o), json!(o.as_str()));
                o.as_str()
            })
        );
    }
}
