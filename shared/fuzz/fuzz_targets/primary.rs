//! primary.xml parsing (plain and gzip) never panics and stays within limits.
#![no_main]
use hotpush_shared::Limits;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits { max_primary_bytes: 1 << 20, max_entries: 1000, ..Limits::default() };
    let _ = hotpush_shared::repo::parse_primary("primary.xml", data, &limits);
    let _ = hotpush_shared::repo::parse_primary("primary.xml.gz", data, &limits);
    // The same through the splitter that cuts out known entries (repo::split).
    let known = hotpush_shared::repo::KnownPackages::default();
    let _ = hotpush_shared::repo::parse_primary_listings("primary.xml", data, &limits, &known);
});
