//! Credentials and the registry's authentication challenge.
//!
//! Sources, first match wins: an explicit credentials file (Docker `config.json` format), else
//! `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`; in each, `credHelpers[host]`, then
//! `auths[host]` (base64 `auth` or `username`/`password`), then `credsStore`. A helper is run as
//! `docker-credential-NAME get` with the host on stdin. No match: anonymous.
//!
//! Secrets live only in [`Credentials`], whose `Debug` is redacted, and in the `Authorization`
//! header the client builds from them; no error carries them.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine as _;
use serde::Deserialize;

use super::OciError;

/// A username and a secret (password or token) for one registry.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials").field("username", &"<redacted>").field("password", &"<redacted>").finish()
    }
}

impl Credentials {
    pub fn new(username: impl Into<String>, password: impl Into<String>) -> Credentials {
        Credentials { username: username.into(), password: password.into() }
    }

    /// `Basic base64(user:password)`.
    pub(crate) fn basic_header(&self) -> String {
        let raw = format!("{}:{}", self.username, self.password);
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw))
    }
}

#[derive(Deserialize, Default)]
struct DockerConfig {
    #[serde(default)]
    auths: std::collections::BTreeMap<String, AuthEntry>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: std::collections::BTreeMap<String, String>,
}

#[derive(Deserialize, Default)]
struct AuthEntry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// Where credentials come from.
#[derive(Debug, Clone, Default)]
pub enum CredentialSource {
    /// None: anonymous.
    Anonymous,
    /// These credentials, for every request to the registry.
    Explicit(Credentials),
    /// A Docker-format `config.json` named by the user (a missing file is an error).
    File(PathBuf),
    /// `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json` (missing: anonymous).
    #[default]
    DockerConfig,
}

impl CredentialSource {
    /// The credentials for `registry` (`host[:port]`), or `None` for anonymous.
    pub fn resolve(&self, registry: &str) -> Result<Option<Credentials>, OciError> {
        match self {
            CredentialSource::Anonymous => Ok(None),
            CredentialSource::Explicit(c) => Ok(Some(c.clone())),
            CredentialSource::File(p) => from_config_file(p, registry, true),
            CredentialSource::DockerConfig => match default_docker_config() {
                Some(p) => from_config_file(&p, registry, false),
                None => Ok(None),
            },
        }
    }
}

fn default_docker_config() -> Option<PathBuf> {
    if let Some(d) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(d).join("config.json"));
    }
    std::env::var_os("HOME").filter(|h| !h.is_empty()).map(|h| PathBuf::from(h).join(".docker").join("config.json"))
}

fn from_config_file(path: &Path, registry: &str, required: bool) -> Result<Option<Credentials>, OciError> {
    let origin = path.display().to_string();
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => return Ok(None),
        Err(e) => {
            return Err(OciError::Io { context: "reading registry credentials", path: path.to_path_buf(), source: e })
        }
    };
    // serde_json's messages quote no input values, only positions and expectations.
    let cfg: DockerConfig = serde_json::from_slice(&text).map_err(|e| OciError::Credentials {
        origin: origin.clone(),
        reason: format!("not a Docker config.json: {e}"),
    })?;
    lookup(&cfg, registry, &origin)
}

/// `https://host:port/v1/` and `host:port` name the same registry.
fn normalise_host(key: &str) -> &str {
    let k = key.strip_prefix("https://").or_else(|| key.strip_prefix("http://")).unwrap_or(key);
    k.split('/').next().unwrap_or(k)
}

fn lookup(cfg: &DockerConfig, registry: &str, origin: &str) -> Result<Option<Credentials>, OciError> {
    let matches = |k: &String| normalise_host(k).eq_ignore_ascii_case(registry);
    if let Some((_, helper)) = cfg.cred_helpers.iter().find(|(k, _)| matches(k)) {
        return run_helper(helper, registry);
    }
    if let Some((_, entry)) = cfg.auths.iter().find(|(k, _)| matches(k)) {
        let bad = |reason: &str| OciError::Credentials {
            origin: origin.to_string(),
            reason: format!("auths[{registry}]: {reason}"),
        };
        if let Some(a) = entry.auth.as_deref().filter(|a| !a.is_empty()) {
            let raw =
                base64::engine::general_purpose::STANDARD.decode(a.trim()).map_err(|_| bad("`auth` is not base64"))?;
            let raw = String::from_utf8(raw).map_err(|_| bad("`auth` is not UTF-8"))?;
            let (u, p) = raw.split_once(':').ok_or_else(|| bad("`auth` is not base64(user:password)"))?;
            return Ok(Some(Credentials::new(u, p)));
        }
        if let (Some(u), Some(p)) = (&entry.username, &entry.password) {
            return Ok(Some(Credentials::new(u.clone(), p.clone())));
        }
        // An entry without secrets (e.g. written next to a credsStore): fall through.
    }
    if let Some(store) = cfg.creds_store.as_deref().filter(|s| !s.is_empty()) {
        return run_helper(store, registry);
    }
    Ok(None)
}

#[derive(Deserialize)]
struct HelperReply {
    #[serde(rename = "Username")]
    username: String,
    #[serde(rename = "Secret")]
    secret: String,
}

/// `docker-credential-NAME get`, host on stdin, JSON `{Username, Secret}` on stdout. "not found"
/// (exit 1 with that text) means anonymous. The helper's output is never quoted in errors.
fn run_helper(name: &str, registry: &str) -> Result<Option<Credentials>, OciError> {
    let program = format!("docker-credential-{name}");
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')) {
        return Err(OciError::Credentials {
            origin: format!("credential helper {program}"),
            reason: "invalid helper name".into(),
        });
    }
    run_helper_program(Path::new(&program), registry)
}

fn run_helper_program(program: &Path, registry: &str) -> Result<Option<Credentials>, OciError> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let origin = format!("credential helper {}", program.display());
    let err = |reason: String| OciError::Credentials { origin: origin.clone(), reason };
    let mut child = Command::new(program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| err(format!("cannot run it: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(registry.as_bytes());
    }
    // Bounded: a helper that waits for a GUI prompt must not hang tenon.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if std::time::Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(err("no answer within 20 s".into()));
            }
            Err(e) => return Err(err(format!("waiting for it: {e}"))),
        }
    }
    let out = child.wait_with_output().map_err(|e| err(format!("reading its output: {e}")))?;
    if !out.status.success() {
        if String::from_utf8_lossy(&out.stdout).to_ascii_lowercase().contains("not found") {
            return Ok(None);
        }
        return Err(err(format!("exited with {}", out.status)));
    }
    let reply: HelperReply = serde_json::from_slice(&out.stdout)
        .map_err(|_| err("its output is not {\"Username\", \"Secret\"} JSON".into()))?;
    if reply.username == "<token>" {
        return Err(err("returned an identity token (OAuth refresh token), which is not supported".into()));
    }
    Ok(Some(Credentials::new(reply.username, reply.secret)))
}

/// A parsed `WWW-Authenticate` challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Challenge {
    Basic,
    Bearer { realm: String, service: Option<String>, scope: Option<String> },
}

/// Parse `Basic realm="x"` or `Bearer realm="https://auth/token",service="reg",scope="repository:a:pull"`.
pub(crate) fn parse_challenge(header: &str) -> Option<Challenge> {
    let header = header.trim();
    let (scheme, params) = header.split_once(char::is_whitespace).unwrap_or((header, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut realm = None;
    let mut service = None;
    let mut scope = None;
    let mut rest = params.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let key = key.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let after = after.trim_start();
        let (value, next) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"')?;
            (&q[..end], &q[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        match key.as_str() {
            "realm" => realm = Some(value.to_string()),
            "service" => service = Some(value.to_string()),
            "scope" => scope = Some(value.to_string()),
            _ => {}
        }
        rest = next.trim_start().trim_start_matches(',').trim_start();
    }
    Some(Challenge::Bearer { realm: realm?, service, scope })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(json: &str) -> DockerConfig {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn docker_config_auths() {
        let b64 = base64::engine::general_purpose::STANDARD.encode("alice:pw:with:colons");
        let c = cfg(&format!(
            r#"{{"auths": {{"https://reg.example:5000/v1/": {{"auth": "{b64}"}},
                                  "other": {{"username": "bob", "password": "pw2"}}}}}}"#
        ));
        assert_eq!(lookup(&c, "reg.example:5000", "f").unwrap(), Some(Credentials::new("alice", "pw:with:colons")));
        assert_eq!(lookup(&c, "other", "f").unwrap(), Some(Credentials::new("bob", "pw2")));
        assert_eq!(lookup(&c, "nowhere", "f").unwrap(), None);
        let e = lookup(&cfg(r#"{"auths": {"h": {"auth": "%%%"}}}"#), "h", "f").unwrap_err().to_string();
        assert!(e.contains("not base64") && !e.contains("%%%"), "{e}");
    }

    #[test]
    fn missing_helper_is_a_clear_error() {
        let c = cfg(r#"{"credHelpers": {"h:1": "tenon-test-no-such-helper"}}"#);
        let e = lookup(&c, "h:1", "f").unwrap_err().to_string();
        assert!(e.contains("docker-credential-tenon-test-no-such-helper"), "{e}");
    }

    #[test]
    fn credential_helper_protocol() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let helper = |name: &str, script: &str| {
            let p = dir.path().join(name);
            std::fs::write(&p, format!("#!/bin/sh\n{script}\n")).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
            p
        };
        // the host arrives on stdin; the answer is {Username, Secret}
        let ok = helper(
            "ok",
            r#"read host; [ "$host" = "reg.example:5000" ] || exit 3; echo '{"ServerURL":"x","Username":"u","Secret":"helper-secret"}'"#,
        );
        let missing = helper("missing", "echo 'credentials not found in native keychain'; exit 1");
        let garbage = helper("garbage", "echo 'Secret: leaked-value'");
        let token = helper("token", r#"echo '{"Username":"<token>","Secret":"refresh"}'"#);
        // a process forked by another test while a script was open for writing holds it until
        // its exec; give such children time, or exec fails with ETXTBSY
        std::thread::sleep(std::time::Duration::from_millis(100));
        assert_eq!(run_helper_program(&ok, "reg.example:5000").unwrap(), Some(Credentials::new("u", "helper-secret")));
        let e = run_helper_program(&ok, "other").unwrap_err().to_string();
        assert!(e.contains("exited") && !e.contains("helper-secret"), "{e}");
        // "credentials not found in native keychain": anonymous
        assert_eq!(run_helper_program(&missing, "h").unwrap(), None);
        // garbage output is an error that does not quote it
        let e = run_helper_program(&garbage, "h").unwrap_err().to_string();
        assert!(!e.contains("leaked-value"), "{e}");
        assert!(run_helper_program(&token, "h").unwrap_err().to_string().contains("identity token"));
    }

    #[test]
    fn credentials_debug_is_redacted() {
        let s = format!("{:?}", Credentials::new("alice", "hunter2"));
        assert!(!s.contains("hunter2") && !s.contains("alice"), "{s}");
    }

    #[test]
    fn challenges() {
        assert_eq!(parse_challenge("Basic realm=\"tenon-test\""), Some(Challenge::Basic));
        assert_eq!(
            parse_challenge(
                r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push""#
            ),
            Some(Challenge::Bearer {
                realm: "https://auth.example/token".into(),
                service: Some("registry.example".into()),
                scope: Some("repository:a/b:pull,push".into()),
            })
        );
        assert_eq!(
            parse_challenge("Bearer realm=https://a/t, service=s"),
            Some(Challenge::Bearer { realm: "https://a/t".into(), service: Some("s".into()), scope: None })
        );
        assert_eq!(parse_challenge("Negotiate x"), None);
        assert_eq!(parse_challenge("Bearer service=\"x\""), None);
    }
}
