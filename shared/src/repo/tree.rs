//! Reading a publish directory without following a symlink anywhere.
//!
//! Every file is reached from a handle on the tree's root, one path segment
//! at a time, each opened with `O_NOFOLLOW` (and `O_DIRECTORY` for
//! directories): a directory swapped for a symlink mid-publish makes the
//! open fail, it never leads outside the tree. A file is opened once and
//! hashed (and stored) from that one descriptor. Errors name paths relative
//! to the tree, so none says anything about what lies outside it.

use std::collections::HashMap;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};
use rustix::io::Errno;

use super::{FileKey, RepoError};

/// Directory handles kept open at once; a tree with more directories than
/// this reopens them (a publish must not run out of descriptors).
const MAX_OPEN_DIRS: usize = 64;

/// What `stat` tells about a file of the tree.
#[derive(Clone, Debug)]
pub struct FileStat {
    pub size: u64,
    pub key: FileKey,
}

/// A publish directory, opened.
pub struct SourceTree {
    root: Arc<OwnedFd>,
    /// The root's path, only to key the hash cache.
    root_path: String,
    dirs: HashMap<String, Arc<OwnedFd>>,
}

fn dir_flags() -> OFlags {
    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
}

/// `errno` from opening `rel`, as what it means for a publish.
fn open_error(rel: &str, listed_in: &str, errno: Errno, expected: &'static str) -> RepoError {
    match errno {
        Errno::LOOP => RepoError::Symlink {
            path: rel.to_owned(),
        },
        Errno::NOENT => RepoError::Missing {
            path: rel.to_owned(),
            listed_in: listed_in.to_owned(),
        },
        Errno::NOTDIR => RepoError::WrongFileType {
            path: rel.to_owned(),
            expected,
        },
        e => RepoError::Io {
            path: rel.to_owned(),
            source: e.into(),
        },
    }
}

impl SourceTree {
    /// Opens `dir`. A symlink as the last component is refused too: pass
    /// the real path (the CLI resolves `--from` before sending it).
    pub fn open(dir: &Path) -> Result<Self, RepoError> {
        let root = rustix::fs::open(dir, dir_flags(), Mode::empty()).map_err(|e| match e {
            Errno::NOENT => RepoError::NotARepo {
                dir: dir.to_owned(),
            },
            Errno::LOOP => RepoError::Symlink {
                path: dir.display().to_string(),
            },
            e => RepoError::Io {
                path: dir.display().to_string(),
                source: e.into(),
            },
        })?;
        Ok(Self {
            root: Arc::new(root),
            root_path: dir.display().to_string(),
            dirs: HashMap::new(),
        })
    }

    /// The directory `rel_dir` ("" for the root), walked segment by
    /// segment; `for_file` is what the caller wants from it, named when a
    /// directory on the way is missing.
    fn dir(
        &mut self,
        rel_dir: &str,
        for_file: &str,
        listed_in: &str,
    ) -> Result<Arc<OwnedFd>, RepoError> {
        if rel_dir.is_empty() {
            return Ok(self.root.clone());
        }
        if let Some(fd) = self.dirs.get(rel_dir) {
            return Ok(fd.clone());
        }
        let (parent, name) = rel_dir.rsplit_once('/').unwrap_or(("", rel_dir));
        let parent = self.dir(parent, for_file, listed_in)?;
        let fd =
            rustix::fs::openat(parent.as_fd(), name, dir_flags(), Mode::empty()).map_err(|e| {
                match e {
                    Errno::NOENT => open_error(for_file, listed_in, e, "directory"),
                    // O_DIRECTORY|O_NOFOLLOW on a symlink is ENOTDIR: say which it was.
                    Errno::NOTDIR | Errno::LOOP => {
                        let st =
                            rustix::fs::statat(parent.as_fd(), name, AtFlags::SYMLINK_NOFOLLOW);
                        let symlink = st.is_ok_and(|st| {
                            FileType::from_raw_mode(st.st_mode) == FileType::Symlink
                        });
                        open_error(
                            rel_dir,
                            listed_in,
                            if symlink { Errno::LOOP } else { Errno::NOTDIR },
                            "directory",
                        )
                    }
                    e => open_error(rel_dir, listed_in, e, "directory"),
                }
            })?;
        if self.dirs.len() >= MAX_OPEN_DIRS {
            self.dirs.clear();
        }
        let fd = Arc::new(fd);
        self.dirs.insert(rel_dir.to_owned(), fd.clone());
        Ok(fd)
    }

    fn key(&self, rel: &str, st: &Stat) -> FileKey {
        FileKey {
            path: format!("{}/{rel}", self.root_path.trim_end_matches('/')),
            size: st.st_size as u64,
            mtime_ns: i128::from(st.st_mtime) * 1_000_000_000 + i128::from(st.st_mtime_nsec),
            ino: st.st_ino,
            dev: st.st_dev,
        }
    }

    fn regular(&self, rel: &str, st: &Stat) -> Result<FileStat, RepoError> {
        match FileType::from_raw_mode(st.st_mode) {
            FileType::RegularFile => Ok(FileStat {
                size: st.st_size as u64,
                key: self.key(rel, st),
            }),
            FileType::Symlink => Err(RepoError::Symlink {
                path: rel.to_owned(),
            }),
            _ => Err(RepoError::WrongFileType {
                path: rel.to_owned(),
                expected: "regular file",
            }),
        }
    }

    /// Size and identity of the regular file `rel`, without opening it.
    pub fn stat(&mut self, rel: &str, listed_in: &str) -> Result<FileStat, RepoError> {
        let (dir, name) = rel.rsplit_once('/').unwrap_or(("", rel));
        let fd = self.dir(dir, rel, listed_in)?;
        let st = rustix::fs::statat(fd.as_fd(), name, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| open_error(rel, listed_in, e, "regular file"))?;
        self.regular(rel, &st)
    }

    /// Opens the regular file `rel` (never through a symlink), with its stat
    /// taken from the open descriptor.
    pub fn open_file(&mut self, rel: &str, listed_in: &str) -> Result<(File, FileStat), RepoError> {
        let (dir, name) = rel.rsplit_once('/').unwrap_or(("", rel));
        let fd = self.dir(dir, rel, listed_in)?;
        // NONBLOCK: opening a FIFO planted in the tree must not hang the publish.
        let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::NONBLOCK;
        let file = rustix::fs::openat(fd.as_fd(), name, flags, Mode::empty())
            .map_err(|e| open_error(rel, listed_in, e, "regular file"))?;
        let st = rustix::fs::fstat(&file).map_err(|e| RepoError::Io {
            path: rel.to_owned(),
            source: e.into(),
        })?;
        let stat = self.regular(rel, &st)?;
        Ok((File::from(file), stat))
    }

    /// Every regular file in the tree, relative and sorted; symlinks and
    /// special files are neither listed nor followed.
    pub fn files(&mut self) -> Result<Vec<String>, RepoError> {
        let mut out = Vec::new();
        let mut stack = vec![String::new()];
        while let Some(dir) = stack.pop() {
            let shown = if dir.is_empty() { "." } else { &dir };
            let fd = self.dir(&dir, shown, shown)?;
            let io = |e: Errno| RepoError::Io {
                path: shown.to_owned(),
                source: e.into(),
            };
            let listing = rustix::fs::Dir::read_from(fd.as_fd()).map_err(io)?;
            for entry in listing {
                let entry = entry.map_err(io)?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if name == "." || name == ".." {
                    continue;
                }
                let rel = if dir.is_empty() {
                    name.clone()
                } else {
                    format!("{dir}/{name}")
                };
                let kind = match entry.file_type() {
                    FileType::Unknown => {
                        rustix::fs::statat(fd.as_fd(), name.as_str(), AtFlags::SYMLINK_NOFOLLOW)
                            .map(|st| FileType::from_raw_mode(st.st_mode))
                            .map_err(io)?
                    }
                    kind => kind,
                };
                match kind {
                    FileType::Directory => stack.push(rel),
                    FileType::RegularFile => out.push(rel),
                    _ => {}
                }
            }
        }
        out.sort();
        Ok(out)
    }
}
