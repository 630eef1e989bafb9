//! `hotpush-origin repo init`: a valid yum repo with no packages, which is
//! what the emergency repo holds between emergencies.

use std::fs;
use std::io::Write;
use std::path::Path;

use flate2::Compression;
use flate2::write::GzEncoder;
use sha2::{Digest, Sha256};

const PRIMARY: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<metadata xmlns="http://linux.duke.edu/metadata/common" xmlns:rpm="http://linux.duke.edu/metadata/rpm" packages="0"/>
"#;
const FILELISTS: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<filelists xmlns="http://linux.duke.edu/metadata/filelists" packages="0"/>
"#;
const OTHER: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<otherdata xmlns="http://linux.duke.edu/metadata/other" packages="0"/>
"#;

/// Writes an empty repo into `dir` (which must not already hold repodata).
pub fn write_empty_repo(dir: &Path, timestamp: u64) -> anyhow::Result<()> {
    let repodata = dir.join("repodata");
    if repodata.exists() {
        anyhow::bail!(
            "{} already exists; refusing to overwrite a repo",
            repodata.display()
        );
    }
    fs::create_dir_all(&repodata)?;
    let mut data = String::new();
    for (kind, xml) in [
        ("primary", PRIMARY),
        ("filelists", FILELISTS),
        ("other", OTHER),
    ] {
        let mut gz = GzEncoder::new(Vec::new(), Compression::best());
        gz.write_all(xml.as_bytes())?;
        let compressed = gz.finish()?;
        let sum = hex::encode(Sha256::digest(&compressed));
        let open = hex::encode(Sha256::digest(xml.as_bytes()));
        let name = format!("{sum}-{kind}.xml.gz");
        fs::write(repodata.join(&name), &compressed)?;
        data.push_str(&format!(
            "<data type=\"{kind}\"><checksum type=\"sha256\">{sum}</checksum><open-checksum type=\"sha256\">{open}</open-checksum><location href=\"repodata/{name}\"/><timestamp>{timestamp}</timestamp><size>{}</size><open-size>{}</open-size></data>\n",
            compressed.len(),
            xml.len()
        ));
    }
    let repomd = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<repomd xmlns=\"http://linux.duke.edu/metadata/repo\" xmlns:rpm=\"http://linux.duke.edu/metadata/rpm\">\n<revision>{timestamp}</revision>\n{data}</repomd>\n"
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
        let v = validate_repo(dir.path(), &Limits::default(), &mut NoCache).unwrap();
        assert_eq!(v.files.len(), 4);
        assert_eq!(v.repomd.max_timestamp(), Some(1_790_000_000));
        assert!(write_empty_repo(dir.path(), 1).is_err());
    }
}
