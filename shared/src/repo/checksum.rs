//! The checksum types repodata declares (md5, sha1, sha256, sha512), and
//! hashing a file once for sha256 (the content address) and the declared
//! type together.

use std::fmt;
use std::io::{self, Read};

use sha2::Digest as _;

use super::{RepoError, invalid};
use crate::digest::Sha256Digest;

/// Read buffer for hashing; large enough that syscalls do not dominate.
const HASH_BUF_BYTES: usize = 256 * 1024;

/// Checksum algorithms yum repodata uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChecksumKind {
    Md5,
    /// Spelled `sha` or `sha1` in repodata (yum's historical `sha` is sha1).
    Sha1,
    Sha256,
    Sha512,
}

impl ChecksumKind {
    /// From a `type=` attribute; case-insensitive, `sha` means sha1.
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "md5" => Some(Self::Md5),
            "sha" | "sha1" => Some(Self::Sha1),
            "sha256" => Some(Self::Sha256),
            "sha512" => Some(Self::Sha512),
            _ => None,
        }
    }

    /// Canonical lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Md5 => "md5",
            Self::Sha1 => "sha1",
            Self::Sha256 => "sha256",
            Self::Sha512 => "sha512",
        }
    }

    /// Lowercase hex digest of `data` with this algorithm.
    pub fn hex_digest(self, data: &[u8]) -> String {
        match self {
            Self::Md5 => hex::encode(md5::Md5::digest(data)),
            Self::Sha1 => hex::encode(sha1::Sha1::digest(data)),
            Self::Sha256 => hex::encode(sha2::Sha256::digest(data)),
            Self::Sha512 => hex::encode(sha2::Sha512::digest(data)),
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Self::Md5 => 32,
            Self::Sha1 => 40,
            Self::Sha256 => 64,
            Self::Sha512 => 128,
        }
    }
}

impl fmt::Display for ChecksumKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A declared checksum.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Checksum {
    pub kind: ChecksumKind,
    /// Lowercase hex of the right length for `kind`.
    pub hex: String,
}

impl Checksum {
    /// Validates the type and the hex value; `file` names the source in errors.
    pub fn parse(kind: &str, value: &str, file: &str) -> Result<Self, RepoError> {
        let kind = ChecksumKind::parse(kind).ok_or_else(|| RepoError::UnsupportedChecksum {
            file: file.to_owned(),
            kind: kind.to_owned(),
        })?;
        let hex = value.trim().to_ascii_lowercase();
        if hex.len() != kind.hex_len() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid(
                file,
                format!(
                    "{kind} checksum {value:?} is not {} hex digits",
                    kind.hex_len()
                ),
            ));
        }
        Ok(Self { kind, hex })
    }
}

impl Checksum {
    /// True when `data` has this checksum (for clients such as `drill`).
    pub fn matches(&self, data: &[u8]) -> bool {
        self.kind.hex_digest(data) == self.hex
    }
}

/// Hashes with sha256 and, when asked, one more algorithm, in one pass.
enum ExtraHasher {
    Md5(md5::Md5),
    Sha1(sha1::Sha1),
    Sha512(sha2::Sha512),
}

impl ExtraHasher {
    fn new(kind: ChecksumKind) -> Option<Self> {
        match kind {
            ChecksumKind::Md5 => Some(Self::Md5(md5::Md5::new())),
            ChecksumKind::Sha1 => Some(Self::Sha1(sha1::Sha1::new())),
            ChecksumKind::Sha256 => None,
            ChecksumKind::Sha512 => Some(Self::Sha512(sha2::Sha512::new())),
        }
    }
    fn update(&mut self, data: &[u8]) {
        match self {
            Self::Md5(h) => h.update(data),
            Self::Sha1(h) => h.update(data),
            Self::Sha512(h) => h.update(data),
        }
    }
    fn finish_hex(self) -> String {
        match self {
            Self::Md5(h) => hex::encode(&h.finalize()[..]),
            Self::Sha1(h) => hex::encode(&h.finalize()[..]),
            Self::Sha512(h) => hex::encode(&h.finalize()[..]),
        }
    }
}

/// Bytes read, sha256, and the hex of `extra` (if not sha256).
pub(crate) fn hash_reader(
    mut r: impl Read,
    extra: ChecksumKind,
) -> io::Result<(u64, Sha256Digest, Option<String>)> {
    let mut sha256 = sha2::Sha256::new();
    let mut other = ExtraHasher::new(extra);
    let mut buf = vec![0u8; HASH_BUF_BYTES];
    let mut total = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        sha256.update(&buf[..n]);
        if let Some(h) = other.as_mut() {
            h.update(&buf[..n]);
        }
        total += n as u64;
    }
    Ok((
        total,
        Sha256Digest(sha256.finalize().into()),
        other.map(ExtraHasher::finish_hex),
    ))
}
