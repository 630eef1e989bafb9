//! A directory → the files to publish, every one verified against the
//! checksum its listing declares, every path checked against [`RelPath`]'s
//! rules before anything is read or stored.
//!
//! The directory is read through [`SourceTree`] (no symlink followed at
//! any level). Each file is read at most once: one pass computes its sha256
//! (its content address), the checksum the repodata declares, and, when
//! given an [`Import`], writes it into the blob store; primary.xml is also
//! parsed in that same pass. An unchanged file whose stat identity the
//! hash cache knows is not read at all, nor is one declared exactly as the
//! published snapshot has it; a package whose primary.xml entry is byte for
//! byte one the last publish accepted is not even parsed ([`KnownPackages`]).
//! Package files are read by one thread per core (at most four).

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, RwLock};

use super::checksum::MultiHasher;
use super::tree::{FileStat, SourceTree};
use super::{
    Checksum, ChecksumKind, HashCache, KnownPackages, Listed, Package, REPOMD_PATH, RepoError,
    Repomd, invalid, io_err, parse_primary_listings, parse_repomd,
};
use crate::digest::Sha256Digest;
use crate::limits::Limits;
use crate::manifest::{Entry, Manifest};
use crate::relpath::RelPath;
use crate::store::{Import, Staging};

/// Published with repomd.xml when present (repo_gpgcheck signature and key).
const REPOMD_EXTRAS: [&str; 2] = ["repodata/repomd.xml.asc", "repodata/repomd.xml.key"];
/// Read buffer: large enough that syscalls do not dominate.
const READ_BUF_BYTES: usize = 256 * 1024;

/// One published file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepoFile {
    /// Relative, '/'-separated, checked against the path rules.
    pub path: RelPath,
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
    /// The packages' primary.xml entries, by their bytes, for the next
    /// publish to recognise; they index `files`.
    pub listings: KnownPackages,
    /// Packages accepted because their entry's bytes were recognised.
    pub recognised: usize,
}

/// A file already accepted: its size, sha256 and the other checksum computed.
struct Accepted {
    size: u64,
    sha256: Sha256Digest,
    other: Option<Checksum>,
    /// The primary.xml entry that listed it, when the next publish may
    /// recognise it ([`KnownPackages`]).
    listing: Option<Sha256Digest>,
}

/// Where a declaration came from, for error messages.
struct Source<'a> {
    /// Short name used in "listed in …" / "… declares": `repomd.xml`, `primary`.
    label: &'a str,
    /// The listing file's path, for href errors.
    path: &'a str,
}

impl Source<'_> {
    fn size_mismatch(&self, rel: &str, actual: u64, declared: u64) -> RepoError {
        RepoError::SizeMismatch {
            path: rel.to_owned(),
            actual,
            declared,
            listed_in: self.label.to_owned(),
        }
    }

    fn checksum_mismatch(&self, rel: &str, declared: &Checksum, actual: String) -> RepoError {
        RepoError::ChecksumMismatch {
            path: rel.to_owned(),
            kind: declared.kind,
            declared: declared.hex.clone(),
            actual,
            listed_in: self.label.to_owned(),
        }
    }
}

/// Reads a file's content as it is verified (primary.xml is parsed so).
type Consume<'c, T> = Box<dyn FnOnce(&mut dyn Read) -> Result<T, RepoError> + 'c>;

/// Feeds everything read through it to the hashers and the store.
struct Tee<'a, R> {
    inner: R,
    hashers: &'a mut MultiHasher,
    staging: Option<&'a mut Staging>,
    /// A write error, reported after the read.
    failed: Option<io::Error>,
}

impl<R: Read> Read for Tee<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hashers.update(&buf[..n]);
        if let Some(s) = self.staging.as_deref_mut()
            && self.failed.is_none()
            && let Err(e) = s.write_all(&buf[..n])
        {
            self.failed = Some(e);
        }
        Ok(n)
    }
}

struct Validator<'a, 'i> {
    tree: SourceTree,
    limits: &'a Limits,
    cache: &'a mut dyn HashCache,
    import: Option<&'a mut Import<'i>>,
    /// The latest published snapshot, whose blobs the store holds.
    published: Option<&'a Manifest>,
    files: BTreeMap<RelPath, Accepted>,
    /// Files accepted so far but for their content, which is being read
    /// ([`Validator::verify_packages`]): they count against the limits.
    reading: usize,
    total: u64,
    /// Packages accepted by their listing alone ([`Validator::accept_known`]).
    recognised: usize,
}

impl<'a> Validator<'a, '_> {
    fn check_limits(&mut self, rel: &str, size: u64) -> Result<(), RepoError> {
        let exceeded = |limit_name, limit| RepoError::LimitExceeded {
            file: rel.to_owned(),
            limit_name,
            limit,
        };
        if size > self.limits.max_blob_bytes {
            return Err(exceeded("max_blob_bytes", self.limits.max_blob_bytes));
        }
        if self.files.len() + self.reading >= self.limits.max_entries {
            return Err(exceeded("max_entries", self.limits.max_entries as u64));
        }
        self.total = self.total.saturating_add(size);
        if self.total > self.limits.max_total_bytes {
            return Err(exceeded("max_total_bytes", self.limits.max_total_bytes));
        }
        Ok(())
    }

    /// `rel` checked against the path rules; `listed_in` names the file
    /// that listed it.
    fn rel_path(&self, rel: &str, listed_in: &str) -> Result<RelPath, RepoError> {
        RelPath::new(rel, self.limits.max_path_bytes).map_err(|source| RepoError::UnsafeHref {
            file: listed_in.to_owned(),
            href: rel.to_owned(),
            source,
        })
    }

    /// Reads `rel` once: hashes it (sha256 and `extra`), stores it when an
    /// import is given and the store may lack it, and hands the stream to
    /// `consume` (which may parse it). Returns sha256, the `extra` hex and
    /// what `consume` made.
    fn read_once<T>(
        &mut self,
        rel: &str,
        listed_in: &str,
        extra: ChecksumKind,
        store_unless: Option<&Sha256Digest>,
        consume: impl FnOnce(&mut dyn Read) -> Result<T, RepoError>,
    ) -> Result<(Hashed, T), RepoError> {
        let (file, stat) = self.tree.open_file(rel, listed_in)?;
        let staging = match self.import.as_deref() {
            Some(i) if needs_storing(i, store_unless) => Some(i.begin()?),
            _ => None,
        };
        let mut buf = vec![0u8; READ_BUF_BYTES];
        let (hashed, staging, made) =
            read_through(file, stat, rel, extra, staging, &mut buf, consume)?;
        if let (Some(staging), Some(import)) = (staging, self.import.as_deref_mut()) {
            import.keep(staging, hashed.sha256)?;
        }
        Ok((hashed, made))
    }

    /// Adds a file no checksum is declared for (repomd.xml's `.asc`/`.key`).
    fn add_undeclared(&mut self, rel: &str) -> Result<(), RepoError> {
        let path = self.rel_path(rel, REPOMD_PATH)?;
        let stat = match self.tree.stat(rel, REPOMD_PATH) {
            Err(RepoError::Missing { .. }) => return Ok(()),
            other => other?,
        };
        self.check_limits(rel, stat.size)?;
        let (hashed, ()) =
            self.read_once(rel, REPOMD_PATH, ChecksumKind::Sha256, None, |_| Ok(()))?;
        self.files.insert(
            path,
            Accepted {
                size: hashed.stat.size,
                sha256: hashed.sha256,
                other: None,
                listing: None,
            },
        );
        Ok(())
    }

    /// Verifies `rel` against a declaration, reading it at most once per
    /// run (not at all when the hash cache vouches for it and the store
    /// holds it). `consume` sees the content when it must be read anyway.
    fn verify<T>(
        &mut self,
        rel: &str,
        declared: &Checksum,
        declared_size: Option<u64>,
        source: &Source<'_>,
        consume: Option<Consume<'_, T>>,
    ) -> Result<Option<T>, RepoError> {
        let path = self.rel_path(rel, source.path)?;

        // Listed before (a package listed twice): compare with what we computed.
        if let Some(seen) = self.files.get(rel) {
            return agrees(seen, rel, declared, declared_size, source).map(|()| None);
        }

        let Some(path) = self.before_reading(
            path,
            declared,
            declared_size,
            source,
            consume.is_none(),
            None,
        )?
        else {
            return Ok(None);
        };
        let declared_sha256 = sha256_declared(declared);
        let (hashed, made) = match consume {
            Some(consume) => {
                let (h, t) = self.read_once(
                    rel,
                    source.label,
                    declared.kind,
                    declared_sha256.as_ref(),
                    consume,
                )?;
                (h, Some(t))
            }
            None => {
                let (h, ()) = self.read_once(
                    rel,
                    source.label,
                    declared.kind,
                    declared_sha256.as_ref(),
                    |_| Ok(()),
                )?;
                (h, None)
            }
        };
        self.after_reading(path, declared, source, hashed, None)?;
        Ok(made)
    }

    /// What can be checked of `path` before reading it: its declared size,
    /// the limits, and, when `may_skip` (nothing parses it), whether it can
    /// be accepted unread. `None` when it was accepted unread. `listing`:
    /// the primary.xml entry that declared it, to remember once accepted.
    fn before_reading(
        &mut self,
        path: RelPath,
        declared: &Checksum,
        declared_size: Option<u64>,
        source: &Source<'_>,
        may_skip: bool,
        listing: Option<Sha256Digest>,
    ) -> Result<Option<RelPath>, RepoError> {
        let rel = path.as_str();
        let declared_sha256 = sha256_declared(declared);
        // Declared exactly as the latest published snapshot has it: its
        // blob is in the store, verified when it was published, so the
        // directory is not looked at. A publish costs what changed.
        if may_skip
            && let Some(sha256) = declared_sha256
            && let Some(e) = self.published.and_then(|m| m.entry(rel))
            && e.sha256 == sha256
            && declared_size.is_none_or(|d| d == e.size)
        {
            self.check_limits(rel, e.size)?;
            self.files.insert(
                path,
                Accepted {
                    size: e.size,
                    sha256,
                    other: None,
                    listing,
                },
            );
            return Ok(None);
        }

        let stat = self.tree.stat(rel, source.label)?;
        if let Some(d) = declared_size
            && d != stat.size
        {
            return Err(source.size_mismatch(rel, stat.size, d));
        }
        self.check_limits(rel, stat.size)?;

        // Trade-off (hash_cache): an unchanged stat identity is trusted to mean
        // unchanged content; a hit that disagrees is re-hashed below.
        if may_skip
            && let Some(sha256) = declared_sha256
            && self.cache.get(&stat.key) == Some(sha256)
        {
            self.files.insert(
                path,
                Accepted {
                    size: stat.size,
                    sha256,
                    other: None,
                    listing,
                },
            );
            return Ok(None);
        }
        Ok(Some(path))
    }

    /// Accepts `path` once read, if what was read matches the declaration.
    fn after_reading(
        &mut self,
        path: RelPath,
        declared: &Checksum,
        source: &Source<'_>,
        hashed: Hashed,
        listing: Option<Sha256Digest>,
    ) -> Result<(), RepoError> {
        self.cache.put(hashed.stat.key.clone(), hashed.sha256);
        let actual = hashed
            .other
            .clone()
            .unwrap_or_else(|| hashed.sha256.to_hex());
        if actual != declared.hex {
            return Err(source.checksum_mismatch(path.as_str(), declared, actual));
        }
        self.files.insert(
            path,
            Accepted {
                size: hashed.stat.size,
                sha256: hashed.sha256,
                other: hashed.other.map(|hex| Checksum {
                    kind: declared.kind,
                    hex,
                }),
                listing,
            },
        );
        Ok(())
    }

    /// [`Validator::verify`] for every package primary lists, with the
    /// files that must be read read by several threads at once: hashing
    /// (and storing) them is nearly all of a first publish, and one thread
    /// left the other cores idle. The error is one a one-by-one check could
    /// meet: within each batch of [`READ_BATCH`] packages, the first in
    /// primary's order among files refused before any read (missing, wrong
    /// size, a limit), else the first among the files read.
    fn verify_packages(
        &mut self,
        packages: &[Listed],
        source: &Source<'_>,
    ) -> Result<(), RepoError> {
        // Listed again: compared with the first listing once that is read.
        let mut again = Vec::new();
        // In batches, so that what is held between reading a file and
        // accepting it stays small however many files a first publish has.
        for batch in packages.chunks(READ_BATCH) {
            let mut to_read: Vec<(&Package, RelPath, Option<Sha256Digest>)> = Vec::new();
            let mut reading: HashSet<&str> = HashSet::new();
            for listed in batch {
                let (p, listing) = match listed {
                    Listed::Known { listing, entry } => {
                        let e = self.known_entry(*entry, source)?;
                        if reading.contains(e.path.as_str()) {
                            again.push(listed);
                        } else {
                            self.accept_known(e, *listing, source)?;
                        }
                        continue;
                    }
                    Listed::Parsed { package, listing } => (package, *listing),
                };
                let rel = p.href.as_str();
                let path = self.rel_path(rel, source.path)?;
                if self.files.contains_key(rel) || reading.contains(rel) {
                    again.push(listed);
                    continue;
                }
                if let Some(path) =
                    self.before_reading(path, &p.checksum, Some(p.size), source, true, listing)?
                {
                    reading.insert(rel);
                    to_read.push((p, path, listing));
                    self.reading += 1;
                }
            }
            let hashed = self.read_in_parallel(&to_read, source)?;
            self.reading = 0;
            for ((p, path, listing), hashed) in to_read.into_iter().zip(hashed) {
                self.after_reading(path, &p.checksum, source, hashed, listing)?;
            }
        }
        for listed in again {
            match listed {
                Listed::Known { listing, entry } => {
                    let e = self.known_entry(*entry, source)?;
                    self.accept_known(e, *listing, source)?;
                }
                Listed::Parsed { package: p, .. } => {
                    self.verify::<()>(&p.href, &p.checksum, Some(p.size), source, None)?;
                }
            }
        }
        Ok(())
    }

    /// The published manifest's entry a recognised listing declared.
    fn known_entry(&self, entry: u32, source: &Source<'_>) -> Result<&'a Entry, RepoError> {
        self.published
            .and_then(|m| m.entries.get(entry as usize))
            .ok_or_else(|| {
                invalid(
                    source.path,
                    "a recognised entry points past the published manifest",
                )
            })
    }

    /// Accepts the package of an entry whose bytes are those of one the
    /// published snapshot's validation accepted, which declared `e`: its
    /// blob is in the store, so neither the entry nor the file is looked at.
    fn accept_known(
        &mut self,
        e: &Entry,
        listing: Sha256Digest,
        source: &Source<'_>,
    ) -> Result<(), RepoError> {
        let rel = e.path.as_str();
        // Listed again: both listings must agree, as in `verify`.
        if let Some(seen) = self.files.get(rel) {
            let declared = Checksum {
                kind: ChecksumKind::Sha256,
                hex: e.sha256.to_hex(),
            };
            return agrees(seen, rel, &declared, Some(e.size), source);
        }
        self.check_limits(rel, e.size)?;
        self.files.insert(
            e.path.clone(),
            Accepted {
                size: e.size,
                sha256: e.sha256,
                other: None,
                listing: Some(listing),
            },
        );
        self.recognised += 1;
        Ok(())
    }

    /// Reads (hashes, and stores when importing) each file of `to_read` on
    /// [`reader_threads`] threads; results in `to_read`'s order, or the
    /// first error in that order.
    fn read_in_parallel(
        &mut self,
        to_read: &[(&Package, RelPath, Option<Sha256Digest>)],
        source: &Source<'_>,
    ) -> Result<Vec<Hashed>, RepoError> {
        let tree = Mutex::new(&mut self.tree);
        // Staging files are created under the read lock, side by side;
        // only keeping one (a list push) takes the write lock.
        let import = self.import.as_deref_mut().map(RwLock::new);
        let next = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        let work = || {
            let mut buf = vec![0u8; READ_BUF_BYTES];
            let mut done = Vec::new();
            while !failed.load(Ordering::Relaxed) {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((p, path, _)) = to_read.get(i) else {
                    break;
                };
                let result = read_package(&tree, import.as_ref(), p, path, source, &mut buf);
                if result.is_err() {
                    failed.store(true, Ordering::Relaxed);
                }
                done.push((i, result));
            }
            done
        };
        let threads = reader_threads().min(to_read.len()).max(1);
        let mut results: Vec<(usize, Result<Hashed, RepoError>)> = std::thread::scope(|scope| {
            let helpers: Vec<_> = (1..threads).map(|_| scope.spawn(work)).collect();
            let mut all = work();
            for h in helpers {
                match h.join() {
                    Ok(done) => all.extend(done),
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }
            all
        });
        results.sort_unstable_by_key(|(i, _)| *i);
        results.into_iter().map(|(_, r)| r).collect()
    }
}

/// Whether a second listing of `rel` (`declared`, `declared_size`) agrees
/// with the file already accepted for it.
fn agrees(
    seen: &Accepted,
    rel: &str,
    declared: &Checksum,
    declared_size: Option<u64>,
    source: &Source<'_>,
) -> Result<(), RepoError> {
    if let Some(d) = declared_size
        && d != seen.size
    {
        return Err(source.size_mismatch(rel, seen.size, d));
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
    if actual == declared.hex {
        Ok(())
    } else {
        Err(source.checksum_mismatch(rel, declared, actual))
    }
}

/// Packages checked, read and accepted together (see
/// [`Validator::verify_packages`]); small in tests, so that they span
/// several batches.
const READ_BATCH: usize = if cfg!(test) { 64 } else { 1024 };

/// Threads that read a publish's files: one per core, at most four (past
/// that the disk, not the hashing, is the limit).
fn reader_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get().min(4))
}

/// Reads one package file for [`Validator::read_in_parallel`].
fn read_package(
    tree: &Mutex<&mut SourceTree>,
    import: Option<&RwLock<&mut Import<'_>>>,
    package: &Package,
    path: &RelPath,
    source: &Source<'_>,
    buf: &mut [u8],
) -> Result<Hashed, RepoError> {
    let rel = path.as_str();
    let (file, stat) = lock(tree).open_file(rel, source.label)?;
    let store_unless = sha256_declared(&package.checksum);
    let staging = match import {
        Some(i) => {
            let i = i.read().unwrap_or_else(|poisoned| poisoned.into_inner());
            if needs_storing(&i, store_unless.as_ref()) {
                Some(i.begin()?)
            } else {
                None
            }
        }
        None => None,
    };
    let (hashed, staging, ()) =
        read_through(file, stat, rel, package.checksum.kind, staging, buf, |_| {
            Ok(())
        })?;
    if let (Some(staging), Some(import)) = (staging, import) {
        import
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .keep(staging, hashed.sha256)?;
    }
    Ok(hashed)
}

/// A lock whose holder panicked still guards consistent data here (a
/// directory cache, a list of staged blobs): use it (the import's
/// `RwLock` is taken the same way).
fn lock<'m, T>(m: &'m Mutex<T>) -> std::sync::MutexGuard<'m, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// What reading a file gave.
struct Hashed {
    /// From the open descriptor; its size is what was read.
    stat: FileStat,
    sha256: Sha256Digest,
    /// The declared checksum's kind, when not sha256, in hex.
    other: Option<String>,
}

/// The declared checksum as a sha256 digest, when it is one.
fn sha256_declared(declared: &Checksum) -> Option<Sha256Digest> {
    (declared.kind == ChecksumKind::Sha256)
        .then(|| declared.hex.parse::<Sha256Digest>().ok())
        .flatten()
}

/// False when the store holds (or this import staged) the declared blob.
fn needs_storing(import: &Import<'_>, store_unless: Option<&Sha256Digest>) -> bool {
    store_unless.is_none_or(|d| !import.has(d))
}

/// Reads `file` to its end through the hashers (sha256 and `extra`) and
/// into `staging`, handing the stream to `consume` first; checks that what
/// was read is what `stat` said. Returns the staging for the caller to keep.
fn read_through<T>(
    file: File,
    stat: FileStat,
    rel: &str,
    extra: ChecksumKind,
    mut staging: Option<Staging>,
    buf: &mut [u8],
    consume: impl FnOnce(&mut dyn Read) -> Result<T, RepoError>,
) -> Result<(Hashed, Option<Staging>, T), RepoError> {
    let mut hashers = MultiHasher::new(extra);
    let mut tee = Tee {
        inner: file,
        hashers: &mut hashers,
        staging: staging.as_mut(),
        failed: None,
    };
    let made = consume(&mut tee)?;
    // Whatever `consume` left unread still counts.
    loop {
        match tee.read(buf) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_err(rel)(e)),
        }
    }
    if let Some(e) = tee.failed.take() {
        return Err(RepoError::Io {
            path: format!("storing {rel}"),
            source: e,
        });
    }
    let (size, sha256, other) = hashers.finish();
    if size != stat.size {
        return Err(RepoError::Changed {
            path: rel.to_owned(),
        });
    }
    Ok((
        Hashed {
            stat,
            sha256,
            other,
        },
        staging,
        made,
    ))
}

/// Validates the yum repo in `dir`: see the module docs. Returns every file
/// to publish with its sha256, and the files that will not be published.
/// With `import`, every file the store lacks is staged into it in the same
/// read (the caller commits it once the snapshot is accepted).
pub fn validate_repo(
    dir: &Path,
    limits: &Limits,
    cache: &mut dyn HashCache,
    import: Option<&mut Import<'_>>,
) -> Result<ValidatedRepo, RepoError> {
    validate_repo_since(dir, limits, cache, import, None, None)
}

/// [`validate_repo`] for the next version after `published`, whose blobs
/// the store holds: a package declared with the same path, sha256 and size
/// is taken from it without looking at the directory, and one whose
/// primary.xml entry is byte for byte in `known` (that version's listings)
/// is not even parsed.
pub fn validate_repo_since(
    dir: &Path,
    limits: &Limits,
    cache: &mut dyn HashCache,
    import: Option<&mut Import<'_>>,
    published: Option<&Manifest>,
    known: Option<&KnownPackages>,
) -> Result<ValidatedRepo, RepoError> {
    // The directory is listed (to report what is not published) beside the
    // validation: at 100,000 files the listing alone takes ~65 ms.
    std::thread::scope(|scope| {
        let listing = scope.spawn(|| SourceTree::open(dir)?.files());
        let mut validated = validate_files(dir, limits, cache, import, published, known)?;
        let listed = match listing.join() {
            Ok(listed) => listed?,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        validated.unreferenced = not_in(listed.iter().map(String::as_str), &validated.files);
        Ok(validated)
    })
}

/// The paths of `listed` (sorted) that are not in `files` (sorted).
fn not_in<'l>(listed: impl Iterator<Item = &'l str>, files: &[RepoFile]) -> Vec<String> {
    let mut files = files.iter().map(|f| f.path.as_str()).peekable();
    listed
        .filter(|rel| {
            while files.next_if(|f| f < rel).is_some() {}
            files.peek() != Some(rel)
        })
        .map(str::to_owned)
        .collect()
}

/// [`validate_repo_since`] but for `unreferenced`, left empty.
fn validate_files(
    dir: &Path,
    limits: &Limits,
    cache: &mut dyn HashCache,
    import: Option<&mut Import<'_>>,
    published: Option<&Manifest>,
    known: Option<&KnownPackages>,
) -> Result<ValidatedRepo, RepoError> {
    let mut v = Validator {
        tree: SourceTree::open(dir)?,
        limits,
        cache,
        import,
        published,
        files: BTreeMap::new(),
        reading: 0,
        total: 0,
        recognised: 0,
    };

    // repomd.xml: read once, bounded, and keep the exact bytes.
    let stat = match v.tree.stat(REPOMD_PATH, "the repository layout") {
        Err(RepoError::Missing { .. }) => {
            return Err(RepoError::NotARepo {
                dir: dir.to_owned(),
            });
        }
        other => other?,
    };
    let too_big = || RepoError::LimitExceeded {
        file: REPOMD_PATH.to_owned(),
        limit_name: "max_repomd_bytes",
        limit: limits.max_repomd_bytes,
    };
    if stat.size > limits.max_repomd_bytes {
        return Err(too_big());
    }
    let (file, stat) = v.tree.open_file(REPOMD_PATH, "the repository layout")?;
    let mut repomd_bytes = Vec::new();
    file.take(limits.max_repomd_bytes.saturating_add(1))
        .read_to_end(&mut repomd_bytes)
        .map_err(io_err(REPOMD_PATH))?;
    if repomd_bytes.len() as u64 > limits.max_repomd_bytes {
        return Err(too_big());
    }
    if repomd_bytes.len() as u64 != stat.size {
        return Err(RepoError::Changed {
            path: REPOMD_PATH.to_owned(),
        });
    }
    let repomd = parse_repomd(&repomd_bytes)?;
    v.check_limits(REPOMD_PATH, repomd_bytes.len() as u64)?;
    let repomd_path = v.rel_path(REPOMD_PATH, REPOMD_PATH)?;
    let sha256 = match v.import.as_deref_mut() {
        Some(import) => import.add_bytes(&repomd_bytes)?,
        None => Sha256Digest::of(&repomd_bytes),
    };
    v.files.insert(
        repomd_path,
        Accepted {
            size: repomd_bytes.len() as u64,
            sha256,
            other: None,
            listing: None,
        },
    );
    for extra in REPOMD_EXTRAS {
        v.add_undeclared(extra)?;
    }

    let from_repomd = Source {
        label: "repomd.xml",
        path: REPOMD_PATH,
    };
    let primary = repomd
        .primary()
        .ok_or_else(|| invalid(REPOMD_PATH, "no <data type=\"primary\">"))?;
    // primary.xml first: verified, stored and parsed in one read.
    let href = primary.href.clone();
    let none = KnownPackages::default();
    let known = match (published, known) {
        (Some(m), Some(k)) if k.fits(m.entries.len()) => k,
        _ => &none,
    };
    let parse = |r: &mut dyn Read| parse_primary_listings(&href, BufReader::new(r), limits, known);
    let packages: Vec<Listed> = v
        .verify(
            &primary.href,
            &primary.checksum,
            primary.size,
            &from_repomd,
            Some(Box::new(parse)),
        )?
        .ok_or_else(|| invalid(REPOMD_PATH, "primary listed twice"))?;
    for d in &repomd.data {
        v.verify::<()>(&d.href, &d.checksum, d.size, &from_repomd, None)?;
    }
    let from_primary = Source {
        label: "primary",
        path: &primary.href,
    };
    v.verify_packages(&packages, &from_primary)?;
    // Freed before the files are collected: ~17 MB at 100,000 packages.
    drop(packages);

    let listings = KnownPackages::new(v.files.values().map(|a| a.listing.as_ref()));
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
        unreferenced: Vec::new(),
        listings,
        recognised: v.recognised,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;
    use crate::repo::FileKey;
    use crate::repo::fixtures::*;
    use crate::repo::{MemoryCache, NoCache, parse_primary};
    use std::fs;

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
        // Every href goes through RelPath's rules, the same the agent applies.
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
            "..a/b..",
        ] {
            assert!(RelPath::new(bad, 1024).is_err(), "{bad:?}");
        }
        assert!(RelPath::new(&"a".repeat(256), 1024).is_err());
        assert!(RelPath::new("Packages/h/hello-1.rpm", 1024).is_ok());
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
        let err = validate_repo(tmp.path(), &Limits::default(), &mut NoCache, None).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "repodata/repomd.xml: not found — is {} a yum repository?",
                tmp.path().display()
            )
        );
    }

    /// The cache trusts an unchanged stat identity instead of re-reading the
    /// file. Proof that it does not re-hash: a file whose content
    /// is wrong but whose identity is cached with the declared sha256 passes.
    /// That is the intended trade-off: publishing a large repo stats every
    /// file but reads only the new ones; content changed without any change
    /// to size, mtime, inode or device goes unnoticed.
    /// What publishing `v` as version 1 would sign.
    fn manifest_of(v: &ValidatedRepo) -> Manifest {
        Manifest {
            repo: crate::manifest::RepoName::new("test/x86_64").unwrap(),
            version: 1,
            created_unix: 0,
            expires_unix: 1,
            entries: v
                .files
                .iter()
                .map(|f| Entry {
                    path: f.path.clone(),
                    size: f.size,
                    sha256: f.sha256,
                })
                .collect(),
        }
    }

    #[test]
    fn entries_published_before_are_recognised_and_the_rest_checked() {
        let limits = Limits::default();
        let repo = build(Comp::Gz);
        let first = repo.validate().unwrap();
        assert_eq!((first.recognised, first.listings.len()), (0, 2));
        let published = manifest_of(&first);
        let again = |repo: &TestRepo, known: &KnownPackages| {
            validate_repo_since(
                &repo.root(),
                &limits,
                &mut NoCache,
                None,
                Some(&published),
                Some(known),
            )
        };

        // Unchanged: both recognised, and the files are not looked at
        // (their blobs are in the store, as for any unchanged declaration).
        fs::remove_file(repo.root().join(HELLO)).unwrap();
        let second = again(&repo, &first.listings).unwrap();
        assert_eq!(second.recognised, 2);
        assert_eq!(second.files, first.files);
        assert_eq!(second.listings.len(), 2);

        // Listings of another manifest are not used.
        let other = KnownPackages::new([None].iter().map(Option::as_ref));
        let unrecognised = again(&repo, &other).unwrap();
        assert_eq!(unrecognised.recognised, 0);
        assert_eq!(unrecognised.files, first.files);

        // One package changed: it alone is parsed and read, and its
        // corruption is found.
        let changed = build_with(
            Comp::Gz,
            &[
                (HELLO, b"hello rpm bytes", "sha256"),
                (WORLD, b"world rpm bytes, fixed", "sha256"),
            ],
        );
        let third = again(&changed, &first.listings).unwrap();
        assert_eq!(third.recognised, 1);
        assert_eq!(third.files, changed.validate().unwrap().files);
        fs::write(changed.root().join(WORLD), b"world rpm bytes, FIXED").unwrap();
        assert!(matches!(
            again(&changed, &first.listings).unwrap_err(),
            RepoError::ChecksumMismatch { path, .. } if path == WORLD
        ));
    }

    #[test]
    fn unreferenced_is_what_the_listing_has_and_the_files_do_not() {
        let files: Vec<RepoFile> = ["a", "b/c", "d"]
            .iter()
            .map(|p| RepoFile {
                path: RelPath::new(p, 100).unwrap(),
                size: 0,
                sha256: Sha256Digest::of(b""),
            })
            .collect();
        let listed = ["0", "a", "b/a", "b/c", "c", "d", "e"];
        assert_eq!(not_in(listed.into_iter(), &files), ["0", "b/a", "c", "e"]);
        assert!(not_in(std::iter::empty(), &files).is_empty());
        assert_eq!(not_in(["x"].into_iter(), &[]), ["x"]);
    }

    #[test]
    fn cache_hit_skips_reading() {
        let repo = build(Comp::Gz);
        let mut cache = MemoryCache::default();
        let first = validate_repo(&repo.root(), &Limits::default(), &mut cache, None).unwrap();
        // repomd.xml (read in full anyway) and the .asc/.key are not cached.
        assert_eq!(cache.entries.len(), 4);

        let path = repo.root().join(HELLO);
        fs::write(&path, b"HELLO RPM BYTES").unwrap();
        let key = FileKey::from_metadata(&path, &fs::symlink_metadata(&path).unwrap());
        cache.put(key, Sha256Digest::of(b"hello rpm bytes"));
        let second = validate_repo(&repo.root(), &Limits::default(), &mut cache, None).unwrap();
        assert_eq!(first.files, second.files);

        // Without the cache the corruption is found.
        assert!(matches!(
            repo.validate().unwrap_err(),
            RepoError::ChecksumMismatch { path, .. } if path == HELLO
        ));
        // A cached value that disagrees with the declaration is re-checked.
        let key = FileKey::from_metadata(&path, &fs::symlink_metadata(&path).unwrap());
        cache.put(key, Sha256Digest::of(b"something else"));
        assert!(validate_repo(&repo.root(), &Limits::default(), &mut cache, None).is_err());
    }

    #[test]
    fn many_packages_are_read_by_several_threads_and_stored_once_each() {
        let names: Vec<String> = (0..300).map(|i| format!("Packages/p{i:03}.rpm")).collect();
        let bodies: Vec<Vec<u8>> = (0..300)
            .map(|i| format!("package {}", i % 250).into_bytes())
            .collect();
        let specs: Vec<(&str, &[u8], &'static str)> = names
            .iter()
            .zip(&bodies)
            .map(|(n, b)| (n.as_str(), b.as_slice(), "sha256"))
            .collect();
        let repo = build_with(Comp::Gz, &specs);
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::BlobStore::open(dir.path()).unwrap();
        let mut import = Import::new(&store);
        let v = validate_repo(
            &repo.root(),
            &Limits::default(),
            &mut NoCache,
            Some(&mut import),
        )
        .unwrap();
        assert_eq!(v.files.len(), 303);
        for (name, body) in names.iter().zip(&bodies) {
            let f = v.files.iter().find(|f| f.path == name.as_str()).unwrap();
            assert_eq!(f.sha256, Sha256Digest::of(body), "{name}");
        }
        // 250 distinct package bodies, primary.xml.gz, filelists, repomd.xml.
        assert_eq!(import.len(), 253);
        drop(import);

        // Two bad files: the one primary lists first is the one named,
        // whichever thread read it.
        fs::write(repo.root().join(&names[271]), b"package 21!").unwrap();
        fs::write(repo.root().join(&names[137]), b"package 137!").unwrap();
        for _ in 0..5 {
            let err = repo.validate().unwrap_err().to_string();
            assert!(err.starts_with("Packages/p137.rpm: size 12 but"), "{err}");
        }
        fs::write(repo.root().join(&names[271]), b"package 2X").unwrap();
        fs::write(repo.root().join(&names[137]), b"package 13X").unwrap();
        for _ in 0..5 {
            let err = repo.validate().unwrap_err().to_string();
            assert!(
                err.starts_with("Packages/p137.rpm: sha256 mismatch"),
                "{err}"
            );
        }
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
            let err = validate_repo(&repo.root(), &limits, &mut NoCache, None).unwrap_err();
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
        validate_repo(&repo.root(), &limits, &mut NoCache, None).unwrap();
    }
}
