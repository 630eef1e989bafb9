//! Explicit limits. Every number here bounds memory, disk or time that a
//! peer could otherwise make us spend; each default says why it is what it is.

use serde::{Deserialize, Serialize};

/// Limits enforced while building, sending and receiving snapshots.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Entries in one manifest. Fedora's largest repos hold ~70,000 packages;
    /// the emergency repo holds a handful.
    pub max_entries: usize,
    /// Sum of entry sizes in one snapshot: 64 GiB.
    pub max_total_bytes: u64,
    /// One blob (one package): 4 GiB, rpm's own header limit.
    pub max_blob_bytes: u64,
    /// Encoded manifest: 16 MiB (~100 bytes per entry).
    pub max_manifest_bytes: usize,
    /// One Chunk message's payload: 1 MiB (64 KiB is what the origin sends).
    pub max_chunk_bytes: usize,
    /// One path: 1024 bytes; one path segment: 255 bytes (NAME_MAX).
    pub max_path_bytes: usize,
    /// Decompressed primary.xml: 2 GiB, against decompression bombs.
    pub max_primary_bytes: u64,
    /// repomd.xml: 1 MiB.
    pub max_repomd_bytes: u64,
}

/// Bytes per chunk the origin sends: 64 KiB measured fastest on loopback.
pub const CHUNK_BYTES: usize = 64 * 1024;

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_entries: 200_000,
            max_total_bytes: 64 << 30,
            max_blob_bytes: 4 << 30,
            max_manifest_bytes: 16 << 20,
            max_chunk_bytes: 1 << 20,
            max_path_bytes: 1024,
            max_primary_bytes: 2 << 30,
            max_repomd_bytes: 1 << 20,
        }
    }
}
