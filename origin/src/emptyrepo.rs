//! `hotpush-origin repo init`: a valid yum repo with no packages, which is
//! what the emergency repo holds between emergencies.

use std::fs;
use std::io::Write;
use std::path::Path;

use flate2::Compression;
use flate2::write::GzEncoder;
use sha2::{Digest, Sha256};

/// The one metadata file dnf needs. No filelists/other/sqlite: dnf fetches
/// every type repomd.xml lists, and each costs every client bytes on every
/// metadata refresh of a repo that is empty almost all year.
const PRIMARY: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<metadata xmlns="http://linux.duke.edu/metadata/common" packages="0"/>
"#;

/// Writes an empty repo into `dir` (which must not already hold repodata).
/// A later `createrepo_c --update` on the directory works as usual.
pub fn write_empty_repo(dir: &Path, timestamp: u64) -> anyhow::Result<()> {
    let repodata = dir.join("repodata");
    if repodata.exists() {
        anyhow::bail!(
            "{} already exists; refusing to overwrite a repo",
            repodata.display()
        );
    }
    fs::create_dir_all(&repodata)?;
    let mut gz = GzEncoder::new(Vec::new(), Compression::best());
    gz.write_all(PRIMARY.as_bytes())?;
    let compressed = gz.finish()?;
    let sum = hex::encode(Sha256::digest(&compressed));
    let name = format!("{sum}-primary.xml.gz");
    fs::write(repodata.join(&name), &compressed)?;
    // Hex digests, numbers and a fixed name: nothing here needs escaping.
    let repomd = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<repomd xmlns=\"http://linux.duke.edu/metadata/repo\"><revision>{timestamp}</revision>\
         <data type=\"primary\"><checksum type=\"sha256\">{sum}</checksum><location href=\"repodata/{name}\"/>\
         <timestamp>{timestamp}</timestamp><size>{}</size></data></repomd>\n",
        compressed.len()
    );
    fs::write(repodata.join("repomd.xml"), repomd)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hotpush_shared::Limits;
    use hotpush_shared::repo::{NoCache, validate_repo};

    #[test]
    fn empty_repo_validates() {
        let dir = tempfile::tempdir().unwrap();
        write_empty_repo(dir.path(), 1_790_000_000).unwrap();
        let v = validate_repo(dir.path(), &Limits::default(), &mut NoCache, None).unwrap();
        assert_eq!(v.files.len(), 2);
        let bytes: u64 = v.files.iter().map(|f| f.size).sum();
        assert!(bytes < 600, "empty repo is {bytes} bytes");
        assert_eq!(v.repomd.max_timestamp(), Some(1_790_000_000));
        assert!(write_empty_repo(dir.path(), 1).is_err());
    }
}
