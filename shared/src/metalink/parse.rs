//! Reading metalinks the way librepo does: literal element names (`mm0:`
//! included), only the first `<file name="repomd.xml">`, URLs in document
//! order. For `drill`, `doctor` and the round-trip tests.

use super::{FileDescription, REPOMD_NAME};
use crate::xml::{Step, Walker, XmlError, attr};

/// Longest text kept from one element (a URL, a hash); real ones are under
/// 300 bytes.
const MAX_FIELD_BYTES: usize = 8192;

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
    /// Not well-formed, or over the walker's bounds.
    #[error("metalink: {0}")]
    Xml(#[from] XmlError),
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
pub(super) fn xml_trim(s: &str) -> &str {
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
/// order.
pub fn parse_metalink(xml: &str) -> Result<ParsedMetalink, MetalinkError> {
    let mut w = Walker::new(xml.as_bytes());
    // Names of the open elements, root first.
    let mut stack: Vec<String> = Vec::new();
    let mut result = ParsedMetalink::default();
    let mut found = false;
    let mut in_file = false;
    let mut alt: Option<FileDescription> = None;
    // (field, hash type, depth of the element, text so far)
    let mut capture: Option<(Field, String, usize, String)> = None;
    let mut comment: Option<String> = None;
    loop {
        let (e, depth) = match w.step()? {
            Step::Open { e, depth } => (e, depth),
            Step::Close { depth } => {
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
                continue;
            }
            Step::Text(t) => {
                if let Some(c) = capture.as_mut() {
                    if c.3.len() + t.len() > MAX_FIELD_BYTES {
                        return Err(MetalinkError::Invalid(format!(
                            "element text longer than {MAX_FIELD_BYTES} bytes"
                        )));
                    }
                    c.3.push_str(&t);
                }
                continue;
            }
            Step::Comment(t) => {
                if stack.len() == 1 && comment.is_none() {
                    comment = Some(t.into_owned());
                }
                continue;
            }
            Step::Eof => break,
            Step::Other => continue,
        };
        let qname = e.name();
        let name: &str = qname.as_ref();
        if depth == 1 && name != "metalink" {
            return Err(MetalinkError::Invalid(format!(
                "root element is <{name}>, not <metalink>"
            )));
        }
        stack.push(name.to_owned());
        let path: Vec<&str> = stack.iter().map(String::as_str).collect();
        let attr = |key: &str| attr(&e, key).map_err(MetalinkError::Invalid);
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
        // An empty element's Close follows at once with no text: an empty
        // number is refused there by set_field, an empty URL or hash kept.
        if let Some(f) = field {
            capture = Some((f, hash_type, depth, String::new()));
        }
    }
    if !found {
        return Err(MetalinkError::NoRepomd { comment });
    }
    Ok(result)
}
