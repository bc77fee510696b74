//! How tenon proves who it is: credentials and strict host-key checks for the target
//! remote (libgit2 callbacks), and SSH signatures of its commits.

use std::path::Path;

use super::{Credentials, GitError, HOST_KEY_REFUSED};

pub fn callbacks<'a>(c: &'a Credentials, url: &str) -> git2::RemoteCallbacks<'a> {
    let mut cb = git2::RemoteCallbacks::new();
    HOST_KEY_REFUSED.with(|w| w.borrow_mut().take());
    let mut tries = 0;
    cb.credentials(move |_url, user, allowed| {
        tries += 1;
        if tries > 3 {
            return Err(git2::Error::new(git2::ErrorCode::Auth, git2::ErrorClass::Net, "authentication failed"));
        }
        if allowed.contains(git2::CredentialType::SSH_KEY) {
            if let Some(k) = &c.ssh_key {
                return git2::Cred::ssh_key(user.unwrap_or("git"), None, k, None);
            }
        }
        if allowed.contains(git2::CredentialType::USER_PASS_PLAINTEXT) {
            if let Some(t) = &c.token {
                return git2::Cred::userpass_plaintext(c.username.as_deref().unwrap_or("x-access-token"), t);
            }
        }
        if allowed.contains(git2::CredentialType::DEFAULT) {
            return git2::Cred::default();
        }
        Err(git2::Error::new(git2::ErrorCode::Auth, git2::ErrorClass::Net, "no credentials configured for this remote"))
    });
    if let Some(kh) = c.known_hosts.clone() {
        let port = ssh_port(url);
        cb.certificate_check(move |cert, host| {
            // strict: the host key must be trusted by the given known_hosts file
            let Some(hk) = cert.as_hostkey() else { return Ok(git2::CertificateCheckStatus::CertificatePassthrough) };
            let untrusted = |why: String| git2::Error::new(git2::ErrorCode::Certificate, git2::ErrorClass::Ssh, why);
            let Some(key) = hk.hostkey() else { return Err(untrusted(format!("{host} sent no host key"))) };
            if let Err(why) = crate::promote::known_hosts::check(&kh, host, port, key) {
                HOST_KEY_REFUSED.with(|w| *w.borrow_mut() = Some(why.clone()));
                return Err(untrusted(why));
            }
            Ok(git2::CertificateCheckStatus::CertificateOk)
        });
    }
    cb
}

/// The SSH port of a remote URL (`ssh://[user@]host[:port]/path`; scp-like `host:path`
/// and everything else: 22).
pub(super) fn ssh_port(url: &str) -> u16 {
    let Some((scheme, rest)) = url.split_once("://") else { return 22 };
    if !scheme.contains("ssh") {
        return 22;
    }
    let authority = rest.split('/').next().unwrap_or("");
    let hostport = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let port = match hostport.strip_prefix('[') {
        Some(v6) => v6.split_once("]:").map(|(_, p)| p),
        None => hostport.split_once(':').map(|(_, p)| p),
    };
    port.and_then(|p| p.parse().ok()).unwrap_or(22)
}

/// An SSH signature of `data` in git's format (`ssh-keygen -Y sign -n git`, as git does
/// with gpg.format=ssh).
pub(super) fn ssh_sign(key: &Path, data: &[u8]) -> Result<String, GitError> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let fail = |m: String| GitError::Git { message: format!("cannot sign with {}: {m}", key.display()) };
    let mut child = Command::new("ssh-keygen")
        .args(["-Y", "sign", "-n", "git", "-f"])
        .arg(key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| fail(format!("ssh-keygen: {e}")))?;
    let mut stdin = child.stdin.take().expect("piped");
    let data = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
    let _ = writer.join();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() || !text.contains("BEGIN SSH SIGNATURE") {
        let err = String::from_utf8_lossy(&out.stderr);
        return Err(fail(err.lines().last().unwrap_or("ssh-keygen failed").to_string()));
    }
    Ok(text)
}
