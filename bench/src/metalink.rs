//! The metalink under load: `wrk` against the origin's `/metalink` and
//! against nginx serving a file that holds the exact bytes of one of its
//! responses at the same URL, so the difference is what the origin does
//! per request (database reads, rendering) over a static file server.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use hotpush_tests::nginx::Nginx;

use crate::process::output;

/// wrk's load: two threads (one per core here) and 32 connections, the
/// latency distribution on.
pub const THREADS: u32 = 2;
pub const CONNECTIONS: u32 = 32;

/// wrk's per-request timeout: far above any latency worth reporting, so a
/// slow server shows as latency, not as requests wrk gave up on.
pub const TIMEOUT_SECS: u32 = 30;

/// What one wrk run measured.
#[derive(Clone, Copy, Debug)]
pub struct Load {
    pub requests_per_sec: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
    /// Socket errors (connect, read, write, timeout) and non-2xx/3xx answers.
    pub errors: u64,
}

/// `wrk -t2 -c32 -d<secs>s --timeout 30s --latency <url>`.
pub fn wrk(url: &str, secs: u32) -> Result<Load> {
    let text = output(
        Command::new("wrk")
            .arg(format!("-t{THREADS}"))
            .arg(format!("-c{CONNECTIONS}"))
            .arg(format!("-d{secs}s"))
            .arg(format!("--timeout={TIMEOUT_SECS}s"))
            .arg("--latency")
            .arg(url),
    )
    .context("running wrk (is it installed?)")?;
    parse_wrk(&text).with_context(|| format!("wrk against {url} printed:\n{text}"))
}

fn parse_wrk(text: &str) -> Result<Load> {
    // `Socket errors: connect 0, read 0, write 0, timeout 3` and
    // `Non-2xx or 3xx responses: 5`: every number counts.
    let errors = text
        .lines()
        .filter_map(|l| {
            l.split_once("Socket errors:")
                .or_else(|| l.split_once("Non-2xx or 3xx responses:"))
        })
        .flat_map(|(_, rest)| {
            rest.split(|c: char| !c.is_ascii_digit())
                .filter_map(|n| n.parse::<u64>().ok())
        })
        .sum();
    let rps = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .context("no Requests/sec line")?;
    let p99 = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("99%"))
        .map(str::trim)
        .context("no 99% latency line (--latency)")?;
    Ok(Load {
        requests_per_sec: rps,
        p99_ms: parse_duration_ms(p99).with_context(|| format!("latency {p99:?}"))?,
        errors,
    })
}

/// wrk's `812.00us`, `1.23ms`, `2.01s`, `1.05m` → milliseconds.
fn parse_duration_ms(s: &str) -> Result<f64> {
    let split = s
        .find(|c: char| c.is_ascii_alphabetic())
        .context("no unit")?;
    let (num, unit) = s.split_at(split);
    let v: f64 = num.parse().context("not a number")?;
    Ok(match unit {
        "us" => v / 1000.0,
        "ms" => v,
        "s" => v * 1000.0,
        "m" => v * 60_000.0,
        other => bail!("unknown unit {other:?}"),
    })
}

/// One plain HTTP/1.1 GET of `path` (path and query) over a new
/// connection: the status code and the body. Handles a chunked body.
pub fn get(addr: SocketAddr, path: &str) -> Result<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .with_context(|| format!("connecting to {addr}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: hotpush-bench\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .with_context(|| format!("reading from {addr}"))?;
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no end of headers")?;
    let head = String::from_utf8_lossy(&raw[..split]).to_ascii_lowercase();
    let body = raw[split + 4..].to_vec();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no status code")?;
    let body = if head.contains("transfer-encoding: chunked") {
        dechunk(&body)?
    } else {
        body
    };
    Ok((status, body))
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("bad chunk header")?;
        let size_text = String::from_utf8_lossy(&data[..eol]);
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .context("bad chunk size")?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = data.get(..size).context("short chunk")?;
        out.extend_from_slice(chunk);
        data = data.get(size + 2..).context("short chunk")?;
    }
}

/// nginx (one worker) serving `body` at `/metalink`, so the origin's URL
/// path and query work unchanged (nginx ignores the query for a file).
/// Its files live under `dir`. Returns it and the URL to load.
pub fn nginx_serving(body: &[u8], dir: &Path, metalink_path: &str) -> Result<(Nginx, String)> {
    let root = dir.join("root");
    std::fs::create_dir_all(&root).with_context(|| format!("mkdir {}", root.display()))?;
    let file = root.join("metalink");
    std::fs::write(&file, body).with_context(|| format!("writing {}", file.display()))?;
    let ip = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let addr = SocketAddr::new(ip, hotpush_tests::free_port(ip));
    let nginx = Nginx::start(addr, &root, dir);
    Ok((nginx, format!("http://{addr}{metalink_path}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wrk_output() {
        let text = "Running 1s test @ http://127.0.0.1:1/metalink\n  2 threads and 32 connections\n\
            \x20 Thread Stats   Avg      Stdev     Max   +/- Stdev\n    Latency   1.10ms  300.00us   9.00ms   90.00%\n\
            \x20 Latency Distribution\n     50%    1.00ms\n     75%    1.20ms\n     90%    1.50ms\n     99%  812.00us\n\
            \x20 12345 requests in 1.00s, 9.87MB read\nRequests/sec:  12345.67\nTransfer/sec:      9.87MB\n";
        let l = parse_wrk(text).unwrap();
        assert!((l.requests_per_sec - 12345.67).abs() < 1e-6);
        assert!((l.p99_ms - 0.812).abs() < 1e-9);
        assert_eq!(l.errors, 0);
        let bad = format!(
            "{text}  Socket errors: connect 0, read 1, write 0, timeout 2\n  Non-2xx or 3xx responses: 3\n"
        );
        assert_eq!(parse_wrk(&bad).unwrap().errors, 6);
        assert!((parse_duration_ms("2.01s").unwrap() - 2010.0).abs() < 1e-9);
    }

    #[test]
    fn dechunks() {
        assert_eq!(
            dechunk(b"3\r\nabc\r\n2;x\r\nde\r\n0\r\n\r\n").unwrap(),
            b"abcde"
        );
    }
}
