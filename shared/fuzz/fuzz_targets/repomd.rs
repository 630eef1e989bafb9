//! repomd.xml parsing never panics on any input.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = hotpush_shared::repo::parse_repomd(data);
});
