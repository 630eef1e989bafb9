//! The checksum types repodata declares (md5, sha1, sha256, sha512), and
//! hashing a file once for sha256 (the content address) and the declared
//! type together.

use std::fmt;

use sha2::Digest as _;

use super::{RepoError, invalid};
use crate::digest::Sha256Digest;

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
        [
            ("sha256", Self::Sha256),
            ("sha512", Self::Sha512),
            ("sha1", Self::Sha1),
            ("sha", Self::Sha1),
            ("md5", Self::Md5),
        ]
        .into_iter()
        .find(|(name, _)| s.eq_ignore_ascii_case(name))
        .map(|(_, kind)| kind)
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
        Self::from_text(kind, value.to_owned(), || file.to_owned())
    }

    /// [`Checksum::parse`] of an element's captured text, reusing its
    /// String; `file` is called only to name the source in an error (this
    /// runs once per package of primary.xml).
    pub fn from_text(
        kind: &str,
        mut text: String,
        file: impl Fn() -> String,
    ) -> Result<Self, RepoError> {
        let kind = ChecksumKind::parse(kind).ok_or_else(|| RepoError::UnsupportedChecksum {
            file: file(),
            kind: kind.to_owned(),
        })?;
        let value = text.trim();
        if value.len() != kind.hex_len() || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid(
                &file(),
                format!(
                    "{kind} checksum {value:?} is not {} hex digits",
                    kind.hex_len()
                ),
            ));
        }
        if value.len() != text.len() {
            text = value.to_owned();
        }
        text.make_ascii_lowercase();
        Ok(Self { kind, hex: text })
    }
}

impl Checksum {
    /// True when `data` has this checksum (for clients such as `drill`).
    pub fn matches(&self, data: &[u8]) -> bool {
        self.kind.hex_digest(data) == self.hex
    }
}

/// The second hash of a [`MultiHasher`]: whatever the repodata declares,
/// when that is not sha256.
enum ExtraHasher {
    Md5(md5::Md5),
    Sha1(sha1::Sha1),
    Sha512(sha2::Sha512),
}

/// Hashes a stream with sha256 (the content address) and, when it differs,
/// the algorithm the repodata declares, in one pass; counts the bytes.
pub struct MultiHasher {
    sha256: sha2::Sha256,
    extra: Option<ExtraHasher>,
    size: u64,
}

impl MultiHasher {
    /// sha256 plus `declared` (nothing more when that is sha256).
    pub fn new(declared: ChecksumKind) -> Self {
        let extra = match declared {
            ChecksumKind::Md5 => Some(ExtraHasher::Md5(md5::Md5::new())),
            ChecksumKind::Sha1 => Some(ExtraHasher::Sha1(sha1::Sha1::new())),
            ChecksumKind::Sha256 => None,
            ChecksumKind::Sha512 => Some(ExtraHasher::Sha512(sha2::Sha512::new())),
        };
        Self {
            sha256: sha2::Sha256::new(),
            extra,
            size: 0,
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        self.sha256.update(data);
        match &mut self.extra {
            Some(ExtraHasher::Md5(h)) => h.update(data),
            Some(ExtraHasher::Sha1(h)) => h.update(data),
            Some(ExtraHasher::Sha512(h)) => h.update(data),
            None => {}
        }
        self.size += data.len() as u64;
    }

    /// Bytes seen, sha256, and the declared algorithm's hex (if not sha256).
    pub fn finish(self) -> (u64, Sha256Digest, Option<String>) {
        let extra = self.extra.map(|h| match h {
            ExtraHasher::Md5(h) => hex::encode(&h.finalize()[..]),
            ExtraHasher::Sha1(h) => hex::encode(&h.finalize()[..]),
            ExtraHasher::Sha512(h) => hex::encode(&h.finalize()[..]),
        });
        (
            self.size,
            Sha256Digest(self.sha256.finalize().into()),
            extra,
        )
    }
}
