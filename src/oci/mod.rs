//! A small async client for OCI registries (the Distribution spec): the transport of the shared
//! cache (`src/remote`, `--cache-repo`), plus [`pack`] (small objects in one deterministic tar)
//! and [`sign`] (SSH signatures on records).
//!
//! Layout:
//! * [`reference`]: `oci://host[:port]/repo` (HTTPS) and `oci+http://host:port/repo` (plain
//!   HTTP, for loopback and tests), plus `?mode=ro|rw`; tag and repository grammar checked
//!   client-side; `sha256:` digests only. Credentials in a URL are refused, never echoed.
//! * [`auth`]: credentials from an explicit Docker-format file, `$DOCKER_CONFIG/config.json` or
//!   `~/.docker/config.json` (`credHelpers`, `auths` with base64 `auth` or username/password,
//!   `credsStore`, helpers run as `docker-credential-NAME get`); the `WWW-Authenticate` parser.
//! * [`client`]: one repository per [`Client`]; HTTP/1.1 on hyper and hyper-util with rustls on
//!   ring through hyper-rustls (all already linked by kube: no new TLS stack, no C build), system
//!   roots plus an optional extra CA file; anonymous, Basic, and the Bearer token flow (realm,
//!   service, scope; anonymous tokens when there are no credentials). Types from `oci-spec`.
//! * [`modelkit`]: a task's output published as a KitOps ModelKit (Kitfile config, model/
//!   dataset/code/docs tar layers), and the durable `oci://host/repo@sha256:…` reference.
//! * [`error`]: [`OciError`]. Its variants are built only from hosts, repositories, digests,
//!   operation names, status codes and bounded registry messages: no credential, token or
//!   `Authorization` header can reach `Display` or `Debug`.
//!
//! Faults: connect timeout (3 s) and an idle timeout (30 s without a byte moving, in either
//! direction, so a 1 GiB upload is not cut off while a stalled one is); replayable steps retry
//! 5xx, 429 and connection errors with doubling back-off (3 times by default).
//!
//! Distribution 2.8.2 traps handled (verified in the design note, §2):
//! * a manifest GET/HEAD without an explicit OCI `Accept` answers 404 for an OCI manifest:
//!   every manifest request sends [`MANIFEST_ACCEPT`] (never `*/*`);
//! * a monolithic `POST …/uploads/?digest=` with a body opens a session and stores nothing:
//!   uploads are always POST, then PUT (streamed, with `Content-Length`) or PATCH chunks and a
//!   closing PUT;
//! * PATCH ignores `Content-Range` and appends whatever arrives: a failed chunk is resent only
//!   if the session's status (`GET` on the full `Location`, which carries the HMAC'd `_state`)
//!   shows none of it arrived; otherwise the blob restarts (HEAD first: it may have landed);
//! * each PATCH answers a new `Location`; the latest one is always used;
//! * the registry serves tampered storage under the original `Docker-Content-Digest`: every blob
//!   byte read is hashed and checked against the digest asked for; a mismatch deletes the
//!   partial file ([`Client::pull_blob_to_file`] writes a temporary sibling and renames it
//!   only on a match). Manifests are hashed too;
//! * tags longer than 128 characters or starting with `-`/`.` answer 404: refused client-side;
//! * DELETE of a manifest by tag is 400: [`Client::delete_manifest`] takes a digest;
//! * manifests over 4 MiB are refused: checked before sending;
//! * a read-only (`maintenance.readonly`) registry answers writes with 405:
//!   [`OciError::ReadOnly`];
//! * a mount of an absent blob answers 202 with an upload session, which the push reuses.
//!
//! Memory: blob bodies move in 256 KiB pieces in both directions (hyper's back-pressure paces
//! the file reads), so a 1 GiB blob never sits in memory; only manifests (at most 4 MiB) and
//! small error or token bodies are read whole.

pub mod auth;
pub mod client;
pub mod error;
pub mod modelkit;
pub mod pack;
pub mod reference;
pub mod sign;
pub(crate) mod tario;

pub use auth::{CredentialSource, Credentials};
pub use client::{canonical_json, Client, ClientConfig, Manifest, PushOutcome};
pub use error::OciError;
pub use reference::{validate_tag, Digest, ManifestRef, RepoUrl};

/// The OCI image manifest media type.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// The OCI image index media type.
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// The `Accept` of every manifest request: explicit types only. Distribution 2.8 answers 404 to
/// a request for an OCI manifest whose `Accept` lacks the OCI type (or is `*/*`). The Docker v2
/// types are listed for registries holding images pushed by older clients.
pub const MANIFEST_ACCEPT: &str = "application/vnd.oci.image.manifest.v1+json, \
     application/vnd.oci.image.index.v1+json, \
     application/vnd.docker.distribution.manifest.v2+json, \
     application/vnd.docker.distribution.manifest.list.v2+json";

/// Distribution 2.8 refuses larger manifests ("request body too large").
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;
