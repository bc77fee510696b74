//! The sandbox a step runs in (bubblewrap binds of host directories).

use super::*;

impl Sandbox {
    /// Pick a sandbox for `mode`; `Err` when bwrap was required but cannot be used.
    pub fn detect(mode: SandboxMode) -> Result<Sandbox, String> {
        if mode == SandboxMode::Host {
            return Ok(Sandbox::Host);
        }
        let found = std::env::var_os("TENON_BWRAP").map(PathBuf::from).or_else(|| {
            ["/usr/bin/bwrap", "/usr/local/bin/bwrap", "/bin/bwrap"].iter().map(PathBuf::from).find(|p| p.is_file())
        });
        let Some(bwrap) = found else {
            return match mode {
                SandboxMode::Bwrap => {
                    Err("--sandbox bwrap: bubblewrap (bwrap) is not installed (Debian: apt-get install bubblewrap)"
                        .into())
                }
                _ => Ok(Sandbox::Host),
            };
        };
        let sb = Sandbox::Bwrap { bwrap: bwrap.clone(), binds: host_binds() };
        // probe once: namespaces may be unavailable (containers without privileges)
        let mut probe = std::process::Command::new(&bwrap);
        probe.args(sb.prefix(&[])).arg("--").arg("/bin/true").stdout(Stdio::null()).stderr(Stdio::piped());
        match probe.output() {
            Ok(o) if o.status.success() => Ok(sb),
            Ok(o) if mode == SandboxMode::Bwrap => Err(format!(
                "--sandbox bwrap: bubblewrap does not work here: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            )),
            Err(e) if mode == SandboxMode::Bwrap => {
                Err(format!("--sandbox bwrap: cannot run {}: {e}", bwrap.display()))
            }
            _ => Ok(Sandbox::Host),
        }
    }

    /// [`Sandbox::detect`], remembering a successful bwrap probe in `state_dir` (keyed by
    /// the bwrap binary and the boot), so each invocation does not pay for a probe.
    pub fn detect_cached(mode: SandboxMode, state_dir: &Path) -> Result<Sandbox, String> {
        if mode == SandboxMode::Host {
            return Ok(Sandbox::Host);
        }
        let bwrap = std::env::var_os("TENON_BWRAP").map(PathBuf::from).or_else(|| {
            ["/usr/bin/bwrap", "/usr/local/bin/bwrap", "/bin/bwrap"].iter().map(PathBuf::from).find(|p| p.is_file())
        });
        let key = bwrap.as_ref().and_then(|b| {
            let m = std::fs::metadata(b).ok()?;
            let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
            use std::os::unix::fs::MetadataExt;
            // "v2": the sandbox's arguments changed (read-only host, IPC namespace): probe again
            Some(format!("v2 {} {} {} {}", b.display(), m.mtime(), m.mtime_nsec(), boot.trim()))
        });
        let file = state_dir.join("sandbox-probe");
        if let (Some(k), Some(b)) = (&key, &bwrap) {
            if std::fs::read_to_string(&file).ok().as_deref() == Some(k.as_str()) {
                return Ok(Sandbox::Bwrap { bwrap: b.clone(), binds: host_binds() });
            }
        }
        let sb = Sandbox::detect(mode)?;
        if let (true, Some(k)) = (sb.is_bwrap(), key) {
            let _ = std::fs::write(&file, k);
        }
        Ok(sb)
    }

    /// Why `mode` gave host paths: the user's choice, or why bubblewrap cannot be used.
    pub fn host_reason(mode: SandboxMode) -> String {
        if mode == SandboxMode::Host {
            return "--sandbox host runs steps with host paths".into();
        }
        match Sandbox::detect(SandboxMode::Bwrap) {
            Err(e) => e.trim_start_matches("--sandbox bwrap: ").to_string(),
            Ok(_) => "bubblewrap was not usable when tenon started".into(),
        }
    }

    pub fn is_bwrap(&self) -> bool {
        matches!(self, Sandbox::Bwrap { .. })
    }

    /// bwrap arguments before the per-step binds.
    pub(super) fn prefix(&self, extra: &[String]) -> Vec<String> {
        let Sandbox::Bwrap { binds, .. } = self else { return vec![] };
        let mut a: Vec<String> = ["--die-with-parent", "--unshare-pid", "--unshare-ipc", "--tmpfs", "/"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        a.extend(binds.iter().cloned());
        a.extend(
            ["--proc", "/proc", "--dev", "/dev", "--tmpfs", "/tmp", "--tmpfs", "/var/tmp"]
                .iter()
                .map(|s| s.to_string()),
        );
        a.extend(extra.iter().cloned());
        a
    }

    /// Whether a step sees host path `p` (outside the pod's own mounts) in this sandbox.
    pub(super) fn sees(&self, p: &Path) -> bool {
        match self {
            Sandbox::Host => true,
            Sandbox::Bwrap { .. } => HOST_DIRS.iter().any(|d| p.starts_with(format!("/{d}"))),
        }
    }
}

/// Top-level host directories a step sees in the bwrap sandbox, read-only: the ones an
/// image provides (the merged-/usr links `/bin`, `/lib`, ... are recreated as links).
pub const HOST_DIRS: &[&str] = &["usr", "bin", "sbin", "lib", "lib32", "lib64", "libx32", "opt"];

/// The entries of the host's `/etc` a step sees, read-only: users, name resolution,
/// certificates, the dynamic linker, locale and shell defaults, `alternatives` (what
/// `/usr/bin/python3` and friends point at). Never shadow files, ssh keys or credentials.
pub const HOST_ETC: &[&str] = &[
    "alternatives",
    "bash.bashrc",
    "ca-certificates",
    "ca-certificates.conf",
    "debian_version",
    "environment",
    "gai.conf",
    "group",
    "host.conf",
    "hostname",
    "hosts",
    "inputrc",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "locale.alias",
    "localtime",
    "login.defs",
    "magic",
    "magic.mime",
    "mime.types",
    "networks",
    "nsswitch.conf",
    "os-release",
    "passwd",
    "pki",
    "profile",
    "profile.d",
    "protocols",
    "python3",
    "resolv.conf",
    "services",
    "shells",
    "ssl",
    "terminfo",
    "timezone",
];

/// The host paths the bwrap sandbox binds (see [`HOST_DIRS`], [`HOST_ETC`]), all read-only.
pub(super) fn host_binds() -> Vec<String> {
    let mut out = Vec::new();
    for n in HOST_DIRS {
        let p = format!("/{n}");
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.file_type().is_symlink() => {
                if let Ok(t) = std::fs::read_link(&p) {
                    out.extend(["--symlink".to_string(), t.display().to_string(), p]);
                }
            }
            Ok(m) if m.is_dir() => out.extend(["--ro-bind".to_string(), p.clone(), p]),
            _ => {}
        }
    }
    out.extend(["--dir".to_string(), "/etc".to_string()]);
    let mut etc: Vec<String> = std::fs::read_dir("/etc")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        // python3.11 and the like hold the interpreter's site configuration
        .filter(|n| HOST_ETC.contains(&n.as_str()) || n.starts_with("python3."))
        .collect();
    etc.sort();
    for n in etc {
        let p = format!("/etc/{n}");
        // a dangling link (resolv.conf of a resolver that is not running) is left out
        out.extend(["--ro-bind-try".to_string(), p.clone(), p]);
    }
    out.extend(["--ro-bind-try".to_string(), "/sys".to_string(), "/sys".to_string()]);
    out
}
