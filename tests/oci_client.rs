//! The OCI registry client (src/oci) against a real Distribution 2.8 registry
//! (tests/common/registry.rs): round trips, streaming, tampering, TLS + htpasswd, read-only,
//! unreachable and silent registries.

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::registry::{Registry, Variant};
use oci_spec::image::{Descriptor, ImageManifestBuilder, MediaType};
use sha2::{Digest as _, Sha256};
use tenon::oci::{
    canonical_json, Client, ClientConfig, CredentialSource, Credentials, Digest, ManifestRef, OciError, PushOutcome,
    RepoUrl,
};

fn client(url: &str, cfg: ClientConfig) -> Client {
    Client::new(RepoUrl::parse(url).expect("url"), cfg).expect("client")
}

fn anonymous() -> ClientConfig {
    ClientConfig { credentials: CredentialSource::Anonymous, ..ClientConfig::default() }
}

/// Write `len` pseudo-random bytes (xorshift, 1 MiB at a time) and return their digest.
fn write_blob(path: &Path, len: u64, seed: u64) -> Digest {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut h = Sha256::new();
    let mut x = seed | 1;
    let mut left = len;
    let mut buf = vec![0u8; 1 << 20];
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        for chunk in buf[..n].chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
        }
        h.update(&buf[..n]);
        f.write_all(&buf[..n]).unwrap();
        left -= n as u64;
    }
    f.flush().unwrap();
    Digest::from_hasher(h)
}

fn file_digest(path: &Path) -> Digest {
    let mut f = std::fs::File::open(path).unwrap();
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            return Digest::from_hasher(h);
        }
        h.update(&buf[..n]);
    }
}

fn record_manifest(
    config: &Digest,
    config_size: u64,
    layers: &[(Digest, u64)],
    key: &str,
) -> oci_spec::image::ImageManifest {
    let d = |s: &Digest| s.as_str().parse::<oci_spec::image::Digest>().unwrap();
    ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .artifact_type(MediaType::Other("application/vnd.tenon.record.v1".into()))
        .config(Descriptor::new(
            MediaType::Other("application/vnd.tenon.record.v1+json".into()),
            config_size,
            d(config),
        ))
        .layers(
            layers
                .iter()
                .map(|(dg, size)| {
                    Descriptor::new(MediaType::Other("application/vnd.tenon.object.v1".into()), *size, d(dg))
                })
                .collect::<Vec<_>>(),
        )
        .annotations([
            ("dev.tenon.key".to_string(), key.to_string()),
            ("dev.tenon.task".to_string(), "train".to_string()),
        ])
        .build()
        .unwrap()
}

/// Peak resident memory of this process so far (VmHWM), in bytes.
fn peak_rss() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = s.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

/// A raw HTTP/1.1 GET on loopback (to show the registry trap the client works around).
fn raw_get_status(port: u16, path: &str, accept: Option<&str>) -> u16 {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let accept = accept.map(|a| format!("Accept: {a}\r\n")).unwrap_or_default();
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{accept}Connection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split_whitespace().nth(1).unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blob_and_manifest_round_trip() {
    let Some(reg) = Registry::start(Variant::Plain) else { return };
    let c = client(&reg.url("tenon/cache"), anonymous());
    c.ping().await.expect("ping");
    let dir = tempfile::tempdir().unwrap();

    // a blob from a file, then the same again: HEAD says it exists, nothing is uploaded
    let data = dir.path().join("weights.bin");
    let digest = write_blob(&data, 300_000, 7);
    assert_eq!(c.blob_exists(&digest).await.unwrap(), None);
    assert_eq!(c.push_blob_file(&digest, &data, &[]).await.unwrap(), PushOutcome::Uploaded);
    assert_eq!(c.blob_exists(&digest).await.unwrap(), Some(300_000));
    let posts = reg.count_requests("POST", "/blobs/uploads/");
    let puts = reg.count_requests("PUT", "/blobs/uploads/");
    assert_eq!((posts, puts), (1, 1), "one POST then one PUT:\n{}", reg.log());
    assert_eq!(c.push_blob_file(&digest, &data, &[]).await.unwrap(), PushOutcome::Existed);
    assert_eq!(reg.count_requests("POST", "/blobs/uploads/"), posts, "HEAD-skip sends no upload");

    // the config blob from memory
    let config = Bytes::from_static(br#"{"format":1,"key":"k"}"#);
    let (config_digest, outcome) = c.push_blob_bytes(config.clone()).await.unwrap();
    assert_eq!(outcome, PushOutcome::Uploaded);
    assert_eq!(c.push_blob_bytes(config.clone()).await.unwrap().1, PushOutcome::Existed);

    // the record manifest under r1-<key>
    let key = "ab".repeat(32);
    let tag = ManifestRef::tag(&format!("r1-{key}")).unwrap();
    let manifest = record_manifest(&config_digest, config.len() as u64, &[(digest.clone(), 300_000)], &key);
    let mdigest = c.put_image_manifest(&tag, &manifest).await.unwrap();
    assert_eq!(mdigest, Digest::of_bytes(&canonical_json(&manifest).unwrap()), "same bytes, same digest");

    let got = c.get_manifest(&tag).await.unwrap().expect("manifest by tag");
    assert_eq!((got.digest.clone(), got.media_type.as_str()), (mdigest.clone(), tenon::oci::OCI_MANIFEST));
    let parsed = got.image_manifest().unwrap();
    assert_eq!(parsed.artifact_type(), &Some(MediaType::Other("application/vnd.tenon.record.v1".into())));
    assert_eq!(parsed.annotations().as_ref().unwrap()["dev.tenon.key"], key);
    let by_digest = c.get_manifest(&ManifestRef::Digest(mdigest.clone())).await.unwrap().unwrap();
    assert_eq!(by_digest.bytes, got.bytes);
    assert_eq!(c.head_manifest(&tag).await.unwrap(), Some((mdigest.clone(), got.bytes.len() as u64)));
    // the trap the client avoids: without the OCI Accept, 2.8 says 404 for this manifest
    let path = format!("/v2/tenon/cache/manifests/r1-{key}");
    assert_eq!(raw_get_status(reg.port, &path, None), 404);
    assert_eq!(raw_get_status(reg.port, &path, Some("application/vnd.oci.image.manifest.v1+json")), 200);

    // pull the blob back, byte-identical
    let back = dir.path().join("back.bin");
    assert_eq!(c.pull_blob_to_file(&digest, Some(300_000), &back).await.unwrap(), 300_000);
    assert_eq!(std::fs::read(&back).unwrap(), std::fs::read(&data).unwrap());
    let mut buf = Vec::new();
    c.pull_blob(&config_digest, None, &mut buf).await.unwrap();
    assert_eq!(buf, config);

    // tags, misses, a missing blob
    assert_eq!(c.list_tags().await.unwrap(), vec![format!("r1-{key}")]);
    assert!(c.get_manifest(&ManifestRef::tag("r1-missing").unwrap()).await.unwrap().is_none());
    assert!(c.head_manifest(&ManifestRef::tag("r1-missing").unwrap()).await.unwrap().is_none());
    let absent = Digest::of_bytes(b"absent");
    let e = c.pull_blob_to_file(&absent, None, &dir.path().join("absent")).await.unwrap_err();
    assert!(matches!(e, OciError::NotFound { .. }), "{e}");
    assert!(!dir.path().join("absent").exists());

    // cross-repository mount: present blob mounts, absent one does not
    let other = client(&reg.url("tenon/other"), anonymous());
    assert_eq!(other.blob_exists(&digest).await.unwrap(), None, "blobs are per repository");
    assert!(other.mount_blob(&digest, "tenon/cache").await.unwrap());
    assert_eq!(other.blob_exists(&digest).await.unwrap(), Some(300_000));
    assert!(!other.mount_blob(&absent, "tenon/cache").await.unwrap());
    let data2 = dir.path().join("second.bin");
    let digest2 = write_blob(&data2, 1000, 9);
    c.push_blob_file(&digest2, &data2, &[]).await.unwrap();
    let third = client(&reg.url("tenon/third"), anonymous());
    assert_eq!(third.push_blob_file(&digest2, &data2, &["tenon/cache"]).await.unwrap(), PushOutcome::Mounted);

    // a manifest naming a missing blob is refused; a wrong digest is refused by the registry
    let bad = record_manifest(&config_digest, config.len() as u64, &[(absent.clone(), 6)], &key);
    let e = c.put_image_manifest(&ManifestRef::tag("bad").unwrap(), &bad).await.unwrap_err();
    assert!(matches!(&e, OciError::Registry { status: 400, code, .. } if code == "MANIFEST_BLOB_UNKNOWN"), "{e}");
    let e = c.push_blob_file(&absent, &data2, &[]).await.unwrap_err();
    assert!(matches!(&e, OciError::Registry { status: 400, code, .. } if code == "DIGEST_INVALID"), "{e}");

    // delete by digest: the tag goes with it
    c.delete_manifest(&mdigest).await.unwrap();
    assert!(c.get_manifest(&tag).await.unwrap().is_none());
    assert!(matches!(c.delete_manifest(&mdigest).await.unwrap_err(), OciError::NotFound { .. }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_blobs_stream_monolithic_and_chunked_with_bounded_memory() {
    let Some(reg) = Registry::start(Variant::Plain) else { return };
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.bin");
    let digest = write_blob(&big, 64 << 20, 42);
    let before = peak_rss();

    // 64 MiB: one POST and one streamed PUT (the default monolithic limit is 64 MiB)
    let c = client(&reg.url("tenon/big"), anonymous());
    assert_eq!(c.push_blob_file(&digest, &big, &[]).await.unwrap(), PushOutcome::Uploaded);
    assert_eq!(reg.count_requests("PATCH", "/blobs/uploads/"), 0);
    let back = dir.path().join("back.bin");
    assert_eq!(c.pull_blob_to_file(&digest, Some(64 << 20), &back).await.unwrap(), 64 << 20);
    assert_eq!(file_digest(&back), digest);

    // the chunked path: 16 MiB chunks -> 4 PATCHes and a closing PUT, in another repository
    let chunked = client(
        &reg.url("tenon/chunked"),
        ClientConfig { monolithic_max: 8 << 20, chunk_size: 16 << 20, ..anonymous() },
    );
    assert_eq!(chunked.push_blob_file(&digest, &big, &[]).await.unwrap(), PushOutcome::Uploaded);
    assert_eq!(reg.count_requests("PATCH", "/v2/tenon/chunked/blobs/uploads/"), 4, "{}", reg.log());
    let back2 = dir.path().join("back2.bin");
    chunked.pull_blob_to_file(&digest, Some(64 << 20), &back2).await.unwrap();
    assert_eq!(file_digest(&back2), digest);

    // A chunk that is not a multiple of the I/O piece, and a last chunk shorter than the rest.
    let odd = dir.path().join("odd.bin");
    let odd_digest = write_blob(&odd, (5 << 20) + 12345, 5);
    let small_chunks = client(
        &reg.url("tenon/odd"),
        ClientConfig { monolithic_max: 1 << 20, chunk_size: (1 << 20) + 3, ..anonymous() },
    );
    small_chunks.push_blob_file(&odd_digest, &odd, &[]).await.unwrap();
    assert_eq!(reg.count_requests("PATCH", "/v2/tenon/odd/"), 6);
    let mut buf = Vec::new();
    small_chunks.pull_blob(&odd_digest, None, &mut buf).await.unwrap();
    assert_eq!(Digest::of_bytes(&buf), odd_digest);

    // Three 64 MiB transfers later, the peak grew far less than one blob: nothing was buffered
    // whole (the 5 MiB pull into a Vec above is the largest buffer).
    let grown = peak_rss().saturating_sub(before);
    eprintln!("peak RSS grew by {} KiB over three 64 MiB transfers", grown >> 10);
    assert!(grown < 32 << 20, "peak RSS grew by {} MiB", grown >> 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_storage_is_detected_and_nothing_is_kept() {
    let Some(reg) = Registry::start(Variant::Plain) else { return };
    let c = client(&reg.url("tenon/cache"), anonymous());
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("model.bin");
    let digest = write_blob(&data, 1 << 20, 3);
    c.push_blob_file(&digest, &data, &[]).await.unwrap();

    // flip one byte of the registry's stored copy
    let stored = reg.blob_data(digest.hex());
    let mut bytes = std::fs::read(&stored).expect("stored blob");
    bytes[4242] ^= 0x01;
    std::fs::write(&stored, &bytes).unwrap();

    let out_dir = dir.path().join("out");
    std::fs::create_dir(&out_dir).unwrap();
    let dest = out_dir.join("model.bin");
    let e = c.pull_blob_to_file(&digest, Some(1 << 20), &dest).await.unwrap_err();
    match &e {
        OciError::DigestMismatch { expected, actual, .. } => {
            assert_eq!(expected, digest.as_str());
            assert_ne!(actual, digest.as_str());
        }
        other => panic!("expected a digest mismatch, got {other}"),
    }
    assert!(e.to_string().contains("does not match its digest"), "{e}");
    assert_eq!(std::fs::read_dir(&out_dir).unwrap().count(), 0, "no file, no partial left behind");
    // the registry itself still vouches for the original digest: only hashing catches it
    assert_eq!(c.blob_exists(&digest).await.unwrap(), Some(1 << 20));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_htpasswd() {
    let password = "pw-Zq8-never-printed";
    let Some(reg) = Registry::start(Variant::TlsHtpasswd { user: "ci".into(), password: password.into() }) else {
        return;
    };
    let url = reg.url("tenon/cache");
    assert!(url.starts_with("oci://"));
    let with = |credentials: CredentialSource, ca: bool| {
        client(&url, ClientConfig { credentials, ca_file: ca.then(|| reg.ca_file()), ..ClientConfig::default() })
    };

    // right credentials and CA: works, including a push and a pull
    let good = with(CredentialSource::Explicit(Credentials::new("ci", password)), true);
    good.ping().await.expect("ping with credentials");
    let (d, _) = good.push_blob_bytes(Bytes::from_static(b"over tls")).await.unwrap();
    let mut back = Vec::new();
    good.pull_blob(&d, None, &mut back).await.unwrap();
    assert_eq!(back, b"over tls");

    // the same credentials from a Docker config.json (base64 `auth`)
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.json");
    let auth = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, format!("ci:{password}"));
    std::fs::write(&cfg, format!(r#"{{"auths": {{"127.0.0.1:{}": {{"auth": "{auth}"}}}}}}"#, reg.port)).unwrap();
    with(CredentialSource::File(cfg), true).ping().await.expect("ping with docker config");

    // wrong password, and none: a clear 401 that never shows a password
    let wrong_pw = "wrong-Kx3-never-printed";
    for (source, expect) in [
        (CredentialSource::Explicit(Credentials::new("ci", wrong_pw)), "were rejected"),
        (CredentialSource::Anonymous, "no credentials"),
    ] {
        let e = with(source, true).ping().await.unwrap_err();
        assert!(matches!(e, OciError::Unauthorized { .. }), "{e}");
        for text in [e.to_string(), format!("{e:?}")] {
            assert!(text.contains(expect), "{text}");
            assert!(!text.contains(password) && !text.contains(wrong_pw), "credential leaked: {text}");
            assert!(!text.contains("Authorization") && !text.contains("Basic "), "header leaked: {text}");
        }
    }

    // a push with wrong credentials fails the same way
    let e = with(CredentialSource::Explicit(Credentials::new("ci", wrong_pw)), true)
        .push_blob_bytes(Bytes::from_static(b"nope"))
        .await
        .unwrap_err();
    assert!(matches!(e, OciError::Unauthorized { .. }) && !e.to_string().contains(wrong_pw), "{e}");

    // without the test CA: a TLS failure naming the certificate, quickly, no password in it
    let t = Instant::now();
    let e = with(CredentialSource::Explicit(Credentials::new("ci", password)), false).ping().await.unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, OciError::Unreachable { .. }), "{text}");
    assert!(text.to_lowercase().contains("certificate"), "{text}");
    assert!(!text.contains(password), "{text}");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());

    // plain HTTP to the TLS port fails, it does not hang
    let plain = client(&url.replacen("oci://", "oci+http://", 1), ClientConfig { retries: 0, ..anonymous() });
    assert!(plain.ping().await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_only_registry_refuses_writes_with_a_typed_error() {
    let Some(reg) = Registry::start(Variant::Plain) else { return };
    let rw = client(&reg.url("tenon/cache"), anonymous());
    let (config, _) = rw.push_blob_bytes(Bytes::from_static(b"{}")).await.unwrap();
    let tag = ManifestRef::tag("r1-readonly").unwrap();
    let m = record_manifest(&config, 2, &[], "k");
    let mdigest = rw.put_image_manifest(&tag, &m).await.unwrap();

    let twin = reg.read_only_twin();
    let ro = client(&twin.url("tenon/cache"), anonymous());
    // reads work
    assert_eq!(ro.get_manifest(&tag).await.unwrap().unwrap().digest, mdigest);
    let mut buf = Vec::new();
    ro.pull_blob(&config, Some(2), &mut buf).await.unwrap();
    // writes: 405, as a ReadOnly error
    let e = ro.push_blob_bytes(Bytes::from_static(b"new")).await.unwrap_err();
    assert!(matches!(e, OciError::ReadOnly { .. }), "{e}");
    assert!(e.to_string().contains("read-only"), "{e}");
    let e = ro.put_image_manifest(&ManifestRef::tag("other").unwrap(), &m).await.unwrap_err();
    assert!(matches!(e, OciError::ReadOnly { .. }), "{e}");
    let e = ro.delete_manifest(&mdigest).await.unwrap_err();
    assert!(matches!(e, OciError::ReadOnly { .. }), "{e}");
    // pushing an existing blob is a HEAD only, so it "succeeds" without writing
    assert_eq!(ro.push_blob_bytes(Bytes::from_static(b"{}")).await.unwrap().1, PushOutcome::Existed);
    // the twin's log: every write it saw was refused, none stored anything
    let writes: Vec<_> =
        twin.requests().into_iter().filter(|(m, _, _)| !matches!(m.as_str(), "GET" | "HEAD")).collect();
    assert_eq!(writes.len(), 3, "POST upload, PUT manifest, DELETE manifest: {writes:?}");
    assert!(writes.iter().all(|(_, _, status)| *status == 405), "{writes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_and_silent_registries_fail_fast() {
    // a closed port: refused at once; three retries with back-off still end within seconds
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let c = client(&format!("oci+http://127.0.0.1:{port}/tenon/cache"), anonymous());
    let t = Instant::now();
    let e = c.ping().await.unwrap_err();
    assert!(matches!(e, OciError::Unreachable { .. }), "{e}");
    assert!(e.to_string().contains(&format!("127.0.0.1:{port}")), "{e}");
    assert!(t.elapsed() < Duration::from_secs(5), "took {:?}", t.elapsed());

    // a server that accepts and never answers: the idle timeout ends it
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let c = client(
        &format!("oci+http://127.0.0.1:{port}/tenon/cache"),
        ClientConfig { idle_timeout: Duration::from_millis(800), retries: 1, ..anonymous() },
    );
    let t = Instant::now();
    let e = c.get_manifest(&ManifestRef::tag("r1-x").unwrap()).await.unwrap_err();
    assert!(matches!(e, OciError::Timeout { .. }), "{e}");
    assert!(t.elapsed() < Duration::from_secs(5), "took {:?}", t.elapsed());
    drop(silent);
}
