//! Bounded HTTP GETs the way dnf makes them (`Cache-Control: no-cache` for
//! metadata), for everything that looks at a mirror from outside: the
//! agent's self-check, the origin's crawler and `drill`.

use std::time::Duration;

/// A client with a total and a connect timeout, no more than 3 redirects.
pub fn client(user_agent: &str, timeout: Duration) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .redirect(reqwest::redirect::Policy::limited(3))
        .user_agent(user_agent)
        .build()
}

/// `GET url`, at most `max_bytes` of body; the error is plain words with
/// the URL.
pub async fn get(client: &reqwest::Client, url: &str, max_bytes: u64) -> Result<Vec<u8>, String> {
    let mut response = client
        .get(url)
        .header("Cache-Control", "no-cache")
        .header("Pragma", "no-cache")
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("{url}: HTTP {status}"));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| format!("{url}: reading the body: {e}"))?
    {
        body.extend_from_slice(&chunk);
        if body.len() as u64 > max_bytes {
            return Err(format!("{url}: body over {max_bytes} bytes"));
        }
    }
    Ok(body)
}
