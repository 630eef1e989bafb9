//! End-to-end tests with real clients: Debian's `dnf` (4.14, librepo 1.14)
//! in an `--installroot`, and python3-librepo, against real origin and agent
//! processes over real TLS. Every test skips (with a SKIPPED line) when dnf
//! is missing or we are not root.
//!
//! Clients reach the network only through the origin's metalink, like
//! Fedora's dnf through MirrorManager; the assertions read the access logs of
//! the origin (`GET /metalink…`) and of every agent (`GET /<repo>/…`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use hotpush_tests::dnf::{self, Access, DnfRoot, LogMark, PyHttpServer};
use hotpush_tests::fixture;
use hotpush_tests::{AgentSpec, Metalink, Network, Publish, Signal, run, run_ok, sha256_hex};

const REPO: &str = "hello/x86_64";
const PKG: &str = "hello-fix";

/// Returns early (passing) with a SKIPPED line when dnf cannot run here.
macro_rules! require_dnf {
    ($name:literal) => {
        if let Err(why) = dnf::available() {
            eprintln!("SKIPPED {}: {why}", $name);
            return;
        }
    };
}

fn network(repos: &[&str], agents: Vec<AgentSpec>) -> Network {
    let mut b = Network::builder();
    for r in repos {
        b = b.repo(r);
    }
    for a in agents {
        b = b.agent(a);
    }
    b.start()
}

/// A repo at `dir` with `hello-fix-<v>` for every `v` in `versions`.
fn hello_repo(dir: &Path, versions: &[&str]) {
    for v in versions {
        fixture::build_rpm(dir, PKG, v, 0);
    }
    fixture::createrepo(dir);
}

/// A copy of `from` at `to` plus `hello-fix-<version>`, repodata updated
/// with `createrepo_c --update`.
fn add_version(from: &Path, to: &Path, version: &str) {
    fixture::copy_dir(from, to);
    fixture::build_rpm(to, PKG, version, 0);
    fixture::createrepo(to);
}

fn publish(net: &Network, repo: &str, src: &Path, wait: &str, live: &[&str]) -> Publish {
    let p = net.publish(repo, src, &["--json", "--wait", wait, "--timeout", "20"]);
    assert_eq!(p.code, 0, "publish failed: {p:#?}");
    for name in live {
        assert_eq!(p.agent(name)["state"], "live", "agent {name}: {p:#?}");
    }
    p
}

/// Polls the metalink of `repo` until it describes `src`'s repomd.xml and
/// lists exactly the agents `idx` (any order); returns it.
fn wait_metalink(net: &Network, repo: &str, src: &Path, idx: &[usize]) -> Metalink {
    let repomd = fixture::read(&src.join("repodata/repomd.xml"));
    let mut want: Vec<String> = idx
        .iter()
        .map(|&i| net.agents[i].repomd_url(repo))
        .collect();
    want.sort();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let last = match net.metalink(repo) {
            Ok(text) => {
                let m = Metalink::parse(&text);
                let mut urls = m.urls.clone();
                urls.sort();
                if urls == want && m.hashes.get("sha256") == Some(&sha256_hex(&repomd)) {
                    return m;
                }
                text
            }
            Err(e) => e.to_string(),
        };
        assert!(
            Instant::now() < deadline,
            "the metalink of {repo} never listed exactly {want:?} for {}; last answer:\n{last}",
            src.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Marks the current end of the origin's and every agent's log.
struct Marks {
    origin: LogMark,
    agents: Vec<LogMark>,
}

impl Marks {
    fn now(net: &Network) -> Self {
        Marks {
            origin: LogMark::at_end(&net.origin_log),
            agents: net.agents.iter().map(|a| LogMark::at_end(&a.log)).collect(),
        }
    }

    /// New `GET /metalink` lines of the origin.
    fn metalink_gets(&self) -> Vec<Access> {
        self.origin
            .access_since()
            .into_iter()
            .filter(|a| a.uri.starts_with("/metalink"))
            .collect()
    }

    /// What clients asked agent `i` (the origin's crawler left out).
    fn agent(&self, i: usize) -> Vec<Access> {
        self.agents[i].client_access_since()
    }
}

fn sum_bytes<'a>(lines: impl IntoIterator<Item = &'a Access>) -> u64 {
    lines
        .into_iter()
        .map(|a| {
            a.bytes
                .unwrap_or_else(|| panic!("access line without a byte count: {a:?}"))
        })
        .sum()
}

fn served_rpm(lines: &[Access], repo: &str, version: &str) -> bool {
    let path = format!("/{repo}/Packages/{PKG}-{version}-1.noarch.rpm");
    lines.iter().any(|a| a.uri == path && a.status == 200)
}

fn assert_installed(root: &DnfRoot, version: &str) {
    assert_eq!(
        root.rpm_q(PKG).as_deref(),
        Some(format!("{PKG}-{version}-1.noarch").as_str()),
        "rpm -q {PKG} in {}",
        root.root.display()
    );
    assert_eq!(
        root.read(&format!("/usr/share/{PKG}/VERSION")).as_deref(),
        Some(format!("{version}\n").as_str()),
        "the installed payload"
    );
}

/// A fresh installroot under the network's dir with repo `id` → `repo`'s
/// metalink.
fn dnf_root(net: &Network, name: &str, id: &str, repo: &str, extra: &[&str]) -> DnfRoot {
    let root = DnfRoot::new(&net.root.join(name));
    root.add_repo(id, &net.metalink_url(repo), extra);
    root
}

#[test]
fn dnf_installs_a_package_through_the_metalink_from_three_agents() {
    require_dnf!("dnf_installs_a_package_through_the_metalink_from_three_agents");
    let net = network(
        &[REPO],
        vec![AgentSpec::v4(), AgentSpec::v4(), AgentSpec::v4()],
    );
    let src = net.root.join("src1");
    hello_repo(&src, &["1"]);
    publish(&net, REPO, &src, "all", &["m0", "m1", "m2"]);
    wait_metalink(&net, REPO, &src, &[0, 1, 2]);

    let marks = Marks::now(&net);
    let root = dnf_root(&net, "dnf", "hotpush", REPO, &[]);
    let r = root.dnf_ok(&["install", PKG]);
    eprintln!("dnf install took {:?}", r.elapsed);
    assert_installed(&root, "1");

    assert!(
        !marks.metalink_gets().is_empty(),
        "dnf fetched no metalink from the origin"
    );
    let served: Vec<Access> = (0..3).flat_map(|i| marks.agent(i)).collect();
    assert!(
        served_rpm(&served, REPO, "1"),
        "no agent logged serving the rpm: {served:#?}"
    );
    assert!(
        served
            .iter()
            .any(|a| a.uri == format!("/{REPO}/repodata/repomd.xml") && a.status == 200),
        "no agent logged serving repomd.xml: {served:#?}"
    );
}

#[test]
fn dnf_refresh_upgrade_gets_the_fix_after_a_new_publish() {
    require_dnf!("dnf_refresh_upgrade_gets_the_fix_after_a_new_publish");
    let net = network(&[REPO], vec![AgentSpec::v4(), AgentSpec::v4()]);
    let src1 = net.root.join("src1");
    hello_repo(&src1, &["1"]);
    publish(&net, REPO, &src1, "all", &["m0", "m1"]);
    wait_metalink(&net, REPO, &src1, &[0, 1]);
    let root = dnf_root(&net, "dnf", "hotpush", REPO, &[]);
    root.dnf_ok(&["install", PKG]);
    assert_installed(&root, "1");

    let src2 = net.root.join("src2");
    add_version(&src1, &src2, "2");
    publish(&net, REPO, &src2, "all", &["m0", "m1"]);
    wait_metalink(&net, REPO, &src2, &[0, 1]);

    let r = root.dnf_ok(&["--refresh", "upgrade"]);
    assert_installed(&root, "2");
    assert!(
        r.stdout.contains(&format!("{PKG}-2-1")) || r.stdout.contains("Upgrad"),
        "dnf's output should show the upgrade:\n{}",
        r.stdout
    );
}

/// Writes the librepo probe script into `dir` and runs it against
/// `metalink`: returns the base URL of the mirror librepo took repomd.xml
/// from (`Result.getinfo(LRR_YUM_REPO)['url']`).
fn librepo_probe(dir: &Path, metalink: &str) -> String {
    std::fs::create_dir_all(dir).expect("mkdir probe dir");
    let script = dir.join("librepo_probe.py");
    std::fs::write(
        &script,
        r#"import sys, tempfile
import librepo
h = librepo.Handle()
h.repotype = librepo.LR_YUMREPO
h.metalinkurl = sys.argv[1]
h.yumdlist = []          # repomd.xml only
h.checksum = True        # check it against the metalink's hashes
h.destdir = tempfile.mkdtemp(dir=sys.argv[2])
def failure(data, msg, url):
    sys.stderr.write("mirror failure: %s %s\n" % (url, msg))
h.hmfcb = failure
r = librepo.Result()
h.perform(r)
print(r.getinfo(librepo.LRR_YUM_REPO)["url"])
"#,
    )
    .expect("writing the probe script");
    let out = run(Command::new("/usr/bin/python3")
        .arg(&script)
        .arg(metalink)
        .arg(dir));
    assert!(
        out.status.success(),
        "librepo probe failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[test]
fn an_agent_down_during_a_publish_is_not_listed_and_dnf_never_asks_it() {
    require_dnf!("an_agent_down_during_a_publish_is_not_listed_and_dnf_never_asks_it");
    let mut net = network(
        &[REPO],
        vec![AgentSpec::v4(), AgentSpec::v4(), AgentSpec::v4()],
    );
    let src1 = net.root.join("src1");
    hello_repo(&src1, &["1"]);
    publish(&net, REPO, &src1, "all", &["m0", "m1", "m2"]);
    wait_metalink(&net, REPO, &src1, &[0, 1, 2]);

    net.stop_agent(2, Signal::Kill);
    let src2 = net.root.join("src2");
    add_version(&src1, &src2, "2");
    let p = publish(&net, REPO, &src2, "2", &["m0", "m1"]);
    assert_ne!(p.agent("m2")["state"], "live", "{p:#?}");
    wait_metalink(&net, REPO, &src2, &[0, 1]);

    // m2's public port now serves its stale (v1) tree, logging every request.
    let stale = PyHttpServer::start(
        net.agents[2].http,
        &net.agents[2].dir.join("www"),
        &net.root.join("stale-m2.log"),
    );
    let stale_repomd =
        hotpush_tests::http_get(&net.agents[2].repomd_url(REPO)).expect("GET the stale repomd.xml");
    assert!(
        stale_repomd == fixture::read(&src1.join("repodata/repomd.xml")),
        "m2's port should serve the v1 repomd.xml"
    );
    // Its log does record requests (so the zero below means something).
    hotpush_tests::wait_until(
        "the stale server to log our GET",
        Duration::from_secs(5),
        || (stale.requests().len() == 1).then_some(()),
    );
    std::fs::write(&stale.log, "").expect("truncating the stale server's log");

    // The metalink, fetched the way dnf does, still leaves m2 out.
    let text = net.metalink(REPO).expect("metalink");
    assert!(
        !text.contains(&net.agents[2].http.to_string()),
        "the metalink lists m2, which never acked v2:\n{text}"
    );

    let root = dnf_root(&net, "dnf", "hotpush", REPO, &[]);
    root.dnf_ok(&["install", PKG]);
    assert_installed(&root, "2");
    root.dnf_ok(&["--refresh", "makecache"]);

    let used = librepo_probe(&net.root.join("librepo"), &net.metalink_url(REPO));
    let acked: Vec<String> = net.agents[..2]
        .iter()
        .map(|a| format!("http://{}/{REPO}", a.http))
        .collect();
    assert!(
        acked.iter().any(|u| used.trim_end_matches('/') == u),
        "librepo used {used}, not an agent that acked ({acked:?})"
    );
    eprintln!("librepo used the mirror {used}");

    let asked = stale.requests();
    assert!(
        asked.is_empty(),
        "the stale m2 (not in the metalink) got {} request(s):\n{}",
        asked.len(),
        asked.join("\n")
    );
    drop(stale);
}

#[test]
fn dnf_falls_over_when_the_first_listed_mirror_dies() {
    require_dnf!("dnf_falls_over_when_the_first_listed_mirror_dies");
    // The crawler would take the dead m0 out within one interval (tested in
    // operability.rs); here dnf must cope while it is still listed.
    let mut net = Network::builder()
        .repo(REPO)
        .origin_config("crawl_interval_secs", "3600")
        .agent(AgentSpec::v4().weight(1_000_000))
        .agent(AgentSpec::v4().weight(1))
        .agent(AgentSpec::v4().weight(1))
        .start();
    let src = net.root.join("src1");
    hello_repo(&src, &["1"]);
    publish(&net, REPO, &src, "all", &["m0", "m1", "m2"]);
    wait_metalink(&net, REPO, &src, &[0, 1, 2]);
    // Each ack sets off a crawl (200 ms later). Let the crawls after these
    // acks finish while m0 still answers: with the interval an hour, none
    // follows, and the dead m0 stays listed.
    hotpush_tests::wait_until("the crawls after the acks", Duration::from_secs(15), || {
        let status = net.status();
        let crawled = status["agents"].as_array()?.iter().all(|a| {
            a["mirrors"]
                .as_array()
                .is_some_and(|ms| ms.iter().all(|m| m["front_end"]["result"] == "serving"))
        });
        crawled.then_some(())
    });
    std::thread::sleep(Duration::from_secs(1));
    let first = net.agents[0].repomd_url(REPO);
    for _ in 0..5 {
        let m = Metalink::parse(&net.metalink(REPO).expect("metalink"));
        assert_eq!(
            m.urls.first(),
            Some(&first),
            "m0 (weight 1000000 vs 1) should be listed first: {m:#?}"
        );
    }

    net.stop_agent(0, Signal::Kill);
    let marks = Marks::now(&net);
    let m = Metalink::parse(&net.metalink(REPO).expect("metalink"));
    eprintln!("metalink after killing m0: {:?}", m.urls);
    assert_eq!(
        m.urls.first(),
        Some(&first),
        "the dead m0 is still listed first (no crawl since), so dnf must fail over"
    );

    let root = dnf_root(&net, "dnf", "hotpush", REPO, &[]);
    let r = root.dnf_ok(&["install", PKG]);
    eprintln!(
        "dnf install with the first mirror dead took {:?}",
        r.elapsed
    );
    assert_installed(&root, "1");

    let served: Vec<Access> = [1, 2].iter().flat_map(|&i| marks.agent(i)).collect();
    assert!(
        served_rpm(&served, REPO, "1"),
        "m1/m2 should have served the rpm: {served:#?}"
    );
    assert!(
        served
            .iter()
            .any(|a| a.uri == format!("/{REPO}/repodata/repomd.xml") && a.status == 200),
        "m1/m2 should have served repomd.xml: {served:#?}"
    );
    let librepo =
        std::fs::read_to_string(root.root.join("var/log/dnf.librepo.log")).unwrap_or_default();
    assert!(
        librepo.contains(&net.agents[0].http.to_string()),
        "librepo's log should show it tried the dead m0 first"
    );
}

#[test]
fn a_refresh_with_nothing_changed_costs_one_metalink_get() {
    require_dnf!("a_refresh_with_nothing_changed_costs_one_metalink_get");
    let net = network(&[REPO], vec![AgentSpec::v4(), AgentSpec::v4()]);
    let src = net.root.join("src1");
    hello_repo(&src, &["1"]);
    publish(&net, REPO, &src, "all", &["m0", "m1"]);
    wait_metalink(&net, REPO, &src, &[0, 1]);
    let root = dnf_root(&net, "dnf", "hotpush", REPO, &[]);
    root.dnf_ok(&["makecache"]);

    let marks = Marks::now(&net);
    root.dnf_ok(&["--refresh", "makecache"]);
    let gets = marks.metalink_gets();
    assert_eq!(
        gets.len(),
        1,
        "an unchanged refresh should cost exactly one metalink GET: {gets:#?}"
    );
    assert_eq!(gets[0].status, 200, "{gets:#?}");
    for i in 0..net.agents.len() {
        let lines = marks.agent(i);
        assert!(
            lines.is_empty(),
            "{} got requests on an unchanged refresh: {lines:#?}",
            net.agents[i].name
        );
    }
    let bytes = sum_bytes(&gets);
    println!("REPORT revival: {} metalink GET, {bytes} bytes", gets.len());

    // check-update revives the same way.
    let marks = Marks::now(&net);
    root.dnf_ok(&["--refresh", "check-update"]);
    assert_eq!(marks.metalink_gets().len(), 1, "check-update --refresh");
    for i in 0..net.agents.len() {
        assert!(marks.agent(i).is_empty(), "check-update --refresh");
    }
}

#[test]
fn dnf_installs_from_a_mirror_on_ipv6_loopback() {
    require_dnf!("dnf_installs_from_a_mirror_on_ipv6_loopback");
    let net = network(&[REPO], vec![AgentSpec::v6()]);
    let src = net.root.join("src1");
    hello_repo(&src, &["1"]);
    publish(&net, REPO, &src, "all", &["m0"]);
    let m = wait_metalink(&net, REPO, &src, &[0]);
    assert!(m.urls[0].starts_with("http://[::1]:"), "{m:#?}");

    let marks = Marks::now(&net);
    let root = dnf_root(&net, "dnf", "hotpush", REPO, &[]);
    root.dnf_ok(&["install", PKG]);
    assert_installed(&root, "1");
    assert!(
        served_rpm(&marks.agent(0), REPO, "1"),
        "the [::1] agent should have served the rpm"
    );
}

/// A throw-away GPG home under `dir` with one signing key.
struct Gpg {
    home: PathBuf,
    key_file: PathBuf,
}

const GPG_UID: &str = "hotpush test <hotpush-test@example.invalid>";

impl Gpg {
    fn new(dir: &Path) -> Self {
        let home = dir.join("gnupg");
        std::fs::create_dir_all(&home).expect("mkdir gnupg");
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o700))
                .expect("chmod gnupg");
        }
        let g = Gpg {
            key_file: dir.join("RPM-GPG-KEY-hotpush-test"),
            home,
        };
        g.run(&[
            "--pinentry-mode",
            "loopback",
            "--passphrase",
            "",
            "--quick-gen-key",
            GPG_UID,
            "rsa2048",
            "sign",
            "never",
        ]);
        let key = g.run(&["--armor", "--export", GPG_UID]);
        assert!(key.contains("BEGIN PGP PUBLIC KEY BLOCK"), "{key}");
        std::fs::write(&g.key_file, key).expect("writing the public key");
        g
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("gpg");
        c.env("GNUPGHOME", &self.home)
            .env("LC_ALL", "C")
            .arg("--batch")
            .args(args);
        c
    }

    fn run(&self, args: &[&str]) -> String {
        run_ok(&mut self.cmd(args))
    }

    /// `repodata/repomd.xml.asc` for the repo at `dir`.
    fn sign_repomd(&self, dir: &Path) {
        let xml = dir.join("repodata/repomd.xml");
        let asc = dir.join("repodata/repomd.xml.asc");
        run_ok(
            self.cmd(&["--yes", "--armor", "--detach-sign", "-o"])
                .arg(&asc)
                .arg(&xml),
        );
    }

    /// `gpg --verify asc xml` of two files.
    fn verify(&self, asc: &Path, xml: &Path) -> Result<(), String> {
        let out = run(self.cmd(&["--verify"]).arg(asc).arg(xml));
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }
}

impl Drop for Gpg {
    fn drop(&mut self) {
        // The agent gpg autostarted for our homedir: ask it for its PID.
        let out = Command::new("gpg-connect-agent")
            .env("GNUPGHOME", &self.home)
            .args(["--no-autostart", "getinfo pid", "/bye"])
            .output();
        if let Ok(out) = out {
            for line in String::from_utf8_lossy(&out.stdout).lines() {
                if let Some(pid) = line.strip_prefix("D ")
                    && pid.trim().parse::<u32>().is_ok()
                {
                    let _ = Command::new("kill").arg(pid.trim()).status();
                }
            }
        }
        if let Some(dir) = self.home.parent() {
            dnf::kill_gpg_agents_under(dir);
        }
    }
}

/// Every agent serves, over HTTP, a repomd.xml equal to `src`'s and a
/// repomd.xml.asc that `gpg --verify`s against it.
fn assert_agents_serve_signed(net: &Network, gpg: &Gpg, src: &Path, tag: &str) {
    let want = fixture::read(&src.join("repodata/repomd.xml"));
    for a in &net.agents {
        let url = a.repomd_url(REPO);
        let xml = hotpush_tests::http_get(&url).expect("GET repomd.xml");
        let asc = hotpush_tests::http_get(&format!("{url}.asc")).expect("GET repomd.xml.asc");
        assert!(xml == want, "{} serves another repomd.xml ({tag})", a.name);
        let dir = net.root.join(format!("verify-{tag}-{}", a.name));
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(dir.join("repomd.xml"), &xml).expect("write");
        std::fs::write(dir.join("repomd.xml.asc"), &asc).expect("write");
        if let Err(e) = gpg.verify(&dir.join("repomd.xml.asc"), &dir.join("repomd.xml")) {
            panic!(
                "{}: its repomd.xml.asc does not verify its repomd.xml ({tag}):\n{e}",
                a.name
            );
        }
    }
}

#[test]
fn repo_gpgcheck_with_a_signed_repomd_survives_two_publishes() {
    require_dnf!("repo_gpgcheck_with_a_signed_repomd_survives_two_publishes");
    let net = network(&[REPO], vec![AgentSpec::v4(), AgentSpec::v6()]);
    let gpg = Gpg::new(&net.root.join("keys"));

    let src1 = net.root.join("src1");
    hello_repo(&src1, &["1"]);
    gpg.sign_repomd(&src1);
    gpg.verify(
        &src1.join("repodata/repomd.xml.asc"),
        &src1.join("repodata/repomd.xml"),
    )
    .expect("the source signature verifies");
    publish(&net, REPO, &src1, "all", &["m0", "m1"]);
    wait_metalink(&net, REPO, &src1, &[0, 1]);
    assert_agents_serve_signed(&net, &gpg, &src1, "v1");

    let key_url = format!("file://{}", gpg.key_file.display());
    let gpgkey = format!("gpgkey={key_url}");
    let root = dnf_root(&net, "dnf", "hotpush", REPO, &["repo_gpgcheck=1", &gpgkey]);
    let r = root.dnf_ok(&["install", PKG]);
    assert_installed(&root, "1");
    assert!(
        format!("{}{}", r.stdout, r.stderr).contains("Importing GPG key"),
        "dnf should have imported the repo key:\n{}\n{}",
        r.stdout,
        r.stderr
    );

    // Second publish, re-signed. Meanwhile watch every agent's served tree:
    // resolve the `repodata` symlink once, then read both files through the
    // resolved directory, so each sample is one consistent snapshot.
    let src2 = net.root.join("src2");
    add_version(&src1, &src2, "2");
    gpg.sign_repomd(&src2);
    let pairs = [
        (
            fixture::read(&src1.join("repodata/repomd.xml")),
            fixture::read(&src1.join("repodata/repomd.xml.asc")),
        ),
        (
            fixture::read(&src2.join("repodata/repomd.xml")),
            fixture::read(&src2.join("repodata/repomd.xml.asc")),
        ),
    ];
    let served: Vec<PathBuf> = net.agents.iter().map(|a| a.served(REPO)).collect();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (samples, torn) = std::thread::scope(|s| {
        let watcher = s.spawn(|| {
            let (mut samples, mut torn) = (0u64, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for dir in &served {
                    let Ok(target) = std::fs::read_link(dir.join("repodata")) else {
                        continue;
                    };
                    let rd = dir.join(target);
                    let (Ok(xml), Ok(asc)) = (
                        std::fs::read(rd.join("repomd.xml")),
                        std::fs::read(rd.join("repomd.xml.asc")),
                    ) else {
                        continue;
                    };
                    samples += 1;
                    if !pairs.iter().any(|(x, a)| *x == xml && *a == asc) {
                        torn.push(rd.display().to_string());
                    }
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            (samples, torn)
        });
        publish(&net, REPO, &src2, "all", &["m0", "m1"]);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        watcher.join().expect("watcher")
    });
    assert!(samples > 0, "the watcher read no served repodata");
    assert!(
        torn.is_empty(),
        "an agent served a repomd.xml with another snapshot's .asc: {torn:?}"
    );
    wait_metalink(&net, REPO, &src2, &[0, 1]);
    assert_agents_serve_signed(&net, &gpg, &src2, "v2");

    root.dnf_ok(&["--refresh", "upgrade"]);
    assert_installed(&root, "2");
    drop(root);
    drop(gpg);
    std::thread::sleep(Duration::from_millis(100));
    let left = dnf::gpg_agents_under(&net.root);
    dnf::kill_gpg_agents_under(&net.root);
    assert!(left.is_empty(), "gpg-agents survived the cleanup: {left:?}");
}

/// Bytes dnf downloaded for `repo` since `marks`: the origin's metalink lines
/// for it plus every agent's lines under `/<repo>/`.
fn bytes_for(net: &Network, marks: &Marks, repo: &str) -> (u64, Vec<Access>) {
    let (r, arch) = repo.rsplit_once('/').expect("repo/arch");
    let prefix = format!("/metalink?repo={r}&arch={arch}");
    let mut lines: Vec<Access> = marks
        .metalink_gets()
        .into_iter()
        .filter(|a| a.uri.starts_with(&prefix))
        .collect();
    for i in 0..net.agents.len() {
        lines.extend(
            marks
                .agent(i)
                .into_iter()
                .filter(|a| a.uri.starts_with(&format!("/{repo}/"))),
        );
    }
    (sum_bytes(&lines), lines)
}

fn repo_pkgs(root: &DnfRoot, id: &str) -> String {
    let r = root.dnf_ok(&["-C", "repoinfo", id]);
    r.stdout
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == "Repo-pkgs").then(|| v.trim().to_owned())
        })
        .unwrap_or_else(|| panic!("dnf repoinfo {id} printed no Repo-pkgs:\n{}", r.stdout))
}

#[test]
fn the_empty_repo_costs_a_client_less_than_createrepo_c_s() {
    require_dnf!("the_empty_repo_costs_a_client_less_than_createrepo_c_s");
    const A: &str = "empty-a/x86_64";
    const B: &str = "empty-b/x86_64";
    let net = network(&[A, B], vec![AgentSpec::v4(), AgentSpec::v6()]);
    let ours = net.root.join("ours");
    run_ok(net.origin_cmd().args(["repo", "init"]).arg(&ours));
    let theirs = net.root.join("theirs");
    std::fs::create_dir_all(&theirs).expect("mkdir");
    run_ok(Command::new("createrepo_c").arg("--quiet").arg(&theirs));
    publish(&net, A, &ours, "all", &["m0", "m1"]);
    publish(&net, B, &theirs, "all", &["m0", "m1"]);
    wait_metalink(&net, A, &ours, &[0, 1]);
    wait_metalink(&net, B, &theirs, &[0, 1]);

    let mut report = Vec::new();
    for (repo, tag) in [(A, "a"), (B, "b")] {
        let root = dnf_root(&net, &format!("dnf-{tag}"), "empty", repo, &[]);
        let marks = Marks::now(&net);
        root.dnf_ok(&["makecache"]);
        let (bytes, lines) = bytes_for(&net, &marks, repo);
        eprintln!("{repo}: {bytes} bytes in {lines:#?}");
        assert_eq!(
            repo_pkgs(&root, "empty"),
            "0",
            "{repo} should load with 0 packages"
        );
        let list = root.dnf_ok(&["-C", "list", "--available"]);
        assert!(
            !list.stdout.contains(".noarch") && !list.stdout.contains(".x86_64"),
            "{repo} lists packages:\n{}",
            list.stdout
        );
        report.push(bytes);
    }
    println!(
        "REPORT empty-repo: hotpush {} bytes, createrepo_c {} bytes",
        report[0], report[1]
    );
    assert!(
        report[0] <= 2500,
        "a client's makecache of the empty repo cost {} bytes (> 2500)",
        report[0]
    );
    assert!(report[0] < report[1], "{report:?}");
}

#[test]
fn metalink_size_for_four_mirrors() {
    let net = network(
        &[REPO],
        vec![
            AgentSpec::v4(),
            AgentSpec::v6(),
            AgentSpec::v4(),
            AgentSpec::v6(),
        ],
    );
    let src = net.root.join("src");
    fixture::sample_repo(&src);
    publish(&net, REPO, &src, "all", &["m0", "m1", "m2", "m3"]);
    wait_metalink(&net, REPO, &src, &[0, 1, 2, 3]);
    let out = run_ok(Command::new("curl").args([
        "-sS",
        "--fail",
        "-o",
        "/dev/null",
        "-w",
        "%{size_download}",
        &net.metalink_url(REPO),
    ]));
    let size: u64 = out.trim().parse().expect("curl size_download");
    let body = net.metalink(REPO).expect("metalink");
    assert_eq!(size, body.len() as u64);
    println!("REPORT metalink size for 4 mirrors: {size} bytes");
}
