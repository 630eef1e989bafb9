//! Writing metalinks: the exact element names and order librepo and yum
//! expect, one `<url>` per mirror in the order clients should try them.

use std::fmt::Write as _;
use std::time::SystemTime;

use quick_xml::escape::escape;

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
fn metalink_start(pubdate: SystemTime) -> String {
    format!(
        "<metalink version=\"3.0\" xmlns=\"{METALINK_NS}\" type=\"dynamic\" pubdate=\"{}\" \
         generator=\"hotpush\" xmlns:mm0=\"{MM0_NS}\">",
        httpdate(pubdate)
    )
}

const DECLARATION: &str = "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n";

/// Timestamp, size and verification of one repomd.xml version, at `depth`
/// (one space per level, as mirrorlist-server writes it).
fn write_details(out: &mut String, fd: &FileDescription, depth: usize) {
    let pad = " ".repeat(depth);
    let _ = write!(
        out,
        "{pad}<mm0:timestamp>{}</mm0:timestamp>\n{pad}<size>{}</size>\n{pad}<verification>\n",
        fd.timestamp, fd.size
    );
    for (kind, value) in fd.hashes() {
        // An empty <hash> would be librepo's "strongest" and never match.
        if value.is_empty() {
            continue;
        }
        let _ = writeln!(out, "{pad} <hash type=\"{kind}\">{}</hash>", escape(value));
    }
    let _ = writeln!(out, "{pad}</verification>");
}

/// One mirror as a metalink lists it, escaped once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MirrorEntry {
    /// `…/repodata/repomd.xml`, escaped.
    url: String,
    protocol: String,
    /// ` location="XX"` or nothing.
    location: String,
}

impl MirrorEntry {
    pub fn new(mirror: &Mirror) -> Self {
        let url = repomd_url(&mirror.base_url);
        let protocol = escape(scheme(&url)).into_owned();
        let location = match mirror.location.to_ascii_uppercase() {
            l if l.is_empty() => String::new(),
            l => format!(" location=\"{}\"", escape(&l)),
        };
        Self {
            url: escape(&url).into_owned(),
            protocol,
            location,
        }
    }
}

/// A metalink rendered once for a repomd.xml and its alternates: a request
/// only adds the date and its mirrors, in its own order.
#[derive(Clone, Debug)]
pub struct Template {
    /// From `<files>` to `<resources …>`, each line indented.
    files: String,
}

impl Template {
    /// `alternates` let clients accept other repomd.xml versions — and so
    /// stay on them; pass none for urgent snapshots outside a flip
    /// (docs/PROTOCOL.md "The metalink").
    pub fn new(current: &FileDescription, alternates: &[FileDescription]) -> Self {
        let mut files = format!(" <files>\n  <file name=\"{REPOMD_NAME}\">\n");
        write_details(&mut files, current, 3);
        if !alternates.is_empty() {
            // Newest first, as MirrorManager sorts them (MM2 PR #121).
            let mut sorted: Vec<&FileDescription> = alternates.iter().collect();
            sorted.sort_by_key(|fd| std::cmp::Reverse(fd.timestamp));
            files.push_str("   <mm0:alternates>\n");
            for alt in sorted {
                files.push_str("    <mm0:alternate>\n");
                write_details(&mut files, alt, 5);
                files.push_str("    </mm0:alternate>\n");
            }
            files.push_str("   </mm0:alternates>\n");
        }
        files.push_str("   <resources maxconnections=\"1\">\n");
        Self { files }
    }

    /// The document, listing `mirrors` in the order clients should try
    /// them (librepo uses document order, not `preference`).
    pub fn render<'a>(
        &self,
        mirrors: impl IntoIterator<Item = &'a MirrorEntry>,
        pubdate: SystemTime,
    ) -> String {
        let mut out = String::with_capacity(self.files.len() + 512);
        out.push_str(DECLARATION);
        out.push_str(&metalink_start(pubdate));
        out.push('\n');
        out.push_str(&self.files);
        for (i, m) in mirrors.into_iter().enumerate() {
            // librepo ignores preference; the values only keep
            // MirrorManager's shape: 100, 99, … never below 1.
            let preference = 100usize.saturating_sub(i).max(1);
            let _ = writeln!(
                out,
                "    <url protocol=\"{p}\" type=\"{p}\"{location} preference=\"{preference}\">{url}</url>",
                p = m.protocol,
                location = m.location,
                url = m.url,
            );
        }
        out.push_str("   </resources>\n  </file>\n </files>\n</metalink>\n");
        out
    }
}

/// The metalink for `current`, listing `mirrors` in the order clients
/// should try them; see [`Template`].
pub fn write_metalink(
    current: &FileDescription,
    alternates: &[FileDescription],
    mirrors: &[Mirror],
    pubdate: SystemTime,
) -> String {
    let entries: Vec<MirrorEntry> = mirrors.iter().map(MirrorEntry::new).collect();
    Template::new(current, alternates).render(&entries, pubdate)
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
    format!(
        "{DECLARATION}{}\n<!-- {}\n-->\n</metalink>\n",
        metalink_start(pubdate),
        sanitize_comment(message)
    )
}
