//! primary.xml: one `<package>` per rpm with its location, size and
//! checksum. Decompressed as a stream and parsed in bounded memory whatever
//! the input: the decompressed total is capped (gzip bombs), and so is each
//! XML event (one huge text node) by the shared walker.

use std::cell::Cell;
use std::io::{self, BufReader, Read};
use std::rc::Rc;

use super::read_ahead::read_ahead;
use super::{
    Checksum, MAX_FIELD_BYTES, RepoError, attr, invalid, io_err, parse_u64, reject_xml_base,
    xml_err,
};
use crate::limits::Limits;
use crate::xml::{Capture, Step, Walker, XmlError};

/// One `<package>` of primary.xml, as far as publishing needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Package {
    pub href: String,
    pub checksum: Checksum,
    /// `<size package=>`: the rpm file's size.
    pub size: u64,
}

/// Fails the read once more than `remaining` bytes come out of `inner`, so a
/// decompression bomb costs at most the limit.
struct LimitedReader<R> {
    inner: R,
    remaining: u64,
    /// Set when the limit tripped; shared so the parser can tell this
    /// failure from a corrupt stream after the walker has reported it.
    exceeded: Rc<Cell<bool>>,
}

impl<R: Read> Read for LimitedReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        if self.remaining == 0 {
            // One more byte tells "exactly the limit" from "over it".
            let mut probe = [0u8; 1];
            if self.inner.read(&mut probe)? == 0 {
                return Ok(0);
            }
            self.exceeded.set(true);
            return Err(io::Error::other("decompressed size limit exceeded"));
        }
        let max = usize::try_from(self.remaining)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let n = self.inner.read(&mut buf[..max])?;
        self.remaining -= n as u64;
        Ok(n)
    }
}

#[derive(Default)]
struct PackageBuilder {
    href: Option<String>,
    checksum_type: Option<String>,
    checksum: Option<String>,
    size: Option<u64>,
}

/// Parses primary.xml, decompressing by `path_name`'s suffix: `.gz`, `.zst`,
/// `.xz` or plain `.xml`. Bounded by `limits.max_primary_bytes` of
/// decompressed XML and `limits.max_entries` packages. The reading (and
/// decompressing) runs on this thread, the parsing beside it
/// ([`read_ahead`]): at 100,000 packages that takes the ~60 ms of
/// inflating off the ~340 ms the two took one after the other.
pub fn parse_primary(
    path_name: &str,
    reader: impl Read,
    limits: &Limits,
) -> Result<Vec<Package>, RepoError> {
    let parse = |xml: &mut dyn Read| parse_primary_xml(path_name, xml, limits);
    if path_name.ends_with(".gz") {
        // Multi-member, as gzip(1) itself accepts concatenated members.
        read_ahead(flate2::read::MultiGzDecoder::new(reader), parse)
    } else if path_name.ends_with(".zst") {
        let decoder = zstd::stream::read::Decoder::new(reader).map_err(io_err(path_name))?;
        read_ahead(decoder, parse)
    } else if path_name.ends_with(".xz") {
        let decoder = liblzma::read::XzDecoder::new_multi_decoder(reader);
        read_ahead(decoder, parse)
    } else if path_name.ends_with(".xml") {
        read_ahead(reader, parse)
    } else {
        Err(RepoError::UnsupportedCompression {
            file: path_name.to_owned(),
        })
    }
}

fn parse_primary_xml(
    file: &str,
    decompressed: impl Read,
    limits: &Limits,
) -> Result<Vec<Package>, RepoError> {
    let exceeded = Rc::new(Cell::new(false));
    let limited = LimitedReader {
        inner: decompressed,
        remaining: limits.max_primary_bytes,
        exceeded: exceeded.clone(),
    };
    // Whitespace between elements is most of primary.xml's text events and
    // none of its captured text (checksums are hex): skipped, 18 % faster.
    let mut w = Walker::new(BufReader::with_capacity(64 * 1024, limited)).skip_leading_whitespace();
    let mut root_seen = false;
    let mut declared_count: Option<u64> = None;
    let mut packages = Vec::new();
    let mut cur: Option<PackageBuilder> = None;
    // Only <package><checksum> text is captured; descriptions are skipped.
    let mut capture: Option<Capture<()>> = None;
    loop {
        let step = match w.step() {
            Ok(step) => step,
            Err(XmlError::Io(_)) if exceeded.get() => {
                return Err(RepoError::LimitExceeded {
                    file: file.to_owned(),
                    limit_name: "max_primary_bytes",
                    limit: limits.max_primary_bytes,
                });
            }
            // Decompression errors arrive as I/O errors.
            Err(XmlError::Io(e)) => return Err(io_err(file)(e)),
            Err(e) => return Err(xml_err(file)(e)),
        };
        match step {
            Step::Open { e, depth } => {
                let name = e.name();
                match (depth, name.as_ref()) {
                    (1, "metadata") if !root_seen => {
                        root_seen = true;
                        if let Some(n) = attr(&e, "packages", file)? {
                            declared_count = Some(parse_u64(&n, "packages=", file)?);
                        }
                    }
                    (1, other) => {
                        return Err(invalid(file, format!("unexpected root element <{other}>")));
                    }
                    (2, "package") => {
                        if packages.len() >= limits.max_entries {
                            return Err(RepoError::LimitExceeded {
                                file: file.to_owned(),
                                limit_name: "max_entries",
                                limit: limits.max_entries as u64,
                            });
                        }
                        cur = Some(PackageBuilder::default());
                    }
                    (3, child) => {
                        if let Some(p) = cur.as_mut() {
                            match child {
                                "checksum" => {
                                    p.checksum_type = attr(&e, "type", file)?;
                                    capture = Some(Capture::new((), depth, MAX_FIELD_BYTES));
                                }
                                "size" => {
                                    if let Some(s) = attr(&e, "package", file)? {
                                        p.size = Some(parse_u64(&s, "<size package=>", file)?);
                                    }
                                }
                                "location" => {
                                    reject_xml_base(&e, file)?;
                                    p.href = attr(&e, "href", file)?;
                                }
                                _ => {}
                            }
                        }
                    }
                    _ => {}
                }
            }
            Step::Text(t) => {
                if let Some(c) = capture.as_mut() {
                    c.push(&t).map_err(|why| invalid(file, why))?;
                }
            }
            Step::Close { depth } => {
                if let Some(c) = capture.take_if(|c| c.depth == depth) {
                    if let Some(p) = cur.as_mut() {
                        p.checksum = Some(c.text);
                    }
                } else if depth == 2
                    && let Some(p) = cur.take()
                {
                    packages.push(finish_package(p, packages.len(), file)?);
                }
            }
            Step::Eof => break,
            Step::Comment(_) | Step::Other => {}
        }
    }
    if !root_seen {
        return Err(invalid(file, "no <metadata> root element"));
    }
    if let Some(n) = declared_count
        && n != packages.len() as u64
    {
        return Err(invalid(
            file,
            format!("declares packages=\"{n}\" but lists {}", packages.len()),
        ));
    }
    Ok(packages)
}

fn finish_package(p: PackageBuilder, index: usize, file: &str) -> Result<Package, RepoError> {
    let href = p.href.ok_or_else(|| {
        invalid(
            file,
            format!("package #{} has no <location href>", index + 1),
        )
    })?;
    // Built only for an error: this runs once per package.
    let ctx = || format!("{file}: {href}");
    let kind = p
        .checksum_type
        .ok_or_else(|| invalid(&ctx(), "no <checksum type=>"))?;
    let value = p.checksum.ok_or_else(|| invalid(&ctx(), "no <checksum>"))?;
    let checksum = Checksum::from_text(&kind, value, ctx)?;
    let size = p
        .size
        .ok_or_else(|| invalid(&ctx(), "no <size package=>"))?;
    Ok(Package {
        href,
        checksum,
        size,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use crate::repo::fixtures::*;
    use crate::repo::{ChecksumKind, parse_repomd};
    use proptest::prelude::*;

    #[test]
    fn unknown_checksum_types_are_refused() {
        let xml = primary_xml(&[package_xml("x", "x.rpm", "sha384", &"a".repeat(96), 1)]);
        let err = parse_primary("primary.xml", xml.as_bytes(), &Limits::default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "primary.xml: x.rpm: unsupported checksum type \"sha384\""
        );
        let repomd = repomd_xml(&[DataSpec {
            kind: "primary",
            href: "repodata/p.xml.gz".into(),
            checksum_type: "crc32",
            checksum: "abcd".into(),
            size: 1,
            timestamp: 1,
        }]);
        let err = parse_repomd(repomd.as_bytes()).unwrap_err();
        assert!(matches!(err, RepoError::UnsupportedChecksum { ref kind, .. } if kind == "crc32"));
        assert!(
            err.to_string()
                .contains("unsupported checksum type \"crc32\""),
            "{err}"
        );
    }

    #[test]
    fn bad_checksum_values_are_refused() {
        let xml = primary_xml(&[package_xml("x", "x.rpm", "sha256", "xyz", 1)]);
        let err = parse_primary("primary.xml", xml.as_bytes(), &Limits::default()).unwrap_err();
        assert!(err.to_string().contains("is not 64 hex digits"), "{err}");
        // Upper case is accepted and normalised.
        let upper = "AB".repeat(32);
        let xml = primary_xml(&[package_xml("x", "x.rpm", "SHA256", &upper, 1)]);
        let p = parse_primary("primary.xml", xml.as_bytes(), &Limits::default()).unwrap();
        assert_eq!(p[0].checksum.hex, "ab".repeat(32));
    }

    #[test]
    fn decompression_limit_is_exact() {
        let xml = primary_xml(&[]);
        let gz = Comp::Gz.compress(xml.as_bytes());
        let at = Limits {
            max_primary_bytes: xml.len() as u64,
            ..Limits::default()
        };
        assert!(parse_primary("p.xml.gz", &gz[..], &at).unwrap().is_empty());
        let under = Limits {
            max_primary_bytes: xml.len() as u64 - 1,
            ..Limits::default()
        };
        assert!(matches!(
            parse_primary("p.xml.gz", &gz[..], &under).unwrap_err(),
            RepoError::LimitExceeded {
                limit_name: "max_primary_bytes",
                ..
            }
        ));
    }

    #[test]
    fn parses_createrepo_c_primary() {
        let hex = "a".repeat(64);
        let xml = format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<metadata xmlns="http://linux.duke.edu/metadata/common" xmlns:rpm="http://linux.duke.edu/metadata/rpm" packages="1">
<package type="rpm">
  <name>hello</name>
  <arch>noarch</arch>
  <version epoch="0" ver="1" rel="1"/>
  <checksum type="sha256" pkgid="YES">{hex}</checksum>
  <summary>hello</summary>
  <description>hello</description>
  <packager></packager>
  <url></url>
  <time file="1700000000" build="1700000000"/>
  <size package="6154" installed="0" archive="124"/>
  <location href="Packages/h/hello-1-1.noarch.rpm"/>
  <format>
    <rpm:license>MIT</rpm:license>
    <rpm:vendor></rpm:vendor>
    <rpm:group>Unspecified</rpm:group>
    <rpm:buildhost>builder</rpm:buildhost>
    <rpm:sourcerpm>hello-1-1.src.rpm</rpm:sourcerpm>
    <rpm:header-range start="4504" end="5969"/>
    <rpm:provides>
      <rpm:entry name="hello" flags="EQ" epoch="0" ver="1" rel="1"/>
    </rpm:provides>
  </format>
</package>
</metadata>
"#
        );
        let p = parse_primary("primary.xml", xml.as_bytes(), &Limits::default()).unwrap();
        assert_eq!(
            p,
            [Package {
                href: "Packages/h/hello-1-1.noarch.rpm".into(),
                checksum: Checksum {
                    kind: ChecksumKind::Sha256,
                    hex,
                },
                size: 6154,
            }]
        );
        // The empty-repo primary createrepo_c writes.
        let empty = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<metadata xmlns=\"http://linux.duke.edu/metadata/common\" xmlns:rpm=\"http://linux.duke.edu/metadata/rpm\" packages=\"0\">\n</metadata>\n";
        assert!(
            parse_primary("p.xml", empty.as_bytes(), &Limits::default())
                .unwrap()
                .is_empty()
        );
    }

    #[test]
    fn malformed_primaries_are_refused() {
        let limits = Limits::default();
        let hex = "a".repeat(64);
        let one = package_xml("x", "x.rpm", "sha256", &hex, 1);
        let cases = [
            // Truncated.
            primary_xml(std::slice::from_ref(&one)).replace("</metadata>\n", ""),
            // Count disagrees.
            primary_xml(std::slice::from_ref(&one)).replace("packages=\"1\"", "packages=\"2\""),
            // No location.
            primary_xml(&[one.replace("<location href=\"x.rpm\"/>", "")]),
            // Packages outside the repo.
            primary_xml(&[one.replace("<location ", "<location xml:base=\"http://x/\" ")]),
            // Wrong root.
            "<filelists/>".to_owned(),
            // Undeclared entity.
            primary_xml(&[one.replace("x.rpm", "&foo;.rpm")]),
        ];
        for xml in cases {
            assert!(
                parse_primary("p.xml", xml.as_bytes(), &limits).is_err(),
                "{xml}"
            );
        }
        // Corrupt compressed data is an I/O error naming the file.
        let err = parse_primary("p.xml.gz", &b"\x1f\x8bnot gzip"[..], &limits).unwrap_err();
        assert!(err.to_string().starts_with("p.xml.gz: "), "{err}");
    }
    proptest! {
        #[test]
        fn parsers_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = parse_repomd(&bytes);
            let limits = Limits::default();
            for name in ["p.xml", "p.xml.gz", "p.xml.zst", "p.xml.xz"] {
                let _ = parse_primary(name, &bytes[..], &limits);
            }
        }

        #[test]
        fn parsers_never_panic_on_xmlish_input(
            s in "(<[a-z:]{0,9}( [a-z]{1,5}=\"[^\"]{0,8}\")?/?>|</[a-z:]{0,9}>|&[a-z#0-9]{0,4};|[a-z0-9 ]{0,6}){0,40}"
        ) {
            let _ = parse_repomd(s.as_bytes());
            let _ = parse_primary("p.xml", s.as_bytes(), &Limits::default());
            let wrapped = format!("<metadata><package>{s}</package></metadata>");
            let _ = parse_primary("p.xml", wrapped.as_bytes(), &Limits::default());
            let wrapped = format!("<repomd><data type=\"primary\">{s}</data></repomd>");
            let _ = parse_repomd(wrapped.as_bytes());
        }
    }
}
