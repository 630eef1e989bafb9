//! sha256 by file identity (path, size, mtime, inode, device), so that an
//! unchanged file is not re-hashed on every publish: the same
//! bet rsync and make make.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::digest::Sha256Digest;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FileKey {
    /// Absolute path.
    pub path: String,
    pub size: u64,
    pub mtime_ns: i128,
    pub ino: u64,
    pub dev: u64,
}

impl FileKey {
    /// Key of `path` from metadata already fetched (without following symlinks).
    pub fn from_metadata(path: &Path, meta: &fs::Metadata) -> Self {
        Self {
            path: path.to_string_lossy().into_owned(),
            size: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            ino: meta.ino(),
            dev: meta.dev(),
        }
    }
}

/// sha256 by file identity, so an unchanged file is not re-hashed on every
/// publish. Consulted only when the repodata declares sha256, so
/// a hit can be compared with the declaration directly.
///
/// When validation stores into a blob store, a hit also vouches that the
/// store holds the blob: a cache must only keep what was stored (the
/// origin saves its entries after the import is durable, and never deletes
/// blobs), so an unchanged file costs one `stat` and nothing else.
pub trait HashCache {
    fn get(&self, key: &FileKey) -> Option<Sha256Digest>;
    fn put(&mut self, key: FileKey, sha256: Sha256Digest);
}

/// Hashes everything every time.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoCache;

impl HashCache for NoCache {
    fn get(&self, _key: &FileKey) -> Option<Sha256Digest> {
        None
    }
    fn put(&mut self, _key: FileKey, _sha256: Sha256Digest) {}
}

/// In-memory cache, for tests and one-shot tools.
#[derive(Clone, Debug, Default)]
pub struct MemoryCache {
    pub entries: HashMap<FileKey, Sha256Digest>,
}

impl HashCache for MemoryCache {
    fn get(&self, key: &FileKey) -> Option<Sha256Digest> {
        self.entries.get(key).copied()
    }
    fn put(&mut self, key: FileKey, sha256: Sha256Digest) {
        self.entries.insert(key, sha256);
    }
}
