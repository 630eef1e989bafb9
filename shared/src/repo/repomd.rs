//! repomd.xml: the one file whose name never changes. Its `<data>` entries
//! name every other metadata file with its checksum.

use super::{
    Checksum, MAX_FIELD_BYTES, REPOMD_PATH, RepoError, attr, invalid, parse_u64, reject_xml_base,
    xml_err,
};
use crate::xml::{Capture, Step, Walker};

/// One `<data>` element of repomd.xml.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepomdData {
    /// `type=`: primary, filelists, other, primary_db, group, updateinfo…
    pub kind: String,
    /// `<location href>`, relative to the repo root.
    pub href: String,
    /// `<checksum>` of the file as stored (compressed); `<open-checksum>` is ignored.
    pub checksum: Checksum,
    pub size: Option<u64>,
    pub timestamp: Option<u64>,
}

/// A parsed repomd.xml.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Repomd {
    pub revision: Option<String>,
    pub data: Vec<RepomdData>,
}

impl Repomd {
    /// Largest `<data><timestamp>`: what MirrorManager (and yum 3's strict
    /// check) uses as the metalink's `mm0:timestamp`, not `<revision>`.
    pub fn max_timestamp(&self) -> Option<u64> {
        self.data.iter().filter_map(|d| d.timestamp).max()
    }

    /// The first `<data type="primary">`.
    pub fn primary(&self) -> Option<&RepomdData> {
        self.data.iter().find(|d| d.kind == "primary")
    }
}

#[derive(Clone, Copy)]
enum Field {
    Revision,
    Checksum,
    Timestamp,
    Size,
}

#[derive(Default)]
struct DataBuilder {
    kind: String,
    href: Option<String>,
    checksum_type: Option<String>,
    checksum: Option<String>,
    size: Option<u64>,
    timestamp: Option<u64>,
}

/// Unix seconds; old tools (python createrepo, modifyrepo) wrote floats.
pub(crate) fn parse_timestamp(s: &str) -> Option<u64> {
    let s = s.trim();
    s.parse::<u64>().ok().or_else(|| {
        s.parse::<f64>()
            .ok()
            .filter(|f| f.is_finite() && *f >= 0.0 && *f < 1.8e19)
            .map(|f| f as u64)
    })
}

/// Parses repomd.xml.
pub fn parse_repomd(xml: &[u8]) -> Result<Repomd, RepoError> {
    let file = REPOMD_PATH;
    let mut w = Walker::new(xml);
    let mut root_seen = false;
    let mut revision = None;
    let mut data = Vec::new();
    let mut cur: Option<DataBuilder> = None;
    let mut capture: Option<Capture<Field>> = None;
    loop {
        match w.step().map_err(xml_err(file))? {
            Step::Open { e, depth } => {
                let name = e.name();
                match (depth, name.as_ref()) {
                    (1, "repomd") if !root_seen => root_seen = true,
                    (1, other) => {
                        return Err(invalid(file, format!("unexpected root element <{other}>")));
                    }
                    (2, "revision") => {
                        capture = Some(Capture::new(Field::Revision, depth, MAX_FIELD_BYTES));
                    }
                    (2, "data") => {
                        let kind = attr(&e, "type", file)?
                            .ok_or_else(|| invalid(file, "<data> without type="))?;
                        cur = Some(DataBuilder {
                            kind,
                            ..DataBuilder::default()
                        });
                    }
                    (3, child) => {
                        if let Some(d) = cur.as_mut() {
                            let field = match child {
                                "checksum" => {
                                    d.checksum_type = attr(&e, "type", file)?;
                                    Some(Field::Checksum)
                                }
                                "timestamp" => Some(Field::Timestamp),
                                "size" => Some(Field::Size),
                                "location" => {
                                    reject_xml_base(&e, file)?;
                                    d.href = attr(&e, "href", file)?;
                                    None
                                }
                                _ => None,
                            };
                            capture = field.map(|f| Capture::new(f, depth, MAX_FIELD_BYTES));
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
                    let text = c.text.trim();
                    match (c.field, cur.as_mut()) {
                        (Field::Revision, _) => revision = Some(text.to_owned()),
                        (Field::Checksum, Some(d)) => d.checksum = Some(text.to_owned()),
                        (Field::Timestamp, Some(d)) => {
                            d.timestamp = Some(parse_timestamp(text).ok_or_else(|| {
                                invalid(file, format!("<timestamp> {text:?} is not a number"))
                            })?);
                        }
                        (Field::Size, Some(d)) => {
                            d.size = Some(parse_u64(text, "<size>", file)?);
                        }
                        _ => {}
                    }
                } else if depth == 2
                    && let Some(d) = cur.take()
                {
                    data.push(finish_data(d, file)?);
                }
            }
            Step::Eof => break,
            Step::Comment(_) | Step::Other => {}
        }
    }
    if !root_seen {
        return Err(invalid(file, "no <repomd> root element"));
    }
    Ok(Repomd { revision, data })
}

fn finish_data(d: DataBuilder, file: &str) -> Result<RepomdData, RepoError> {
    let what = format!("<data type={:?}>", d.kind);
    let href = d
        .href
        .ok_or_else(|| invalid(file, format!("{what} has no <location href>")))?;
    let value = d
        .checksum
        .ok_or_else(|| invalid(file, format!("{what} has no <checksum>")))?;
    let kind = d
        .checksum_type
        .ok_or_else(|| invalid(file, format!("{what} <checksum> has no type=")))?;
    let checksum = Checksum::parse(&kind, &value, &format!("{file}: {what}"))?;
    Ok(RepomdData {
        kind: d.kind,
        href,
        checksum,
        size: d.size,
        timestamp: d.timestamp,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use crate::repo::ChecksumKind;
    use crate::repo::fixtures::*;

    #[test]
    fn max_timestamp_is_the_largest_data_timestamp() {
        let repomd = repomd_xml(&[
            DataSpec {
                kind: "primary",
                href: "repodata/p.xml.gz".into(),
                checksum_type: "sha256",
                checksum: "a".repeat(64),
                size: 1,
                timestamp: 1_700_000_300,
            },
            DataSpec {
                kind: "other",
                href: "repodata/o.xml.gz".into(),
                checksum_type: "sha256",
                checksum: "b".repeat(64),
                size: 1,
                timestamp: 1_700_000_900,
            },
        ]);
        let r = parse_repomd(repomd.as_bytes()).unwrap();
        assert_eq!(r.max_timestamp(), Some(1_700_000_900));
        assert_eq!(r.revision.as_deref(), Some("1700000000"));
        let empty = parse_repomd(b"<repomd><revision>5</revision></repomd>").unwrap();
        assert_eq!(empty.max_timestamp(), None);
        // Old tools wrote float timestamps.
        assert_eq!(parse_timestamp("1330526906.62"), Some(1_330_526_906));
    }

    /// Verbatim layout of createrepo_c 0.17 output (empty-repo sizes from
    /// research/metalink.md §4), including tags, zchunk-only and _db fields.
    #[test]
    fn parses_createrepo_c_repomd() {
        let xml = br#"<?xml version="1.0" encoding="UTF-8"?>
<repomd xmlns="http://linux.duke.edu/metadata/repo" xmlns:rpm="http://linux.duke.edu/metadata/rpm">
  <revision>1700000000</revision>
  <tags>
    <content>binary-x86_64</content>
  </tags>
  <data type="primary">
    <checksum type="sha256">3b22b3a6a1b9a8a3e7c45c2cfd07d6d0b1bc3f2b4e3a8d9c1f0e6b5a4d3c2b1a</checksum>
    <open-checksum type="sha256">1c5a3f0c9e7e61bd4d6df1bdb50d6a9ad2d5ee5f4f0e1b0bb8f3a8f2d3c1b0a9</open-checksum>
    <location href="repodata/3b22b3a6a1b9a8a3e7c45c2cfd07d6d0b1bc3f2b4e3a8d9c1f0e6b5a4d3c2b1a-primary.xml.gz"/>
    <timestamp>1700000000</timestamp>
    <size>134</size>
    <open-size>167</open-size>
  </data>
  <data type="primary_db">
    <checksum type="sha256">aa22b3a6a1b9a8a3e7c45c2cfd07d6d0b1bc3f2b4e3a8d9c1f0e6b5a4d3c2b1a</checksum>
    <open-checksum type="sha256">bb5a3f0c9e7e61bd4d6df1bdb50d6a9ad2d5ee5f4f0e1b0bb8f3a8f2d3c1b0a9</open-checksum>
    <location href="repodata/aa-primary.sqlite.bz2"/>
    <timestamp>1700000001</timestamp>
    <size>1335</size>
    <open-size>106496</open-size>
    <database_version>10</database_version>
  </data>
  <data type="primary_zck">
    <checksum type="sha256">cc22b3a6a1b9a8a3e7c45c2cfd07d6d0b1bc3f2b4e3a8d9c1f0e6b5a4d3c2b1a</checksum>
    <open-checksum type="sha256">dd5a3f0c9e7e61bd4d6df1bdb50d6a9ad2d5ee5f4f0e1b0bb8f3a8f2d3c1b0a9</open-checksum>
    <header-checksum type="sha256">ee5a3f0c9e7e61bd4d6df1bdb50d6a9ad2d5ee5f4f0e1b0bb8f3a8f2d3c1b0a9</header-checksum>
    <location href="repodata/cc-primary.xml.zck"/>
    <timestamp>1700000002</timestamp>
    <size>300</size>
    <open-size>167</open-size>
    <header-size>132</header-size>
  </data>
</repomd>
"#;
        let r = parse_repomd(xml).unwrap();
        assert_eq!(r.revision.as_deref(), Some("1700000000"));
        assert_eq!(r.data.len(), 3);
        let p = r.primary().unwrap();
        assert_eq!(
            p,
            &RepomdData {
                kind: "primary".into(),
                href: "repodata/3b22b3a6a1b9a8a3e7c45c2cfd07d6d0b1bc3f2b4e3a8d9c1f0e6b5a4d3c2b1a-primary.xml.gz".into(),
                checksum: Checksum {
                    kind: ChecksumKind::Sha256,
                    hex: "3b22b3a6a1b9a8a3e7c45c2cfd07d6d0b1bc3f2b4e3a8d9c1f0e6b5a4d3c2b1a".into(),
                },
                size: Some(134),
                timestamp: Some(1_700_000_000),
            }
        );
        assert_eq!(r.data[2].href, "repodata/cc-primary.xml.zck");
        assert_eq!(r.max_timestamp(), Some(1_700_000_002));
    }
}
