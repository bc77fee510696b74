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

#[cfg(test)]
mod tests {
    use super::*;

    const OID: &str = "4d7a214614ab2935c943f9e0ff69d22eadbb8f32b1258daaa5e2ca24d17e2393";

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
}
