//! An agent's acknowledgement: which snapshot it now serves, how long each
//! stage took, and whether its public URL serves the new repomd.xml. Built
//! by the agent, checked by whoever pushed (the origin, or a relay).

use bytes::Bytes;
use hotpush_proto as pb;

use crate::digest::Sha256Digest;
use crate::manifest::{ManifestError, RepoName};
use crate::url::PublicUrl;

/// Why a wire ack was refused.
#[derive(Debug, thiserror::Error)]
pub enum AckError {
    #[error("ack names a bad repo: {0}")]
    Repo(#[from] ManifestError),
    #[error("ack carries a bad {what}: {len} bytes, not 32")]
    Digest { what: &'static str, len: usize },
}

/// How long each stage took on the agent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Timings {
    pub verify_ms: u64,
    pub receive_ms: u64,
    /// Staging and the flip itself.
    pub swap_ms: u64,
    /// Staged, waiting for the Flip.
    pub flip_wait_ms: u64,
    /// When `repodata` was switched, Unix milliseconds by the agent's clock.
    pub flipped_unix_ms: u64,
}

/// What the agent saw when it fetched repomd.xml through its public URL
/// after the swap (the partner's front end, as clients reach it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PublicCheck {
    /// The URL it fetched.
    pub url: String,
    /// It served the new repomd.xml.
    pub verified: bool,
    /// Why not, when not.
    pub detail: String,
}

impl PublicCheck {
    /// Whether this check vouches for `public_url`, the URL the pusher lists
    /// for this mirror: the agent must have fetched exactly that URL and
    /// found the new repomd.xml there. `Err` says why not, in plain words.
    pub fn counts_for(&self, public_url: &PublicUrl, repo: &RepoName) -> Result<(), String> {
        let listed = public_url.repomd(repo);
        if !self.verified {
            let detail = if self.detail.is_empty() {
                "not checked"
            } else {
                &self.detail
            };
            return Err(format!("{}: {detail}", self.url));
        }
        if self.url != listed {
            return Err(format!(
                "the agent checked {} but is registered with {listed}: fix --public-url or the agent's public_url",
                self.url
            ));
        }
        Ok(())
    }
}

/// "Verified and live": the agent serves this snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ack {
    pub repo: RepoName,
    pub version: u64,
    pub manifest_digest: Sha256Digest,
    pub repomd_sha256: Sha256Digest,
    pub timings: Timings,
    pub public: PublicCheck,
}

impl From<&Ack> for pb::Ack {
    fn from(a: &Ack) -> Self {
        pb::Ack {
            repo: a.repo.to_string(),
            version: a.version,
            manifest_digest: Bytes::copy_from_slice(&a.manifest_digest.0),
            repomd_sha256: Bytes::copy_from_slice(&a.repomd_sha256.0),
            timings: Some(pb::Timings {
                verify_ms: a.timings.verify_ms,
                receive_ms: a.timings.receive_ms,
                swap_ms: a.timings.swap_ms,
                flip_wait_ms: a.timings.flip_wait_ms,
                flipped_unix_ms: a.timings.flipped_unix_ms,
            }),
            public_url: a.public.url.clone(),
            public_verified: a.public.verified,
            public_detail: a.public.detail.clone(),
        }
    }
}

impl TryFrom<pb::Ack> for Ack {
    type Error = AckError;
    fn try_from(a: pb::Ack) -> Result<Self, AckError> {
        let digest = |what, bytes: &[u8]| {
            Sha256Digest::from_slice(bytes).map_err(|_| AckError::Digest {
                what,
                len: bytes.len(),
            })
        };
        let t = a.timings.unwrap_or_default();
        Ok(Self {
            repo: RepoName::new(&a.repo)?,
            version: a.version,
            manifest_digest: digest("manifest digest", &a.manifest_digest)?,
            repomd_sha256: digest("repomd.xml sha256", &a.repomd_sha256)?,
            timings: Timings {
                verify_ms: t.verify_ms,
                receive_ms: t.receive_ms,
                swap_ms: t.swap_ms,
                flip_wait_ms: t.flip_wait_ms,
                flipped_unix_ms: t.flipped_unix_ms,
            },
            public: PublicCheck {
                url: a.public_url,
                verified: a.public_verified,
                detail: a.public_detail,
            },
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn a_public_check_counts_only_for_the_listed_url() {
        let repo = RepoName::new("r/x86_64").unwrap();
        let url = PublicUrl::parse("http://m.example/hp/").unwrap();
        let mut check = PublicCheck {
            url: url.repomd(&repo),
            verified: true,
            detail: String::new(),
        };
        assert!(check.counts_for(&url, &repo).is_ok());
        let other = PublicUrl::parse("http://other.example/").unwrap();
        assert!(
            check
                .counts_for(&other, &repo)
                .unwrap_err()
                .contains("fix --public-url")
        );
        check.verified = false;
        check.detail = "HTTP 502".into();
        assert!(
            check
                .counts_for(&url, &repo)
                .unwrap_err()
                .ends_with("HTTP 502")
        );
    }

    #[test]
    fn wire_round_trip() {
        let ack = Ack {
            repo: RepoName::new("r/x86_64").unwrap(),
            version: 3,
            manifest_digest: Sha256Digest::of(b"m"),
            repomd_sha256: Sha256Digest::of(b"r"),
            timings: Timings {
                verify_ms: 1,
                receive_ms: 2,
                swap_ms: 3,
                flip_wait_ms: 4,
                flipped_unix_ms: 5,
            },
            public: PublicCheck::default(),
        };
        assert_eq!(Ack::try_from(pb::Ack::from(&ack)).unwrap(), ack);
        let short = pb::Ack {
            manifest_digest: Bytes::from_static(b"x"),
            ..pb::Ack::from(&ack)
        };
        assert!(Ack::try_from(short).is_err());
    }
}
