//! The snapshot manifest (docs/PROTOCOL.md "The snapshot manifest"): what one version of one repo holds.
//!
//! Manifests travel as exact protobuf bytes under a signature; agents decode
//! them only after the signature checks out ([`crate::sign`]), and then
//! [`Manifest::decode`] applies every structural rule before anything else
//! looks at the entries.

use std::collections::HashSet;
use std::fmt;

use bytes::Bytes;
use hotpush_proto as pb;
use prost::Message;

use crate::digest::Sha256Digest;
use crate::limits::Limits;
use crate::relpath::{PathError, RelPath};

/// The only manifest format this build understands.
pub const FORMAT: u32 = 1;

/// The path clients fetch first; every manifest must carry it.
pub const REPOMD_PATH: &str = "repodata/repomd.xml";

/// Why a manifest was refused.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest is {len} bytes, over the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error("manifest does not decode: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("manifest format {0} is not supported (this build knows format {FORMAT})")]
    Format(u32),
    #[error("bad repo name {name:?}: {why}")]
    RepoName { name: String, why: &'static str },
    #[error("manifest has {count} entries, over the limit of {max}")]
    TooManyEntries { count: usize, max: usize },
    #[error("entry {index}: {source}")]
    Path { index: usize, source: PathError },
    #[error("duplicate path {0}")]
    Duplicate(RelPath),
    #[error("entries are not sorted: {0} after {1}")]
    Unsorted(RelPath, RelPath),
    #[error("{0} is both a file and a directory")]
    FileAndDirectory(String),
    #[error("entry {path}: sha256 is {len} bytes, not 32")]
    DigestLength { path: RelPath, len: usize },
    #[error("entry {path}: {size} bytes, over the per-file limit of {max}")]
    BlobTooLarge { path: RelPath, size: u64, max: u64 },
    #[error("snapshot is {total} bytes, over the limit of {max}")]
    TotalTooLarge { total: u64, max: u64 },
    #[error("{0}: repodata files must sit directly in repodata/")]
    NestedRepodata(RelPath),
    #[error("manifest has no {REPOMD_PATH}")]
    NoRepomd,
    #[error("manifest expires ({expires}) before it was created ({created})")]
    ExpiresBeforeCreated { created: i64, expires: i64 },
    #[error("manifest version must be at least 1")]
    VersionZero,
}

/// A repo name such as `f41-critical/x86_64`: 1–4 segments of
/// `[A-Za-z0-9._+-]`, none starting with a dot, at most 128 bytes.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RepoName(String);

impl RepoName {
    /// Validates a repo name.
    pub fn new(name: &str) -> Result<Self, ManifestError> {
        let bad = |why| ManifestError::RepoName {
            name: name.to_owned(),
            why,
        };
        if name.is_empty() || name.len() > 128 {
            return Err(bad("must be 1 to 128 bytes"));
        }
        let segments: Vec<&str> = name.split('/').collect();
        if segments.len() > 4 {
            return Err(bad("at most 4 segments"));
        }
        for s in segments {
            if s.is_empty() {
                return Err(bad("empty segment"));
            }
            if s.starts_with('.') {
                return Err(bad("segments may not start with '.'"));
            }
            if !s
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._+-".contains(&b))
            {
                return Err(bad("only A-Z a-z 0-9 . _ + - and / are allowed"));
            }
        }
        Ok(Self(name.to_owned()))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A single path segment for file names (`/` becomes `%2F`; `%` never
    /// appears in a valid name, so this is reversible).
    pub fn file_stem(&self) -> String {
        self.0.replace('/', "%2F")
    }
}

impl std::str::FromStr for RepoName {
    type Err = ManifestError;
    fn from_str(s: &str) -> Result<Self, ManifestError> {
        Self::new(s)
    }
}

impl fmt::Display for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RepoName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

/// One file of a snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub path: RelPath,
    pub size: u64,
    pub sha256: Sha256Digest,
}

impl Entry {
    /// True for files that live in the versioned `repodata/` directory.
    pub fn is_repodata(&self) -> bool {
        self.path.as_str().starts_with("repodata/")
    }
}

/// An entry to encode: decoded, or as it came off the wire (a delta's).
#[derive(Clone, Copy, Debug)]
pub(crate) enum EntryRef<'a> {
    Decoded(&'a Entry),
    Wire(&'a pb::Entry),
}

impl<'a> EntryRef<'a> {
    /// The wire form, through `scratch` for a decoded entry (reused, so
    /// encoding 100,000 entries does not build 100,000 messages).
    fn as_pb<'s>(&self, scratch: &'s mut pb::Entry) -> &'s pb::Entry
    where
        'a: 's,
    {
        match *self {
            EntryRef::Wire(e) => e,
            EntryRef::Decoded(e) => {
                scratch.path.clear();
                scratch.path.push_str(e.path.as_str());
                scratch.size = e.size;
                scratch.sha256 = Bytes::copy_from_slice(&e.sha256.0);
                scratch
            }
        }
    }
}

/// The manifest's fields before its entries.
pub(crate) fn header(repo: &RepoName, version: u64, created: i64, expires: i64) -> pb::Manifest {
    pb::Manifest {
        format: FORMAT,
        repo: repo.as_str().to_owned(),
        version,
        created_unix: created,
        expires_unix: expires,
        entries: Vec::new(),
    }
}

/// Field number of `Manifest.entries`.
const ENTRIES_FIELD: u32 = 6;

/// The length of [`encode_parts`]'s output, computed without writing it:
/// checked against a limit before the bytes are built.
pub(crate) fn encoded_len<'a>(
    head: &pb::Manifest,
    entries: impl Iterator<Item = EntryRef<'a>>,
) -> usize {
    let mut scratch = pb::Entry::default();
    entries.fold(head.encoded_len(), |len, e| {
        len.saturating_add(prost::encoding::message::encoded_len(
            ENTRIES_FIELD,
            e.as_pb(&mut scratch),
        ))
    })
}

/// Manifest bytes from a header and its entries, in order: the one encoder
/// of signed bytes, used by the origin to sign and by an agent to rebuild a
/// delta ([`crate::delta`]), so both write the same bytes. They are exactly
/// prost's encoding of the whole `pb::Manifest` (fields in tag order, the
/// entries last), without first copying every entry into one. `len` is
/// [`encoded_len`]'s answer: the buffer is allocated once, to size.
pub(crate) fn encode_parts<'a>(
    head: &pb::Manifest,
    entries: impl Iterator<Item = EntryRef<'a>>,
    len: usize,
) -> Vec<u8> {
    let mut scratch = pb::Entry::default();
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&head.encode_to_vec());
    for e in entries {
        prost::encoding::message::encode(ENTRIES_FIELD, e.as_pb(&mut scratch), &mut out);
    }
    out
}

/// A validated manifest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    pub repo: RepoName,
    pub version: u64,
    pub created_unix: i64,
    pub expires_unix: i64,
    /// Sorted by path, unique.
    pub entries: Vec<Entry>,
}

impl Manifest {
    /// The entry at `path` (entries are sorted: a binary search).
    pub fn entry(&self, path: &str) -> Option<&Entry> {
        self.entries
            .binary_search_by(|e| e.path.as_str().cmp(path))
            .ok()
            .map(|i| &self.entries[i])
    }

    /// True when some entry has `path`.
    pub fn has_path(&self, path: &str) -> bool {
        self.entry(path).is_some()
    }

    /// Encodes to the exact bytes that get signed.
    pub fn encode(&self) -> Bytes {
        let head = header(
            &self.repo,
            self.version,
            self.created_unix,
            self.expires_unix,
        );
        let entries = || self.entries.iter().map(EntryRef::Decoded);
        let len = encoded_len(&head, entries());
        Bytes::from(encode_parts(&head, entries(), len))
    }

    /// Decodes and applies every rule of §4. Call only on bytes whose
    /// signature has been verified.
    pub fn decode(bytes: &[u8], limits: &Limits) -> Result<Self, ManifestError> {
        if bytes.len() > limits.max_manifest_bytes {
            return Err(ManifestError::TooLarge {
                len: bytes.len(),
                max: limits.max_manifest_bytes,
            });
        }
        let msg = pb::Manifest::decode(bytes)?;
        if msg.format != FORMAT {
            return Err(ManifestError::Format(msg.format));
        }
        let repo = RepoName::new(&msg.repo)?;
        if msg.version == 0 {
            return Err(ManifestError::VersionZero);
        }
        if msg.expires_unix < msg.created_unix {
            return Err(ManifestError::ExpiresBeforeCreated {
                created: msg.created_unix,
                expires: msg.expires_unix,
            });
        }
        if msg.entries.len() > limits.max_entries {
            return Err(ManifestError::TooManyEntries {
                count: msg.entries.len(),
                max: limits.max_entries,
            });
        }
        let mut entries = Vec::with_capacity(msg.entries.len());
        for (index, e) in msg.entries.into_iter().enumerate() {
            let path = RelPath::new(&e.path, limits.max_path_bytes)
                .map_err(|source| ManifestError::Path { index, source })?;
            let sha256 =
                Sha256Digest::from_slice(&e.sha256).map_err(|_| ManifestError::DigestLength {
                    path: path.clone(),
                    len: e.sha256.len(),
                })?;
            entries.push(Entry {
                path,
                size: e.size,
                sha256,
            });
        }
        let manifest = Self {
            repo,
            version: msg.version,
            created_unix: msg.created_unix,
            expires_unix: msg.expires_unix,
            entries,
        };
        manifest.check_entries(limits)?;
        Ok(manifest)
    }

    /// Rules over the entry list as a whole.
    pub fn check_entries(&self, limits: &Limits) -> Result<(), ManifestError> {
        let mut total: u64 = 0;
        let mut dirs = HashSet::new();
        for pair in self.entries.windows(2) {
            let (a, b) = (&pair[0].path, &pair[1].path);
            if a == b {
                return Err(ManifestError::Duplicate(a.clone()));
            }
            if a > b {
                return Err(ManifestError::Unsorted(b.clone(), a.clone()));
            }
        }
        for e in &self.entries {
            if e.size > limits.max_blob_bytes {
                return Err(ManifestError::BlobTooLarge {
                    path: e.path.clone(),
                    size: e.size,
                    max: limits.max_blob_bytes,
                });
            }
            total = total.saturating_add(e.size);
            if e.is_repodata() && e.path.as_str().matches('/').count() != 1 {
                return Err(ManifestError::NestedRepodata(e.path.clone()));
            }
            let mut dir = e.path.as_str();
            while let Some((parent, _)) = dir.rsplit_once('/') {
                dirs.insert(parent);
                dir = parent;
            }
        }
        if total > limits.max_total_bytes {
            return Err(ManifestError::TotalTooLarge {
                total,
                max: limits.max_total_bytes,
            });
        }
        if let Some(e) = self.entries.iter().find(|e| dirs.contains(e.path.as_str())) {
            return Err(ManifestError::FileAndDirectory(e.path.to_string()));
        }
        if !self.entries.iter().any(|e| e.path.as_str() == REPOMD_PATH) {
            return Err(ManifestError::NoRepomd);
        }
        Ok(())
    }

    /// The entry for `repodata/repomd.xml`.
    pub fn repomd(&self) -> Option<&Entry> {
        self.entries.iter().find(|e| e.path.as_str() == REPOMD_PATH)
    }

    /// Sum of entry sizes.
    pub fn total_bytes(&self) -> u64 {
        self.entries.iter().map(|e| e.size).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    pub(crate) fn sample() -> Manifest {
        let entry = |p: &str, body: &[u8]| Entry {
            path: RelPath::new(p, 1024).unwrap(),
            size: body.len() as u64,
            sha256: Sha256Digest::of(body),
        };
        Manifest {
            repo: RepoName::new("f41-critical/x86_64").unwrap(),
            version: 7,
            created_unix: 1_790_000_000,
            expires_unix: 1_790_600_000,
            entries: vec![
                entry("Packages/h/hello.rpm", b"rpm"),
                entry("repodata/abc-primary.xml.gz", b"primary"),
                entry("repodata/repomd.xml", b"repomd"),
            ],
        }
    }

    #[test]
    fn round_trip() {
        let m = sample();
        let decoded = Manifest::decode(&m.encode(), &Limits::default()).unwrap();
        assert_eq!(decoded, m);
        assert_eq!(decoded.repomd().unwrap().size, 6);
        assert_eq!(m.repo.file_stem(), "f41-critical%2Fx86_64");
    }

    #[test]
    fn encodes_exactly_as_prost_encodes_the_whole_message() {
        let mut m = sample();
        // An empty file: prost leaves a zero size out, and so must we.
        m.entries.insert(
            0,
            Entry {
                path: RelPath::new("Packages/e/empty", 64).unwrap(),
                size: 0,
                sha256: Sha256Digest::of(b""),
            },
        );
        let whole = pb::Manifest {
            entries: m
                .entries
                .iter()
                .map(|e| pb::Entry {
                    path: e.path.to_string(),
                    size: e.size,
                    sha256: Bytes::copy_from_slice(&e.sha256.0),
                })
                .collect(),
            ..header(&m.repo, m.version, m.created_unix, m.expires_unix)
        };
        let bytes = m.encode();
        assert_eq!(&bytes[..], &whole.encode_to_vec()[..]);
        let head = header(&m.repo, m.version, m.created_unix, m.expires_unix);
        assert_eq!(
            encoded_len(&head, m.entries.iter().map(EntryRef::Decoded)),
            bytes.len()
        );
    }

    fn refused(edit: impl FnOnce(&mut Manifest)) -> ManifestError {
        let mut m = sample();
        edit(&mut m);
        Manifest::decode(&m.encode(), &Limits::default()).unwrap_err()
    }

    #[test]
    fn refuses_structural_errors() {
        let dup = refused(|m| {
            let e = m.entries[0].clone();
            m.entries.insert(0, e);
        });
        assert!(matches!(dup, ManifestError::Duplicate(_)), "{dup}");
        let unsorted = refused(|m| m.entries.swap(0, 1));
        assert!(
            matches!(unsorted, ManifestError::Unsorted(..)),
            "{unsorted}"
        );
        let file_dir = refused(|m| {
            m.entries.insert(
                0,
                Entry {
                    path: RelPath::new("Packages/h", 64).unwrap(),
                    size: 1,
                    sha256: Sha256Digest::of(b"x"),
                },
            )
        });
        assert!(
            matches!(file_dir, ManifestError::FileAndDirectory(_)),
            "{file_dir}"
        );
        let no_repomd = refused(|m| {
            m.entries.pop();
        });
        assert!(matches!(no_repomd, ManifestError::NoRepomd));
        let nested = refused(|m| {
            m.entries.push(Entry {
                path: RelPath::new("repodata/x/y", 64).unwrap(),
                size: 1,
                sha256: Sha256Digest::of(b"x"),
            })
        });
        assert!(
            matches!(nested, ManifestError::NestedRepodata(_)),
            "{nested}"
        );
        assert!(matches!(
            refused(|m| m.version = 0),
            ManifestError::VersionZero
        ));
        assert!(matches!(
            refused(|m| m.expires_unix = 0),
            ManifestError::ExpiresBeforeCreated { .. }
        ));
        let limits = Limits {
            max_entries: 2,
            ..Limits::default()
        };
        assert!(matches!(
            Manifest::decode(&sample().encode(), &limits),
            Err(ManifestError::TooManyEntries { count: 3, max: 2 })
        ));
        let limits = Limits {
            max_manifest_bytes: 10,
            ..Limits::default()
        };
        assert!(matches!(
            Manifest::decode(&sample().encode(), &limits),
            Err(ManifestError::TooLarge { .. })
        ));
    }

    #[test]
    fn refuses_bad_repo_names() {
        for name in ["", "a//b", ".hidden", "a/../b", "a b", "a/b/c/d/e", "ü"] {
            assert!(RepoName::new(name).is_err(), "{name:?}");
        }
        assert!(RepoName::new("f41-critical/x86_64").is_ok());
    }

    proptest! {
        /// Arbitrary bytes never panic the decoder.
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Manifest::decode(&bytes, &Limits::default());
        }

        /// Whatever decodes re-encodes to a manifest that decodes the same.
        #[test]
        fn decoded_manifests_round_trip(paths in proptest::collection::btree_set("[a-z]{1,8}(/[a-z]{1,8}){0,2}", 0..8)) {
            let mut m = sample();
            m.entries.retain(|e| e.path.as_str() == REPOMD_PATH);
            for p in paths {
                if let Ok(path) = RelPath::new(&p, 1024) {
                    m.entries.push(Entry { path, size: 1, sha256: Sha256Digest::of(p.as_bytes()) });
                }
            }
            m.entries.sort_by(|a, b| a.path.cmp(&b.path));
            if let Ok(d) = Manifest::decode(&m.encode(), &Limits::default()) {
                prop_assert_eq!(Manifest::decode(&d.encode(), &Limits::default()).unwrap(), d);
            }
        }
    }
}
