//! "An ack means verified and live": after the swap the agent fetches
//! `repomd.xml` through its public URL, as a client would (through the
//! partner's front end and any cache in it), and reports whether that
//! serves the new snapshot. The origin lists only mirrors that do.

use std::time::Duration;

use hotpush_shared::Sha256Digest;
use hotpush_shared::ack::PublicCheck;

/// The largest repomd.xml we read back.
const MAX_REPOMD_BYTES: u64 = 1 << 20;
/// Attempts before reporting failure: a front end may need a moment to
/// notice the swapped symlink.
const ATTEMPTS: usize = 3;

/// An HTTP client for the check: short timeouts, few redirects.
pub fn client() -> reqwest::Result<reqwest::Client> {
    hotpush_shared::fetch::client(
        concat!("hotpush-agent/", env!("CARGO_PKG_VERSION"), " (self-check)"),
        Duration::from_secs(10),
    )
}

// librepo asks for repomd.xml with no-cache too: this is what dnf would get.
async fn fetch(client: &reqwest::Client, url: &str) -> Result<Vec<u8>, String> {
    hotpush_shared::fetch::get(client, url, MAX_REPOMD_BYTES).await
}

/// Fetches `url` and compares its sha256 with `expected`.
pub async fn check(
    client: &reqwest::Client,
    url: Option<String>,
    expected: Sha256Digest,
) -> PublicCheck {
    let Some(url) = url else {
        return PublicCheck {
            detail:
                "no public_url configured and no built-in HTTP server: clients cannot be checked"
                    .into(),
            ..Default::default()
        };
    };
    let mut detail = String::new();
    for attempt in 0..ATTEMPTS {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        match fetch(client, &url).await {
            Ok(body) => {
                let got = Sha256Digest::of(&body);
                if got == expected {
                    return PublicCheck {
                        url,
                        verified: true,
                        detail: String::new(),
                    };
                }
                detail = format!("serves repomd.xml with sha256 {got}, expected {expected}");
            }
            Err(e) => detail = e,
        }
    }
    tracing::warn!(%url, %detail, "public URL does not serve the new snapshot");
    PublicCheck {
        url,
        verified: false,
        detail,
    }
}
