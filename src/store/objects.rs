//! Content-addressed output objects: storing files and links, installing objects.

use super::*;

impl SqliteStore {
    pub fn object_path(&self, digest: &str) -> PathBuf {
        let (a, b) = digest.split_at(2.min(digest.len()));
        self.root.join("objects").join(a).join(b)
    }

    /// Whether the object at `dest` is present and holds `digest`: its size first (no
    /// read when it differs), then its content.
    pub(super) fn object_sound(dest: &Path, digest: &str, size: u64) -> bool {
        match std::fs::symlink_metadata(dest) {
            Ok(m) if m.is_file() && m.len() == size => hash::hash_file(dest).is_ok_and(|d| d == digest),
            _ => false,
        }
    }

    /// A fresh name under `tmp/` for an object being written.
    pub(super) fn tmp_path(&self, digest: &str) -> PathBuf {
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.root.join("tmp").join(format!("{}-{n}-{}", std::process::id(), &digest[..16]))
    }

    /// Store a symlink's target text as the object named by its digest (what the Merkle
    /// digest of a tree already hashes); returns (digest, size).
    pub(super) fn store_link(&self, src: &Path) -> Result<(String, u64)> {
        use std::os::unix::ffi::OsStrExt;
        let target = std::fs::read_link(src).map_err(Self::io(src))?;
        let text = target.as_os_str().as_bytes();
        let digest = hash::sha256_hex(text);
        let dest = self.object_path(&digest);
        if Self::object_sound(&dest, &digest, text.len() as u64) {
            return Ok((digest, text.len() as u64));
        }
        self.install(&digest, &dest, |tmp| std::fs::write(tmp, text).map_err(write_error(tmp)))?;
        Ok((digest, text.len() as u64))
    }

    /// The target text of a stored symlink, checked against its digest (a damaged object
    /// is removed: the next run that produces it stores it again).
    pub(super) fn link_target(&self, e: &hash::Entry) -> Result<std::ffi::OsString> {
        use std::io::Read;
        use std::os::unix::ffi::OsStringExt;
        let corrupt = |m: String| StoreError::Corrupt { key: e.digest.clone(), message: m };
        if !is_digest(&e.digest) {
            return Err(corrupt(format!("symlink {} names no stored target (an older output format)", e.path)));
        }
        let obj = self.object_path(&e.digest);
        let mut text = Vec::new();
        // a target is at most PATH_MAX bytes: a larger object is damaged, never read whole
        let f = std::fs::File::open(&obj).map_err(Self::io(&obj))?;
        f.take(64 * 1024).read_to_end(&mut text).map_err(Self::io(&obj))?;
        if hash::sha256_hex(&text) != e.digest {
            let _ = std::fs::remove_file(&obj);
            return Err(corrupt(format!(
                "stored target of symlink {} does not match its digest (run `tenon cache verify`)",
                e.path
            )));
        }
        Ok(std::ffi::OsString::from_vec(text))
    }

    /// Returns (digest, size). An object already present is checked (size, then content)
    /// before it is reused: a damaged one is replaced by the fresh copy.
    pub(super) fn store_file(&self, src: &Path) -> Result<(String, u64)> {
        let digest = hash::hash_file(src).map_err(Self::io(src))?;
        let dest = self.object_path(&digest);
        let size = std::fs::metadata(src).map_err(Self::io(src))?.len();
        if Self::object_sound(&dest, &digest, size) {
            return Ok((digest, size));
        }
        if dest.exists() {
            tracing::warn!(object = %digest, "replacing a corrupt stored object");
        }
        self.install(&digest, &dest, |tmp| {
            reflink_copy::reflink_or_copy(src, tmp).map_err(write_error(tmp))?;
            // the source may have changed while we copied: the object must match its name
            let got = hash::hash_file(tmp).map_err(Self::io(tmp))?;
            let stored = std::fs::metadata(tmp).map_err(Self::io(tmp))?.len();
            if got != digest || stored != size {
                return Err(StoreError::Io {
                    path: src.to_path_buf(),
                    source: std::io::Error::other("file changed while it was being stored"),
                });
            }
            Ok(())
        })?;
        Ok((digest, size))
    }

    /// Write the object `digest` to a fresh temporary file with `fill` (which checks what it
    /// wrote), then make it the object at `dest` (renamed over any damaged one). On any
    /// failure the temporary file is removed: a full disk must not fill up further.
    pub(super) fn install(&self, digest: &str, dest: &Path, fill: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
        let tmp = self.tmp_path(digest);
        let placed = fill(&tmp).and_then(|()| {
            std::fs::File::open(&tmp).and_then(|f| f.sync_all()).map_err(write_error(&tmp))?;
            use std::os::unix::fs::PermissionsExt;
            // read-only, owner-only
            let _ = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o400));
            if let Some(parent) = dest.parent() {
                make_private_dir(parent).map_err(write_error(parent))?;
            }
            std::fs::rename(&tmp, dest).map_err(write_error(dest))
        });
        if placed.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        placed
    }
}
