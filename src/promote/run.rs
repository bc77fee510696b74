//! `tenon promote`: for each PromotionPolicy, take the judged run's results, decide,
//! record the decision, and write it back (or, with `--dry-run`, show what would be
//! written: the gate table, the exact diff, the message, the trailers and the target ref).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::decide::{commit_message, decide, Decision, GateOutcome, RenderedUpdate};
use super::git::{self, Credentials, Landing, Target};
use crate::model::{Catalog, Obj, ParamValue, PromotionPolicySpec};
use crate::report::{RunReport, API_VERSION};
use crate::store::SqliteStore;

#[derive(Debug, Clone)]
pub struct PromoteOptions {
    pub dry_run: bool,
    /// Only this policy.
    pub policy: Option<String>,
    pub credentials: Credentials,
    /// tenon's state directory (git clones live under `git/`).
    pub state_dir: PathBuf,
    pub max_attempts: u32,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PromotionReport {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub promotions: Vec<PromotionSummary>,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PromotionSummary {
    pub policy: String,
    pub environment: String,
    pub id: String,
    /// All gates hold.
    pub promote: bool,
    /// `Landed`, `AlreadyLanded`, `NoChange`, `Superseded`, `Conflicted`, `GatesFailed`,
    /// `DryRun`, `NoResults`, `Failed`.
    pub state: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
    pub subject_uri: String,
    pub subject_digest: String,
    pub gates: Vec<GateOutcome>,
    pub updates: Vec<RenderedUpdate>,
    pub target: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
    /// Unified-style diff of each edited file (dry run).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub diff: Vec<String>,
}

impl PromotionReport {
    pub fn failed(&self) -> bool {
        self.promotions.iter().any(|p| matches!(p.state.as_str(), "Failed" | "Conflicted"))
    }
}

/// Task results of a run report, by run name.
pub fn results_of(report: &RunReport) -> BTreeMap<String, BTreeMap<String, BTreeMap<String, ParamValue>>> {
    let mut out = BTreeMap::new();
    for r in report.runs.iter().filter(|r| r.status == "Succeeded") {
        let mut tasks = BTreeMap::new();
        for t in &r.tasks {
            let rs: BTreeMap<String, ParamValue> = t
                .results
                .iter()
                .filter_map(|(k, v)| serde_json::from_value(v.clone()).ok().map(|pv| (k.clone(), pv)))
                .collect();
            tasks.insert(t.name.clone(), rs);
        }
        out.insert(r.name.clone(), tasks);
    }
    out
}

/// Where a policy writes: its url, else the `origin` of the repository holding `dir`.
fn target_of(p: &Obj<PromotionPolicySpec>, dir: &Path, opts: &PromoteOptions) -> Result<Target, String> {
    let discovered = git2::Repository::discover(dir).ok();
    let url = match &p.spec.target.url {
        Some(u) => u.clone(),
        None => discovered
            .as_ref()
            .and_then(|r| r.find_remote("origin").ok().and_then(|o| o.url().map(String::from)))
            .ok_or_else(|| format!("PromotionPolicy {:?}: no target: set spec.target.url, or run tenon in a git checkout with an `origin` remote", p.name))?,
    };
    let branch = match &p.spec.target.branch {
        Some(b) => b.clone(),
        None => discovered
            .as_ref()
            .and_then(|r| r.head().ok().and_then(|h| h.shorthand().map(String::from)))
            .unwrap_or_else(|| "main".into()),
    };
    let author = p.spec.commit.as_ref().and_then(|c| c.author.clone());
    Ok(Target {
        url,
        branch,
        branch_mode: p.spec.mode.as_deref() == Some("branch"),
        cache_dir: opts.state_dir.join("git"),
        credentials: opts.credentials.clone(),
        max_attempts: opts.max_attempts,
        author_name: author.as_ref().map(|a| a.name.clone()).unwrap_or_else(|| "tenon".into()),
        author_email: author.map(|a| a.email).unwrap_or_else(|| "tenon@localhost".into()),
    })
}

fn source_revision(dir: &Path) -> String {
    git2::Repository::discover(dir)
        .ok()
        .and_then(|r| r.head().ok().and_then(|h| h.target()).map(|o| o.to_string()))
        .unwrap_or_else(|| "none".into())
}

/// The lines that differ between two texts. Scalar edits keep the line count, so each
/// changed line is shown with its number; otherwise the changed middle part is shown.
pub fn diff(file: &str, old: &str, new: &str) -> String {
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    if a.len() == b.len() {
        let mut out = format!("--- a/{file}\n+++ b/{file}\n");
        for (i, (x, y)) in a.iter().zip(b.iter()).enumerate() {
            if x != y {
                out.push_str(&format!("@@ -{n},1 +{n},1 @@\n-{x}\n+{y}\n", n = i + 1));
            }
        }
        return out;
    }
    let pre = a.iter().zip(b.iter()).take_while(|(x, y)| x == y).count();
    let suf =
        a.iter().rev().zip(b.iter().rev()).take_while(|(x, y)| x == y).count().min(a.len() - pre).min(b.len() - pre);
    let mut out = format!(
        "--- a/{file}\n+++ b/{file}\n@@ -{},{} +{},{} @@\n",
        pre + 1,
        a.len() - pre - suf,
        pre + 1,
        b.len() - pre - suf
    );
    for l in &a[pre..a.len() - suf] {
        out.push_str(&format!("-{l}\n"));
    }
    for l in &b[pre..b.len() - suf] {
        out.push_str(&format!("+{l}\n"));
    }
    out
}

/// Decide and write back every selected policy. `results` maps run name -> task results
/// (from `tenon run --promote`); otherwise the latest successful run in the store is used.
pub fn promote_all(
    cat: &Catalog,
    dir: &Path,
    store: &SqliteStore,
    results: Option<&BTreeMap<String, BTreeMap<String, BTreeMap<String, ParamValue>>>>,
    opts: &PromoteOptions,
) -> Result<PromotionReport, String> {
    let mut out = Vec::new();
    'policies: for p in cat.promotion_policies.iter().filter(|p| opts.policy.as_ref().is_none_or(|n| n == &p.name)) {
        let run = &p.spec.pipeline_run_ref.name;
        let (source, run_results) = match results.and_then(|r| r.get(run)) {
            Some(r) => (source_revision(dir), r.clone()),
            None => match store.latest_run_results(run).map_err(|e| e.to_string())? {
                Some((_uid, r)) => (source_revision(dir), r),
                None => {
                    out.push(summary(
                        p,
                        None,
                        "NoResults",
                        &format!("PipelineRun {run:?} has no successful run recorded: run it first (tenon run)"),
                        "",
                        vec![],
                    ));
                    continue;
                }
            },
        };
        let target = match target_of(p, dir, opts) {
            Ok(t) => t,
            Err(e) => {
                out.push(summary(p, None, "Failed", &e, "", vec![]));
                continue;
            }
        };
        // incumbent values: read from the target branch
        let mut incumbents = BTreeMap::new();
        // gates whose incumbent could not be read: they cannot pass
        let mut unknown: BTreeMap<usize, String> = BTreeMap::new();
        for (i, g) in p.spec.gates.iter().enumerate() {
            if let Some(inc) = &g.incumbent {
                match git::read_at_tip(&target, &inc.file) {
                    Ok(Some(text)) => {
                        if let Ok(path) = crate::model::parse_path(&inc.path) {
                            if let Ok(span) = crate::model::locate_scalar(&text, &path) {
                                incumbents.insert(i, span.value);
                            }
                        }
                    }
                    Ok(None) => {}
                    Err(e) if opts.dry_run => {
                        unknown.insert(i, format!("the incumbent could not be read: {}", with_target(&e, &target.url)));
                    }
                    Err(e) => {
                        out.push(summary(p, None, "Failed", &with_target(&e, &target.url), &target.url, vec![]));
                        continue 'policies;
                    }
                }
            }
        }
        let input_hash = crate::hash::sha256_hex(serde_json::to_string(&run_results).unwrap_or_default().as_bytes());
        let mut d = decide(&p.name, &p.spec, &run_results, &incumbents, &source, &input_hash);
        for (i, why) in unknown {
            if let Some(g) = d.gates.get_mut(i) {
                g.passed = false;
                g.note = why;
            }
            d.promote = false;
        }
        // a decision already in the ledger has landed, whatever the gates say now (an
        // incumbent gate compares with the value it deployed itself)
        if !opts.dry_run {
            if let Ok(Some(_)) = git::read_at_tip(&target, &git::ledger_path(&d.environment, &d.id)) {
                let mut s = summary(
                    p,
                    Some(&d),
                    "AlreadyLanded",
                    "the ledger already records this promotion (its gates passed when it was decided)",
                    &target.url,
                    vec![],
                );
                // the gates would now compare with the value this promotion deployed: not shown
                s.gates.clear();
                s.promote = true;
                out.push(s);
                continue;
            }
        }
        let target_ref = format!(
            "{} {}",
            target.url,
            if target.branch_mode {
                format!("tenon/promote/{}/{}", d.environment, &d.id[..12])
            } else {
                target.branch.clone()
            }
        );
        if !d.promote {
            let failed: Vec<String> = d
                .gates
                .iter()
                .filter(|g| !g.passed)
                .map(|g| {
                    format!(
                        "{} {} {} (observed {:?}{})",
                        g.result,
                        g.operator,
                        g.threshold,
                        g.observed.as_deref().unwrap_or("none"),
                        if g.note.is_empty() { String::new() } else { format!("; {}", g.note) }
                    )
                })
                .collect();
            out.push(summary(p, Some(&d), "GatesFailed", &failed.join("; "), &target_ref, vec![]));
            continue;
        }
        let message = commit_message(&d);
        if opts.dry_run {
            let mut diffs = Vec::new();
            for u in &d.updates {
                if diffs.iter().any(|x: &String| x.contains(&format!("--- a/{}\n", u.file))) {
                    continue;
                }
                let old = git::read_at_tip(&target, &u.file)
                    .ok()
                    .flatten()
                    .or_else(|| std::fs::read_to_string(dir.join(&u.file)).ok());
                if let Some(old) = old {
                    let edits: Vec<super::edit::Edit> = d
                        .updates
                        .iter()
                        .filter(|x| x.file == u.file)
                        .map(|x| super::edit::Edit { path: x.path.clone(), value: x.value.clone() })
                        .collect();
                    match super::edit::apply(&old, &edits) {
                        Ok((new, true)) => diffs.push(diff(&u.file, &old, &new)),
                        Ok((_, false)) => {
                            diffs.push(format!("{}: already holds these values (nothing to commit)\n", u.file))
                        }
                        Err(e) => diffs.push(format!("{}: {e}\n", u.file)),
                    }
                }
            }
            let mut s = summary(p, Some(&d), "DryRun", "", &target_ref, diffs);
            s.message = message;
            out.push(s);
            continue;
        }
        // the decision is recorded before git is touched; a restart re-drives it
        let decided = store
            .record_decision(&d.id, &p.name, &d.environment, &serde_json::to_string(&d).unwrap_or_default())
            .map_err(|e| e.to_string())?;
        let landing = git::write_back(&target, &d, &message, decided, &source);
        let (state, detail, commit) = match &landing {
            Ok(Landing::Landed { commit, branch, attempts }) => {
                ("Landed", format!("pushed to {branch} after {attempts} attempt(s)"), Some(commit.clone()))
            }
            Ok(Landing::AlreadyLanded) => ("AlreadyLanded", "the ledger already records this promotion".into(), None),
            Ok(Landing::NoChange) => ("NoChange", "the target files already hold these values".into(), None),
            Ok(Landing::Superseded { by }) => ("Superseded", format!("a later decision is in the ledger: {by}"), None),
            Ok(Landing::Conflicted { attempts }) => (
                "Conflicted",
                format!("the branch kept moving; gave up after {attempts} attempts, will retry on the next trigger"),
                None,
            ),
            Err(e) => ("Failed", with_target(e, &target.url), None),
        };
        let stored = if state == "Failed" { "Failed" } else { state };
        let _ = store.set_promotion_state(&d.id, stored, &detail);
        let mut s = summary(p, Some(&d), state, &detail, &target_ref, vec![]);
        s.message = message;
        s.commit = commit;
        out.push(s);
    }
    Ok(PromotionReport { api_version: API_VERSION, kind: "PromotionReport", promotions: out })
}

/// The promotions recorded in the ledgers of the policies' targets, newest first.
pub fn history(
    cat: &Catalog,
    dir: &Path,
    env: Option<&str>,
    opts: &PromoteOptions,
) -> Result<Vec<git::LedgerRecord>, String> {
    let mut seen = std::collections::BTreeSet::new();
    let mut out = Vec::new();
    for p in cat.promotion_policies.iter().filter(|p| opts.policy.as_ref().is_none_or(|n| n == &p.name)) {
        let t = target_of(p, dir, opts)?;
        if !seen.insert((t.url.clone(), t.branch.clone())) {
            continue;
        }
        out.extend(git::ledger_at_tip(&t, env).map_err(|e| with_target(&e, &t.url))?);
    }
    out.sort_by(|a, b| b.decided_at_ns.cmp(&a.decided_at_ns));
    Ok(out)
}

/// An error message that names the target remote.
fn with_target(e: &git::PromoteError, url: &str) -> String {
    let m = e.to_string();
    if m.contains(url) {
        m
    } else {
        format!("{m} (target {url})")
    }
}

fn summary(
    p: &Obj<PromotionPolicySpec>,
    d: Option<&Decision>,
    state: &str,
    detail: &str,
    target: &str,
    diff: Vec<String>,
) -> PromotionSummary {
    PromotionSummary {
        policy: p.name.clone(),
        environment: p.spec.environment.clone(),
        id: d.map(|d| d.id.clone()).unwrap_or_default(),
        promote: d.is_some_and(|d| d.promote),
        state: state.into(),
        detail: detail.into(),
        subject_uri: d.map(|d| d.subject_uri.clone()).unwrap_or_default(),
        subject_digest: d.map(|d| d.subject_digest.clone()).unwrap_or_default(),
        gates: d.map(|d| d.gates.clone()).unwrap_or_default(),
        updates: d.map(|d| d.updates.clone()).unwrap_or_default(),
        target: target.into(),
        message: d.map(|d| d.message.clone()).unwrap_or_default(),
        commit: None,
        diff,
    }
}
