//! The one XML walker behind every parser here (repomd.xml, primary.xml,
//! metalinks): literal element names (librepo and createrepo_c match names,
//! not namespaces), depth tracking, entity resolution, and a bound on the
//! input each event may span, so hostile input costs bounded memory.
//!
//! quick-xml buffers one whole event (a tag, a text node, a comment) before
//! returning it; a 2 GiB text node inside a small gzip bomb would otherwise
//! be held whole. [`Walker`] reads through [`EventBound`], which fails the
//! read once one event has consumed more than [`MAX_EVENT_BYTES`].

use std::borrow::Cow;
use std::io::{self, BufRead, Read};

use quick_xml::Reader;
use quick_xml::events::{BytesRef, BytesStart, Event};

/// Most input one event may span: a tag with its attributes, one text node,
/// one comment. Real repodata and metalinks stay under a few KiB per event
/// (a package description is the longest); 1 MiB leaves room and bounds
/// what a hostile file can make us buffer.
pub const MAX_EVENT_BYTES: usize = 1 << 20;

/// Deepest nesting followed; real repodata is 6 deep.
pub const MAX_DEPTH: usize = 64;

/// Why a document could not be walked. Each parser wraps this in its own
/// error type with the file name.
#[derive(Debug, thiserror::Error)]
pub enum XmlError {
    /// Not well-formed.
    #[error("malformed XML at byte {position}: {message}")]
    Malformed { position: u64, message: String },
    /// One event spans more input than [`MAX_EVENT_BYTES`].
    #[error("an XML element, text or comment longer than {MAX_EVENT_BYTES} bytes")]
    EventTooLarge,
    /// Nested deeper than [`MAX_DEPTH`].
    #[error("XML nested deeper than {MAX_DEPTH} elements")]
    TooDeep,
    /// An entity the XML spec does not predefine.
    #[error("unknown entity reference &{0};")]
    UnknownEntity(String),
    /// Elements still open at the end.
    #[error("truncated: unclosed elements at end")]
    Truncated,
    /// Reading the underlying input failed (decompression errors land here).
    #[error("{0}")]
    Io(io::Error),
}

/// One event, reduced to what the parsers need.
pub enum Step<'b> {
    /// Start (or empty) element at `depth` (root = 1).
    Open {
        e: BytesStart<'b>,
        depth: usize,
    },
    /// End of the element at `depth`; for an empty element it follows `Open`.
    Close {
        depth: usize,
    },
    /// Text, CDATA or a resolved reference inside the current element,
    /// borrowed from the reader's buffer: most text (descriptions, the
    /// whitespace between elements) is skipped, and copying every piece
    /// cost an allocation per event over 96 MB of a 100,000-package
    /// primary.xml.
    Text(Cow<'b, str>),
    /// A comment (MirrorManager puts error messages in one).
    Comment(Cow<'b, str>),
    Eof,
    Other,
}

/// A `BufRead` that refuses to let one event consume more than
/// [`MAX_EVENT_BYTES`]: the walker resets the count after every event.
pub struct EventBound<R> {
    inner: R,
    since_event: usize,
    exceeded: bool,
}

impl<R> EventBound<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            since_event: 0,
            exceeded: false,
        }
    }
}

impl<R: Read> Read for EventBound<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf)
    }
}

impl<R: BufRead> BufRead for EventBound<R> {
    fn fill_buf(&mut self) -> io::Result<&[u8]> {
        if self.since_event > MAX_EVENT_BYTES {
            self.exceeded = true;
            return Err(io::Error::other("XML event over the size limit"));
        }
        // Never offer more than the rest of the allowance, so that even an
        // in-memory input cannot be consumed past it in one step.
        let allowed = MAX_EVENT_BYTES + 1 - self.since_event;
        let buf = self.inner.fill_buf()?;
        Ok(&buf[..buf.len().min(allowed)])
    }

    fn consume(&mut self, amt: usize) {
        self.since_event = self.since_event.saturating_add(amt);
        self.inner.consume(amt);
    }
}

/// Walks a document one [`Step`] at a time.
pub struct Walker<R> {
    reader: Reader<EventBound<R>>,
    buf: Vec<u8>,
    depth: usize,
    pending_close: bool,
}

impl<R: BufRead> Walker<R> {
    /// Walks `input`, checking that end tags match start tags.
    pub fn new(input: R) -> Self {
        let mut reader = Reader::from_reader(EventBound::new(input));
        let config = reader.config_mut();
        config.check_end_names = true;
        config.expand_empty_elements = false;
        Self {
            reader,
            buf: Vec::new(),
            depth: 0,
            pending_close: false,
        }
    }

    /// Skips text that is only whitespace (between elements) instead of
    /// returning it, and the leading whitespace of other text.
    pub fn skip_leading_whitespace(mut self) -> Self {
        self.reader.config_mut().trim_text_start = true;
        self
    }

    /// The next step.
    pub fn step(&mut self) -> Result<Step<'_>, XmlError> {
        if self.pending_close {
            self.pending_close = false;
            let depth = self.depth;
            self.depth -= 1;
            return Ok(Step::Close { depth });
        }
        self.buf.clear();
        self.reader.get_mut().since_event = 0;
        let event = match self.reader.read_event_into(&mut self.buf) {
            Ok(event) => event,
            Err(e) => {
                return Err(if self.reader.get_ref().exceeded {
                    XmlError::EventTooLarge
                } else {
                    match e {
                        quick_xml::Error::Io(io) => {
                            XmlError::Io(io::Error::new(io.kind(), io.to_string()))
                        }
                        other => XmlError::Malformed {
                            position: self.reader.error_position(),
                            message: other.to_string(),
                        },
                    }
                });
            }
        };
        Ok(match event {
            Event::Start(e) | Event::Empty(e) if self.depth >= MAX_DEPTH => {
                let _ = e;
                return Err(XmlError::TooDeep);
            }
            Event::Start(e) => {
                self.depth += 1;
                Step::Open {
                    e,
                    depth: self.depth,
                }
            }
            Event::Empty(e) => {
                self.depth += 1;
                self.pending_close = true;
                Step::Open {
                    e,
                    depth: self.depth,
                }
            }
            Event::End(_) => {
                let depth = self.depth;
                self.depth = self.depth.saturating_sub(1);
                Step::Close { depth }
            }
            Event::Text(t) => Step::Text(t.xml10_content()),
            Event::CData(t) => Step::Text(t.xml10_content()),
            Event::GeneralRef(r) => match resolve_reference(&r) {
                Some(s) => Step::Text(Cow::Owned(s)),
                None => return Err(XmlError::UnknownEntity((*r).to_owned())),
            },
            Event::Comment(t) => Step::Comment(t.xml10_content()),
            Event::Eof => {
                if self.depth != 0 {
                    return Err(XmlError::Truncated);
                }
                Step::Eof
            }
            _ => Step::Other,
        })
    }
}

/// Text of an entity or character reference; `None` for entities XML does
/// not predefine (repodata and metalinks never declare their own).
fn resolve_reference(r: &BytesRef<'_>) -> Option<String> {
    match r.resolve_char_ref() {
        Ok(Some(c)) => Some(c.to_string()),
        Ok(None) => quick_xml::escape::resolve_xml_entity(r).map(str::to_owned),
        Err(_) => None,
    }
}

/// Value of attribute `name` on `e`, unescaped; `Err` says what is wrong.
pub fn attr(e: &BytesStart<'_>, name: &str) -> Result<Option<String>, String> {
    match e.try_get_attribute(name) {
        Ok(Some(a)) => a
            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .map(|v| Some(v.into_owned()))
            .map_err(|err| format!("attribute {name}: {err}")),
        Ok(None) => Ok(None),
        Err(err) => Err(format!("attribute {name}: {err}")),
    }
}

/// The text of one element being captured, bounded by `max` bytes.
pub struct Capture<F> {
    pub field: F,
    pub depth: usize,
    pub text: String,
    max: usize,
}

impl<F> Capture<F> {
    /// Starts capturing the text of the element at `depth`.
    pub fn new(field: F, depth: usize, max: usize) -> Self {
        Self {
            field,
            depth,
            text: String::new(),
            max,
        }
    }

    /// Appends `piece`; `Err` once the text would exceed the bound.
    pub fn push(&mut self, piece: &str) -> Result<(), String> {
        if self.text.len() + piece.len() > self.max {
            return Err(format!("element text longer than {} bytes", self.max));
        }
        self.text.push_str(piece);
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    fn walk(xml: &[u8]) -> Result<usize, XmlError> {
        let mut w = Walker::new(xml);
        let mut steps = 0;
        loop {
            if let Step::Eof = w.step()? {
                return Ok(steps);
            }
            steps += 1;
        }
    }

    #[test]
    fn walks_and_tracks_depth() {
        let mut w = Walker::new(&b"<a><b x=\"1\"/>t&amp;<!--c--></a>"[..]);
        let mut seen = Vec::new();
        loop {
            match w.step().unwrap() {
                Step::Open { e, depth } => {
                    seen.push(format!("open {} {depth}", AsRef::<str>::as_ref(&e.name())))
                }
                Step::Close { depth } => seen.push(format!("close {depth}")),
                Step::Text(t) => seen.push(format!("text {t}")),
                Step::Comment(c) => seen.push(format!("comment {c}")),
                Step::Eof => break,
                Step::Other => {}
            }
        }
        assert_eq!(
            seen,
            [
                "open a 1",
                "open b 2",
                "close 2",
                "text t",
                "text &",
                "comment c",
                "close 1"
            ]
        );
    }

    #[test]
    fn one_huge_event_is_refused_without_buffering_it() {
        let mut xml = b"<a>".to_vec();
        xml.extend(std::iter::repeat_n(b'x', MAX_EVENT_BYTES + 10));
        xml.extend(b"</a>");
        assert!(matches!(walk(&xml), Err(XmlError::EventTooLarge)));
        // Many events of ordinary size are fine, however long the document.
        let mut many = b"<a>".to_vec();
        for _ in 0..20_000 {
            many.extend(b"<b>0123456789012345678901234567890123456789</b>");
        }
        many.extend(b"</a>");
        assert!(walk(&many).is_ok());
    }

    #[test]
    fn depth_unknown_entities_and_truncation_are_errors() {
        let deep = "<a>".repeat(MAX_DEPTH + 1);
        assert!(matches!(walk(deep.as_bytes()), Err(XmlError::TooDeep)));
        assert!(matches!(
            walk(b"<a>&ent;</a>"),
            Err(XmlError::UnknownEntity(_))
        ));
        assert!(matches!(walk(b"<a><b>"), Err(XmlError::Truncated)));
        assert!(matches!(walk(b"<a></b>"), Err(XmlError::Malformed { .. })));
    }
}
