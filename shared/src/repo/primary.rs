//! primary.xml: one `<package>` per rpm with its location, size and
//! checksum. Decompressed as a stream and parsed in bounded memory whatever
//! the input: the decompressed total is capped (gzip bombs), and so is each
//! XML event (one huge text node) by the shared walker.

use std::cell::Cell;
use std::io::{self, BufReader, Read};
use std::rc::Rc;

use super::known::KnownPackages;
use super::read_ahead::read_ahead;
use super::split::{Cut, CutLog, Split};
use super::{
    Checksum, ChecksumKind, MAX_FIELD_BYTES, RepoError, attr, invalid, io_err, parse_u64,
    reject_xml_base, xml_err,
};
use crate::digest::Sha256Digest;
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

/// One `<package>` of primary.xml, parsed or recognised.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Listed {
    /// Parsed; `listing` is the SHA-256 of its bytes when they may be
    /// recognised next time ([`KnownPackages`]).
    Parsed {
        package: Package,
        listing: Option<Sha256Digest>,
    },
    /// Not parsed: the same bytes as a known listing, which declared entry
    /// `entry` of the manifest the [`KnownPackages`] index.
    Known { listing: Sha256Digest, entry: u32 },
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
    let listed = parse_listed(path_name, reader, limits, None)?;
    Ok(listed
        .into_iter()
        .filter_map(|l| match l {
            Listed::Parsed { package, .. } => Some(package),
            Listed::Known { .. } => None,
        })
        .collect())
}

/// [`parse_primary`], recognising the entries `known` holds instead of
/// parsing them again ([`super::split`]), and giving each parsed entry's
/// digest so that the next publish can recognise it.
pub fn parse_primary_listings(
    path_name: &str,
    reader: impl Read,
    limits: &Limits,
    known: &KnownPackages,
) -> Result<Vec<Listed>, RepoError> {
    parse_listed(path_name, reader, limits, Some(known))
}

/// Decompresses by `path_name`'s suffix on this thread and parses beside
/// it ([`read_ahead`]), cutting out `known` entries when given.
fn parse_listed(
    path_name: &str,
    reader: impl Read,
    limits: &Limits,
    known: Option<&KnownPackages>,
) -> Result<Vec<Listed>, RepoError> {
    let parse = |xml: &mut dyn Read| parse_primary_xml(path_name, xml, limits, known);
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
    known: Option<&KnownPackages>,
) -> Result<Vec<Listed>, RepoError> {
    let exceeded = Rc::new(Cell::new(false));
    let limited = LimitedReader {
        inner: decompressed,
        remaining: limits.max_primary_bytes,
        exceeded: exceeded.clone(),
    };
    let cuts = CutLog::default();
    let input: Box<dyn Read + '_> = match known {
        Some(known) => Box::new(Split::new(limited, known, limits.max_entries, cuts.clone())),
        None => Box::new(limited),
    };
    // Whitespace between elements is most of primary.xml's text events and
    // none of its captured text (checksums are hex): skipped, 18 % faster.
    let mut w = Walker::new(BufReader::with_capacity(64 * 1024, input)).skip_leading_whitespace();
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
    drop(w);
    if !root_seen {
        return Err(invalid(file, "no <metadata> root element"));
    }
    let cuts = std::mem::take(&mut *cuts.borrow_mut());
    let total = packages.len()
        + cuts
            .iter()
            .filter(|c| matches!(c, Cut::Known { .. }))
            .count();
    if total > limits.max_entries {
        return Err(RepoError::LimitExceeded {
            file: file.to_owned(),
            limit_name: "max_entries",
            limit: limits.max_entries as u64,
        });
    }
    if let Some(n) = declared_count
        && n != total as u64
    {
        return Err(invalid(
            file,
            format!("declares packages=\"{n}\" but lists {total}"),
        ));
    }
    // Each entry handed on made exactly one package (super::split), in order.
    let mut parsed = packages.into_iter();
    let mut listed = Vec::with_capacity(total);
    for cut in cuts {
        listed.push(match cut {
            Cut::Known { listing, entry } => Listed::Known { listing, entry },
            Cut::Passed { listing } => {
                let package = parsed.next().ok_or_else(|| {
                    invalid(file, "an entry handed to the parser made no package")
                })?;
                // Only a sha256 declaration can be taken from a manifest.
                let listing = (package.checksum.kind == ChecksumKind::Sha256).then_some(listing);
                Listed::Parsed { package, listing }
            }
        });
    }
    listed.extend(parsed.map(|package| Listed::Parsed {
        package,
        listing: None,
    }));
    Ok(listed)
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

    /// Listings known as if each of `entries` had declared manifest entry
    /// `i` (its index). A listing is the element's bytes, without the line
    /// end the fixtures add.
    fn known_of(entries: &[String]) -> KnownPackages {
        let digests: Vec<_> = entries
            .iter()
            .map(|e| Sha256Digest::of(e.trim_end().as_bytes()))
            .collect();
        KnownPackages::new(digests.iter().map(Some))
    }

    /// The packages `listed` stands for, a known entry `i` being `pool[i]`'s.
    fn resolve(listed: Vec<Listed>, pool: &[String]) -> Vec<Package> {
        listed
            .into_iter()
            .map(|l| match l {
                Listed::Parsed { package, .. } => package,
                Listed::Known { entry, .. } => {
                    let xml = primary_xml(&[pool[entry as usize].clone()]);
                    parse_primary("p.xml", xml.as_bytes(), &Limits::default())
                        .unwrap()
                        .remove(0)
                }
            })
            .collect()
    }

    #[test]
    fn known_entries_are_recognised_and_the_rest_parsed() {
        let pool: Vec<String> = (0..5)
            .map(|i| {
                package_xml(
                    &format!("p{i}"),
                    &format!("Packages/p{i}.rpm"),
                    "sha256",
                    &format!("{i:064x}"),
                    10 + i,
                )
            })
            .collect();
        let limits = Limits::default();
        // A first parse gives every plain sha256 entry's listing.
        let first = primary_xml(&pool);
        let listed = parse_primary_listings(
            "p.xml",
            first.as_bytes(),
            &limits,
            &KnownPackages::default(),
        )
        .unwrap();
        for (l, entry) in listed.iter().zip(&pool) {
            let Listed::Parsed { listing, .. } = l else {
                panic!("{l:?}")
            };
            assert_eq!(
                *listing,
                Some(Sha256Digest::of(entry.trim_end().as_bytes()))
            );
        }
        // One entry changed, one added, one with CDATA, one declaring sha1.
        let known = known_of(&pool);
        let mut next = pool.clone();
        next[2] = package_xml("p2", "Packages/p2.rpm", "sha256", &"e".repeat(64), 12);
        next.push(package_xml(
            "p5",
            "Packages/p5.rpm",
            "sha256",
            &"f".repeat(64),
            15,
        ));
        next.push(
            package_xml("p6", "Packages/p6.rpm", "sha256", &"a".repeat(64), 1)
                .replace("A &lt;test&gt; package", "<![CDATA[A <test> package]]>"),
        );
        next.push(package_xml(
            "p7",
            "Packages/p7.rpm",
            "sha1",
            &"b".repeat(40),
            1,
        ));
        let xml = primary_xml(&next);
        let listed = parse_primary_listings(
            "p.xml.gz",
            &Comp::Gz.compress(xml.as_bytes())[..],
            &limits,
            &known,
        )
        .unwrap();
        let kinds: Vec<String> = listed
            .iter()
            .map(|l| match l {
                Listed::Known { entry, .. } => format!("known {entry}"),
                Listed::Parsed {
                    listing: Some(_), ..
                } => "parsed, listed".into(),
                Listed::Parsed { listing: None, .. } => "parsed".into(),
            })
            .collect();
        assert_eq!(
            kinds,
            [
                "known 0",
                "known 1",
                "parsed, listed",
                "known 3",
                "known 4",
                "parsed, listed",
                // CDATA: never recognised, and nothing after it is cut.
                "parsed",
                "parsed"
            ]
        );
        assert_eq!(
            resolve(listed, &pool),
            parse_primary("p.xml", xml.as_bytes(), &limits).unwrap()
        );
    }

    #[test]
    fn recognised_entries_count_toward_the_limits_and_the_declared_count() {
        let pool: Vec<String> = (0..3)
            .map(|i| {
                package_xml(
                    &format!("p{i}"),
                    &format!("Packages/p{i}.rpm"),
                    "sha256",
                    &format!("{i:064x}"),
                    1,
                )
            })
            .collect();
        let known = known_of(&pool);
        let xml = primary_xml(&pool);
        let two = Limits {
            max_entries: 2,
            ..Limits::default()
        };
        assert!(matches!(
            parse_primary_listings("p.xml", xml.as_bytes(), &two, &known).unwrap_err(),
            RepoError::LimitExceeded {
                limit_name: "max_entries",
                ..
            }
        ));
        let miscounted = xml.replace("packages=\"3\"", "packages=\"2\"");
        let err =
            parse_primary_listings("p.xml", miscounted.as_bytes(), &Limits::default(), &known)
                .unwrap_err();
        assert!(
            err.to_string()
                .contains("declares packages=\"2\" but lists 3"),
            "{err}"
        );
    }

    proptest! {
        /// Whatever surrounds and interleaves known entries, recognising
        /// them gives what parsing everything gives (or the same refusal).
        #[test]
        fn recognising_never_changes_the_outcome(
            picks in proptest::collection::vec((0usize..6, 0usize..6), 0..12),
            prefix in 0usize..5,
            suffix in 0usize..4,
        ) {
            let mut pool: Vec<String> = (0..4)
                .map(|i| package_xml(&format!("p{i}"), &format!("Packages/p{i}.rpm"), "sha256", &format!("{i:064x}"), 1 + i as u64))
                .collect();
            // Entries whose bytes look like, or hide, known ones.
            pool.push(format!("<package><d><![CDATA[</package>\n{}]]></d></package>", pool[0]));
            pool.push(format!("<!-- {} -->", pool[1]));
            let known = known_of(&pool);
            let spaces = ["", "\n", "  \n  ", "x", "<!-- c -->", "\t"];
            let mut body = String::new();
            for (entry, space) in &picks {
                body.push_str(spaces[*space]);
                body.push_str(&pool[*entry]);
            }
            let head = [
                "<?xml version=\"1.0\"?>\n<metadata>",
                "<metadata a='>'>\n",
                "<!-- x --><metadata>",
                "<metadata a=\"",
                "<metadata/>",
            ][prefix];
            let tail = ["</metadata>", "\n</metadata>\n", "<!-- end --></metadata>", ""][suffix];
            let xml = format!("{head}{body}{tail}");
            let limits = Limits::default();
            let full = parse_primary("p.xml", xml.as_bytes(), &limits);
            let recognising = parse_primary_listings("p.xml", xml.as_bytes(), &limits, &known)
                .map(|l| resolve(l, &pool));
            match (full, recognising) {
                (Ok(a), Ok(b)) => prop_assert_eq!(a, b),
                (Err(_), Err(_)) => {}
                (a, b) => prop_assert!(false, "{xml}\nfull: {a:?}\nrecognising: {b:?}"),
            }
        }

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
