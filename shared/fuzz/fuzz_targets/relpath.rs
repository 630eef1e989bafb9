//! An accepted path never escapes the directory it is joined onto.
#![no_main]
use hotpush_shared::relpath::RelPath;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|path: &str| {
    if let Ok(p) = RelPath::new(path, 1024) {
        for c in std::path::Path::new(p.as_str()).components() {
            assert!(matches!(c, std::path::Component::Normal(_)), "{path:?} has {c:?}");
        }
    }
});
