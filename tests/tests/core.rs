//! End-to-end tests of the core promise: `publish` puts a verified snapshot
//! live on every partner, sends only what changed, catches up agents that were
//! down, keeps repos independent, refuses untrusted peers, and dnf installs
//! through the metalink. Real processes, real sockets, real TLS.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use hotpush_tests::fixture::{self, referenced_files};
use hotpush_tests::{AgentSpec, Metalink, Network, Signal, foreign_origin, sha256_hex, sha512_hex};

const REPO: &str = "demo/x86_64";

/// A network of three agents carrying `repos`: m0 on [::1], m1 and m2 on
/// 127.0.0.1.
fn three_agents(repos: &[&str]) -> Network {
    let mut b = Network::builder();
    for r in repos {
        b = b.repo(r);
    }
    b.agent(AgentSpec::v6())
        .agent(AgentSpec::v4())
        .agent(AgentSpec::v4())
        .start()
}

/// Asserts that a `--json` publish exited 0 with every agent in `live`.
fn assert_live(p: &hotpush_tests::Publish, live: &[&str]) {
    assert_eq!(p.code, 0, "publish failed: {p:#?}");
    let s = p.summary();
    assert_eq!(s["ok"], true, "{p:#?}");
    assert_eq!(s["live"], live.len(), "{p:#?}");
    for name in live {
        assert_eq!(p.agent(name)["state"], "live", "agent {name}: {p:#?}");
    }
}

/// Asserts that agent `i` serves the referenced files of `src` byte for byte
/// (through the `repodata` symlink), and nothing else but the hash-named
/// repodata of the `previous` snapshots: those stay reachable (for
/// `retain_for`) so that a client holding an old repomd.xml gets no 404.
fn assert_serves(net: &Network, i: usize, repo: &str, src: &Path, previous: &[&Path]) {
    let agent = &net.agents[i];
    let mut expected: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for prev in previous {
        for rel in referenced_files(prev) {
            if rel.starts_with("repodata/") && rel != "repodata/repomd.xml" {
                expected.insert(rel.clone(), fixture::read(&prev.join(&rel)));
            }
        }
    }
    for rel in referenced_files(src) {
        expected.insert(rel.clone(), fixture::read(&src.join(&rel)));
    }
    assert_eq!(
        agent.served_files(repo),
        expected.keys().cloned().collect::<Vec<_>>(),
        "agent {} serves other files than the source repo (plus retained old repodata)",
        agent.name
    );
    for (rel, want) in &expected {
        let got = agent
            .read_served(repo, rel)
            .unwrap_or_else(|| panic!("agent {} does not serve {rel}", agent.name));
        assert!(
            &got == want,
            "agent {}: {rel} differs from the source ({} vs {} bytes)",
            agent.name,
            got.len(),
            want.len()
        );
    }
}

/// The metalink's URLs, sorted, once it lists `want` (sorted) — polled,
/// since acks are recorded a moment after the agents swap.
fn wait_metalink_urls(
    net: &Network,
    repo: &str,
    mut want: Vec<String>,
    timeout: Duration,
) -> Metalink {
    want.sort();
    let mut last: String;
    let deadline = Instant::now() + timeout;
    loop {
        match net.metalink(repo) {
            Ok(text) => {
                let m = Metalink::parse(&text);
                let mut urls = m.urls.clone();
                urls.sort();
                if urls == want {
                    return m;
                }
                last = text;
            }
            Err(e) => last = e.to_string(),
        }
        assert!(
            Instant::now() < deadline,
            "metalink of {repo} never listed exactly {want:?}; last answer:\n{last}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn assert_metalink_describes(m: &Metalink, repomd: &[u8]) {
    assert_eq!(m.hashes.get("sha256"), Some(&sha256_hex(repomd)), "{m:#?}");
    assert_eq!(m.hashes.get("sha512"), Some(&sha512_hex(repomd)), "{m:#?}");
    assert_eq!(m.size, Some(repomd.len() as u64), "{m:#?}");
    assert!(!m.has_alternates, "no mm0:alternates by default: {m:#?}");
}

#[test]
fn publish_makes_three_agents_serve_identical_trees_and_lists_them_in_the_metalink() {
    let net = three_agents(&[REPO]);
    let src = net.root.join("src");
    fixture::sample_repo(&src);

    let p = net.publish(REPO, &src, &["--json", "--timeout", "20"]);
    assert_live(&p, &["m0", "m1", "m2"]);
    assert_eq!(p.summary()["unreferenced_files"], 0, "{p:#?}");
    assert_eq!(
        p.summary()["entries"],
        referenced_files(&src).len(),
        "{p:#?}"
    );

    for i in 0..3 {
        assert_serves(&net, i, REPO, &src, &[]);
    }
    // And over the agents' own HTTP, as a client would fetch it.
    let repomd = fixture::read(&src.join("repodata/repomd.xml"));
    for a in &net.agents {
        let got = hotpush_tests::http_get(&a.repomd_url(REPO)).expect("GET repomd.xml");
        assert!(
            got == repomd,
            "{} serves another repomd.xml over HTTP",
            a.name
        );
    }

    let want: Vec<String> = net.agents.iter().map(|a| a.repomd_url(REPO)).collect();
    assert!(want[0].starts_with("http://[::1]:"), "{want:?}");
    let m = wait_metalink_urls(&net, REPO, want, Duration::from_secs(5));
    assert_metalink_describes(&m, &repomd);
}

#[test]
fn second_publish_sends_only_the_new_blobs() {
    let net = three_agents(&[REPO]);
    let src1 = net.root.join("src1");
    fixture::repo_with(&src1, &[("base", "1.0", 2048)]);
    let p1 = net.publish(REPO, &src1, &["--json", "--timeout", "30"]);
    assert_live(&p1, &["m0", "m1", "m2"]);
    let total1: u64 = fixture::blobs(&src1).values().sum();
    for a in &net.agents {
        assert_eq!(
            p1.agent(&a.name)["bytes_sent"],
            total1,
            "first publish sends the whole repo to {}: {p1:#?}",
            a.name
        );
    }

    // One more package; createrepo_c --update rewrites the repodata.
    let src2 = net.root.join("src2");
    fixture::copy_dir(&src1, &src2);
    fixture::build_rpm(&src2, "fix", "1.0", 16);
    fixture::createrepo(&src2);

    let old = fixture::blobs(&src1);
    let new = fixture::blobs(&src2);
    let fresh: Vec<(&String, &u64)> = new.iter().filter(|(h, _)| !old.contains_key(*h)).collect();
    let want_bytes: u64 = fresh.iter().map(|(_, n)| **n).sum();
    // the new rpm, repomd.xml, and the rewritten primary/filelists/other
    assert!(fresh.len() >= 5, "{fresh:?}");
    assert!(want_bytes < 1 << 20, "fixture: the change should be small");

    let p2 = net.publish(REPO, &src2, &["--json", "--timeout", "30"]);
    assert_live(&p2, &["m0", "m1", "m2"]);
    assert_eq!(p2.summary()["new_blobs"], fresh.len(), "{p2:#?}");
    for a in &net.agents {
        assert_eq!(
            p2.agent(&a.name)["bytes_sent"],
            want_bytes,
            "{} should receive exactly the {} new blobs ({want_bytes} bytes), not the whole repo: {p2:#?}",
            a.name,
            fresh.len()
        );
    }
    for i in 0..3 {
        assert_serves(&net, i, REPO, &src2, &[&src1]);
    }
}

#[test]
fn an_agent_that_was_down_catches_up_without_a_new_publish() {
    let mut net = three_agents(&[REPO]);
    let src1 = net.root.join("src1");
    fixture::repo_with(&src1, &[("one", "1.0", 4)]);
    let p1 = net.publish(REPO, &src1, &["--json", "--timeout", "20"]);
    assert_live(&p1, &["m0", "m1", "m2"]);

    net.stop_agent(2, Signal::Kill);
    let src2 = net.root.join("src2");
    fixture::copy_dir(&src1, &src2);
    fixture::build_rpm(&src2, "two", "1.0", 4);
    fixture::createrepo(&src2);

    let p2 = net.publish(REPO, &src2, &["--json", "--wait", "2", "--timeout", "20"]);
    assert_live(&p2, &["m0", "m1"]);
    assert_ne!(p2.agent("m2")["state"], "live", "{p2:#?}");
    // The metalink moves on without m2, which still serves the old version.
    let two: Vec<String> = net.agents[..2].iter().map(|a| a.repomd_url(REPO)).collect();
    wait_metalink_urls(&net, REPO, two, Duration::from_secs(5));

    net.start_agent(2);
    let repomd2 = fixture::read(&src2.join("repodata/repomd.xml"));
    hotpush_tests::wait_until(
        "m2 to serve the new repomd.xml",
        Duration::from_secs(15),
        || {
            (net.agents[2]
                .read_served(REPO, "repodata/repomd.xml")
                .as_deref()
                == Some(&repomd2[..]))
            .then_some(())
        },
    );
    assert_serves(&net, 2, REPO, &src2, &[&src1]);

    let all: Vec<String> = net.agents.iter().map(|a| a.repomd_url(REPO)).collect();
    let m = wait_metalink_urls(&net, REPO, all, Duration::from_secs(5));
    assert_metalink_describes(&m, &repomd2);
    let status = net.status();
    let m2 = status["agents"]
        .as_array()
        .expect("agents")
        .iter()
        .find(|a| a["name"] == "m2")
        .expect("m2 in status")
        .clone();
    let version = p2.summary()["version"].clone();
    assert!(
        m2["acked"]
            .as_array()
            .expect("acked")
            .iter()
            .any(|k| k["repo"] == REPO && k["version"] == version),
        "status should show m2 acked version {version}: {status:#}"
    );
}

#[test]
fn an_agent_killed_mid_push_resumes_after_restart() {
    let mut net = Network::builder()
        .repo(REPO)
        .agent(AgentSpec::v6())
        .agent(AgentSpec::v4())
        .start();
    let src = net.root.join("src");
    fixture::repo_with(&src, &[("large", "1.0", 30 * 1024)]);
    let total: u64 = fixture::blobs(&src).values().sum();
    let part_dir = net.agents[1].dir.join("data/tmp");

    let publish = net.publish_cmd(REPO, &src, &["--json", "--wait", "1", "--timeout", "30"]);
    let handle = std::thread::spawn(move || {
        let mut publish = publish;
        publish.output().expect("running publish")
    });
    // Kill m1 once it holds part of the big blob (tight poll: the push is fast).
    let deadline = Instant::now() + Duration::from_secs(20);
    let held = loop {
        let held: u64 = std::fs::read_dir(&part_dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .sum();
        if held >= 1 << 20 {
            break held;
        }
        assert!(
            Instant::now() < deadline,
            "m1 never held a partial blob in {}",
            part_dir.display()
        );
        std::thread::sleep(Duration::from_millis(2));
    };
    net.stop_agent(1, Signal::Kill);
    let out = handle.join().expect("publish thread");
    assert!(
        out.status.success(),
        "publish --wait 1 should succeed with m0: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_eq!(
        net.agents[1].served_files(REPO),
        Vec::<String>::new(),
        "m1 was killed before the swap: it must serve nothing"
    );

    net.start_agent(1);
    let repomd = fixture::read(&src.join("repodata/repomd.xml"));
    hotpush_tests::wait_until(
        "m1 to serve the snapshot after its restart",
        Duration::from_secs(15),
        || {
            (net.agents[1]
                .read_served(REPO, "repodata/repomd.xml")
                .as_deref()
                == Some(&repomd[..]))
            .then_some(())
        },
    );
    assert_serves(&net, 1, REPO, &src, &[]);
    let all: Vec<String> = net.agents.iter().map(|a| a.repomd_url(REPO)).collect();
    wait_metalink_urls(&net, REPO, all, Duration::from_secs(5));

    // The push after the restart resumed the partial blob instead of
    // resending it whole: its ack reports fewer bytes than the snapshot.
    let log = net.origin_log_text();
    let resent: u64 = log
        .lines()
        .filter(|l| l.contains("acked agent=m1 "))
        .find_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("bytes="))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or_else(|| panic!("no ack of m1 in the origin log:\n{log}"));
    assert!(
        resent <= total - held,
        "m1 held {held} bytes of a partial blob when killed, yet the next push sent {resent} of {total} bytes: the partial blob was not resumed"
    );
}

#[test]
fn a_big_publish_does_not_hold_up_a_small_one_for_another_repo() {
    const BIG: &str = "big/x86_64";
    const TINY: &str = "tiny/x86_64";
    let net = three_agents(&[BIG, TINY]);
    let big_src = net.root.join("big");
    // 120 MiB: a push long enough that "held up" cannot hide in scheduling noise.
    fixture::synthetic_repo(
        &big_src,
        &[("Packages/h/huge-1.0-1.noarch.rpm".into(), 120 << 20)],
        1,
        1_800_000_000,
    );
    let tiny_src = net.root.join("tiny");
    fixture::sample_repo(&tiny_src);

    let args = ["--json", "--timeout", "60"];
    let (big, tiny, big_end, tiny_end) = std::thread::scope(|s| {
        let big = s.spawn(|| {
            let p = net.publish(BIG, &big_src, &args);
            (p, Instant::now())
        });
        // Start the small one once the big push is in flight on an agent.
        hotpush_tests::wait_until(
            "the big push to reach an agent",
            Duration::from_secs(20),
            || {
                net.agents
                    .iter()
                    .any(|a| a.log_text().contains("offer verified repo=big/x86_64"))
                    .then_some(())
            },
        );
        let tiny = net.publish(TINY, &tiny_src, &args);
        let tiny_end = Instant::now();
        let (big, big_end) = big.join().expect("big publish thread");
        (big, tiny, big_end, tiny_end)
    });
    assert_live(&big, &["m0", "m1", "m2"]);
    assert_live(&tiny, &["m0", "m1", "m2"]);
    eprintln!(
        "big publish: {:?}, tiny publish: {:?}",
        big.elapsed, tiny.elapsed
    );
    assert!(
        tiny_end < big_end,
        "the tiny publish finished after the big one: tiny {:?}, big {:?}",
        tiny.elapsed,
        big.elapsed
    );
    assert!(
        tiny.elapsed * 2 < big.elapsed,
        "the tiny publish took {:?}, the big one {:?}: the big push held it up",
        tiny.elapsed,
        big.elapsed
    );
}

#[test]
fn publishing_the_same_snapshot_again_sends_nothing() {
    let net = three_agents(&[REPO]);
    let src = net.root.join("src");
    fixture::sample_repo(&src);
    let p1 = net.publish(REPO, &src, &["--json", "--timeout", "20"]);
    assert_live(&p1, &["m0", "m1", "m2"]);

    let p2 = net.publish(REPO, &src, &["--json", "--timeout", "20"]);
    assert_live(&p2, &["m0", "m1", "m2"]);
    assert_eq!(p2.summary()["new_blobs"], 0, "{p2:#?}");
    for a in &net.agents {
        assert_eq!(p2.agent(&a.name)["bytes_sent"], 0, "{}: {p2:#?}", a.name);
    }
    for i in 0..3 {
        assert_serves(&net, i, REPO, &src, &[]);
    }
}

/// Copies `from` to `to` as `cp -a` does (symlinks, modes, hard links).
fn copy_tree(from: &Path, to: &Path) {
    let _ = std::fs::remove_dir_all(to);
    let ok = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .expect("run cp");
    assert!(ok.success(), "cp -a {} {}", from.display(), to.display());
}

#[test]
fn later_publishes_offer_a_delta_and_a_restored_agent_gets_the_whole_manifest() {
    let mut net = Network::builder()
        .repo(REPO)
        .agent(AgentSpec::v6())
        .agent(AgentSpec::v4())
        .start();
    let src = net.root.join("src");
    fixture::sample_repo(&src);
    let offered =
        |p: &hotpush_tests::Publish, name: &str| p.agent(name)["offer_bytes"].as_u64().unwrap();
    let p1 = net.publish(REPO, &src, &["--json", "--timeout", "20"]);
    assert_live(&p1, &["m0", "m1"]);

    // m1's disks as a backup would keep them, with version 1 live.
    net.stop_agent(1, Signal::Term);
    let backup = net.root.join("m1-backup");
    std::fs::create_dir_all(&backup).unwrap();
    let (data, www) = (
        net.agents[1].data_dir.clone(),
        net.agents[1].serve_root.clone(),
    );
    copy_tree(&data, &backup.join("data"));
    copy_tree(&www, &backup.join("www"));
    net.start_agent(1);

    // Version 2: both have version 1 live, so both get a delta, which
    // carries no entry (the content is the same) instead of every entry.
    let p2 = net.publish(REPO, &src, &["--json", "--timeout", "20"]);
    assert_live(&p2, &["m0", "m1"]);
    for name in ["m0", "m1"] {
        let (whole, delta) = (offered(&p1, name), offered(&p2, name));
        assert!(
            delta > 0 && delta < whole / 2,
            "{name}: delta {delta} bytes, whole manifest {whole}"
        );
    }

    // m1 is restored from the backup: version 1 live, while the origin
    // recorded its ack of version 2. Version 3's delta starts from 2, so m1
    // refuses it, and the origin sends the whole manifest at once.
    net.stop_agent(1, Signal::Term);
    copy_tree(&backup.join("data"), &data);
    copy_tree(&backup.join("www"), &www);
    net.start_agent(1);
    let p3 = net.publish(REPO, &src, &["--json", "--timeout", "20"]);
    assert_live(&p3, &["m0", "m1"]);
    assert_eq!(offered(&p3, "m0"), offered(&p2, "m0"), "{p3:#?}");
    assert!(
        offered(&p3, "m1") > offered(&p1, "m1"),
        "delta then whole: {p3:#?}"
    );
    assert_eq!(net.agents[1].status_version(REPO), Some(3));
    let log = std::fs::read_to_string(&net.origin_log).unwrap();
    assert!(
        log.contains("delta refused: offering the manifest in parts"),
        "{log}"
    );
    assert!(
        net.agents[1].log_text().contains("has version 1"),
        "{}",
        net.agents[1].log_text()
    );
    for i in 0..2 {
        assert_serves(&net, i, REPO, &src, &[]);
    }
}

#[test]
fn agents_refuse_an_untrusted_signing_key_and_an_unknown_origin_id() {
    let (foreign_id, foreign_key) = foreign_origin();
    let net = Network::builder()
        .repo(REPO)
        .agent(AgentSpec::v6())
        .agent(AgentSpec::v4().origin_key(&foreign_key))
        .agent(AgentSpec::v6().origin_id(&foreign_id))
        .start();
    let src = net.root.join("src");
    fixture::sample_repo(&src);

    let p = net.publish(REPO, &src, &["--wait", "all", "--timeout", "10"]);
    assert_eq!(p.code, 3, "publish should exit 3 (not live): {p:#?}");
    let out = p.stdout.to_lowercase();
    let line_of = |name: &str| {
        out.lines()
            .rev()
            .find(|l| l.trim_start().starts_with(&format!("{name}:")))
            .unwrap_or_else(|| panic!("no line names {name}:\n{}", p.stdout))
            .to_owned()
    };
    assert!(
        out.contains("m0: live"),
        "m0 trusts the origin:\n{}",
        p.stdout
    );

    let wrong_key = line_of("m1");
    assert!(
        wrong_key.contains("untrusted") || wrong_key.contains("not signed by any trusted key"),
        "m1 should be reported as refusing an untrusted signature: {wrong_key}\n{}",
        p.stdout
    );
    let wrong_id = line_of("m2");
    assert!(
        ["tls", "handshake", "connection"]
            .iter()
            .any(|w| wrong_id.contains(w)),
        "m2 should be reported as a TLS/connection failure: {wrong_id}\n{}",
        p.stdout
    );

    let log = net.agents[2].log_text();
    assert!(
        log.contains(&format!("peer_id={}", net.origin_id)),
        "m2's log should name the origin id it refused ({}):\n{log}",
        net.origin_id
    );
    for i in [1, 2] {
        assert_eq!(
            net.agents[i].served_files(REPO),
            Vec::<String>::new(),
            "{} must not serve anything",
            net.agents[i].name
        );
        // Verify first, then persist: nothing refused reaches the disk.
        for sub in ["data/objects", "data/state"] {
            let dir = net.agents[i].dir.join(sub);
            assert_eq!(
                hotpush_tests::walk_files(&dir, false),
                Vec::<String>::new(),
                "{} stored something in {}",
                net.agents[i].name,
                dir.display()
            );
        }
    }
    assert_serves(&net, 0, REPO, &src, &[]);
}

#[test]
fn dnf_installs_through_the_metalink() {
    let have_dnf = Command::new("sh")
        .args(["-c", "command -v dnf"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !have_dnf {
        eprintln!(
            "SKIPPED dnf_installs_through_the_metalink: dnf is not installed (tests/install-deps.sh)"
        );
        return;
    }
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !is_root {
        eprintln!("SKIPPED dnf_installs_through_the_metalink: dnf --installroot needs root");
        return;
    }
    let net = Network::builder()
        .repo(REPO)
        .agent(AgentSpec::v6())
        .agent(AgentSpec::v4())
        .start();
    let src = net.root.join("src");
    fixture::sample_repo(&src);
    let p = net.publish(REPO, &src, &["--json", "--timeout", "20"]);
    assert_live(&p, &["m0", "m1"]);
    let want: Vec<String> = net.agents.iter().map(|a| a.repomd_url(REPO)).collect();
    wait_metalink_urls(&net, REPO, want, Duration::from_secs(5));

    let out = Command::new("bash")
        .arg(hotpush_tests::workspace_root().join("tests/dnf-check.sh"))
        .arg(net.metalink_url(REPO))
        .arg("hello-hotpush")
        .env("DNF_TIMEOUT", "120")
        .output()
        .expect("running tests/dnf-check.sh");
    assert!(
        out.status.success(),
        "dnf-check.sh failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
