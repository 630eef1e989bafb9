//! Path rules for manifest entries (docs/PROTOCOL.md "The snapshot manifest"). A path that passes can be
//! joined onto a repo root without escaping it or colliding with the
//! agent's own names (which all start with a dot).

use std::fmt;

/// Longest single path segment (Linux NAME_MAX).
pub const MAX_SEGMENT_BYTES: usize = 255;

/// Why a path was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("empty path")]
    Empty,
    #[error("absolute path {0:?}")]
    Absolute(String),
    #[error("path {0:?} has an empty segment (doubled or trailing slash)")]
    EmptySegment(String),
    #[error("path {0:?} has a '.' segment")]
    Dot(String),
    #[error("path {0:?} has a '..' segment")]
    DotDot(String),
    #[error("path {0:?} contains a NUL byte")]
    Nul(String),
    #[error("path {0:?} contains a backslash")]
    Backslash(String),
    #[error("path {0:?} contains a control character")]
    Control(String),
    #[error("path {0:?} has a hidden segment (names starting with '.' are reserved for staging)")]
    Hidden(String),
    #[error("path is {len} bytes, over the limit of {max}")]
    TooLong { len: usize, max: usize },
    #[error("path {0:?} has a segment over {MAX_SEGMENT_BYTES} bytes")]
    SegmentTooLong(String),
}

/// A validated relative path such as `Packages/h/hello-1.0-1.noarch.rpm`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RelPath(String);

impl RelPath {
    /// Checks `path` against every rule; `max_bytes` comes from [`crate::Limits`].
    pub fn new(path: &str, max_bytes: usize) -> Result<Self, PathError> {
        let owned = || path.to_owned();
        if path.is_empty() {
            return Err(PathError::Empty);
        }
        if path.len() > max_bytes {
            return Err(PathError::TooLong {
                len: path.len(),
                max: max_bytes,
            });
        }
        if path.contains('\0') {
            return Err(PathError::Nul(owned()));
        }
        if path.contains('\\') {
            return Err(PathError::Backslash(owned()));
        }
        if path.chars().any(char::is_control) {
            return Err(PathError::Control(owned()));
        }
        if path.starts_with('/') {
            return Err(PathError::Absolute(owned()));
        }
        for segment in path.split('/') {
            match segment {
                "" => return Err(PathError::EmptySegment(owned())),
                "." => return Err(PathError::Dot(owned())),
                ".." => return Err(PathError::DotDot(owned())),
                s if s.starts_with('.') => return Err(PathError::Hidden(owned())),
                s if s.len() > MAX_SEGMENT_BYTES => return Err(PathError::SegmentTooLong(owned())),
                _ => {}
            }
        }
        Ok(Self(path.to_owned()))
    }

    /// The path as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The directory part, if any (`Packages/h` for `Packages/h/x.rpm`).
    pub fn parent(&self) -> Option<&str> {
        self.0.rsplit_once('/').map(|(dir, _)| dir)
    }

    /// The last segment.
    pub fn file_name(&self) -> &str {
        self.0.rsplit_once('/').map_or(&self.0, |(_, name)| name)
    }
}

/// Lookups by `&str` (sets and maps of paths): same equality, order and
/// hash as the string itself.
impl std::borrow::Borrow<str> for RelPath {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for RelPath {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for RelPath {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl fmt::Display for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for RelPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn check(p: &str) -> Result<RelPath, PathError> {
        RelPath::new(p, 1024)
    }

    #[test]
    fn accepts_ordinary_paths() {
        for p in [
            "repodata/repomd.xml",
            "Packages/h/hello-1.0-1.noarch.rpm",
            "a",
            "a b/c+d",
        ] {
            assert_eq!(check(p).unwrap().as_str(), p);
        }
        let p = check("Packages/h/x.rpm").unwrap();
        assert_eq!(p.parent(), Some("Packages/h"));
        assert_eq!(p.file_name(), "x.rpm");
    }

    #[test]
    fn refuses_each_rule() {
        use PathError::*;
        type Matcher = fn(&PathError) -> bool;
        let cases: &[(&str, Matcher)] = &[
            ("", |e| matches!(e, Empty)),
            ("/etc/passwd", |e| matches!(e, Absolute(_))),
            ("a//b", |e| matches!(e, EmptySegment(_))),
            ("a/", |e| matches!(e, EmptySegment(_))),
            ("./a", |e| matches!(e, Dot(_))),
            ("a/../../b", |e| matches!(e, DotDot(_))),
            ("..", |e| matches!(e, DotDot(_))),
            ("a\0b", |e| matches!(e, Nul(_))),
            ("a\\b", |e| matches!(e, Backslash(_))),
            ("a\nb", |e| matches!(e, Control(_))),
            (".repodata/x", |e| matches!(e, Hidden(_))),
        ];
        for (path, want) in cases {
            let err = check(path).unwrap_err();
            assert!(want(&err), "{path:?} gave {err:?}");
        }
        assert!(matches!(
            RelPath::new(&"a".repeat(2000), 1024),
            Err(PathError::TooLong { .. })
        ));
        assert!(matches!(
            check(&"a".repeat(300)),
            Err(PathError::SegmentTooLong(_))
        ));
    }

    proptest! {
        /// Whatever is accepted stays inside the root when joined onto it.
        #[test]
        fn accepted_paths_never_escape(s in "[a-z./\\\\]{0,24}") {
            if let Ok(p) = check(&s) {
                let joined = std::path::Path::new("/root").join(p.as_str());
                let mut depth = 0i32;
                for c in joined.strip_prefix("/root").unwrap().components() {
                    match c {
                        std::path::Component::Normal(_) => depth += 1,
                        _ => prop_assert!(false, "component {:?} in {:?}", c, s),
                    }
                }
                prop_assert!(depth >= 1);
            }
        }
    }
}
