//! Strict SSH host key checking against a known_hosts file in OpenSSH's format, read with
//! the `ssh-key` crate: plain host patterns (`host`, `[host]:port`, `*`/`?` wildcards,
//! `!negations`), hashed names (`|1|salt|hash`, as `HashKnownHosts yes` writes them),
//! `@revoked` keys (refused) and `@cert-authority` lines (host certificates are not
//! checked by tenon: refused with a message saying so).

use std::path::Path;

use ssh_key::known_hosts::{Entry, HostPatterns, Marker};

/// The name OpenSSH looks up for `host` on `port`: `host`, or `[host]:port` off port 22.
fn lookup_name(host: &str, port: u16) -> String {
    let host = host.to_ascii_lowercase();
    if port == 22 {
        host
    } else {
        format!("[{host}]:{port}")
    }
}

/// `*` and `?` wildcards, ASCII case-insensitive (OpenSSH's `match_pattern`).
fn wildcard(pattern: &[u8], text: &[u8]) -> bool {
    let (mut p, mut t) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        match pattern.get(p) {
            Some(b'*') => {
                star = Some((p, t));
                p += 1;
            }
            Some(&c) if c == b'?' || c.eq_ignore_ascii_case(&text[t]) => {
                p += 1;
                t += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    p = sp + 1;
                    t = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

/// Whether an entry's host field names `name`.
fn names(patterns: &HostPatterns, name: &str) -> bool {
    match patterns {
        HostPatterns::HashedName { salt, hash } => {
            use hmac::Mac;
            let Ok(mut mac) = hmac::Hmac::<sha1::Sha1>::new_from_slice(salt) else { return false };
            mac.update(name.as_bytes());
            mac.verify_slice(hash).is_ok()
        }
        HostPatterns::Patterns(list) => {
            let mut hit = false;
            for p in list {
                match p.strip_prefix('!') {
                    Some(neg) if wildcard(neg.as_bytes(), name.as_bytes()) => return false,
                    Some(_) => {}
                    None => hit |= wildcard(p.as_bytes(), name.as_bytes()),
                }
            }
            hit
        }
    }
}

/// Check the host key `key` (SSH wire encoding, as the server sent it) of `host` on
/// `port` against the known_hosts `file`. The error says why it is not trusted.
pub fn check(file: &Path, host: &str, port: u16, key: &[u8]) -> Result<(), String> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("cannot read the known_hosts file {}: {e}", file.display()))?;
    let name = lookup_name(host, port);
    let (mut trusted, mut other_key, mut cert_authority, mut unreadable) = (false, false, None, Vec::new());
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let entry: Entry = match line.parse() {
            Ok(e) => e,
            Err(e) => {
                unreadable.push(format!("line {}: {e}", i + 1));
                continue;
            }
        };
        if !names(entry.host_patterns(), &name) {
            continue;
        }
        let same = entry.public_key().to_bytes().is_ok_and(|b| b == key);
        match entry.marker() {
            Some(Marker::Revoked) if same => {
                return Err(format!(
                    "the host key of {name} is marked @revoked in {}:{}; refusing to connect",
                    file.display(),
                    i + 1
                ))
            }
            Some(Marker::Revoked) => {}
            Some(Marker::CertAuthority) => cert_authority = cert_authority.or(Some(i + 1)),
            None if same => trusted = true,
            None => other_key = true,
        }
    }
    if trusted {
        return Ok(());
    }
    let fingerprint = ssh_key::PublicKey::from_bytes(key)
        .map(|k| format!(" ({} {})", k.algorithm(), k.fingerprint(ssh_key::HashAlg::Sha256)))
        .unwrap_or_default();
    let mut why = match cert_authority {
        Some(line) => format!(
            "{}:{line} trusts a @cert-authority for {name}, but tenon checks host keys, not host certificates: add the host key of {name}{fingerprint} to the known_hosts file",
            file.display()
        ),
        None if other_key => format!(
            "the host key of {name}{fingerprint} differs from the one in the known_hosts file {} (changed host key?)",
            file.display()
        ),
        None => format!("the host key of {name}{fingerprint} is not in the known_hosts file {}", file.display()),
    };
    if !unreadable.is_empty() {
        why.push_str(&format!("; {} line(s) could not be read ({})", unreadable.len(), unreadable.join("; ")));
    }
    Err(why)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_and_negations() {
        let pats = |s: &str| HostPatterns::Patterns(s.split(',').map(String::from).collect());
        assert!(names(&pats("git.example.com"), "git.example.com"));
        assert!(names(&pats("*.example.com,!bad.example.com"), "git.example.com"));
        assert!(!names(&pats("*.example.com,!bad.example.com"), "bad.example.com"));
        assert!(names(&pats("[127.0.0.?]:2222"), "[127.0.0.1]:2222"));
        assert!(!names(&pats("[127.0.0.1]:2222"), "[127.0.0.1]:2223"));
        assert!(!names(&pats("127.0.0.1"), "[127.0.0.1]:2222"));
        assert!(names(&pats("GIT.example.COM"), "git.example.com"));
        assert!(!wildcard(b"a*b*c", b"aXbXd") && wildcard(b"a*b*c", b"aXbXbc"));
    }

    /// `|1|salt|hash` is HMAC-SHA1(salt, name) of exactly the looked-up name (the test
    /// against `ssh-keygen -H` output is in tests/promote.rs, with a real sshd).
    #[test]
    fn hashed_names() {
        use hmac::Mac;
        let salt = b"0123456789abcdefghij".to_vec();
        let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(&salt).unwrap();
        mac.update(b"[127.0.0.1]:2222");
        let hash: [u8; 20] = mac.finalize().into_bytes().into();
        let h = HostPatterns::HashedName { salt, hash };
        assert!(names(&h, "[127.0.0.1]:2222"));
        assert!(!names(&h, "[127.0.0.1]:2223"));
        assert!(!names(&h, "127.0.0.1"));
    }
}
