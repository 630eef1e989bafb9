//! A client that reads a yum repo the way dnf does, checking every byte:
//! `repomd.xml`, then every file it references (against the checksums it
//! declares), then every package `primary` lists (against primary's
//! checksums). Plain HTTP/1.1 over `std::net` (one connection per request),
//! so many client threads cost no extra processes.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::sha256_hex;

/// `GET path` on `addr`: (status, body).
pub fn get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: hotpush-webcheck\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let bad = |what: &str| std::io::Error::other(format!("GET {path}: {what}"));
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| bad("no end of headers"))?;
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut body = raw[split + 4..].to_vec();
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| bad("no status"))?;
    let header = |name: &str| {
        head.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    };
    if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
        body = dechunk(&body).ok_or_else(|| bad("bad chunked body"))?;
    } else if let Some(len) = header("content-length").and_then(|v| v.parse::<usize>().ok())
        && body.len() != len
    {
        return Err(bad(&format!(
            "body of {} bytes, Content-Length {len}",
            body.len()
        )));
    }
    Ok((status, body))
}

fn dechunk(mut data: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let eol = data.windows(2).position(|w| w == b"\r\n")?;
        let size_text = std::str::from_utf8(&data[..eol]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        data = &data[eol + 2..];
        if size == 0 {
            return Some(out);
        }
        out.extend_from_slice(data.get(..size)?);
        data = data.get(size + 2..)?;
    }
}

/// `(location href, sha256)` of every `<data>` in repomd.xml.
pub fn repomd_entries(xml: &str) -> Vec<(String, String)> {
    xml.split("<data type=\"")
        .skip(1)
        .filter_map(|part| {
            let sum = part
                .split_once("<checksum type=\"sha256\">")?
                .1
                .split_once("</checksum>")?
                .0;
            let href = part.split_once("<location href=\"")?.1.split_once('"')?.0;
            Some((href.to_owned(), sum.trim().to_owned()))
        })
        .collect()
}

/// `(location href, sha256)` of every package in primary.xml.
pub fn primary_packages(xml: &str) -> Vec<(String, String)> {
    xml.split("<package ")
        .skip(1)
        .filter_map(|part| {
            let sum = part
                .split_once("<checksum type=\"sha256\"")?
                .1
                .split_once('>')?
                .1
                .split_once("</checksum>")?
                .0;
            let href = part.split_once("<location href=\"")?.1.split_once('"')?.0;
            Some((href.to_owned(), sum.trim().to_owned()))
        })
        .collect()
}

/// Decompresses gzip (`gzip -dc`); `data` is returned as is when it is not gzip.
pub fn gunzip(data: &[u8]) -> Vec<u8> {
    if !data.starts_with(&[0x1f, 0x8b]) {
        return data.to_vec();
    }
    let mut child = Command::new("gzip")
        .arg("-dc")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawning gzip -dc");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = data.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().expect("gzip -dc");
    let _ = writer.join();
    out.stdout
}

/// What one or more walks saw.
#[derive(Clone, Debug, Default)]
pub struct WalkStats {
    pub walks: u64,
    pub requests: u64,
    pub not_found: u64,
    pub mismatches: u64,
    /// Other HTTP statuses and connection errors.
    pub errors: u64,
    /// Walks whose repomd.xml was no longer the served one at the end.
    pub straddled: u64,
    /// Distinct repomd.xml versions seen.
    pub repomds_seen: u64,
    /// The first few problems, for the failure message.
    pub problems: Vec<String>,
}

impl WalkStats {
    pub fn add(&mut self, o: &WalkStats) {
        self.walks += o.walks;
        self.requests += o.requests;
        self.not_found += o.not_found;
        self.mismatches += o.mismatches;
        self.errors += o.errors;
        self.straddled += o.straddled;
        self.repomds_seen += o.repomds_seen;
        for p in &o.problems {
            if self.problems.len() < 20 {
                self.problems.push(p.clone());
            }
        }
    }

    fn problem(&mut self, p: String) {
        if self.problems.len() < 20 {
            self.problems.push(p);
        }
    }
}

/// A dnf-like reader of one repo at `http://addr/base/` (`base` without
/// slashes at either end), caching decompressed primaries by checksum.
#[derive(Debug)]
pub struct RepoWalker {
    pub addr: SocketAddr,
    pub base: String,
    primaries: HashMap<String, Vec<(String, String)>>,
    seen: std::collections::HashSet<String>,
    pub stats: WalkStats,
}

impl RepoWalker {
    pub fn new(addr: SocketAddr, base: &str) -> Self {
        Self {
            addr,
            base: base.trim_matches('/').to_owned(),
            primaries: HashMap::new(),
            seen: Default::default(),
            stats: WalkStats::default(),
        }
    }

    /// Fetches `rel` and checks it against `sha256`; `Some(body)` when it matches.
    fn fetch_checked(&mut self, rel: &str, sha256: Option<&str>) -> Option<Vec<u8>> {
        let path = format!("/{}/{rel}", self.base);
        self.stats.requests += 1;
        match get(self.addr, &path) {
            Ok((200, body)) => {
                if let Some(want) = sha256
                    && sha256_hex(&body) != want
                {
                    self.stats.mismatches += 1;
                    let got = sha256_hex(&body);
                    self.stats.problem(format!(
                        "{}{path}: sha256 {got}, expected {want}",
                        self.addr
                    ));
                    return None;
                }
                Some(body)
            }
            Ok((404, _)) => {
                self.stats.not_found += 1;
                self.stats.problem(format!("{}{path}: 404", self.addr));
                None
            }
            Ok((code, _)) => {
                self.stats.errors += 1;
                self.stats
                    .problem(format!("{}{path}: HTTP {code}", self.addr));
                None
            }
            Err(e) => {
                self.stats.errors += 1;
                self.stats.problem(format!("{}{path}: {e}", self.addr));
                None
            }
        }
    }

    /// One full walk from the served repomd.xml.
    pub fn walk(&mut self) {
        let Some(repomd) = self.fetch_checked("repodata/repomd.xml", None) else {
            self.stats.walks += 1;
            return;
        };
        self.walk_from(&repomd);
        // Did a swap happen while we walked?
        if let Ok((200, now)) = get(self.addr, &format!("/{}/repodata/repomd.xml", self.base))
            && now != repomd
        {
            self.stats.straddled += 1;
        }
    }

    /// One walk from a given repomd.xml (e.g. one a client fetched earlier).
    pub fn walk_from(&mut self, repomd: &[u8]) {
        self.stats.walks += 1;
        if self.seen.insert(sha256_hex(repomd)) {
            self.stats.repomds_seen += 1;
        }
        let xml = String::from_utf8_lossy(repomd).into_owned();
        let entries = repomd_entries(&xml);
        if entries.is_empty() {
            self.stats.errors += 1;
            self.stats
                .problem(format!("repomd.xml lists no data: {xml}"));
            return;
        }
        let mut packages = None;
        for (href, sum) in &entries {
            let is_primary = href.ends_with("primary.xml.gz") || href.ends_with("primary.xml");
            if is_primary && let Some(cached) = self.primaries.get(sum) {
                packages = Some(cached.clone());
                // Still fetch it: a client without a cache would.
            }
            let Some(body) = self.fetch_checked(href, Some(sum)) else {
                continue;
            };
            if is_primary && packages.is_none() {
                let list = primary_packages(&String::from_utf8_lossy(&gunzip(&body)));
                self.primaries.insert(sum.clone(), list.clone());
                packages = Some(list);
            }
        }
        for (href, sum) in packages.unwrap_or_default() {
            self.fetch_checked(&href, Some(&sum));
        }
    }
}
