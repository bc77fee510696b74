//! Packs: many small content-addressed objects in one deterministic, uncompressed tar, so a
//! record's small output files cost one blob request instead of one per file (the OCI
//! distribution API has no batch call).
//!
//! Members are named by their 64-hex SHA-256 digest, never by a path: the record's tree
//! listing maps paths to digests, so no member name can point outside the store, and the
//! same objects always give the same tar (sorted by digest, ustar headers, mtime 0,
//! uid/gid 0, mode 0444). Reading accepts only regular-file members named by a digest it
//! expects, of the expected size, whose bytes hash to their name.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest as _, Sha256};

use super::Digest;

pub const PACK_MEDIA_TYPE: &str = "application/vnd.tenon.pack.v1.tar";

#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("reading the pack: {0}")]
    Io(#[from] std::io::Error),
    #[error("pack member {name:?}: {reason}")]
    Member { name: String, reason: String },
}

/// A writer that hashes and counts what passes through.
struct Hashing<W> {
    inner: W,
    hasher: Sha256,
    n: u64,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.n += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Write the pack of `objects` (hex digest, size) to `out`, reading each through `open`.
/// Returns the pack's digest and size. An object whose length differs from its size is an
/// error (the store changed under us).
pub fn write_pack<W: Write>(
    objects: &[(String, u64)],
    mut open: impl FnMut(&str) -> std::io::Result<std::fs::File>,
    out: W,
) -> std::io::Result<(Digest, u64)> {
    let mut sorted: Vec<&(String, u64)> = objects.iter().collect();
    sorted.sort();
    sorted.dedup_by(|a, b| a.0 == b.0);
    let mut tar = tar::Builder::new(Hashing { inner: out, hasher: Sha256::new(), n: 0 });
    tar.mode(tar::HeaderMode::Deterministic);
    for (hex, size) in sorted {
        let f = open(hex)?;
        let len = f.metadata()?.len();
        if len != *size {
            return Err(std::io::Error::other(format!("object {hex}: {len} bytes where {size} were recorded")));
        }
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_path(hex)?;
        h.set_size(*size);
        h.set_mode(0o444);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_cksum();
        tar.append(&h, f.take(*size))?;
    }
    let mut w = tar.into_inner()?;
    w.flush()?;
    Ok((Digest::from_hasher(w.hasher), w.n))
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Read a pack and place every member `expected` names: each is streamed into a temporary
/// file under `tmp_dir` while it is hashed, and handed to `commit(hex, temp file)` only when
/// its size and digest match (`commit` moves it; a temporary file left over is removed).
/// Members not in `expected` are skipped unread (a pack shared by several records); any
/// other entry type, name or a mismatch fails the whole read. Returns the digests placed.
pub fn unpack<R: Read>(
    r: R,
    expected: &BTreeMap<String, u64>,
    tmp_dir: &Path,
    mut commit: impl FnMut(&str, &Path) -> std::io::Result<()>,
) -> Result<BTreeSet<String>, PackError> {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut placed = BTreeSet::new();
    let mut archive = tar::Archive::new(r);
    for entry in archive.entries()? {
        let mut entry = entry?;
        let raw = entry.path_bytes();
        let name = String::from_utf8_lossy(&raw).into_owned();
        let bad = |reason: &str| PackError::Member { name: name.clone(), reason: reason.into() };
        if !entry.header().entry_type().is_file() {
            return Err(bad(&format!("a {:?} entry (packs hold regular files only)", entry.header().entry_type())));
        }
        if !is_hex64(&name) {
            return Err(bad("not an object digest"));
        }
        let Some(&size) = expected.get(&name) else { continue };
        if entry.size() != size {
            return Err(bad(&format!("{} bytes where {size} were expected", entry.size())));
        }
        if placed.contains(&name) {
            continue;
        }
        let n = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp: PathBuf = tmp_dir.join(format!("unpack-{}-{n}-{}", std::process::id(), &name[..16]));
        let result = (|| -> Result<(), PackError> {
            let mut f = std::fs::File::create(&tmp)?;
            let mut h = Hashing { inner: &mut f, hasher: Sha256::new(), n: 0 };
            std::io::copy(&mut (&mut entry).take(size), &mut h)?;
            let got = crate::hash::hex(&h.hasher.finalize());
            if got != name {
                return Err(bad(&format!("content hashes to {got}")));
            }
            f.sync_all()?;
            commit(&name, &tmp)?;
            Ok(())
        })();
        let _ = std::fs::remove_file(&tmp);
        result?;
        placed.insert(name);
    }
    Ok(placed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn objects(dir: &Path, contents: &[&[u8]]) -> Vec<(String, u64)> {
        contents
            .iter()
            .map(|c| {
                let hex = crate::hash::sha256_hex(c);
                std::fs::write(dir.join(&hex), c).unwrap();
                (hex, c.len() as u64)
            })
            .collect()
    }

    fn pack(dir: &Path, objs: &[(String, u64)]) -> (Vec<u8>, Digest) {
        let mut out = Vec::new();
        let (d, n) = write_pack(objs, |hex| std::fs::File::open(dir.join(hex)), &mut out).unwrap();
        assert_eq!(n, out.len() as u64);
        assert_eq!(d, Digest::of_bytes(&out));
        (out, d)
    }

    fn unpack_into(
        bytes: &[u8],
        expected: &BTreeMap<String, u64>,
        tmp: &Path,
        dest: &Path,
    ) -> Result<BTreeSet<String>, PackError> {
        unpack(bytes, expected, tmp, |hex, f| std::fs::rename(f, dest.join(hex)))
    }

    fn no_temps(tmp: &Path) {
        assert_eq!(std::fs::read_dir(tmp).unwrap().count(), 0, "temporary files left behind");
    }

    #[test]
    fn round_trip_and_the_same_objects_give_the_same_bytes() {
        let t = tempfile::tempdir().unwrap();
        let (src, tmp, dest) = (t.path().join("src"), t.path().join("tmp"), t.path().join("dest"));
        for d in [&src, &tmp, &dest] {
            std::fs::create_dir_all(d).unwrap();
        }
        let objs = objects(&src, &[b"one", b"two\n", b"", &[7u8; 5000]]);
        let (a, _) = pack(&src, &objs);
        let mut rev = objs.clone();
        rev.reverse();
        rev.push(objs[0].clone());
        let (b, _) = pack(&src, &rev);
        assert_eq!(a, b, "order and duplicates do not change the pack");
        let expected: BTreeMap<String, u64> = objs.iter().cloned().collect();
        let placed = unpack_into(&a, &expected, &tmp, &dest).unwrap();
        assert_eq!(placed.len(), 4);
        for (hex, _) in &objs {
            assert_eq!(std::fs::read(dest.join(hex)).unwrap(), std::fs::read(src.join(hex)).unwrap());
        }
        no_temps(&tmp);
        // a subset: the others are skipped
        let one: BTreeMap<String, u64> = objs[..1].iter().cloned().collect();
        let d2 = t.path().join("d2");
        std::fs::create_dir_all(&d2).unwrap();
        assert_eq!(unpack_into(&a, &one, &tmp, &d2).unwrap().len(), 1);
    }

    #[test]
    fn a_tampered_member_is_refused_and_nothing_is_left() {
        let t = tempfile::tempdir().unwrap();
        let (src, tmp, dest) = (t.path().join("src"), t.path().join("tmp"), t.path().join("dest"));
        for d in [&src, &tmp, &dest] {
            std::fs::create_dir_all(d).unwrap();
        }
        let objs = objects(&src, &[b"hello world"]);
        let (mut bytes, _) = pack(&src, &objs);
        // the member's data starts after the 512-byte header
        bytes[512] ^= 1;
        let expected: BTreeMap<String, u64> = objs.iter().cloned().collect();
        let e = unpack_into(&bytes, &expected, &tmp, &dest).unwrap_err();
        assert!(e.to_string().contains("content hashes to"), "{e}");
        assert_eq!(std::fs::read_dir(&dest).unwrap().count(), 0);
        no_temps(&tmp);
        // truncated
        let (bytes, _) = pack(&src, &objs);
        assert!(unpack_into(&bytes[..600], &expected, &tmp, &dest).is_err());
        no_temps(&tmp);
    }

    fn hostile(kind: tar::EntryType, name: &str, link: Option<&str>, data: &[u8]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        // set_path refuses `..`: write the raw name field, as an attacker would
        let field = &mut h.as_old_mut().name;
        field[..name.len()].copy_from_slice(name.as_bytes());
        if let Some(l) = link {
            h.set_link_name(l).unwrap();
        }
        h.set_cksum();
        b.append(&h, data).unwrap();
        b.into_inner().unwrap()
    }

    #[test]
    fn hostile_entries_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let (tmp, dest) = (t.path().join("tmp"), t.path().join("dest"));
        std::fs::create_dir_all(&tmp).unwrap();
        std::fs::create_dir_all(&dest).unwrap();
        let hex = crate::hash::sha256_hex(b"x");
        let expected: BTreeMap<String, u64> = [(hex.clone(), 1)].into();
        let cases = [
            hostile(tar::EntryType::Symlink, &hex, Some("/etc/passwd"), b""),
            hostile(tar::EntryType::Link, &hex, Some("../../outside"), b""),
            hostile(tar::EntryType::Regular, "../escape", None, b"x"),
            hostile(tar::EntryType::Regular, "/abs", None, b"x"),
            hostile(tar::EntryType::Directory, &hex, None, b""),
            hostile(tar::EntryType::Regular, &hex, None, b"xy"),
        ];
        for (i, bytes) in cases.iter().enumerate() {
            assert!(unpack_into(bytes, &expected, &tmp, &dest).is_err(), "case {i} accepted");
            no_temps(&tmp);
        }
        assert_eq!(std::fs::read_dir(&dest).unwrap().count(), 0);
        assert!(!t.path().join("escape").exists() && !t.path().join("outside").exists());
    }
}
