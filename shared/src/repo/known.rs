//! The `<package>` entries of the latest published primary.xml, by the
//! SHA-256 of their exact bytes: an entry whose bytes come again in the
//! next primary.xml is neither parsed nor checked again ([`super::split`]),
//! so a publish costs what changed rather than what the repo holds.

use std::collections::HashMap;

use crate::digest::Sha256Digest;

/// Listings (the exact bytes of one `<package>…</package>`) of a published
/// version, each with the manifest entry it listed.
#[derive(Clone, Debug, Default)]
pub struct KnownPackages {
    /// SHA-256 of a listing → index of its file in the manifest's entries.
    by_listing: HashMap<Sha256Digest, u32>,
    /// How many entries that manifest has: a check that it is the one
    /// these indices point into.
    entries: usize,
}

impl KnownPackages {
    /// From the files of a validated repo, sorted as the manifest lists
    /// them, each with the listing that declared it, if one may be known.
    pub(super) fn new<'a>(files: impl ExactSizeIterator<Item = Option<&'a Sha256Digest>>) -> Self {
        let entries = files.len();
        let by_listing = files
            .enumerate()
            .filter_map(|(i, listing)| Some((*listing?, u32::try_from(i).ok()?)))
            .collect();
        Self {
            by_listing,
            entries,
        }
    }

    /// The manifest entry `listing` declared, if it is known.
    pub fn get(&self, listing: &Sha256Digest) -> Option<u32> {
        self.by_listing.get(listing).copied()
    }

    /// How many listings are known.
    pub fn len(&self) -> usize {
        self.by_listing.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_listing.is_empty()
    }

    /// Whether these listings can index a manifest of `entries` entries.
    pub(super) fn fits(&self, entries: usize) -> bool {
        self.entries == entries
    }
}
