//! Leader election with a `coordination.k8s.io/v1` Lease, as client-go does it: the holder
//! renews `renewTime` periodically; a contender takes the Lease when it is free (no holder,
//! as a released Lease is) or when its record has not changed for `leaseDurationSeconds` of
//! the contender's *own* clock (so clock skew between replicas does not matter). Every write
//! is a compare-and-swap on `resourceVersion`: two contenders never both win.
//!
//! `tenon watch` runs [`hold_lease`] beside its loop and reconciles only while `leader` is
//! `true`.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// The API server refused for good (e.g. RBAC: the ServiceAccount may not use leases).
    #[error("lease {namespace}/{name}: {message}")]
    Refused { namespace: String, name: String, message: String },
}

/// How long a Lease lasts and how often it is renewed or retried.
#[derive(Debug, Clone, Copy)]
pub struct LeaseTiming {
    /// `leaseDurationSeconds`: a holder that has not renewed for this long has lost it.
    pub duration: Duration,
    /// The holder renews this often.
    pub renew: Duration,
    /// A contender retries this often.
    pub retry: Duration,
}

impl Default for LeaseTiming {
    fn default() -> Self {
        LeaseTiming { duration: Duration::from_secs(15), renew: Duration::from_secs(5), retry: Duration::from_secs(2) }
    }
}

/// Hold Lease `namespace/name` as `identity` until `cancel`: acquire it when free or
/// expired, renew it periodically, send `leader = true` while held and `false` on loss, and
/// release it (so another replica takes over at once) on cancel. Returns `Ok` after a
/// release; `Err` only when the API server refuses for good (403/401).
pub async fn hold_lease(
    client: kube::Client,
    namespace: String,
    name: String,
    identity: String,
    leader: watch::Sender<bool>,
    cancel: CancellationToken,
) -> Result<(), LeaseError> {
    hold_lease_with(client, namespace, name, identity, leader, cancel, LeaseTiming::default()).await
}

/// [`hold_lease`] with explicit timing.
pub async fn hold_lease_with(
    client: kube::Client,
    namespace: String,
    name: String,
    identity: String,
    leader: watch::Sender<bool>,
    cancel: CancellationToken,
    timing: LeaseTiming,
) -> Result<(), LeaseError> {
    let api: Api<Lease> = Api::namespaced(client, &namespace);
    let mut observed: Option<(String, Instant)> = None;
    let mut last_renew: Option<Instant> = None;
    // a holder steps down before others may take over: after 2/3 of the duration without
    // a successful renewal
    let renew_deadline = timing.duration * 2 / 3;
    loop {
        match try_acquire(&api, &name, &identity, timing, &mut observed).await {
            Ok(true) => {
                last_renew = Some(Instant::now());
                if !*leader.borrow() {
                    tracing::info!(lease = %name, identity = %identity, "acquired the lease: leader");
                    leader.send_replace(true);
                }
            }
            Ok(false) => {
                last_renew = None;
                if *leader.borrow() {
                    tracing::warn!(lease = %name, identity = %identity, "lost the lease");
                    leader.send_replace(false);
                }
            }
            Err(kube::Error::Api(s)) if s.code == 401 || s.code == 403 => {
                leader.send_replace(false);
                return Err(LeaseError::Refused { namespace, name, message: s.message });
            }
            Err(e) => {
                tracing::warn!(lease = %name, error = %e, "lease update failed");
                if *leader.borrow() && last_renew.is_none_or(|t| t.elapsed() > renew_deadline) {
                    tracing::warn!(lease = %name, "could not renew the lease in time: stepping down");
                    leader.send_replace(false);
                }
            }
        }
        let wait = if *leader.borrow() { timing.renew } else { timing.retry };
        tokio::select! {
            _ = cancel.cancelled() => break,
            _ = tokio::time::sleep(wait) => {}
        }
    }
    if *leader.borrow() {
        if let Err(e) = release(&api, &name, &identity).await {
            tracing::warn!(lease = %name, error = %e, "could not release the lease (it expires on its own)");
        }
    }
    leader.send_replace(false);
    Ok(())
}

fn now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

/// One round: `Ok(true)` when `identity` holds the Lease afterwards.
async fn try_acquire(
    api: &Api<Lease>,
    name: &str,
    identity: &str,
    timing: LeaseTiming,
    observed: &mut Option<(String, Instant)>,
) -> Result<bool, kube::Error> {
    let secs = timing.duration.as_secs().max(1) as i32;
    let Some(current) = api.get_opt(name).await? else {
        let lease = Lease {
            metadata: ObjectMeta { name: Some(name.to_string()), ..Default::default() },
            spec: Some(LeaseSpec {
                holder_identity: Some(identity.to_string()),
                lease_duration_seconds: Some(secs),
                acquire_time: Some(now()),
                renew_time: Some(now()),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(e) => Err(e),
        };
    };
    let spec = current.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.clone().unwrap_or_default();
    // expiry by our own clock: how long the record has stayed unchanged
    let fingerprint = format!("{holder}|{:?}|{:?}", spec.renew_time.as_ref().map(|t| t.0), spec.lease_transitions);
    let since = match observed {
        Some((f, t)) if *f == fingerprint => *t,
        _ => {
            *observed = Some((fingerprint, Instant::now()));
            Instant::now()
        }
    };
    let their = Duration::from_secs(spec.lease_duration_seconds.unwrap_or(secs).max(1) as u64);
    let free = holder.is_empty() || since.elapsed() > their;
    if holder != identity && !free {
        return Ok(false);
    }
    let mine = holder == identity;
    let mut next = current.clone();
    next.spec = Some(LeaseSpec {
        holder_identity: Some(identity.to_string()),
        lease_duration_seconds: Some(secs),
        acquire_time: if mine { spec.acquire_time.clone() } else { Some(now()) },
        renew_time: Some(now()),
        lease_transitions: Some(spec.lease_transitions.unwrap_or(0) + if mine { 0 } else { 1 }),
        ..spec
    });
    match api.replace(name, &PostParams::default(), &next).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Give the Lease up (empty holder), if we still hold it.
async fn release(api: &Api<Lease>, name: &str, identity: &str) -> Result<(), kube::Error> {
    let Some(mut current) = api.get_opt(name).await? else { return Ok(()) };
    let Some(spec) = current.spec.as_mut() else { return Ok(()) };
    if spec.holder_identity.as_deref() != Some(identity) {
        return Ok(());
    }
    spec.holder_identity = None;
    spec.lease_duration_seconds = Some(1);
    spec.renew_time = Some(now());
    match api.replace(name, &PostParams::default(), &current).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}
