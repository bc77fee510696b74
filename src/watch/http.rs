//! The watcher's HTTP endpoint: `/healthz`, `/readyz`, `/metrics`, `/status` and the
//! `POST /hooks/git` webhook (GitHub, Gitea and GitLab push events).
//!
//! Slow or idle clients cannot starve it: a request's head and body must arrive within
//! the read timeout (else the connection is closed, 408 for a body), each connection
//! serves one request, and past the connection cap the oldest connection is closed, so
//! a new one (a liveness probe) is always served at once.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::state::Shared;

/// Largest webhook body accepted (GitHub's push payloads are capped at 25 MB).
pub const MAX_BODY: usize = 32 * 1024 * 1024;

/// Webhook bytes held in memory at once over all connections; past it a webhook is
/// answered 503 (retry) instead of growing memory by the connection cap times MAX_BODY.
const BODY_BUDGET: usize = 4 * MAX_BODY;

/// After the read timeout, this long to answer before a connection is dropped anyway.
const ANSWER_GRACE: Duration = Duration::from_secs(5);

/// Limits of the HTTP endpoint.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A request's head and body must have arrived this long after the connection opened.
    pub read_timeout: Duration,
    /// Open connections at most; past it the oldest one is closed.
    pub max_connections: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { read_timeout: Duration::from_secs(20), max_connections: 256 }
    }
}

/// Serve until `stop` fires.
pub async fn serve(listener: TcpListener, shared: Arc<Shared>, stop: CancellationToken, limits: Limits) {
    // open connections, oldest first: id -> its cancellation
    let open: Arc<Mutex<BTreeMap<u64, CancellationToken>>> = Arc::default();
    let shed = AtomicU64::new(0);
    let mut next_id = 0u64;
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => return,
        };
        let id = next_id;
        next_id += 1;
        let cancel = stop.child_token();
        {
            let mut open = open.lock().unwrap_or_else(|e| e.into_inner());
            while open.len() >= limits.max_connections.max(1) {
                let Some((_, oldest)) = open.pop_first() else { break };
                oldest.cancel();
                let n = shed.fetch_add(1, Ordering::Relaxed) + 1;
                if n.is_power_of_two() {
                    tracing::warn!(
                        max_connections = limits.max_connections,
                        shed = n,
                        "too many open HTTP connections: closing the oldest"
                    );
                }
            }
            open.insert(id, cancel.clone());
        }
        let (shared, open) = (shared.clone(), open.clone());
        tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + limits.read_timeout;
            let svc = hyper::service::service_fn(move |req| handle(req, shared.clone(), deadline));
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(limits.read_timeout)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), svc);
            tokio::select! {
                _ = conn => {}
                _ = cancel.cancelled() => {}
                _ = tokio::time::sleep_until(deadline + ANSWER_GRACE) => {}
            }
            open.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
        });
    }
}

/// Webhook bytes in memory now (see BODY_BUDGET).
static BODY_BYTES: AtomicUsize = AtomicUsize::new(0);

/// A share of BODY_BUDGET, given back on drop.
struct BodyShare(usize);

impl BodyShare {
    fn grow(&mut self, n: usize) -> bool {
        if BODY_BYTES.fetch_add(n, Ordering::SeqCst) + n > BODY_BUDGET {
            BODY_BYTES.fetch_sub(n, Ordering::SeqCst);
            return false;
        }
        self.0 += n;
        true
    }
}

impl Drop for BodyShare {
    fn drop(&mut self) {
        BODY_BYTES.fetch_sub(self.0, Ordering::SeqCst);
    }
}

/// Why a webhook body was not read.
enum BodyError {
    TooLarge,
    Busy,
    Slow,
    Broken,
}

/// Read a request body of at most MAX_BODY bytes by `deadline`.
async fn read_body(mut body: Incoming, deadline: tokio::time::Instant) -> Result<(Vec<u8>, BodyShare), BodyError> {
    let mut share = BodyShare(0);
    let mut buf = Vec::new();
    let read = async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|_| BodyError::Broken)?;
            let Ok(data) = frame.into_data() else { continue };
            if buf.len() + data.len() > MAX_BODY {
                return Err(BodyError::TooLarge);
            }
            if !share.grow(data.len()) {
                return Err(BodyError::Busy);
            }
            buf.extend_from_slice(&data);
        }
        Ok(())
    };
    match tokio::time::timeout_at(deadline, read).await {
        Ok(Ok(())) => Ok((buf, share)),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(BodyError::Slow),
    }
}

fn reply(code: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = code;
    if let Ok(v) = content_type.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

fn json_reply(code: StatusCode, v: serde_json::Value) -> Response<Full<Bytes>> {
    reply(code, "application/json", serde_json::to_string_pretty(&v).unwrap_or_default() + "\n")
}

async fn handle(
    req: Request<Incoming>,
    shared: Arc<Shared>,
    deadline: tokio::time::Instant,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let text = "text/plain; charset=utf-8";
    Ok(match (req.method(), req.uri().path()) {
        (&Method::GET, "/healthz") => reply(StatusCode::OK, text, "ok\n".into()),
        (&Method::GET, "/readyz") => match readiness(&shared) {
            Ok(()) => reply(StatusCode::OK, text, "ready\n".into()),
            Err(why) => reply(StatusCode::SERVICE_UNAVAILABLE, text, format!("not ready: {why}\n")),
        },
        (&Method::GET, "/metrics") => {
            reply(StatusCode::OK, super::state::METRICS_CONTENT_TYPE, shared.render_metrics())
        }
        (&Method::GET, "/status") => json_reply(StatusCode::OK, shared.status_json()),
        (&Method::POST, "/hooks/git") => webhook(req, &shared, deadline).await,
        (_, "/healthz" | "/readyz" | "/metrics" | "/status" | "/hooks/git") => {
            reply(StatusCode::METHOD_NOT_ALLOWED, text, "method not allowed\n".into())
        }
        _ => reply(StatusCode::NOT_FOUND, text, "not found\n".into()),
    })
}

/// Ready once the first sync is done and the state directory is writable.
fn readiness(shared: &Shared) -> Result<(), String> {
    if !shared.ready.load(Ordering::Relaxed) {
        return Err("the first sync has not finished".into());
    }
    let probe = shared.state_dir.join(format!(".readyz-{}", std::process::id()));
    std::fs::write(&probe, b"ok").map_err(|e| format!("the state directory is not writable: {e}"))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

async fn webhook(req: Request<Incoming>, shared: &Shared, deadline: tokio::time::Instant) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let declared = parts
        .headers
        .get(hyper::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let read = match declared {
        Some(n) if n > MAX_BODY as u64 => Err(BodyError::TooLarge),
        _ => read_body(body, deadline).await,
    };
    let (body, _share) = match read {
        Ok(b) => b,
        Err(e) => {
            shared.count_webhook("rejected");
            let (code, why) = match e {
                BodyError::TooLarge => (StatusCode::PAYLOAD_TOO_LARGE, format!("body larger than {MAX_BODY} bytes")),
                BodyError::Busy => {
                    (StatusCode::SERVICE_UNAVAILABLE, "too many webhook bodies in flight; retry later".to_string())
                }
                BodyError::Slow => (StatusCode::REQUEST_TIMEOUT, "the body did not arrive in time".to_string()),
                BodyError::Broken => (StatusCode::BAD_REQUEST, "the body could not be read".to_string()),
            };
            return json_reply(code, serde_json::json!({"error": why}));
        }
    };
    let header = |n: &str| parts.headers.get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
    if let Some(secret) = &shared.webhook_secret {
        if let Err(why) = verify(secret.as_bytes(), &body, &header) {
            shared.count_webhook("rejected");
            tracing::warn!(reason = why, "webhook rejected");
            return json_reply(StatusCode::UNAUTHORIZED, serde_json::json!({"error": why}));
        }
    }
    if shared.branch.is_none() {
        shared.count_webhook("ignored");
        return json_reply(
            StatusCode::NOT_FOUND,
            serde_json::json!({"error": "this watcher follows a directory, not a git remote"}),
        );
    }
    // GitHub/Gitea/GitLab push payloads carry `ref`; another branch's push is ignored
    let pushed_ref = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("ref").and_then(|r| r.as_str()).map(str::to_string));
    if let (Some(r), Some(b)) = (&pushed_ref, &shared.branch) {
        if r != &format!("refs/heads/{b}") && r != b {
            shared.count_webhook("ignored");
            return json_reply(
                StatusCode::ACCEPTED,
                serde_json::json!({"accepted": false, "ignored": format!("ref {r} is not the followed branch {b}")}),
            );
        }
    }
    shared.count_webhook("accepted");
    shared.trigger.notify_one();
    json_reply(StatusCode::ACCEPTED, serde_json::json!({"accepted": true}))
}

/// Check a push event's signature: GitHub `X-Hub-Signature-256: sha256=<hex HMAC>`, Gitea
/// `X-Gitea-Signature: <hex HMAC>` (HMAC-SHA256 of the body with the secret), GitLab
/// `X-Gitlab-Token: <secret>`. All comparisons are constant-time: HMACs through
/// `Mac::verify_slice` (itself `subtle`), the GitLab token through [`token_eq`].
pub fn verify(secret: &[u8], body: &[u8], header: &dyn Fn(&str) -> Option<String>) -> Result<(), &'static str> {
    use hmac::Mac;
    let hmac_ok = |hex: &str| -> bool {
        let Some(sig) = decode_hex(hex.trim()) else { return false };
        let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret) else { return false };
        mac.update(body);
        mac.verify_slice(&sig).is_ok()
    };
    if let Some(s) = header("x-hub-signature-256") {
        let Some(hex) = s.trim().strip_prefix("sha256=") else { return Err("X-Hub-Signature-256 is not sha256=<hex>") };
        return if hmac_ok(hex) { Ok(()) } else { Err("invalid signature") };
    }
    if let Some(s) = header("x-gitea-signature").or_else(|| header("x-gogs-signature")) {
        return if hmac_ok(&s) { Ok(()) } else { Err("invalid signature") };
    }
    if let Some(t) = header("x-gitlab-token") {
        return if token_eq(t.as_bytes(), secret) { Ok(()) } else { Err("invalid token") };
    }
    Err("unsigned request (a webhook secret is configured)")
}

/// Constant-time equality of a presented token and the secret (`subtle`). Both sides are
/// hashed first, so neither the position of the first difference nor the secret's length
/// shows in the time taken.
fn token_eq(presented: &[u8], secret: &[u8]) -> bool {
    use sha2::Digest;
    use subtle::ConstantTimeEq;
    sha2::Sha256::digest(presented).as_slice().ct_eq(sha2::Sha256::digest(secret).as_slice()).into()
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use hmac::Mac;

    fn sign(secret: &[u8], body: &[u8]) -> String {
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret).unwrap();
        mac.update(body);
        mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
    }

    fn check(headers: &[(&str, String)], body: &[u8]) -> Result<(), &'static str> {
        let h = |n: &str| headers.iter().find(|(k, _)| *k == n).map(|(_, v)| v.clone());
        verify(b"topsecret", body, &h)
    }

    #[test]
    fn signatures() {
        let body = br#"{"ref":"refs/heads/main"}"#;
        let good = sign(b"topsecret", body);
        assert!(check(&[("x-hub-signature-256", format!("sha256={good}"))], body).is_ok());
        assert!(check(&[("x-hub-signature-256", format!("sha256={}", sign(b"other", body)))], body).is_err());
        assert!(check(&[("x-hub-signature-256", good.clone())], body).is_err());
        assert!(check(&[("x-hub-signature-256", format!("sha256={good}"))], b"tampered").is_err());
        assert!(check(&[("x-gitea-signature", good.clone())], body).is_ok());
        assert!(check(&[("x-gitea-signature", "zz".into())], body).is_err());
        assert!(check(&[("x-gitlab-token", "topsecret".into())], body).is_ok());
        assert!(check(&[("x-gitlab-token", "topsecreT".into())], body).is_err());
        // a prefix, an extension and the empty token are not the secret
        for t in ["topsecre", "topsecret ", "topsecretX", ""] {
            assert!(check(&[("x-gitlab-token", t.into())], body).is_err(), "{t:?}");
        }
        assert!(check(&[], body).is_err());
    }
}
