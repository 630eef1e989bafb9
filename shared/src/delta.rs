//! Delta offers (docs/PROTOCOL.md "Delta offers"): a new manifest sent as
//! its changes against the one an agent has live, so a publish that changes
//! k files sends O(k) bytes of manifest however large the repo is.
//!
//! A delta is only a shorter way to send the same signed bytes: the agent
//! rebuilds them from its live manifest with the one encoder the origin
//! signs with ([`crate::manifest`]), checks their digest, and then verifies
//! the signatures over them exactly as for a whole manifest. Nothing in a
//! delta is trusted; a delta that does not rebuild is refused with
//! `REJECT_DELTA_BASE`, and the origin sends the whole manifest instead.

use std::cmp::Ordering;
use std::iter::Peekable;

use bytes::Bytes;
use hotpush_proto as pb;

use crate::digest::Sha256Digest;
use crate::limits::Limits;
use crate::manifest::{self, Entry, EntryRef, ManifestError, RepoName};
use crate::snapshot::Snapshot;

/// Why a delta could not be rebuilt into manifest bytes.
#[derive(Debug, thiserror::Error)]
pub enum DeltaError {
    #[error("{0}")]
    Repo(#[from] ManifestError),
    #[error(
        "a delta against {repo} version {base_version}, but this agent has no snapshot of it live; send the whole manifest"
    )]
    NoBase { repo: RepoName, base_version: u64 },
    #[error(
        "a delta against {repo} version {base_version} ({base}), but this agent has version {live} ({live_digest}) live; send the whole manifest"
    )]
    WrongBase {
        repo: RepoName,
        base_version: u64,
        base: String,
        live: u64,
        live_digest: Sha256Digest,
    },
    #[error("the delta's {field} is {len} bytes, not 32")]
    DigestLength { field: &'static str, len: usize },
    #[error("the delta changes {count} entries, over the limit of {max}")]
    TooManyChanges { count: usize, max: usize },
    #[error("the rebuilt manifest would be {len} bytes, over the limit of {max}")]
    TooLarge { len: usize, max: usize },
    #[error(
        "the delta does not rebuild the manifest it names: got sha256 {got}, expected {expected}; send the whole manifest"
    )]
    Mismatch { got: Sha256Digest, expected: String },
}

impl DeltaError {
    /// True when the origin should answer with the whole manifest: the
    /// agent holds another base, or the delta did not rebuild. Limits and
    /// malformed fields would fail the same way as a whole manifest.
    pub fn wants_whole(&self) -> bool {
        matches!(
            self,
            DeltaError::NoBase { .. } | DeltaError::WrongBase { .. } | DeltaError::Mismatch { .. }
        )
    }
}

/// The change from one snapshot of a repo to a newer one, ready to offer
/// to every agent that has the older one live.
#[derive(Clone, Debug)]
pub struct Delta {
    msg: pb::ManifestDelta,
}

impl Delta {
    /// The delta taking `base` to `new`; `None` unless `base` is an older
    /// version of the same repo.
    pub fn between(base: &Snapshot, new: &Snapshot) -> Option<Self> {
        if base.repo() != new.repo() || base.version() >= new.version() {
            return None;
        }
        let (mut removed, mut changed) = (Vec::new(), Vec::new());
        let wire = |e: &Entry| pb::Entry {
            path: e.path.to_string(),
            size: e.size,
            sha256: Bytes::copy_from_slice(&e.sha256.0),
        };
        let (mut old, mut now) = (
            base.manifest.entries.iter().peekable(),
            new.manifest.entries.iter().peekable(),
        );
        loop {
            let order = match (old.peek(), now.peek()) {
                (None, None) => break,
                (Some(_), None) => Ordering::Less,
                (None, Some(_)) => Ordering::Greater,
                (Some(o), Some(n)) => o.path.cmp(&n.path),
            };
            match order {
                Ordering::Less => {
                    if let Some(o) = old.next() {
                        removed.push(o.path.to_string());
                    }
                }
                Ordering::Greater => changed.extend(now.next().map(wire)),
                Ordering::Equal => {
                    if let (Some(o), Some(n)) = (old.next(), now.next())
                        && (o.size, o.sha256) != (n.size, n.sha256)
                    {
                        changed.push(wire(n));
                    }
                }
            }
        }
        let m = &new.manifest;
        Some(Self {
            msg: pb::ManifestDelta {
                repo: m.repo.to_string(),
                base_version: base.version(),
                base_digest: Bytes::copy_from_slice(&base.digest.0),
                manifest_digest: Bytes::copy_from_slice(&new.digest.0),
                version: m.version,
                created_unix: m.created_unix,
                expires_unix: m.expires_unix,
                removed,
                changed,
                signatures: new.signed.to_pb().signatures,
            },
        })
    }

    /// The version this delta starts from.
    pub fn base_version(&self) -> u64 {
        self.msg.base_version
    }

    /// True when this delta rebuilds exactly `snapshot`.
    pub fn leads_to(&self, snapshot: &Snapshot) -> bool {
        self.msg.manifest_digest[..] == snapshot.digest.0
    }

    /// Entries added, replaced or removed.
    pub fn changes(&self) -> usize {
        self.msg.changed.len() + self.msg.removed.len()
    }

    /// The wire form.
    pub fn to_pb(&self) -> pb::ManifestDelta {
        self.msg.clone()
    }
}

/// The repo a delta names, to find its base (not trusted: it only selects
/// which live manifest to rebuild from).
pub fn repo_of(delta: &pb::ManifestDelta) -> Result<RepoName, DeltaError> {
    Ok(RepoName::new(&delta.repo)?)
}

/// Rebuilds the signed manifest a delta stands for from `base` (the live
/// snapshot of the delta's repo). The result is unverified: the caller
/// verifies its signatures next, as for a whole manifest. Memory is bounded
/// before any is spent: the change count by `max_entries`, the rebuilt
/// bytes by `max_manifest_bytes`.
pub fn rebuild(
    base: &Snapshot,
    delta: pb::ManifestDelta,
    limits: &Limits,
) -> Result<pb::SignedManifest, DeltaError> {
    let digest = |field, b: &Bytes| {
        Sha256Digest::from_slice(b).map_err(|_| DeltaError::DigestLength {
            field,
            len: b.len(),
        })
    };
    let base_digest = digest("base_digest", &delta.base_digest)?;
    let expected = digest("manifest_digest", &delta.manifest_digest)?;
    if base_digest != base.digest {
        return Err(DeltaError::WrongBase {
            repo: base.repo().clone(),
            base_version: delta.base_version,
            base: base_digest.to_hex(),
            live: base.version(),
            live_digest: base.digest,
        });
    }
    let count = delta.changed.len() + delta.removed.len();
    if count > limits.max_entries {
        return Err(DeltaError::TooManyChanges {
            count,
            max: limits.max_entries,
        });
    }
    let head = manifest::header(
        base.repo(),
        delta.version,
        delta.created_unix,
        delta.expires_unix,
    );
    let merged = || Merge {
        base: base.manifest.entries.iter().peekable(),
        changed: delta.changed.iter().peekable(),
        removed: delta.removed.iter().peekable(),
    };
    let len = manifest::encoded_len(&head, merged());
    if len > limits.max_manifest_bytes {
        return Err(DeltaError::TooLarge {
            len,
            max: limits.max_manifest_bytes,
        });
    }
    let bytes = manifest::encode_parts(&head, merged(), len);
    let got = Sha256Digest::of(&bytes);
    if got != expected {
        return Err(DeltaError::Mismatch {
            got,
            expected: expected.to_hex(),
        });
    }
    Ok(pb::SignedManifest {
        manifest_bytes: Bytes::from(bytes),
        signatures: delta.signatures,
    })
}

/// The base's entries with the delta applied, in path order: a changed
/// entry replaces the base entry of its path or is inserted before the
/// next larger one; a removed path drops the base entry. Out-of-order or
/// stray input only yields other bytes, which the digest check refuses.
#[derive(Clone)]
struct Merge<'a> {
    base: Peekable<std::slice::Iter<'a, Entry>>,
    changed: Peekable<std::slice::Iter<'a, pb::Entry>>,
    removed: Peekable<std::slice::Iter<'a, String>>,
}

impl<'a> Iterator for Merge<'a> {
    type Item = EntryRef<'a>;

    fn next(&mut self) -> Option<EntryRef<'a>> {
        loop {
            let Some(b) = self.base.peek() else {
                return self.changed.next().map(EntryRef::Wire);
            };
            let path = b.path.as_str();
            match self.changed.peek().map(|c| c.path.as_str().cmp(path)) {
                Some(Ordering::Less) => return self.changed.next().map(EntryRef::Wire),
                Some(Ordering::Equal) => {
                    self.base.next();
                    return self.changed.next().map(EntryRef::Wire);
                }
                Some(Ordering::Greater) | None => {}
            }
            while self.removed.next_if(|r| r.as_str() < path).is_some() {}
            if self.removed.next_if(|r| r.as_str() == path).is_some() {
                self.base.next();
                continue;
            }
            return self.base.next().map(EntryRef::Decoded);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Manifest;
    use crate::relpath::RelPath;
    use crate::sign::SigningKey;
    use proptest::prelude::*;

    fn entry(path: &str, body: &[u8]) -> Entry {
        Entry {
            path: RelPath::new(path, 1024).unwrap(),
            size: body.len() as u64,
            sha256: Sha256Digest::of(body),
        }
    }

    fn snapshot(key: &SigningKey, version: u64, files: &[(&str, &[u8])]) -> Snapshot {
        let mut entries: Vec<Entry> = files.iter().map(|(p, b)| entry(p, b)).collect();
        entries.push(entry("repodata/repomd.xml", &version.to_be_bytes()));
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        let manifest = Manifest {
            repo: RepoName::new("f41/x86_64").unwrap(),
            version,
            created_unix: 1_790_000_000 + version as i64,
            expires_unix: 1_790_600_000,
            entries,
        };
        Snapshot::new(key.sign(manifest.encode()), manifest)
    }

    fn rebuilt(base: &Snapshot, new: &Snapshot) -> Result<pb::SignedManifest, DeltaError> {
        let delta = Delta::between(base, new).unwrap();
        rebuild(base, delta.to_pb(), &Limits::default())
    }

    #[test]
    fn rebuilds_the_exact_signed_bytes_from_a_few_changes() {
        let key = SigningKey::generate().unwrap();
        let base = snapshot(
            &key,
            1,
            &[("Packages/a.rpm", b"a"), ("Packages/b.rpm", b"b")],
        );
        let new = snapshot(
            &key,
            2,
            &[
                ("Packages/a.rpm", b"a"),
                ("Packages/c.rpm", b"c"),
                ("Packages/0.rpm", b""),
            ],
        );
        let delta = Delta::between(&base, &new).unwrap();
        // b removed; 0 and c added; repomd.xml replaced; a unchanged.
        assert_eq!(delta.changes(), 4);
        assert!(delta.leads_to(&new));
        let signed = rebuild(&base, delta.to_pb(), &Limits::default()).unwrap();
        assert_eq!(signed.manifest_bytes, new.signed.manifest_bytes);
        assert_eq!(signed, new.signed.to_pb());
    }

    #[test]
    fn refuses_another_base_a_tampered_change_and_oversized_results() {
        let key = SigningKey::generate().unwrap();
        let v1 = snapshot(&key, 1, &[("Packages/a.rpm", b"a")]);
        let v2 = snapshot(
            &key,
            2,
            &[("Packages/a.rpm", b"a"), ("Packages/b.rpm", b"b")],
        );
        let v3 = snapshot(&key, 3, &[("Packages/b.rpm", b"b")]);
        let limits = Limits::default();
        let delta = Delta::between(&v2, &v3).unwrap();
        let err = rebuild(&v1, delta.to_pb(), &limits).unwrap_err();
        assert!(
            matches!(err, DeltaError::WrongBase { live: 1, .. }),
            "{err}"
        );
        assert!(err.wants_whole());
        // A changed entry the signature does not cover: other bytes.
        let mut tampered = delta.to_pb();
        tampered.changed[0].size += 1;
        let err = rebuild(&v2, tampered, &limits).unwrap_err();
        assert!(matches!(err, DeltaError::Mismatch { .. }), "{err}");
        let mut stray = delta.to_pb();
        stray.removed.push("Packages/zzz.rpm".into());
        assert!(
            rebuild(&v2, stray.clone(), &limits).is_ok(),
            "a stray removal changes nothing"
        );
        // Out of order, the removal of a.rpm is missed: other bytes.
        stray.removed.reverse();
        let err = rebuild(&v2, stray, &limits).unwrap_err();
        assert!(matches!(err, DeltaError::Mismatch { .. }), "{err}");
        let small = Limits {
            max_manifest_bytes: 64,
            ..Limits::default()
        };
        let err = rebuild(&v2, delta.to_pb(), &small).unwrap_err();
        assert!(matches!(err, DeltaError::TooLarge { max: 64, .. }), "{err}");
        assert!(!err.wants_whole());
        let few = Limits {
            max_entries: 1,
            ..Limits::default()
        };
        let err = rebuild(&v2, delta.to_pb(), &few).unwrap_err();
        assert!(
            matches!(err, DeltaError::TooManyChanges { count: 2, max: 1 }),
            "{err}"
        );
        let mut short = delta.to_pb();
        short.base_digest = Bytes::from_static(b"short");
        assert!(matches!(
            rebuild(&v2, short, &limits),
            Err(DeltaError::DigestLength {
                field: "base_digest",
                len: 5
            })
        ));
        assert!(Delta::between(&v3, &v2).is_none(), "no delta backwards");
    }

    proptest! {
        /// Any pair of file sets: the delta rebuilds the newer manifest's
        /// exact bytes, and carries only what differs.
        #[test]
        fn any_change_rebuilds_exactly(
            old in proptest::collection::btree_map("[a-d]{1,3}", 0u8..4, 0..24),
            new in proptest::collection::btree_map("[a-d]{1,3}", 0u8..4, 0..24),
        ) {
            let key = SigningKey::generate().unwrap();
            let files = |m: &std::collections::BTreeMap<String, u8>| -> Vec<(String, Vec<u8>)> {
                m.iter().map(|(p, b)| (format!("Packages/{p}.rpm"), vec![*b; *b as usize])).collect()
            };
            let (a, b) = (files(&old), files(&new));
            let a: Vec<(&str, &[u8])> = a.iter().map(|(p, d)| (p.as_str(), d.as_slice())).collect();
            let b: Vec<(&str, &[u8])> = b.iter().map(|(p, d)| (p.as_str(), d.as_slice())).collect();
            let (base, next) = (snapshot(&key, 1, &a), snapshot(&key, 2, &b));
            let signed = rebuilt(&base, &next).unwrap();
            prop_assert_eq!(signed.manifest_bytes, next.signed.manifest_bytes.clone());
            let delta = Delta::between(&base, &next).unwrap();
            let differing = old.keys().chain(new.keys()).collect::<std::collections::BTreeSet<_>>()
                .into_iter().filter(|p| old.get(*p) != new.get(*p)).count();
            // Plus repomd.xml, which differs in every version here.
            prop_assert_eq!(delta.changes(), differing + 1);
        }
    }
}
