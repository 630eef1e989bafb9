//! A snapshot as it is stored and pushed: the signed manifest together with
//! its decoded form and digest, decoded in this one place.
//!
//! Stored manifests were verified (agent) or signed (origin) before they
//! were stored, so [`Snapshot::decode`] checks structure, not signatures.

use crate::digest::Sha256Digest;
use crate::limits::Limits;
use crate::manifest::{Entry, Manifest, ManifestError, RepoName};
use crate::sign::{SignError, SignedManifest, Verified};

/// Why stored snapshot bytes did not decode.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("stored signed manifest: {0}")]
    Signed(#[from] SignError),
    #[error("stored manifest: {0}")]
    Manifest(#[from] ManifestError),
}

/// One version of one repo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub signed: SignedManifest,
    pub manifest: Manifest,
    /// SHA-256 of the manifest bytes: the snapshot's identity.
    pub digest: Sha256Digest,
}

impl Snapshot {
    /// Decodes a stored signed manifest (the bytes [`SignedManifest::to_bytes`] wrote).
    pub fn decode(stored: &[u8], limits: &Limits) -> Result<Self, SnapshotError> {
        Self::from_signed(SignedManifest::from_bytes(stored)?, limits)
    }

    /// Decodes the manifest inside `signed`.
    pub fn from_signed(signed: SignedManifest, limits: &Limits) -> Result<Self, SnapshotError> {
        let manifest = Manifest::decode(&signed.manifest_bytes, limits)?;
        Ok(Self::new(signed, manifest))
    }

    /// Decodes the manifest inside a verified one, whose digest is known.
    pub fn from_verified(verified: Verified, limits: &Limits) -> Result<Self, SnapshotError> {
        let manifest = Manifest::decode(&verified.signed.manifest_bytes, limits)?;
        Ok(Self {
            signed: verified.signed,
            manifest,
            digest: verified.digest,
        })
    }

    /// Pairs a signed manifest with its already-decoded form.
    pub fn new(signed: SignedManifest, manifest: Manifest) -> Self {
        let digest = signed.digest();
        Self {
            signed,
            manifest,
            digest,
        }
    }

    pub fn repo(&self) -> &RepoName {
        &self.manifest.repo
    }

    pub fn version(&self) -> u64 {
        self.manifest.version
    }

    /// The `repodata/repomd.xml` entry (every valid manifest has one).
    pub fn repomd(&self) -> Option<&Entry> {
        self.manifest.repomd()
    }
}
