//! A task output published as a KitOps ModelKit (src/oci/modelkit.rs) to a real Distribution
//! 2.8 registry (tests/common/registry.rs), then read back by tenon's client and by Debian's
//! `skopeo` (a standard client: `inspect --raw` and `copy` to an OCI layout).

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::process::Command;

use common::registry::{tool, Registry, Variant};
use tenon::oci::modelkit::{self, KitInput, KitLayer, KitPackage, LayerKind, KITOPS_CONFIG};
use tenon::oci::{Client, ClientConfig, CredentialSource, Digest, ManifestRef, PushOutcome, RepoUrl, OCI_MANIFEST};

/// A model of `len` pseudo-random bytes and a dataset directory of two files in `dir`.
fn sources(dir: &Path, len: usize) -> Vec<u8> {
    let mut x = 0x9e3779b97f4a7c15u64;
    let model: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(dir.join("pump-failure.onnx"), &model).unwrap();
    std::fs::create_dir_all(dir.join("dataset/eval")).unwrap();
    std::fs::write(dir.join("dataset/train.csv"), "t,rpm,fail\n0,1200,0\n1,1900,1\n").unwrap();
    std::fs::write(dir.join("dataset/eval/eval.csv"), "t,rpm,fail\n2,1500,0\n").unwrap();
    model
}

fn input(dir: &Path) -> KitInput {
    let mut model =
        KitLayer::from_path(LayerKind::Model, "model/pump-failure.onnx", &dir.join("pump-failure.onnx")).unwrap();
    model.name = Some("pump-failure".into());
    let mut data = KitLayer::from_path(LayerKind::Dataset, "data", &dir.join("dataset")).unwrap();
    data.name = Some("sensor-readings".into());
    KitInput {
        package: KitPackage { name: "pump-failure".into(), version: Some("1".into()), ..Default::default() },
        layers: vec![data, model],
        created: Some("2026-12-03T09:00:00Z".into()),
        annotations: BTreeMap::from([("org.opencontainers.image.revision".into(), "abc123".into())]),
    }
}

/// The bytes of `name` in the tar at `path`.
fn tar_entry(path: &Path, name: &str) -> Option<Vec<u8>> {
    let mut a = tar::Archive::new(std::fs::File::open(path).unwrap());
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().to_string_lossy() == name {
            let mut v = Vec::new();
            e.read_to_end(&mut v).unwrap();
            return Some(v);
        }
    }
    None
}

fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().expect("spawn");
    assert!(out.status.success(), "{cmd:?} failed: {}\n{}", out.status, String::from_utf8_lossy(&out.stderr));
    out.stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modelkit_publishes_and_skopeo_reads_it() {
    let Some(reg) = Registry::start(Variant::Plain) else { return };
    let repo = RepoUrl::parse(&reg.url("ml/pump-failure")).unwrap();
    let c = Client::new(repo.clone(), ClientConfig { credentials: CredentialSource::Anonymous, ..Default::default() })
        .unwrap();
    let src = tempfile::tempdir().unwrap();
    let model = sources(src.path(), 300_000);

    // the same input twice (different work directories): the same manifest, byte for byte
    let kit = modelkit::build(&input(src.path()), &src.path().join("work1")).unwrap();
    let again = modelkit::build(&input(src.path()), &src.path().join("work2")).unwrap();
    assert_eq!(kit.digest, again.digest);
    assert_eq!(kit.manifest, again.manifest);

    let digest = modelkit::publish(&c, &kit, Some("v1")).await.unwrap();
    assert_eq!(digest, kit.digest);
    // publishing again uploads nothing: every blob is HEAD-skipped
    let uploads = reg.count_requests("POST", "/blobs/uploads/");
    assert_eq!(modelkit::publish(&c, &again, None).await.unwrap(), digest);
    assert_eq!(reg.count_requests("POST", "/blobs/uploads/"), uploads, "second publish re-uploaded:\n{}", reg.log());
    assert_eq!(c.push_blob_file(&kit.layers[0].digest, &kit.layers[0].file, &[]).await.unwrap(), PushOutcome::Existed);

    // read back by digest and by tag: KitOps media types, kit's layer order
    let got = c.get_manifest(&ManifestRef::Digest(digest.clone())).await.unwrap().expect("manifest");
    assert_eq!(got.media_type, OCI_MANIFEST);
    assert_eq!(got.bytes, kit.manifest);
    let by_tag = c.get_manifest(&ManifestRef::tag("v1").unwrap()).await.unwrap().expect("tag");
    assert_eq!(by_tag.digest, digest);
    let m = got.image_manifest().unwrap();
    assert_eq!(m.config().media_type().to_string(), KITOPS_CONFIG);
    let types: Vec<String> = m.layers().iter().map(|l| l.media_type().to_string()).collect();
    assert_eq!(
        types,
        ["application/vnd.kitops.modelkit.model.v1.tar", "application/vnd.kitops.modelkit.dataset.v1.tar"]
    );
    assert_eq!(m.annotations().as_ref().unwrap()["org.opencontainers.image.created"], "2026-12-03T09:00:00Z");
    let mut cfg = Vec::new();
    c.pull_blob(&kit.config_digest, None, &mut cfg).await.unwrap();
    let kitfile: serde_json::Value = serde_json::from_slice(&cfg).unwrap();
    assert_eq!(kitfile["package"]["name"], "pump-failure");
    assert_eq!(kitfile["model"]["path"], "model/pump-failure.onnx");
    assert_eq!(kitfile["model"]["digest"], m.layers()[0].digest().to_string(), "kit unpack checks this pairing");
    assert_eq!(kitfile["datasets"][0]["path"], "data");
    assert_eq!(kitfile["datasets"][0]["digest"], m.layers()[1].digest().to_string());

    let reference = modelkit::reference(&repo, &digest);
    assert_eq!(reference, format!("oci://127.0.0.1:{}/ml/pump-failure@{digest}", reg.port));

    // a standard client reads it
    let Some(skopeo) = tool("skopeo", "the skopeo half of this test skipped") else { return };
    let docker = format!("docker://127.0.0.1:{}/ml/pump-failure@{digest}", reg.port);
    let raw = run(Command::new(&skopeo).args(["inspect", "--raw", "--tls-verify=false", &docker]));
    assert_eq!(raw, kit.manifest.to_vec(), "skopeo sees the exact manifest tenon pushed");
    let raw_cfg = run(Command::new(&skopeo).args(["inspect", "--config", "--raw", "--tls-verify=false", &docker]));
    assert_eq!(raw_cfg, kit.config.to_vec());

    let layout = src.path().join("copied");
    run(Command::new(&skopeo).args([
        "copy",
        "--src-tls-verify=false",
        "--preserve-digests",
        &docker,
        &format!("oci:{}:v1", layout.display()),
    ]));
    let index: serde_json::Value = serde_json::from_slice(&std::fs::read(layout.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["digest"], digest.as_str(), "copied without conversion");
    let blob = |d: &Digest| layout.join("blobs/sha256").join(d.hex());
    assert_eq!(std::fs::read(blob(&digest)).unwrap(), kit.manifest.to_vec());
    let model_tar = blob(&kit.layers[0].digest);
    assert_eq!(tar_entry(&model_tar, "model/pump-failure.onnx").expect("model in its layer"), model);
    let data_tar = blob(&kit.layers[1].digest);
    assert_eq!(tar_entry(&data_tar, "data/eval/eval.csv").unwrap(), b"t,rpm,fail\n2,1500,0\n");
}

#[test]
fn different_inputs_give_different_kits() {
    let src = tempfile::tempdir().unwrap();
    sources(src.path(), 1000);
    let a = modelkit::build(&input(src.path()), &src.path().join("w1")).unwrap();
    let mut other = input(src.path());
    other.created = Some("2026-12-04T09:00:00Z".into());
    let b = modelkit::build(&other, &src.path().join("w2")).unwrap();
    assert_ne!(a.digest, b.digest, "created is part of the manifest");
    assert_eq!(
        a.layers,
        {
            let mut l = b.layers.clone();
            for (x, y) in l.iter_mut().zip(&a.layers) {
                x.file = y.file.clone();
            }
            l
        },
        "but the layers are the same blobs"
    );
    std::fs::write(src.path().join("dataset/train.csv"), "changed").unwrap();
    let c = modelkit::build(&input(src.path()), &src.path().join("w3")).unwrap();
    assert_ne!(a.digest, c.digest);
    assert_eq!(a.layers[0].digest, c.layers[0].digest, "model layer unchanged");
    assert_ne!(a.layers[1].digest, c.layers[1].digest, "dataset layer changed");
}
