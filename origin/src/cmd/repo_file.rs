//! `hotpush-origin repo-file`: the `.repo` stanza for the distribution's
//! `-repos` package.

use std::path::Path;
use std::process::ExitCode;

use hotpush_shared::manifest::RepoName;
use hotpush_shared::url::MetalinkQuery;

/// Print the dnf .repo stanza for REPO, for the distribution's -repos package.
#[derive(clap::Args)]
#[command(
    after_help = "Example:\n  hotpush-origin repo-file f41-critical/x86_64 --origin-url https://origin.example.org/"
)]
pub struct Args {
    /// Repo name, e.g. f41-critical/x86_64.
    repo: RepoName,
    /// Base URL of this origin as clients reach it (default: public_url from the config).
    #[arg(long)]
    origin_url: Option<String>,
    /// gpgkey= value.
    #[arg(
        long,
        default_value = "file:///etc/pki/rpm-gpg/RPM-GPG-KEY-fedora-$releasever-$basearch"
    )]
    gpgkey: String,
}

pub fn run(config_path: &Path, args: Args) -> anyhow::Result<ExitCode> {
    let base = match args.origin_url {
        Some(url) => url,
        None => super::load(config_path)?.public_url.ok_or_else(|| {
            anyhow::anyhow!(
                "no origin URL: pass --origin-url or set public_url in {}",
                config_path.display()
            )
        })?,
    };
    print!("{}", repo_file(&args.repo, &base, &args.gpgkey));
    Ok(ExitCode::SUCCESS)
}

/// The `.repo` stanza, with comments that say why each value is what it is.
fn repo_file(repo: &RepoName, origin_url: &str, gpgkey: &str) -> String {
    let name = repo
        .as_str()
        .rsplit_once('/')
        .map_or(repo.as_str(), |(n, _)| n);
    let id = format!("hotpush-{}", name.replace('/', "-"));
    let metalink = MetalinkQuery::new(repo.clone()).url(origin_url);
    format!(
        r#"# Urgent security fixes, pushed by hotpush ({repo}).
# Usually empty: it carries packages only during an emergency, and an empty
# repo costs each client about one kilobyte per refresh.
[{id}]
name=Urgent security fixes ({name})
# The metalink lists only mirrors that already serve the newest snapshot.
metalink={metalink}
enabled=1
type=rpm
# Packages are signed with the distribution's key, as in every other repo.
gpgcheck=1
gpgkey={gpgkey}
# Optional: hotpush swaps repomd.xml and repomd.xml.asc together on every mirror.
repo_gpgcheck=0
# Short, so a fix arrives within the hour: a refresh that finds nothing new
# costs one metalink GET (dnf "revives" its cache when the hashes match).
metadata_expire=1h
# An outage of this side repo must never block ordinary dnf use.
skip_if_unavailable=True
"#
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn repo_file_stanza() {
        let repo = RepoName::new("f41-critical/x86_64").unwrap();
        let text = repo_file(&repo, "https://origin.example.org/", "file:///k");
        assert!(text.contains("[hotpush-f41-critical]\n"), "{text}");
        assert!(text.contains(
            "metalink=https://origin.example.org/metalink?repo=f41-critical&arch=x86_64\n"
        ));
        for line in [
            "gpgcheck=1",
            "metadata_expire=1h",
            "skip_if_unavailable=True",
            "gpgkey=file:///k",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}");
        }
        assert!(RepoName::new("bad name").is_err());
    }
}
