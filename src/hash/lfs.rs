//! Git LFS pointer files: a tracked file whose content is a pointer is keyed by the
//! pointer's `oid sha256:` (which is the SHA-256 of the real file), so planning needs no
//! LFS download and a pointer-only clone plans the same keys as a smudged one.

/// Largest pointer file git-lfs writes or reads (its own limit).
pub const MAX_POINTER_BYTES: u64 = 1024;

/// Smallest possible pointer: the version line, the oid line and `size 0`.
pub const MIN_POINTER_BYTES: u64 = (VERSION.len() + OID_PREFIX.len() + 64 + 1 + "size 0\n".len()) as u64;

const VERSION: &str = "version https://git-lfs.github.com/spec/v1\n";
const OID_PREFIX: &str = "oid sha256:";

/// The (SHA-256 hex, size) a Git LFS pointer names, when `bytes` is exactly a pointer:
/// the v1 version line, then `oid sha256:<64 lowercase hex>` and `size <decimal>`, each
/// line ending in `\n`, nothing else (pointers with extensions, other keys, CRLF line
/// ends or a leading-zero size are not taken for pointers: such a file is hashed as it is).
pub fn lfs_pointer(bytes: &[u8]) -> Option<(String, u64)> {
    if bytes.len() as u64 > MAX_POINTER_BYTES {
        return None;
    }
    let text = std::str::from_utf8(bytes).ok()?;
    let rest = text.strip_prefix(VERSION)?;
    let (oid_line, rest) = rest.split_once('\n')?;
    let oid = oid_line.strip_prefix(OID_PREFIX)?;
    if oid.len() != 64 || !oid.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return None;
    }
    let (size_line, rest) = rest.split_once('\n')?;
    if !rest.is_empty() {
        return None;
    }
    let size = size_line.strip_prefix("size ")?;
    if size.is_empty() || !size.bytes().all(|b| b.is_ascii_digit()) || (size.len() > 1 && size.starts_with('0')) {
        return None;
    }
    Some((oid.to_string(), size.parse().ok()?))
}

/// Any Git LFS pointer, extensions included (what must never reach a task in place of the
/// real file): the `(sha256 hex, size)` it names, or `None` when `bytes` is not a
/// pointer (parsed strictly, as git-lfs's spec v1 defines it: at most 1024 bytes,
/// `version` first, then `key value` lines sorted by key, each ending in a newline,
/// with `oid sha256:<64 lowercase hex>` and a decimal `size`).
pub fn any_lfs_pointer(bytes: &[u8]) -> Option<(String, u64)> {
    if bytes.len() as u64 > MAX_POINTER_BYTES || !bytes.starts_with(VERSION.as_bytes()) || !bytes.ends_with(b"\n") {
        return None;
    }
    let text = std::str::from_utf8(&bytes[VERSION.as_bytes().len()..]).ok()?;
    let (mut oid, mut size, mut last_key) = (None, None, "");
    for line in text.strip_suffix('\n')?.split('\n') {
        let (key, value) = line.split_once(' ')?;
        let key_ok = !key.is_empty()
            && key.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
        if !key_ok || key == "version" || key <= last_key {
            return None;
        }
        last_key = key;
        match key {
            "oid" => {
                let hex = value.strip_prefix("sha256:")?;
                if hex.len() != 64 || !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
                    return None;
                }
                oid = Some(hex.to_string());
            }
            "size" => {
                if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
                    return None;
                }
                size = Some(value.parse().ok()?);
            }
            _ => {}
        }
    }
    Some((oid?, size?))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OID: &str = "4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393";

    fn body(rest: &str) -> Vec<u8> {
        format!("version https://git-lfs.github.com/spec/v1\n{rest}").into_bytes()
    }

    fn ptr(oid: &str, size: &str) -> String {
        format!("version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n")
    }

    #[test]
    fn parses_a_pointer_exactly() {
        assert_eq!(lfs_pointer(ptr(OID, "12345").as_bytes()), Some((OID.to_string(), 12345)));
        assert_eq!(lfs_pointer(ptr(OID, "0").as_bytes()), Some((OID.to_string(), 0)));
        assert_eq!(ptr(OID, "0").len() as u64, MIN_POINTER_BYTES);
    }

    #[test]
    fn rejects_anything_else() {
        let upper = OID.to_uppercase();
        let bad = [
            ptr(&OID[1..], "1"),
            ptr(&upper, "1"),
            ptr(&format!("{}g", &OID[1..]), "1"),
            ptr(OID, ""),
            ptr(OID, "01"),
            ptr(OID, "-1"),
            ptr(OID, "1x"),
            ptr(OID, "99999999999999999999999"),
            ptr(OID, "1").trim_end().to_string(),
            ptr(OID, "1").replace('\n', "\r\n"),
            format!("{}ext-0-foo sha256:{OID}\n", ptr(OID, "1")),
            format!("{}\n", ptr(OID, "1")),
            ptr(OID, "1").replace("git-lfs.github.com", "hawser.github.com"),
            format!("version https://git-lfs.github.com/spec/v1\nsize 1\noid sha256:{OID}\n"),
            format!("{}{}", ptr(OID, "1"), " ".repeat(1024)),
            String::new(),
        ];
        for b in bad {
            assert_eq!(lfs_pointer(b.as_bytes()), None, "{b:?}");
        }
        assert_eq!(lfs_pointer(&[0xff, 0xfe]), None);
    }

    #[test]
    fn any_pointer_parses_the_spec_strictly_with_extensions() {
        assert_eq!(any_lfs_pointer(&body(&format!("oid sha256:{OID}\nsize 12345\n"))), Some((OID.into(), 12345)));
        // extension keys are allowed where the spec puts them (sorted)
        assert!(any_lfs_pointer(&body(&format!("ext-0-foo sha256:{OID}\noid sha256:{OID}\nsize 1\n"))).is_some());
        let bad = [
            format!("oid sha256:{OID}\nsize 12345"),                // no final newline
            format!("size 12345\noid sha256:{OID}\n"),              // not sorted
            format!("oid sha256:{}\nsize 1\n", &OID[1..]),          // short oid
            format!("oid sha256:{}\nsize 1\n", OID.to_uppercase()), // upper-case hex
            format!("oid md5:{OID}\nsize 1\n"),
            format!("oid sha256:{OID}\n"), // no size
            "size 1\n".to_string(),        // no oid
            format!("oid sha256:{OID}\nsize -1\n"),
            format!("oid sha256:{OID}\nsize 1\nsize 2\n"), // repeated key
            format!("oid  sha256:{OID}\nsize 1\n"),
            format!("oid sha256:{OID}\r\nsize 1\n"),
        ];
        for b in &bad {
            assert_eq!(any_lfs_pointer(&body(b)), None, "{b:?}");
        }
        // every pointer the key side takes is one the run side fetches
        let strict = ptr(OID, "12345");
        assert_eq!(any_lfs_pointer(strict.as_bytes()), lfs_pointer(strict.as_bytes()));
        let good = body(&format!("oid sha256:{OID}\nsize 1\n"));
        let smallest = body(&format!("oid sha256:{OID}\nsize 0\n"));
        assert_eq!((smallest.len() as u64, any_lfs_pointer(&smallest)), (MIN_POINTER_BYTES, Some((OID.into(), 0))));
        assert_eq!(any_lfs_pointer(&good[1..]), None);
        assert_eq!(any_lfs_pointer(b"hello\n"), None);
        let mut long = good.clone();
        long.splice(VERSION.len()..VERSION.len(), format!("a {}\n", "x".repeat(1100)).into_bytes());
        assert_eq!(any_lfs_pointer(&long), None, "over 1024 bytes");
    }
}
