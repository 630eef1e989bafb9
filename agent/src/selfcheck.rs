//! "An ack means verified and live": after the swap the agent fetches
//! `repomd.xml` through its public URL, as a client would (through the
//! partner's front end and any cache in it), and reports whether that
//! serves the new snapshot. The origin lists only mirrors that do.

use std::time::Duration;

use hotpush_shared::Sha256Digest;
use hotpush_shared::ack::PublicCheck;

/// The largest repomd.xml we read back.
const MAX_REPOMD_BYTES: usize = 1 << 20;
/// Attempts before reporting failure: a front end may need a moment to
/// notice the swapped symlink.
const ATTEMPTS: usize = 3;

/// An HTTP client for the check: short timeouts, no redirects to elsewhere.
pub fn client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .connect_timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::limited(3))
        .user_agent(concat!(
            "hotpush-agent/",
            env!("CARGO_PKG_VERSION"),
            " (self-check)"
        ))
        .build()
}

async fn fetch(client: &reqwest::Client, url: &str) -> Result<Vec<u8>, String> {
    // librepo asks for repomd.xml with no-cache too: this is what dnf would get.
    let mut response = client
        .get(url)
        .header("Cache-Control", "no-cache")
        .header("Pragma", "no-cache")
        .send()
        .await
        .map_err(|e| format!("GET failed: {e}"))?;
    if !response.status().is_success() {
        return Err(format!("HTTP {}", response.status()));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| format!("reading body: {e}"))?
    {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_REPOMD_BYTES {
            return Err(format!("body over {MAX_REPOMD_BYTES} bytes"));
        }
    }
    Ok(body)
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
