//! The fetched tip of the target branch: reading files, the ledger, holds, and rendering
//! the declarative edits onto it.

use std::path::Path;

use git2::{Oid, Repository};

use super::push::Files;
use super::records::Hold;
use super::{hold_path, read_blob, GitError, Landing};
use crate::promote::decide::RenderedUpdate;
use crate::promote::edit::{self, Edit};
use crate::promote::ledger::{self, RecordDoc};
use crate::promote::LEDGER_DIR;

/// The fetched tip of the target branch (None: the branch does not exist yet).
pub struct Tip<'r> {
    pub(super) repo: &'r Repository,
    /// The branch (names files in errors: `main:.tenon/holds/prod.yaml`).
    pub(super) branch: String,
    pub(super) commit: Option<git2::Commit<'r>>,
    pub(super) tree: Option<git2::Tree<'r>>,
}

impl<'r> Tip<'r> {
    pub(super) fn at(repo: &'r Repository, branch: &str, oid: Option<Oid>) -> Result<Tip<'r>, GitError> {
        let commit = match oid {
            Some(o) => Some(repo.find_commit(o)?),
            None => None,
        };
        let tree = match &commit {
            Some(c) => Some(c.tree()?),
            None => None,
        };
        Ok(Tip { repo, branch: branch.to_string(), commit, tree })
    }

    pub fn read(&self, path: &str) -> Result<Option<String>, GitError> {
        match &self.tree {
            Some(t) => read_blob(self.repo, t, path),
            None => Ok(None),
        }
    }

    pub(super) fn has(&self, path: &str) -> bool {
        self.tree.as_ref().is_some_and(|t| t.get_path(Path::new(path)).is_ok())
    }

    /// `decidedAt` of every ledger entry of `env`: (id, decidedAt).
    pub(super) fn ledger(&self, env: &str) -> Result<Vec<(String, i64)>, GitError> {
        let Some(tree) = &self.tree else { return Ok(vec![]) };
        let mut out = Vec::new();
        for (id, path, text) in yaml_files(self.repo, tree, &format!("{LEDGER_DIR}/promotions/{env}")) {
            let r: RecordDoc = ledger::parse(&format!("{}:{path}", self.branch), &text)?;
            out.push((id, r.decided_at));
        }
        Ok(out)
    }

    /// The newest ledger entry decided after `decided_at_ns`.
    pub(super) fn superseded(&self, env: &str, decided_at_ns: i64) -> Result<Option<Landing>, GitError> {
        let entries = self.ledger(env)?;
        Ok(entries
            .into_iter()
            .filter(|(_, at)| *at > decided_at_ns)
            .max_by_key(|(_, at)| *at)
            .map(|(by, _)| Landing::Superseded { by }))
    }

    /// The newest ledger entry of `env`.
    pub(super) fn latest(&self, env: &str) -> Result<Option<String>, GitError> {
        Ok(self.ledger(env)?.into_iter().max_by_key(|(_, at)| *at).map(|(id, _)| id))
    }

    pub fn hold(&self, env: &str) -> Result<Option<Hold>, GitError> {
        let path = hold_path(env);
        match self.read(&path)? {
            Some(text) => Ok(Some(Hold::parse(&format!("{}:{path}", self.branch), &text)?)),
            None => Ok(None),
        }
    }

    /// The declarative edits applied to their files here: (path, new text) of each file,
    /// and whether any value changed.
    pub(super) fn render(&self, branch: &str, updates: &[RenderedUpdate]) -> Result<(Files, bool), GitError> {
        let mut by_file: Vec<(String, Vec<Edit>)> = Vec::new();
        for u in updates {
            let e = Edit { path: u.path.clone(), value: u.value.clone() };
            match by_file.iter_mut().find(|(f, _)| f == &u.file) {
                Some((_, v)) => v.push(e),
                None => by_file.push((u.file.clone(), vec![e])),
            }
        }
        let (mut files, mut changed) = (Vec::new(), false);
        for (file, edits) in by_file {
            let text = self.read(&file)?.ok_or_else(|| GitError::Edit {
                file: file.clone(),
                message: format!("not found on branch {branch}"),
            })?;
            let (new, did) = edit::apply(&text, &edits)
                .map_err(|e| GitError::Edit { file: file.clone(), message: e.to_string() })?;
            changed |= did;
            files.push((file, Some(new)));
        }
        Ok((files, changed))
    }
}

/// The `.yaml` files directly in `dir` of `tree`: (name without `.yaml`, path, text).
pub(super) fn yaml_files(repo: &Repository, tree: &git2::Tree<'_>, dir: &str) -> Vec<(String, String, String)> {
    let Ok(entry) = tree.get_path(Path::new(dir)) else { return vec![] };
    let Ok(sub) = repo.find_tree(entry.id()) else { return vec![] };
    sub.iter()
        .filter_map(|e| {
            let name = e.name()?;
            let id = name.strip_suffix(".yaml")?.to_string();
            let blob = repo.find_blob(e.id()).ok()?;
            Some((id, format!("{dir}/{name}"), String::from_utf8_lossy(blob.content()).to_string()))
        })
        .collect()
}

/// The subdirectory names of `dir` in `tree`.
pub(super) fn subdirs(repo: &Repository, tree: &git2::Tree<'_>, dir: &str) -> Vec<String> {
    let Ok(entry) = tree.get_path(Path::new(dir)) else { return vec![] };
    let Ok(sub) = repo.find_tree(entry.id()) else { return vec![] };
    sub.iter().filter(|e| e.kind() == Some(git2::ObjectType::Tree)).filter_map(|e| e.name().map(String::from)).collect()
}
