//! The registry client's one error type.
//!
//! Every variant is built from values tenon chose (the registry's host and repository, a
//! digest, an operation name, a status code, the registry's error code and a bounded excerpt of
//! its message) or from I/O errors on local paths. None holds a username, password, token,
//! `Authorization` header or credential-helper output, so `Display` and `Debug` cannot leak them
//! (tested in `tests/oci_client.rs` and below).

use std::path::PathBuf;
use std::time::Duration;

/// What went wrong talking to an OCI registry.
#[derive(Debug, thiserror::Error)]
pub enum OciError {
    /// The `oci://` / `oci+http://` URL, a tag, a digest or a repository name is malformed.
    #[error("invalid registry reference {input:?}: {reason}")]
    InvalidReference { input: String, reason: String },

    /// The registry could not be reached: connection refused, DNS, TLS handshake.
    #[error("registry {registry} unreachable during {op}: {reason}")]
    Unreachable { registry: String, op: String, reason: String },

    /// No progress within the configured idle timeout (or no connection within the connect timeout).
    #[error("registry {registry}: {op} timed out (no progress for {after:?})")]
    Timeout { registry: String, op: String, after: Duration },

    /// 401 after the authentication flow (missing or wrong credentials).
    #[error("registry {registry}: {op} unauthorized (401): {detail}")]
    Unauthorized { registry: String, op: String, detail: String },

    /// 403: the credentials are valid but may not do this.
    #[error("registry {registry}: {op} forbidden (403): {detail}")]
    Forbidden { registry: String, op: String, detail: String },

    /// 405 to a write: the registry (or this repository) is read-only.
    #[error("registry {registry} refuses writes ({op}: 405 Method Not Allowed); is it read-only?")]
    ReadOnly { registry: String, op: String },

    /// A manifest or blob that must exist does not.
    #[error("registry {registry}: {what} not found")]
    NotFound { registry: String, what: String },

    /// The bytes received do not hash to the digest asked for. The partial data was discarded.
    #[error("registry {registry}: content of {expected} does not match its digest (got {actual}); discarded")]
    DigestMismatch { registry: String, expected: String, actual: String },

    /// More or fewer bytes than announced or allowed.
    #[error("registry {registry}: {what}: expected {expected} bytes, got {actual}")]
    SizeMismatch { registry: String, what: String, expected: u64, actual: u64 },

    /// Any other refusal, with the registry's error code and (bounded) message.
    #[error("registry {registry}: {op} failed with HTTP {status}{}", registry_detail(code, message))]
    Registry { registry: String, op: String, status: u16, code: String, message: String },

    /// The registry answered something that breaks the protocol.
    #[error("registry {registry}: {op}: unexpected response: {reason}")]
    Protocol { registry: String, op: String, reason: String },

    /// A local file could not be read or written.
    #[error("{context} {}: {source}", path.display())]
    Io {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Credentials could not be loaded (the file is named; its content never is).
    #[error("registry credentials from {origin}: {reason}")]
    Credentials { origin: String, reason: String },

    /// The TLS setup (extra CA file, system roots) failed.
    #[error("TLS setup: {reason}")]
    Tls { reason: String },
}

fn registry_detail(code: &str, message: &str) -> String {
    match (code.is_empty(), message.is_empty()) {
        (true, true) => String::new(),
        (false, true) => format!(" ({code})"),
        (true, false) => format!(": {message}"),
        (false, false) => format!(" ({code}): {message}"),
    }
}

impl OciError {
    /// Worth retrying: the registry may answer next time (5xx, connection errors, timeouts).
    pub fn is_transient(&self) -> bool {
        match self {
            OciError::Unreachable { .. } | OciError::Timeout { .. } => true,
            OciError::Registry { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_detail_forms() {
        let e = |code: &str, message: &str| OciError::Registry {
            registry: "r:1".into(),
            op: "PUT manifest".into(),
            status: 400,
            code: code.into(),
            message: message.into(),
        };
        assert_eq!(e("", "").to_string(), "registry r:1: PUT manifest failed with HTTP 400");
        assert_eq!(
            e("MANIFEST_INVALID", "bad").to_string(),
            "registry r:1: PUT manifest failed with HTTP 400 (MANIFEST_INVALID): bad"
        );
        assert!(!e("", "").is_transient());
        assert!(OciError::Registry {
            registry: "r".into(),
            op: "o".into(),
            status: 503,
            code: String::new(),
            message: String::new()
        }
        .is_transient());
    }
}
