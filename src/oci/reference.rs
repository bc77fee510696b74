//! Names: the `oci://` repository URL, tags and `sha256:` digests, all checked client-side
//! (Distribution 2.8 answers an over-long tag with a bare 404, which reads like a miss).

use std::fmt;

use sha2::{Digest as _, Sha256};

use super::OciError;

/// A repository in a registry: `oci://host[:port]/path` (HTTPS) or `oci+http://host:port/path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoUrl {
    /// `https` or `http`.
    pub scheme: &'static str,
    /// `host` or `host:port` (IPv6 in brackets), as written (lower-cased).
    pub registry: String,
    /// The repository path, e.g. `tenon/cache`.
    pub repository: String,
    /// `?mode=ro` / `?mode=rw` when given.
    pub read_only: Option<bool>,
}

impl RepoUrl {
    /// Parse an `oci://` or `oci+http://` URL. Userinfo (`user:pass@`) is refused without being
    /// echoed: credentials belong in the Docker config or a credentials file, not in a URL that
    /// ends up in logs.
    pub fn parse(input: &str) -> Result<RepoUrl, OciError> {
        let bad = |shown: &str, reason: &str| OciError::InvalidReference {
            input: shown.to_string(),
            reason: reason.to_string(),
        };
        let (scheme, rest) = if let Some(r) = input.strip_prefix("oci://") {
            ("https", r)
        } else if let Some(r) = input.strip_prefix("oci+http://") {
            ("http", r)
        } else if let Some(r) = input.strip_prefix("oci+https://") {
            ("https", r)
        } else {
            return Err(bad(input, "expected oci://host[:port]/repository or oci+http://host:port/repository"));
        };
        let (rest, query) = match rest.split_once('?') {
            Some((r, q)) => (r, Some(q)),
            None => (rest, None),
        };
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        if authority.contains('@') {
            let shown = format!("{}{}", &input[..input.len() - rest.len()], "<redacted>@…");
            return Err(bad(
                &shown,
                "credentials in the URL are not accepted; use the Docker config or a credentials file",
            ));
        }
        if authority.is_empty() {
            return Err(bad(input, "missing registry host"));
        }
        validate_authority(authority).map_err(|r| bad(input, &r))?;
        let repository = path.trim_end_matches('/');
        validate_repository(repository).map_err(|r| bad(input, &r))?;
        let read_only = match query {
            None | Some("") => None,
            Some("mode=ro") => Some(true),
            Some("mode=rw") => Some(false),
            Some(_) => return Err(bad(input, "the only query accepted is ?mode=ro or ?mode=rw")),
        };
        Ok(RepoUrl { scheme, registry: authority.to_ascii_lowercase(), repository: repository.to_string(), read_only })
    }

    /// `https://host:port` (no trailing slash).
    pub fn base(&self) -> String {
        format!("{}://{}", self.scheme, self.registry)
    }

    /// The same registry, another repository (for cross-repository mounts).
    pub fn with_repository(&self, repository: &str) -> Result<RepoUrl, OciError> {
        validate_repository(repository)
            .map_err(|reason| OciError::InvalidReference { input: repository.to_string(), reason })?;
        Ok(RepoUrl { repository: repository.to_string(), ..self.clone() })
    }
}

impl fmt::Display for RepoUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.scheme == "http" { "oci+http" } else { "oci" };
        write!(f, "{scheme}://{}/{}", self.registry, self.repository)
    }
}

fn validate_authority(a: &str) -> Result<(), String> {
    let (host, port) = if let Some(v6) = a.strip_prefix('[') {
        let (h, after) = v6.split_once(']').ok_or("unclosed '[' in IPv6 host")?;
        if h.is_empty() || !h.chars().all(|c| c.is_ascii_hexdigit() || c == ':' || c == '.') {
            return Err("invalid IPv6 host".into());
        }
        (h, after.strip_prefix(':'))
    } else {
        match a.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (a, None),
        }
    };
    if host.is_empty() || !host.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == ':') {
        return Err(format!("invalid registry host {host:?}"));
    }
    if let Some(p) = port {
        if p.parse::<u16>().map_or(true, |n| n == 0) {
            return Err(format!("invalid port {p:?}"));
        }
    }
    Ok(())
}

/// The distribution spec's repository grammar:
/// `[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*`.
pub fn validate_repository(r: &str) -> Result<(), String> {
    if r.is_empty() {
        return Err("missing repository path (oci://host/REPOSITORY)".into());
    }
    if r.len() > 255 {
        return Err("repository path longer than 255 characters".into());
    }
    for comp in r.split('/') {
        let b = comp.as_bytes();
        let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
        let ok = !b.is_empty() && alnum(b[0]) && alnum(b[b.len() - 1]) && {
            // separators: '.', '_', '__', or any run of '-'
            let mut ok = true;
            let mut i = 0;
            while i < b.len() {
                if alnum(b[i]) {
                    i += 1;
                    continue;
                }
                let start = i;
                while i < b.len() && !alnum(b[i]) {
                    i += 1;
                }
                let sep = &comp[start..i];
                if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|c| c == b'-')) {
                    ok = false;
                }
            }
            ok
        };
        if !ok {
            return Err(format!(
                "repository component {comp:?} must be lower-case letters and digits, separated by '.', '_', '__' or '-'"
            ));
        }
    }
    Ok(())
}

/// Tags: `[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}` (Distribution 2.8 answers a longer one with 404).
pub fn validate_tag(tag: &str) -> Result<(), OciError> {
    let b = tag.as_bytes();
    let ok = !b.is_empty()
        && b.len() <= 128
        && (b[0].is_ascii_alphanumeric() || b[0] == b'_')
        && b.iter().all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(OciError::InvalidReference {
            input: tag.chars().take(140).collect(),
            reason: "a tag is 1 to 128 of [A-Za-z0-9_.-] and starts with a letter, digit or '_'".into(),
        })
    }
}

/// A `sha256:<64 lower-case hex>` content digest, the only algorithm tenon reads or writes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest(String);

impl Digest {
    pub fn parse(s: &str) -> Result<Digest, OciError> {
        let hex = s.strip_prefix("sha256:").unwrap_or("");
        if crate::util::is_sha256_hex(hex) {
            Ok(Digest(s.to_string()))
        } else {
            Err(OciError::InvalidReference {
                input: s.chars().take(80).collect(),
                reason: "expected sha256:<64 lower-case hex digits>".into(),
            })
        }
    }

    /// From tenon's bare 64-hex object digests.
    pub fn from_hex(hex: &str) -> Result<Digest, OciError> {
        Digest::parse(&format!("sha256:{hex}"))
    }

    pub fn of_bytes(bytes: &[u8]) -> Digest {
        Digest::from_hasher(Sha256::new_with_prefix(bytes))
    }

    pub fn from_hasher(h: Sha256) -> Digest {
        Digest(format!("sha256:{}", crate::hash::hex(&h.finalize())))
    }

    /// `sha256:<hex>`
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The 64 hex digits.
    pub fn hex(&self) -> &str {
        &self.0["sha256:".len()..]
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What a manifest request names: a tag or a digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManifestRef {
    Tag(String),
    Digest(Digest),
}

impl ManifestRef {
    pub fn tag(t: &str) -> Result<ManifestRef, OciError> {
        validate_tag(t)?;
        Ok(ManifestRef::Tag(t.to_string()))
    }

    pub fn as_str(&self) -> &str {
        match self {
            ManifestRef::Tag(t) => t,
            ManifestRef::Digest(d) => d.as_str(),
        }
    }
}

impl From<Digest> for ManifestRef {
    fn from(d: Digest) -> Self {
        ManifestRef::Digest(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_oci_urls() {
        let u = RepoUrl::parse("oci://Registry.example:5000/tenon/cache").unwrap();
        assert_eq!(
            (u.scheme, u.registry.as_str(), u.repository.as_str()),
            ("https", "registry.example:5000", "tenon/cache")
        );
        assert_eq!(u.base(), "https://registry.example:5000");
        assert_eq!(u.to_string(), "oci://registry.example:5000/tenon/cache");
        let u = RepoUrl::parse("oci+http://127.0.0.1:5000/a/b-c/d__e?mode=ro").unwrap();
        assert_eq!((u.scheme, u.read_only), ("http", Some(true)));
        assert_eq!(u.to_string(), "oci+http://127.0.0.1:5000/a/b-c/d__e");
        let u = RepoUrl::parse("oci://[::1]:5000/x").unwrap();
        assert_eq!(u.registry, "[::1]:5000");
        for bad in [
            "http://h/x",
            "oci://h",
            "oci://h/",
            "oci:///x",
            "oci://h:0/x",
            "oci://h:99999/x",
            "oci://h/Upper",
            "oci://h/a//b",
            "oci://h/a/-b",
            "oci://h/a?mode=yes",
            "oci://h:x/a",
        ] {
            assert!(RepoUrl::parse(bad).is_err(), "{bad} should be rejected");
        }
    }

    #[test]
    fn userinfo_is_refused_and_never_echoed() {
        let e = RepoUrl::parse("oci://alice:s3cr3t-pw@host:5000/repo").unwrap_err().to_string();
        assert!(!e.contains("s3cr3t-pw") && !e.contains("alice"), "{e}");
        assert!(e.contains("credentials in the URL"), "{e}");
    }

    #[test]
    fn tags_and_digests() {
        assert!(validate_tag(&format!("r1-{}", "a".repeat(64))).is_ok());
        assert!(validate_tag(&"a".repeat(128)).is_ok());
        assert!(validate_tag(&"a".repeat(129)).is_err());
        assert!(validate_tag("-x").is_err() && validate_tag(".x").is_err() && validate_tag("").is_err());
        assert!(validate_tag("a/b").is_err());
        let d = Digest::of_bytes(b"{}");
        assert_eq!(d.as_str(), "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a");
        assert_eq!(Digest::from_hex(d.hex()).unwrap(), d);
        assert!(Digest::parse("sha256:ABC").is_err());
        assert!(Digest::parse("sha512:aa").is_err());
    }
}
