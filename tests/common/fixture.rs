//! The YAML set-up the integration tests share: one temp dir holding three siblings,
//!
//! ```text
//! <tmp>/repo      the manifests (`pipeline.yaml`, or a copied example) and input files
//! <tmp>/store     TENON_STORE (never inside the repository, so it is not hashed)
//! <tmp>/scratch   files outside the repository (execution logs, pid files)
//! ```
//!
//! Paths are canonical (no symlinked /tmp), so tests may compare them with report paths.

use std::path::{Path, PathBuf};

pub struct Fixture {
    _tmp: tempfile::TempDir,
    pub root: PathBuf,
    pub repo: PathBuf,
    pub store: PathBuf,
    pub scratch: PathBuf,
}

impl Fixture {
    /// Empty `repo`, `store` and `scratch` dirs.
    pub fn new() -> Fixture {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().canonicalize().unwrap();
        let (repo, store, scratch) = (root.join("repo"), root.join("store"), root.join("scratch"));
        for d in [&repo, &store, &scratch] {
            std::fs::create_dir_all(d).unwrap();
        }
        Fixture { _tmp: tmp, root, repo, store, scratch }
    }

    /// `yaml` as `repo/pipeline.yaml`; `@SCRATCH@` in it is replaced by the scratch dir.
    pub fn with_yaml(yaml: &str) -> Fixture {
        let f = Fixture::new();
        f.write("pipeline.yaml", yaml.replace("@SCRATCH@", f.scratch.to_str().unwrap()));
        f
    }

    /// A copy of the directory tree `from` as the repository.
    pub fn with_copy_of(from: &Path) -> Fixture {
        let f = Fixture::new();
        copy_dir(from, &f.repo);
        f
    }

    /// Write `content` to `repo/REL`, creating parent dirs.
    pub fn write(&self, rel: &str, content: impl AsRef<[u8]>) {
        let p = self.repo.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }

    pub fn repo_s(&self) -> &str {
        self.repo.to_str().unwrap()
    }
}

/// Copy the directory tree `from` to `to` (regular files and dirs; other entries skipped).
pub fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let t = e.file_type().unwrap();
        let dst = to.join(e.file_name());
        if t.is_dir() {
            copy_dir(&e.path(), &dst);
        } else if t.is_file() {
            std::fs::copy(e.path(), &dst).unwrap();
        }
    }
}
