//! SHA-256 digests: the content address of every blob and manifest.

use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

use sha2::{Digest, Sha256};

/// A SHA-256 digest. Displays as 64 lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Sha256Digest(pub [u8; 32]);

/// A digest that is not 32 bytes / 64 hex characters.
#[derive(Debug, thiserror::Error)]
#[error("not a sha256 digest: {0:?}")]
pub struct BadDigest(pub String);

impl Sha256Digest {
    /// Digest of an in-memory byte string.
    pub fn of(data: &[u8]) -> Self {
        Self(Sha256::digest(data).into())
    }

    /// From raw bytes as they travel on the wire.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, BadDigest> {
        <[u8; 32]>::try_from(bytes)
            .map(Self)
            .map_err(|_| BadDigest(hex::encode(bytes)))
    }

    /// Lowercase hex.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Digest of everything `reader` yields; returns the digest and the byte count.
    pub fn of_reader(mut reader: impl Read) -> io::Result<(Self, u64)> {
        let mut hasher = HashingWriter::new(io::sink());
        let n = io::copy(&mut reader, &mut hasher)?;
        Ok((hasher.finish().0, n))
    }
}

impl fmt::Display for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Sha256Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", self.to_hex())
    }
}

impl FromStr for Sha256Digest {
    type Err = BadDigest;
    fn from_str(s: &str) -> Result<Self, BadDigest> {
        let bytes = hex::decode(s).map_err(|_| BadDigest(s.to_owned()))?;
        Self::from_slice(&bytes).map_err(|_| BadDigest(s.to_owned()))
    }
}

/// Hashes everything written through it, so a blob is hashed while it is stored.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    written: u64,
}

impl<W: Write> HashingWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            written: 0,
        }
    }

    /// Continues a hash over bytes already written elsewhere (resume).
    pub fn resume(inner: W, hasher: Sha256, written: u64) -> Self {
        Self {
            inner,
            hasher,
            written,
        }
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// The digest so far and the inner writer.
    pub fn finish(self) -> (Sha256Digest, W) {
        (Sha256Digest(self.hasher.finalize().into()), self.inner)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let d = Sha256Digest::of(b"abc");
        assert_eq!(
            d.to_hex(),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(d.to_hex().parse::<Sha256Digest>().unwrap(), d);
        assert!("abc".parse::<Sha256Digest>().is_err());
    }

    #[test]
    fn hashing_writer_matches_digest() {
        let mut w = HashingWriter::new(Vec::new());
        w.write_all(b"ab").unwrap();
        w.write_all(b"c").unwrap();
        let (d, out) = w.finish();
        assert_eq!(out, b"abc");
        assert_eq!(d, Sha256Digest::of(b"abc"));
    }
}
