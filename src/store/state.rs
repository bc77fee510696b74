//! The state-store seam of `tenon promote` and `tenon watch`: what they record besides
//! cache records (promotion decisions and their states, reconciled revisions), typed.
//! [`SqliteStore`](super::SqliteStore) implements it (`sqlite.rs` holds the SQL).

use std::collections::BTreeMap;

use serde::Serialize;

use super::Result;
use crate::model::ParamValue;

/// Task results of one run: task name -> result name -> value.
pub type RunResults = BTreeMap<String, BTreeMap<String, ParamValue>>;

/// What promote and watch read and write in the store.
pub trait StateStore: Send + Sync {
    /// Results of the latest successful run of PipelineRun `run`: (uid, its task results).
    fn latest_run_results(&self, run: &str) -> Result<Option<(String, RunResults)>>;
    /// Record a promotion decision (state [`PromotionState::Decided`]) before touching git.
    /// A decision already recorded keeps its original time (the ledger's `decidedAt` is
    /// written once). Returns it.
    fn record_decision(&self, id: &str, policy: &str, env: &str, decision: &str) -> Result<i64>;
    /// Where the write-back of promotion `id` ended, and why.
    fn set_promotion_state(&self, id: &str, state: PromotionState, detail: &str) -> Result<()>;
    /// `tenon watch`: remember that `revision` of `source` was reconciled (so a restart
    /// does not redo it).
    fn record_reconciled(&self, source: &str, revision: &str, outcome: ReconcileOutcome) -> Result<()>;
    /// `tenon watch`: the outcome recorded for `revision` of `source`, if it was reconciled.
    fn reconciled_outcome(&self, source: &str, revision: &str) -> Result<Option<ReconcileOutcome>>;
    /// `tenon watch`: the revision of `source` reconciled last.
    fn last_reconciled(&self, source: &str) -> Result<Option<String>>;
}

/// The state of a recorded promotion (or rollback): `Decided` until its write-back ends,
/// then how it ended. `Decided` and `Conflicted` ones are unfinished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PromotionState {
    Decided,
    Landed,
    AlreadyLanded,
    NoChange,
    Superseded,
    Conflicted,
    Proposed,
    Held,
    NotHeld,
    Failed,
}

impl PromotionState {
    /// The name stored in the `promotions` table and shown in promotion reports.
    pub fn as_str(self) -> &'static str {
        match self {
            PromotionState::Decided => "Decided",
            PromotionState::Landed => "Landed",
            PromotionState::AlreadyLanded => "AlreadyLanded",
            PromotionState::NoChange => "NoChange",
            PromotionState::Superseded => "Superseded",
            PromotionState::Conflicted => "Conflicted",
            PromotionState::Proposed => "Proposed",
            PromotionState::Held => "Held",
            PromotionState::NotHeld => "NotHeld",
            PromotionState::Failed => "Failed",
        }
    }
}

impl std::fmt::Display for PromotionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How one reconcile of `tenon watch` ended (the `outcome` of `/status`, logs,
/// `tenon_reconciles_total` and the store's reconciled revisions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReconcileOutcome {
    /// Every run succeeded (tasks may have come from the cache).
    Succeeded,
    /// Nothing to run: only tenon's own promotion commits since the last reconcile.
    Skipped,
    /// Nothing reconciled yet in this process: the revision was done before.
    UpToDate,
    /// A run failed.
    Failed,
    /// Shutdown interrupted a run.
    Cancelled,
    /// The manifests are invalid: nothing was run.
    Invalid,
    /// tenon could not work (checkout, state directory): the revision is tried again.
    Error,
}

impl ReconcileOutcome {
    pub const ALL: [ReconcileOutcome; 7] = [
        ReconcileOutcome::Succeeded,
        ReconcileOutcome::Skipped,
        ReconcileOutcome::UpToDate,
        ReconcileOutcome::Failed,
        ReconcileOutcome::Cancelled,
        ReconcileOutcome::Invalid,
        ReconcileOutcome::Error,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ReconcileOutcome::Succeeded => "succeeded",
            ReconcileOutcome::Skipped => "skipped",
            ReconcileOutcome::UpToDate => "up-to-date",
            ReconcileOutcome::Failed => "failed",
            ReconcileOutcome::Cancelled => "cancelled",
            ReconcileOutcome::Invalid => "invalid",
            ReconcileOutcome::Error => "error",
        }
    }

    /// The outcome named `s` (as [`as_str`](Self::as_str) writes it).
    pub fn parse(s: &str) -> Option<ReconcileOutcome> {
        Self::ALL.into_iter().find(|o| o.as_str() == s)
    }

    /// A success for `lastSuccessAt` and the last-success gauge.
    pub fn is_success(self) -> bool {
        matches!(self, ReconcileOutcome::Succeeded | ReconcileOutcome::Skipped)
    }
}

impl std::fmt::Display for ReconcileOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::super::{Record, SqliteStore, Store, StoreError};
    use super::*;

    /// The state stored for promotion `id`, read back with SQL.
    fn stored_state(s: &SqliteStore, id: &str) -> String {
        s.conn().query_row("SELECT state FROM promotions WHERE id = ?1", [id], |r| r.get(0)).unwrap()
    }

    #[test]
    fn promotion_states_are_recorded_through_the_trait() {
        let d = tempfile::tempdir().unwrap();
        let sqlite = SqliteStore::open(d.path()).unwrap();
        let s: &dyn StateStore = &sqlite;
        let decided = s.record_decision("p1", "policy", "prod", "{}").unwrap();
        assert_eq!(stored_state(&sqlite, "p1"), "Decided");
        // a decision recorded again keeps its first time
        std::thread::sleep(std::time::Duration::from_millis(2));
        assert_eq!(s.record_decision("p1", "policy", "prod", "{}").unwrap(), decided);
        s.record_decision("p2", "policy", "prod", "{}").unwrap();
        s.set_promotion_state("p1", PromotionState::Landed, "pushed").unwrap();
        s.set_promotion_state("p2", PromotionState::Conflicted, "moved").unwrap();
        assert_eq!(stored_state(&sqlite, "p1"), "Landed");
        // unfinished: decided or conflicted, not landed
        let unfinished: Vec<String> = sqlite.unfinished_promotions().unwrap().into_iter().map(|u| u.0).collect();
        assert_eq!(unfinished, ["p2"]);
        // every state is stored under its report name
        for state in [
            PromotionState::AlreadyLanded,
            PromotionState::NoChange,
            PromotionState::Superseded,
            PromotionState::Proposed,
            PromotionState::Held,
            PromotionState::NotHeld,
            PromotionState::Failed,
        ] {
            s.set_promotion_state("p1", state, "").unwrap();
            assert_eq!(stored_state(&sqlite, "p1"), state.to_string());
        }
    }

    #[test]
    fn reconciled_revisions_round_trip_through_the_trait() {
        let d = tempfile::tempdir().unwrap();
        let sqlite = SqliteStore::open(d.path()).unwrap();
        let s: &dyn StateStore = &sqlite;
        assert_eq!(s.reconciled_outcome("git a#main", "r1").unwrap(), None);
        assert_eq!(s.last_reconciled("git a#main").unwrap(), None);
        for (i, outcome) in ReconcileOutcome::ALL.into_iter().enumerate() {
            let rev = format!("r{i}");
            s.record_reconciled("git a#main", &rev, outcome).unwrap();
            assert_eq!(s.reconciled_outcome("git a#main", &rev).unwrap(), Some(outcome));
            assert_eq!(s.last_reconciled("git a#main").unwrap().as_deref(), Some(rev.as_str()));
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        // another source is apart
        assert_eq!(s.reconciled_outcome("git b#main", "r0").unwrap(), None);
        assert_eq!(s.last_reconciled("git b#main").unwrap(), None);
        // the outcomes survive reopening the store
        drop(sqlite);
        let sqlite = SqliteStore::open(d.path()).unwrap();
        let s: &dyn StateStore = &sqlite;
        assert_eq!(s.reconciled_outcome("git a#main", "r0").unwrap(), Some(ReconcileOutcome::Succeeded));
        assert_eq!(s.last_reconciled("git a#main").unwrap().as_deref(), Some("r6"));
        // an outcome tenon never writes is a corrupt row, not a guess
        sqlite.conn().execute("UPDATE watch_revisions SET outcome = 'weird' WHERE revision = 'r0'", []).unwrap();
        assert!(matches!(s.reconciled_outcome("git a#main", "r0"), Err(StoreError::Corrupt { .. })));
    }

    #[test]
    fn latest_run_results_come_from_the_latest_successful_run() {
        let d = tempfile::tempdir().unwrap();
        let sqlite = SqliteStore::open(d.path()).unwrap();
        let s: &dyn StateStore = &sqlite;
        assert_eq!(s.latest_run_results("build").unwrap(), None);
        let rec = |key: &str, task: &str, v: &str| Record {
            key: key.into(),
            run: "build".into(),
            run_uid: "u1".into(),
            task: task.into(),
            created_ns: 1,
            duration_ms: 1,
            preimage: serde_json::json!({}),
            results: BTreeMap::from([("digest".to_string(), ParamValue::Str(v.into()))]),
            outputs: vec![],
        };
        let k1 = "1".repeat(64);
        let k2 = "2".repeat(64);
        let k3 = "3".repeat(64);
        sqlite.put(&rec(&k1, "compile", "sha256:a")).unwrap();
        sqlite.put(&rec(&k2, "compile[0]", "sha256:m")).unwrap();
        sqlite.put(&rec(&k3, "compile", "sha256:b")).unwrap();
        sqlite.record_run("build", "u1", true, &[k1.clone(), k2.clone()]).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(2));
        // a failed run later does not count
        sqlite.record_run("build", "u2", false, std::slice::from_ref(&k3)).unwrap();
        let (uid, results) = s.latest_run_results("build").unwrap().unwrap();
        assert_eq!(uid, "u1");
        // matrix children (`t[0]`) are left out
        assert_eq!(
            results,
            BTreeMap::from([(
                "compile".to_string(),
                BTreeMap::from([("digest".to_string(), ParamValue::Str("sha256:a".into()))])
            )])
        );
    }
}
