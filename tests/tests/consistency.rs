//! No dnf client ever fails because a publish is under way
//! (docs/PROTOCOL.md, "The flip" and "Changed paths").
//!
//! The stress runs (`hotpush_tests::stress`) drive five real dnf clients
//! in `--refresh` loops through the metalink while versions are published
//! back to back, and count every failed run; a run without retention shows
//! that the same harness does see failures when files vanish under clients.
//! They take the machine for a while, so they run one at a time.
//!
//! `HOTPUSH_STRESS_PUBLISHES=<n>` changes the number of publishes of every
//! stress run (`tests/stress.sh` runs them alone with more).
#![allow(clippy::unwrap_used)] // a test file: a panic is the failure report

use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

use hotpush_tests::dnf;
use hotpush_tests::stress::{self, Plan, Report};
use hotpush_tests::{AgentSpec, Metalink, Network, Signal, fixture, sha256_hex, walk_files};

/// The stress runs share the machine's two cores: one at a time.
static HEAVY: Mutex<()> = Mutex::new(());

/// Returns early (passing) with a SKIPPED line when dnf or nginx cannot
/// run here.
macro_rules! require_clients {
    ($name:literal) => {
        if let Err(why) = dnf::available().and_then(|()| hotpush_tests::nginx::available()) {
            eprintln!("SKIPPED {}: {why}", $name);
            return;
        }
    };
}

fn heavy() -> std::sync::MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|p| p.into_inner())
}

fn assert_clean(report: &Report, plan: &Plan) {
    if let Some(e) = &report.publish_error {
        panic!("a publish failed: {e}");
    }
    assert_eq!(report.publishes.len(), plan.publishes, "every publish ran");
    let failures = report.failures();
    assert!(
        failures.is_empty(),
        "{} of {} dnf runs failed; the first:\n{:#?}",
        failures.len(),
        report.runs.len(),
        failures.first()
    );
    for p in &report.publishes {
        assert_eq!(
            p.flipped_ms.len(),
            3,
            "every mirror reports its flip of version {}: {p:?}",
            p.version
        );
        assert!(
            p.main_ms.is_some(),
            "the metalink named version {} as main: {p:?}",
            p.version
        );
    }
    // The run means something only if clients were reading while mirrors
    // switched.
    assert!(
        report.runs_overlapping_a_flip() > 0,
        "no dnf run overlapped a flip: {}",
        report.summary("no-overlap")
    );
}

#[test]
fn dnf_clients_never_fail_across_back_to_back_publishes() {
    require_clients!("dnf_clients_never_fail_across_back_to_back_publishes");
    let _one = heavy();
    let plan = Plan::new(100);
    let report = stress::run(&plan);
    println!("{}", report.summary("consistency"));
    assert_clean(&report, &plan);
}

#[test]
fn clients_behind_a_caching_proxy_never_fail() {
    require_clients!("clients_behind_a_caching_proxy_never_fail");
    let _one = heavy();
    // Three of five clients get the metalink from an nginx that keeps it
    // for max-age=1 (up to 2 s: nginx counts whole seconds); the settle is
    // the product's default, max-age + 2 s.
    let plan = Plan::new(15).behind_proxy(3, 1);
    let report = stress::run(&plan);
    println!("{}", report.summary("consistency-proxied"));
    assert_clean(&report, &plan);
}

#[test]
fn without_retention_the_same_run_fails() {
    require_clients!("without_retention_the_same_run_fails");
    let _one = heavy();
    // Replaced files are deleted at the flip: a client that read the old
    // repomd.xml a moment before finds its primary.xml gone everywhere.
    let mut plan = Plan::new(100).agent_config("retain_for_secs", "0");
    plan.stop_at_first_failure = true;
    let report = stress::run(&plan);
    println!("{}", report.summary("consistency-no-retention"));
    let failures = report.failures();
    assert!(
        !failures.is_empty(),
        "no dnf run failed without retention: the harness cannot see the failure it guards against"
    );
    let first = failures[0];
    println!("the first failure: {}", first.detail);
    assert!(
        first.detail.contains("404")
            || first.detail.contains("checksum")
            || first.detail.contains("All mirrors were tried"),
        "the failure is a missing or mismatched file: {first:#?}"
    );
}

const REPO: &str = "fix/x86_64";

/// Every file the origin keeps under its dir except its database and log:
/// the blob store and anything else a publish could leave behind.
fn origin_files(net: &Network) -> Vec<String> {
    walk_files(&net.origin_dir, false)
        .into_iter()
        .filter(|f| !f.contains(".db") && !f.ends_with(".log") && !f.ends_with(".sock"))
        .collect()
}

#[test]
fn a_publish_changing_bytes_under_a_served_path_is_refused_and_writes_nothing() {
    if let Err(why) = dnf::available() {
        eprintln!(
            "SKIPPED a_publish_changing_bytes_under_a_served_path_is_refused_and_writes_nothing: {why}"
        );
        return;
    }
    let net = Network::builder()
        .repo(REPO)
        .agent(AgentSpec::v4())
        .agent(AgentSpec::v6())
        .start();
    let v1 = net.root.join("v1");
    fixture::repo_with(&v1, &[("fix", "1", 4)]);
    let p = net.publish(REPO, &v1, &["--json", "--timeout", "20"]);
    assert_eq!(p.code, 0, "{p:#?}");
    let rpm = "Packages/fix-1-1.noarch.rpm";
    let old_bytes = fixture::read(&v1.join(rpm));
    let metalink_before = net.metalink(REPO).unwrap();

    // The same file name rebuilt: other bytes (random payload, build time).
    let resigned = net.root.join("resigned");
    fixture::repo_with(&resigned, &[("fix", "1", 4)]);
    assert_ne!(fixture::read(&resigned.join(rpm)), old_bytes);
    let files_before = origin_files(&net);
    let refused = net.publish(REPO, &resigned, &["--timeout", "20"]);
    assert_ne!(
        refused.code, 0,
        "a changed path was published: {refused:#?}"
    );
    for needle in [
        rpm,
        "version 1",
        "Bump the package's release",
        "--allow-changed-paths",
    ] {
        assert!(
            refused.stderr.contains(needle),
            "the refusal names {needle:?}: {}",
            refused.stderr
        );
    }
    println!(
        "REPORT changed-path refusal (exit {}): {}",
        refused.code,
        refused.stderr.trim()
    );
    assert_eq!(
        origin_files(&net),
        files_before,
        "the refused publish stored nothing"
    );
    let status = net.status();
    let versions = status["repos"][0]["latest_version"].as_u64();
    assert_eq!(versions, Some(1), "no version was recorded: {status:#}");
    for a in &net.agents {
        assert_eq!(a.read_served(REPO, rpm).as_deref(), Some(&old_bytes[..]));
    }
    let before = Metalink::parse(&metalink_before);
    let after = Metalink::parse(&net.metalink(REPO).unwrap());
    assert_eq!(
        after.hashes, before.hashes,
        "the metalink still names version 1"
    );

    // A new release is a new file name: published without any option.
    let bumped = net.root.join("bumped");
    fixture::copy_dir(&v1, &bumped);
    fixture::build_rpm(&bumped, "fix", "1.1", 4);
    fixture::createrepo(&bumped);
    let p = net.publish(REPO, &bumped, &["--json", "--timeout", "20"]);
    assert_eq!(p.code, 0, "{p:#?}");

    // The explicit override goes through, and says what it did.
    let forced = net.publish(
        REPO,
        &resigned,
        &["--json", "--timeout", "20", "--allow-changed-paths"],
    );
    assert_eq!(forced.code, 0, "{forced:#?}");
    let new_bytes = fixture::read(&resigned.join(rpm));
    for a in &net.agents {
        assert_eq!(
            a.read_served(REPO, rpm).map(|b| sha256_hex(&b)),
            Some(sha256_hex(&new_bytes)),
            "agent {} serves the forced bytes",
            a.name
        );
    }
    assert!(
        net.origin_log_text().contains("--allow-changed-paths"),
        "the origin logs the override"
    );
}

/// Agent `i`'s `pushing` entry for `repo` in the origin's status, if a push
/// is under way.
fn pushing_phase(net: &Network, i: usize, repo: &str) -> Option<String> {
    let status = net.status();
    let agent = status["agents"]
        .as_array()?
        .iter()
        .find(|a| a["name"] == net.agents[i].name.as_str())?
        .clone();
    let mirror = agent["mirrors"]
        .as_array()?
        .iter()
        .find(|m| m["repo"] == repo)?
        .clone();
    mirror["pushing"]["phase"].as_str().map(str::to_owned)
}

fn flipped_ms(net: &Network, repo: &str, agent: &str, version: u64) -> Option<u64> {
    let pushes = net.last_pushes(repo);
    let p = pushes.get(agent)?;
    (p["version"].as_u64()? == version).then(|| p["flipped_unix_ms"].as_u64())?
}

#[test]
fn a_stalled_mirror_holds_the_others_back_at_most_stage_wait_and_is_not_listed() {
    let mut net = Network::builder()
        .repo(REPO)
        .origin_config("stage_wait_secs", "1")
        .origin_config("settle_secs", "2")
        .agent(AgentSpec::v4())
        .agent(AgentSpec::v6())
        .agent(AgentSpec::v4())
        .start();
    let root = net.root.clone();
    let version_dir = |v: u64| {
        let dir = root.join(format!("v{v}"));
        fixture::synthetic_repo(&dir, &[(format!("Packages/p{v}.rpm"), 4096)], v, v);
        dir
    };
    let v1 = version_dir(1);
    let p = net.publish(REPO, &v1, &["--json", "--timeout", "20"]);
    assert_eq!(p.code, 0, "{p:#?}");

    // m2 stalls for 8 s before staging (a slow disk, a partition).
    net.stop_agent(2, Signal::Term);
    net.set_agent_env(2, &[("FAILPOINTS", "receive::all_blobs=sleep(8000)")]);
    net.start_agent(2);
    let v2 = version_dir(2);
    let p = net.publish(REPO, &v2, &["--json", "--wait", "2", "--timeout", "30"]);
    assert_eq!(p.code, 0, "{p:#?}");
    let (names, m) = net.listed(REPO);
    assert_eq!(
        names,
        ["m0", "m1"],
        "only the flipped mirrors are listed: {m:?}"
    );
    assert_eq!(
        m.hashes["sha256"],
        sha256_hex(&fixture::read(&v2.join("repodata/repomd.xml")))
    );
    let first = flipped_ms(&net, REPO, "m0", 2).unwrap();
    // The late mirror flips as soon as it has staged: the settle is over.
    let late = hotpush_tests::wait_until("m2 to flip", Duration::from_secs(20), || {
        flipped_ms(&net, REPO, "m2", 2)
    });
    println!(
        "REPORT stalled mirror: m0/m1 waited {:.1} s for the flip (stage_wait 1 s + settle 2 s); m2 flipped {:.1} s after them",
        net.last_pushes(REPO)["m0"]["flip_wait_ms"]
            .as_u64()
            .unwrap() as f64
            / 1000.0,
        (late - first) as f64 / 1000.0
    );
    assert!(
        late > first + 4000,
        "m0 flipped without waiting for m2's 8 s stall ({first} vs {late})"
    );
    hotpush_tests::wait_until("m2 listed again", Duration::from_secs(10), || {
        (net.listed(REPO).0.len() == 3).then_some(())
    });

    // m2 staged, then froze before the flip (died, partitioned).
    net.stop_agent(2, Signal::Term);
    net.set_agent_env(2, &[]);
    net.start_agent(2);
    let v3 = version_dir(3);
    let mut publish = net
        .publish_cmd(REPO, &v3, &["--json", "--wait", "2", "--timeout", "30"])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    hotpush_tests::wait_until("m2 to stage", Duration::from_secs(10), || {
        (pushing_phase(&net, 2, REPO).as_deref() == Some("staged")).then_some(())
    });
    let m2 = net.agents[2].pid().unwrap().to_string();
    hotpush_tests::run_ok(Command::new("kill").args(["-STOP", &m2]));
    let code = publish.wait().unwrap();
    let (names, m) = net.listed(REPO);
    hotpush_tests::run_ok(Command::new("kill").args(["-CONT", &m2]));
    assert!(code.success(), "publish --wait 2 with m2 frozen: {code}");
    assert_eq!(
        names,
        ["m0", "m1"],
        "the frozen mirror is not listed: {m:?}"
    );
    assert_eq!(
        m.hashes["sha256"],
        sha256_hex(&fixture::read(&v3.join("repodata/repomd.xml")))
    );
    // Thawed, it flips (or is pushed again) and is listed once it acks.
    hotpush_tests::wait_until("m2 listed on v3", Duration::from_secs(30), || {
        (net.listed(REPO).0.len() == 3).then_some(())
    });
}
