//! Workspace bindings as host directories.
//!
//! | binding | local directory | shared by |
//! |---|---|---|
//! | repo annotation | the repository tree (read-only by contract) | every task |
//! | `emptyDir` | `<taskrun>/ws/<name>` | one TaskRun |
//! | `volumeClaimTemplate` | `<run>/volumes/<binding>` | one PipelineRun |
//! | `persistentVolumeClaim` | `<state>/pvc/<claimName>` | every run (persists) |
//! | `configMap` / `secret` | `<run>/volumes/<binding>`, one file per key | one run, read-only |

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::resolve::{key_bytes, Failure};
use super::EngineOptions;
use crate::model::{Catalog, WorkspaceBinding};

#[derive(Debug, Clone)]
enum Volume {
    EmptyDir {
        sub: Option<String>,
    },
    /// `what` says what backs it, for cache keys: `repo`, `volumeClaimTemplate`,
    /// `persistentVolumeClaim:<claim>`, `configMap:<digest>`, `secret:<digest>`.
    Dir {
        path: PathBuf,
        read_only: bool,
        claim: String,
        what: String,
    },
}

#[derive(Debug, Clone, Default)]
pub struct RunVolumes {
    map: BTreeMap<String, Volume>,
    /// Create TaskRun directories (false when planning: nothing is touched).
    pub create: bool,
}

/// [`crate::util::join_sub`] with the reason Tekton gives for a bad subPath.
pub fn join_sub(base: &Path, sub: &str) -> Result<PathBuf, Failure> {
    crate::util::join_sub(base, sub).map_err(bad_sub_path)
}

/// [`crate::util::join_sub_but_last`] with the reason Tekton gives for a bad subPath.
pub fn join_sub_but_last(base: &Path, sub: &str) -> Result<PathBuf, Failure> {
    crate::util::join_sub_but_last(base, sub).map_err(bad_sub_path)
}

fn bad_sub_path(message: String) -> Failure {
    Failure::new("InvalidWorkspaceBindings", message)
}

impl RunVolumes {
    /// The run's workspace bindings as host directories (ConfigMaps and Secrets are
    /// written out under the run directory).
    pub fn prepare(
        cat: &Catalog,
        bindings: &[WorkspaceBinding],
        repo: &[String],
        run_dir: &Path,
        opts: &EngineOptions,
    ) -> Result<Self, Failure> {
        let mut map = BTreeMap::new();
        for b in bindings {
            map.insert(b.name.clone(), volume(cat, b, repo, run_dir, opts)?);
        }
        Ok(RunVolumes { map, create: true })
    }

    pub fn has(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }

    /// What backs run binding `name` (`emptyDir`, `repo`, `volumeClaimTemplate`, ...).
    pub fn describe(&self, name: &str) -> String {
        match self.map.get(name) {
            None => "unbound".into(),
            Some(Volume::EmptyDir { .. }) => "emptyDir".into(),
            Some(Volume::Dir { what, .. }) => what.clone(),
        }
    }

    pub fn is_repo(&self, name: &str) -> bool {
        self.describe(name) == "repo"
    }

    /// Host path, read-only flag and claim name for a task's use of run binding `name`.
    pub fn path_for(
        &self,
        name: &str,
        extra_sub: Option<&str>,
        taskrun_dir: &Path,
        task_ws: &str,
    ) -> Result<(PathBuf, bool, String), Failure> {
        let extra = extra_sub.filter(|s| !s.is_empty());
        match self.map.get(name) {
            None => {
                Err(Failure::new("InvalidWorkspaceBindings", format!("workspace {name:?} is not bound by the run")))
            }
            Some(Volume::EmptyDir { sub }) => {
                let mut p = taskrun_dir.join("ws").join(task_ws);
                if let Some(s) = sub {
                    p = join_sub(&p, s)?;
                }
                if !self.create {
                    let p = match extra {
                        Some(s) => join_sub(&p, s)?,
                        None => p,
                    };
                    return Ok((p, false, String::new()));
                }
                Ok((mk(&p, extra)?, false, String::new()))
            }
            Some(Volume::Dir { path, read_only, claim, .. }) => {
                let p = match extra {
                    Some(s) => join_sub(path, s)?,
                    None => path.clone(),
                };
                if !p.exists() && self.create {
                    if *read_only {
                        return Err(Failure::new(
                            "InvalidWorkspaceBindings",
                            format!("subPath {} does not exist in read-only workspace {name:?}", p.display()),
                        ));
                    }
                    std::fs::create_dir_all(&p)
                        .map_err(|e| Failure::new("CreateRunFailed", format!("cannot create {}: {e}", p.display())))?;
                }
                Ok((p, *read_only, claim.clone()))
            }
        }
    }
}

/// A Task's `volumes` as host directories: `emptyDir` per TaskRun, `configMap`/`secret`
/// materialised from objects in the repository, `persistentVolumeClaim` under the state dir.
pub fn task_volumes(
    cat: &Catalog,
    spec: &crate::model::TaskSpec,
    dir: &Path,
    opts: &EngineOptions,
) -> Result<BTreeMap<String, PathBuf>, Failure> {
    let mut out = BTreeMap::new();
    for v in &spec.volumes {
        let name = v.get("name").and_then(|n| n.as_str()).unwrap_or_default().to_string();
        if name.is_empty() {
            continue;
        }
        let base = dir.join("volumes").join(&name);
        let items = |o: &serde_json::Value| -> Vec<crate::model::KeyToPath> {
            o.get("items").and_then(|i| serde_json::from_value(i.clone()).ok()).unwrap_or_default()
        };
        let path = if let Some(cm) = v.get("configMap") {
            let cname = cm.get("name").and_then(|n| n.as_str()).unwrap_or_default();
            let obj = cat.config_map(cname).ok_or_else(|| {
                Failure::new(
                    "TaskRunValidationFailed",
                    format!("volume {name:?} binds ConfigMap {cname:?}, which is not defined in the repository"),
                )
            })?;
            materialize(&base, &key_bytes(&obj.spec, false), &items(cm), false)?;
            base
        } else if let Some(sec) = v.get("secret") {
            let sname = sec.get("secretName").and_then(|n| n.as_str()).unwrap_or_default();
            let obj = cat.secret(sname).ok_or_else(|| {
                Failure::new(
                    "TaskRunValidationFailed",
                    format!("volume {name:?} binds Secret {sname:?}, which is not defined in the repository"),
                )
            })?;
            materialize(&base, &key_bytes(&obj.spec, true), &items(sec), true)?;
            base
        } else if let Some(pvc) = v.get("persistentVolumeClaim") {
            let claim = pvc.get("claimName").and_then(|n| n.as_str()).unwrap_or_default();
            if claim.is_empty() || claim.contains('/') || claim.starts_with('.') {
                return Err(Failure::new(
                    "TaskRunValidationFailed",
                    format!("volume {name:?}: invalid claimName {claim:?}"),
                ));
            }
            mk(&opts.state_dir.join("pvc").join(claim), None)?
        } else if v.get("emptyDir").is_some() || v.as_object().is_some_and(|m| m.len() == 1) {
            mk(&base, None)?
        } else {
            return Err(Failure::new(
                "TaskRunValidationFailed",
                format!("volume {name:?}: only emptyDir, configMap, secret and persistentVolumeClaim volumes are supported locally"),
            ));
        };
        out.insert(name, path);
    }
    Ok(out)
}

pub(crate) fn data_digest(data: &BTreeMap<String, Vec<u8>>, items: &[crate::model::KeyToPath]) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for (k, v) in data {
        h.update(format!("{}:{k}:{}\n", k.len(), v.len()).as_bytes());
        h.update(v);
    }
    for i in items {
        h.update(format!("item {}:{}\n", i.key, i.path).as_bytes());
    }
    crate::hash::hex(&h.finalize())
}

fn invalid(message: String) -> Failure {
    Failure::new("InvalidWorkspaceBindings", message)
}

/// One binding as a volume.
fn volume(
    cat: &Catalog,
    b: &WorkspaceBinding,
    repo: &[String],
    run_dir: &Path,
    opts: &EngineOptions,
) -> Result<Volume, Failure> {
    let sub = b.sub_path.as_deref().filter(|s| !s.is_empty());
    let base = run_dir.join("volumes").join(&b.name);
    if repo.contains(&b.name) {
        return repo_volume(&b.name, sub, opts);
    }
    if b.empty_dir.is_some() {
        return Ok(Volume::EmptyDir { sub: sub.map(String::from) });
    }
    if b.volume_claim_template.is_some() {
        let claim = format!("pvc-{}", b.name);
        return Ok(Volume::Dir { path: mk(&base, sub)?, read_only: false, claim, what: "volumeClaimTemplate".into() });
    }
    if let Some(pvc) = &b.persistent_volume_claim {
        if pvc.claim_name.is_empty() || pvc.claim_name.contains('/') || pvc.claim_name.starts_with('.') {
            return Err(invalid(format!("workspace {:?}: invalid claimName {:?}", b.name, pvc.claim_name)));
        }
        let base = opts.state_dir.join("pvc").join(&pvc.claim_name);
        return Ok(Volume::Dir {
            path: mk(&base, sub)?,
            read_only: pvc.read_only,
            claim: pvc.claim_name.clone(),
            what: format!("persistentVolumeClaim:{}", pvc.claim_name),
        });
    }
    let what = if let Some(cm) = &b.config_map {
        key_volume(cat, &b.name, &cm.name, &cm.items, false, &base)?
    } else if let Some(sec) = &b.secret {
        key_volume(cat, &b.name, &sec.secret_name, &sec.items, true, &base)?
    } else if let Some(proj) = &b.projected {
        projected(cat, &b.name, proj, &base)?
    } else {
        return Err(invalid(format!("workspace {:?}: csi volumes are not supported by the local executor", b.name)));
    };
    Ok(Volume::Dir { path: mk(&base, sub)?, read_only: true, claim: String::new(), what })
}

/// A ConfigMap's or Secret's keys written out read-only: what backs it (only a digest
/// of a Secret's content ever leaves this function).
fn key_volume(
    cat: &Catalog,
    ws: &str,
    name: &str,
    items: &[crate::model::KeyToPath],
    secret: bool,
    base: &Path,
) -> Result<String, Failure> {
    let (kind, obj) = if secret { ("Secret", cat.secret(name)) } else { ("ConfigMap", cat.config_map(name)) };
    let obj = obj.ok_or_else(|| {
        invalid(format!("workspace {ws:?} binds {kind} {name:?}, which is not defined in the repository"))
    })?;
    let data = key_bytes(&obj.spec, secret);
    materialize(base, &data, items, secret)?;
    Ok(format!("{}:{}", if secret { "secret" } else { "configMap" }, data_digest(&data, items)))
}

/// The repository tree (or a directory of it), read-only.
fn repo_volume(name: &str, sub: Option<&str>, opts: &EngineOptions) -> Result<Volume, Failure> {
    let root = opts.repo_root.canonicalize().unwrap_or_else(|_| opts.repo_root.clone());
    let path = match sub {
        Some(s) => join_sub(&root, s)?,
        None => root,
    };
    if !path.is_dir() {
        return Err(invalid(format!(
            "workspace {name:?} is bound to the repository at {}, which is not a directory",
            path.display()
        )));
    }
    Ok(Volume::Dir { path, read_only: true, claim: String::new(), what: "repo".into() })
}

/// Secrets and configMaps projected into one read-only directory: what backs it.
fn projected(cat: &Catalog, ws: &str, proj: &serde_json::Value, base: &Path) -> Result<String, Failure> {
    let mut digests = Vec::new();
    for src in proj.get("sources").and_then(|v| v.as_array()).into_iter().flatten() {
        let items = |o: &serde_json::Value| -> Vec<crate::model::KeyToPath> {
            o.get("items").and_then(|i| serde_json::from_value(i.clone()).ok()).unwrap_or_default()
        };
        let (kind, o, secret) = match (src.get("secret"), src.get("configMap")) {
            (Some(o), _) => ("Secret", o, true),
            (None, Some(o)) => ("ConfigMap", o, false),
            _ => {
                return Err(invalid(format!(
                    "workspace {ws:?}: only secret and configMap projected sources are supported locally"
                )))
            }
        };
        let name = o.get("name").and_then(|n| n.as_str()).unwrap_or_default();
        let obj = if secret { cat.secret(name) } else { cat.config_map(name) }.ok_or_else(|| {
            invalid(format!("workspace {ws:?} projects {kind} {name:?}, which is not defined in the repository"))
        })?;
        let data = key_bytes(&obj.spec, secret);
        materialize(base, &data, &items(o), secret)?;
        digests.push(format!("{kind}:{}", data_digest(&data, &items(o))));
    }
    Ok(format!("projected:{}", digests.join(",")))
}

fn mk(base: &Path, sub: Option<&str>) -> Result<PathBuf, Failure> {
    let p = match sub {
        Some(s) => join_sub(base, s)?,
        None => base.to_path_buf(),
    };
    std::fs::create_dir_all(&p)
        .map_err(|e| Failure::new("CreateRunFailed", format!("cannot create {}: {e}", p.display())))?;
    Ok(p)
}

fn materialize(
    dir: &Path,
    data: &BTreeMap<String, Vec<u8>>,
    items: &[crate::model::KeyToPath],
    secret: bool,
) -> Result<(), Failure> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)
        .map_err(|e| Failure::new("CreateRunFailed", format!("cannot create {}: {e}", dir.display())))?;
    if secret {
        crate::retention::register_secret_dir(dir);
    }
    let pairs: Vec<(String, String)> = if items.is_empty() {
        data.keys().map(|k| (k.clone(), k.clone())).collect()
    } else {
        items.iter().map(|i| (i.key.clone(), i.path.clone())).collect()
    };
    for (key, path) in pairs {
        let Some(bytes) = data.get(&key) else {
            return Err(Failure::new(
                "InvalidWorkspaceBindings",
                format!("key {key:?} not found in the bound {}", if secret { "Secret" } else { "ConfigMap" }),
            ));
        };
        let target = join_sub(dir, &path)?;
        if let Some(parent) = target.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        std::fs::write(&target, bytes)
            .map_err(|e| Failure::new("CreateRunFailed", format!("cannot write {}: {e}", target.display())))?;
        let mode = if secret { 0o400 } else { 0o444 };
        let _ = std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A subPath that is (or passes through) a symlink leading out of the volume is
    /// refused like `..`; links that stay inside resolve to the real directory.
    #[test]
    fn sub_paths_never_follow_symlinks_out_of_the_volume() {
        let d = tempfile::tempdir().unwrap();
        let (vol, outside) = (d.path().join("vol"), d.path().join("outside"));
        std::fs::create_dir_all(vol.join("real/deep")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, vol.join("link")).unwrap();
        std::os::unix::fs::symlink("../outside", vol.join("rel")).unwrap();
        std::os::unix::fs::symlink("real", vol.join("inner")).unwrap();
        std::os::unix::fs::symlink("/nonexistent/x", vol.join("dangling")).unwrap();
        for sub in ["link", "link/a/b", "rel", "dangling", "dangling/new"] {
            let e = join_sub(&vol, sub).unwrap_err();
            assert!(e.message.contains("leaves the volume through a symlink"), "{sub}: {}", e.message);
        }
        let real = vol.canonicalize().unwrap().join("real");
        assert_eq!(join_sub(&vol, "inner").unwrap(), real);
        assert_eq!(join_sub(&vol, "inner/deep/new").unwrap(), real.join("deep/new"));
        assert_eq!(join_sub(&vol, "real/deep").unwrap(), vol.join("real/deep"));
        assert_eq!(join_sub(&vol, "not/yet").unwrap(), vol.join("not/yet"));
        assert!(join_sub(&vol, "../x").is_err());
        // the last component of an output path is the output itself, link or not
        assert_eq!(join_sub_but_last(&vol, "link").unwrap(), vol.join("link"));
        assert!(join_sub_but_last(&vol, "link/out").is_err());
    }
}
