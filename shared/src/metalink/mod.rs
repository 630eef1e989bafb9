//! MirrorManager-format metalink writer and parser (docs/PROTOCOL.md "The metalink",
//! research/metalink.md).
//!
//! librepo's metalink parser is not namespace-aware: it matches the literal
//! names `mm0:timestamp`, `mm0:alternates` and `mm0:alternate`, and the
//! metalink elements without a prefix. So the writer emits exactly those
//! names, and the parser matches them the same way.
//!
//! Output layout follows mirrorlist-server (one-space indent, hashes md5,
//! sha1, sha256, sha512, alternates after the main verification), except
//! that `location=` is omitted for a mirror with no country code rather than
//! inventing one: librepo and dnf never read it, and Metalink 3.0 makes it
//! optional.
//!
//! - [`write`]: the metalink and MirrorManager's error document;
//! - [`parse`]: the reverse, the way librepo reads it (for `drill` and tests).

use std::time::SystemTime;

use md5::Md5;
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha512};

mod parse;
mod write;

pub use parse::{MetalinkError, ParsedMetalink, parse_metalink};
pub use write::{MirrorEntry, Template, error_document, error_document_at, write_metalink};

/// Default namespace of Metalink 3.0.
pub(crate) const METALINK_NS: &str = "http://www.metalinker.org/";
/// MirrorManager's extension namespace, always bound to the `mm0` prefix.
pub(crate) const MM0_NS: &str = "http://fedorahosted.org/mirrormanager";
/// The only file name librepo looks for.
pub(crate) const REPOMD_NAME: &str = "repomd.xml";
/// What each mirror URL ends in: yum 3 accepts nothing else.
pub(crate) const REPOMD_SUFFIX: &str = "repodata/repomd.xml";

/// One version of repomd.xml as a metalink describes it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FileDescription {
    /// Largest `<data><timestamp>` in repomd.xml (not `<revision>`).
    pub timestamp: u64,
    /// Byte length of repomd.xml.
    pub size: u64,
    /// Lowercase hex digests; an empty one is left out of the metalink.
    pub md5: String,
    pub sha1: String,
    pub sha256: String,
    pub sha512: String,
}

impl FileDescription {
    /// Describes the repomd.xml `bytes`; `timestamp` comes from
    /// [`crate::repo::Repomd::max_timestamp`].
    pub fn of_repomd(bytes: &[u8], timestamp: u64) -> Self {
        Self {
            timestamp,
            size: bytes.len() as u64,
            md5: hex::encode(&Md5::digest(bytes)[..]),
            sha1: hex::encode(&Sha1::digest(bytes)[..]),
            sha256: hex::encode(&Sha256::digest(bytes)[..]),
            sha512: hex::encode(&Sha512::digest(bytes)[..]),
        }
    }

    /// (type, value) in the order MirrorManager writes them.
    fn hashes(&self) -> [(&'static str, &str); 4] {
        [
            ("md5", &self.md5),
            ("sha1", &self.sha1),
            ("sha256", &self.sha256),
            ("sha512", &self.sha512),
        ]
    }
}

/// One mirror of the repo.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mirror {
    /// Base URL of the repo, e.g. `http://[::1]:8081/f41-critical/x86_64/`;
    /// `repodata/repomd.xml` is appended.
    pub base_url: String,
    /// ISO country code; written upper case, and `""` omits `location=`.
    pub location: String,
}

/// RFC 1123 date in GMT, e.g. `Thu, 26 Nov 2026 04:09:33 GMT` (HTTP's
/// date format, also the metalink's `pubdate`). Clamped to what the format
/// can hold: 1970 to the end of 9999.
pub fn httpdate(t: SystemTime) -> String {
    let last = std::time::UNIX_EPOCH + std::time::Duration::from_secs(253_402_300_799);
    httpdate::fmt_http_date(t.clamp(std::time::UNIX_EPOCH, last))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::parse::xml_trim;
    use super::write::repomd_url;
    use super::*;
    use std::time::Duration;
    use std::time::UNIX_EPOCH;

    use proptest::prelude::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn mirror(base_url: &str, location: &str) -> Mirror {
        Mirror {
            base_url: base_url.into(),
            location: location.into(),
        }
    }

    fn three_mirrors() -> [Mirror; 3] {
        [
            mirror("https://m1.example/f41-critical/x86_64/", "de"),
            mirror("http://[::1]:8083/f41-critical/x86_64/", "XX"),
            mirror("http://m3.example/a&b/x86_64", ""),
        ]
    }

    /// Byte-exact expected output; compare with mirrorlist-server's layout
    /// in research/metalink.md §1.
    const GOLDEN_3_MIRRORS: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<metalink version="3.0" xmlns="http://www.metalinker.org/" type="dynamic" pubdate="Thu, 26 Nov 2026 04:09:33 GMT" generator="hotpush" xmlns:mm0="http://fedorahosted.org/mirrormanager">
 <files>
  <file name="repomd.xml">
   <mm0:timestamp>1700000200</mm0:timestamp>
   <size>0</size>
   <verification>
    <hash type="md5">d41d8cd98f00b204e9800998ecf8427e</hash>
    <hash type="sha1">da39a3ee5e6b4b0d3255bfef95601890afd80709</hash>
    <hash type="sha256">e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855</hash>
    <hash type="sha512">cf83e1357eefb8bdf1542850d66d8007d620e4050b5715dc83f4a921d36ce9ce47d0d13c5d85f2b0ff8318d2877eec2f63b931bd47417a81a538327af927da3e</hash>
   </verification>
   <resources maxconnections="1">
    <url protocol="https" type="https" location="DE" preference="100">https://m1.example/f41-critical/x86_64/repodata/repomd.xml</url>
    <url protocol="http" type="http" location="XX" preference="99">http://[::1]:8083/f41-critical/x86_64/repodata/repomd.xml</url>
    <url protocol="http" type="http" preference="98">http://m3.example/a&amp;b/x86_64/repodata/repomd.xml</url>
   </resources>
  </file>
 </files>
</metalink>
"#;

    #[test]
    fn golden_three_mirrors() {
        // of_repomd(b"") yields the well-known empty-input digests above.
        let current = FileDescription::of_repomd(b"", 1_700_000_200);
        let xml = write_metalink(&current, &[], &three_mirrors(), at(1_795_666_173));
        assert_eq!(xml, GOLDEN_3_MIRRORS);
        assert!(!xml.contains("mm0:alternates"));
    }

    #[test]
    fn write_parse_round_trip() {
        let current = FileDescription::of_repomd(b"<repomd>new</repomd>", 1_700_000_300);
        let older = FileDescription::of_repomd(b"<repomd>old</repomd>", 1_700_000_100);
        let middle = FileDescription::of_repomd(b"<repomd>mid</repomd>", 1_700_000_200);
        let xml = write_metalink(
            &current,
            &[older.clone(), middle.clone()],
            &three_mirrors(),
            at(0),
        );
        let parsed = parse_metalink(&xml).unwrap();
        assert_eq!(parsed.file, current);
        // Newest first, whatever order they were given in.
        assert_eq!(parsed.alternates, [middle, older]);
        assert_eq!(
            parsed.urls,
            [
                "https://m1.example/f41-critical/x86_64/repodata/repomd.xml",
                "http://[::1]:8083/f41-critical/x86_64/repodata/repomd.xml",
                "http://m3.example/a&b/x86_64/repodata/repomd.xml",
            ]
        );
    }

    #[test]
    fn no_alternates_element_when_none() {
        let current = FileDescription::of_repomd(b"x", 1);
        let xml = write_metalink(&current, &[], &three_mirrors(), at(0));
        assert!(!xml.contains("alternate"), "{xml}");
        assert!(parse_metalink(&xml).unwrap().alternates.is_empty());
    }

    #[test]
    fn preference_floors_at_one() {
        let mirrors: Vec<Mirror> = (0..150)
            .map(|i| mirror(&format!("https://m{i}.example/r"), "US"))
            .collect();
        let xml = write_metalink(&FileDescription::of_repomd(b"x", 1), &[], &mirrors, at(0));
        assert!(xml.contains("preference=\"100\">https://m0.example/r/repodata/repomd.xml<"));
        assert!(xml.contains("preference=\"2\">https://m98.example/"));
        assert!(xml.contains("preference=\"1\">https://m99.example/"));
        assert!(xml.contains("preference=\"1\">https://m149.example/"));
        assert_eq!(xml.matches("preference=\"1\"").count(), 51);
        assert!(!xml.contains("preference=\"0\""));
        assert_eq!(parse_metalink(&xml).unwrap().urls.len(), 150);
    }

    #[test]
    fn empty_hashes_are_left_out() {
        let fd = FileDescription {
            timestamp: 1,
            size: 2,
            sha256: "ab".repeat(32),
            ..FileDescription::default()
        };
        let xml = write_metalink(&fd, &[], &three_mirrors(), at(0));
        assert_eq!(xml.matches("<hash ").count(), 1);
        assert_eq!(parse_metalink(&xml).unwrap().file, fd);
    }

    #[test]
    fn error_document_is_mirrormanager_shaped() {
        let doc = error_document_at("repo=x -- arch=y --> <oops> & -", at(0));
        assert_eq!(
            doc,
            "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<metalink version=\"3.0\" xmlns=\"http://www.metalinker.org/\" type=\"dynamic\" pubdate=\"Thu, 01 Jan 1970 00:00:00 GMT\" generator=\"hotpush\" xmlns:mm0=\"http://fedorahosted.org/mirrormanager\">\n<!-- repo=x - - arch=y - -> <oops> & -\n-->\n</metalink>\n"
        );
        let start = doc.find("<!--").unwrap() + 4;
        let end = doc.rfind("-->").unwrap();
        assert!(!doc[start..end].contains("--"));
        // dnf's reading of it, with the reason kept for `drill`.
        match parse_metalink(&doc).unwrap_err() {
            MetalinkError::NoRepomd { comment } => {
                assert!(comment.unwrap().contains("arch=y"));
            }
            other => panic!("{other}"),
        }
        assert!(error_document("x").contains("<!-- x\n-->"));
    }

    #[test]
    fn httpdate_known_dates() {
        for (secs, want) in [
            (0, "Thu, 01 Jan 1970 00:00:00 GMT"),
            (951_868_800, "Wed, 01 Mar 2000 00:00:00 GMT"),
            (1_700_000_000, "Tue, 14 Nov 2023 22:13:20 GMT"),
            (1_709_164_800, "Thu, 29 Feb 2024 00:00:00 GMT"),
            (1_795_666_173, "Thu, 26 Nov 2026 04:09:33 GMT"),
            (4_102_444_799, "Thu, 31 Dec 2099 23:59:59 GMT"),
            (253_402_300_799, "Fri, 31 Dec 9999 23:59:59 GMT"),
        ] {
            assert_eq!(httpdate(at(secs)), want);
        }
        assert_eq!(
            httpdate(UNIX_EPOCH - Duration::from_secs(5)),
            "Thu, 01 Jan 1970 00:00:00 GMT"
        );
    }

    #[test]
    fn parses_mirrormanager_output() {
        // Shape of a live MirrorManager metalink, including mm0:private and
        // a stray space before '>' (MM2's Python output).
        let xml = r#"<?xml version="1.0" encoding="utf-8"?>
<metalink version="3.0" xmlns="http://www.metalinker.org/" type="dynamic" pubdate="Thu, 21 May 2026 19:54:04 GMT" generator="mirrormanager" xmlns:mm0="http://fedorahosted.org/mirrormanager">
 <files>
  <file name="other.xml"><size>1</size></file>
  <file name="repomd.xml">
   <mm0:timestamp>1779326542</mm0:timestamp>
   <size>4057</size>
   <verification>
    <hash type="md5">9e3283e1e6227d8bb786709fc3771cef</hash>
    <hash type="sha224">ignored</hash>
    <hash type="sha256">94b09083be84b85d912771d9ce33fe9626196d819f529a4d2a25d9eb6618d8b0</hash>
   </verification>
   <mm0:alternates>
    <mm0:alternate>
      <mm0:timestamp>1779237150</mm0:timestamp>
      <size>4056</size>
      <verification>
       <hash type="sha256">f6e38bcd0bd57735e8dd1279a9e34c1be1e633e7fa27367d585e29554320ae4d</hash>
      </verification>
    </mm0:alternate>
   </mm0:alternates>
   <resources maxconnections="1">
    <url protocol="https" type="https" location="US" preference="100" mm0:private="True">https://a.example/pub/repodata/repomd.xml</url>
    <url protocol="rsync" type="rsync" location="DE" preference="99" >rsync://b.example/pub/repodata/repomd.xml</url>
   </resources>
  </file>
  <file name="repomd.xml"><size>7</size></file>
 </files>
</metalink>
"#;
        let p = parse_metalink(xml).unwrap();
        assert_eq!(p.file.timestamp, 1_779_326_542);
        assert_eq!(p.file.size, 4057);
        assert_eq!(p.file.md5, "9e3283e1e6227d8bb786709fc3771cef");
        assert_eq!(p.file.sha1, "");
        assert_eq!(p.alternates.len(), 1);
        assert_eq!(p.alternates[0].size, 4056);
        assert_eq!(p.urls.len(), 2);
        assert_eq!(p.urls[1], "rsync://b.example/pub/repodata/repomd.xml");
    }

    #[test]
    fn other_prefixes_are_not_mm0() {
        // librepo drops a timestamp bound to another prefix; so do we.
        let xml = r#"<metalink xmlns:mmx="http://fedorahosted.org/mirrormanager"><files><file name="repomd.xml"><mmx:timestamp>5</mmx:timestamp><size>3</size></file></files></metalink>"#;
        let p = parse_metalink(xml).unwrap();
        assert_eq!((p.file.timestamp, p.file.size), (0, 3));
        assert!(parse_metalink("<html/>").is_err());
        assert!(parse_metalink("<metalink><files><file name=\"repomd.xml\"><size>x</size></file></files></metalink>").is_err());
        assert!(matches!(
            parse_metalink("<metalink><unclosed></metalink>"),
            Err(MetalinkError::Xml(_))
        ));
    }

    fn xml_trimmed(s: &str) -> bool {
        xml_trim(s) == s
    }

    proptest! {
        #[test]
        fn round_trip_arbitrary(
            bases in proptest::collection::vec("\\PC{0,40}".prop_filter("no XML space at ends", |s| xml_trimmed(s)), 0..8),
            hashes in proptest::collection::vec("\\PC{0,70}".prop_filter("no XML space at ends", |s| xml_trimmed(s)), 4),
            timestamp in any::<u64>(),
            size in any::<u64>(),
            location in "[A-Za-z]{0,2}",
        ) {
            let fd = FileDescription {
                timestamp,
                size,
                md5: hashes[0].clone(),
                sha1: hashes[1].clone(),
                sha256: hashes[2].clone(),
                sha512: hashes[3].clone(),
            };
            let alt = FileDescription { timestamp: timestamp / 2, ..fd.clone() };
            let mirrors: Vec<Mirror> = bases.iter().map(|b| mirror(b, &location)).collect();
            let xml = write_metalink(&fd, std::slice::from_ref(&alt), &mirrors, at(timestamp % (1 << 40)));
            let parsed = parse_metalink(&xml).unwrap();
            prop_assert_eq!(parsed.file, fd);
            prop_assert_eq!(parsed.alternates, vec![alt]);
            let urls: Vec<String> = bases.iter().map(|b| repomd_url(b)).collect();
            prop_assert_eq!(parsed.urls, urls);
        }

        #[test]
        fn error_document_comment_never_has_double_dash(msg in "\\PC{0,60}|[-> ]{0,20}") {
            let doc = error_document_at(&msg, at(0));
            let start = doc.find("<!--").unwrap_or(0) + 4;
            let end = doc.rfind("-->").unwrap_or(0);
            prop_assert!(!doc[start..end].contains("--"));
            let is_no_repomd = matches!(parse_metalink(&doc), Err(MetalinkError::NoRepomd { .. }));
            prop_assert!(is_no_repomd);
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,300}") {
            let _ = parse_metalink(&s);
            let _ = parse_metalink(&format!("<metalink><files><file name=\"repomd.xml\">{s}</file></files></metalink>"));
        }
    }
}
