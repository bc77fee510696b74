//! The streaming pieces both tar writers use (packs and ModelKit layers): a writer that
//! hashes and counts what passes through, and a reader that yields exactly the size a tar
//! header announced, or fails.

use std::io::{Read, Write};

use sha2::{Digest as _, Sha256};

use super::Digest;

/// Hashes and counts every byte written through it.
pub(crate) struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    len: u64,
}

impl<W: Write> HashingWriter<W> {
    pub(crate) fn new(inner: W) -> Self {
        HashingWriter { inner, hasher: Sha256::new(), len: 0 }
    }

    /// Flush, and return the inner writer with the digest and length of what went through.
    pub(crate) fn finish(mut self) -> std::io::Result<(W, Digest, u64)> {
        self.inner.flush()?;
        Ok((self.inner, Digest::from_hasher(self.hasher), self.len))
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Reads exactly `left` bytes, or fails: `tar::Builder` would otherwise write a header
/// announcing more bytes than follow (a corrupt tar) if the file shrank after its size was
/// taken; a file that grew is cut at that size.
pub(crate) struct Exact<R> {
    inner: R,
    left: u64,
    /// What is read, for the error (`object <hex>`, `the file`).
    what: String,
}

impl<R: Read> Exact<R> {
    pub(crate) fn new(inner: R, len: u64, what: impl Into<String>) -> Self {
        Exact { inner, left: len, what: what.into() }
    }
}

impl<R: Read> Read for Exact<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        let max = buf.len().min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..max])?;
        if n == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("{}: shorter than recorded ({} bytes missing)", self.what, self.left),
            ));
        }
        self.left -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_writer_hashes_what_passes_and_exact_refuses_a_short_source() {
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(b"hello").unwrap();
        let (bytes, d, n) = w.finish().unwrap();
        assert_eq!((bytes.as_slice(), n), (&b"hello"[..], 5));
        assert_eq!(d, Digest::of_bytes(b"hello"));
        let mut out = Vec::new();
        std::io::copy(&mut Exact::new(&b"abcdef"[..], 3, "x"), &mut out).unwrap();
        assert_eq!(out, b"abc", "a longer source is cut at the announced size");
        let e = std::io::copy(&mut Exact::new(&b"ab"[..], 3, "object h"), &mut std::io::sink()).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::UnexpectedEof);
        assert_eq!(e.to_string(), "object h: shorter than recorded (1 bytes missing)");
    }
}
