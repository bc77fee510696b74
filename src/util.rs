//! Small leaf helpers every layer may use (they import nothing from the crate): ids,
//! clocks, RFC 3339 times, hex digests and relative sub-paths.

use std::path::{Component, Path, PathBuf};
use std::time::SystemTime;

use sha2::{Digest, Sha256};

mod strings;
pub use strings::for_each_string;

/// A fresh uid (UUID-shaped hex) for a run or TaskRun named `name`: unique per process
/// and moment, never reused as a cache input.
pub fn new_uid(name: &str) -> String {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update(std::process::id().to_le_bytes());
    h.update(SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default().as_nanos().to_le_bytes());
    let x = format!("{:x}", h.finalize());
    format!("{}-{}-{}-{}-{}", &x[..8], &x[8..12], &x[12..16], &x[16..20], &x[20..32])
}

/// Nanoseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ns() -> i64 {
    SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as i64).unwrap_or(0)
}

/// `t` as RFC 3339 in UTC with milliseconds (report times).
pub fn rfc3339_millis(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// `ns` since the epoch as RFC 3339 in UTC, whole seconds (record times).
pub fn rfc3339_seconds(ns: i64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_nanos(ns.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Hex SHA-256 of bytes.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Lower-case hex of bytes.
/// Whether `s` is a SHA-256 digest as tenon writes it: 64 lower-case hex digits (what may
/// name an object, a key or a blob; anything else never becomes a path or a tag).
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

pub fn hex(b: &[u8]) -> String {
    const H: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        s.push(H[(x >> 4) as usize] as char);
        s.push(H[(x & 15) as usize] as char);
    }
    s
}

/// Join a relative subPath, refusing anything that could leave the volume: a leading
/// `/`, `..`, or a symlink on the way that leads out of `base` (a bind follows it, and
/// the cache key would hash the link, not what the task reads). Symlinks that stay
/// inside are resolved, so the path returned is the directory the task really sees.
/// The error is the message (callers give it their reason, `InvalidWorkspaceBindings`).
pub fn join_sub(base: &Path, sub: &str) -> Result<PathBuf, String> {
    let joined = base.join(relative(sub)?);
    let Ok(real_base) = base.canonicalize() else {
        // nothing there yet, so nothing to follow: it is created as plain directories
        return Ok(joined);
    };
    // the deepest part of the path that exists decides where it leads
    let mut existing = joined.clone();
    let mut rest = Vec::new();
    while std::fs::symlink_metadata(&existing).is_err() {
        match (existing.file_name(), existing.parent()) {
            (Some(n), Some(parent)) if existing != base => {
                rest.push(n.to_owned());
                existing = parent.to_path_buf();
            }
            _ => return Ok(joined),
        }
    }
    let escapes = |to: String| {
        format!(
            "subPath {sub:?} leaves the volume through a symlink ({} -> {to}): refused, as '..' is",
            existing.display()
        )
    };
    let real = existing.canonicalize().map_err(|_| {
        escapes(std::fs::read_link(&existing).map(|t| t.display().to_string()).unwrap_or_else(|_| "?".into()))
    })?;
    let Ok(inside) = real.strip_prefix(&real_base) else {
        return Err(escapes(real.display().to_string()));
    };
    if existing.strip_prefix(base).is_ok_and(|lexical| lexical == inside) {
        return Ok(joined);
    }
    Ok(rest.iter().rev().fold(real, |acc, n| acc.join(n)))
}

/// `sub` as a relative path that stays inside by its text: no leading '/', no '..'.
pub fn relative(sub: &str) -> Result<&Path, String> {
    let p = Path::new(sub);
    if p.is_absolute() || p.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(format!("subPath {sub:?} must be a relative path inside the volume (no leading '/', no '..')"));
    }
    Ok(p)
}

/// [`join_sub`] for a path whose last component is not followed: a symlink there is
/// the thing itself (a declared output that is a link).
pub fn join_sub_but_last(base: &Path, sub: &str) -> Result<PathBuf, String> {
    let p = relative(sub)?;
    match (p.parent().filter(|d| !d.as_os_str().is_empty()), p.file_name()) {
        (Some(dir), Some(name)) => Ok(join_sub(base, &dir.to_string_lossy())?.join(name)),
        (None, Some(name)) => Ok(base.join(name)),
        _ => join_sub(base, sub),
    }
}

/// Decode a Secret's `data`/`binaryData` value with the `base64` crate: the standard
/// alphabet (what Kubernetes writes) or the URL-safe one, padding optional, line breaks and
/// spaces (folded YAML scalars) ignored. Anything else, including a truncated last group
/// or stray trailing bits, is `None`: never a panic, never silently truncated bytes.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
    use base64::Engine as _;
    const CONFIG: GeneralPurposeConfig =
        GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
    const STANDARD: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::STANDARD, CONFIG);
    const URL_SAFE: GeneralPurpose = GeneralPurpose::new(&base64::alphabet::URL_SAFE, CONFIG);
    let compact: String = s.chars().filter(|c| !matches!(c, '\n' | '\r' | ' ')).collect();
    STANDARD.decode(&compact).or_else(|_| URL_SAFE.decode(&compact)).ok()
}
