//! Repodata (repomd.xml, primary.xml) and repo validation (docs/PROTOCOL.md,
//! "The snapshot manifest", what goes in): a snapshot holds
//! `repodata/repomd.xml` (plus its `.asc`/`.key`), every file repomd.xml
//! references and every package primary references, each checked against
//! the checksum the repodata itself declares. A broken repo is refused with
//! the exact file and both checksums.
//!
//! - [`checksum`]: the checksum types repodata declares, hashing several at once;
//! - [`repomd`]: the repomd.xml model and parser;
//! - [`primary`]: the primary.xml parser (gz, zst, xz or plain; bounded);
//! - [`read_ahead`]: decompression on one thread, parsing on another;
//! - [`known`], [`split`]: the entries of the last primary.xml, recognised
//!   by their bytes and not parsed again;
//! - [`hash_cache`]: sha256 by stat identity, so unchanged files are not re-read;
//! - [`tree`]: the publish directory, read without following any symlink;
//! - [`validate`]: a directory → the files to publish, every one verified.
//!
//! The parsers match literal element names, as createrepo_c and librepo do,
//! through the shared [`crate::xml`] walker.

use std::io;
use std::path::PathBuf;

use crate::relpath::PathError;
use crate::xml::XmlError;

pub mod checksum;
pub mod hash_cache;
pub mod known;
pub mod primary;
mod read_ahead;
pub mod repomd;
mod split;
pub mod tree;
pub mod validate;

#[cfg(test)]
mod fixtures;

pub use checksum::{Checksum, ChecksumKind};
pub use hash_cache::{FileKey, HashCache, MemoryCache, NoCache};
pub use known::KnownPackages;
pub use primary::{Listed, Package, parse_primary, parse_primary_listings};
pub use repomd::{Repomd, RepomdData, parse_repomd};
pub use validate::{RepoFile, ValidatedRepo, validate_repo, validate_repo_since};

/// The one file whose name never changes; everything else hangs off it.
pub const REPOMD_PATH: &str = crate::manifest::REPOMD_PATH;
/// Longest text kept from one element (a checksum, a number, the revision):
/// bounds memory on hostile input; real values are under 200 bytes.
const MAX_FIELD_BYTES: usize = 4096;

/// Why a repo (or one of its metadata files) was refused. Every message names
/// the file at fault and, for checksums, the declared and actual values.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    /// `repodata/repomd.xml` does not exist.
    #[error("{REPOMD_PATH}: not found — is {} a yum repository?", dir.display())]
    NotARepo { dir: PathBuf },
    /// Reading or decompressing failed.
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
    /// Not well-formed, or over the walker's bounds.
    #[error("{file}: {source}")]
    Xml {
        file: String,
        #[source]
        source: XmlError,
    },
    /// Well-formed XML that is not valid repodata.
    #[error("{file}: {reason}")]
    Invalid { file: String, reason: String },
    /// A checksum type we cannot verify (e.g. sha384, crc32).
    #[error("{file}: unsupported checksum type {kind:?}")]
    UnsupportedChecksum { file: String, kind: String },
    /// A primary we cannot decompress (e.g. zchunk).
    #[error("{file}: unsupported compression (primary must be .xml, .xml.gz, .xml.zst or .xml.xz)")]
    UnsupportedCompression { file: String },
    /// An href that breaks the path rules ([`RelPath`]): it could escape
    /// the repo, or is not a normalised relative path.
    #[error("{file}: unsafe href: {source}")]
    UnsafeHref {
        file: String,
        href: String,
        #[source]
        source: PathError,
    },
    /// A referenced file does not exist.
    #[error("{path}: missing (listed in {listed_in})")]
    Missing { path: String, listed_in: String },
    /// A symlink on the way to (or at) a referenced file.
    #[error("{path}: is a symlink; only regular files inside the repository are published")]
    Symlink { path: String },
    /// A directory, device, fifo… where a file (or a directory) was expected.
    #[error("{path}: not a {expected}")]
    WrongFileType {
        path: String,
        expected: &'static str,
    },
    /// Size differs from the declared one.
    #[error("{path}: size {actual} but {listed_in} declares {declared}")]
    SizeMismatch {
        path: String,
        actual: u64,
        declared: u64,
        listed_in: String,
    },
    /// Content differs from the declared checksum.
    #[error("{path}: {kind} mismatch: {listed_in} declares {declared}, file has {actual}")]
    ChecksumMismatch {
        path: String,
        kind: ChecksumKind,
        declared: String,
        actual: String,
        listed_in: String,
    },
    /// One path listed twice with different checksum algorithms; verifying
    /// both would mean hashing the file twice, and no real repo does this.
    #[error("{path}: listed twice with different checksum types ({first} and {second})")]
    ConflictingChecksumTypes {
        path: String,
        first: ChecksumKind,
        second: ChecksumKind,
    },
    /// The file was replaced or rewritten while we were reading it.
    #[error("{path}: changed while being validated; retry when the repo is quiet")]
    Changed { path: String },
    /// Writing into the origin's blob store failed (not the repo's fault).
    #[error("storing the repo's files: {0}")]
    Store(#[from] crate::store::StoreError),
    /// A limit from [`Limits`] was exceeded.
    #[error("{file}: exceeds limits.{limit_name} ({limit})")]
    LimitExceeded {
        file: String,
        limit_name: &'static str,
        limit: u64,
    },
}

fn invalid(file: &str, reason: impl Into<String>) -> RepoError {
    RepoError::Invalid {
        file: file.to_owned(),
        reason: reason.into(),
    }
}

fn io_err(path: &str) -> impl FnOnce(io::Error) -> RepoError + '_ {
    move |source| RepoError::Io {
        path: path.to_owned(),
        source,
    }
}

fn xml_err(file: &str) -> impl FnOnce(XmlError) -> RepoError + '_ {
    move |source| RepoError::Xml {
        file: file.to_owned(),
        source,
    }
}

/// Parses a non-negative integer field.
fn parse_u64(s: &str, what: &str, file: &str) -> Result<u64, RepoError> {
    s.trim()
        .parse()
        .map_err(|_| invalid(file, format!("{what} {s:?} is not a non-negative integer")))
}

/// Rejects `xml:base`: it points packages or metadata outside the repo, which
/// we could neither verify nor publish.
fn reject_xml_base(e: &quick_xml::events::BytesStart<'_>, file: &str) -> Result<(), RepoError> {
    match crate::xml::attr(e, "xml:base").map_err(|why| invalid(file, why))? {
        Some(base) => Err(invalid(
            file,
            format!("<location xml:base={base:?}>: files outside the repo are not supported"),
        )),
        None => Ok(()),
    }
}

/// Attribute `name` of `e`, unescaped; a malformed one names `file`.
fn attr(
    e: &quick_xml::events::BytesStart<'_>,
    name: &str,
    file: &str,
) -> Result<Option<String>, RepoError> {
    crate::xml::attr(e, name).map_err(|why| invalid(file, why))
}
