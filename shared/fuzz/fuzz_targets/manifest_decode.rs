//! Signed-manifest and manifest decoding + validation never panic, and
//! whatever validates re-encodes to bytes that validate the same.
#![no_main]
use hotpush_shared::Limits;
use hotpush_shared::manifest::Manifest;
use hotpush_shared::sign::SignedManifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = SignedManifest::from_bytes(data);
    if let Ok(m) = Manifest::decode(data, &Limits::default()) {
        let again = Manifest::decode(&m.encode(), &Limits::default()).expect("re-encoded manifest must validate");
        assert_eq!(again, m);
    }
});
