//! `tenon promote`: for each PromotionPolicy, take the judged run's results, decide,
//! record the decision, and write it back (or, with `--dry-run`, show what would be
//! written: the gate table, the exact diff, the message, the trailers and the target ref).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::decide::{commit_message, decide, Decision, GateOutcome, RenderedUpdate};
use super::git::{self, Credentials, GitError, Hold, Landing, Target};
use super::PromoteError;
use crate::model::{Catalog, Obj, ParamValue, PromotionPolicySpec};
use crate::report::{RunReport, API_VERSION};
use crate::store::{PromotionState, RunResults, StateStore};

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
    /// `Held`, `Proposed` (branch mode: pushed, awaiting merge), `NotHeld` (release),
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
    /// The hold on the environment (`Held`, rollback, release).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hold: Option<Hold>,
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
fn target_of(p: &Obj<PromotionPolicySpec>, dir: &Path, opts: &PromoteOptions) -> Result<Target, PromoteError> {
    let discovered = git2::Repository::discover(dir).ok();
    let url = match &p.spec.target.url {
        Some(u) => u.clone(),
        None => discovered
            .as_ref()
            .and_then(|r| r.find_remote("origin").ok().and_then(|o| o.url().map(String::from)))
            .ok_or_else(|| PromoteError::NoTarget { policy: p.name.clone() })?,
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
    store: &dyn StateStore,
    results: Option<&BTreeMap<String, RunResults>>,
    opts: &PromoteOptions,
) -> Result<PromotionReport, PromoteError> {
    let mut out = Vec::new();
    for p in cat.promotion_policies.iter().filter(|p| opts.policy.as_ref().is_none_or(|n| n == &p.name)) {
        out.push(promote_policy(p, dir, store, results, opts)?);
    }
    Ok(PromotionReport { api_version: API_VERSION, kind: "PromotionReport", promotions: out })
}

/// Decide and write back one policy. A promotion that could not be made is a summary
/// (`NoResults`, `Failed`, `GatesFailed`, ...); only a store failure or a malformed document
/// of tenon's on the target branch is an error.
fn promote_policy(
    p: &Obj<PromotionPolicySpec>,
    dir: &Path,
    store: &dyn StateStore,
    results: Option<&BTreeMap<String, RunResults>>,
    opts: &PromoteOptions,
) -> Result<PromotionSummary, PromoteError> {
    let run = &p.spec.pipeline_run_ref.name;
    let run_results = match results.and_then(|r| r.get(run)) {
        Some(r) => r.clone(),
        None => match store
            .latest_run_results(run)
            .map_err(PromoteError::store(format!("read the results of PipelineRun {run:?}")))?
        {
            Some((_uid, r)) => r,
            None => {
                let why = format!("PipelineRun {run:?} has no successful run recorded: run it first (tenon run)");
                return Ok(summary(p, None, "NoResults", &why, "", vec![]));
            }
        },
    };
    let source = source_revision(dir);
    let target = match target_of(p, dir, opts) {
        Ok(t) => t,
        Err(e) => return Ok(summary(p, None, "Failed", &e.to_string(), "", vec![])),
    };
    let (incumbents, unknown) = match read_incumbents(p, &target, opts.dry_run) {
        Ok(read) => read,
        Err(e) => return Ok(summary(p, None, "Failed", &with_target(&e, &target.url), &target.url, vec![])),
    };
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
            let why = "the ledger already records this promotion (its gates passed when it was decided)";
            let mut s = summary(p, Some(&d), "AlreadyLanded", why, &target.url, vec![]);
            // the gates would now compare with the value this promotion deployed: not shown
            s.gates.clear();
            s.promote = true;
            return Ok(s);
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
        return Ok(summary(p, Some(&d), "GatesFailed", &failed_gates(&d), &target_ref, vec![]));
    }
    // a hold (placed by `tenon rollback`) stops automatic promotion: never bypassed
    match git::hold_at_tip(&target, &d.environment) {
        Ok(None) => {}
        Ok(Some(h)) => {
            let mut s = summary(p, Some(&d), "Held", &h.describe(), &target_ref, vec![]);
            s.hold = Some(h);
            return Ok(s);
        }
        Err(e) => {
            invalid(&e, &target.url)?;
            let why = format!("cannot tell whether {} is held: {}", d.environment, with_target(&e, &target.url));
            return Ok(summary(p, Some(&d), "Failed", &why, &target_ref, vec![]));
        }
    }
    let message = commit_message(&d);
    if opts.dry_run {
        let diffs = dry_run_diffs(&target, dir, &d.updates);
        let mut s = summary(p, Some(&d), "DryRun", "", &target_ref, diffs);
        s.message = message;
        return Ok(s);
    }
    land(p, &d, store, &target, &target_ref, message, &source)
}

/// The incumbent value of each gate that has one, read from the target branch; and, in a
/// dry run, the gates whose incumbent could not be read (they cannot pass), with why.
/// Outside a dry run such a read fails the promotion.
#[allow(clippy::type_complexity)]
fn read_incumbents(
    p: &Obj<PromotionPolicySpec>,
    target: &Target,
    dry_run: bool,
) -> Result<(BTreeMap<usize, String>, BTreeMap<usize, String>), GitError> {
    let mut incumbents = BTreeMap::new();
    let mut unknown = BTreeMap::new();
    for (i, g) in p.spec.gates.iter().enumerate() {
        let Some(inc) = &g.incumbent else { continue };
        match git::read_at_tip(target, &inc.file) {
            Ok(Some(text)) => {
                if let Ok(path) = crate::model::parse_path(&inc.path) {
                    if let Ok(span) = crate::model::locate_scalar(&text, &path) {
                        incumbents.insert(i, span.value);
                    }
                }
            }
            Ok(None) => {}
            Err(e) if dry_run => {
                unknown.insert(i, format!("the incumbent could not be read: {}", with_target(&e, &target.url)));
            }
            Err(e) => return Err(e),
        }
    }
    Ok((incumbents, unknown))
}

/// The gates of `d` that failed, for a summary's detail.
fn failed_gates(d: &Decision) -> String {
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
    failed.join("; ")
}

/// Record decision `d` (before git is touched: a restart re-drives it), write it back and
/// record how that ended.
fn land(
    p: &Obj<PromotionPolicySpec>,
    d: &Decision,
    store: &dyn StateStore,
    target: &Target,
    target_ref: &str,
    message: String,
    source: &str,
) -> Result<PromotionSummary, PromoteError> {
    let decided = store
        .record_decision(&d.id, &p.name, &d.environment, &serde_json::to_string(d).unwrap_or_default())
        .map_err(PromoteError::store("record the promotion decision (nothing was pushed)"))?;
    let landing = git::write_back(target, d, &message, decided, source, None);
    if let Err(e) = &landing {
        invalid(e, &target.url)?;
    }
    let (state, detail, commit, hold) = outcome(&landing, &target.url, &target.branch);
    let _ = store.set_promotion_state(&d.id, state, &detail);
    let mut s = summary(p, Some(d), state.as_str(), &detail, target_ref, vec![]);
    s.message = message;
    s.commit = commit;
    s.hold = hold;
    Ok(s)
}

/// What the ledgers of the policies' targets record (newest first), and the holds in place.
pub fn history(
    cat: &Catalog,
    dir: &Path,
    env: Option<&str>,
    opts: &PromoteOptions,
) -> Result<(Vec<git::LedgerRecord>, Vec<Hold>), PromoteError> {
    let mut seen = std::collections::BTreeSet::new();
    let (mut out, mut holds) = (Vec::new(), Vec::new());
    for p in cat.promotion_policies.iter().filter(|p| opts.policy.as_ref().is_none_or(|n| n == &p.name)) {
        let t = target_of(p, dir, opts)?;
        if !seen.insert((t.url.clone(), t.branch.clone())) {
            continue;
        }
        let (records, h) = git::ledger_at_tip(&t, env).map_err(|e| PromoteError::git(&t.url, e))?;
        out.extend(records);
        holds.extend(h);
    }
    out.sort_by_key(|r| std::cmp::Reverse(r.decided_at_ns));
    Ok((out, holds))
}

/// The dry-run diff of each file `updates` edit, against the target branch (or, when it
/// cannot be read, the local copy).
fn dry_run_diffs(target: &Target, dir: &Path, updates: &[RenderedUpdate]) -> Vec<String> {
    let mut diffs = Vec::new();
    let mut files: Vec<&str> = updates.iter().map(|u| u.file.as_str()).collect();
    files.dedup();
    for file in files {
        if diffs.iter().any(|x: &String| x.contains(&format!("--- a/{file}\n"))) {
            continue;
        }
        let old =
            git::read_at_tip(target, file).ok().flatten().or_else(|| std::fs::read_to_string(dir.join(file)).ok());
        let Some(old) = old else { continue };
        let edits: Vec<super::edit::Edit> = updates
            .iter()
            .filter(|x| x.file == file)
            .map(|x| super::edit::Edit { path: x.path.clone(), value: x.value.clone() })
            .collect();
        match super::edit::apply(&old, &edits) {
            Ok((new, true)) => diffs.push(diff(file, &old, &new)),
            Ok((_, false)) => diffs.push(format!("{file}: already holds these values (nothing to commit)\n")),
            Err(e) => diffs.push(format!("{file}: {e}\n")),
        }
    }
    diffs
}

/// A write-back's outcome as (state, detail, commit, hold).
fn outcome(
    landing: &Result<Landing, GitError>,
    url: &str,
    branch: &str,
) -> (PromotionState, String, Option<String>, Option<Hold>) {
    use PromotionState as S;
    match landing {
        Ok(Landing::Landed { commit, branch, attempts }) => {
            (S::Landed, format!("pushed to {branch} after {attempts} attempt(s)"), Some(commit.clone()), None)
        }
        Ok(Landing::AlreadyLanded) => {
            (S::AlreadyLanded, "the ledger already records this promotion".into(), None, None)
        }
        Ok(Landing::NoChange) => (S::NoChange, "the target files already hold these values".into(), None, None),
        Ok(Landing::Superseded { by }) => {
            (S::Superseded, format!("a later decision is in the ledger: {by}"), None, None)
        }
        Ok(Landing::Conflicted { attempts }) => (
            S::Conflicted,
            format!("the branch kept moving; gave up after {attempts} attempts, will retry on the next trigger"),
            None,
            None,
        ),
        Ok(Landing::Proposed { commit, branch: pushed }) => (
            S::Proposed,
            format!("branch {pushed} holds this change; it lands when merged into {branch} (open a pull request)"),
            Some(commit.clone()),
            None,
        ),
        Ok(Landing::Held { hold }) => (S::Held, hold.describe(), None, Some(hold.clone())),
        Ok(Landing::NotHeld) => (S::NotHeld, "the environment is not held: nothing to release".into(), None, None),
        Err(e) => (S::Failed, with_target(e, url), None, None),
    }
}

/// The policy (the first, with `opts.policy` that one) writing environment `env`, and
/// its target; every policy of `env` must write to the same branch.
fn env_target<'c>(
    cat: &'c Catalog,
    dir: &Path,
    env: &str,
    opts: &PromoteOptions,
) -> Result<(&'c Obj<PromotionPolicySpec>, Target), PromoteError> {
    let policies: Vec<&Obj<PromotionPolicySpec>> = cat
        .promotion_policies
        .iter()
        .filter(|p| p.spec.environment == env && opts.policy.as_ref().is_none_or(|n| n == &p.name))
        .collect();
    let Some(first) = policies.first() else {
        return Err(PromoteError::NoPolicy { env: env.to_string(), dir: dir.display().to_string() });
    };
    let target = target_of(first, dir, opts)?;
    for p in &policies[1..] {
        let t = target_of(p, dir, opts)?;
        if (&t.url, &t.branch) != (&target.url, &target.branch) {
            return Err(PromoteError::TargetsConflict {
                env: env.to_string(),
                first: first.name.clone(),
                second: p.name.clone(),
            });
        }
    }
    Ok((first, target))
}

/// `tenon rollback --env ENV --to ID`: a new promotion restoring the field values that
/// promotion ID (a unique prefix of it) set, and a hold that stops automatic promotion
/// of ENV until `tenon release`; both in one commit.
#[allow(clippy::too_many_arguments)]
pub fn rollback(
    cat: &Catalog,
    dir: &Path,
    store: &dyn StateStore,
    env: &str,
    to: &str,
    by: &str,
    reason: &str,
    opts: &PromoteOptions,
) -> Result<PromotionReport, PromoteError> {
    let (p, target) = env_target(cat, dir, env, opts)?;
    let report =
        |s: PromotionSummary| PromotionReport { api_version: API_VERSION, kind: "RollbackReport", promotions: vec![s] };
    let (records, holds) = match git::ledger_at_tip(&target, Some(env)) {
        Ok(r) => r,
        Err(e) => {
            invalid(&e, &target.url)?;
            return Ok(report(summary(p, None, "Failed", &with_target(&e, &target.url), &target.url, vec![])));
        }
    };
    let promotions: Vec<&git::LedgerRecord> = records.iter().filter(|r| r.kind != "release").collect();
    let found = restored_promotion(&promotions, to, env, &target)?;
    let latest = promotions.first().map(|r| r.id.clone()).unwrap_or_default();
    let target_ref = format!("{} {}", target.url, git::push_branch(&target, env, &latest));
    // already rolled back to it, and the hold is in place: nothing to do
    if let Some(h) = holds.iter().find(|h| h.rollback == latest && h.restored == found.id) {
        let mut s = summary(
            p,
            None,
            "AlreadyLanded",
            &format!("rollback {latest} already restored {} and holds {env}", found.id),
            &target_ref,
            vec![],
        );
        s.id = latest.clone();
        s.hold = Some(h.clone());
        return Ok(report(s));
    }
    let short = |s: &str| git::short(s, 12).to_string();
    let reason = if reason.is_empty() { format!("rollback to {}", short(&found.id)) } else { reason.to_string() };
    let d = rollback_decision(env, found, &latest, by, &reason);
    let id = d.id.clone();
    let message = commit_message(&d);
    let target_ref = format!("{} {}", target.url, git::push_branch(&target, env, &id));
    let mut hold = Hold {
        environment: env.to_string(),
        rollback: id.clone(),
        restored: found.id.clone(),
        by: by.to_string(),
        reason,
        held_at_ns: 0,
    };
    if opts.dry_run {
        hold.held_at_ns = crate::hash::now_ns();
        let mut diffs = dry_run_diffs(&target, dir, &d.updates);
        let added: String = hold.to_yaml().lines().map(|l| format!("+{l}\n")).collect();
        diffs.push(format!("--- /dev/null\n+++ b/{}\n{added}", git::hold_path(env)));
        let mut s = summary_of(&d, "DryRun", "", &target_ref, diffs);
        s.message = message;
        s.hold = Some(hold);
        return Ok(report(s));
    }
    let decided = store
        .record_decision(&id, &d.policy, env, &serde_json::to_string(&d).unwrap_or_default())
        .map_err(PromoteError::store("record the rollback decision (nothing was pushed)"))?;
    hold.held_at_ns = decided;
    let landing = git::write_back(&target, &d, &message, decided, "rollback", Some(&hold));
    if let Err(e) = &landing {
        invalid(e, &target.url)?;
    }
    let (state, detail, commit, _) = outcome(&landing, &target.url, &target.branch);
    let _ = store.set_promotion_state(&id, state, &detail);
    let mut s = summary_of(&d, state.as_str(), &detail, &target_ref, vec![]);
    s.message = message;
    s.commit = commit;
    s.hold = Some(hold);
    Ok(report(s))
}

/// The promotion of `env` whose id starts with `to` (exactly one), with updates to restore.
fn restored_promotion<'r>(
    promotions: &[&'r git::LedgerRecord],
    to: &str,
    env: &str,
    target: &Target,
) -> Result<&'r git::LedgerRecord, PromoteError> {
    let matches: Vec<&git::LedgerRecord> =
        promotions.iter().copied().filter(|r| !to.is_empty() && r.id.starts_with(to)).collect();
    let found = match matches.as_slice() {
        [one] => *one,
        [] => {
            return Err(PromoteError::UnknownPromotion {
                to: to.to_string(),
                env: env.to_string(),
                url: target.url.clone(),
                branch: target.branch.clone(),
            })
        }
        many => {
            let candidates = many.iter().map(|r| git::short(&r.id, 16).to_string()).collect();
            return Err(PromoteError::AmbiguousPromotion { to: to.to_string(), env: env.to_string(), candidates });
        }
    };
    if found.updates.is_empty() {
        return Err(PromoteError::NothingToRestore { id: found.id.clone() });
    }
    Ok(found)
}

/// The decision of a rollback of `env` (whose latest promotion is `latest`) to `found`:
/// its id names what it restores and from where.
fn rollback_decision(env: &str, found: &git::LedgerRecord, latest: &str, by: &str, reason: &str) -> Decision {
    let id = crate::hash::sha256_hex(
        serde_json::json!({"kind": "rollback", "environment": env, "restores": found.id, "from": latest, "updates": found.updates})
            .to_string()
            .as_bytes(),
    );
    let short = |s: &str| git::short(s, 12).to_string();
    Decision {
        policy: found.policy.clone(),
        environment: env.to_string(),
        subject_uri: found.subject_uri.clone(),
        subject_digest: found.subject_digest.clone(),
        gates: vec![],
        promote: true,
        updates: found.updates.clone(),
        id: id.clone(),
        message: format!(
            "rollback({env}): restore {} ({}); hold automatic promotion",
            short(&found.id),
            found.subject_digest
        ),
        trailers: vec![
            ("Tenon-Promotion-Id".into(), id),
            ("Tenon-Policy".into(), found.policy.clone()),
            ("Tenon-Environment".into(), env.to_string()),
            ("Tenon-Subject-Digest".into(), found.subject_digest.clone()),
            ("Tenon-Rollback-Of".into(), latest.to_string()),
            ("Tenon-Rollback-To".into(), found.id.clone()),
            ("Tenon-Hold".into(), format!("{by}: {reason}")),
        ],
        restores: Some(found.id.clone()),
    }
}

/// `tenon release --env ENV`: remove the hold on ENV in a commit (nothing to release:
/// no commit).
pub fn release(
    cat: &Catalog,
    dir: &Path,
    env: &str,
    by: &str,
    opts: &PromoteOptions,
) -> Result<PromotionReport, PromoteError> {
    let (p, target) = env_target(cat, dir, env, opts)?;
    let report =
        |s: PromotionSummary| PromotionReport { api_version: API_VERSION, kind: "ReleaseReport", promotions: vec![s] };
    let hold = match git::hold_at_tip(&target, env) {
        Ok(Some(h)) => h,
        Ok(None) => {
            let detail = format!("environment {env} is not held: nothing to release");
            return Ok(report(summary(p, None, "NotHeld", &detail, &target.url, vec![])));
        }
        Err(e) => {
            invalid(&e, &target.url)?;
            return Ok(report(summary(p, None, "Failed", &with_target(&e, &target.url), &target.url, vec![])));
        }
    };
    let id = crate::hash::sha256_hex(
        serde_json::json!({"kind": "release", "environment": env, "releases": hold.rollback}).to_string().as_bytes(),
    );
    let message = format!(
        "release({env}): lift the hold of rollback {}\n\nTenon-Release-Id: {id}\nTenon-Environment: {env}\nTenon-Released-Hold: {}\nTenon-Released-By: {by}\n",
        git::short(&hold.rollback, 12),
        hold.rollback
    );
    let target_ref = format!("{} {}", target.url, git::push_branch(&target, env, &id));
    let mut s = summary(p, None, "DryRun", "", &target_ref, vec![]);
    s.id = id.clone();
    s.message = message.clone();
    if opts.dry_run {
        let removed: String = hold.to_yaml().lines().map(|l| format!("-{l}\n")).collect();
        s.diff = vec![format!("--- a/{}\n+++ /dev/null\n{removed}", git::hold_path(env))];
    } else {
        let landing = git::write_release(&target, &id, &hold, by, &message, crate::hash::now_ns());
        if let Err(e) = &landing {
            invalid(e, &target.url)?;
        }
        let (state, detail, commit, _) = outcome(&landing, &target.url, &target.branch);
        s.state = state.as_str().into();
        s.detail = if state == PromotionState::Landed { format!("released {env}; {detail}") } else { detail };
        s.commit = commit;
    }
    s.hold = Some(hold);
    Ok(report(s))
}

/// One of tenon's own documents on the target branch is malformed: invalid input (exit 2),
/// with its file:line, not a failed promotion.
fn invalid(e: &GitError, url: &str) -> Result<(), PromoteError> {
    match e {
        GitError::Malformed(m) => Err(PromoteError::Malformed { url: url.to_string(), source: m.clone() }),
        _ => Ok(()),
    }
}

/// An error message that names the target remote.
fn with_target(e: &git::GitError, url: &str) -> String {
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
    match d {
        Some(d) => summary_of(d, state, detail, target, diff),
        None => PromotionSummary {
            policy: p.name.clone(),
            environment: p.spec.environment.clone(),
            id: String::new(),
            promote: false,
            state: state.into(),
            detail: detail.into(),
            subject_uri: String::new(),
            subject_digest: String::new(),
            gates: vec![],
            updates: vec![],
            target: target.into(),
            message: String::new(),
            commit: None,
            diff,
            hold: None,
        },
    }
}

fn summary_of(d: &Decision, state: &str, detail: &str, target: &str, diff: Vec<String>) -> PromotionSummary {
    PromotionSummary {
        policy: d.policy.clone(),
        environment: d.environment.clone(),
        id: d.id.clone(),
        promote: d.promote,
        state: state.into(),
        detail: detail.into(),
        subject_uri: d.subject_uri.clone(),
        subject_digest: d.subject_digest.clone(),
        gates: d.gates.clone(),
        updates: d.updates.clone(),
        target: target.into(),
        message: d.message.clone(),
        commit: None,
        diff,
        hold: None,
    }
}
