//! URLs that several parts of hotpush must build the same way: where a
//! mirror serves its tree ([`PublicUrl`]) and a repo's metalink query
//! ([`MetalinkQuery`]).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::manifest::{ManifestError, RepoName};

/// Why a URL was refused.
#[derive(Debug, thiserror::Error)]
pub enum UrlError {
    #[error("{url:?} is not a URL: {source}")]
    Parse {
        url: String,
        source: url::ParseError,
    },
    #[error("{0:?} must be an http:// or https:// URL")]
    Scheme(String),
    #[error("{0:?} must not carry a query or fragment: it is a base URL")]
    QueryOrFragment(String),
    #[error("no repo= parameter")]
    NoRepo,
    #[error(transparent)]
    Repo(#[from] ManifestError),
}

/// The base URL under which clients reach a mirror's served tree, e.g.
/// `https://mirror.example.org/hotpush/`. Always ends in `/`.
#[derive(Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PublicUrl(String);

impl PublicUrl {
    /// Checks `url`: http or https, a host, no query or fragment.
    pub fn parse(url: &str) -> Result<Self, UrlError> {
        let parsed = url::Url::parse(url).map_err(|source| UrlError::Parse {
            url: url.to_owned(),
            source,
        })?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
            return Err(UrlError::Scheme(url.to_owned()));
        }
        if parsed.query().is_some() || parsed.fragment().is_some() {
            return Err(UrlError::QueryOrFragment(url.to_owned()));
        }
        let mut base = parsed.to_string();
        if !base.ends_with('/') {
            base.push('/');
        }
        Ok(Self(base))
    }

    /// `http://<addr>/` for a listener of this host; an unspecified address
    /// (`[::]`, `0.0.0.0`) becomes loopback, which this host can connect to.
    pub fn of_listener(addr: SocketAddr) -> Self {
        let ip = match addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        Self(format!("http://{}/", SocketAddr::new(ip, addr.port())))
    }

    /// The URL as a string (ends in `/`).
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Base URL of `repo` on this mirror: `<base><repo>/`.
    pub fn repo_base(&self, repo: &RepoName) -> String {
        format!("{}{repo}/", self.0)
    }

    /// What clients fetch first: `<base><repo>/repodata/repomd.xml`.
    pub fn repomd(&self, repo: &RepoName) -> String {
        format!("{}{repo}/{}", self.0, crate::manifest::REPOMD_PATH)
    }
}

impl fmt::Display for PublicUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for PublicUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl TryFrom<String> for PublicUrl {
    type Error = UrlError;
    fn try_from(s: String) -> Result<Self, UrlError> {
        Self::parse(&s)
    }
}

impl From<PublicUrl> for String {
    fn from(u: PublicUrl) -> String {
        u.0
    }
}

/// A repo's metalink query in MirrorManager's form, `repo=<name>&arch=<arch>`:
/// `f41-critical/x86_64` is `repo=f41-critical&arch=x86_64`; a name without
/// a `/` has no `arch`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MetalinkQuery {
    repo: RepoName,
}

impl MetalinkQuery {
    /// The query for `repo`.
    pub fn new(repo: RepoName) -> Self {
        Self { repo }
    }

    /// The repo a request names: `<repo>/<arch>`, or `<repo>` without an
    /// arch. Other parameters (dnf's `countme`) are the caller's to ignore.
    pub fn from_params(repo: Option<&str>, arch: Option<&str>) -> Result<Self, UrlError> {
        let repo = repo.ok_or(UrlError::NoRepo)?;
        let name = match arch {
            Some(arch) if !arch.is_empty() => format!("{repo}/{arch}"),
            _ => repo.to_owned(),
        };
        Ok(Self::new(RepoName::new(&name)?))
    }

    /// The repo this query names.
    pub fn repo(&self) -> &RepoName {
        &self.repo
    }

    /// `repo=…&arch=…`, percent-encoded (`+` in a name must not read as a space).
    pub fn query_string(&self) -> String {
        let name = self.repo.as_str();
        let mut q = form_urlencoded::Serializer::new(String::new());
        match name.rsplit_once('/') {
            Some((repo, arch)) => q.append_pair("repo", repo).append_pair("arch", arch),
            None => q.append_pair("repo", name),
        };
        q.finish()
    }

    /// The metalink URL on an origin reached at `origin_base`
    /// (`https://origin.example.org` or with a trailing `/`).
    pub fn url(&self, origin_base: &str) -> String {
        format!(
            "{}/metalink?{}",
            origin_base.trim_end_matches('/'),
            self.query_string()
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn public_urls_are_checked_and_joined_one_way() {
        let repo = RepoName::new("f41-critical/x86_64").unwrap();
        for (given, base) in [
            ("https://m.example/hotpush", "https://m.example/hotpush/"),
            ("https://m.example/hotpush/", "https://m.example/hotpush/"),
            ("http://[::1]:8080", "http://[::1]:8080/"),
        ] {
            let u = PublicUrl::parse(given).unwrap();
            assert_eq!(u.as_str(), base);
            assert_eq!(
                u.repomd(&repo),
                format!("{base}f41-critical/x86_64/repodata/repomd.xml")
            );
            assert_eq!(u.repo_base(&repo), format!("{base}f41-critical/x86_64/"));
        }
        for bad in [
            "ftp://m.example/",
            "m.example/x",
            "https://m.example/?a=1",
            "http://",
        ] {
            assert!(PublicUrl::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(
            PublicUrl::of_listener("[::]:8080".parse().unwrap()).as_str(),
            "http://[::1]:8080/"
        );
        let json = serde_json::to_string(&PublicUrl::parse("https://m.example").unwrap()).unwrap();
        assert_eq!(json, "\"https://m.example/\"");
    }

    #[test]
    fn metalink_queries_round_trip() {
        for name in ["f41-critical/x86_64", "plain", "c++/x86_64", "a/b/c"] {
            let q = MetalinkQuery::new(RepoName::new(name).unwrap());
            let parsed: Vec<(String, String)> = form_urlencoded::parse(q.query_string().as_bytes())
                .into_owned()
                .collect();
            let get = |k: &str| parsed.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
            let back = MetalinkQuery::from_params(get("repo"), get("arch")).unwrap();
            assert_eq!(back.repo().as_str(), name);
        }
        let q = MetalinkQuery::new(RepoName::new("f41-critical/x86_64").unwrap());
        assert_eq!(
            q.url("http://o.example:8000/"),
            "http://o.example:8000/metalink?repo=f41-critical&arch=x86_64"
        );
        assert!(MetalinkQuery::from_params(None, Some("x86_64")).is_err());
        assert!(MetalinkQuery::from_params(Some("../x"), None).is_err());
    }
}
