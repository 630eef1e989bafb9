//! Deterministic yum repo trees and the changes between their versions.
//!
//! A [`Tree`] is a directory of synthetic packages (pseudo-random bytes, so
//! nothing compresses or deduplicates) under `Packages/<letter>/`, plus
//! `repodata/` with primary, filelists and other (gzipped, each named by its
//! sha256, as createrepo_c names them) and `repomd.xml`. The same seed gives
//! the same bytes, names and repodata on every machine.
//!
//! Files are never rewritten in place: a change unlinks and creates. That
//! keeps hard-linked clones ([`Tree::link_clone`]) independent, so version 2
//! of a tree costs only its changed files on disk, and it matches what the
//! hotpush origin accepts (new bytes need a new path, except `repodata/`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use anyhow::{Context, Result};
use hotpush_tests::fixture::{gzip, pseudo_random};
use hotpush_tests::sha256_hex;

/// Size units (of content; files take whole 4 KiB blocks on disk).
pub const KIB: u64 = 1024;
pub const MB: u64 = 1_000_000;

/// Files in `repodata/` besides packages: repomd.xml, primary, filelists, other.
pub const REPODATA_FILES: usize = 4;

/// How package sizes are drawn (deterministically, per package).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Sizes {
    /// Within ±10 % of this many bytes.
    Around(u64),
    /// Log-uniform between `min` and `max` bytes: many small, few large,
    /// as in real repos, without a long tail blowing up the total.
    LogUniform { min: u64, max: u64 },
}

impl Sizes {
    fn draw(self, random: u64) -> u64 {
        // 53 random bits → [0, 1).
        let u = (random >> 11) as f64 / (1u64 << 53) as f64;
        match self {
            Sizes::Around(b) => (b as f64 * (0.9 + 0.2 * u)).round() as u64,
            Sizes::LogUniform { min, max } => {
                (min as f64 * (max as f64 / min as f64).powf(u)).round() as u64
            }
        }
    }
}

/// What to generate.
#[derive(Clone, Copy, Debug)]
pub struct TreeSpec {
    pub packages: usize,
    pub sizes: Sizes,
    pub seed: u64,
}

/// SplitMix64: a well-mixed 64-bit value from any input; the only source
/// of randomness here, so every choice is a function of the seed.
pub fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// One package of a tree.
#[derive(Clone, Debug)]
struct Package {
    /// Release; a replacement bumps it, which gives it a new file name.
    release: u32,
    size: u64,
    sha256: String,
    /// Seed of its content.
    seed: u64,
}

/// A generated repo on disk and what it holds.
#[derive(Clone, Debug)]
pub struct Tree {
    pub dir: PathBuf,
    spec: TreeSpec,
    /// Name → package.
    packages: BTreeMap<String, Package>,
    /// Every published file (relative path) → sha256 of its bytes.
    files: BTreeMap<String, String>,
    /// repomd.xml `<revision>`: bumped by every change.
    version: u64,
    /// Index of the next new package name.
    next_index: u64,
}

/// What a destination must do to go from one version of a tree to another.
#[derive(Clone, Debug, Default)]
pub struct Diff {
    /// New or different files, `repodata/repomd.xml` last (relative paths).
    pub changed: Vec<String>,
    /// Files gone from the new version.
    pub removed: Vec<String>,
}

impl Tree {
    /// Writes a new tree at `dir` (which must not exist or be empty).
    pub fn generate(dir: &Path, spec: TreeSpec) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("mkdir {}", dir.display()))?;
        let mut tree = Tree {
            dir: dir.to_path_buf(),
            spec,
            packages: BTreeMap::new(),
            files: BTreeMap::new(),
            version: 1,
            next_index: 0,
        };
        for _ in 0..spec.packages {
            let i = tree.next_index;
            tree.next_index += 1;
            let size = spec.sizes.draw(mix(spec.seed ^ mix(i)));
            tree.add_package(&package_name(i), 1, size)?;
        }
        tree.write_repodata()?;
        Ok(tree)
    }

    /// Files published (packages and repodata, repomd.xml included).
    pub fn file_count(&self) -> usize {
        self.files.len()
    }

    /// Bytes of every published file.
    pub fn total_bytes(&self) -> u64 {
        self.packages.values().map(|p| p.size).sum::<u64>() + self.repodata_bytes()
    }

    fn repodata_bytes(&self) -> u64 {
        self.files
            .keys()
            .filter(|p| p.starts_with("repodata/"))
            .filter_map(|p| std::fs::metadata(self.dir.join(p)).ok())
            .map(|m| m.len())
            .sum()
    }

    /// The exact bytes of `repodata/repomd.xml`.
    pub fn repomd(&self) -> Result<Vec<u8>> {
        let path = self.dir.join("repodata/repomd.xml");
        std::fs::read(&path).with_context(|| format!("reading {}", path.display()))
    }

    /// A copy at `dir` made of hard links (`dir` must not exist): free in
    /// disk space, and safe because no file is ever rewritten in place.
    pub fn link_clone(&self, dir: &Path) -> Result<Self> {
        link_tree(&self.dir, dir)?;
        Ok(Tree {
            dir: dir.to_path_buf(),
            ..self.clone()
        })
    }

    /// Change number `k` (1, 2, …), in place: one package replaced by its
    /// next release (old path removed, new path added) and one new package
    /// added, then repodata regenerated with a new revision: the shape of a
    /// routine security update. Deterministic in (seed, k, current state).
    pub fn small_change(&mut self, k: u64) -> Result<()> {
        let r = mix(self.spec.seed ^ mix(0x5eed_c4a9 ^ k));
        if !self.packages.is_empty() {
            let victim = (r % self.packages.len() as u64) as usize;
            let (name, old) = self
                .packages
                .iter()
                .nth(victim)
                .map(|(n, p)| (n.clone(), p.clone()))
                .context("package index out of range")?;
            self.remove_package(&name)?;
            let size = self.spec.sizes.draw(mix(r ^ 1));
            self.add_package(&name, old.release + 1, size)?;
        }
        let i = self.next_index;
        self.next_index += 1;
        let size = self.spec.sizes.draw(mix(r ^ 2));
        self.add_package(&package_name(i), 1, size)?;
        self.version += 1;
        self.write_repodata()
    }

    /// In place: one new package of `size` bytes (the fix), then repodata.
    pub fn urgent_fix(&mut self, size: u64) -> Result<()> {
        self.add_package("openssl-fix", 1, size)?;
        self.version += 1;
        self.write_repodata()
    }

    /// What turns a copy of `old` into a copy of `new`.
    pub fn diff(old: &Tree, new: &Tree) -> Diff {
        let mut changed: Vec<String> = new
            .files
            .iter()
            .filter(|(path, sum)| old.files.get(*path) != Some(*sum))
            .map(|(path, _)| path.clone())
            .collect();
        // repomd.xml last, as a careful mirror script would: a client that
        // sees the new one finds everything it names.
        changed.sort_by_key(|p| p == "repodata/repomd.xml");
        let removed = old
            .files
            .keys()
            .filter(|p| !new.files.contains_key(*p))
            .cloned()
            .collect();
        Diff { changed, removed }
    }

    fn package_path(name: &str, release: u32) -> String {
        let letter = name.chars().next().unwrap_or('x');
        format!("Packages/{letter}/{name}-1.0-{release}.noarch.rpm")
    }

    fn add_package(&mut self, name: &str, release: u32, size: u64) -> Result<()> {
        let seed = mix(self.spec.seed ^ mix(fnv(name) ^ u64::from(release)));
        let rel = Self::package_path(name, release);
        let body = pseudo_random(seed, size);
        write_new(&self.dir.join(&rel), &body, build_time(seed))?;
        let sha256 = sha256_hex(&body);
        self.files.insert(rel, sha256.clone());
        self.packages.insert(
            name.to_owned(),
            Package {
                release,
                size,
                sha256,
                seed,
            },
        );
        Ok(())
    }

    fn remove_package(&mut self, name: &str) -> Result<()> {
        let p = self
            .packages
            .remove(name)
            .with_context(|| format!("no package {name}"))?;
        let rel = Self::package_path(name, p.release);
        let path = self.dir.join(&rel);
        std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        self.files.remove(&rel);
        Ok(())
    }

    /// Replaces `repodata/` (unlinking the old files, never rewriting them).
    fn write_repodata(&mut self) -> Result<()> {
        let repodata = self.dir.join("repodata");
        if repodata.exists() {
            std::fs::remove_dir_all(&repodata)
                .with_context(|| format!("removing {}", repodata.display()))?;
        }
        self.files.retain(|p, _| !p.starts_with("repodata/"));
        std::fs::create_dir_all(&repodata)
            .with_context(|| format!("mkdir {}", repodata.display()))?;
        let revision = 1_700_000_000 + self.version;
        let (primary, filelists, other) = self.repodata_xml();
        let mut data = String::new();
        for (kind, xml) in [
            ("primary", primary),
            ("filelists", filelists),
            ("other", other),
        ] {
            let gz = gzip(xml.as_bytes());
            let sum = sha256_hex(&gz);
            let href = format!("repodata/{sum}-{kind}.xml.gz");
            write_new(&self.dir.join(&href), &gz, revision)?;
            let _ = write!(
                data,
                "  <data type=\"{kind}\">\n    <checksum type=\"sha256\">{sum}</checksum>\n    \
                 <open-checksum type=\"sha256\">{}</open-checksum>\n    <location href=\"{href}\"/>\n    \
                 <timestamp>{revision}</timestamp>\n    <size>{}</size>\n    <open-size>{}</open-size>\n  </data>\n",
                sha256_hex(xml.as_bytes()),
                gz.len(),
                xml.len()
            );
            self.files.insert(href, sum);
        }
        let repomd = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<repomd xmlns=\"http://linux.duke.edu/metadata/repo\" \
             xmlns:rpm=\"http://linux.duke.edu/metadata/rpm\">\n  <revision>{revision}</revision>\n{data}</repomd>\n"
        );
        write_new(&repodata.join("repomd.xml"), repomd.as_bytes(), revision)?;
        self.files.insert(
            "repodata/repomd.xml".to_owned(),
            sha256_hex(repomd.as_bytes()),
        );
        Ok(())
    }

    /// primary.xml, filelists.xml and other.xml, shaped like createrepo_c's
    /// (so their size per package is realistic).
    fn repodata_xml(&self) -> (String, String, String) {
        let n = self.packages.len();
        let mut primary = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<metadata xmlns=\"http://linux.duke.edu/metadata/common\" \
             xmlns:rpm=\"http://linux.duke.edu/metadata/rpm\" packages=\"{n}\">\n"
        );
        let mut filelists = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<filelists xmlns=\"http://linux.duke.edu/metadata/filelists\" packages=\"{n}\">\n"
        );
        let mut other = format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<otherdata xmlns=\"http://linux.duke.edu/metadata/other\" packages=\"{n}\">\n"
        );
        for (name, p) in &self.packages {
            let (rel, size, sum) = (p.release, p.size, &p.sha256);
            let href = Self::package_path(name, rel);
            let time = build_time(p.seed);
            let _ = write!(
                primary,
                "<package type=\"rpm\">\n  <name>{name}</name>\n  <arch>noarch</arch>\n  \
                 <version epoch=\"0\" ver=\"1.0\" rel=\"{rel}\"/>\n  \
                 <checksum type=\"sha256\" pkgid=\"YES\">{sum}</checksum>\n  \
                 <summary>Benchmark package {name}</summary>\n  \
                 <description>Synthetic package {name}: {size} bytes of pseudo-random data.</description>\n  \
                 <packager>hotpush bench</packager>\n  <url>https://example.org/{name}</url>\n  \
                 <time file=\"{time}\" build=\"{time}\"/>\n  \
                 <size package=\"{size}\" installed=\"{size}\" archive=\"{size}\"/>\n  \
                 <location href=\"{href}\"/>\n  <format>\n    <rpm:license>MIT</rpm:license>\n    \
                 <rpm:group>Unspecified</rpm:group>\n    <rpm:buildhost>bench.example.org</rpm:buildhost>\n    \
                 <rpm:sourcerpm>{name}-1.0-{rel}.src.rpm</rpm:sourcerpm>\n    \
                 <rpm:provides>\n      <rpm:entry name=\"{name}\" flags=\"EQ\" epoch=\"0\" ver=\"1.0\" rel=\"{rel}\"/>\n    </rpm:provides>\n  \
                 </format>\n</package>\n"
            );
            let _ = write!(
                filelists,
                "<package pkgid=\"{sum}\" name=\"{name}\" arch=\"noarch\">\n  \
                 <version epoch=\"0\" ver=\"1.0\" rel=\"{rel}\"/>\n  <file type=\"dir\">/usr/share/{name}</file>\n  \
                 <file>/usr/share/{name}/data.bin</file>\n  <file>/usr/share/doc/{name}/README</file>\n</package>\n"
            );
            let _ = write!(
                other,
                "<package pkgid=\"{sum}\" name=\"{name}\" arch=\"noarch\">\n  \
                 <version epoch=\"0\" ver=\"1.0\" rel=\"{rel}\"/>\n  \
                 <changelog author=\"hotpush bench &lt;bench@example.org&gt; - 1.0-{rel}\" date=\"{time}\">- Release {rel}.</changelog>\n</package>\n"
            );
        }
        primary.push_str("</metadata>\n");
        filelists.push_str("</filelists>\n");
        other.push_str("</otherdata>\n");
        (primary, filelists, other)
    }
}

/// `a000000`, `b000001`, …: spread over 26 `Packages/<letter>/`
/// directories, as Fedora lays out its trees.
fn package_name(i: u64) -> String {
    let letter = char::from(b'a' + (i % 26) as u8);
    format!("{letter}bench{i:06}")
}

/// A package's build time (and its file's mtime), fixed by its seed, so
/// unchanged packages keep identical entries from version to version.
fn build_time(seed: u64) -> u64 {
    1_600_000_000 + seed % 100_000_000
}

/// FNV-1a of a name: folds it into a package's content seed.
fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Creates `path` (and its parents) holding `bytes`, modified at
/// `mtime` (Unix seconds); refuses to open an existing file, which might
/// be shared by a hard-linked clone. Fixed mtimes make trees identical
/// from run to run in metadata too, and give each version's repomd.xml
/// its own: rsync's quick check (size and mtime) would otherwise skip a
/// same-sized repomd.xml written within the same second as the last.
fn write_new(path: &Path, bytes: &[u8], mtime: u64) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).with_context(|| format!("mkdir {}", parent.display()))?;
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("writing {}", path.display()))?;
    f.set_modified(UNIX_EPOCH + Duration::from_secs(mtime))
        .with_context(|| format!("setting the mtime of {}", path.display()))
}

/// Recreates the directories of `src` at `dst` and hard-links its files.
fn link_tree(src: &Path, dst: &Path) -> Result<()> {
    std::fs::create_dir_all(dst).with_context(|| format!("mkdir {}", dst.display()))?;
    for entry in std::fs::read_dir(src).with_context(|| format!("reading {}", src.display()))? {
        let entry = entry.with_context(|| format!("reading {}", src.display()))?;
        let (from, to) = (entry.path(), dst.join(entry.file_name()));
        let kind = entry
            .file_type()
            .with_context(|| format!("stat {}", from.display()))?;
        if kind.is_dir() {
            link_tree(&from, &to)?;
        } else {
            std::fs::hard_link(&from, &to)
                .with_context(|| format!("linking {} to {}", from.display(), to.display()))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(packages: usize) -> TreeSpec {
        TreeSpec {
            packages,
            sizes: Sizes::LogUniform {
                min: KIB,
                max: 8 * KIB,
            },
            seed: 7,
        }
    }

    #[test]
    fn same_seed_same_bytes_and_changes_are_deterministic() {
        let tmp = tempfile::tempdir().unwrap();
        let mut a = Tree::generate(&tmp.path().join("a"), spec(30)).unwrap();
        let mut b = Tree::generate(&tmp.path().join("b"), spec(30)).unwrap();
        assert_eq!(a.files, b.files);
        assert_eq!(a.file_count(), 30 + REPODATA_FILES);
        a.small_change(1).unwrap();
        b.small_change(1).unwrap();
        assert_eq!(a.repomd().unwrap(), b.repomd().unwrap());
        for size in a.packages.values().map(|p| p.size) {
            assert!((KIB..=8 * KIB).contains(&size), "{size}");
        }
    }

    #[test]
    fn a_change_replaces_one_path_adds_one_and_leaves_the_clone_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let v1 = Tree::generate(&tmp.path().join("v1"), spec(30)).unwrap();
        let mut v2 = v1.link_clone(&tmp.path().join("v2")).unwrap();
        v2.small_change(1).unwrap();
        let d = Tree::diff(&v1, &v2);
        let packages = |v: &[String]| v.iter().filter(|p| p.starts_with("Packages/")).count();
        assert_eq!(packages(&d.changed), 2, "{d:?}");
        assert_eq!(packages(&d.removed), 1, "{d:?}");
        assert_eq!(
            d.changed.last().map(String::as_str),
            Some("repodata/repomd.xml")
        );
        // Nothing of version 1 was touched.
        for (rel, sum) in &v1.files {
            let bytes = std::fs::read(v1.dir.join(rel)).unwrap();
            assert_eq!(&sha256_hex(&bytes), sum, "{rel}");
        }
        for rel in &d.removed {
            assert!(!v2.dir.join(rel).exists(), "{rel}");
        }
    }
}
