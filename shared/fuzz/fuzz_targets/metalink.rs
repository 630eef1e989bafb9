//! Metalink parsing never panics; what the writer produces parses back the same.
#![no_main]
use std::time::{Duration, UNIX_EPOCH};

use hotpush_shared::metalink::{FileDescription, Mirror, parse_metalink, write_metalink};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = parse_metalink(text);
    // Round trip: arbitrary text as a mirror URL.
    let file = FileDescription::of_repomd(data, 1_790_000_000);
    let mirrors = [Mirror { base_url: format!("http://m.example/{text}"), location: String::new() }];
    let xml = write_metalink(&file, &[], &mirrors, UNIX_EPOCH + Duration::from_secs(1_790_000_000));
    let parsed = parse_metalink(&xml).expect("our own metalink must parse");
    assert_eq!(parsed.file.sha256, file.sha256);
    assert_eq!(parsed.urls.len(), 1);
});
