//! Moving bytes between the host and a pod: the upload of the TaskRun's files, the download of
//! results and workspaces, and the write-back of what the pod changed.

use super::*;

pub(super) fn upload_tar(plan: &PodPlan) -> Result<(Vec<u8>, Manifests), String> {
    let mut b = tar::Builder::new(Vec::new());
    b.follow_symlinks(false);
    let dir = |b: &mut tar::Builder<Vec<u8>>, p: &str, mode: u32| -> std::io::Result<()> {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(mode);
        h.set_size(0);
        h.set_mtime(0);
        b.append_data(&mut h, p, std::io::empty())
    };
    let io = |e: std::io::Error| format!("cannot build the upload: {e}");
    for d in ["tekton/results", "tekton/steps", "tekton/home", "tekton/scripts", "tekton/run"] {
        dir(&mut b, d, 0o777).map_err(io)?;
    }
    for (i, s) in plan.steps.iter().enumerate() {
        dir(&mut b, &format!("tekton/steps/{}/results", s.cname), 0o777).map_err(io)?;
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        h.set_mode(0o777);
        b.append_link(&mut h, format!("tekton/steps/{i}"), &s.cname).map_err(io)?;
    }
    for (file, body) in &plan.scripts {
        let mut h = tar::Header::new_gnu();
        h.set_size(body.len() as u64);
        h.set_mode(0o755);
        h.set_mtime(0);
        b.append_data(&mut h, format!("tekton/scripts/{file}"), body.as_bytes()).map_err(io)?;
    }
    let mut manifests = BTreeMap::new();
    for c in &plan.copied {
        let mut files = BTreeSet::new();
        if c.host.is_dir() {
            add_tree(&mut b, &c.host, &c.host, &c.stage, &mut files).map_err(io)?;
        }
        manifests.insert(c.stage.clone(), files);
    }
    let bytes = b.into_inner().map_err(io)?;
    Ok((bytes, manifests))
}

pub(super) fn add_tree(
    b: &mut tar::Builder<Vec<u8>>,
    root: &Path,
    dir: &Path,
    stage: &str,
    files: &mut BTreeSet<String>,
) -> std::io::Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.flatten().collect();
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let p = e.path();
        let rel = p.strip_prefix(root).unwrap_or(&p).to_string_lossy().to_string();
        if rel == ".git" {
            continue;
        }
        let ft = e.file_type()?;
        b.append_path_with_name(&p, format!("{stage}/{rel}"))?;
        if ft.is_dir() {
            add_tree(b, root, &p, stage, files)?;
        } else {
            files.insert(rel);
        }
    }
    Ok(())
}

/// Run a command in a container, feeding `input`; returns stdout (stderr in the error).
pub(super) async fn exec(
    pods: &Api<Pod>,
    pod: &str,
    container: &str,
    cmd: Vec<String>,
    input: Option<&[u8]>,
) -> Result<Vec<u8>, String> {
    let ap = AttachParams::default().container(container).stdin(input.is_some()).stdout(true).stderr(true);
    let mut p = pods.exec(pod, cmd, &ap).await.map_err(|e| format!("exec in {pod}/{container}: {}", kube_msg(&e)))?;
    let status = p.take_status();
    let mut stdout = p.stdout().ok_or("exec: no stdout")?;
    let mut stderr = p.stderr().ok_or("exec: no stderr")?;
    let writer = async {
        if let (Some(data), Some(mut w)) = (input, p.stdin()) {
            // the websocket protocol of these clusters cannot close stdin: the command reads
            // exactly the number of bytes it is told (`head -c N`)
            w.write_all(data).await.map_err(|e| format!("exec stdin: {e}"))?;
            w.flush().await.map_err(|e| format!("exec stdin: {e}"))?;
            Ok::<_, String>(Some(w))
        } else {
            Ok(None)
        }
    };
    let mut out = Vec::new();
    let mut err = Vec::new();
    let (w, r1, r2) = tokio::join!(writer, stdout.read_to_end(&mut out), stderr.read_to_end(&mut err));
    let _keep_stdin_open = w?;
    r1.map_err(|e| format!("exec stdout: {e}"))?;
    let _ = r2;
    let st = match status {
        Some(s) => s.await,
        None => None,
    };
    drop(_keep_stdin_open);
    let _ = p.join().await;
    match st {
        Some(s) if s.status.as_deref() == Some("Failure") => Err(format!(
            "command in {pod}/{container} failed: {} {}",
            s.message.unwrap_or_default(),
            String::from_utf8_lossy(&err).trim()
        )),
        _ => Ok(out),
    }
}

impl KubernetesExecutor {
    pub(super) async fn download(&self, name: &str, plan: &PodPlan, dir: &Path) -> Result<PathBuf, String> {
        let mut cmd = vec!["tar".to_string(), "cf".into(), "-".into(), "-C".into(), "/".into()];
        cmd.push("tekton/results".into());
        cmd.push("tekton/steps".into());
        for c in plan.copied.iter().filter(|c| c.write_back) {
            cmd.push(c.stage.clone());
        }
        let bytes = exec(&self.pods, name, HOLDER, cmd, None).await?;
        let _ = std::fs::remove_dir_all(dir);
        std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let mut ar = tar::Archive::new(bytes.as_slice());
        ar.set_preserve_permissions(true);
        ar.set_overwrite(true);
        ar.unpack(dir).map_err(|e| format!("cannot unpack the pod's files: {e}"))?;
        Ok(dir.to_path_buf())
    }
}

/// Apply the pod's copy of a workspace to the host directory: new or changed files are
/// written (unchanged ones are left alone, so parallel tasks writing different files of a
/// shared workspace do not clobber each other), files uploaded and then deleted in the pod
/// are deleted.
pub(super) fn write_back(from: &Path, to: &Path, uploaded: &BTreeSet<String>) -> std::io::Result<()> {
    let mut present = BTreeSet::new();
    if from.is_dir() {
        copy_changed(from, from, to, &mut present)?;
    }
    for rel in uploaded {
        if !present.contains(rel) {
            let p = to.join(rel);
            if std::fs::symlink_metadata(&p).is_ok_and(|m| !m.is_dir()) {
                std::fs::remove_file(&p)?;
            }
        }
    }
    Ok(())
}

pub(super) fn copy_changed(root: &Path, dir: &Path, to: &Path, present: &mut BTreeSet<String>) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)?.flatten() {
        let p = e.path();
        let rel = p.strip_prefix(root).unwrap_or(&p).to_path_buf();
        let dest = to.join(&rel);
        let ft = e.file_type()?;
        if ft.is_dir() {
            // never follow a symlink on the host side: a step could aim it outside the workspace
            if !std::fs::symlink_metadata(&dest).is_ok_and(|m| m.is_dir()) {
                let _ = std::fs::remove_file(&dest);
                std::fs::create_dir_all(&dest)?;
            }
            copy_changed(root, &p, to, present)?;
            continue;
        }
        present.insert(rel.to_string_lossy().to_string());
        if ft.is_symlink() {
            let target = std::fs::read_link(&p)?;
            if std::fs::read_link(&dest).ok().as_ref() != Some(&target) {
                let _ = std::fs::remove_file(&dest);
                std::os::unix::fs::symlink(&target, &dest)?;
            }
            continue;
        }
        let new = std::fs::read(&p)?;
        let dest_is_file = std::fs::symlink_metadata(&dest).is_ok_and(|m| m.is_file());
        if dest_is_file && std::fs::read(&dest).ok().as_ref() == Some(&new) {
            continue;
        }
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let _ = std::fs::remove_file(&dest);
        std::fs::write(&dest, &new)?;
        let mode = std::fs::metadata(&p)?.permissions();
        std::fs::set_permissions(&dest, mode)?;
    }
    Ok(())
}
