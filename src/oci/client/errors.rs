//! Registry answers and transport failures turned into `OciError` (bounded bodies, no
//! headers, no credentials).

use hyper::body::Incoming;
use hyper::{Response, StatusCode};

use super::Client;
use crate::oci::OciError;

pub(super) const ERROR_BODY_CAP: usize = 64 << 10;

impl Client {
    /// Turn a non-success response into an error: the status decides the variant; the body's
    /// `{"errors": [{"code", "message"}]}` gives the detail (bounded, never headers).
    pub(super) async fn error_from(&self, resp: Response<Incoming>, op: &str, write: bool) -> OciError {
        let status = resp.status();
        let registry = self.repo.registry.clone();
        let op_s = op.to_string();
        match status {
            StatusCode::UNAUTHORIZED => return OciError::Unauthorized { registry, op: op_s, detail: self.who() },
            StatusCode::METHOD_NOT_ALLOWED if write => return OciError::ReadOnly { registry, op: op_s },
            _ => {}
        }
        #[derive(serde::Deserialize)]
        struct Errors {
            errors: Vec<ErrorItem>,
        }
        #[derive(serde::Deserialize)]
        struct ErrorItem {
            #[serde(default)]
            code: String,
            #[serde(default)]
            message: String,
        }
        let body = self.read_capped(resp, ERROR_BODY_CAP as u64, op).await.unwrap_or_default();
        let (code, message) = match serde_json::from_slice::<Errors>(&body) {
            Ok(e) if !e.errors.is_empty() => (e.errors[0].code.clone(), e.errors[0].message.clone()),
            _ => (String::new(), String::new()),
        };
        let message: String = message.chars().filter(|c| !c.is_control()).take(200).collect();
        if status == StatusCode::FORBIDDEN {
            return OciError::Forbidden { registry, op: op_s, detail: if message.is_empty() { code } else { message } };
        }
        OciError::Registry { registry, op: op_s, status: status.as_u16(), code, message }
    }

    pub(super) fn transport_error(&self, op: &str, e: &(dyn std::error::Error + 'static)) -> OciError {
        let mut reason = e.to_string();
        let mut timed_out = false;
        let mut src = e.source();
        while let Some(s) = src {
            if let Some(io) = s.downcast_ref::<std::io::Error>() {
                timed_out |= io.kind() == std::io::ErrorKind::TimedOut;
            }
            reason.push_str(": ");
            reason.push_str(&s.to_string());
            src = s.source();
        }
        if timed_out {
            return OciError::Timeout {
                registry: self.repo.registry.clone(),
                op: op.to_string(),
                after: self.cfg.connect_timeout,
            };
        }
        OciError::Unreachable { registry: self.repo.registry.clone(), op: op.to_string(), reason }
    }

    pub(super) fn protocol(&self, op: &str, reason: &str) -> OciError {
        OciError::Protocol { registry: self.repo.registry.clone(), op: op.to_string(), reason: reason.to_string() }
    }

    pub(super) fn not_found(&self, what: String) -> OciError {
        OciError::NotFound { registry: self.repo.registry.clone(), what }
    }
}
