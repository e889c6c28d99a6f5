//! SHA-256 helpers: hex digests, `sha256:` digest strings, and a hashing writer.

use sha2::{Digest as _, Sha256};
use std::io::{self, Write};

/// The only digest algorithm of format v1.
pub const SHA256_PREFIX: &str = "sha256:";

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// True when `s` is 64 lower-case hex characters.
pub fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// True when `s` is an OCI digest string of the form `sha256:<64 lower-case hex>`.
pub fn is_oci_digest(s: &str) -> bool {
    s.strip_prefix(SHA256_PREFIX).is_some_and(is_sha256_hex)
}

/// The hex part of a `sha256:` digest, if it is one.
pub fn digest_hex(digest: &str) -> Option<&str> {
    digest
        .strip_prefix(SHA256_PREFIX)
        .filter(|h| is_sha256_hex(h))
}

/// A writer that hashes and counts everything written through it.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> HashingWriter<W> {
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            written: 0,
        }
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Finish: the inner writer, the hex SHA-256 and the byte count.
    pub fn finish(self) -> (W, String, u64) {
        (
            self.inner,
            hex::encode(self.hasher.finalize()),
            self.written,
        )
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Hash a whole reader: (hex SHA-256, size). Streams in 256 KiB pieces.
pub fn sha256_reader(mut r: impl io::Read) -> io::Result<(String, u64)> {
    let mut w = HashingWriter::new(io::sink());
    io::copy(&mut r, &mut w)?;
    let (_, hex, n) = w.finish();
    Ok((hex, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vector_and_shapes() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(is_oci_digest(&format!("sha256:{}", sha256_hex(b""))));
        assert!(!is_oci_digest(&format!(
            "sha256:{}",
            sha256_hex(b"").to_uppercase()
        )));
        assert!(!is_oci_digest("sha512:00"));
        let (h, n) = sha256_reader(&b"abc"[..]).unwrap();
        assert_eq!((h.as_str(), n), (sha256_hex(b"abc").as_str(), 3));
    }
}
