//! `hotpush-origin drill`: the rehearsal. After a publish, fetch the
//! metalink and then, from every mirror it lists, what dnf would: repomd.xml
//! (checked against the metalink's hashes), every metadata file it names and
//! every package primary lists (checked against the repodata's checksums).

use std::time::Duration;

use hotpush_shared::Limits;
use hotpush_shared::metalink::{FileDescription, parse_metalink};
use hotpush_shared::repo::{parse_primary, parse_repomd};

/// What one mirror served.
#[derive(Debug)]
pub struct MirrorReport {
    pub url: String,
    pub result: Result<Served, String>,
}

/// Counts of what was fetched and verified from one mirror.
#[derive(Debug, Default)]
pub struct Served {
    pub metadata_files: usize,
    pub packages: usize,
    pub bytes: u64,
}

/// An HTTP client like dnf's: short timeouts, `no-cache` for metadata.
pub fn client() -> reqwest::Result<reqwest::Client> {
    hotpush_shared::fetch::client(
        concat!("hotpush-drill/", env!("CARGO_PKG_VERSION")),
        Duration::from_secs(60),
    )
}

async fn get(http: &reqwest::Client, url: &str) -> Result<Vec<u8>, String> {
    // No package is larger than a blob may be.
    hotpush_shared::fetch::get(http, url, hotpush_shared::Limits::default().max_blob_bytes).await
}

/// Fetches the metalink and checks every mirror in it; returns the
/// metalink's description of repomd.xml and one report per mirror.
pub async fn check(
    http: &reqwest::Client,
    metalink_url: &str,
    limits: &Limits,
) -> anyhow::Result<(FileDescription, Vec<MirrorReport>)> {
    let body = get(http, metalink_url).await.map_err(anyhow::Error::msg)?;
    let metalink = parse_metalink(&String::from_utf8_lossy(&body))?;
    let mut reports = Vec::new();
    for url in &metalink.urls {
        let result = check_mirror(http, url, &metalink.file, limits).await;
        reports.push(MirrorReport {
            url: url.clone(),
            result,
        });
    }
    Ok((metalink.file, reports))
}

async fn check_mirror(
    http: &reqwest::Client,
    repomd_url: &str,
    expected: &FileDescription,
    limits: &Limits,
) -> Result<Served, String> {
    let base = repomd_url
        .strip_suffix("repodata/repomd.xml")
        .ok_or_else(|| format!("{repomd_url} does not end in repodata/repomd.xml"))?;
    let repomd = get(http, repomd_url).await?;
    let got = FileDescription::of_repomd(&repomd, expected.timestamp);
    if got.sha256 != expected.sha256 || got.sha512 != expected.sha512 {
        return Err(format!(
            "repomd.xml has sha256 {}, the metalink says {} (stale mirror)",
            got.sha256, expected.sha256
        ));
    }
    let mut served = Served {
        bytes: repomd.len() as u64,
        ..Served::default()
    };
    let parsed = parse_repomd(&repomd).map_err(|e| e.to_string())?;
    let mut packages = Vec::new();
    for data in &parsed.data {
        let body = get(http, &format!("{base}{}", data.href)).await?;
        if !data.checksum.matches(&body) {
            return Err(format!("{}: {} mismatch", data.href, data.checksum.kind));
        }
        if data.kind == "primary" {
            packages = parse_primary(&data.href, &body[..], limits).map_err(|e| e.to_string())?;
        }
        served.metadata_files += 1;
        served.bytes += body.len() as u64;
    }
    for p in &packages {
        let body = get(http, &format!("{base}{}", p.href)).await?;
        if !p.checksum.matches(&body) {
            return Err(format!("{}: {} mismatch", p.href, p.checksum.kind));
        }
        served.packages += 1;
        served.bytes += body.len() as u64;
    }
    Ok(served)
}
