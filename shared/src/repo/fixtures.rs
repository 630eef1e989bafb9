//! Test fixtures: repos in createrepo_c's layout, built in a temp dir.

#![allow(clippy::unwrap_used)] // test code: a panic is the failure report

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::Digest as _;

use super::{NoCache, REPOMD_PATH, RepoError, ValidatedRepo, validate_repo};
use crate::digest::Sha256Digest;
use crate::limits::Limits;

#[derive(Clone, Copy, Debug)]
pub(crate) enum Comp {
    Gz,
    Zst,
    Xz,
    Plain,
    /// Stored as-is under a .zck name: we must refuse, not guess.
    Zck,
}

impl Comp {
    pub(crate) fn ext(self) -> &'static str {
        match self {
            Comp::Gz => ".gz",
            Comp::Zst => ".zst",
            Comp::Xz => ".xz",
            Comp::Plain => "",
            Comp::Zck => ".zck",
        }
    }
    pub(crate) fn compress(self, data: &[u8]) -> Vec<u8> {
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

pub(crate) fn hex_of(kind: &str, data: &[u8]) -> String {
    match kind {
        "md5" => hex::encode(&md5::Md5::digest(data)[..]),
        "sha" | "sha1" => hex::encode(&sha1::Sha1::digest(data)[..]),
        "sha512" => hex::encode(&sha2::Sha512::digest(data)[..]),
        _ => Sha256Digest::of(data).to_hex(),
    }
}

/// A package as createrepo_c writes it, `<format>` and all.
pub(crate) fn package_xml(name: &str, href: &str, kind: &str, hex: &str, size: u64) -> String {
    format!(
        r#"<package type="rpm">
  <name>{name}</name>
  <arch>noarch</arch>
  <version epoch="0" ver="1" rel="1"/>
  <checksum type="{kind}" pkgid="YES">{hex}</checksum>
  <summary>Say &lt;hello&gt; &amp; more</summary>
  <description>A &lt;test&gt; package</description>
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

pub(crate) fn primary_xml(packages: &[String]) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<metadata xmlns=\"http://linux.duke.edu/metadata/common\" xmlns:rpm=\"http://linux.duke.edu/metadata/rpm\" packages=\"{}\">\n{}</metadata>\n",
        packages.len(),
        packages.concat()
    )
}

pub(crate) struct DataSpec {
    pub(crate) kind: &'static str,
    pub(crate) href: String,
    pub(crate) checksum_type: &'static str,
    pub(crate) checksum: String,
    pub(crate) size: u64,
    pub(crate) timestamp: u64,
}

/// repomd.xml in createrepo_c's layout.
pub(crate) fn repomd_xml(data: &[DataSpec]) -> String {
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

pub(crate) fn write(root: &Path, rel: &str, bytes: &[u8]) {
    let p = root.join(rel);
    fs::create_dir_all(p.parent().unwrap()).unwrap();
    fs::write(p, bytes).unwrap();
}

pub(crate) const HELLO: &str = "Packages/h/hello-1-1.noarch.rpm";
pub(crate) const WORLD: &str = "Packages/w/world-2-1.noarch.rpm";

/// A repo at `<tmp>/repo` (so `../x` stays inside the temp dir). Each
/// package: (href, content, checksum type).
pub(crate) struct TestRepo {
    pub(crate) tmp: tempfile::TempDir,
    pub(crate) primary_href: String,
    pub(crate) filelists_href: String,
}

impl TestRepo {
    pub(crate) fn root(&self) -> PathBuf {
        self.tmp.path().join("repo")
    }
    pub(crate) fn validate(&self) -> Result<ValidatedRepo, RepoError> {
        validate_repo(&self.root(), &Limits::default(), &mut NoCache, None)
    }
}

pub(crate) fn build_with(comp: Comp, packages: &[(&str, &[u8], &'static str)]) -> TestRepo {
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

pub(crate) fn build(comp: Comp) -> TestRepo {
    build_with(
        comp,
        &[
            (HELLO, b"hello rpm bytes", "sha256"),
            (WORLD, b"world rpm bytes!", "sha256"),
        ],
    )
}
