//! The content-addressed blob store: `<data>/objects/sha256/ab/cdef…` holds
//! verified blobs (read-only), `<data>/tmp/` holds partial ones that a later
//! push resumes. Blobs are hashed while they are written and renamed into
//! `objects/` only once size and digest both match.
//!
//! One receiver at a time writes `tmp/<hex>.part` (the caller claims the
//! digest). Once it holds the whole blob it is never written again: another
//! push may have verified it and be about to install it, so a later push
//! resuming the same digest checks it and only counts the chunks still sent
//! ([`BlobStore::begin`]).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use std::time::{Duration, SystemTime};

use crate::digest::{HashingWriter, Sha256Digest};

/// Why a blob could not be stored.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("blob {digest}: chunk at offset {got}, expected {expected}")]
    WrongOffset {
        digest: Sha256Digest,
        got: u64,
        expected: u64,
    },
    #[error("blob {digest}: {got} bytes received, longer than the declared {declared}")]
    TooLong {
        digest: Sha256Digest,
        got: u64,
        declared: u64,
    },
    #[error("blob {digest}: {got} bytes received, shorter than the declared {declared}")]
    TooShort {
        digest: Sha256Digest,
        got: u64,
        declared: u64,
    },
    #[error("blob {digest}: content hashes to {actual}")]
    DigestMismatch {
        digest: Sha256Digest,
        actual: Sha256Digest,
    },
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// An import temporary this old belongs to no import still running.
pub const IMPORT_TMP_MAX_AGE: Duration = Duration::from_secs(3600);

/// Fsyncs a directory so a rename inside it survives a crash.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The store rooted at a data directory.
#[derive(Clone, Debug)]
pub struct BlobStore {
    objects: PathBuf,
    tmp: PathBuf,
}

impl BlobStore {
    /// Opens (creating if needed) the store under `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Self, StoreError> {
        let objects = data_dir.join("objects").join("sha256");
        let tmp = data_dir.join("tmp");
        fs::create_dir_all(&objects).map_err(io_err("create", &objects))?;
        fs::create_dir_all(&tmp).map_err(io_err("create", &tmp))?;
        Ok(Self { objects, tmp })
    }

    /// Where a verified blob lives.
    pub fn path(&self, digest: &Sha256Digest) -> PathBuf {
        let hex = digest.to_hex();
        self.objects.join(&hex[..2]).join(&hex[2..])
    }

    /// True when the verified blob is present.
    pub fn has(&self, digest: &Sha256Digest) -> bool {
        self.path(digest).is_file()
    }

    /// The length of the verified blob, when present (one `stat`).
    pub fn blob_len(&self, digest: &Sha256Digest) -> Option<u64> {
        fs::metadata(self.path(digest))
            .ok()
            .filter(fs::Metadata::is_file)
            .map(|m| m.len())
    }

    fn partial_path(&self, digest: &Sha256Digest) -> PathBuf {
        self.tmp.join(format!("{}.part", digest.to_hex()))
    }

    /// Bytes of `digest` already received (0 when none), for resuming.
    pub fn partial_len(&self, digest: &Sha256Digest) -> u64 {
        fs::metadata(self.partial_path(digest))
            .map(|m| m.len())
            .unwrap_or(0)
    }

    /// Opens a partial blob to continue writing at `offset`, which must be
    /// what [`BlobStore::partial_len`] reported (or 0 to start over). The
    /// bytes already there are re-hashed so the final digest covers them.
    /// The caller must hold the digest's claim: one writer per partial.
    ///
    /// A partial that already holds all `size` bytes is not touched: it may
    /// be another push's verified blob, waiting for that push's Commit
    /// (a superseded push still draining, two repos sharing a package).
    /// Hashed and found right, the blob is *held*: the chunks still sent are
    /// counted, not written. So is a blob another push installed after
    /// `offset` was reported.
    pub fn begin(
        &self,
        digest: Sha256Digest,
        size: u64,
        offset: u64,
    ) -> Result<PartialBlob, StoreError> {
        let path = self.partial_path(&digest);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err("open", &path))?;
        let have = file.metadata().map_err(io_err("stat", &path))?.len();
        if have == size {
            let mut hasher = Sha256::new();
            io::copy(&mut file, &mut HasherSink(&mut hasher)).map_err(io_err("read", &path))?;
            if Sha256Digest(hasher.finalize().into()) == digest {
                // Read-only like every stored blob, even if the push that
                // wrote it was cut off before its own check got that far.
                read_only(&file, &path)?;
                return Ok(PartialBlob::held(digest, size, path, offset));
            }
            // Not the blob (a push cut off before its check), so no push
            // holds it as received: start over below.
            file.seek(SeekFrom::Start(0))
                .map_err(io_err("seek", &path))?;
        } else if have < offset && self.blob_len(&digest) == Some(size) {
            return Ok(PartialBlob::held(digest, size, self.path(&digest), offset));
        }
        let offset = offset.min(have).min(size);
        let mut hasher = Sha256::new();
        if offset > 0 {
            let mut limited = (&mut file).take(offset);
            io::copy(&mut limited, &mut HasherSink(&mut hasher)).map_err(io_err("read", &path))?;
        }
        file.set_len(offset).map_err(io_err("truncate", &path))?;
        file.seek(SeekFrom::Start(offset))
            .map_err(io_err("seek", &path))?;
        Ok(PartialBlob {
            digest,
            size,
            path,
            sink: Sink::Writing(HashingWriter::resume(
                io::BufWriter::with_capacity(256 * 1024, file),
                hasher,
                offset,
            )),
        })
    }

    /// A partial blob that holds all `size` bytes (received in full by a
    /// push that never got to its Commit), hashed again: `None` when it is
    /// not there or not what `digest` says (then it is deleted).
    pub fn complete_partial(&self, digest: Sha256Digest, size: u64) -> Option<Received> {
        let path = self.partial_path(&digest);
        let file = File::open(&path).ok()?;
        if file.metadata().ok()?.len() != size {
            return None;
        }
        let mut hasher = Sha256::new();
        io::copy(&mut io::BufReader::new(file), &mut HasherSink(&mut hasher)).ok()?;
        if Sha256Digest(hasher.finalize().into()) != digest {
            let _ = fs::remove_file(&path);
            return None;
        }
        Some(Received { digest, path })
    }

    /// Stores bytes already in memory.
    pub fn import_bytes(&self, data: &[u8]) -> Result<Sha256Digest, StoreError> {
        let digest = Sha256Digest::of(data);
        if self.has(&digest) {
            return Ok(digest);
        }
        let tmp = tempfile_in(&self.tmp)?;
        let mut file = File::create(&tmp).map_err(io_err("create", &tmp))?;
        file.write_all(data).map_err(io_err("write", &tmp))?;
        read_only(&file, &tmp)?;
        drop(file);
        self.install_batch(&[(tmp, digest)])?;
        Ok(digest)
    }

    /// Makes files already verified as their digest durable with one
    /// `syncfs`, moves them into `objects/`, and makes the moves durable
    /// with a second: two flushes for a whole push or publish instead of
    /// two fsyncs per blob. Until the first, they stay in `tmp/`, where a
    /// crash leaves them to be hashed again before any use.
    fn install_batch(&self, verified: &[(PathBuf, Sha256Digest)]) -> Result<(), StoreError> {
        if verified.is_empty() {
            return Ok(());
        }
        let objects = File::open(&self.objects).map_err(io_err("open", &self.objects))?;
        let sync = |what: &Path| {
            rustix::fs::syncfs(&objects).map_err(|e| StoreError::Io {
                op: "syncfs",
                path: what.to_owned(),
                source: e.into(),
            })
        };
        sync(&self.tmp)?;
        for (tmp, digest) in verified {
            let dest = self.path(digest);
            match fs::rename(tmp, &dest) {
                Ok(()) => {}
                // Another push installed the same blob meanwhile.
                Err(e) if e.kind() == io::ErrorKind::NotFound && dest.is_file() => {}
                // The first blob under this prefix.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    let dir = dest.parent().unwrap_or(&self.objects);
                    fs::create_dir_all(dir).map_err(io_err("create", dir))?;
                    fs::rename(tmp, &dest).map_err(io_err("rename", &dest))?;
                }
                Err(e) => return Err(io_err("rename", &dest)(e)),
            }
        }
        sync(&self.objects)
    }

    /// Installs received blobs ([`PartialBlob::finish`]) into `objects/`,
    /// durably, all at once.
    pub fn install(&self, received: Vec<Received>) -> Result<(), StoreError> {
        let batch: Vec<(PathBuf, Sha256Digest)> =
            received.into_iter().map(|r| (r.path, r.digest)).collect();
        self.install_batch(&batch)
    }

    /// Removes a verified blob (garbage collection).
    pub fn remove(&self, digest: &Sha256Digest) -> Result<(), StoreError> {
        let path = self.path(digest);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("remove", &path)(e)),
            _ => Ok(()),
        }
    }

    /// Every digest in `objects/`, for garbage collection.
    pub fn list(&self) -> Result<Vec<Sha256Digest>, StoreError> {
        let mut out = Vec::new();
        for dir in fs::read_dir(&self.objects).map_err(io_err("list", &self.objects))? {
            let dir = dir.map_err(io_err("list", &self.objects))?;
            let prefix = dir.file_name().to_string_lossy().into_owned();
            let Ok(files) = fs::read_dir(dir.path()) else {
                continue;
            };
            for f in files.flatten() {
                let name = format!("{prefix}{}", f.file_name().to_string_lossy());
                if let Ok(d) = name.parse() {
                    out.push(d);
                }
            }
        }
        Ok(out)
    }

    /// Reclaims `tmp/`: partial blobs last written more than `older_than`
    /// ago for which `keep` is false, and import temporaries older than
    /// [`IMPORT_TMP_MAX_AGE`] (a crashed import). Returns (files, bytes).
    pub fn reclaim_tmp(
        &self,
        older_than: Duration,
        keep: impl Fn(&Sha256Digest) -> bool,
    ) -> (usize, u64) {
        let Ok(entries) = fs::read_dir(&self.tmp) else {
            return (0, 0);
        };
        let now = SystemTime::now();
        let age = |m: &fs::Metadata| {
            m.modified()
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .unwrap_or(Duration::ZERO)
        };
        let (mut files, mut bytes) = (0, 0);
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Ok(meta) = e.metadata() else { continue };
            let stale = match name.strip_suffix(".part").map(str::parse::<Sha256Digest>) {
                Some(Ok(digest)) => !keep(&digest) && age(&meta) >= older_than,
                _ => name.starts_with("import-") && age(&meta) >= IMPORT_TMP_MAX_AGE,
            };
            if stale && fs::remove_file(e.path()).is_ok() {
                files += 1;
                bytes += meta.len();
            }
        }
        (files, bytes)
    }
}

/// Blobs stored together (one publish): each written to `tmp/` while the
/// caller hashes it, then all made durable with one `syncfs`, renamed into
/// `objects/`, and the renames made durable with another. So a publish of
/// many files pays two syncs, not two per file, with the same guarantee: a
/// name in `objects/` only ever points at complete, durable content.
/// Dropped without [`Import::commit`], it removes what it wrote: a refused
/// publish stores nothing.
pub struct Import<'a> {
    store: &'a BlobStore,
    staged: Vec<(PathBuf, Sha256Digest)>,
    digests: std::collections::HashSet<Sha256Digest>,
}

/// One blob being written for an [`Import`]; removed on drop unless kept.
pub struct Staging {
    path: PathBuf,
    writer: Option<io::BufWriter<File>>,
}

impl Write for Staging {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.writer.as_mut() {
            Some(w) => w.write(buf),
            None => Err(io::Error::other("staging already finished")),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self.writer.as_mut() {
            Some(w) => w.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if self.writer.is_some() {
            let _ = fs::remove_file(&self.path);
        }
    }
}

impl<'a> Import<'a> {
    /// An empty batch.
    pub fn new(store: &'a BlobStore) -> Self {
        Self {
            store,
            staged: Vec::new(),
            digests: Default::default(),
        }
    }

    /// True when the blob is stored, or staged in this batch.
    pub fn has(&self, digest: &Sha256Digest) -> bool {
        self.digests.contains(digest) || self.store.has(digest)
    }

    /// A temporary file for a blob whose digest is not known yet.
    pub fn begin(&self) -> Result<Staging, StoreError> {
        let path = tempfile_in(&self.store.tmp)?;
        let file = File::create(&path).map_err(io_err("create", &path))?;
        Ok(Staging {
            path,
            writer: Some(io::BufWriter::with_capacity(256 * 1024, file)),
        })
    }

    /// Keeps what `staging` received as the blob `digest`, which the caller
    /// has verified while writing it.
    pub fn keep(&mut self, mut staging: Staging, digest: Sha256Digest) -> Result<(), StoreError> {
        let writer = staging.writer.take();
        if self.has(&digest) {
            let _ = fs::remove_file(&staging.path);
            return Ok(());
        }
        if let Some(w) = writer {
            let file = w.into_inner().map_err(|e| StoreError::Io {
                op: "write",
                path: staging.path.clone(),
                source: e.into_error(),
            })?;
            read_only(&file, &staging.path)?;
        }
        self.digests.insert(digest);
        self.staged.push((staging.path.clone(), digest));
        Ok(())
    }

    /// Stages bytes already in memory.
    pub fn add_bytes(&mut self, data: &[u8]) -> Result<Sha256Digest, StoreError> {
        let digest = Sha256Digest::of(data);
        if !self.has(&digest) {
            let mut staging = self.begin()?;
            staging
                .write_all(data)
                .map_err(io_err("write", &staging.path))?;
            self.keep(staging, digest)?;
        }
        Ok(digest)
    }

    /// Blobs staged so far.
    pub fn len(&self) -> usize {
        self.staged.len()
    }

    /// True when nothing is staged.
    pub fn is_empty(&self) -> bool {
        self.staged.is_empty()
    }

    /// Makes every staged blob durable and moves it into `objects/`;
    /// returns how many were new.
    pub fn commit(mut self) -> Result<usize, StoreError> {
        let staged = std::mem::take(&mut self.staged);
        self.store.install_batch(&staged)?;
        Ok(staged.len())
    }
}

impl Drop for Import<'_> {
    fn drop(&mut self) {
        for (tmp, _) in &self.staged {
            let _ = fs::remove_file(tmp);
        }
    }
}

/// Free bytes (for an unprivileged user) on the filesystem holding `path`.
pub fn free_bytes(path: &Path) -> Option<u64> {
    let st = rustix::fs::statvfs(path).ok()?;
    Some(st.f_bavail.saturating_mul(st.f_frsize))
}

/// Stored blobs are read-only: set on the open file, no path lookup.
fn read_only(file: &File, path: &Path) -> Result<(), StoreError> {
    file.set_permissions(fs::Permissions::from_mode(0o444))
        .map_err(io_err("chmod", path))
}

fn tempfile_in(dir: &Path) -> Result<PathBuf, StoreError> {
    let mut n = [0u8; 8];
    getrandom::fill(&mut n).map_err(|e| StoreError::Io {
        op: "random name",
        path: dir.to_owned(),
        source: io::Error::other(e.to_string()),
    })?;
    Ok(dir.join(format!("import-{}.tmp", hex::encode(n))))
}

struct HasherSink<'a>(&'a mut Sha256);

impl Write for HasherSink<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A blob being received. Chunks must arrive in order; the digest is
/// checked when the last byte is in.
pub struct PartialBlob {
    digest: Sha256Digest,
    size: u64,
    /// The partial file, or where the held blob already is.
    path: PathBuf,
    sink: Sink,
}

enum Sink {
    /// Into the partial file, hashed on the way.
    Writing(HashingWriter<io::BufWriter<File>>),
    /// The whole blob is already at `path`, verified: chunks are counted.
    Held { written: u64 },
}

impl PartialBlob {
    /// The blob being written.
    pub fn digest(&self) -> Sha256Digest {
        self.digest
    }

    fn held(digest: Sha256Digest, size: u64, path: PathBuf, offset: u64) -> Self {
        let written = offset.min(size);
        Self {
            digest,
            size,
            path,
            sink: Sink::Held { written },
        }
    }

    /// Bytes held so far.
    pub fn written(&self) -> u64 {
        match &self.sink {
            Sink::Writing(w) => w.written(),
            Sink::Held { written } => *written,
        }
    }

    /// True once every declared byte is in.
    pub fn is_complete(&self) -> bool {
        self.written() == self.size
    }

    /// Appends a chunk that starts at `offset`.
    pub fn write_chunk(&mut self, offset: u64, data: &[u8]) -> Result<(), StoreError> {
        let expected = self.written();
        if offset != expected {
            return Err(StoreError::WrongOffset {
                digest: self.digest,
                got: offset,
                expected,
            });
        }
        let end = offset + data.len() as u64;
        if end > self.size {
            return Err(StoreError::TooLong {
                digest: self.digest,
                got: end,
                declared: self.size,
            });
        }
        match &mut self.sink {
            Sink::Writing(w) => w.write_all(data).map_err(io_err("write", &self.path)),
            Sink::Held { written } => {
                *written = end;
                Ok(())
            }
        }
    }

    /// Flushes what was received so far so a later push can resume from it.
    pub fn suspend(self) -> Result<(), StoreError> {
        match self.sink {
            Sink::Writing(w) => w.finish().1.flush().map_err(io_err("write", &self.path)),
            Sink::Held { .. } => Ok(()),
        }
    }

    /// Checks size and digest; the blob is then ready for
    /// [`BlobStore::install`]. On a mismatch the partial file is deleted so
    /// the next push starts over.
    pub fn finish(self) -> Result<Received, StoreError> {
        let written = self.written();
        if written != self.size {
            let (digest, declared) = (self.digest, self.size);
            // Keep what arrived: a later push resumes from it.
            self.suspend()?;
            return Err(StoreError::TooShort {
                digest,
                got: written,
                declared,
            });
        }
        let w = match self.sink {
            Sink::Writing(w) => w,
            Sink::Held { .. } => {
                return Ok(Received {
                    digest: self.digest,
                    path: self.path,
                });
            }
        };
        let (actual, buf) = w.finish();
        if actual != self.digest {
            let _ = fs::remove_file(&self.path);
            return Err(StoreError::DigestMismatch {
                digest: self.digest,
                actual,
            });
        }
        let file = buf.into_inner().map_err(|e| StoreError::Io {
            op: "write",
            path: self.path.clone(),
            source: e.into_error(),
        })?;
        read_only(&file, &self.path)?;
        Ok(Received {
            digest: self.digest,
            path: self.path,
        })
    }
}

/// A blob received in full and verified, still under its temporary name.
#[derive(Debug)]
pub struct Received {
    digest: Sha256Digest,
    path: PathBuf,
}

impl Received {
    pub fn digest(&self) -> Sha256Digest {
        self.digest
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receive_resume_and_verify() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let data = b"hello, hotpush blob".to_vec();
        let digest = Sha256Digest::of(&data);

        let mut p = store.begin(digest, data.len() as u64, 0).unwrap();
        p.write_chunk(0, &data[..5]).unwrap();
        p.suspend().unwrap();
        assert_eq!(store.partial_len(&digest), 5);

        let mut p = store.begin(digest, data.len() as u64, 5).unwrap();
        assert!(matches!(
            p.write_chunk(3, b"x"),
            Err(StoreError::WrongOffset { expected: 5, .. })
        ));
        p.write_chunk(5, &data[5..]).unwrap();
        assert!(matches!(
            p.write_chunk(data.len() as u64, b"x"),
            Err(StoreError::TooLong { .. })
        ));
        store.install(vec![p.finish().unwrap()]).unwrap();
        assert!(store.has(&digest));
        assert_eq!(fs::read(store.path(&digest)).unwrap(), data);
        assert_eq!(store.partial_len(&digest), 0);
        assert_eq!(store.list().unwrap(), vec![digest]);
    }

    /// Two pushes of one blob, one after the other (a superseded push still
    /// draining, or two repos sharing a package): a later writer never
    /// touches what an earlier one verified and has yet to install.
    #[test]
    fn a_verified_blob_is_never_rewritten_by_a_later_resume() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let data = b"the bytes the signature names".to_vec();
        let (digest, size) = (Sha256Digest::of(&data), data.len() as u64);

        let mut first = store.begin(digest, size, 0).unwrap();
        first.write_chunk(0, &data).unwrap();
        let first = first.finish().unwrap();
        assert_eq!(store.partial_len(&digest), size, "resumable in full");

        // A second push that started over is held: what it sends (here
        // garbage) is counted, never written...
        let mut second = store.begin(digest, size, 0).unwrap();
        second.write_chunk(0, &vec![b'x'; data.len()]).unwrap();
        let second = second.finish().unwrap();
        // ...a third stops halfway...
        let mut third = store.begin(digest, size, 0).unwrap();
        third.write_chunk(0, &data[..4]).unwrap();
        third.suspend().unwrap();
        // ...and either push installs the first one's blob.
        store.install(vec![first]).unwrap();
        store.install(vec![second]).unwrap();
        assert_eq!(fs::read(store.path(&digest)).unwrap(), data);
    }

    /// A push told to resume at `offset` finds the partial gone: another
    /// push finished and installed it meanwhile.
    #[test]
    fn a_resume_whose_partial_was_installed_meanwhile_is_held() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let data = b"resume from where the want said".to_vec();
        let (digest, size) = (Sha256Digest::of(&data), data.len() as u64);

        let mut p = store.begin(digest, size, 0).unwrap();
        p.write_chunk(0, &data[..7]).unwrap();
        p.suspend().unwrap();
        let offset = store.partial_len(&digest);
        let mut other = store.begin(digest, size, offset).unwrap();
        other.write_chunk(offset, &data[7..]).unwrap();
        store.install(vec![other.finish().unwrap()]).unwrap();

        let mut late = store.begin(digest, size, offset).unwrap();
        late.write_chunk(offset, &data[7..]).unwrap();
        store.install(vec![late.finish().unwrap()]).unwrap();
        assert_eq!(fs::read(store.path(&digest)).unwrap(), data);
    }

    /// All bytes in, then the push was cut off before checking them, and
    /// they are wrong: nobody holds them, so the next push starts over.
    #[test]
    fn a_whole_partial_that_is_not_the_blob_is_written_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let data = b"the right bytes".to_vec();
        let (digest, size) = (Sha256Digest::of(&data), data.len() as u64);
        let mut p = store.begin(digest, size, 0).unwrap();
        p.write_chunk(0, &vec![b'?'; data.len()]).unwrap();
        p.suspend().unwrap();

        let mut p = store.begin(digest, size, 0).unwrap();
        p.write_chunk(0, &data).unwrap();
        store.install(vec![p.finish().unwrap()]).unwrap();
        assert_eq!(fs::read(store.path(&digest)).unwrap(), data);
    }

    /// All bytes in and right, but the push was cut off before its check:
    /// the next push holds them, and they are stored read-only all the same.
    #[test]
    fn a_whole_right_partial_is_held_and_stored_read_only() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let data = b"checked by the next push".to_vec();
        let (digest, size) = (Sha256Digest::of(&data), data.len() as u64);
        let mut p = store.begin(digest, size, 0).unwrap();
        p.write_chunk(0, &data).unwrap();
        p.suspend().unwrap();

        let mut p = store.begin(digest, size, size).unwrap();
        assert!(p.is_complete());
        p.write_chunk(size, b"").unwrap();
        store.install(vec![p.finish().unwrap()]).unwrap();
        let stored = store.path(&digest);
        assert_eq!(fs::read(&stored).unwrap(), data);
        assert_eq!(
            fs::metadata(&stored).unwrap().permissions().mode() & 0o777,
            0o444
        );
    }

    #[test]
    fn refuses_wrong_content_and_short_blobs() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let digest = Sha256Digest::of(b"right");
        let mut p = store.begin(digest, 5, 0).unwrap();
        p.write_chunk(0, b"wrong").unwrap();
        assert!(matches!(p.finish(), Err(StoreError::DigestMismatch { .. })));
        assert!(!store.has(&digest));
        assert_eq!(store.partial_len(&digest), 0, "a bad blob is not resumed");

        let mut p = store.begin(digest, 5, 0).unwrap();
        p.write_chunk(0, b"rig").unwrap();
        assert!(matches!(
            p.finish(),
            Err(StoreError::TooShort { got: 3, .. })
        ));
    }

    #[test]
    fn import_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let mut import = Import::new(&store);
        let d = import.add_bytes(b"package").unwrap();
        assert_eq!(d, Sha256Digest::of(b"package"));
        assert_eq!(import.add_bytes(b"package").unwrap(), d);
        assert_eq!(import.len(), 1);
        assert!(!store.has(&d), "nothing is in objects/ before the commit");
        assert_eq!(import.commit().unwrap(), 1);
        assert!(store.has(&d));
        assert_eq!(store.import_bytes(b"package").unwrap(), d);
        assert!(
            fs::metadata(store.path(&d))
                .unwrap()
                .permissions()
                .readonly()
        );
    }

    #[test]
    fn an_import_dropped_before_its_commit_stores_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let store = BlobStore::open(dir.path()).unwrap();
        let mut import = Import::new(&store);
        let d = import.add_bytes(b"refused").unwrap();
        let mut staging = import.begin().unwrap();
        staging.write_all(b"half").unwrap();
        drop(staging);
        drop(import);
        assert!(!store.has(&d));
        assert_eq!(fs::read_dir(dir.path().join("tmp")).unwrap().count(), 0);
    }
}
