//! Writing metalinks: the exact element names and order librepo and yum
//! expect, one `<url>` per mirror in the order clients should try them.

use std::io;
use std::time::SystemTime;

use quick_xml::Writer;
use quick_xml::events::{BytesDecl, BytesEnd, BytesStart, BytesText, Event};

use super::{FileDescription, METALINK_NS, MM0_NS, Mirror, REPOMD_NAME, REPOMD_SUFFIX, httpdate};

/// Full URL of repomd.xml under `base`, with exactly one '/' between.
pub(super) fn repomd_url(base: &str) -> String {
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
/// none for urgent snapshots (docs/PROTOCOL.md "The metalink").
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
