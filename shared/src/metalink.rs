//! MirrorManager-format metalink writer and parser (DESIGN §7,
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

use std::io;
use std::time::{SystemTime, UNIX_EPOCH};

use md5::Md5;
use quick_xml::Reader;
use quick_xml::Writer;
use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};
use sha1::Sha1;
use sha2::{Digest, Sha256, Sha512};

/// Default namespace of Metalink 3.0.
const METALINK_NS: &str = "http://www.metalinker.org/";
/// MirrorManager's extension namespace, always bound to the `mm0` prefix.
const MM0_NS: &str = "http://fedorahosted.org/mirrormanager";
/// The only file name librepo looks for.
const REPOMD_NAME: &str = "repomd.xml";
/// What each mirror URL ends in: yum 3 accepts nothing else.
const REPOMD_SUFFIX: &str = "repodata/repomd.xml";
/// Deepest nesting the parser follows; a real metalink is 6 deep.
const MAX_DEPTH: usize = 32;

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

/// Full URL of repomd.xml under `base`, with exactly one '/' between.
fn repomd_url(base: &str) -> String {
    if base.ends_with('/') {
        format!("{base}{REPOMD_SUFFIX}")
    } else {
        format!("{base}/{REPOMD_SUFFIX}")
    }
}

/// URL scheme for `protocol=`/`type=`; librepo takes it from the URL itself,
/// old yum read the attribute.
fn scheme(url: &str) -> String {
    url.split_once("://")
        .map(|(s, _)| s.to_ascii_lowercase())
        .filter(|s| {
            s.starts_with(|c: char| c.is_ascii_alphabetic())
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        })
        .unwrap_or_else(|| "http".to_owned())
}

/// RFC 1123 date in GMT, e.g. `Thu, 26 Nov 2026 04:09:33 GMT`. Times before
/// 1970 are clamped to the epoch.
pub fn httpdate(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    // 1970-01-01 was a Thursday, hence WEEKDAYS starting there.
    let weekday = WEEKDAYS[(days % 7) as usize];
    let month_name = MONTHS[(month - 1) as usize];
    format!(
        "{weekday}, {day:02} {month_name} {year} {:02}:{:02}:{:02} GMT",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// (year, month 1-12, day 1-31) of `days` since 1970-01-01, after Howard
/// Hinnant's `civil_from_days`, restricted to non-negative days.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097; // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11], March-based
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// The `<metalink …>` start tag shared by metalinks and error documents.
fn metalink_start(pubdate: SystemTime) -> BytesStart<'static> {
    let date = httpdate(pubdate);
    BytesStart::new("metalink").with_attributes([
        ("version", "3.0"),
        ("xmlns", METALINK_NS),
        ("type", "dynamic"),
        ("pubdate", date.as_str()),
        ("generator", "hotpush"),
        ("xmlns:mm0", MM0_NS),
    ])
}

/// Writes timestamp, size and verification of one repomd.xml version.
fn write_details(w: &mut Writer<Vec<u8>>, fd: &FileDescription) -> io::Result<()> {
    // <mm0:timestamp>N</mm0:timestamp>
    w.create_element("mm0:timestamp")
        .write_text_content(BytesText::new(&fd.timestamp.to_string()))?;
    // <size>N</size>
    w.create_element("size")
        .write_text_content(BytesText::new(&fd.size.to_string()))?;
    // <verification>
    w.write_event(Event::Start(BytesStart::new("verification")))?;
    for (kind, value) in fd.hashes() {
        // An empty <hash> would be librepo's "strongest" and never match.
        if value.is_empty() {
            continue;
        }
        // <hash type="sha256">hex</hash>
        w.create_element("hash")
            .with_attribute(("type", kind))
            .write_text_content(BytesText::new(value))?;
    }
    // </verification>
    w.write_event(Event::End(BytesEnd::new("verification")))?;
    Ok(())
}

fn try_write_metalink(
    current: &FileDescription,
    alternates: &[FileDescription],
    mirrors: &[Mirror],
    pubdate: SystemTime,
) -> io::Result<String> {
    let mut w = Writer::new_with_indent(Vec::new(), b' ', 1);
    // <?xml version="1.0" encoding="utf-8"?>
    w.write_event(Event::Decl(BytesDecl::new("1.0", Some("utf-8"), None)))?;
    // <metalink version="3.0" xmlns=… type="dynamic" pubdate=… generator="hotpush" xmlns:mm0=…>
    w.write_event(Event::Start(metalink_start(pubdate)))?;
    // <files>
    w.write_event(Event::Start(BytesStart::new("files")))?;
    // <file name="repomd.xml">
    w.write_event(Event::Start(
        BytesStart::new("file").with_attributes([("name", REPOMD_NAME)]),
    ))?;
    write_details(&mut w, current)?;
    if !alternates.is_empty() {
        // Newest first, as MirrorManager sorts them (MM2 PR #121).
        let mut sorted: Vec<&FileDescription> = alternates.iter().collect();
        sorted.sort_by_key(|fd| std::cmp::Reverse(fd.timestamp));
        // <mm0:alternates>
        w.write_event(Event::Start(BytesStart::new("mm0:alternates")))?;
        for alt in sorted {
            // <mm0:alternate>
            w.write_event(Event::Start(BytesStart::new("mm0:alternate")))?;
            write_details(&mut w, alt)?;
            // </mm0:alternate>
            w.write_event(Event::End(BytesEnd::new("mm0:alternate")))?;
        }
        // </mm0:alternates>
        w.write_event(Event::End(BytesEnd::new("mm0:alternates")))?;
    }
    // <resources maxconnections="1">
    w.write_event(Event::Start(
        BytesStart::new("resources").with_attributes([("maxconnections", "1")]),
    ))?;
    for (i, mirror) in mirrors.iter().enumerate() {
        let url = repomd_url(&mirror.base_url);
        let protocol = scheme(&url);
        // librepo ignores preference (document order is try order); the
        // values only keep MirrorManager's shape: 100, 99, … never below 1.
        let preference = 100usize.saturating_sub(i).max(1).to_string();
        let location = mirror.location.to_ascii_uppercase();
        let mut start = BytesStart::new("url");
        start.push_attribute(("protocol", protocol.as_str()));
        start.push_attribute(("type", protocol.as_str()));
        if !location.is_empty() {
            start.push_attribute(("location", location.as_str()));
        }
        start.push_attribute(("preference", preference.as_str()));
        // <url protocol="http" type="http" location="XX" preference="100">…/repodata/repomd.xml</url>
        w.write_event(Event::Start(start))?;
        w.write_event(Event::Text(BytesText::new(&url)))?;
        w.write_event(Event::End(BytesEnd::new("url")))?;
    }
    // </resources>
    w.write_event(Event::End(BytesEnd::new("resources")))?;
    // </file>
    w.write_event(Event::End(BytesEnd::new("file")))?;
    // </files>
    w.write_event(Event::End(BytesEnd::new("files")))?;
    // </metalink>
    w.write_event(Event::End(BytesEnd::new("metalink")))?;
    let mut out = w.into_inner();
    out.push(b'\n');
    // Only &str went in, so this is valid UTF-8; lossy avoids a panic path.
    Ok(String::from_utf8_lossy(&out).into_owned())
}

/// The metalink for `current`, listing `mirrors` in the order clients should
/// try them (librepo uses document order, not `preference`). `alternates`
/// let clients accept older repomd.xml versions — and so stay on them; pass
/// none for urgent snapshots (DESIGN §7).
pub fn write_metalink(
    current: &FileDescription,
    alternates: &[FileDescription],
    mirrors: &[Mirror],
    pubdate: SystemTime,
) -> String {
    // Writing into a Vec cannot fail; if it ever did, a client gets an
    // error document (dnf: "repomd.xml was not found") rather than garbage.
    try_write_metalink(current, alternates, mirrors, pubdate)
        .unwrap_or_else(|e| error_document_at(&format!("metalink writer failed: {e}"), pubdate))
}

/// Makes `message` safe inside `<!-- … -->`: no `--`, no characters XML
/// forbids.
fn sanitize_comment(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for c in message.chars() {
        let allowed = matches!(c, '\t' | '\n' | '\r')
            || (!c.is_control() && c != '\u{FFFE}' && c != '\u{FFFF}');
        let c = if allowed { c } else { '?' };
        if c == '-' && out.ends_with('-') {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

/// MirrorManager's error document: a metalink with no `<files>` and the
/// reason in a comment. dnf reports `file "repomd.xml" was not found in
/// metalink`.
pub fn error_document(message: &str) -> String {
    error_document_at(message, SystemTime::now())
}

/// [`error_document`] with a fixed `pubdate`, for deterministic output.
pub fn error_document_at(message: &str, pubdate: SystemTime) -> String {
    let mut start = Writer::new(Vec::new());
    // <metalink version="3.0" … > (escaping via the writer, like the metalink)
    let header = match start.write_event(Event::Start(metalink_start(pubdate))) {
        Ok(()) => String::from_utf8_lossy(&start.into_inner()).into_owned(),
        Err(_) => format!(
            "<metalink version=\"3.0\" xmlns=\"{METALINK_NS}\" type=\"dynamic\" generator=\"hotpush\" xmlns:mm0=\"{MM0_NS}\">"
        ),
    };
    format!(
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n{header}\n<!-- {}\n-->\n</metalink>\n",
        sanitize_comment(message)
    )
}

/// What a metalink says about repomd.xml.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParsedMetalink {
    /// Missing timestamp or size read as 0; missing hashes as "".
    pub file: FileDescription,
    /// In document order.
    pub alternates: Vec<FileDescription>,
    /// In document order (the order librepo tries them).
    pub urls: Vec<String>,
}

/// Why a metalink could not be used.
#[derive(Debug, thiserror::Error)]
pub enum MetalinkError {
    /// Not well-formed XML.
    #[error("malformed metalink at byte {position}: {message}")]
    Xml { position: u64, message: String },
    /// No `<file name="repomd.xml">`, e.g. an error document; its comment
    /// usually says why.
    #[error("file \"repomd.xml\" was not found in metalink{}", comment_suffix(.comment))]
    NoRepomd { comment: Option<String> },
    /// Well-formed but not a usable metalink.
    #[error("metalink: {0}")]
    Invalid(String),
}

fn comment_suffix(comment: &Option<String>) -> String {
    comment
        .as_ref()
        .map(|c| format!(": {}", c.trim()))
        .unwrap_or_default()
}

/// Which field a captured text goes to.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Field {
    Timestamp,
    Size,
    Hash,
    Url,
}

/// Trims XML whitespace only (not every Unicode space), like the XML spec.
fn xml_trim(s: &str) -> &str {
    s.trim_matches([' ', '\t', '\r', '\n'])
}

fn set_field(
    fd: &mut FileDescription,
    field: Field,
    hash_type: &str,
    text: &str,
) -> Result<(), MetalinkError> {
    let number = |what: &str| {
        xml_trim(text)
            .parse::<u64>()
            .map_err(|_| MetalinkError::Invalid(format!("<{what}> {text:?} is not a number")))
    };
    match field {
        Field::Timestamp => fd.timestamp = number("mm0:timestamp")?,
        Field::Size => fd.size = number("size")?,
        Field::Hash => {
            let slot = match hash_type {
                "md5" => &mut fd.md5,
                "sha1" => &mut fd.sha1,
                "sha256" => &mut fd.sha256,
                "sha512" => &mut fd.sha512,
                // Types we do not carry (sha224, sha384…) are skipped, as
                // librepo skips unknown ones.
                _ => return Ok(()),
            };
            *slot = xml_trim(text).to_owned();
        }
        Field::Url => {}
    }
    Ok(())
}

/// Parses a metalink the way librepo does: literal element names (`mm0:`
/// included), only the first `<file name="repomd.xml">`, URLs in document
/// order. For round-trip tests and the origin's `drill`.
pub fn parse_metalink(xml: &str) -> Result<ParsedMetalink, MetalinkError> {
    let mut reader = Reader::from_str(xml);
    reader.config_mut().check_end_names = true;
    let mut stack: Vec<String> = Vec::new();
    let mut result = ParsedMetalink::default();
    let mut found = false;
    let mut in_file = false;
    let mut alt: Option<FileDescription> = None;
    // (field, hash type, depth of the element, text so far)
    let mut capture: Option<(Field, String, usize, String)> = None;
    let mut comment: Option<String> = None;
    loop {
        let event = reader.read_event().map_err(|e| MetalinkError::Xml {
            position: reader.error_position(),
            message: e.to_string(),
        })?;
        let (start, empty) = match event {
            Event::Start(e) => (Some(e), false),
            Event::Empty(e) => (Some(e), true),
            Event::End(_) => {
                let depth = stack.len();
                if let Some((field, hash_type, _, text)) = capture.take_if(|c| c.2 == depth) {
                    match field {
                        Field::Url => result.urls.push(xml_trim(&text).to_owned()),
                        _ => match alt.as_mut() {
                            Some(a) => set_field(a, field, &hash_type, &text)?,
                            None => set_field(&mut result.file, field, &hash_type, &text)?,
                        },
                    }
                }
                let closed = stack.pop();
                match closed.as_deref() {
                    Some("mm0:alternate") if in_file => {
                        if let Some(a) = alt.take() {
                            result.alternates.push(a);
                        }
                    }
                    Some("file") if in_file && stack.len() == 2 => in_file = false,
                    _ => {}
                }
                (None, false)
            }
            Event::Text(t) => {
                if let Some(c) = capture.as_mut() {
                    c.3.push_str(&t.xml10_content());
                }
                (None, false)
            }
            Event::CData(t) => {
                if let Some(c) = capture.as_mut() {
                    c.3.push_str(&t.xml10_content());
                }
                (None, false)
            }
            Event::GeneralRef(r) => {
                let text = crate::repo::resolve_reference(&r).ok_or_else(|| {
                    MetalinkError::Invalid(format!("unknown entity reference &{};", &*r))
                })?;
                if let Some(c) = capture.as_mut() {
                    c.3.push_str(&text);
                }
                (None, false)
            }
            Event::Comment(t) => {
                if stack.len() == 1 && comment.is_none() {
                    comment = Some(t.xml10_content().into_owned());
                }
                (None, false)
            }
            Event::Eof => break,
            _ => (None, false),
        };
        let Some(e) = start else { continue };
        let name = e.name().as_ref().to_owned();
        if stack.is_empty() && name != "metalink" {
            return Err(MetalinkError::Invalid(format!(
                "root element is <{name}>, not <metalink>"
            )));
        }
        if stack.len() >= MAX_DEPTH {
            return Err(MetalinkError::Invalid("nested too deep".to_owned()));
        }
        stack.push(name);
        let depth = stack.len();
        let path: Vec<&str> = stack.iter().map(String::as_str).collect();
        let attr = |key: &str| -> Result<Option<String>, MetalinkError> {
            match e.try_get_attribute(key) {
                Ok(Some(a)) => a
                    .normalized_value(quick_xml::XmlVersion::Implicit1_0)
                    .map(|v| Some(v.into_owned()))
                    .map_err(|err| MetalinkError::Invalid(format!("attribute {key}: {err}"))),
                Ok(None) => Ok(None),
                Err(err) => Err(MetalinkError::Invalid(format!("attribute {key}: {err}"))),
            }
        };
        let mut field = None;
        let mut hash_type = String::new();
        match path.as_slice() {
            // Only the first repomd.xml counts (lr_metalink_parse_file).
            ["metalink", "files", "file"]
                if !found && attr("name")?.as_deref() == Some(REPOMD_NAME) =>
            {
                found = true;
                in_file = true;
            }
            ["metalink", "files", "file", rest @ ..] if in_file => match rest {
                ["mm0:timestamp"] | ["mm0:alternates", "mm0:alternate", "mm0:timestamp"] => {
                    field = Some(Field::Timestamp);
                }
                ["size"] | ["mm0:alternates", "mm0:alternate", "size"] => {
                    field = Some(Field::Size);
                }
                ["verification", "hash"]
                | ["mm0:alternates", "mm0:alternate", "verification", "hash"] => {
                    hash_type = attr("type")?.unwrap_or_default();
                    field = Some(Field::Hash);
                }
                ["mm0:alternates", "mm0:alternate"] => alt = Some(FileDescription::default()),
                ["resources", "url"] => field = Some(Field::Url),
                _ => {}
            },
            _ => {}
        }
        if empty {
            // An empty element has no text: record "" and close it now.
            if let Some(f) = field {
                match f {
                    Field::Url => result.urls.push(String::new()),
                    Field::Hash => match alt.as_mut() {
                        Some(a) => set_field(a, f, &hash_type, "")?,
                        None => set_field(&mut result.file, f, &hash_type, "")?,
                    },
                    // An empty number is as wrong as a non-number.
                    _ => {
                        return Err(MetalinkError::Invalid(format!(
                            "<{}> is empty",
                            stack.last().map_or("", String::as_str)
                        )));
                    }
                }
            }
            if path.as_slice()
                == [
                    "metalink",
                    "files",
                    "file",
                    "mm0:alternates",
                    "mm0:alternate",
                ]
                && let Some(a) = alt.take()
            {
                result.alternates.push(a);
            }
            if path.as_slice() == ["metalink", "files", "file"] {
                in_file = false;
            }
            stack.pop();
        } else if let Some(f) = field {
            capture = Some((f, hash_type, depth, String::new()));
        }
    }
    if !found {
        return Err(MetalinkError::NoRepomd { comment });
    }
    Ok(result)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use std::time::Duration;

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
            Err(MetalinkError::Xml { .. })
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
