//! Publishing a task's declared output as a KitOps ModelKit (issue 14, "Publishing what is
//! promoted"), so that what a policy promotes is a durable `oci://host/repo@sha256:…` that
//! `kit pull`/`kit unpack` and KServe (through KitOps' `kit://` storage initializer) fetch.
//!
//! The format, from the KitOps sources (kitops-ml/kitops `pkg/artifact/spec.md`,
//! `pkg/artifact/kitfile.go`, `pkg/lib/constants/mediaType.go`, `pkg/lib/kitfile/layer.go`,
//! `pkg/lib/kitfile/local-storage.go`, `pkg/cmd/unpack/unpack.go`):
//! * an OCI image manifest (schemaVersion 2); no `artifactType` (kit writes none; readers fall
//!   back to `config.mediaType`);
//! * config `application/vnd.kitops.modelkit.config.v1+json`: the Kitfile as JSON
//!   (`manifestVersion`, `package`, `model` with `parts`, `code`, `datasets`, `docs`), each
//!   element carrying the `digest` and `diffId` of its layer (equal here: layers are
//!   uncompressed). `kit unpack` refuses a layer whose digest differs from its Kitfile entry;
//! * layers `application/vnd.kitops.modelkit.{model,modelpart,code,dataset,docs}.v1.tar`
//!   (uncompressed; kit also reads `+gzip`), in kit's order: model, model parts, code,
//!   datasets, docs. `kit unpack` pairs the n-th layer of a kind with the n-th Kitfile entry of
//!   that kind, so the order within a kind follows the input;
//! * each layer is a tar whose entry names start with the element's `path` (the current kit
//!   format: a model at `model.onnx` is the entry `model.onnx`; a dataset at `data/train` holds
//!   `data/`, `data/train/`, `data/train/x.csv`), unpacked relative to the target directory.
//!   No layer annotations: KitOps defines none (`org.cncf.model.filepath` is ModelPack's).
//!
//! Determinism: the same files, metadata and `created` give the same manifest digest. Tars
//! are sorted by entry name, with mtime 0, uid/gid 0, no user/group names, mode 0644 (0755 for
//! executables and directories), regular files and directories only. Each file is streamed
//! into the layer file while it is hashed; nothing holds a whole file in memory.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, BufWriter};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use bytes::Bytes;
use oci_spec::image::{Descriptor, ImageManifestBuilder, MediaType};
use serde::Serialize;

use super::client::{canonical_json, Client};
use super::reference::{Digest, ManifestRef, RepoUrl};
use super::tario::{Exact, HashingWriter};
use super::{OciError, OCI_MANIFEST};

/// The Kitfile's media type (the manifest's config).
pub const KITOPS_CONFIG: &str = "application/vnd.kitops.modelkit.config.v1+json";
/// The Kitfile format version kit writes.
pub const KITFILE_MANIFEST_VERSION: &str = "1.0.0";
/// The OCI annotation holding the `created` input.
pub const ANNOTATION_CREATED: &str = "org.opencontainers.image.created";

/// What a layer holds: the KitOps element it belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum LayerKind {
    /// The serialized model (at most one per kit).
    Model,
    /// Additional model files (adapters, tokenizers): `model.parts[]`.
    ModelPart,
    Code,
    Dataset,
    Docs,
}

impl LayerKind {
    /// The word in the media type and in `tenon.dev/publish` (`model`, `modelpart`, `code`,
    /// `dataset`, `docs`).
    pub fn as_str(self) -> &'static str {
        match self {
            LayerKind::Model => "model",
            LayerKind::ModelPart => "modelpart",
            LayerKind::Code => "code",
            LayerKind::Dataset => "dataset",
            LayerKind::Docs => "docs",
        }
    }

    /// `application/vnd.kitops.modelkit.<kind>.v1.tar`
    pub fn media_type(self) -> String {
        format!("application/vnd.kitops.modelkit.{}.v1.tar", self.as_str())
    }
}

impl FromStr for LayerKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Ok(match s {
            "model" => LayerKind::Model,
            "modelpart" => LayerKind::ModelPart,
            "code" => LayerKind::Code,
            "dataset" => LayerKind::Dataset,
            "docs" => LayerKind::Docs,
            _ => {
                return Err(format!(
                    "unknown ModelKit layer kind {s:?}: expected model, modelpart, code, dataset or docs"
                ))
            }
        })
    }
}

/// One file of a layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KitFile {
    /// Relative to the layer's `path` (`/`-separated, no `.`/`..`); empty when the layer's
    /// path names this single file itself.
    pub rel: String,
    /// Where its bytes are on disk now (a regular file; symbolic links are refused).
    pub source: PathBuf,
    /// Packed with mode 0755 instead of 0644.
    pub executable: bool,
}

/// One layer: a Kitfile element and its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KitLayer {
    pub kind: LayerKind,
    /// The element's path inside the kit (where `kit unpack` puts it), e.g. `model.onnx` or
    /// `data/train`. Relative, `/`-separated, no `.`/`..`.
    pub path: String,
    /// `name` in the Kitfile (model, model part, dataset; ignored for code and docs).
    pub name: Option<String>,
    pub description: Option<String>,
    pub license: Option<String>,
    pub files: Vec<KitFile>,
}

impl KitLayer {
    /// A layer of the file or directory `local`, placed at `path` in the kit: a file gives a
    /// single-file layer; a directory gives every regular file under it (sorted, exec bits
    /// kept; empty directories are not recorded). A symbolic link anywhere is an error.
    pub fn from_path(kind: LayerKind, path: &str, local: &Path) -> Result<KitLayer, String> {
        let meta = std::fs::symlink_metadata(local).map_err(|e| format!("{}: {e}", local.display()))?;
        let mut files = Vec::new();
        if meta.is_file() {
            files.push(KitFile { rel: String::new(), source: local.to_path_buf(), executable: is_exec(&meta) });
        } else if meta.is_dir() {
            walk(local, "", &mut files)?;
        } else {
            return Err(format!("{}: not a regular file or directory", local.display()));
        }
        Ok(KitLayer { kind, path: path.to_string(), name: None, description: None, license: None, files })
    }
}

fn is_exec(meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::PermissionsExt;
    meta.permissions().mode() & 0o111 != 0
}

fn walk(dir: &Path, prefix: &str, out: &mut Vec<KitFile>) -> Result<(), String> {
    let mut entries = std::fs::read_dir(dir)
        .and_then(|rd| rd.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name();
        let name = name.to_str().ok_or_else(|| format!("{}: the name is not UTF-8", e.path().display()))?;
        let rel = if prefix.is_empty() { name.to_string() } else { format!("{prefix}/{name}") };
        let meta = std::fs::symlink_metadata(e.path()).map_err(|err| format!("{}: {err}", e.path().display()))?;
        if meta.is_dir() {
            walk(&e.path(), &rel, out)?;
        } else if meta.is_file() {
            out.push(KitFile { rel, source: e.path(), executable: is_exec(&meta) });
        } else {
            return Err(format!(
                "{}: not a regular file or directory (a ModelKit holds only those)",
                e.path().display()
            ));
        }
    }
    Ok(())
}

/// The Kitfile's `package` section.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KitPackage {
    pub name: String,
    pub version: Option<String>,
    pub description: Option<String>,
    pub license: Option<String>,
    pub authors: Vec<String>,
}

/// Everything a ModelKit is built from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KitInput {
    pub package: KitPackage,
    pub layers: Vec<KitLayer>,
    /// RFC 3339 time for `org.opencontainers.image.created` (no wall clock is read here).
    pub created: Option<String>,
    /// Extra manifest annotations (e.g. `org.opencontainers.image.source`/`.revision`).
    pub annotations: BTreeMap<String, String>,
}

/// A layer tar written by [`build`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltLayer {
    pub kind: LayerKind,
    pub path: String,
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    /// The tar file in the work directory.
    pub file: PathBuf,
}

/// A ModelKit ready to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltKit {
    /// The manifest bytes (canonical JSON) and their digest: the ModelKit's identity.
    pub manifest: Bytes,
    pub digest: Digest,
    /// The Kitfile JSON (the config blob) and its digest.
    pub config: Bytes,
    pub config_digest: Digest,
    /// In manifest order.
    pub layers: Vec<BuiltLayer>,
}

// The Kitfile as JSON, field names as in kit's `pkg/artifact/kitfile.go`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Kitfile<'a> {
    manifest_version: &'a str,
    package: PackageJson<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    model: Option<Element<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    code: Vec<Element<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    datasets: Vec<Element<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    docs: Vec<Element<'a>>,
}

#[derive(Serialize)]
struct PackageJson<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    version: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    license: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    authors: &'a Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Element<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    path: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    license: Option<&'a str>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    parts: Vec<Element<'a>>,
    digest: String,
    diff_id: String,
}

fn element<'a>(l: &'a KitLayer, b: &BuiltLayer) -> Element<'a> {
    let named = matches!(l.kind, LayerKind::Model | LayerKind::ModelPart | LayerKind::Dataset);
    Element {
        name: if named { l.name.as_deref() } else { None },
        path: &l.path,
        description: l.description.as_deref(),
        license: l.license.as_deref(),
        parts: Vec::new(),
        digest: b.digest.to_string(),
        diff_id: b.digest.to_string(),
    }
}

/// Every proper ancestor directory of the `/`-separated `name`.
fn add_parents(name: &str, dirs: &mut BTreeSet<String>) {
    let mut acc = String::new();
    let comps: Vec<&str> = name.split('/').collect();
    for c in &comps[..comps.len() - 1] {
        if !acc.is_empty() {
            acc.push('/');
        }
        acc.push_str(c);
        dirs.insert(acc.clone());
    }
}

/// A `/`-separated relative path without empty, `.` or `..` components.
fn check_rel(p: &str, what: &str) -> Result<(), String> {
    if p.is_empty() || p.starts_with('/') || p.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        return Err(format!("{what} {p:?}: expected a relative path without empty, '.' or '..' components"));
    }
    if p.contains('\0') || p.contains('\\') {
        return Err(format!("{what} {p:?}: NUL and backslash are not allowed"));
    }
    Ok(())
}

/// `a` equals `b` or one is a directory holding the other.
fn nested(a: &str, b: &str) -> bool {
    let under = |x: &str, y: &str| x == y || x.starts_with(&format!("{y}/"));
    under(a, b) || under(b, a)
}

/// Build a ModelKit: write each layer tar into `work_dir` (`layer-N.tar`), make the Kitfile
/// config and the manifest. Reads no clock and no registry. Errors name the layer and file.
pub fn build(input: &KitInput, work_dir: &Path) -> Result<BuiltKit, String> {
    if input.package.name.trim().is_empty() {
        return Err("ModelKit package name is empty".into());
    }
    if input.layers.is_empty() {
        return Err("a ModelKit needs at least one layer".into());
    }
    if input.layers.iter().filter(|l| l.kind == LayerKind::Model).count() > 1 {
        return Err("a ModelKit holds at most one `model` layer (use `modelpart` for more model files)".into());
    }
    for (i, l) in input.layers.iter().enumerate() {
        let what = format!("{} layer path", l.kind.as_str());
        check_rel(&l.path, &what)?;
        for other in &input.layers[..i] {
            if nested(&l.path, &other.path) {
                return Err(format!(
                    "{} layer {:?} overlaps {} layer {:?}: kit unpack would write one over the other",
                    l.kind.as_str(),
                    l.path,
                    other.kind.as_str(),
                    other.path
                ));
            }
        }
    }
    // kit's layer order: model, model parts, code, datasets, docs (stable within a kind)
    let mut order: Vec<&KitLayer> = input.layers.iter().collect();
    order.sort_by_key(|l| l.kind);
    std::fs::create_dir_all(work_dir).map_err(|e| format!("{}: {e}", work_dir.display()))?;
    let mut built = Vec::with_capacity(order.len());
    for (i, layer) in order.iter().enumerate() {
        let file = work_dir.join(format!("layer-{i}.tar"));
        let (digest, size) = write_layer(layer, &file)?;
        built.push(BuiltLayer {
            kind: layer.kind,
            path: layer.path.clone(),
            media_type: layer.kind.media_type(),
            digest,
            size,
            file,
        });
    }

    let p = &input.package;
    let mut kitfile = Kitfile {
        manifest_version: KITFILE_MANIFEST_VERSION,
        package: PackageJson {
            name: &p.name,
            version: p.version.as_deref(),
            description: p.description.as_deref(),
            license: p.license.as_deref(),
            authors: &p.authors,
        },
        model: None,
        code: Vec::new(),
        datasets: Vec::new(),
        docs: Vec::new(),
    };
    let mut parts = Vec::new();
    for (l, b) in order.iter().zip(&built) {
        let e = element(l, b);
        match l.kind {
            LayerKind::Model => kitfile.model = Some(e),
            LayerKind::ModelPart => parts.push(e),
            LayerKind::Code => kitfile.code.push(e),
            LayerKind::Dataset => kitfile.datasets.push(e),
            LayerKind::Docs => kitfile.docs.push(e),
        }
    }
    if !parts.is_empty() {
        // kit keeps parts under `model`; a kit of parts alone has a pathless model element
        match &mut kitfile.model {
            Some(m) => m.parts = parts,
            None => {
                return Err("`modelpart` layers need a `model` layer in the same ModelKit".into());
            }
        }
    }
    let config = Bytes::from(canonical_json(&kitfile)?);
    let config_digest = Digest::of_bytes(&config);

    let oci_digest = |d: &Digest| d.as_str().parse::<oci_spec::image::Digest>().map_err(|e| format!("digest {d}: {e}"));
    let mut annotations: BTreeMap<String, String> = input.annotations.clone();
    if let Some(c) = &input.created {
        annotations.insert(ANNOTATION_CREATED.to_string(), c.clone());
    }
    let mut mb = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(Descriptor::new(
            MediaType::Other(KITOPS_CONFIG.into()),
            config.len() as u64,
            oci_digest(&config_digest)?,
        ))
        .layers(
            built
                .iter()
                .map(|b| Ok(Descriptor::new(MediaType::Other(b.media_type.clone()), b.size, oci_digest(&b.digest)?)))
                .collect::<Result<Vec<_>, String>>()?,
        );
    if !annotations.is_empty() {
        mb = mb.annotations(annotations.into_iter().collect::<std::collections::HashMap<_, _>>());
    }
    let manifest = mb.build().map_err(|e| format!("ModelKit manifest: {e}"))?;
    let manifest = Bytes::from(canonical_json(&manifest)?);
    let digest = Digest::of_bytes(&manifest);
    Ok(BuiltKit { manifest, digest, config, config_digest, layers: built })
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_size(size);
    h
}

/// Write one layer tar; returns its digest and size.
fn write_layer(layer: &KitLayer, out: &Path) -> Result<(Digest, u64), String> {
    let what = |f: &str| format!("{} layer {:?}: {f}", layer.kind.as_str(), layer.path);
    if layer.files.is_empty() {
        return Err(what("no files"));
    }
    // entry name -> the file (None: a directory)
    let mut entries: BTreeMap<String, Option<&KitFile>> = BTreeMap::new();
    let single = layer.files.len() == 1 && layer.files[0].rel.is_empty();
    let mut dirs = BTreeSet::new();
    if single {
        add_parents(&layer.path, &mut dirs);
        entries.insert(layer.path.clone(), Some(&layer.files[0]));
    } else {
        dirs.insert(layer.path.clone());
        add_parents(&layer.path, &mut dirs);
        for f in &layer.files {
            check_rel(&f.rel, &what("file"))?;
            let name = format!("{}/{}", layer.path, f.rel);
            add_parents(&name, &mut dirs);
            if entries.insert(name.clone(), Some(f)).is_some() {
                return Err(what(&format!("{:?} is listed twice", f.rel)));
            }
        }
    }
    for d in dirs {
        if let Some(Some(f)) = entries.get(&d) {
            return Err(what(&format!("{:?} is both a file and a directory", f.rel)));
        }
        entries.insert(d, None);
    }

    let file = File::create(out).map_err(|e| format!("{}: {e}", out.display()))?;
    let w = HashingWriter::new(BufWriter::with_capacity(256 << 10, file));
    let mut tar = tar::Builder::new(w);
    for (name, f) in &entries {
        match f {
            None => {
                let mut h = header(tar::EntryType::Directory, 0o755, 0);
                tar.append_data(&mut h, format!("{name}/"), io::empty())
                    .map_err(|e| format!("{}: {e}", out.display()))?;
            }
            Some(f) => {
                let src = &f.source;
                let meta = std::fs::symlink_metadata(src).map_err(|e| what(&format!("{}: {e}", src.display())))?;
                if !meta.is_file() {
                    return Err(what(&format!("{}: not a regular file", src.display())));
                }
                let input = File::open(src).map_err(|e| what(&format!("{}: {e}", src.display())))?;
                let len = input.metadata().map_err(|e| what(&format!("{}: {e}", src.display())))?.len();
                let mut h = header(tar::EntryType::Regular, if f.executable { 0o755 } else { 0o644 }, len);
                tar.append_data(&mut h, name, Exact::new(input, len, "the file"))
                    .map_err(|e| what(&format!("{}: {e}", src.display())))?;
            }
        }
    }
    let w = tar.into_inner().map_err(|e| format!("{}: {e}", out.display()))?;
    let (_, digest, len) = w.finish().map_err(|e| format!("{}: {e}", out.display()))?;
    Ok((digest, len))
}

/// Push a built ModelKit: each layer (skipped when the repository has it: HEAD), the Kitfile
/// config, then the manifest by digest and, when given, under `tag`. Returns the manifest
/// digest (= `kit.digest`; the registry's answer is checked against it).
pub async fn publish(client: &Client, kit: &BuiltKit, tag: Option<&str>) -> Result<Digest, OciError> {
    let tag = tag.map(ManifestRef::tag).transpose()?;
    for l in &kit.layers {
        client.push_blob_file(&l.digest, &l.file, &[]).await?;
    }
    client.push_blob_bytes(kit.config.clone()).await?;
    let digest =
        client.put_manifest(&ManifestRef::Digest(kit.digest.clone()), OCI_MANIFEST, kit.manifest.clone()).await?;
    if let Some(t) = tag {
        client.put_manifest(&t, OCI_MANIFEST, kit.manifest.clone()).await?;
    }
    Ok(digest)
}

/// The durable reference a policy promotes: `oci://host[:port]/repo@sha256:…`, also for an
/// `oci+http://` repository (plain HTTP is a property of how a registry is reached, configured
/// on each consumer: `kit pull --plain-http`, skopeo's `--tls-verify=false`; it is not part of
/// the artifact's name).
pub fn reference(repo: &RepoUrl, digest: &Digest) -> String {
    format!("oci://{}/{}@{}", repo.registry, repo.repository, digest)
}

/// The same reference as KServe's KitOps storage initializer takes it in `storageUri`
/// (`kit://host[:port]/repo@sha256:…`); `kit pull`/`kit unpack` take it without the scheme.
pub fn kserve_uri(repo: &RepoUrl, digest: &Digest) -> String {
    format!("kit://{}/{}@{}", repo.registry, repo.repository, digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kit_of(dir: &Path, model: &[u8]) -> KitInput {
        std::fs::write(dir.join("m.bin"), model).unwrap();
        std::fs::create_dir_all(dir.join("data/sub")).unwrap();
        std::fs::write(dir.join("data/b.csv"), b"b\n").unwrap();
        std::fs::write(dir.join("data/sub/a.csv"), b"a\n").unwrap();
        KitInput {
            package: KitPackage { name: "pump".into(), ..Default::default() },
            layers: vec![
                KitLayer::from_path(LayerKind::Dataset, "data", &dir.join("data")).unwrap(),
                KitLayer::from_path(LayerKind::Model, "models/pump.bin", &dir.join("m.bin")).unwrap(),
            ],
            created: Some("2026-12-03T00:00:00Z".into()),
            annotations: BTreeMap::new(),
        }
    }

    fn tar_names(path: &Path) -> Vec<(String, u32, u64, u64)> {
        let mut a = tar::Archive::new(File::open(path).unwrap());
        a.entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    h.mode().unwrap(),
                    h.mtime().unwrap(),
                    h.uid().unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn layers_are_sorted_deterministic_and_in_kit_order() {
        let src = tempfile::tempdir().unwrap();
        let input = kit_of(src.path(), b"weights");
        let a = build(&input, &src.path().join("w1")).unwrap();
        let b = build(&input, &src.path().join("w2")).unwrap();
        assert_eq!(a.digest, b.digest, "same input, same manifest digest");
        assert_eq!(a.layers[0].kind, LayerKind::Model, "model first, as kit orders layers");
        assert_eq!(a.layers[0].media_type, "application/vnd.kitops.modelkit.model.v1.tar");
        assert_eq!(a.layers[1].media_type, "application/vnd.kitops.modelkit.dataset.v1.tar");
        let names = tar_names(&a.layers[1].file);
        let just: Vec<_> = names.iter().map(|n| n.0.as_str()).collect();
        assert_eq!(just, ["data/", "data/b.csv", "data/sub/", "data/sub/a.csv"]);
        assert!(names.iter().all(|n| n.2 == 0 && n.3 == 0), "mtime and uid 0: {names:?}");
        assert_eq!(
            tar_names(&a.layers[0].file).iter().map(|n| n.0.clone()).collect::<Vec<_>>(),
            ["models/", "models/pump.bin"]
        );
        // a changed byte changes the digest
        let c = build(&kit_of(src.path(), b"weightz"), &src.path().join("w3")).unwrap();
        assert_ne!(a.digest, c.digest);
        // the Kitfile names each layer's digest
        let cfg: serde_json::Value = serde_json::from_slice(&a.config).unwrap();
        assert_eq!(cfg["manifestVersion"], "1.0.0");
        assert_eq!(cfg["model"]["path"], "models/pump.bin");
        assert_eq!(cfg["model"]["digest"], a.layers[0].digest.as_str());
        assert_eq!(cfg["datasets"][0]["diffId"], a.layers[1].digest.as_str());
    }

    #[test]
    fn exec_bit_and_bad_input() {
        use std::os::unix::fs::PermissionsExt;
        let src = tempfile::tempdir().unwrap();
        let mut input = kit_of(src.path(), b"w");
        std::fs::set_permissions(src.path().join("data/b.csv"), std::fs::Permissions::from_mode(0o755)).unwrap();
        input.layers[0] = KitLayer::from_path(LayerKind::Dataset, "data", &src.path().join("data")).unwrap();
        let k = build(&input, &src.path().join("w")).unwrap();
        let modes: Vec<_> = tar_names(&k.layers[1].file).into_iter().map(|n| (n.0, n.1)).collect();
        assert!(
            modes.contains(&("data/b.csv".into(), 0o755)) && modes.contains(&("data/sub/a.csv".into(), 0o644)),
            "{modes:?}"
        );

        let mut bad = input.clone();
        bad.layers[0].path = "../x".into();
        assert!(build(&bad, &src.path().join("w")).unwrap_err().contains("relative path"));
        let mut bad = input.clone();
        bad.layers[0].path = "models".into();
        assert!(build(&bad, &src.path().join("w")).unwrap_err().contains("overlaps"));
        let mut bad = input.clone();
        bad.layers[0].kind = LayerKind::Model;
        assert!(build(&bad, &src.path().join("w")).unwrap_err().contains("at most one"));
        let mut bad = input.clone();
        bad.package.name = String::new();
        assert!(build(&bad, &src.path().join("w")).is_err());
        std::os::unix::fs::symlink("/etc/passwd", src.path().join("data/link")).unwrap();
        assert!(KitLayer::from_path(LayerKind::Dataset, "data", &src.path().join("data"))
            .unwrap_err()
            .contains("link"));
        assert_eq!("dataset".parse::<LayerKind>(), Ok(LayerKind::Dataset));
        assert!("weights".parse::<LayerKind>().is_err());
    }

    #[test]
    fn references() {
        let repo = RepoUrl::parse("oci+http://127.0.0.1:5000/ml/pump").unwrap();
        let d = Digest::of_bytes(b"x");
        assert_eq!(reference(&repo, &d), format!("oci://127.0.0.1:5000/ml/pump@{d}"));
        assert_eq!(kserve_uri(&repo, &d), format!("kit://127.0.0.1:5000/ml/pump@{d}"));
    }
}
