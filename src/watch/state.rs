//! What the watcher shares between its loop and its HTTP endpoint: counters for
//! `/metrics`, the document behind `/status`, readiness and leadership.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use serde_json::{json, Value};

use crate::promote::run::PromotionReport;
use crate::report::{RunReport, API_VERSION};

/// Prometheus counters and gauges (text exposition rendered by hand).
#[derive(Debug, Default)]
pub struct Metrics {
    pub reconciles: BTreeMap<String, u64>,
    pub task_runs: BTreeMap<String, u64>,
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub hashed_bytes: u64,
    pub hashed_files: u64,
    pub hash_seconds: f64,
    pub promotions: BTreeMap<String, u64>,
    pub last_success_ts: Option<f64>,
    pub fetch_errors: u64,
    pub webhooks: BTreeMap<String, u64>,
    pub reconcile_seconds_sum: f64,
    pub reconcile_seconds_count: u64,
    /// The shared cache: hits, misses, bytes_in, bytes_out, errors, published.
    pub remote: BTreeMap<&'static str, u64>,
}

/// State shared by the loop and the HTTP server.
pub struct Shared {
    pub metrics: Mutex<Metrics>,
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
            metrics: Mutex::new(Metrics::default()),
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

    pub fn metrics(&self) -> std::sync::MutexGuard<'_, Metrics> {
        lock(&self.metrics)
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
        *self.metrics().webhooks.entry(result.into()).or_default() += 1;
    }

    /// Account one finished reconcile: its outcome, its tasks and hashing.
    pub fn count_reconcile(&self, outcome: &str, seconds: f64, report: Option<&RunReport>, hash_ns: u64) {
        let mut m = self.metrics();
        *m.reconciles.entry(outcome.into()).or_default() += 1;
        m.reconcile_seconds_sum += seconds;
        m.reconcile_seconds_count += 1;
        if outcome == "succeeded" || outcome == "skipped" {
            m.last_success_ts = Some(now_secs());
        }
        if let Some(r) = report {
            for run in &r.runs {
                for t in &run.tasks {
                    *m.task_runs.entry(t.status.clone()).or_default() += 1;
                    if t.status == "Cached" {
                        m.cache_hits += 1;
                    } else if t.cache_key.is_some() && t.status != "Skipped" {
                        m.cache_misses += 1;
                    }
                }
            }
            if let Some(h) = &r.hashing {
                m.hashed_bytes += h.hashed_bytes;
                m.hashed_files += h.hashed_files;
            }
            if let Some(rc) = &r.remote_cache {
                for (k, v) in [
                    ("hits", rc.hits),
                    ("misses", rc.misses),
                    ("bytes_in", rc.bytes_in),
                    ("bytes_out", rc.bytes_out),
                    ("errors", rc.errors),
                    ("published", rc.published),
                ] {
                    *m.remote.entry(k).or_default() += v;
                }
            }
        }
        m.hash_seconds += hash_ns as f64 / 1e9;
    }

    pub fn count_promotions(&self, p: &PromotionReport) {
        {
            let mut m = self.metrics();
            for s in &p.promotions {
                *m.promotions.entry(s.state.clone()).or_default() += 1;
            }
        }
        let mut st = lock(&self.status);
        for s in &p.promotions {
            let mut v = serde_json::to_value(s).unwrap_or(Value::Null);
            v["at"] = json!(rfc3339_now());
            st["promotions"][&s.environment] = v;
        }
    }

    /// The Prometheus text exposition.
    pub fn render_metrics(&self) -> String {
        let m = self.metrics();
        let revision = lock(&self.status)["revision"].as_str().unwrap_or("").to_string();
        let mut o = String::new();
        let esc = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n");
        let family = |o: &mut String, name: &str, kind: &str, help: &str, rows: Vec<(String, String)>| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (labels, v) in rows {
                let _ = writeln!(o, "{name}{labels} {v}");
            }
        };
        let labelled = |label: &str, map: &BTreeMap<String, u64>| -> Vec<(String, String)> {
            map.iter().map(|(k, v)| (format!("{{{label}=\"{}\"}}", esc(k)), v.to_string())).collect()
        };
        family(
            &mut o,
            "tenon_reconciles_total",
            "counter",
            "Reconciles by outcome.",
            labelled("outcome", &m.reconciles),
        );
        family(
            &mut o,
            "tenon_task_runs_total",
            "counter",
            "Tasks of reconciles by status.",
            labelled("status", &m.task_runs),
        );
        family(
            &mut o,
            "tenon_cache_hits_total",
            "counter",
            "Tasks reused from the cache.",
            vec![(String::new(), m.cache_hits.to_string())],
        );
        family(
            &mut o,
            "tenon_cache_misses_total",
            "counter",
            "Cacheable tasks that had to run.",
            vec![(String::new(), m.cache_misses.to_string())],
        );
        for (key, name, help) in [
            ("hits", "tenon_remote_cache_hits_total", "Records found and verified in the shared cache (--cache-repo)."),
            (
                "misses",
                "tenon_remote_cache_misses_total",
                "Lookups the shared cache could not answer with a usable record.",
            ),
            ("bytes_in", "tenon_remote_cache_bytes_in_total", "Bytes downloaded (and verified) from the shared cache."),
            ("bytes_out", "tenon_remote_cache_bytes_out_total", "Bytes uploaded to the shared cache."),
            ("errors", "tenon_remote_cache_errors_total", "Shared cache faults and records that failed a check."),
            ("published", "tenon_remote_cache_published_total", "Records pushed to the shared cache."),
        ] {
            family(
                &mut o,
                name,
                "counter",
                help,
                vec![(String::new(), m.remote.get(key).copied().unwrap_or(0).to_string())],
            );
        }
        family(
            &mut o,
            "tenon_hashed_bytes_total",
            "counter",
            "Input bytes read and hashed.",
            vec![(String::new(), m.hashed_bytes.to_string())],
        );
        family(
            &mut o,
            "tenon_hashed_files_total",
            "counter",
            "Input files read and hashed.",
            vec![(String::new(), m.hashed_files.to_string())],
        );
        family(
            &mut o,
            "tenon_hashing_seconds_total",
            "counter",
            "Time spent hashing inputs.",
            vec![(String::new(), format!("{:.6}", m.hash_seconds))],
        );
        family(
            &mut o,
            "tenon_reconcile_duration_seconds_sum",
            "counter",
            "Total reconcile time.",
            vec![(String::new(), format!("{:.6}", m.reconcile_seconds_sum))],
        );
        family(
            &mut o,
            "tenon_reconcile_duration_seconds_count",
            "counter",
            "Reconciles timed.",
            vec![(String::new(), m.reconcile_seconds_count.to_string())],
        );
        family(&mut o, "tenon_promotions_total", "counter", "Promotions by state.", labelled("state", &m.promotions));
        family(
            &mut o,
            "tenon_fetch_errors_total",
            "counter",
            "Failed fetches of the git source.",
            vec![(String::new(), m.fetch_errors.to_string())],
        );
        family(
            &mut o,
            "tenon_webhooks_total",
            "counter",
            "Webhook requests by result.",
            labelled("result", &m.webhooks),
        );
        family(
            &mut o,
            "tenon_last_successful_reconcile_timestamp_seconds",
            "gauge",
            "Unix time of the last successful reconcile (0: none yet).",
            vec![(String::new(), format!("{:.3}", m.last_success_ts.unwrap_or(0.0)))],
        );
        family(
            &mut o,
            "tenon_revision_info",
            "gauge",
            "The revision reconciled last.",
            vec![(format!("{{source=\"{}\",revision=\"{}\"}}", esc(&self.source_label), esc(&revision)), "1".into())],
        );
        family(
            &mut o,
            "tenon_ready",
            "gauge",
            "1 once the first sync is done.",
            vec![(String::new(), (self.ready.load(Ordering::Relaxed) as u8).to_string())],
        );
        family(
            &mut o,
            "tenon_leader",
            "gauge",
            "1 while this replica may reconcile and promote.",
            vec![(String::new(), (self.leader.load(Ordering::Relaxed) as u8).to_string())],
        );
        o
    }
}

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
}
