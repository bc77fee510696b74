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

use super::tario::{Exact, HashingWriter};
use super::Digest;

pub const PACK_MEDIA_TYPE: &str = "application/vnd.tenon.pack.v1.tar";

#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("reading the pack: {0}")]
    Io(#[from] std::io::Error),
    #[error("pack member {name:?}: {reason}")]
    Member { name: String, reason: String },
}

/// Write the pack of `objects` (hex digest, size) to `out`, reading each through
/// `open(hex, size)`.
/// Returns the pack's digest and size. An object whose length differs from its size is an
/// error (the store changed under us).
pub fn write_pack<W: Write>(
    objects: &[(String, u64)],
    mut open: impl FnMut(&str, u64) -> std::io::Result<std::fs::File>,
    out: W,
) -> std::io::Result<(Digest, u64)> {
    let mut sorted: Vec<&(String, u64)> = objects.iter().collect();
    sorted.sort();
    sorted.dedup_by(|a, b| a.0 == b.0);
    let mut tar = tar::Builder::new(HashingWriter::new(out));
    tar.mode(tar::HeaderMode::Deterministic);
    for (hex, size) in sorted {
        let f = open(hex, *size)?;
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
        tar.append(&h, Exact::new(f, *size, format!("object {hex}")))?;
    }
    let (_, digest, len) = tar.into_inner()?.finish()?;
    Ok((digest, len))
}

/// Read a pack and place every member `expected` names: each is streamed into a temporary
/// file under `tmp_dir` while it is hashed, and handed to `commit(hex, temp file)` only when
/// its size and digest match (`commit` moves it; a temporary file left over is removed).
///
/// Entries are read raw (no PAX or GNU long-name processing), so what is checked is exactly
/// the name in the entry's own header: PAX headers (`x`, `g`), GNU long names and links (`L`,
/// `K`), links, directories, devices and sparse files are refused, as is any name that is not
/// 64 lowercase hex digits (which rules out `..`, `/` and absolute paths). Nothing is ever
/// created from a member name: only `tmp_dir`'s own temporary files are written.
///
/// A well-formed member that `expected` does not list is skipped unread (the caller lists only
/// the objects it still lacks; the pack may hold others it already has), never placed. A size
/// or digest mismatch, a truncated stream or a refused entry fails the whole read, with the
/// objects placed before it already committed (each one checked). Members missing from the
/// pack are not an error here: the returned set says what was placed.
pub fn unpack<R: Read>(
    r: R,
    expected: &BTreeMap<String, u64>,
    tmp_dir: &Path,
    mut commit: impl FnMut(&str, &Path) -> std::io::Result<()>,
) -> Result<BTreeSet<String>, PackError> {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut placed = BTreeSet::new();
    let mut archive = tar::Archive::new(r);
    for entry in archive.entries()?.raw(true) {
        let mut entry = entry?;
        let raw = entry.header().path_bytes();
        let name = String::from_utf8_lossy(&raw).into_owned();
        let bad = |reason: &str| PackError::Member { name: name.clone(), reason: reason.into() };
        let kind = entry.header().entry_type();
        if !kind.is_file() {
            return Err(bad(&format!("a {} entry (packs hold regular files only)", kind_name(kind))));
        }
        if !crate::util::is_sha256_hex(&name) {
            return Err(bad("not an object digest (64 lowercase hex digits)"));
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
        let mut created = false;
        let result = (|| -> Result<(), PackError> {
            let mut f = std::fs::OpenOptions::new().write(true).create_new(true).open(&tmp)?;
            created = true;
            let mut h = HashingWriter::new(&mut f);
            let copied = std::io::copy(&mut (&mut entry).take(size), &mut h)?;
            if copied != size {
                return Err(bad(&format!("truncated: {copied} of {size} bytes")));
            }
            let (_, digest, _) = h.finish()?;
            let got = digest.hex().to_string();
            if got != name {
                return Err(bad(&format!("content hashes to {got}")));
            }
            f.sync_all()?;
            commit(&name, &tmp)?;
            Ok(())
        })();
        if created {
            let _ = std::fs::remove_file(&tmp);
        }
        result?;
        placed.insert(name);
    }
    Ok(placed)
}

fn kind_name(kind: tar::EntryType) -> String {
    use tar::EntryType as T;
    match kind {
        T::Symlink => "symbolic link".into(),
        T::Link => "hard link".into(),
        T::Directory => "directory".into(),
        T::Char | T::Block => "device".into(),
        T::Fifo => "FIFO".into(),
        T::XHeader | T::XGlobalHeader => "PAX extended header".into(),
        T::GNULongName | T::GNULongLink => "GNU long name".into(),
        T::GNUSparse => "sparse file".into(),
        other => format!("type {:?}", other.as_byte() as char),
    }
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
        let (d, n) = write_pack(objs, |hex, _| std::fs::File::open(dir.join(hex)), &mut out).unwrap();
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

    /// One raw entry (header and padded data), as an attacker would write it: any name bytes,
    /// any link name, no checks.
    fn raw_entry(kind: tar::EntryType, name: &[u8], link: Option<&str>, data: &[u8]) -> Vec<u8> {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        if let Some(l) = link {
            h.as_old_mut().linkname[..l.len()].copy_from_slice(l.as_bytes());
        }
        h.set_cksum();
        let mut out = h.as_bytes().to_vec();
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
        out
    }

    fn archive(entries: &[Vec<u8>]) -> Vec<u8> {
        let mut out = entries.concat();
        out.extend_from_slice(&[0u8; 1024]);
        out
    }

    fn hostile(kind: tar::EntryType, name: &str, link: Option<&str>, data: &[u8]) -> Vec<u8> {
        archive(&[raw_entry(kind, name.as_bytes(), link, data)])
    }

    #[test]
    fn hostile_entries_are_refused() {
        use tar::EntryType as T;
        let t = tempfile::tempdir().unwrap();
        let (tmp, dest) = (t.path().join("tmp"), t.path().join("dest"));
        std::fs::create_dir_all(&tmp).unwrap();
        std::fs::create_dir_all(&dest).unwrap();
        let hex = crate::hash::sha256_hex(b"x");
        let expected: BTreeMap<String, u64> = [(hex.clone(), 1)].into();
        let pax_path = format!("73 path={hex}\n");
        assert_eq!(pax_path.len(), 73);
        let mut long = hex.clone().into_bytes();
        long.push(0);
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("symlink", hostile(T::Symlink, &hex, Some("/etc/passwd"), b""), "symbolic link"),
            // CVE-2026-50163 style: a hard link with a relative link name out of the tree
            ("hard link", hostile(T::Link, &hex, Some("../../outside"), b""), "hard link"),
            ("dotdot", hostile(T::Regular, "../escape", None, b"x"), "not an object digest"),
            ("absolute", hostile(T::Regular, "/abs", None, b"x"), "not an object digest"),
            ("uppercase", hostile(T::Regular, &hex.to_uppercase(), None, b"x"), "not an object digest"),
            ("directory", hostile(T::Directory, &hex, None, b""), "directory"),
            ("device", hostile(T::Char, &hex, None, b""), "device"),
            ("fifo", hostile(T::Fifo, &hex, None, b""), "FIFO"),
            ("size", hostile(T::Regular, &hex, None, b"xy"), "2 bytes where 1 were expected"),
            // a PAX header renaming a harmless-looking entry to an expected digest
            (
                "pax path",
                archive(&[
                    raw_entry(T::XHeader, b"PaxHeaders/evil", None, pax_path.as_bytes()),
                    raw_entry(T::Regular, b"../evil", None, b"x"),
                ]),
                "PAX extended header",
            ),
            (
                "pax global",
                archive(&[raw_entry(T::XGlobalHeader, b"pax_global_header", None, pax_path.as_bytes())]),
                "PAX extended header",
            ),
            (
                "gnu long name",
                archive(&[
                    raw_entry(T::GNULongName, b"././@LongLink", None, &long),
                    raw_entry(T::Regular, b"../evil", None, b"x"),
                ]),
                "GNU long name",
            ),
            // truncated inside the data, and inside a header
            ("truncated data", hostile(T::Regular, &hex, None, b"x")[..512].to_vec(), "truncated"),
            ("truncated header", hostile(T::Regular, &hex, None, b"x")[..300].to_vec(), ""),
        ];
        for (what, bytes, says) in &cases {
            match unpack_into(bytes, &expected, &tmp, &dest) {
                Ok(placed) => panic!("{what}: accepted, placed {placed:?}"),
                Err(e) => assert!(e.to_string().contains(says), "{what}: {e}"),
            }
            no_temps(&tmp);
        }
        assert_eq!(std::fs::read_dir(&dest).unwrap().count(), 0);
        for name in ["escape", "evil", "outside", "abs"] {
            assert!(!t.path().join(name).exists() && !tmp.join(name).exists(), "{name} was written");
        }
        // a well-formed member the caller did not ask for is skipped, never placed
        let other = crate::hash::sha256_hex(b"y");
        let bytes = hostile(T::Regular, &other, None, b"y");
        assert!(unpack_into(&bytes, &expected, &tmp, &dest).unwrap().is_empty());
        assert_eq!(std::fs::read_dir(&dest).unwrap().count(), 0);
        no_temps(&tmp);
    }

    #[test]
    fn headers_are_fixed_and_a_shrunk_object_fails_the_write() {
        let t = tempfile::tempdir().unwrap();
        let objs = objects(t.path(), &[b"abc"]);
        let (bytes, _) = pack(t.path(), &objs);
        let mut ar = tar::Archive::new(&bytes[..]);
        let e = ar.entries().unwrap().next().unwrap().unwrap();
        let h = e.header();
        assert!(h.as_ustar().is_some());
        assert_eq!((h.mtime().unwrap(), h.uid().unwrap(), h.gid().unwrap()), (0, 0, 0));
        assert_eq!(h.mode().unwrap(), 0o444);
        assert_eq!((h.username_bytes(), h.groupname_bytes()), (Some(&b""[..]), Some(&b""[..])));
        assert_eq!(&*e.path_bytes(), objs[0].0.as_bytes());
        // the recorded size is not the file's: refused before anything is written for it
        let wrong = vec![(objs[0].0.clone(), 4)];
        let e = write_pack(&wrong, |hex, _| std::fs::File::open(t.path().join(hex)), Vec::new()).unwrap_err();
        assert!(e.to_string().contains("3 bytes where 4 were recorded"), "{e}");
        // a file shorter than its header says (it shrank after the size check) is an error
        let mut r = Exact::new(&b"ab"[..], 3, "object h");
        let e = std::io::copy(&mut r, &mut std::io::sink()).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
    }
}
