use super::*;

#[test]
fn stat_cache_blob_round_trips() {
    use sha2::{Digest, Sha256};
    let d = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(d.path()).unwrap();
    let now = hash::now_ns();
    let rec = |n: i64, used: i64| StatRecord {
        stat: Stat { dev: 1, ino: n as u64, size: 3, mtime_ns: n, ctime_ns: n + 1 },
        digest: Sha256::digest(n.to_le_bytes()).into(),
        recorded_ns: n + 2,
        used_ns: used,
        path_hash: 100 + n as u64,
    };
    s.save_stats(&[rec(1, now), rec(2, now), rec(3, now - hash::STAT_RECORD_TTL_NS - 1)]).unwrap();
    // a newer record for the same stat replaces it, keeping the latest use
    s.save_stats(&[StatRecord { recorded_ns: 99, ..rec(1, now - 5) }]).unwrap();
    let mut m = s.stat_cache().unwrap();
    m.sort_by_key(|r| r.stat.ino);
    assert_eq!(m.len(), 2, "the record unused for longer than the TTL is gone: {m:?}");
    assert_eq!(m[0], StatRecord { recorded_ns: 99, ..rec(1, now) });
    assert_eq!(m[1], rec(2, now));
    // the same path rewritten: only its newest record stays (no growth per edit)
    for k in 10..20 {
        s.save_stats(&[StatRecord { path_hash: 102, ..rec(k, now) }]).unwrap();
    }
    let m = s.stat_cache().unwrap();
    let of_path: Vec<_> = m.iter().filter(|r| r.path_hash == 102).collect();
    assert_eq!(of_path.len(), 1, "{of_path:?}");
    assert_eq!(of_path[0].stat.ino, 19);
    assert_eq!(m.len(), 2);
    // an unknown or torn blob decodes to nothing (a re-hash, never a wrong digest)
    assert!(decode_stats(b"TSC1\0\0").is_empty());
    let mut torn = encode_stats([rec(1, now)].iter());
    torn.pop();
    assert!(decode_stats(&torn).is_empty());
}

#[test]
fn git_blob_memo_round_trips_and_older_stores_gain_it() {
    use hash::git::BlobDigest;
    let d = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(d.path()).unwrap();
    // a store made before the memo existed: the table is created when it is opened
    s.conn().execute("DROP TABLE git_blobs", []).unwrap();
    drop(s);
    let s = SqliteStore::open(d.path()).unwrap();
    let row =
        |i: usize, lfs: bool| (format!("{i:040x}"), BlobDigest { sha256: format!("{i:064x}"), size: i as u64, lfs });
    let rows: Vec<_> = (0..1200).map(|i| row(i, i % 7 == 0)).collect();
    s.save_blob_digests(&rows).unwrap();
    // more ids than one query holds, some unknown
    let mut ask: Vec<String> = rows.iter().map(|r| r.0.clone()).collect();
    ask.push(format!("{:040x}", 99_999));
    let got = s.blob_digests(&ask).unwrap();
    assert_eq!(got.len(), 1200);
    assert_eq!(got[&rows[14].0], rows[14].1);
    assert!(got[&rows[14].0].lfs && !got[&rows[15].0].lfs);
    // a damaged row is no memo entry
    s.conn().execute("UPDATE git_blobs SET sha256 = 'x' WHERE blob = ?1", [&rows[1].0]).unwrap();
    assert!(!s.blob_digests(&ask).unwrap().contains_key(&rows[1].0));
}

#[test]
fn the_git_blob_memo_is_bounded_and_keeps_what_was_learned_last() {
    use hash::git::BlobDigest;
    let d = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(d.path()).unwrap();
    let row = |i: usize| (format!("{i:040x}"), BlobDigest { sha256: format!("{i:064x}"), size: 1, lfs: false });
    s.save_blob_digests(&(0..100).map(row).collect::<Vec<_>>()).unwrap();
    // row 3 learned again: it is new now
    s.save_blob_digests(&[row(3)]).unwrap();
    super::sqlite::cap_git_blobs(&s.conn(), 50).unwrap();
    let all: Vec<String> = (0..100).map(|i| row(i).0).collect();
    let kept = s.blob_digests(&all).unwrap();
    assert_eq!(kept.len(), 45, "down to 90% of the cap");
    assert!(kept.contains_key(&row(3).0) && kept.contains_key(&row(99).0));
    assert!(!kept.contains_key(&row(0).0) && !kept.contains_key(&row(55).0));
    // under the cap nothing goes
    super::sqlite::cap_git_blobs(&s.conn(), 50).unwrap();
    assert_eq!(s.blob_digests(&all).unwrap().len(), 45);
}

fn rec(key: &str, run: &str, created: i64) -> Record {
    Record {
        key: key.into(),
        run: run.into(),
        run_uid: "u".into(),
        task: "t".into(),
        created_ns: created,
        duration_ms: 5,
        preimage: serde_json::json!({"v": 1}),
        results: BTreeMap::from([("r".to_string(), ParamValue::Str("x\n".into()))]),
        outputs: vec![],
    }
}

#[test]
fn records_round_trip_in_a_real_sqlite_file() {
    let d = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(d.path()).unwrap();
    assert!(s.get("k").unwrap().is_none());
    s.put(&rec("k", "run", 1)).unwrap();
    drop(s);
    let s = SqliteStore::open(d.path()).unwrap();
    let r = s.get("k").unwrap().unwrap();
    assert_eq!(r, rec("k", "run", 1));
    s.put(&rec("k2", "run", 2)).unwrap();
    assert_eq!(s.latest_for("run", "t").unwrap().unwrap().key, "k2");
}

/// A store in a temp dir holding one output: `m/model.bin` = "weights".
fn stored_model() -> (tempfile::TempDir, SqliteStore, Tree) {
    let d = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(&d.path().join("store")).unwrap();
    let src = d.path().join("out");
    std::fs::create_dir_all(src.join("m")).unwrap();
    std::fs::write(src.join("m/model.bin"), b"weights").unwrap();
    let tree = s.store_output(&src).unwrap();
    (d, s, tree)
}

/// An earlier task may plant `out -> /host/dir` (or a link deeper down): restoring
/// must not write through it into the host directory.
#[test]
fn restore_never_writes_through_a_planted_symlink() {
    let (d, s, tree) = stored_model();
    let host = d.path().join("host");
    std::fs::create_dir_all(&host).unwrap();
    let ws = d.path().join("ws");
    std::fs::create_dir_all(&ws).unwrap();
    // the output directory itself is a planted link
    std::os::unix::fs::symlink(&host, ws.join("out")).unwrap();
    let err = s.restore_output(&tree, &ws.join("out")).unwrap_err();
    let cause = std::error::Error::source(&err).map(|c| c.to_string()).unwrap_or_default();
    assert!(cause.contains("symlink tenon did not create"), "{err}: {cause}");
    // a directory inside it is one
    std::fs::remove_file(ws.join("out")).unwrap();
    std::fs::create_dir_all(ws.join("out")).unwrap();
    std::os::unix::fs::symlink(&host, ws.join("out/m")).unwrap();
    assert!(s.restore_output(&tree, &ws.join("out")).is_err());
    assert_eq!(std::fs::read_dir(&host).unwrap().count(), 0, "restore wrote into the link's target");
    // without planted links, the same restore works
    std::fs::remove_file(ws.join("out/m")).unwrap();
    s.restore_output(&tree, &ws.join("out")).unwrap();
    assert_eq!(std::fs::read(ws.join("out/m/model.bin")).unwrap(), b"weights");
}

#[test]
fn outputs_are_content_addressed_and_restored_as_copies() {
    let (d, s, tree) = stored_model();
    assert!(s.object_path(&hash::sha256_hex(b"weights")).exists());
    let dest = d.path().join("restored");
    s.restore_output(&tree, &dest).unwrap();
    assert_eq!(std::fs::read(dest.join("m/model.bin")).unwrap(), b"weights");
    // modifying the restored copy never corrupts the store
    std::fs::write(dest.join("m/model.bin"), b"tampered").unwrap();
    assert_eq!(std::fs::read(s.object_path(&hash::sha256_hex(b"weights"))).unwrap(), b"weights");
    let (n, bad) = s.verify().unwrap();
    assert_eq!((n, bad.len()), (1, 0));
}

#[test]
fn gc_keeps_what_the_latest_successful_run_used() {
    let d = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(d.path()).unwrap();
    s.put(&rec("old", "run", 1)).unwrap();
    s.put(&rec("kept", "run", 2)).unwrap();
    s.record_run("run", "u1", true, &["kept".into()]).unwrap();
    let (removed, _) = s.gc(Some(i64::MAX), None).unwrap();
    assert_eq!(removed, 1);
    assert!(s.get("old").unwrap().is_none());
    assert!(s.get("kept").unwrap().is_some());
}

#[test]
fn gc_prunes_input_trees_no_record_names() {
    let d = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(d.path()).unwrap();
    let tree = |root: &str| Tree { root: root.into(), entries: vec![] };
    for t in ["used", "gone", "upstream"] {
        s.put_tree(&tree(t)).unwrap();
    }
    let mut r = rec("k", "run", 1);
    r.preimage = serde_json::json!({"inputs": {"source": "used"}, "upstreamOutputs": {"a w:m": "upstream"}});
    s.put(&r).unwrap();
    s.record_run("run", "u1", true, &["k".into()]).unwrap();
    s.gc(Some(0), None).unwrap();
    assert!(s.get_tree("used").unwrap().is_some());
    assert!(s.get_tree("upstream").unwrap().is_some());
    assert!(s.get_tree("gone").unwrap().is_none(), "a tree no record names is pruned");
}

#[test]
fn verify_reports_corruption_and_missing_objects_are_no_hit() {
    let d = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(d.path().join("st").as_path()).unwrap();
    let f = d.path().join("f");
    std::fs::write(&f, b"data").unwrap();
    let tree = s.store_output(&f).unwrap();
    let mut r = rec("k", "run", 1);
    r.outputs = vec![OutputSet { workspace: "w".into(), path: "f".into(), tree: tree.clone(), format: OUTPUT_FORMAT }];
    s.put(&r).unwrap();
    let obj = s.object_path(&tree.entries[0].digest);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&obj, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&obj, b"rot").unwrap();
    assert_eq!(s.verify().unwrap().1, vec![tree.entries[0].digest.clone()]);
    std::fs::remove_file(&obj).unwrap();
    assert!(s.get("k").unwrap().is_none(), "a record whose objects are gone must not hit");
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display())).permissions().mode() & 0o777
}

#[test]
fn store_files_are_owner_only_and_an_existing_store_is_tightened() {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    let root = d.path().join("st");
    // a store an older tenon left world-readable
    drop(SqliteStore::open(&root).unwrap());
    for (p, m) in [("", 0o755), ("objects", 0o755), ("tmp", 0o777), ("locks", 0o755), ("tenon.db", 0o644)] {
        std::fs::set_permissions(root.join(p), std::fs::Permissions::from_mode(m)).unwrap();
    }
    let s = SqliteStore::open(&root).unwrap();
    s.put(&rec("k", "run", 1)).unwrap();
    s.save_stats(&[]).unwrap();
    let f = d.path().join("out");
    std::fs::write(&f, b"secret output").unwrap();
    let tree = s.store_output(&f).unwrap();
    let _lock = s.lock_key("abc").unwrap();
    let obj = s.object_path(&tree.entries[0].digest);
    for dir in [root.clone(), root.join("objects"), root.join("tmp"), root.join("locks"), obj.parent().unwrap().into()]
    {
        assert_eq!(mode(&dir), 0o700, "{}", dir.display());
    }
    // the -wal and -shm files exist while the store is open
    for file in ["tenon.db", "tenon.db-wal", "tenon.db-shm", "locks/abc.lock"] {
        assert_eq!(mode(&root.join(file)), 0o600, "{file}");
    }
    assert_eq!(mode(&obj), 0o400, "objects are read-only, owner-only");
}

#[test]
fn a_failed_object_write_leaves_no_temporary_file() {
    let d = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(&d.path().join("st")).unwrap();
    let f = d.path().join("out");
    std::fs::write(&f, b"data").unwrap();
    // the object's directory cannot be created (a file is in the way): the write fails
    // after the temporary copy was made
    let digest = hash::sha256_hex(b"data");
    std::fs::write(d.path().join("st/objects").join(&digest[..2]), b"").unwrap();
    let e = s.store_output(&f).unwrap_err();
    assert!(e.is_store_failure(), "{e}");
    assert!(e.to_string().contains("File exists") || e.to_string().contains("Not a directory"), "{e}");
    assert_eq!(std::fs::read_dir(d.path().join("st/tmp")).unwrap().count(), 0);
}

#[test]
fn symlinks_in_outputs_round_trip_with_their_exact_target() {
    use std::os::unix::fs::symlink;
    let d = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(&d.path().join("store")).unwrap();
    let src = d.path().join("out");
    std::fs::create_dir_all(src.join("bin")).unwrap();
    std::fs::write(src.join("model-v1.json"), b"{}").unwrap();
    symlink("model-v1.json", src.join("latest")).unwrap();
    symlink("../latest", src.join("bin/current")).unwrap();
    symlink("/nonexistent/abs", src.join("dangling")).unwrap();
    let tree = s.store_output(&src).unwrap();
    let dest = d.path().join("restored");
    s.restore_output(&tree, &dest).unwrap();
    for (link, target) in [("latest", "model-v1.json"), ("bin/current", "../latest"), ("dangling", "/nonexistent/abs")]
    {
        assert_eq!(std::fs::read_link(dest.join(link)).unwrap(), Path::new(target), "{link}");
    }
    assert_eq!(std::fs::read(dest.join("bin/current")).unwrap(), b"{}");
    // a declared output that is itself a link
    let top = d.path().join("top");
    symlink("out/model-v1.json", &top).unwrap();
    let top_tree = s.store_output(&top).unwrap();
    s.restore_output(&top_tree, &d.path().join("top2")).unwrap();
    assert_eq!(std::fs::read_link(d.path().join("top2")).unwrap(), Path::new("out/model-v1.json"));
    // targets are objects like contents: verify checks them and finds nothing wrong
    let mut r = rec("k", "run", 1);
    r.outputs = vec![
        OutputSet { workspace: "w".into(), path: "out/".into(), tree: tree.clone(), format: OUTPUT_FORMAT },
        OutputSet { workspace: "w".into(), path: "top".into(), tree: top_tree, format: OUTPUT_FORMAT },
    ];
    s.put(&r).unwrap();
    assert!(s.get("k").unwrap().is_some());
    assert_eq!(s.verify().unwrap(), (5, vec![]));
    // the root tells a link from a file with its target as content, and a retarget
    let root = |p: &Path| s.store_output(p).unwrap().root;
    let (a, b) = (d.path().join("a"), d.path().join("b"));
    std::fs::write(&a, b"model-v1.json").unwrap();
    symlink("model-v1.json", &b).unwrap();
    let link_root = root(&b);
    assert_ne!(root(&a), link_root, "a link and a file holding its target text");
    std::fs::remove_file(&b).unwrap();
    symlink("model-v2.json", &b).unwrap();
    assert_ne!(root(&b), link_root, "a retargeted link");
}

#[test]
fn storing_again_replaces_a_corrupt_object() {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(&d.path().join("store")).unwrap();
    let f = d.path().join("f");
    std::fs::write(&f, b"weights").unwrap();
    let tree = s.store_output(&f).unwrap();
    let obj = s.object_path(&tree.entries[0].digest);
    for rot in [&b"weighTs"[..], b"w"] {
        std::fs::set_permissions(&obj, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::write(&obj, rot).unwrap();
        assert_eq!(s.store_output(&f).unwrap(), tree);
        assert_eq!(std::fs::read(&obj).unwrap(), b"weights", "a damaged object ({rot:?}) must be replaced");
    }
    assert_eq!(s.verify().unwrap(), (1, vec![]));
}

#[test]
fn a_record_that_cannot_be_restored_is_a_miss_that_says_why() {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(&d.path().join("store")).unwrap();
    let src = d.path().join("m");
    std::fs::create_dir_all(&src).unwrap();
    std::fs::write(src.join("w.bin"), b"weights").unwrap();
    let tree = s.store_output(&src).unwrap();
    let digest = hash::sha256_hex(b"weights");
    let mut r = rec("k", "run", 1);
    r.outputs = vec![OutputSet { workspace: "work".into(), path: "m/".into(), tree, format: OUTPUT_FORMAT }];
    s.put(&r).unwrap();
    assert!(s.get("k").unwrap().is_some());
    assert_eq!(s.unusable("k").unwrap(), None);
    assert_eq!(s.unusable("nothing").unwrap(), None);
    let obj = s.object_path(&digest);
    std::fs::set_permissions(&obj, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&obj, b"rot").unwrap();
    assert!(s.get("k").unwrap().is_none(), "a wrong-size object is no hit");
    assert_eq!(
        s.unusable("k").unwrap().as_deref(),
        Some(
            format!("output object corrupt (size): work:m/w.bin (sha256 {}.. is 3 bytes, recorded 7)", &digest[..8])
                .as_str()
        )
    );
    std::fs::remove_file(&obj).unwrap();
    assert!(s.get("k").unwrap().is_none());
    assert_eq!(
        s.unusable("k").unwrap().as_deref(),
        Some(format!("output object missing: work:m/w.bin (sha256 {}..)", &digest[..8]).as_str())
    );
    // a record of the older format (a link kept as raw target text) is a miss, and
    // its text never becomes a path under objects/
    let old = hash::Entry {
        path: String::new(),
        kind: hash::Kind::Symlink,
        exec: false,
        digest: "../../outside".into(),
        size: None,
    };
    let mut r = rec("old", "run", 2);
    r.outputs = vec![OutputSet {
        workspace: "work".into(),
        path: "latest".into(),
        tree: Tree { root: "x".into(), entries: vec![old.clone()] },
        format: 0,
    }];
    s.put(&r).unwrap();
    assert!(s.get("old").unwrap().is_none());
    let why = s.unusable("old").unwrap().unwrap();
    assert!(why.contains("output format 0"), "{why}");
    let tree = Tree { root: "x".into(), entries: vec![old] };
    assert!(s.restore_output(&tree, &d.path().join("dest")).is_err());
    assert_eq!(s.verify().unwrap().1, vec![digest.clone()], "only the missing object, not the old link");
}

#[test]
fn key_lock_is_exclusive_across_handles() {
    let d = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(d.path()).unwrap();
    let g = s.lock_key("abc").unwrap();
    let p = d.path().join("locks/abc.lock");
    let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    use fs4::fs_std::FileExt;
    assert!(!f.try_lock_exclusive().unwrap_or(false), "second lock must not be granted while held");
    assert!(s.try_lock_key("abc").unwrap().is_none(), "try_lock_key must not wait, nor take a held lock");
    drop(g);
    assert!(f.try_lock_exclusive().unwrap());
    drop(f);
    assert!(s.try_lock_key("abc").unwrap().is_some());
}
