//! Hashing throughput: `hash_file` on one large file, `hash_tree` over many small files
//! with a cold (empty) and a warm (trusted) stat cache.
//!
//! Run: `cargo bench --bench hashing`. Files live in a temp dir and are in the page
//! cache after the first iteration: "cold" means "nothing known to the stat cache", not
//! "not in RAM" (the DVC comparison script, bench/compare-dvc.sh, measures end to end).

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tenon::hash::{hash_file, hash_tree, Filter, HashStats, StatCache, StatRecord};

const BIG: usize = 64 << 20;
const SMALL_DIRS: usize = 20;
const SMALL_PER_DIR: usize = 100;
const SMALL_SIZE: usize = 1024;

/// Deterministic, incompressible-looking bytes (xorshift64*), no extra dependency.
fn fill(buf: &mut [u8], mut seed: u64) {
    for chunk in buf.chunks_mut(8) {
        seed ^= seed >> 12;
        seed ^= seed << 25;
        seed ^= seed >> 27;
        let v = seed.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
}

fn write_big(path: &Path) {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut buf = vec![0u8; 1 << 20];
    for i in 0..(BIG >> 20) {
        fill(&mut buf, 0x9E37_79B9_7F4A_7C15 ^ i as u64);
        f.write_all(&buf).unwrap();
    }
    f.flush().unwrap();
}

fn write_small_tree(root: &Path) -> u64 {
    let mut buf = vec![0u8; SMALL_SIZE];
    let mut total = 0;
    for d in 0..SMALL_DIRS {
        let dir = root.join(format!("d{d:02}"));
        std::fs::create_dir_all(&dir).unwrap();
        for i in 0..SMALL_PER_DIR {
            fill(&mut buf, (d * 10_000 + i) as u64 + 1);
            std::fs::write(dir.join(format!("f{i:04}.txt")), &buf).unwrap();
            total += SMALL_SIZE as u64;
        }
    }
    total
}

fn bench_hash_file(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.bin");
    write_big(&path);
    let mut g = c.benchmark_group("hash_file");
    g.sample_size(10).measurement_time(Duration::from_secs(5)).warm_up_time(Duration::from_secs(1));
    g.throughput(Throughput::Bytes(BIG as u64));
    g.bench_function("64MiB", |b| b.iter(|| black_box(hash_file(&path).unwrap())));
    // the ceiling: SHA-256 of the same bytes already in memory (no read syscalls)
    let bytes = std::fs::read(&path).unwrap();
    g.bench_function("64MiB_in_memory_sha256", |b| b.iter(|| black_box(tenon::hash::sha256_hex(&bytes))));
    g.finish();
}

fn bench_hash_tree(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("tree");
    let bytes = write_small_tree(&root);
    let n = SMALL_DIRS * SMALL_PER_DIR;
    let filter = Filter::everything();

    // warm stat cache: the records of a first pass, recorded "long after" the mtimes
    let first = StatCache::default();
    let expected = hash_tree(&root, &filter, &first, &HashStats::default()).unwrap();
    let far_future = tenon::hash::now_ns() + 3_600 * 1_000_000_000;
    let known: Vec<_> = first.take_updates().into_iter().map(|r| StatRecord { recorded_ns: far_future, ..r }).collect();
    assert_eq!(known.len(), n, "every small file has a stat record");

    let mut g = c.benchmark_group("hash_tree_2000_files");
    g.sample_size(10).measurement_time(Duration::from_secs(4)).warm_up_time(Duration::from_secs(1));
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function(BenchmarkId::new("cold", format!("{n}x{SMALL_SIZE}B ({bytes} B)")), |b| {
        b.iter(|| {
            let stats = HashStats::default();
            let t = hash_tree(&root, &filter, &StatCache::default(), &stats).unwrap();
            assert_eq!(stats.hashed_files.load(std::sync::atomic::Ordering::Relaxed), n as u64);
            black_box(t)
        })
    });
    let warm = StatCache::new(known);
    g.bench_function(BenchmarkId::new("warm", format!("{n}x{SMALL_SIZE}B ({bytes} B)")), |b| {
        b.iter(|| {
            let stats = HashStats::default();
            let t = hash_tree(&root, &filter, &warm, &stats).unwrap();
            assert_eq!(stats.hashed_files.load(std::sync::atomic::Ordering::Relaxed), 0, "warm pass reads nothing");
            black_box(t)
        })
    });
    g.finish();
    // sanity: warm and cold agree
    let again = hash_tree(&root, &filter, &warm, &HashStats::default()).unwrap();
    assert_eq!(again.root, expected.root);
}

criterion_group!(benches, bench_hash_file, bench_hash_tree);
criterion_main!(benches);
