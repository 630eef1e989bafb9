//! Repodata parsing (repomd.xml, primary.xml) and repo validation.
//!
//! DESIGN §4 "What goes in": a snapshot holds `repodata/repomd.xml` (plus its
//! `.asc`/`.key`), every file repomd.xml references and every package primary
//! references, each checked against the checksum the repodata itself declares.
//! A broken repo is refused with the exact file and both checksums.
//!
//! The XML parsers match literal element names, as createrepo_c and librepo do:
//! repomd.xml and primary.xml use a default namespace, and the `rpm:` children
//! of `<format>` are skipped by depth.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use quick_xml::Reader;
use quick_xml::events::{BytesRef, BytesStart, Event};
use sha2::Digest as _;

use crate::digest::Sha256Digest;
use crate::limits::Limits;

/// The one file whose name never changes; everything else hangs off it.
pub const REPOMD_PATH: &str = "repodata/repomd.xml";
/// Published with repomd.xml when present (repo_gpgcheck signature and key).
const REPOMD_EXTRAS: [&str; 2] = ["repodata/repomd.xml.asc", "repodata/repomd.xml.key"];
/// Longest text kept from one element (a checksum, a number, the revision):
/// bounds memory on hostile input; real values are under 200 bytes.
const MAX_FIELD_BYTES: usize = 4096;
/// NAME_MAX: no file system we publish to takes a longer segment.
const MAX_SEGMENT_BYTES: usize = 255;
/// Read buffer for hashing; large enough that syscalls do not dominate.
const HASH_BUF_BYTES: usize = 256 * 1024;

/// Why a repo (or one of its metadata files) was refused. Every message names
/// the file at fault and, for checksums, the declared and actual values.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    /// `repodata/repomd.xml` does not exist.
    #[error("{REPOMD_PATH}: not found — is {} a yum repository?", dir.display())]
    NotARepo { dir: PathBuf },
    /// Reading or decompressing failed.
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
    /// Not well-formed XML.
    #[error("{file}: malformed XML at byte {position}: {message}")]
    Xml {
        file: String,
        position: u64,
        message: String,
    },
    /// Well-formed XML that is not valid repodata.
    #[error("{file}: {reason}")]
    Invalid { file: String, reason: String },
    /// A checksum type we cannot verify (e.g. sha384, crc32).
    #[error("{file}: unsupported checksum type {kind:?}")]
    UnsupportedChecksum { file: String, kind: String },
    /// A primary we cannot decompress (e.g. zchunk).
    #[error("{file}: unsupported compression (primary must be .xml, .xml.gz, .xml.zst or .xml.xz)")]
    UnsupportedCompression { file: String },
    /// An href that could escape the repo or is not a normalised relative path.
    #[error("{file}: unsafe href {href:?}: {reason}")]
    UnsafeHref {
        file: String,
        href: String,
        reason: &'static str,
    },
    /// A referenced file does not exist.
    #[error("{path}: missing (listed in {listed_in})")]
    Missing { path: String, listed_in: String },
    /// A symlink on the way to (or at) a referenced file.
    #[error("{path}: is a symlink; only regular files inside the repository are published")]
    Symlink { path: String },
    /// A directory, device, fifo… where a file (or a directory) was expected.
    #[error("{path}: not a {expected}")]
    WrongFileType {
        path: String,
        expected: &'static str,
    },
    /// Size differs from the declared one.
    #[error("{path}: size {actual} but {listed_in} declares {declared}")]
    SizeMismatch {
        path: String,
        actual: u64,
        declared: u64,
        listed_in: String,
    },
    /// Content differs from the declared checksum.
    #[error("{path}: {kind} mismatch: {listed_in} declares {declared}, file has {actual}")]
    ChecksumMismatch {
        path: String,
        kind: ChecksumKind,
        declared: String,
        actual: String,
        listed_in: String,
    },
    /// One path listed twice with different checksum algorithms; verifying
    /// both would mean hashing the file twice, and no real repo does this.
    #[error("{path}: listed twice with different checksum types ({first} and {second})")]
    ConflictingChecksumTypes {
        path: String,
        first: ChecksumKind,
        second: ChecksumKind,
    },
    /// The file was replaced or rewritten while we were reading it.
    #[error("{path}: changed while being validated; retry when the repo is quiet")]
    Changed { path: String },
    /// A limit from [`Limits`] was exceeded.
    #[error("{file}: exceeds limits.{limit_name} ({limit})")]
    LimitExceeded {
        file: String,
        limit_name: &'static str,
        limit: u64,
    },
}

/// Checksum algorithms yum repodata uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChecksumKind {
    Md5,
    /// Spelled `sha` or `sha1` in repodata (yum's historical `sha` is sha1).
    Sha1,
    Sha256,
    Sha512,
}

impl ChecksumKind {
    /// From a `type=` attribute; case-insensitive, `sha` means sha1.
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_lowercase().as_str() {
            "md5" => Some(Self::Md5),
            "sha" | "sha1" => Some(Self::Sha1),
            "sha256" => Some(Self::Sha256),
            "sha512" => Some(Self::Sha512),
            _ => None,
        }
    }

    /// Canonical lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Md5 => "md5",
            Self::Sha1 => "sha1",
            Self::Sha256 => "sha256",
            Self::Sha512 => "sha512",
        }
    }

    /// Lowercase hex digest of `data` with this algorithm.
    pub fn hex_digest(self, data: &[u8]) -> String {
        match self {
            Self::Md5 => hex::encode(md5::Md5::digest(data)),
            Self::Sha1 => hex::encode(sha1::Sha1::digest(data)),
            Self::Sha256 => hex::encode(sha2::Sha256::digest(data)),
            Self::Sha512 => hex::encode(sha2::Sha512::digest(data)),
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Self::Md5 => 32,
            Self::Sha1 => 40,
            Self::Sha256 => 64,
            Self::Sha512 => 128,
        }
    }
}

impl fmt::Display for ChecksumKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A declared checksum.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Checksum {
    pub kind: ChecksumKind,
    /// Lowercase hex of the right length for `kind`.
    pub hex: String,
}

impl Checksum {
    /// Validates the type and the hex value; `file` names the source in errors.
    pub fn parse(kind: &str, value: &str, file: &str) -> Result<Self, RepoError> {
        let kind = ChecksumKind::parse(kind).ok_or_else(|| RepoError::UnsupportedChecksum {
            file: file.to_owned(),
            kind: kind.to_owned(),
        })?;
        let hex = value.trim().to_ascii_lowercase();
        if hex.len() != kind.hex_len() || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid(
                file,
                format!(
                    "{kind} checksum {value:?} is not {} hex digits",
                    kind.hex_len()
                ),
            ));
        }
        Ok(Self { kind, hex })
    }
}

impl Checksum {
    /// True when `data` has this checksum (for clients such as `drill`).
    pub fn matches(&self, data: &[u8]) -> bool {
        self.kind.hex_digest(data) == self.hex
    }
}

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

/// One `<package>` of primary.xml, as far as publishing needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Package {
    pub href: String,
    pub checksum: Checksum,
    /// `<size package=>`: the rpm file's size.
    pub size: u64,
}

/// One published file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepoFile {
    /// Relative, '/'-separated.
    pub path: String,
    pub size: u64,
    pub sha256: Sha256Digest,
}

/// A repo whose every published file matched its declared checksum.
#[derive(Clone, Debug)]
pub struct ValidatedRepo {
    /// Sorted by path, unique.
    pub files: Vec<RepoFile>,
    pub repomd: Repomd,
    /// The exact repomd.xml bytes that were parsed (the metalink hashes these).
    pub repomd_bytes: Vec<u8>,
    /// Regular files in the directory that are not published, sorted.
    pub unreferenced: Vec<String>,
}

/// Identity of a file as `stat` sees it: if none of these changed, we trust
/// the content did not either (the same bet rsync and make make).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct FileKey {
    /// Absolute path.
    pub path: String,
    pub size: u64,
    pub mtime_ns: i128,
    pub ino: u64,
    pub dev: u64,
}

impl FileKey {
    /// Key of `path` from metadata already fetched (without following symlinks).
    pub fn from_metadata(path: &Path, meta: &fs::Metadata) -> Self {
        Self {
            path: path.to_string_lossy().into_owned(),
            size: meta.len(),
            mtime_ns: i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec()),
            ino: meta.ino(),
            dev: meta.dev(),
        }
    }
}

/// sha256 by file identity, so an unchanged file is not re-hashed on every
/// publish (DESIGN §6). Consulted only when the repodata declares sha256, so
/// a hit can be compared with the declaration directly.
pub trait HashCache {
    fn get(&self, key: &FileKey) -> Option<Sha256Digest>;
    fn put(&mut self, key: FileKey, sha256: Sha256Digest);
}

/// Hashes everything every time.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoCache;

impl HashCache for NoCache {
    fn get(&self, _key: &FileKey) -> Option<Sha256Digest> {
        None
    }
    fn put(&mut self, _key: FileKey, _sha256: Sha256Digest) {}
}

/// In-memory cache, for tests and one-shot tools.
#[derive(Clone, Debug, Default)]
pub struct MemoryCache {
    pub entries: HashMap<FileKey, Sha256Digest>,
}

impl HashCache for MemoryCache {
    fn get(&self, key: &FileKey) -> Option<Sha256Digest> {
        self.entries.get(key).copied()
    }
    fn put(&mut self, key: FileKey, sha256: Sha256Digest) {
        self.entries.insert(key, sha256);
    }
}

fn invalid(file: &str, reason: impl Into<String>) -> RepoError {
    RepoError::Invalid {
        file: file.to_owned(),
        reason: reason.into(),
    }
}

fn io_err(path: &str) -> impl FnOnce(io::Error) -> RepoError + '_ {
    move |source| RepoError::Io {
        path: path.to_owned(),
        source,
    }
}

// ---------------------------------------------------------------------------
// XML helpers shared by the parsers (and the metalink parser).

/// Text of an entity or character reference; `None` for entities XML does not
/// predefine (repodata and metalinks never declare their own).
pub(crate) fn resolve_reference(r: &BytesRef<'_>) -> Option<String> {
    match r.resolve_char_ref() {
        Ok(Some(c)) => Some(c.to_string()),
        Ok(None) => quick_xml::escape::resolve_xml_entity(r).map(str::to_owned),
        Err(_) => None,
    }
}

/// Value of attribute `name` on `e`, unescaped.
fn attr(e: &BytesStart<'_>, name: &str, file: &str) -> Result<Option<String>, RepoError> {
    match e.try_get_attribute(name) {
        Ok(Some(a)) => a
            .normalized_value(quick_xml::XmlVersion::Implicit1_0)
            .map(|v| Some(v.into_owned()))
            .map_err(|err| invalid(file, format!("attribute {name}: {err}"))),
        Ok(None) => Ok(None),
        Err(err) => Err(invalid(file, format!("attribute {name}: {err}"))),
    }
}

/// Text of the element being captured: which field, at what depth, so far.
struct Capture<F> {
    field: F,
    depth: usize,
    text: String,
}

impl<F> Capture<F> {
    fn push(&mut self, piece: &str, file: &str) -> Result<(), RepoError> {
        if self.text.len() + piece.len() > MAX_FIELD_BYTES {
            return Err(invalid(
                file,
                format!("element text longer than {MAX_FIELD_BYTES} bytes"),
            ));
        }
        self.text.push_str(piece);
        Ok(())
    }
}

/// One event, reduced to what the repodata parsers need.
enum XmlStep<'b> {
    /// Start (or empty) element at `depth` (root = 1).
    Open {
        e: BytesStart<'b>,
        depth: usize,
    },
    /// End of an element at `depth`; for empty elements it follows `Open`.
    Close {
        depth: usize,
    },
    Text(String),
    Eof,
    Other,
}

/// Walks a document, tracking depth and resolving references, so each parser
/// is a plain state machine over [`XmlStep`]s.
struct XmlWalker<R> {
    reader: Reader<R>,
    buf: Vec<u8>,
    depth: usize,
    pending_close: bool,
    file: String,
}

impl<R: BufRead> XmlWalker<R> {
    fn new(inner: R, file: &str) -> Self {
        let mut reader = Reader::from_reader(inner);
        let config = reader.config_mut();
        config.check_end_names = true;
        config.expand_empty_elements = false;
        Self {
            reader,
            buf: Vec::new(),
            depth: 0,
            pending_close: false,
            file: file.to_owned(),
        }
    }

    fn xml_error(&self, err: &quick_xml::Error) -> RepoError {
        RepoError::Xml {
            file: self.file.clone(),
            position: self.reader.error_position(),
            message: err.to_string(),
        }
    }

    /// Next step. Errors: `Err(Ok(_))` is already a [`RepoError`];
    /// `Err(Err(_))` is quick-xml's, left to the caller because only it
    /// knows whether an I/O error means "decompression limit exceeded".
    fn next(&mut self) -> Result<XmlStep<'_>, Result<RepoError, quick_xml::Error>> {
        if self.pending_close {
            self.pending_close = false;
            let depth = self.depth;
            self.depth -= 1;
            return Ok(XmlStep::Close { depth });
        }
        self.buf.clear();
        let event = match self.reader.read_event_into(&mut self.buf) {
            Ok(ev) => ev,
            Err(err) => return Err(Err(err)),
        };
        Ok(match event {
            Event::Start(e) => {
                self.depth += 1;
                XmlStep::Open {
                    e,
                    depth: self.depth,
                }
            }
            Event::Empty(e) => {
                self.depth += 1;
                self.pending_close = true;
                XmlStep::Open {
                    e,
                    depth: self.depth,
                }
            }
            Event::End(_) => {
                let depth = self.depth;
                self.depth = self.depth.saturating_sub(1);
                XmlStep::Close { depth }
            }
            Event::Text(t) => XmlStep::Text(t.xml10_content().into_owned()),
            Event::CData(t) => XmlStep::Text(t.xml10_content().into_owned()),
            Event::GeneralRef(r) => match resolve_reference(&r) {
                Some(s) => XmlStep::Text(s),
                None => {
                    return Err(Ok(invalid(
                        &self.file,
                        format!("unknown entity reference &{};", &*r),
                    )));
                }
            },
            Event::Eof => {
                if self.depth != 0 {
                    return Err(Ok(invalid(
                        &self.file,
                        "truncated: unclosed elements at end",
                    )));
                }
                XmlStep::Eof
            }
            _ => XmlStep::Other,
        })
    }
}

// ---------------------------------------------------------------------------
// repomd.xml

#[derive(Clone, Copy)]
enum RepomdField {
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
fn parse_timestamp(s: &str) -> Option<u64> {
    let s = s.trim();
    s.parse::<u64>().ok().or_else(|| {
        s.parse::<f64>()
            .ok()
            .filter(|f| f.is_finite() && *f >= 0.0 && *f < 1.8e19)
            .map(|f| f as u64)
    })
}

fn parse_u64(s: &str, what: &str, file: &str) -> Result<u64, RepoError> {
    s.trim()
        .parse()
        .map_err(|_| invalid(file, format!("{what} {s:?} is not a non-negative integer")))
}

/// Rejects `xml:base`: it points packages or metadata outside the repo, which
/// we could neither verify nor publish.
fn reject_xml_base(e: &BytesStart<'_>, file: &str) -> Result<(), RepoError> {
    match attr(e, "xml:base", file)? {
        Some(base) => Err(invalid(
            file,
            format!("<location xml:base={base:?}>: files outside the repo are not supported"),
        )),
        None => Ok(()),
    }
}

/// Parses repomd.xml.
pub fn parse_repomd(xml: &[u8]) -> Result<Repomd, RepoError> {
    let file = REPOMD_PATH;
    let mut w = XmlWalker::new(xml, file);
    let mut root_seen = false;
    let mut revision = None;
    let mut data = Vec::new();
    let mut cur: Option<DataBuilder> = None;
    let mut capture: Option<Capture<RepomdField>> = None;
    loop {
        let step = match w.next() {
            Ok(step) => step,
            Err(Ok(e)) => return Err(e),
            Err(Err(e)) => return Err(w.xml_error(&e)),
        };
        match step {
            XmlStep::Open { e, depth } => {
                let name = e.name();
                match (depth, name.as_ref()) {
                    (1, "repomd") if !root_seen => root_seen = true,
                    (1, other) => {
                        return Err(invalid(file, format!("unexpected root element <{other}>")));
                    }
                    (2, "revision") => {
                        capture = Some(Capture {
                            field: RepomdField::Revision,
                            depth,
                            text: String::new(),
                        });
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
                                    Some(RepomdField::Checksum)
                                }
                                "timestamp" => Some(RepomdField::Timestamp),
                                "size" => Some(RepomdField::Size),
                                "location" => {
                                    reject_xml_base(&e, file)?;
                                    d.href = attr(&e, "href", file)?;
                                    None
                                }
                                _ => None,
                            };
                            capture = field.map(|field| Capture {
                                field,
                                depth,
                                text: String::new(),
                            });
                        }
                    }
                    _ => {}
                }
            }
            XmlStep::Text(t) => {
                if let Some(c) = capture.as_mut() {
                    c.push(&t, file)?;
                }
            }
            XmlStep::Close { depth } => {
                if let Some(c) = capture.take_if(|c| c.depth == depth) {
                    let text = c.text.trim();
                    match (c.field, cur.as_mut()) {
                        (RepomdField::Revision, _) => revision = Some(text.to_owned()),
                        (RepomdField::Checksum, Some(d)) => d.checksum = Some(text.to_owned()),
                        (RepomdField::Timestamp, Some(d)) => {
                            d.timestamp = Some(parse_timestamp(text).ok_or_else(|| {
                                invalid(file, format!("<timestamp> {text:?} is not a number"))
                            })?);
                        }
                        (RepomdField::Size, Some(d)) => {
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
            XmlStep::Eof => break,
            XmlStep::Other => {}
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

// ---------------------------------------------------------------------------
// primary.xml

/// Fails the read once more than `remaining` bytes come out of `inner`, so a
/// decompression bomb costs at most the limit.
struct LimitedReader<R> {
    inner: R,
    remaining: u64,
    exceeded: bool,
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
            self.exceeded = true;
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
/// decompressed XML and `limits.max_entries` packages.
pub fn parse_primary(
    path_name: &str,
    reader: impl Read,
    limits: &Limits,
) -> Result<Vec<Package>, RepoError> {
    if path_name.ends_with(".gz") {
        // Multi-member, as gzip(1) itself accepts concatenated members.
        parse_primary_xml(path_name, flate2::read::MultiGzDecoder::new(reader), limits)
    } else if path_name.ends_with(".zst") {
        let decoder = zstd::stream::read::Decoder::new(reader).map_err(io_err(path_name))?;
        parse_primary_xml(path_name, decoder, limits)
    } else if path_name.ends_with(".xz") {
        parse_primary_xml(
            path_name,
            liblzma::read::XzDecoder::new_multi_decoder(reader),
            limits,
        )
    } else if path_name.ends_with(".xml") {
        parse_primary_xml(path_name, reader, limits)
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
    let limited = LimitedReader {
        inner: decompressed,
        remaining: limits.max_primary_bytes,
        exceeded: false,
    };
    let mut w = XmlWalker::new(BufReader::with_capacity(64 * 1024, limited), file);
    let mut root_seen = false;
    let mut declared_count: Option<u64> = None;
    let mut packages = Vec::new();
    let mut cur: Option<PackageBuilder> = None;
    // Only <package><checksum> text is captured; descriptions are skipped.
    let mut capture: Option<Capture<()>> = None;
    loop {
        let step = match w.next() {
            Ok(step) => step,
            Err(Ok(e)) => return Err(e),
            Err(Err(e)) => {
                if w.reader.get_ref().get_ref().exceeded {
                    return Err(RepoError::LimitExceeded {
                        file: file.to_owned(),
                        limit_name: "max_primary_bytes",
                        limit: limits.max_primary_bytes,
                    });
                }
                return Err(match e {
                    // Decompression errors arrive as I/O errors.
                    quick_xml::Error::Io(io) => RepoError::Io {
                        path: file.to_owned(),
                        source: io::Error::new(io.kind(), io.to_string()),
                    },
                    other => w.xml_error(&other),
                });
            }
        };
        match step {
            XmlStep::Open { e, depth } => {
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
                                    capture = Some(Capture {
                                        field: (),
                                        depth,
                                        text: String::new(),
                                    });
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
            XmlStep::Text(t) => {
                if let Some(c) = capture.as_mut() {
                    c.push(&t, file)?;
                }
            }
            XmlStep::Close { depth } => {
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
            XmlStep::Eof => break,
            XmlStep::Other => {}
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
    let ctx = format!("{file}: {href}");
    let kind = p
        .checksum_type
        .ok_or_else(|| invalid(&ctx, "no <checksum type=>"))?;
    let value = p.checksum.ok_or_else(|| invalid(&ctx, "no <checksum>"))?;
    let checksum = Checksum::parse(&kind, &value, &ctx)?;
    let size = p.size.ok_or_else(|| invalid(&ctx, "no <size package=>"))?;
    Ok(Package {
        href,
        checksum,
        size,
    })
}

// ---------------------------------------------------------------------------
// Validation

/// Checks that `href` is a normalised relative path (DESIGN §4 path rules).
fn check_href(href: &str, limits: &Limits) -> Result<(), &'static str> {
    if href.is_empty() {
        return Err("empty");
    }
    if href.len() > limits.max_path_bytes {
        return Err("longer than limits.max_path_bytes");
    }
    if href.contains('\0') {
        return Err("contains NUL");
    }
    if href.contains('\\') {
        return Err("contains a backslash");
    }
    if href.starts_with('/') {
        return Err("absolute");
    }
    for seg in href.split('/') {
        match seg {
            "" => return Err("empty segment"),
            "." => return Err("'.' segment"),
            ".." => return Err("'..' segment"),
            s if s.len() > MAX_SEGMENT_BYTES => return Err("segment longer than 255 bytes"),
            _ => {}
        }
    }
    Ok(())
}

/// Hashes with sha256 and, when asked, one more algorithm, in one pass.
enum ExtraHasher {
    Md5(md5::Md5),
    Sha1(sha1::Sha1),
    Sha512(sha2::Sha512),
}

impl ExtraHasher {
    fn new(kind: ChecksumKind) -> Option<Self> {
        match kind {
            ChecksumKind::Md5 => Some(Self::Md5(md5::Md5::new())),
            ChecksumKind::Sha1 => Some(Self::Sha1(sha1::Sha1::new())),
            ChecksumKind::Sha256 => None,
            ChecksumKind::Sha512 => Some(Self::Sha512(sha2::Sha512::new())),
        }
    }
    fn update(&mut self, data: &[u8]) {
        match self {
            Self::Md5(h) => h.update(data),
            Self::Sha1(h) => h.update(data),
            Self::Sha512(h) => h.update(data),
        }
    }
    fn finish_hex(self) -> String {
        match self {
            Self::Md5(h) => hex::encode(&h.finalize()[..]),
            Self::Sha1(h) => hex::encode(&h.finalize()[..]),
            Self::Sha512(h) => hex::encode(&h.finalize()[..]),
        }
    }
}

/// Bytes read, sha256, and the hex of `extra` (if not sha256).
fn hash_reader(
    mut r: impl Read,
    extra: ChecksumKind,
) -> io::Result<(u64, Sha256Digest, Option<String>)> {
    let mut sha256 = sha2::Sha256::new();
    let mut other = ExtraHasher::new(extra);
    let mut buf = vec![0u8; HASH_BUF_BYTES];
    let mut total = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        sha256.update(&buf[..n]);
        if let Some(h) = other.as_mut() {
            h.update(&buf[..n]);
        }
        total += n as u64;
    }
    Ok((
        total,
        Sha256Digest(sha256.finalize().into()),
        other.map(ExtraHasher::finish_hex),
    ))
}

/// A file already accepted: its size, sha256 and the other checksum computed.
struct Accepted {
    size: u64,
    sha256: Sha256Digest,
    other: Option<Checksum>,
}

/// Where a declaration came from, for error messages.
struct Source<'a> {
    /// Short name used in "listed in …" / "… declares": `repomd.xml`, `primary`.
    label: &'a str,
    /// The listing file's path, for href errors.
    path: &'a str,
}

struct Validator<'a> {
    root: PathBuf,
    limits: &'a Limits,
    cache: &'a mut dyn HashCache,
    files: BTreeMap<String, Accepted>,
    /// Directories (relative) already checked to be real directories.
    dirs_ok: HashSet<String>,
    total: u64,
}

impl Validator<'_> {
    /// `lstat`s `rel` and every directory above it: no symlink anywhere on
    /// the way, so nothing outside the tree is read.
    fn lstat(&mut self, rel: &str, listed_in: &str) -> Result<fs::Metadata, RepoError> {
        let missing = || RepoError::Missing {
            path: rel.to_owned(),
            listed_in: listed_in.to_owned(),
        };
        for (i, _) in rel.match_indices('/') {
            let dir = &rel[..i];
            if self.dirs_ok.contains(dir) {
                continue;
            }
            let meta = match fs::symlink_metadata(self.root.join(dir)) {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(missing()),
                Err(e) => return Err(io_err(dir)(e)),
            };
            if meta.file_type().is_symlink() {
                return Err(RepoError::Symlink {
                    path: dir.to_owned(),
                });
            }
            if !meta.is_dir() {
                return Err(RepoError::WrongFileType {
                    path: dir.to_owned(),
                    expected: "directory",
                });
            }
            self.dirs_ok.insert(dir.to_owned());
        }
        let meta = match fs::symlink_metadata(self.root.join(rel)) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(missing()),
            Err(e) => return Err(io_err(rel)(e)),
        };
        if meta.file_type().is_symlink() {
            return Err(RepoError::Symlink {
                path: rel.to_owned(),
            });
        }
        if !meta.is_file() {
            return Err(RepoError::WrongFileType {
                path: rel.to_owned(),
                expected: "regular file",
            });
        }
        Ok(meta)
    }

    /// Opens `rel` and checks it is still the file `meta` describes (no swap
    /// for a symlink or another file between lstat and open).
    fn open_same(&self, rel: &str, meta: &fs::Metadata) -> Result<File, RepoError> {
        let file = File::open(self.root.join(rel)).map_err(io_err(rel))?;
        let now = file.metadata().map_err(io_err(rel))?;
        if now.ino() != meta.ino() || now.dev() != meta.dev() || !now.is_file() {
            return Err(RepoError::Changed {
                path: rel.to_owned(),
            });
        }
        Ok(file)
    }

    fn check_limits(&mut self, rel: &str, size: u64) -> Result<(), RepoError> {
        let exceeded = |limit_name, limit| RepoError::LimitExceeded {
            file: rel.to_owned(),
            limit_name,
            limit,
        };
        if size > self.limits.max_blob_bytes {
            return Err(exceeded("max_blob_bytes", self.limits.max_blob_bytes));
        }
        if self.files.len() >= self.limits.max_entries {
            return Err(exceeded("max_entries", self.limits.max_entries as u64));
        }
        self.total = self.total.saturating_add(size);
        if self.total > self.limits.max_total_bytes {
            return Err(exceeded("max_total_bytes", self.limits.max_total_bytes));
        }
        Ok(())
    }

    /// Adds a file no checksum is declared for (repomd.xml's `.asc`/`.key`).
    fn add_undeclared(&mut self, rel: &str) -> Result<(), RepoError> {
        let meta = match self.lstat(rel, REPOMD_PATH) {
            Err(RepoError::Missing { .. }) => return Ok(()),
            other => other?,
        };
        self.check_limits(rel, meta.len())?;
        let file = self.open_same(rel, &meta)?;
        let (size, sha256, _) = hash_reader(file, ChecksumKind::Sha256).map_err(io_err(rel))?;
        if size != meta.len() {
            return Err(RepoError::Changed {
                path: rel.to_owned(),
            });
        }
        self.files.insert(
            rel.to_owned(),
            Accepted {
                size,
                sha256,
                other: None,
            },
        );
        Ok(())
    }

    /// Verifies `rel` against a declaration, hashing it at most once per run.
    fn verify(
        &mut self,
        rel: &str,
        declared: &Checksum,
        declared_size: Option<u64>,
        source: &Source<'_>,
    ) -> Result<(), RepoError> {
        check_href(rel, self.limits).map_err(|reason| RepoError::UnsafeHref {
            file: source.path.to_owned(),
            href: rel.to_owned(),
            reason,
        })?;
        let size_mismatch = |actual, declared| RepoError::SizeMismatch {
            path: rel.to_owned(),
            actual,
            declared,
            listed_in: source.label.to_owned(),
        };
        let checksum_mismatch = |actual: String| RepoError::ChecksumMismatch {
            path: rel.to_owned(),
            kind: declared.kind,
            declared: declared.hex.clone(),
            actual,
            listed_in: source.label.to_owned(),
        };

        // Listed before (a package listed twice): compare with what we computed.
        if let Some(seen) = self.files.get(rel) {
            if let Some(d) = declared_size
                && d != seen.size
            {
                return Err(size_mismatch(seen.size, d));
            }
            let actual = match (&seen.other, declared.kind) {
                (_, ChecksumKind::Sha256) => seen.sha256.to_hex(),
                (Some(other), kind) if other.kind == kind => other.hex.clone(),
                (first, second) => {
                    return Err(RepoError::ConflictingChecksumTypes {
                        path: rel.to_owned(),
                        first: first.as_ref().map_or(ChecksumKind::Sha256, |c| c.kind),
                        second,
                    });
                }
            };
            return if actual == declared.hex {
                Ok(())
            } else {
                Err(checksum_mismatch(actual))
            };
        }

        let meta = self.lstat(rel, source.label)?;
        if let Some(d) = declared_size
            && d != meta.len()
        {
            return Err(size_mismatch(meta.len(), d));
        }
        self.check_limits(rel, meta.len())?;
        let key = FileKey::from_metadata(&self.root.join(rel), &meta);

        // Trade-off (DESIGN §6): an unchanged stat identity is trusted to mean
        // unchanged content; a hit that disagrees is re-hashed below.
        if declared.kind == ChecksumKind::Sha256
            && let Some(sha256) = self.cache.get(&key)
            && sha256.to_hex() == declared.hex
        {
            self.files.insert(
                rel.to_owned(),
                Accepted {
                    size: meta.len(),
                    sha256,
                    other: None,
                },
            );
            return Ok(());
        }

        let file = self.open_same(rel, &meta)?;
        let (size, sha256, other_hex) = hash_reader(file, declared.kind).map_err(io_err(rel))?;
        if size != meta.len() {
            return Err(RepoError::Changed {
                path: rel.to_owned(),
            });
        }
        self.cache.put(key, sha256);
        let actual = other_hex.clone().unwrap_or_else(|| sha256.to_hex());
        if actual != declared.hex {
            return Err(checksum_mismatch(actual));
        }
        self.files.insert(
            rel.to_owned(),
            Accepted {
                size,
                sha256,
                other: other_hex.map(|hex| Checksum {
                    kind: declared.kind,
                    hex,
                }),
            },
        );
        Ok(())
    }

    /// Regular files under the root that are not published.
    fn unreferenced(&self) -> Result<Vec<String>, RepoError> {
        let mut out = Vec::new();
        let mut stack = vec![(self.root.clone(), String::new())];
        while let Some((dir, prefix)) = stack.pop() {
            let shown = if prefix.is_empty() { "." } else { &prefix };
            for entry in fs::read_dir(&dir).map_err(io_err(shown))? {
                let entry = entry.map_err(io_err(shown))?;
                // file_type() does not follow symlinks, so neither do we.
                let ft = entry.file_type().map_err(io_err(shown))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let rel = if prefix.is_empty() {
                    name
                } else {
                    format!("{prefix}/{name}")
                };
                if ft.is_dir() {
                    stack.push((entry.path(), rel));
                } else if ft.is_file() && !self.files.contains_key(&rel) {
                    out.push(rel);
                }
            }
        }
        out.sort();
        Ok(out)
    }
}

/// Validates the yum repo in `dir`: see the module docs. Returns every file to
/// publish with its sha256, and the files that will not be published.
pub fn validate_repo(
    dir: &Path,
    limits: &Limits,
    cache: &mut dyn HashCache,
) -> Result<ValidatedRepo, RepoError> {
    let root = fs::canonicalize(dir).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => RepoError::NotARepo {
            dir: dir.to_owned(),
        },
        _ => io_err(&dir.to_string_lossy())(e),
    })?;
    let mut v = Validator {
        root,
        limits,
        cache,
        files: BTreeMap::new(),
        dirs_ok: HashSet::new(),
        total: 0,
    };

    // repomd.xml: read once, bounded, and keep the exact bytes.
    let meta = match v.lstat(REPOMD_PATH, "the repository layout") {
        Err(RepoError::Missing { .. }) => {
            return Err(RepoError::NotARepo {
                dir: dir.to_owned(),
            });
        }
        other => other?,
    };
    if meta.len() > limits.max_repomd_bytes {
        return Err(RepoError::LimitExceeded {
            file: REPOMD_PATH.to_owned(),
            limit_name: "max_repomd_bytes",
            limit: limits.max_repomd_bytes,
        });
    }
    let mut repomd_bytes = Vec::new();
    v.open_same(REPOMD_PATH, &meta)?
        .take(limits.max_repomd_bytes.saturating_add(1))
        .read_to_end(&mut repomd_bytes)
        .map_err(io_err(REPOMD_PATH))?;
    if repomd_bytes.len() as u64 > limits.max_repomd_bytes {
        return Err(RepoError::LimitExceeded {
            file: REPOMD_PATH.to_owned(),
            limit_name: "max_repomd_bytes",
            limit: limits.max_repomd_bytes,
        });
    }
    let repomd = parse_repomd(&repomd_bytes)?;
    v.check_limits(REPOMD_PATH, repomd_bytes.len() as u64)?;
    v.files.insert(
        REPOMD_PATH.to_owned(),
        Accepted {
            size: repomd_bytes.len() as u64,
            sha256: Sha256Digest::of(&repomd_bytes),
            other: None,
        },
    );
    for extra in REPOMD_EXTRAS {
        v.add_undeclared(extra)?;
    }

    let from_repomd = Source {
        label: "repomd.xml",
        path: REPOMD_PATH,
    };
    for d in &repomd.data {
        v.verify(&d.href, &d.checksum, d.size, &from_repomd)?;
    }

    let primary = repomd
        .primary()
        .ok_or_else(|| invalid(REPOMD_PATH, "no <data type=\"primary\">"))?;
    let file = File::open(v.root.join(&primary.href)).map_err(io_err(&primary.href))?;
    let packages = parse_primary(&primary.href, BufReader::new(file), limits)?;
    let from_primary = Source {
        label: "primary",
        path: &primary.href,
    };
    for p in &packages {
        v.verify(&p.href, &p.checksum, Some(p.size), &from_primary)?;
    }

    let unreferenced = v.unreferenced()?;
    let files = v
        .files
        .into_iter()
        .map(|(path, a)| RepoFile {
            path,
            size: a.size,
            sha256: a.sha256,
        })
        .collect();
    Ok(ValidatedRepo {
        files,
        repomd,
        repomd_bytes,
        unreferenced,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use std::io::Write;
    use std::path::Path;

    use proptest::prelude::*;

    #[derive(Clone, Copy, Debug)]
    enum Comp {
        Gz,
        Zst,
        Xz,
        Plain,
        /// Stored as-is under a .zck name: we must refuse, not guess.
        Zck,
    }

    impl Comp {
        fn ext(self) -> &'static str {
            match self {
                Comp::Gz => ".gz",
                Comp::Zst => ".zst",
                Comp::Xz => ".xz",
                Comp::Plain => "",
                Comp::Zck => ".zck",
            }
        }
        fn compress(self, data: &[u8]) -> Vec<u8> {
            match self {
                Comp::Gz => {
                    let mut e =
                        flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                    e.write_all(data).unwrap();
                    e.finish().unwrap()
                }
                Comp::Zst => zstd::encode_all(data, 3).unwrap(),
                Comp::Xz => {
                    let mut e = liblzma::write::XzEncoder::new(Vec::new(), 6);
                    e.write_all(data).unwrap();
                    e.finish().unwrap()
                }
                Comp::Plain | Comp::Zck => data.to_vec(),
            }
        }
    }

    fn hex_of(kind: &str, data: &[u8]) -> String {
        match kind {
            "md5" => hex::encode(&md5::Md5::digest(data)[..]),
            "sha" | "sha1" => hex::encode(&sha1::Sha1::digest(data)[..]),
            "sha512" => hex::encode(&sha2::Sha512::digest(data)[..]),
            _ => Sha256Digest::of(data).to_hex(),
        }
    }

    /// A package as createrepo_c writes it, `<format>` and all.
    fn package_xml(name: &str, href: &str, kind: &str, hex: &str, size: u64) -> String {
        format!(
            r#"<package type="rpm">
  <name>{name}</name>
  <arch>noarch</arch>
  <version epoch="0" ver="1" rel="1"/>
  <checksum type="{kind}" pkgid="YES">{hex}</checksum>
  <summary>Say &lt;hello&gt; &amp; more</summary>
  <description><![CDATA[A <test> package]]></description>
  <packager></packager>
  <url>https://example.org/?a=1&amp;b=2</url>
  <time file="1700000000" build="1700000000"/>
  <size package="{size}" installed="42" archive="300"/>
  <location href="{href}"/>
  <format>
    <rpm:license>MIT</rpm:license>
    <rpm:vendor/>
    <rpm:group>Unspecified</rpm:group>
    <rpm:buildhost>localhost</rpm:buildhost>
    <rpm:sourcerpm>{name}-1-1.src.rpm</rpm:sourcerpm>
    <rpm:header-range start="4504" end="5969"/>
    <rpm:provides>
      <rpm:entry name="{name}" flags="EQ" epoch="0" ver="1" rel="1"/>
    </rpm:provides>
    <file>/usr/bin/{name}</file>
  </format>
</package>
"#
        )
    }

    fn primary_xml(packages: &[String]) -> String {
        format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<metadata xmlns=\"http://linux.duke.edu/metadata/common\" xmlns:rpm=\"http://linux.duke.edu/metadata/rpm\" packages=\"{}\">\n{}</metadata>\n",
            packages.len(),
            packages.concat()
        )
    }

    struct DataSpec {
        kind: &'static str,
        href: String,
        checksum_type: &'static str,
        checksum: String,
        size: u64,
        timestamp: u64,
    }

    /// repomd.xml in createrepo_c's layout.
    fn repomd_xml(data: &[DataSpec]) -> String {
        let mut s = String::from(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<repomd xmlns=\"http://linux.duke.edu/metadata/repo\" xmlns:rpm=\"http://linux.duke.edu/metadata/rpm\">\n  <revision>1700000000</revision>\n",
        );
        for d in data {
            s.push_str(&format!(
                "  <data type=\"{}\">\n    <checksum type=\"{}\">{}</checksum>\n    <open-checksum type=\"sha256\">{}</open-checksum>\n    <location href=\"{}\"/>\n    <timestamp>{}</timestamp>\n    <size>{}</size>\n    <open-size>999</open-size>\n  </data>\n",
                d.kind, d.checksum_type, d.checksum, "0".repeat(64), d.href, d.timestamp, d.size
            ));
        }
        s.push_str("</repomd>\n");
        s
    }

    fn write(root: &Path, rel: &str, bytes: &[u8]) {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, bytes).unwrap();
    }

    const HELLO: &str = "Packages/h/hello-1-1.noarch.rpm";
    const WORLD: &str = "Packages/w/world-2-1.noarch.rpm";

    /// A repo at `<tmp>/repo` (so `../x` stays inside the temp dir). Each
    /// package: (href, content, checksum type).
    struct TestRepo {
        tmp: tempfile::TempDir,
        primary_href: String,
        filelists_href: String,
    }

    impl TestRepo {
        fn root(&self) -> PathBuf {
            self.tmp.path().join("repo")
        }
        fn validate(&self) -> Result<ValidatedRepo, RepoError> {
            validate_repo(&self.root(), &Limits::default(), &mut NoCache)
        }
    }

    fn build_with(comp: Comp, packages: &[(&str, &[u8], &'static str)]) -> TestRepo {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("repo");
        fs::create_dir_all(&root).unwrap();
        let mut pkg_xml = Vec::new();
        for (i, (href, content, kind)) in packages.iter().enumerate() {
            write(&root, href, content);
            pkg_xml.push(package_xml(
                &format!("pkg{i}"),
                href,
                kind,
                &hex_of(kind, content),
                content.len() as u64,
            ));
        }
        let primary = comp.compress(primary_xml(&pkg_xml).as_bytes());
        let primary_sha = Sha256Digest::of(&primary).to_hex();
        let primary_href = format!("repodata/{primary_sha}-primary.xml{}", comp.ext());
        write(&root, &primary_href, &primary);
        let filelists = b"<filelists/>".to_vec();
        let filelists_sha = Sha256Digest::of(&filelists).to_hex();
        let filelists_href = format!("repodata/{filelists_sha}-filelists.xml");
        write(&root, &filelists_href, &filelists);
        let repomd = repomd_xml(&[
            DataSpec {
                kind: "primary",
                href: primary_href.clone(),
                checksum_type: "sha256",
                checksum: primary_sha,
                size: primary.len() as u64,
                timestamp: 1_700_000_100,
            },
            DataSpec {
                kind: "filelists",
                href: filelists_href.clone(),
                checksum_type: "sha256",
                checksum: filelists_sha,
                size: filelists.len() as u64,
                timestamp: 1_700_000_200,
            },
        ]);
        write(&root, REPOMD_PATH, repomd.as_bytes());
        TestRepo {
            tmp,
            primary_href,
            filelists_href,
        }
    }

    fn build(comp: Comp) -> TestRepo {
        build_with(
            comp,
            &[
                (HELLO, b"hello rpm bytes", "sha256"),
                (WORLD, b"world rpm bytes!", "sha256"),
            ],
        )
    }

    #[test]
    fn good_repo_every_compression() {
        for comp in [Comp::Gz, Comp::Zst, Comp::Xz, Comp::Plain] {
            let repo = build(comp);
            let v = repo.validate().unwrap_or_else(|e| panic!("{comp:?}: {e}"));
            let paths: Vec<&str> = v.files.iter().map(|f| f.path.as_str()).collect();
            let mut expected = vec![
                HELLO,
                WORLD,
                repo.filelists_href.as_str(),
                repo.primary_href.as_str(),
                REPOMD_PATH,
            ];
            expected.sort();
            assert_eq!(paths, expected, "{comp:?}");
            let hello = v.files.iter().find(|f| f.path == HELLO).unwrap();
            assert_eq!(hello.sha256, Sha256Digest::of(b"hello rpm bytes"));
            assert_eq!(hello.size, 15);
            assert!(v.unreferenced.is_empty(), "{:?}", v.unreferenced);
            assert_eq!(
                v.repomd_bytes,
                fs::read(repo.root().join(REPOMD_PATH)).unwrap()
            );
            assert_eq!(v.repomd.max_timestamp(), Some(1_700_000_200));
        }
    }

    #[test]
    fn md5_sha1_and_sha512_declarations_verify() {
        let repo = build_with(
            Comp::Gz,
            &[
                ("Packages/a.rpm", b"aaa", "md5"),
                ("Packages/b.rpm", b"bbb", "sha"),
                ("Packages/c.rpm", b"ccc", "sha512"),
            ],
        );
        let v = repo.validate().unwrap();
        assert_eq!(v.files.len(), 6);
        // A wrong sha1 is reported as a sha1 mismatch.
        fs::write(repo.root().join("Packages/b.rpm"), b"bbB").unwrap();
        let err = repo.validate().unwrap_err().to_string();
        assert!(
            err.starts_with("Packages/b.rpm: sha1 mismatch: primary declares "),
            "{err}"
        );
        assert!(err.contains(&hex_of("sha1", b"bbB")), "{err}");
    }

    #[test]
    fn wrong_checksum_on_data_file_names_file_and_both_hashes() {
        let repo = build(Comp::Gz);
        let path = repo.root().join(&repo.filelists_href);
        let good = fs::read(&path).unwrap();
        let bad = b"<filelistX/>".to_vec();
        assert_eq!(good.len(), bad.len());
        fs::write(&path, &bad).unwrap();
        let err = repo.validate().unwrap_err();
        assert!(matches!(err, RepoError::ChecksumMismatch { .. }));
        assert_eq!(
            err.to_string(),
            format!(
                "{}: sha256 mismatch: repomd.xml declares {}, file has {}",
                repo.filelists_href,
                Sha256Digest::of(&good).to_hex(),
                Sha256Digest::of(&bad).to_hex()
            )
        );
    }

    #[test]
    fn missing_package() {
        let repo = build(Comp::Zst);
        fs::remove_file(repo.root().join(HELLO)).unwrap();
        assert_eq!(
            repo.validate().unwrap_err().to_string(),
            format!("{HELLO}: missing (listed in primary)")
        );
        // A missing directory reads the same.
        fs::remove_dir_all(repo.root().join("Packages/w")).unwrap();
        fs::write(repo.root().join(HELLO), b"hello rpm bytes").unwrap();
        assert_eq!(
            repo.validate().unwrap_err().to_string(),
            format!("{WORLD}: missing (listed in primary)")
        );
    }

    #[test]
    fn wrong_package_size() {
        let repo = build_with(Comp::Gz, &[("Packages/h/x.rpm", b"0123456789ab", "sha256")]);
        fs::write(repo.root().join("Packages/h/x.rpm"), b"0123456789").unwrap();
        assert_eq!(
            repo.validate().unwrap_err().to_string(),
            "Packages/h/x.rpm: size 10 but primary declares 12"
        );
    }

    #[test]
    fn unsafe_hrefs_are_refused() {
        let repo = build_with(Comp::Gz, &[("../x.rpm", b"outside", "sha256")]);
        let err = repo.validate().unwrap_err();
        assert!(
            matches!(&err, RepoError::UnsafeHref { href, .. } if href == "../x.rpm"),
            "{err}"
        );
        assert!(err.to_string().contains("'..' segment"), "{err}");
        let limits = Limits::default();
        for bad in [
            "",
            "/etc/passwd",
            "a//b",
            "./a",
            "a/.",
            "a/../b",
            "a\\b",
            "a\0b",
            "a/",
        ] {
            assert!(check_href(bad, &limits).is_err(), "{bad:?}");
        }
        assert!(check_href(&"a".repeat(256), &limits).is_err());
        assert!(check_href("Packages/h/hello-1.rpm", &limits).is_ok());
        assert!(check_href("..a/b..", &limits).is_ok());
    }

    #[test]
    fn symlinks_are_refused() {
        let repo = build(Comp::Gz);
        let root = repo.root();
        // A package that is a symlink, even to a file with the right content.
        let outside = repo.tmp.path().join("outside.rpm");
        fs::write(&outside, b"hello rpm bytes").unwrap();
        fs::remove_file(root.join(HELLO)).unwrap();
        std::os::unix::fs::symlink(&outside, root.join(HELLO)).unwrap();
        assert_eq!(
            repo.validate().unwrap_err().to_string(),
            format!(
                "{HELLO}: is a symlink; only regular files inside the repository are published"
            )
        );
        // A symlinked directory on the way.
        fs::remove_file(root.join(HELLO)).unwrap();
        fs::rename(root.join("Packages/h"), repo.tmp.path().join("h")).unwrap();
        std::os::unix::fs::symlink(repo.tmp.path().join("h"), root.join("Packages/h")).unwrap();
        fs::write(
            repo.tmp.path().join("h/hello-1-1.noarch.rpm"),
            b"hello rpm bytes",
        )
        .unwrap();
        let err = repo.validate().unwrap_err();
        assert!(
            matches!(&err, RepoError::Symlink { path } if path == "Packages/h"),
            "{err}"
        );
    }

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
    fn zchunk_primary_is_unsupported() {
        let err =
            parse_primary("repodata/x-primary.xml.zck", &b""[..], &Limits::default()).unwrap_err();
        assert!(matches!(err, RepoError::UnsupportedCompression { .. }));
        assert!(
            err.to_string()
                .starts_with("repodata/x-primary.xml.zck: unsupported compression")
        );
        let repo = build(Comp::Zck);
        assert!(matches!(
            repo.validate().unwrap_err(),
            RepoError::UnsupportedCompression { file } if file == repo.primary_href
        ));
    }

    #[test]
    fn unreferenced_files_are_listed() {
        let repo = build(Comp::Xz);
        let root = repo.root();
        write(&root, "notes.txt", b"x");
        write(&root, "Packages/h/stale-0-1.noarch.rpm", b"old");
        write(&root, "repodata/old-primary.xml.gz", b"old");
        write(&root, ".repodata/repomd.xml", b"half-built");
        // Symlinks are neither published nor followed.
        std::os::unix::fs::symlink("/etc", root.join("etc-link")).unwrap();
        std::os::unix::fs::symlink(root.join("notes.txt"), root.join("notes-link")).unwrap();
        let v = repo.validate().unwrap();
        assert_eq!(
            v.unreferenced,
            [
                ".repodata/repomd.xml",
                "Packages/h/stale-0-1.noarch.rpm",
                "notes.txt",
                "repodata/old-primary.xml.gz",
            ]
        );
        assert_eq!(v.files.len(), 5);
    }

    #[test]
    fn signature_and_key_are_published_when_present() {
        let repo = build(Comp::Gz);
        write(&repo.root(), "repodata/repomd.xml.asc", b"sig");
        let v = repo.validate().unwrap();
        assert!(v.files.iter().any(|f| f.path == "repodata/repomd.xml.asc"));
        assert!(!v.files.iter().any(|f| f.path == "repodata/repomd.xml.key"));
        assert!(v.unreferenced.is_empty());
    }

    #[test]
    fn not_a_repo() {
        let tmp = tempfile::tempdir().unwrap();
        let err = validate_repo(tmp.path(), &Limits::default(), &mut NoCache).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "repodata/repomd.xml: not found — is {} a yum repository?",
                tmp.path().display()
            )
        );
    }

    /// The cache trusts an unchanged stat identity instead of re-reading the
    /// file (DESIGN §6). Proof that it does not re-hash: a file whose content
    /// is wrong but whose identity is cached with the declared sha256 passes.
    /// That is the intended trade-off: publishing a large repo stats every
    /// file but reads only the new ones; content changed without any change
    /// to size, mtime, inode or device goes unnoticed.
    #[test]
    fn cache_hit_skips_reading() {
        let repo = build(Comp::Gz);
        let mut cache = MemoryCache::default();
        let first = validate_repo(&repo.root(), &Limits::default(), &mut cache).unwrap();
        // repomd.xml (read in full anyway) and the .asc/.key are not cached.
        assert_eq!(cache.entries.len(), 4);

        let path = repo.root().join(HELLO);
        fs::write(&path, b"HELLO RPM BYTES").unwrap();
        let key = FileKey::from_metadata(&path, &fs::symlink_metadata(&path).unwrap());
        cache.put(key, Sha256Digest::of(b"hello rpm bytes"));
        let second = validate_repo(&repo.root(), &Limits::default(), &mut cache).unwrap();
        assert_eq!(first.files, second.files);

        // Without the cache the corruption is found.
        assert!(matches!(
            repo.validate().unwrap_err(),
            RepoError::ChecksumMismatch { path, .. } if path == HELLO
        ));
        // A cached value that disagrees with the declaration is re-checked.
        let key = FileKey::from_metadata(&path, &fs::symlink_metadata(&path).unwrap());
        cache.put(key, Sha256Digest::of(b"something else"));
        assert!(validate_repo(&repo.root(), &Limits::default(), &mut cache).is_err());
    }

    #[test]
    fn duplicate_packages_are_published_once() {
        let repo = build_with(
            Comp::Gz,
            &[
                (HELLO, b"hello rpm bytes", "sha256"),
                (HELLO, b"hello rpm bytes", "sha256"),
            ],
        );
        let v = repo.validate().unwrap();
        assert_eq!(v.files.iter().filter(|f| f.path == HELLO).count(), 1);
        assert_eq!(v.files.len(), 4);
    }

    #[test]
    fn limits_are_enforced() {
        let repo = build(Comp::Gz);
        let check = |limits: Limits, name: &str| {
            let err = validate_repo(&repo.root(), &limits, &mut NoCache).unwrap_err();
            assert!(
                matches!(&err, RepoError::LimitExceeded { limit_name, .. } if *limit_name == name),
                "{name}: {err}"
            );
        };
        check(
            Limits {
                max_entries: 4,
                ..Limits::default()
            },
            "max_entries",
        );
        check(
            Limits {
                max_entries: 1,
                ..Limits::default()
            },
            "max_entries",
        );
        check(
            Limits {
                max_blob_bytes: 15,
                ..Limits::default()
            },
            "max_blob_bytes",
        );
        check(
            Limits {
                max_total_bytes: 1000,
                ..Limits::default()
            },
            "max_total_bytes",
        );
        check(
            Limits {
                max_primary_bytes: 100,
                ..Limits::default()
            },
            "max_primary_bytes",
        );
        check(
            Limits {
                max_repomd_bytes: 100,
                ..Limits::default()
            },
            "max_repomd_bytes",
        );
        // Exactly at the limits is fine.
        let v = repo.validate().unwrap();
        let total: u64 = v.files.iter().map(|f| f.size).sum();
        let limits = Limits {
            max_entries: 5,
            max_blob_bytes: v.files.iter().map(|f| f.size).max().unwrap(),
            max_total_bytes: total,
            ..Limits::default()
        };
        validate_repo(&repo.root(), &limits, &mut NoCache).unwrap();
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
