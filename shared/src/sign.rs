//! ed25519 snapshot signatures (docs/PROTOCOL.md "Roles and trust").
//!
//! The origin signs the exact manifest bytes, through their SHA-256 under a
//! label ([`signed_message`]); an agent checks the signature against its
//! trusted keys *before* it decodes or writes anything.

use std::collections::HashMap;
use std::fmt;
use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use bytes::Bytes;
use ed25519_dalek::{Signer, Verifier};
use hotpush_proto as pb;
use prost::Message;

use crate::digest::Sha256Digest;

const SECRET_HEADER: &str = "hotpush ed25519 signing key v1";

/// Why a key or a signature was refused.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("reading key file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("writing key file {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("key file {path} is not a hotpush signing key: {why}")]
    BadKeyFile { path: String, why: &'static str },
    #[error("not an ed25519 public key: {0:?} (expected 64 hex characters)")]
    BadPublicKey(String),
    #[error("randomness unavailable: {0}")]
    Random(String),
    #[error("manifest is not signed by any trusted key (signed by: {0})")]
    UntrustedKey(String),
    #[error("bad signature by trusted key {0}")]
    BadSignature(String),
    #[error("signed manifest does not decode: {0}")]
    Decode(#[from] prost::DecodeError),
    #[error("signature field has the wrong length ({0} bytes)")]
    SignatureLength(usize),
}

/// A key id: SHA-256 of the 32-byte public key.
pub type KeyId = Sha256Digest;

/// The origin's signing key. `Debug` never prints the secret.
pub struct SigningKey(ed25519_dalek::SigningKey);

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey(public {})", self.public_hex())
    }
}

impl SigningKey {
    /// A fresh key from the OS's randomness.
    pub fn generate() -> Result<Self, SignError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| SignError::Random(e.to_string()))?;
        Ok(Self(ed25519_dalek::SigningKey::from_bytes(&seed)))
    }

    /// Loads a key written by [`SigningKey::save`].
    pub fn load(path: &Path) -> Result<Self, SignError> {
        let p = path.display().to_string();
        let text = fs::read_to_string(path).map_err(|source| SignError::Read {
            path: p.clone(),
            source,
        })?;
        let mut lines = text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty());
        if lines.next() != Some(SECRET_HEADER) {
            return Err(SignError::BadKeyFile {
                path: p,
                why: "missing header line",
            });
        }
        let seed = lines
            .next()
            .and_then(|l| hex::decode(l.trim()).ok())
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or(SignError::BadKeyFile {
                path: p,
                why: "second line must be 64 hex characters",
            })?;
        Ok(Self(ed25519_dalek::SigningKey::from_bytes(&seed)))
    }

    /// Writes the key with mode 0600; refuses to overwrite an existing file.
    pub fn save(&self, path: &Path) -> Result<(), SignError> {
        let err = |source| SignError::Write {
            path: path.display().to_string(),
            source,
        };
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(err)?;
        let body = format!(
            "# Keep this file secret: it can sign snapshots for every agent that trusts\n\
             # public key {}.\n{SECRET_HEADER}\n{}\n",
            self.public_hex(),
            hex::encode(self.0.to_bytes())
        );
        f.write_all(body.as_bytes()).map_err(err)?;
        f.sync_all().map_err(err)
    }

    /// The public key as 64 hex characters (what agents list as trusted).
    pub fn public_hex(&self) -> String {
        hex::encode(self.0.verifying_key().to_bytes())
    }

    /// The key id.
    pub fn key_id(&self) -> KeyId {
        Sha256Digest::of(&self.0.verifying_key().to_bytes())
    }

    /// Signs encoded manifest bytes (through their digest: [`signed_message`]).
    pub fn sign(&self, manifest_bytes: Bytes) -> SignedManifest {
        let sig = self
            .0
            .sign(&signed_message(&Sha256Digest::of(&manifest_bytes)));
        SignedManifest {
            manifest_bytes,
            signatures: vec![Signature {
                key_id: self.key_id(),
                sig: sig.to_bytes(),
            }],
        }
    }
}

/// What a signature signs: [`SIGNED_LABEL`], then the SHA-256 of the exact
/// manifest bytes. Ed25519 runs its whole message through SHA-512, twice to
/// sign and once per check: over a 10 MB manifest (100,000 files) that was
/// the largest cost of checking an Offer, on every agent. SHA-256 of the
/// bytes is the snapshot's identity anyway and runs on the CPU's SHA
/// instructions; a signature over it covers the same bytes, since finding
/// other bytes with that digest is a SHA-256 collision.
pub fn signed_message(manifest_digest: &Sha256Digest) -> [u8; SIGNED_LABEL.len() + 32] {
    let mut message = [0u8; SIGNED_LABEL.len() + 32];
    message[..SIGNED_LABEL.len()].copy_from_slice(SIGNED_LABEL);
    message[SIGNED_LABEL.len()..].copy_from_slice(&manifest_digest.0);
    message
}

/// Sets manifest signatures apart from anything else a hotpush key may sign
/// one day (acks, root documents): those carry other labels.
pub const SIGNED_LABEL: &[u8; 28] = b"hotpush manifest sha256 v1:\0";

/// One signature over a manifest ([`signed_message`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signature {
    pub key_id: KeyId,
    pub sig: [u8; 64],
}

/// Manifest bytes plus signatures, as sent in an Offer and kept on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedManifest {
    pub manifest_bytes: Bytes,
    pub signatures: Vec<Signature>,
}

impl SignedManifest {
    /// SHA-256 of the manifest bytes: the snapshot's identity.
    pub fn digest(&self) -> Sha256Digest {
        Sha256Digest::of(&self.manifest_bytes)
    }

    /// To the wire type.
    pub fn to_pb(&self) -> pb::SignedManifest {
        pb::SignedManifest {
            manifest_bytes: self.manifest_bytes.clone(),
            signatures: self
                .signatures
                .iter()
                .map(|s| pb::Signature {
                    key_id: Bytes::copy_from_slice(&s.key_id.0),
                    ed25519_sig: Bytes::copy_from_slice(&s.sig),
                })
                .collect(),
        }
    }

    /// From the wire type; only lengths are checked here.
    pub fn from_pb(msg: pb::SignedManifest) -> Result<Self, SignError> {
        let mut signatures = Vec::with_capacity(msg.signatures.len());
        for s in msg.signatures {
            let key_id = Sha256Digest::from_slice(&s.key_id)
                .map_err(|_| SignError::SignatureLength(s.key_id.len()))?;
            let sig = <[u8; 64]>::try_from(&s.ed25519_sig[..])
                .map_err(|_| SignError::SignatureLength(s.ed25519_sig.len()))?;
            signatures.push(Signature { key_id, sig });
        }
        Ok(Self {
            manifest_bytes: msg.manifest_bytes,
            signatures,
        })
    }

    /// Encoded form for files on disk.
    pub fn to_bytes(&self) -> Vec<u8> {
        self.to_pb().encode_to_vec()
    }

    /// [`SignedManifest::to_bytes`] in three pieces whose concatenation is
    /// that encoding: the field header, the manifest bytes themselves
    /// (shared, not copied) and the signatures. At 100,000 files the
    /// manifest is ~10 MB: the origin stores it without a copy.
    pub fn to_byte_parts(&self) -> [Bytes; 3] {
        let mut head = Vec::with_capacity(11);
        // proto3 leaves an empty field out.
        if !self.manifest_bytes.is_empty() {
            prost::encoding::encode_key(1, prost::encoding::WireType::LengthDelimited, &mut head);
            prost::encoding::encode_varint(self.manifest_bytes.len() as u64, &mut head);
        }
        let tail = pb::SignedManifest {
            manifest_bytes: Bytes::new(),
            ..self.to_pb()
        };
        [
            Bytes::from(head),
            self.manifest_bytes.clone(),
            Bytes::from(tail.encode_to_vec()),
        ]
    }

    /// Decodes the on-disk form.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, SignError> {
        Self::from_pb(pb::SignedManifest::decode(bytes)?)
    }
}

/// A signed manifest a trusted key's signature was checked over, with the
/// digest that check computed from its bytes. Only [`TrustedKeys::accept`]
/// makes one, so the digest is always that of these bytes.
#[derive(Debug)]
pub struct Verified {
    pub(crate) signed: SignedManifest,
    pub(crate) digest: Sha256Digest,
    key_id: KeyId,
}

impl Verified {
    /// The trusted key whose signature verified.
    pub fn key_id(&self) -> KeyId {
        self.key_id
    }
}

/// The origin public keys an agent accepts. Several keys may be trusted at
/// once so that a key can be rotated without downtime.
#[derive(Clone, Debug, Default)]
pub struct TrustedKeys {
    keys: HashMap<KeyId, ed25519_dalek::VerifyingKey>,
}

impl TrustedKeys {
    /// From public keys in hex.
    pub fn from_hex<'a>(keys: impl IntoIterator<Item = &'a str>) -> Result<Self, SignError> {
        let mut trusted = Self::default();
        for k in keys {
            let bytes = hex::decode(k.trim())
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .ok_or_else(|| SignError::BadPublicKey(k.to_owned()))?;
            let key = ed25519_dalek::VerifyingKey::from_bytes(&bytes)
                .map_err(|_| SignError::BadPublicKey(k.to_owned()))?;
            trusted.keys.insert(Sha256Digest::of(&bytes), key);
        }
        Ok(trusted)
    }

    /// Number of trusted keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// True when no key is trusted (nothing can be installed).
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Accepts when at least one signature by a trusted key verifies over the
    /// exact bytes ([`signed_message`]). A bad signature by a trusted key is
    /// reported as such even if other signatures exist, so tampering is never
    /// mistaken for "unknown key". The manifest comes back with the digest
    /// the check computed: at 100,000 files that is ~10 MB of SHA-256 the
    /// snapshot does not compute again.
    pub fn accept(&self, signed: SignedManifest) -> Result<Verified, SignError> {
        let digest = signed.digest();
        let message = signed_message(&digest);
        let mut bad = None;
        for s in &signed.signatures {
            let Some(key) = self.keys.get(&s.key_id) else {
                continue;
            };
            let sig = ed25519_dalek::Signature::from_bytes(&s.sig);
            if key.verify_strict(&message, &sig).is_ok() && key.verify(&message, &sig).is_ok() {
                return Ok(Verified {
                    key_id: s.key_id,
                    signed,
                    digest,
                });
            }
            bad = Some(s.key_id);
        }
        if let Some(key_id) = bad {
            return Err(SignError::BadSignature(key_id.to_hex()));
        }
        let seen: Vec<String> = signed
            .signatures
            .iter()
            .map(|s| s.key_id.to_hex()[..16].to_owned())
            .collect();
        Err(SignError::UntrustedKey(if seen.is_empty() {
            "nobody".into()
        } else {
            seen.join(", ")
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// [`TrustedKeys::accept`], for the key it names.
    fn verify(trusted: &TrustedKeys, signed: &SignedManifest) -> Result<KeyId, SignError> {
        trusted.accept(signed.clone()).map(|v| v.key_id())
    }

    #[test]
    fn accept_keeps_the_digest_it_checked_and_refuses_tampered_bytes() {
        let key = SigningKey::generate().unwrap();
        let trusted = TrustedKeys::from_hex([key.public_hex().as_str()]).unwrap();
        let signed = key.sign(Bytes::from_static(b"manifest"));
        let verified = trusted.accept(signed.clone()).unwrap();
        assert_eq!(verified.digest, Sha256Digest::of(b"manifest"));
        assert_eq!(verified.key_id(), key.key_id());
        assert_eq!(verified.signed, signed);
        let mut tampered = signed;
        tampered.manifest_bytes = Bytes::from_static(b"manifesT");
        assert!(matches!(
            trusted.accept(tampered.clone()),
            Err(SignError::BadSignature(_))
        ));
        assert!(matches!(
            verify(&trusted, &tampered),
            Err(SignError::BadSignature(_))
        ));
    }

    #[test]
    fn the_signature_is_over_the_label_and_the_digest_not_the_bytes() {
        let key = SigningKey::generate().unwrap();
        let trusted = TrustedKeys::from_hex([key.public_hex().as_str()]).unwrap();
        let bytes = Bytes::from_static(b"the exact manifest bytes");
        let signed = key.sign(bytes.clone());
        let sig = ed25519_dalek::Signature::from_bytes(&signed.signatures[0].sig);
        let mut expected = SIGNED_LABEL.to_vec();
        expected.extend_from_slice(&Sha256Digest::of(&bytes).0);
        assert_eq!(&signed_message(&signed.digest())[..], &expected[..]);
        assert!(key.0.verifying_key().verify_strict(&expected, &sig).is_ok());
        // A signature over the raw bytes (or over the bare digest) is not one.
        for message in [&bytes[..], &Sha256Digest::of(&bytes).0[..]] {
            let raw = SignedManifest {
                manifest_bytes: bytes.clone(),
                signatures: vec![Signature {
                    key_id: key.key_id(),
                    sig: key.0.sign(message).to_bytes(),
                }],
            };
            assert!(matches!(
                verify(&trusted, &raw),
                Err(SignError::BadSignature(_))
            ));
        }
    }

    #[test]
    fn sign_verify_and_refuse() {
        let key = SigningKey::generate().unwrap();
        let other = SigningKey::generate().unwrap();
        let trusted = TrustedKeys::from_hex([key.public_hex().as_str()]).unwrap();
        let signed = key.sign(Bytes::from_static(b"manifest"));
        assert_eq!(verify(&trusted, &signed).unwrap(), key.key_id());

        let by_other = other.sign(Bytes::from_static(b"manifest"));
        assert!(matches!(
            verify(&trusted, &by_other),
            Err(SignError::UntrustedKey(_))
        ));

        let mut tampered = signed.clone();
        tampered.manifest_bytes = Bytes::from_static(b"manifesT");
        assert!(matches!(
            verify(&trusted, &tampered),
            Err(SignError::BadSignature(_))
        ));

        let unsigned = SignedManifest {
            manifest_bytes: Bytes::from_static(b"m"),
            signatures: vec![],
        };
        assert!(matches!(
            verify(&trusted, &unsigned),
            Err(SignError::UntrustedKey(_))
        ));

        let round = SignedManifest::from_bytes(&signed.to_bytes()).unwrap();
        assert_eq!(round, signed);
        for s in [&signed, &unsigned, &key.sign(Bytes::new())] {
            assert_eq!(s.to_byte_parts().concat(), s.to_bytes());
        }
        let big = key.sign(Bytes::from(vec![7u8; 300_000]));
        assert_eq!(big.to_byte_parts().concat(), big.to_bytes());
    }

    #[test]
    fn two_trusted_keys_allow_rotation() {
        let (old, new) = (
            SigningKey::generate().unwrap(),
            SigningKey::generate().unwrap(),
        );
        let both =
            TrustedKeys::from_hex([old.public_hex().as_str(), new.public_hex().as_str()]).unwrap();
        assert_eq!(both.len(), 2);
        let m = Bytes::from_static(b"manifest");
        assert_eq!(verify(&both, &old.sign(m.clone())).unwrap(), old.key_id());
        assert_eq!(verify(&both, &new.sign(m.clone())).unwrap(), new.key_id());
        // After the old key is dropped, only the new one is accepted.
        let rotated = TrustedKeys::from_hex([new.public_hex().as_str()]).unwrap();
        assert!(matches!(
            verify(&rotated, &old.sign(m.clone())),
            Err(SignError::UntrustedKey(_))
        ));
        assert!(verify(&rotated, &new.sign(m)).is_ok());
    }

    #[test]
    fn key_file_round_trip_and_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("origin.key");
        let key = SigningKey::generate().unwrap();
        key.save(&path).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(key.save(&path).is_err(), "must not overwrite a key");
        let loaded = SigningKey::load(&path).unwrap();
        assert_eq!(loaded.public_hex(), key.public_hex());
        assert!(!format!("{loaded:?}").contains(&hex::encode(key.0.to_bytes())));
        fs::write(dir.path().join("bad"), "nope\n").unwrap();
        assert!(matches!(
            SigningKey::load(&dir.path().join("bad")),
            Err(SignError::BadKeyFile { .. })
        ));
        assert!(TrustedKeys::from_hex(["abcd"]).is_err());
    }
}
