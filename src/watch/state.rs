//! What the watcher shares between its loop and its HTTP endpoint: counters for
//! `/metrics`, the document behind `/status`, readiness and leadership.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use prometheus_client::metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram};
use prometheus_client::registry::Registry;

use serde_json::{json, Value};

use crate::promote::run::PromotionReport;
use crate::report::{RunReport, API_VERSION};

/// One label: `{name="value"}`.
type Label = [(&'static str, String); 1];

/// Upper bounds (seconds) of the reconcile duration histogram: a cached no-op reconcile
/// takes well under a second, a real one minutes to an hour.
const RECONCILE_BUCKETS: [f64; 14] =
    [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0, 3600.0];

/// The shared cache's counters, in the order of [`crate::remote::RemoteSummary`]'s fields.
const REMOTE_COUNTERS: [(&str, &str); 6] = [
    ("hits", "Records found and verified in the shared cache (--cache-repo)"),
    ("misses", "Lookups the shared cache could not answer with a usable record"),
    ("bytes_in", "Bytes downloaded (and verified) from the shared cache"),
    ("bytes_out", "Bytes uploaded to the shared cache"),
    ("errors", "Shared cache faults and records that failed a check"),
    ("published", "Records pushed to the shared cache"),
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
    /// The shared cache: hits, misses, bytes_in, bytes_out, errors, published.
    pub remote: [Counter; 6],
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
        let remote = REMOTE_COUNTERS.map(|(k, help)| reg(r, &format!("tenon_remote_cache_{k}"), help, Counter::default()));
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
    pub status: Mutex<Value>,
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
    pub fn new(source: Value, state_dir: PathBuf, webhook_secret: Option<String>, branch: Option<String>) -> Self {
        let source_label = match (&source["url"], &source["dir"]) {
            (Value::String(u), _) => format!("{u}#{}", branch.as_deref().unwrap_or("")),
            (_, Value::String(d)) => d.clone(),
            _ => String::new(),
        };
        Shared {
            metrics: Metrics::default(),
            status: Mutex::new(json!({
                "apiVersion": API_VERSION,
                "kind": "WatchStatus",
                "source": source,
                "ready": false,
                "leader": Value::Null,
                "reconciling": false,
                "revision": Value::Null,
                "reconciles": 0,
                "lastReconcile": Value::Null,
                "lastError": Value::Null,
                "promotions": {},
            })),
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

    pub fn set_status(&self, key: &str, v: Value) {
        lock(&self.status)[key] = v;
    }

    pub fn status_json(&self) -> Value {
        let mut s = lock(&self.status).clone();
        s["ready"] = json!(self.ready.load(Ordering::Relaxed));
        s["leader"] = if self.has_leader_gate { json!(self.leader.load(Ordering::Relaxed)) } else { Value::Null };
        s
    }

    pub fn count_webhook(&self, result: &str) {
        self.metrics.webhooks.get_or_create(&label("result", result)).inc();
    }

    /// Account one finished reconcile: its outcome, its tasks and hashing.
    pub fn count_reconcile(&self, outcome: &str, seconds: f64, report: Option<&RunReport>, hash_ns: u64) {
        let m = &self.metrics;
        m.reconciles.get_or_create(&label("outcome", outcome)).inc();
        m.reconcile_duration.observe(seconds);
        if outcome == "succeeded" || outcome == "skipped" {
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
                let values = [rc.hits, rc.misses, rc.bytes_in, rc.bytes_out, rc.errors, rc.published];
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
        let mut st = lock(&self.status);
        for s in &p.promotions {
            let mut v = serde_json::to_value(s).unwrap_or(Value::Null);
            v["at"] = json!(rfc3339_now());
            st["promotions"][&s.environment] = v;
        }
    }

    /// The Prometheus text exposition (format 0.0.4, [`METRICS_CONTENT_TYPE`]).
    pub fn render_metrics(&self) -> String {
        let m = &self.metrics;
        let revision = lock(&self.status)["revision"].as_str().unwrap_or("").to_string();
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

    #[test]
    fn shared_cache_counters_add_up_across_reconciles_in_the_exposition() {
        let s = Shared::new(json!({"dir": "/x"}), PathBuf::from("/tmp"), None, None);
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
            unavailable: false,
            warnings: vec![],
        });
        s.count_reconcile("succeeded", 1.0, Some(&report), 0);
        s.count_reconcile("succeeded", 1.0, Some(&report), 0);
        let m = s.render_metrics();
        for line in [
            "tenon_remote_cache_hits_total 4",
            "tenon_remote_cache_misses_total 2",
            "tenon_remote_cache_bytes_in_total 2000",
            "tenon_remote_cache_bytes_out_total 1000",
            "tenon_remote_cache_published_total 2",
            "tenon_remote_cache_errors_total 0",
        ] {
            assert!(m.lines().any(|l| l == line), "{line} missing from:\n{m}");
        }
        assert!(m.contains("# TYPE tenon_remote_cache_hits_total counter"));
    }

    /// Reconcile durations are a real histogram (cumulative buckets, `+Inf`, `_sum`,
    /// `_count`), and the other families keep their names, labels and types.
    #[test]
    fn exposition_has_a_duration_histogram_and_the_families() {
        let s = Shared::new(json!({"dir": "/x"}), PathBuf::from("/tmp"), None, None);
        for secs in [0.2, 0.7, 42.0] {
            s.count_reconcile("succeeded", secs, None, 1_500_000_000);
        }
        s.count_reconcile("invalid", 0.01, None, 0);
        s.count_webhook("rejected");
        s.metrics.fetch_errors.inc();
        s.ready.store(true, Ordering::Relaxed);
        s.set_status("revision", json!("abc"));
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
        s.set_status("revision", json!("a\"b\\c"));
        let m = s.render_metrics();
        assert!(m.contains("tenon_revision_info{source=\"/x\",revision=\"a\\\"b\\\\c\"} 1"), "{m}");
        assert!(!m.contains("revision=\"abc\""), "{m}");
    }
}
