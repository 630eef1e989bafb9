//! primary.xml with its known `<package>` entries cut out before parsing:
//! at 100,000 packages the XML walk is most of a publish's time, and a
//! security fix changes a handful of entries.
//!
//! An entry is cut only where the cut provably changes nothing but the
//! parse's cost:
//! - the document starts plainly (an XML declaration, then `<metadata …>`,
//!   nothing else: no comment, doctype or CDATA that could hide what looks
//!   like an entry);
//! - each entry follows the previous one, or that start, with nothing but
//!   whitespace between, starts with `<package` and ends at the first
//!   `</package>` after it;
//! - its bytes are those of an entry that was parsed before and held no
//!   `<!`, no `<?` and no nested `<package>` ([`self_contained`]): such bytes
//!   are exactly one complete element wherever they stand, and they parse to
//!   the same package every time.
//!
//! From the first thing that does not fit, everything is handed on as is to
//! the full parser. What is handed on is logged with its digest so that the
//! parser's packages can be matched back to the entries ([`Cut`]).

use std::cell::RefCell;
use std::io::{self, Read};
use std::rc::Rc;

use memchr::memmem;

use super::known::KnownPackages;
use crate::digest::Sha256Digest;

const OPEN: &[u8] = b"<package";
const CLOSE: &[u8] = b"</package>";
/// An entry longer than this is handed on and ends the cutting: it bounds
/// what is held while looking for an entry's end (the benchmark's are
/// ~1 KiB; a package with many provides has a few KiB more).
const MAX_LISTING: usize = 1 << 20;
/// The document's start (declaration and `<metadata>` tag) is looked for in
/// this many bytes.
const MAX_PREFIX: usize = 64 * 1024;
/// Bytes read from the decompressor at a time.
const READ_BYTES: usize = 64 * 1024;

/// One `<package>` entry met while cutting, in document order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Cut {
    /// Cut out: the same bytes as a known listing, which declared `entry`.
    Known { listing: Sha256Digest, entry: u32 },
    /// Handed on to the parser, which makes exactly one package of it.
    Passed { listing: Sha256Digest },
}

/// What was cut and passed, shared with the parser reading the output.
pub(super) type CutLog = Rc<RefCell<Vec<Cut>>>;

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    /// Looking for the first entry after a plain start.
    Prefix,
    /// After an entry (or the start): the next entry or something else.
    Between,
    /// Everything else is handed on unexamined.
    PassAll,
}

/// Reads `inner` (decompressed primary.xml) with the known entries cut out.
pub(super) struct Split<'k, R> {
    inner: R,
    known: &'k KnownPackages,
    /// Stops cutting past this many entries (the parser refuses the file).
    max_entries: usize,
    log: CutLog,
    /// Bytes read, `[..end)`: `[start, ready)` is to be handed on,
    /// `[ready, end)` is not yet examined.
    pending: Vec<u8>,
    start: usize,
    ready: usize,
    end: usize,
    /// Once `[start, ready)` is handed on, skip to here (a cut entry).
    skip: Option<usize>,
    state: State,
    eof: bool,
    /// A read error, returned once what came before it is handed on.
    error: Option<io::Error>,
    close: memmem::Finder<'static>,
}

impl<'k, R: Read> Split<'k, R> {
    pub(super) fn new(inner: R, known: &'k KnownPackages, max_entries: usize, log: CutLog) -> Self {
        Self {
            inner,
            known,
            max_entries,
            log,
            pending: Vec::new(),
            start: 0,
            ready: 0,
            end: 0,
            skip: None,
            state: State::Prefix,
            eof: false,
            error: None,
            close: memmem::Finder::new(CLOSE),
        }
    }

    /// Reads more of `inner` into `pending`, first dropping what is done.
    fn fill(&mut self) {
        if self.start > 0 {
            self.pending.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.ready -= self.start;
            self.skip = self.skip.map(|s| s - self.start);
            self.start = 0;
        }
        if self.pending.len() < self.end + READ_BYTES {
            self.pending.resize(self.end + READ_BYTES, 0);
        }
        loop {
            match self.inner.read(&mut self.pending[self.end..]) {
                Ok(n) => {
                    self.end += n;
                    self.eof = n == 0;
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.error = Some(e);
                    self.eof = true;
                    return;
                }
            }
        }
    }

    /// Hands on everything from `ready` on, unexamined.
    fn pass_all(&mut self) {
        self.state = State::PassAll;
        self.ready = self.end;
    }

    /// Examines what follows `ready`; false when more input is needed.
    fn examine(&mut self) -> bool {
        match self.state {
            State::PassAll => {
                self.ready = self.end;
                true
            }
            State::Prefix => {
                let data = &self.pending[self.ready..self.end];
                match memmem::find(data, OPEN) {
                    Some(at) if plain_start(&data[..at]) => {
                        self.ready += at;
                        self.state = State::Between;
                    }
                    Some(_) => self.pass_all(),
                    None if self.eof || data.len() > MAX_PREFIX => self.pass_all(),
                    None => return false,
                }
                true
            }
            State::Between => self.next_entry(),
        }
    }

    /// At `ready`: whitespace, then an entry to cut or hand on, or the end
    /// of cutting.
    fn next_entry(&mut self) -> bool {
        let at = self.ready;
        let data = &self.pending[at..self.end];
        let space = data.iter().take_while(|b| is_space(**b)).count();
        let rest = &data[space..];
        if rest.len() <= OPEN.len() {
            if self.eof {
                self.pass_all();
                return true;
            }
            return false;
        }
        if !rest.starts_with(OPEN) || !opens_package(rest) || rest[OPEN.len()] == b'/' {
            self.pass_all();
            return true;
        }
        let Some(end) = self.close.find(&rest[OPEN.len()..]) else {
            if self.eof || rest.len() > MAX_LISTING {
                self.pass_all();
                return true;
            }
            return false;
        };
        let len = OPEN.len() + end + CLOSE.len();
        let entry = &rest[..len];
        let mut log = self.log.borrow_mut();
        if len > MAX_LISTING || log.len() >= self.max_entries {
            drop(log);
            self.pass_all();
            return true;
        }
        let listing = Sha256Digest::of(entry);
        let after = at + space + len;
        if let Some(index) = self.known.get(&listing) {
            log.push(Cut::Known {
                listing,
                entry: index,
            });
            // The whitespace before it goes too: the parser skips it anyway.
            if self.start == at {
                self.start = after;
                self.ready = after;
            } else {
                self.skip = Some(after);
            }
        } else if self_contained(entry) {
            log.push(Cut::Passed { listing });
            self.ready = after;
        } else {
            drop(log);
            self.pass_all();
        }
        true
    }
}

impl<R: Read> Read for Split<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.start < self.ready {
                let n = buf.len().min(self.ready - self.start);
                buf[..n].copy_from_slice(&self.pending[self.start..self.start + n]);
                self.start += n;
                return Ok(n);
            }
            if let Some(to) = self.skip.take() {
                self.start = to;
                self.ready = to;
                continue;
            }
            if self.start == self.end {
                if let Some(e) = self.error.take() {
                    return Err(e);
                }
                if self.state == State::PassAll {
                    // Nothing held: straight through.
                    return if self.eof {
                        Ok(0)
                    } else {
                        self.inner.read(buf)
                    };
                }
                if self.eof {
                    return Ok(0);
                }
            }
            if !self.examine() {
                self.fill();
            }
        }
    }
}

fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n')
}

/// Whether `prefix` (everything before the first `<package`) is only an
/// optional XML declaration and the `<metadata …>` start tag, with
/// whitespace around: then the first entry is a child of `<metadata>`.
fn plain_start(prefix: &[u8]) -> bool {
    let mut s = prefix.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(prefix);
    if s.starts_with(b"<?xml") {
        match memmem::find(s, b"?>") {
            Some(end) if !s[1..end].contains(&b'<') => s = &s[end + 2..],
            _ => return false,
        }
    }
    let s = &s[s.iter().take_while(|b| is_space(**b)).count()..];
    let Some(tag) = s.strip_prefix(b"<metadata") else {
        return false;
    };
    if !tag.first().is_some_and(|b| is_space(*b) || *b == b'>') {
        return false;
    }
    // The tag ends at the first '>' outside quotes; only whitespace may
    // follow it.
    let mut quote = None;
    for (i, &b) in tag.iter().enumerate() {
        match quote {
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None => match b {
                b'"' | b'\'' => quote = Some(b),
                b'<' => return false,
                b'>' => {
                    return (i == 0 || tag[i - 1] != b'/')
                        && tag[i + 1..].iter().all(|b| is_space(*b));
                }
                _ => {}
            },
        }
    }
    false
}

/// Whether an entry, from `<package` to its first `</package>`, is one
/// complete element wherever it stands: nothing in it (a comment, CDATA, a
/// processing instruction, a nested `<package`) can make its bytes mean
/// anything but that.
pub(super) fn self_contained(entry: &[u8]) -> bool {
    memmem::find(entry, b"<!").is_none()
        && memmem::find(entry, b"<?").is_none()
        && !memmem::find_iter(&entry[1..], OPEN).any(|at| opens_package(&entry[1 + at..]))
}

/// Whether `s`, which starts with `<package`, opens a `<package>` element
/// (not `<packager>`, say).
fn opens_package(s: &[u8]) -> bool {
    s.get(OPEN.len())
        .is_some_and(|b| is_space(*b) || *b == b'>' || *b == b'/')
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    /// Yields `data` a few bytes at a time.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    fn known_of(entries: &[&str]) -> KnownPackages {
        let digests: Vec<_> = entries
            .iter()
            .map(|e| Sha256Digest::of(e.as_bytes()))
            .collect();
        KnownPackages::new(digests.iter().map(Some))
    }

    fn split(xml: &str, known: &KnownPackages, step: usize) -> (String, Vec<Cut>) {
        let log = CutLog::default();
        let mut out = String::new();
        Split::new(
            Trickle {
                data: xml.as_bytes(),
                step,
            },
            known,
            usize::MAX,
            log.clone(),
        )
        .read_to_string(&mut out)
        .unwrap();
        let cuts = log.borrow().clone();
        (out, cuts)
    }

    const A: &str = "<package type=\"rpm\"><name>a</name></package>";
    const B: &str = "<package type=\"rpm\"><name>b</name><packager/></package>";

    #[test]
    fn known_entries_are_cut_and_the_rest_handed_on_in_order() {
        let xml = format!(
            "<?xml version=\"1.0\"?>\n<metadata packages=\"3\">\n  {A}\n  {B}\n  {A}\n</metadata>\n"
        );
        let known = known_of(&[A]);
        for step in [1, 3, 7, 64, 100_000] {
            let (out, cuts) = split(&xml, &known, step);
            assert_eq!(
                out,
                format!(
                    "<?xml version=\"1.0\"?>\n<metadata packages=\"3\">\n  \n  {B}\n</metadata>\n"
                ),
                "step {step}"
            );
            let a = Sha256Digest::of(A.as_bytes());
            let b = Sha256Digest::of(B.as_bytes());
            assert_eq!(
                cuts,
                [
                    Cut::Known {
                        listing: a,
                        entry: 0
                    },
                    Cut::Passed { listing: b },
                    Cut::Known {
                        listing: a,
                        entry: 0
                    },
                ],
                "step {step}"
            );
        }
    }

    #[test]
    fn nothing_is_cut_where_the_context_is_not_certain() {
        let known = known_of(&[A]);
        let cases = [
            // A comment before the first entry could hide anything.
            format!("<!-- x --><metadata>{A}</metadata>"),
            format!("<metadata><!-- {A} --></metadata>"),
            // A doctype, an unexpected root.
            format!("<!DOCTYPE metadata><metadata>{A}</metadata>"),
            format!("<other>{A}</other>"),
            // Inside an attribute value (not well-formed, but must not
            // become well-formed by the cut).
            format!("<metadata a=\"{A}\"></metadata>"),
            format!("<metadata/>{A}"),
            // Inside CDATA or a comment after an entry that does not fit.
            format!("<metadata><package><![CDATA[</package>\n{A}]]></package></metadata>"),
            format!("<metadata>{B}<!-- {A} --></metadata>"),
            format!("<metadata>{B}text{A}</metadata>"),
        ];
        for xml in &cases {
            let (out, cuts) = split(xml, &known, 5);
            assert_eq!(&out, xml);
            assert!(
                !cuts.iter().any(|c| matches!(c, Cut::Known { .. })),
                "{xml}: {cuts:?}"
            );
        }
    }

    #[test]
    fn entries_that_could_mean_something_else_elsewhere_are_not_logged() {
        for entry in [
            "<package><d><![CDATA[x]]></d></package>",
            "<package><!-- c --></package>",
            "<package><?pi x?></package>",
            "<package><package></package>",
        ] {
            let xml = format!("<metadata>{entry}{A}</metadata>");
            let (out, cuts) = split(&xml, &known_of(&[A]), 4);
            assert_eq!(out, xml);
            assert!(cuts.is_empty(), "{entry}: {cuts:?}");
        }
    }

    #[test]
    fn read_errors_come_after_the_bytes_before_them() {
        struct Failing(bool);
        impl Read for Failing {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if std::mem::replace(&mut self.0, true) {
                    return Err(io::Error::other("corrupt"));
                }
                let data = b"<metadata>\n<package>";
                buf[..data.len()].copy_from_slice(data);
                Ok(data.len())
            }
        }
        let known = KnownPackages::default();
        let mut s = Split::new(Failing(false), &known, usize::MAX, CutLog::default());
        let mut out = Vec::new();
        let mut buf = [0u8; 4];
        let err = loop {
            match s.read(&mut buf) {
                Ok(0) => panic!("no error"),
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) => break e,
            }
        };
        assert_eq!(err.to_string(), "corrupt");
        assert_eq!(out, b"<metadata>\n<package>");
    }

    #[test]
    fn cutting_stops_at_the_entry_limit() {
        let xml = format!("<metadata>{A}{A}{A}</metadata>");
        let known = known_of(&[A]);
        let log = CutLog::default();
        let mut out = String::new();
        Split::new(xml.as_bytes(), &known, 2, log.clone())
            .read_to_string(&mut out)
            .unwrap();
        assert_eq!(log.borrow().len(), 2);
        assert_eq!(out, format!("<metadata>{A}</metadata>"));
    }

    #[test]
    fn plain_starts() {
        assert!(plain_start(b"<metadata>"));
        assert!(plain_start(
            b"\xEF\xBB\xBF<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<metadata xmlns=\"x\" a='>' packages=\"2\">\n  "
        ));
        assert!(!plain_start(b"<metadata"));
        assert!(!plain_start(b"<metadata a=\">"));
        assert!(!plain_start(b"<metadatax>"));
        assert!(!plain_start(b"<metadata/>"));
        assert!(!plain_start(b"<metadata>x"));
        assert!(!plain_start(b"<?xml <x?><metadata>"));
        assert!(!plain_start(b"<?xml?><?pi?><metadata>"));
    }
}
