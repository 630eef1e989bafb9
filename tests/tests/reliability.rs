//! Reliability: crashes, torn reads, full disks, bad networks, overlapping
//! publishes. Real processes (origin, agents, nginx), loopback only.
//!
//! - SIGKILL of an agent at every named push stage (failpoints, see
//!   `agent/src/swap.rs::stage`): what is served is exactly the old or the new
//!   snapshot, the persisted state agrees with it after the restart, and the
//!   catch-up push sends exactly the bytes the agent lacks on disk.
//! - SIGKILL of the origin during publishes: versions never reused or going
//!   back; agents converge by themselves; audit, metalink and agents agree.
//! - A torn-read hammer: 8 dnf-like clients checking every checksum through
//!   the built-in server and a real nginx while 50 publishes swap.
//! - A small filesystem of its own for an agent (tmpfs), a fault proxy
//!   between origin and agent, and a newer publish overtaking an older one.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use hotpush_tests::Tmpfs;
use hotpush_tests::dnf::LogMark;
use hotpush_tests::faultproxy::{FaultProxy, Mode};
use hotpush_tests::fixture::{self, referenced_files};
use hotpush_tests::nginx::Nginx;
use hotpush_tests::webcheck::{self, RepoWalker, WalkStats};
use hotpush_tests::{
    Agent, AgentSpec, Metalink, Network, Signal, free_port, sha256_hex, wait_for, wait_until,
};

const REPO: &str = "rel/x86_64";
const DEBUG_LOG: &str = "info,hotpush_agent=debug";

/// One published (or about to be published) snapshot and its source dir.
#[derive(Clone, Debug)]
struct Snap {
    version: u64,
    dir: PathBuf,
}

impl Snap {
    fn repomd(&self) -> Vec<u8> {
        fixture::read(&self.dir.join("repodata/repomd.xml"))
    }
}

/// `createrepo_c` with a distinct `--revision`, so every snapshot has its own
/// repomd.xml even when its packages equal an earlier one's.
fn createrepo_rev(dir: &Path, revision: u64) {
    hotpush_tests::run_ok(
        Command::new("bash")
            .arg(fixture::script())
            .arg("createrepo")
            .arg(dir)
            .arg(format!("--revision={revision}")),
    );
}

/// A repo at `dir` holding (hard links to) `rpms`.
fn repo_of(dir: &Path, rpms: &[&PathBuf], revision: u64) {
    let pkgs = dir.join("Packages");
    std::fs::create_dir_all(&pkgs).unwrap();
    for r in rpms {
        std::fs::hard_link(r, pkgs.join(r.file_name().unwrap())).unwrap();
    }
    createrepo_rev(dir, revision);
}

/// Builds `n` packages of `kb` KiB named `<prefix>N` under `dir/Packages`.
fn pool(dir: &Path, prefix: &str, n: usize, kb: u64) -> Vec<PathBuf> {
    (0..n)
        .map(|i| fixture::build_rpm(dir, &format!("{prefix}{i}"), "1.0", kb))
        .collect()
}

/// Which snapshot agent `a` serves, checked file by file: the served
/// repomd.xml must be one of `snaps`, `repodata` must point at that version,
/// and every file that snapshot references must be served byte for byte.
fn served_snapshot(a: &Agent, snaps: &[&Snap]) -> Result<u64, String> {
    let repomd = a
        .read_served(REPO, "repodata/repomd.xml")
        .ok_or("no repodata/repomd.xml served")?;
    let snap = snaps.iter().find(|s| s.repomd() == repomd).ok_or_else(|| {
        format!(
            "served repomd.xml (sha256 {}) is none of versions {:?}",
            sha256_hex(&repomd),
            snaps.iter().map(|s| s.version).collect::<Vec<_>>()
        )
    })?;
    let linked = a.linked_version(REPO);
    if linked != Some(snap.version) {
        return Err(format!(
            "repomd.xml is version {}'s but repodata points at {linked:?}",
            snap.version
        ));
    }
    for rel in referenced_files(&snap.dir) {
        let want = fixture::read(&snap.dir.join(&rel));
        match a.read_served(REPO, &rel) {
            Some(got) if got == want => {}
            Some(_) => return Err(format!("torn: {rel} differs from version {}", snap.version)),
            None => return Err(format!("torn: {rel} of version {} missing", snap.version)),
        }
    }
    Ok(snap.version)
}

/// `(bytes the agent still lacks for snap, bytes held in partial blobs)`,
/// read from its data dir: what a correct resume must send.
fn missing_on_disk(a: &Agent, snap: &Snap) -> (u64, u64) {
    let (mut missing, mut held) = (0, 0);
    for (hex, size) in fixture::blobs(&snap.dir) {
        if size == 0 {
            continue;
        }
        let obj = a
            .data_dir
            .join("objects/sha256")
            .join(&hex[..2])
            .join(&hex[2..]);
        if obj.is_file() {
            continue;
        }
        let part = std::fs::metadata(a.data_dir.join(format!("tmp/{hex}.part")))
            .map(|m| m.len().min(size))
            .unwrap_or(0);
        held += part;
        missing += size - part;
    }
    (missing, held)
}

/// How often `push stage` was logged for `stage` in `text`.
fn stage_hits(text: &str, stage: &str) -> usize {
    let quoted = format!("stage=\"{stage}\"");
    let bare = format!("stage={stage}");
    text.lines()
        .filter(|l| l.contains("push stage"))
        .filter(|l| l.contains(&quoted) || l.split_whitespace().any(|w| w == bare))
        .count()
}

/// Bytes sent by the last completed push of `version` to `agent`, from
/// the origin's status report (`agents[].mirrors[].last_push`).
fn acked_bytes(net: &Network, agent: &str, version: u64) -> Option<u64> {
    let (v, bytes) = net.last_push(agent, REPO)?;
    (v == version).then_some(bytes)
}

fn publish_json(out: &std::process::Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| {
            panic!(
                "publish printed no JSON ({}): {stdout}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        })
}

fn publish_ok(net: &Network, snap: &Snap, extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["--json", "--timeout", "60"];
    args.extend_from_slice(extra);
    let p = net.publish(REPO, &snap.dir, &args);
    assert_eq!(
        p.code,
        0,
        "publish of {} failed: {p:#?}",
        snap.dir.display()
    );
    let v = p.summary()["version"].as_u64().unwrap();
    assert_eq!(v, snap.version, "version numbering: {p:#?}");
    p.summary().clone()
}

/// Restarts agent `i` with `FAILPOINTS` (or none) and debug stage logging.
fn restart_agent(net: &mut Network, i: usize, failpoints: Option<&str>) {
    if net.agents[i].is_running() {
        net.stop_agent(i, Signal::Term);
    }
    let mut env = vec![("RUST_LOG", DEBUG_LOG)];
    if let Some(fp) = failpoints {
        env.push(("FAILPOINTS", fp));
    }
    net.set_agent_env(i, &env);
    net.start_agent(i);
}

/// fail-rs action that sleeps at the `nth` hit (1-based) of a failpoint.
fn sleep_at(stage: &str, nth: usize) -> String {
    if nth <= 1 {
        format!("{stage}=sleep(30000)")
    } else {
        format!("{stage}={}*off->sleep(30000)", nth - 1)
    }
}

/// After a restart, with a catch-up push possibly racing: the persisted
/// state (`hotpush-agent status`) and the served tree agree, sampled when
/// nothing moved in between.
fn assert_state_agrees(a: &Agent, snaps: &[&Snap]) -> u64 {
    let mut last = String::new();
    for _ in 0..60 {
        let s1 = a.status_version(REPO);
        let served = served_snapshot(a, snaps);
        let s2 = a.status_version(REPO);
        match served {
            Ok(v) if s1 == s2 && s1 == Some(v) => return v,
            Ok(v) if s1 == s2 => {
                last = format!("status says {s1:?}, served is version {v}");
            }
            other => last = format!("status {s1:?}→{s2:?}, served {other:?}"),
        }
        std::thread::sleep(Duration::from_millis(30));
    }
    panic!(
        "{}: persisted state never agreed with what is served: {last}",
        a.name
    );
}

#[derive(Debug)]
struct CrashRun {
    stage: String,
    nth: usize,
    served_after_kill: u64,
    status_after_kill: Option<u64>,
    held: u64,
    expected_resend: Option<u64>,
    resent: Option<u64>,
}

/// One crash: start agent 0 with a sleep at the `nth` hit of `stage`,
/// publish `next`, SIGKILL it there, check, restart, let it catch up.
fn crash_run(net: &mut Network, stage: &str, nth: usize, prev: &Snap, next: &Snap) -> CrashRun {
    restart_agent(net, 0, Some(&sleep_at(stage, nth)));
    let agent_mark = LogMark::at_end(&net.agents[0].log);
    let mut cmd = net.publish_cmd(REPO, &next.dir, &["--json", "--timeout", "60"]);
    let publish = std::thread::spawn(move || cmd.output().unwrap());
    wait_until(
        &format!("agent to reach {stage} #{nth}"),
        Duration::from_secs(30),
        || (stage_hits(&agent_mark.since(), stage) >= nth).then_some(()),
    );
    net.stop_agent(0, Signal::Kill);

    let a = &net.agents[0];
    let served_after_kill = served_snapshot(a, &[prev, next])
        .unwrap_or_else(|e| panic!("after SIGKILL at {stage} #{nth}: {e}"));
    let flipped = matches!(
        stage,
        "swap::after_flip" | "swap::done" | "push::before_ack"
    ) || stage.starts_with("gc::");
    let want = if flipped { next.version } else { prev.version };
    assert_eq!(
        served_after_kill, want,
        "SIGKILL at {stage} #{nth}: expected version {want} to be served"
    );
    let status_after_kill = a.status_version(REPO);
    let acked_before = stage.starts_with("gc::");
    let (missing, held) = missing_on_disk(a, next);

    restart_agent(net, 0, None);
    let a = &net.agents[0];
    assert_state_agrees(a, &[prev, next]);
    wait_until(
        &format!("catch-up to version {} after {stage}", next.version),
        Duration::from_secs(30),
        || {
            (served_snapshot(a, &[next]).ok() == Some(next.version)
                && a.status_version(REPO) == Some(next.version))
            .then_some(())
        },
    );
    let out = publish.join().unwrap();
    let json = publish_json(&out);
    assert_eq!(json["version"], next.version, "{json:#}");
    assert_eq!(json["agents"]["m0"]["state"], "live", "{json:#}");
    let (expected_resend, resent) = if acked_before {
        (None, None)
    } else {
        let sent = json["agents"]["m0"]["bytes_sent"].as_u64().unwrap();
        let logged = acked_bytes(net, "m0", next.version);
        assert_eq!(
            logged,
            Some(sent),
            "origin log and publish summary disagree on bytes sent"
        );
        assert_eq!(
            sent, missing,
            "SIGKILL at {stage} #{nth}: the agent lacked {missing} bytes (holding {held} in partial blobs), \
             but the catch-up push sent {sent}"
        );
        (Some(missing), Some(sent))
    };
    CrashRun {
        stage: stage.to_owned(),
        nth,
        served_after_kill,
        status_after_kill,
        held,
        expected_resend,
        resent,
    }
}

fn report_runs(title: &str, runs: &[CrashRun]) {
    eprintln!("== {title}: {} runs", runs.len());
    for r in runs {
        eprintln!(
            "  {:<28} #{:<3} served-after-kill v{} status-after-kill {:?} held {:>8} expected {:>9?} resent {:>9?}",
            r.stage,
            r.nth,
            r.served_after_kill,
            r.status_after_kill,
            r.held,
            r.expected_resend,
            r.resent
        );
    }
}

fn assert_verify_ok(a: &Agent) {
    let out = hotpush_tests::run(
        Command::new(hotpush_tests::bin("hotpush-agent"))
            .arg("verify")
            .arg("-c")
            .arg(&a.config),
    );
    assert!(
        out.status.success(),
        "hotpush-agent verify failed: {}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn agent_sigkill_while_receiving_resumes_from_the_offset_and_serves_old_or_new() {
    let mut net = Network::builder()
        .repo(REPO)
        .agent(AgentSpec::v4().env("RUST_LOG", DEBUG_LOG))
        .start();
    let base = net.root.join("s1");
    fixture::repo_with(&base, &[("base", "1.0", 8)]);
    let mut prev = Snap {
        version: 1,
        dir: base,
    };
    publish_ok(&net, &prev, &[]);

    // (stage, nth hit): a fresh 8 MiB package (32 chunks of 256 KiB) plus new
    // repodata each time.
    let plan: &[(&str, usize)] = &[
        ("receive::chunk_written", 2),
        ("receive::chunk_written", 4),
        ("receive::chunk_written", 6),
        ("receive::chunk_written", 8),
        ("receive::chunk_written", 10),
        ("receive::blob_done", 1),
        ("receive::blob_done", 2),
        ("receive::blob_done", 4),
        ("receive::all_blobs", 1),
    ];
    let mut runs = Vec::new();
    for (k, (stage, nth)) in plan.iter().enumerate() {
        let version = prev.version + 1;
        let dir = net.root.join(format!("s{version}"));
        fixture::copy_dir(&prev.dir, &dir);
        fixture::build_rpm(&dir, &format!("big{k}"), "1.0", 8192);
        fixture::createrepo(&dir);
        let next = Snap { version, dir };
        runs.push(crash_run(&mut net, stage, *nth, &prev, &next));
        prev = next;
    }
    report_runs("agent SIGKILL while receiving", &runs);
    assert!(
        runs.iter().any(|r| r.held > 0 && r.resent.is_some()),
        "no run left a partial blob to resume: the test proved nothing about offsets"
    );
    assert_verify_ok(&net.agents[0]);
    let a = &net.agents[0];
    assert!(
        hotpush_tests::walk_files(&a.data_dir.join("tmp"), false).is_empty(),
        "partial blobs left behind after every push completed"
    );
}

#[test]
fn agent_sigkill_during_swap_ack_and_gc_serves_old_or_new_and_resends_nothing() {
    let mut net = Network::builder()
        .repo(REPO)
        // retain 0: every push's GC removes the previous snapshot, so the
        // gc:: stages do real work.
        .agent(
            AgentSpec::v4()
                .env("RUST_LOG", DEBUG_LOG)
                .config("retain_for_secs", "0"),
        )
        .start();
    let rpms = net.root.join("rpms");
    let common = pool(&rpms, "common", 1, 64);
    let set_a = pool(&rpms, "alpha", 3, 16);
    let set_b = pool(&rpms, "beta", 3, 16);
    let root = net.root.clone();
    let snap = |version: u64| {
        let dir = root.join(format!("s{version}"));
        let set = if version % 2 == 1 { &set_a } else { &set_b };
        let rpms: Vec<&PathBuf> = common.iter().chain(set.iter()).collect();
        repo_of(&dir, &rpms, version);
        Snap { version, dir }
    };
    let mut prev = snap(1);
    publish_ok(&net, &prev, &[]);

    let plan: &[(&str, usize)] = &[
        ("swap::start", 1),
        ("swap::placed_package", 1),
        ("swap::placed_package", 3),
        ("swap::before_stage", 1),
        ("swap::before_flip", 1),
        ("swap::after_flip", 1),
        ("swap::done", 1),
        ("push::before_ack", 1),
        ("gc::start", 1),
        ("gc::removed_snapshot_files", 1),
        ("gc::start", 1),
        ("gc::removed_snapshot_files", 1),
    ];
    let mut runs = Vec::new();
    for (stage, nth) in plan {
        let next = snap(prev.version + 1);
        runs.push(crash_run(&mut net, stage, *nth, &prev, &next));
        prev = next;
    }
    report_runs("agent SIGKILL during swap/ack/gc", &runs);
    for r in &runs {
        if let Some(sent) = r.resent {
            assert_eq!(sent, 0, "{r:?}: every blob was already received");
        }
    }

    // One clean push more: GC converges (retain 0) — nothing of the crashed
    // runs leaks, nothing current is missing.
    let last = snap(prev.version + 1);
    publish_ok(&net, &last, &[]);
    let a = &net.agents[0];
    // Exactly the live snapshot: with retain_for 0 nothing of the replaced
    // one is carried into the new version's repodata directory.
    let mut want_files = referenced_files(&last.dir);
    want_files.sort();
    want_files.dedup();
    let repodata_dirs = || -> Vec<String> {
        std::fs::read_dir(a.served(REPO).join(".repodata"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while (a.served_files(REPO) != want_files || repodata_dirs().len() > 1)
        && Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        a.served_files(REPO),
        want_files,
        "after a clean push with retain 0, the served tree should be the live snapshot only"
    );
    assert_eq!(served_snapshot(a, &[&last]), Ok(last.version));
    assert_verify_ok(a);
    let mut objects: Vec<String> = hotpush_tests::walk_files(&a.data_dir.join("objects"), false)
        .iter()
        .map(|p| p.replace("sha256/", "").replace('/', ""))
        .collect();
    objects.sort();
    let want: Vec<String> = fixture::blobs(&last.dir).into_keys().collect();
    assert_eq!(
        objects, want,
        "blob store after GC (retain 0) should hold exactly the live snapshot's blobs"
    );
    assert_eq!(
        repodata_dirs(),
        vec![last.version.to_string()],
        "old repodata dirs left"
    );
}

/// `(version, manifest digest)` of every publish of `repo` in `hotpush-origin audit`.
fn audit_versions(net: &Network) -> Vec<(u64, String)> {
    let out = hotpush_tests::run_ok(net.origin_cmd().arg("audit"));
    out.lines()
        .filter(|l| l.split('\t').any(|f| f == "publish"))
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            // Find the repo field (printed as `<repo>` or `v<repo>`), then version, digest.
            let i = f
                .iter()
                .position(|x| *x == REPO || x.strip_prefix('v') == Some(REPO))?;
            let version = f.get(i + 1)?.trim_start_matches('v').parse().ok()?;
            Some((version, (*f.get(i + 2)?).to_owned()))
        })
        .collect()
}

fn status_repo(net: &Network) -> serde_json::Value {
    net.status()["repos"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["repo"] == REPO)
        .cloned()
        .unwrap_or_default()
}

#[test]
fn origin_sigkill_during_publishes_never_reuses_a_version_and_agents_converge() {
    let mut net = Network::builder()
        .repo(REPO)
        .agent(AgentSpec::v4())
        // m1 is slow to receive, so kills land while it is mid-stream.
        .agent(
            AgentSpec::v6()
                .env("RUST_LOG", DEBUG_LOG)
                .env("FAILPOINTS", "receive::chunk_written=sleep(40)"),
        )
        .start();
    let rpms = pool(&net.root.join("rpms"), "p", 6, 256);
    let root = net.root.clone();
    let mk = |k: u64| {
        let dir = root.join(format!("src{k}"));
        let set: Vec<&PathBuf> = (0..3)
            .map(|j| &rpms[(k as usize + j) % rpms.len()])
            .collect();
        repo_of(&dir, &set, k);
        dir
    };
    let first = Snap {
        version: 1,
        dir: mk(1),
    };
    publish_ok(&net, &first, &[]);
    let mut by_version: BTreeMap<u64, Snap> = BTreeMap::from([(1, first)]);
    let mut max_seen = 1u64;
    let mut agent_versions = [1u64, 1];

    enum Trigger {
        Delay(u64),
        OriginLog(&'static str),
        M1Offer,
    }
    let plan = [
        Trigger::Delay(0),
        Trigger::OriginLog("published"),
        Trigger::M1Offer,
        Trigger::OriginLog("acked agent=m0"),
        Trigger::Delay(120),
        Trigger::Delay(400),
    ];
    let mut kills = Vec::new();
    for (k, trigger) in plan.iter().enumerate() {
        let attempt = k as u64 + 2;
        let dir = mk(attempt);
        let origin_mark = LogMark::at_end(&net.origin_log);
        let m1_mark = LogMark::at_end(&net.agents[1].log);
        let mut cmd = net.publish_cmd(REPO, &dir, &["--json", "--timeout", "30"]);
        let publish = std::thread::spawn(move || cmd.output().unwrap());
        let label = match trigger {
            Trigger::Delay(ms) => {
                std::thread::sleep(Duration::from_millis(*ms));
                format!("{ms} ms after publish started")
            }
            Trigger::OriginLog(text) => {
                wait_until(text, Duration::from_secs(20), || {
                    origin_mark.since().contains(text).then_some(())
                });
                format!("after origin logged {text:?}")
            }
            Trigger::M1Offer => {
                wait_until("m1 mid-stream", Duration::from_secs(20), || {
                    (stage_hits(&m1_mark.since(), "receive::chunk_written") >= 2).then_some(())
                });
                "while m1 was receiving blobs".to_owned()
            }
        };
        net.stop_origin(Signal::Kill);
        let out = publish.join().unwrap();
        net.start_origin();

        let audit = audit_versions(&net);
        let versions: Vec<u64> = audit.iter().map(|(v, _)| *v).collect();
        assert!(
            versions.windows(2).all(|w| w[0] < w[1]),
            "audit versions not strictly increasing: {versions:?}"
        );
        let latest = *versions.last().unwrap();
        assert!(
            latest >= max_seen,
            "latest version went back: {latest} < {max_seen}"
        );
        let created = latest > max_seen;
        if created {
            assert_eq!(
                latest,
                max_seen + 1,
                "a version number was skipped or reused"
            );
            by_version.insert(
                latest,
                Snap {
                    version: latest,
                    dir: dir.clone(),
                },
            );
        }
        max_seen = latest;
        assert_eq!(
            status_repo(&net)["latest_version"],
            latest,
            "origin status vs audit"
        );
        // Every agent converges on the latest version by itself.
        let snaps: Vec<&Snap> = by_version.values().collect();
        let want = &by_version[&latest];
        for (i, seen) in agent_versions.iter_mut().enumerate() {
            let a = &net.agents[i];
            wait_for(
                &format!("{} to converge on version {latest} ({label})", a.name),
                Duration::from_secs(30),
                || {
                    let s = a.status_version(REPO).unwrap_or(0);
                    assert!(s >= *seen, "{}: version went back {seen} → {s}", a.name);
                    *seen = s;
                    if s != latest {
                        return Err(format!("status says version {s}"));
                    }
                    match served_snapshot(a, &snaps)? {
                        v if v == latest => Ok(()),
                        v => Err(format!("serves version {v}")),
                    }
                },
            );
            let digest = &audit.last().unwrap().1;
            assert!(
                a.status_text()
                    .contains(&format!("manifest {}", &digest[..16])),
                "{}: installed manifest is not the audited {digest}: {}",
                a.name,
                a.status_text()
            );
        }
        // The metalink lists both, for exactly what they serve.
        let repomd = want.repomd();
        let urls: Vec<String> = net.agents.iter().map(|a| a.repomd_url(REPO)).collect();
        wait_until(
            "metalink to list both agents",
            Duration::from_secs(10),
            || {
                let m = Metalink::parse(&net.metalink(REPO).ok()?);
                let mut got = m.urls.clone();
                got.sort();
                let mut want_urls = urls.clone();
                want_urls.sort();
                (got == want_urls && m.hashes.get("sha256") == Some(&sha256_hex(&repomd)))
                    .then_some(())
            },
        );
        assert_eq!(status_repo(&net)["metalink_version"], latest);
        kills.push((label, out.status.code(), created, latest));
    }
    eprintln!("== origin SIGKILL: {} kills", kills.len());
    for (label, code, created, latest) in &kills {
        eprintln!(
            "  kill {label:<45} publish exit {code:?} version created {created} latest v{latest}"
        );
    }
    // After all that, a publish gets the next number, and everyone takes it.
    let next = Snap {
        version: max_seen + 1,
        dir: mk(100),
    };
    let json = publish_ok(&net, &next, &[]);
    assert_eq!(json["live"], 2, "{json:#}");
}

/// Builds `n` snapshots over a pool of `pool_n` packages: snapshot k holds a
/// sliding window of 4, so each publish adds one package and removes one.
fn sliding_snapshots(root: &Path, first_version: u64, n: u64, pool_n: usize) -> Vec<Snap> {
    let rpms = pool(&root.join("rpms"), "w", pool_n, 12);
    (0..n)
        .map(|k| {
            let version = first_version + k;
            let dir = root.join(format!("snap{version}"));
            let set: Vec<&PathBuf> = (0..4).map(|j| &rpms[(k as usize + j) % pool_n]).collect();
            repo_of(&dir, &set, version);
            Snap { version, dir }
        })
        .collect()
}

#[test]
fn torn_read_hammer_eight_clients_fifty_swaps_agent_server_and_nginx() {
    if let Err(why) = hotpush_tests::nginx::available() {
        panic!("nginx is required for this test: {why}");
    }
    let net = Network::builder().repo(REPO).agent(AgentSpec::v4()).start();
    let snaps = sliding_snapshots(&net.root, 1, 51, 9);
    publish_ok(&net, &snaps[0], &[]);
    let nginx_addr = SocketAddr::new(
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        free_port(IpAddr::V4(Ipv4Addr::LOCALHOST)),
    );
    let nginx = Nginx::start(
        nginx_addr,
        &net.agents[0].serve_root,
        &net.root.join("nginx"),
    );
    let targets = [(net.agents[0].http, "agent"), (nginx_addr, "nginx")];

    let done = Arc::new(AtomicBool::new(false));
    let (per_target, publishes) = std::thread::scope(|s| {
        let clients: Vec<_> = (0..8)
            .map(|c| {
                let (addr, name) = targets[c % 2];
                let done = done.clone();
                s.spawn(move || {
                    let mut w = RepoWalker::new(addr, REPO);
                    while !done.load(Ordering::SeqCst) {
                        w.walk();
                    }
                    (name, w.stats)
                })
            })
            .collect();
        let started = Instant::now();
        for snap in &snaps[1..] {
            publish_ok(&net, snap, &[]);
        }
        let publish_time = started.elapsed();
        // A last lap for every client on the final snapshot.
        std::thread::sleep(Duration::from_millis(300));
        done.store(true, Ordering::SeqCst);
        let mut per: BTreeMap<&str, WalkStats> = BTreeMap::new();
        for c in clients {
            let (name, stats) = c.join().unwrap();
            per.entry(name).or_default().add(&stats);
        }
        (per, (snaps.len() - 1, publish_time))
    });
    eprintln!(
        "== torn-read hammer: {} publishes in {:?}",
        publishes.0, publishes.1
    );
    for (name, st) in &per_target {
        eprintln!(
            "  {name:<6} walks {} requests {} repomds {} straddled-a-swap {} 404s {} mismatches {} errors {}",
            st.walks,
            st.requests,
            st.repomds_seen,
            st.straddled,
            st.not_found,
            st.mismatches,
            st.errors
        );
    }
    for (name, st) in &per_target {
        assert!(st.walks > 0, "{name}: no client walk completed");
        assert_eq!(
            (st.not_found, st.mismatches, st.errors),
            (0, 0, 0),
            "{name}: torn reads: {:#?}\nnginx error log:\n{}",
            st.problems,
            nginx.error_log()
        );
    }
    // A client still holding the very first repomd.xml finds all it names.
    for (addr, name) in targets {
        let mut w = RepoWalker::new(addr, REPO);
        w.walk_from(&snaps[0].repomd());
        assert_eq!(
            (w.stats.not_found, w.stats.mismatches, w.stats.errors),
            (0, 0, 0),
            "{name}: version 1 not reachable inside retain_for: {:#?}",
            w.stats.problems
        );
    }
}

#[test]
fn gc_keeps_everything_a_snapshot_inside_retain_for_references() {
    const RETAIN: u64 = 4;
    let net = Network::builder()
        .repo(REPO)
        .agent(AgentSpec::v4().config("retain_for_secs", &RETAIN.to_string()))
        .start();
    let snaps = sliding_snapshots(&net.root, 1, 6, 6);
    let a = &net.agents[0];
    let reachable = |snap: &Snap| {
        let mut w = RepoWalker::new(a.http, REPO);
        w.walk_from(&snap.repomd());
        w.stats
    };
    // Packages of `old` snapshots that none of `kept` references.
    let removed_pkg = |old: &[Snap], kept: &[Snap]| -> Vec<String> {
        let now: Vec<String> = kept.iter().flat_map(|s| referenced_files(&s.dir)).collect();
        let mut gone: Vec<String> = old
            .iter()
            .flat_map(|s| referenced_files(&s.dir))
            .filter(|p| p.starts_with("Packages/") && !now.contains(p))
            .collect();
        gone.sort();
        gone.dedup();
        gone
    };
    // v1, v2, v3 in quick succession: all inside the window.
    for s in &snaps[..3] {
        publish_ok(&net, s, &[]);
    }
    std::thread::sleep(Duration::from_millis(500)); // GC runs after the ack
    for s in &snaps[..3] {
        let st = reachable(s);
        assert_eq!(
            (st.not_found, st.mismatches, st.errors),
            (0, 0, 0),
            "version {} inside retain_for: {:#?}",
            s.version,
            st.problems
        );
    }
    // Removed by v2 and v3, still served: inside the window.
    for p in removed_pkg(&snaps[..2], &snaps[2..3]) {
        assert!(
            a.read_served(REPO, &p).is_some(),
            "{p} removed inside retain_for"
        );
    }
    let gone_later = removed_pkg(&snaps[..2], &snaps[2..4]);
    assert!(!gone_later.is_empty());
    let kept_later = removed_pkg(&snaps[2..3], &snaps[3..4]);
    assert!(!kept_later.is_empty());
    // Let v1 and v2 expire (v3 is replaced only by v4, so stays inside).
    std::thread::sleep(Duration::from_secs(RETAIN) + Duration::from_millis(300));
    publish_ok(&net, &snaps[3], &[]);
    wait_until("GC after v4", Duration::from_secs(10), || {
        gone_later
            .iter()
            .all(|p| a.read_served(REPO, p).is_none())
            .then_some(())
    });
    for s in &snaps[2..4] {
        let st = reachable(s);
        assert_eq!(
            (st.not_found, st.mismatches, st.errors),
            (0, 0, 0),
            "GC removed something version {} (inside retain_for) references: {:#?}",
            s.version,
            st.problems
        );
    }
    for p in &kept_later {
        assert!(
            a.read_served(REPO, p).is_some(),
            "{p} (version 3, replaced just now) was collected inside retain_for"
        );
    }
    let st = reachable(&snaps[0]);
    assert!(
        st.not_found > 0,
        "version 1 expired {RETAIN} s ago and should have been collected"
    );
    let versions: Vec<String> = std::fs::read_dir(a.served(REPO).join(".repodata"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let mut versions = versions;
    versions.sort();
    assert_eq!(versions, vec!["3", "4"], "repodata dirs after GC");
}

fn agent_last_error(net: &Network, name: &str) -> String {
    net.status()["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == name)
        .map(|a| a["last_error"].as_str().unwrap_or_default().to_owned())
        .unwrap_or_default()
}

#[test]
fn disk_full_agent_refuses_with_a_reason_keeps_serving_and_catches_up() {
    let scratch = tempfile::tempdir().unwrap();
    let disk = match Tmpfs::mount(&scratch.path().join("disk"), "20m") {
        Ok(d) => d,
        Err(e) => panic!("mounting a tmpfs needs root: {e}"),
    };
    let mut net = Network::builder()
        .repo(REPO)
        .agent(
            AgentSpec::v4()
                .data_root(&disk.dir)
                .config("min_free_bytes", "1048576")
                .env("RUST_LOG", DEBUG_LOG),
        )
        .agent(AgentSpec::v4())
        .start();
    let s1 = Snap {
        version: 1,
        dir: net.root.join("s1"),
    };
    fixture::repo_with(&s1.dir, &[("small", "1.0", 64)]);
    publish_ok(&net, &s1, &[]);

    // v2 carries 24 MiB: more than the agent's 20 MiB disk.
    let s2 = Snap {
        version: 2,
        dir: net.root.join("s2"),
    };
    fixture::copy_dir(&s1.dir, &s2.dir);
    fixture::build_rpm(&s2.dir, "huge", "1.0", 24 * 1024);
    fixture::createrepo(&s2.dir);
    let p = net.publish(
        REPO,
        &s2.dir,
        &["--json", "--wait", "all", "--timeout", "4"],
    );
    assert_eq!(p.code, 3, "publish must report not live: {p:#?}");
    assert_eq!(p.agent("m1")["state"], "live", "{p:#?}");
    let reason = p.agent("m0")["reason"].as_str().unwrap().to_owned();
    assert!(
        reason.contains("disk") && reason.contains("space"),
        "the origin should say the disk is full: {reason:?}"
    );
    let last_error = agent_last_error(&net, "m0");
    assert!(
        last_error.contains("disk"),
        "origin status should show the reason: {last_error:?}"
    );
    let a = &net.agents[0];
    assert_eq!(
        served_snapshot(a, &[&s1, &s2]),
        Ok(1),
        "old snapshot keeps being served"
    );
    assert_eq!(a.status_version(REPO), Some(1));
    // The metalink moved to v2 with m1 only.
    let m = Metalink::parse(&net.metalink(REPO).unwrap());
    assert_eq!(m.urls, vec![net.agents[1].repomd_url(REPO)], "{m:#?}");

    // Space returns: it catches up without a new publish.
    disk.resize("200m");
    let t = Instant::now();
    wait_until(
        "m0 to catch up after space returned",
        Duration::from_secs(45),
        || (served_snapshot(&net.agents[0], &[&s2]) == Ok(2)).then_some(()),
    );
    eprintln!(
        "== disk full (precheck): caught up {:?} after remount; reason was {reason:?}",
        t.elapsed()
    );
    wait_until("ack recorded", Duration::from_secs(10), || {
        acked_bytes(&net, "m0", 2)
    });

    // Now the disk fills up while a push is writing (the space check passed).
    restart_agent(
        &mut net,
        0,
        Some("receive::chunk_written=1*off->1*sleep(3000)"),
    );
    let s3 = Snap {
        version: 3,
        dir: net.root.join("s3"),
    };
    fixture::copy_dir(&s2.dir, &s3.dir);
    fixture::build_rpm(&s3.dir, "more", "1.0", 8 * 1024);
    fixture::createrepo(&s3.dir);
    let agent_mark = LogMark::at_end(&net.agents[0].log);
    let mut cmd = net.publish_cmd(
        REPO,
        &s3.dir,
        &["--json", "--wait", "all", "--timeout", "60"],
    );
    let publish = std::thread::spawn(move || cmd.output().unwrap());
    wait_until("second chunk", Duration::from_secs(20), || {
        (stage_hits(&agent_mark.since(), "receive::chunk_written") >= 2).then_some(())
    });
    // Fill the disk completely.
    let filler = disk.dir.join("filler");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 1 << 20];
        while f.write_all(&block).is_ok() {}
        let _ = f.flush();
    }
    wait_until("refusal for disk", Duration::from_secs(20), || {
        let log = agent_mark.since();
        log.lines()
            .find(|l| l.contains("push refused") && l.contains("RejectDisk"))
            .map(str::to_owned)
    });
    let a = &net.agents[0];
    assert_eq!(
        served_snapshot(a, &[&s2, &s3]),
        Ok(2),
        "old snapshot keeps being served"
    );
    wait_until(
        "origin to show the disk reason",
        Duration::from_secs(10),
        || agent_last_error(&net, "m0").contains("space").then_some(()),
    );
    let mid_reason = agent_last_error(&net, "m0");
    std::fs::remove_file(&filler).unwrap();
    let out = publish.join().unwrap();
    let json = publish_json(&out);
    assert_eq!(json["agents"]["m0"]["state"], "live", "{json:#}");
    assert_eq!(served_snapshot(&net.agents[0], &[&s3]), Ok(3));
    let total_new: u64 = {
        let old = fixture::blobs(&s2.dir);
        fixture::blobs(&s3.dir)
            .iter()
            .filter(|(h, _)| !old.contains_key(*h))
            .map(|(_, n)| n)
            .sum()
    };
    let sent = acked_bytes(&net, "m0", 3).unwrap();
    eprintln!(
        "== disk full (mid-write): reason {mid_reason:?}; catch-up sent {sent} of {total_new} new bytes"
    );
    assert!(sent <= total_new, "{sent} > {total_new}");
}

#[test]
fn network_faults_drop_stall_unreachable_do_not_slow_others_and_the_agent_catches_up() {
    let proxy = FaultProxy::start();
    let mut net = Network::builder()
        .repo(REPO)
        .agent(AgentSpec::v4())
        .agent(AgentSpec::v4().endpoint(&proxy.endpoint()))
        .start();
    proxy.set_target(net.agents[1].listen);
    let mut snaps = vec![Snap {
        version: 1,
        dir: net.root.join("s1"),
    }];
    fixture::repo_with(&snaps[0].dir, &[("base", "1.0", 16)]);
    publish_ok(&net, &snaps[0], &[]);
    let next = |snaps: &mut Vec<Snap>, kb: u64| {
        let prev = snaps.last().unwrap().clone();
        let version = prev.version + 1;
        let dir = net.root.join(format!("s{version}"));
        fixture::copy_dir(&prev.dir, &dir);
        fixture::build_rpm(&dir, &format!("n{version}"), "1.0", kb);
        fixture::createrepo(&dir);
        snaps.push(Snap { version, dir });
        snaps.last().unwrap().clone()
    };
    let m0_only = vec![net.agents[0].repomd_url(REPO)];
    let metalink_urls = |net: &Network| Metalink::parse(&net.metalink(REPO).unwrap()).urls;

    // 1. Connection cut mid-stream (twice): the retry resumes.
    let s2 = next(&mut snaps, 6 * 1024);
    let up0 = proxy.up_bytes();
    proxy.cut_after_up_bytes(2 << 20);
    let origin_mark = LogMark::at_end(&net.origin_log);
    let p = net.publish(
        REPO,
        &s2.dir,
        &["--json", "--wait", "all", "--timeout", "60"],
    );
    assert_eq!(p.code, 0, "{p:#?}");
    let wire = proxy.up_bytes() - up0;
    let new_bytes: u64 = {
        let old = fixture::blobs(&snaps[0].dir);
        fixture::blobs(&s2.dir)
            .iter()
            .filter(|(h, _)| !old.contains_key(*h))
            .map(|(_, n)| n)
            .sum()
    };
    let resent = acked_bytes(&net, "m1", 2).unwrap();
    assert!(proxy.cuts() >= 1, "the proxy never cut a connection");
    assert!(
        origin_mark.since().contains("push failed"),
        "the cut should have failed one push"
    );
    assert!(
        resent < new_bytes,
        "after a cut the retry must resume: resent {resent} of {new_bytes}"
    );
    assert!(
        wire < new_bytes + (1 << 20) + (256 << 10),
        "bytes on the wire {wire} for {new_bytes} new bytes: more than one resume's worth resent"
    );
    eprintln!("== network: cut after 2 MiB: retry sent {resent} of {new_bytes}, wire total {wire}");
    assert_eq!(served_snapshot(&net.agents[1], &[&s2]), Ok(2));

    // 2. Stalled peer: m0 is not slowed; m1 leaves the metalink, then catches up.
    let s3 = next(&mut snaps, 512);
    proxy.set_mode(Mode::Stall);
    let p = net.publish(REPO, &s3.dir, &["--json", "--wait", "1", "--timeout", "30"]);
    assert_eq!(p.code, 0, "{p:#?}");
    assert_eq!(p.agent("m0")["state"], "live");
    assert!(
        p.elapsed < Duration::from_secs(5),
        "a stalled m1 slowed the publish to m0: {:?}",
        p.elapsed
    );
    wait_until("metalink without m1", Duration::from_secs(5), || {
        (metalink_urls(&net) == m0_only).then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(served_snapshot(&net.agents[1], &[&s2, &s3]), Ok(2));
    proxy.set_mode(Mode::Pass);
    let t = Instant::now();
    wait_until(
        "m1 to catch up after the stall",
        Duration::from_secs(60),
        || (served_snapshot(&net.agents[1], &[&s3]) == Ok(3)).then_some(()),
    );
    let stall_catchup = t.elapsed();
    wait_until("metalink with both", Duration::from_secs(10), || {
        (metalink_urls(&net).len() == 2).then_some(())
    });

    // 3. Unreachable for a while: backoff, then catch-up with no new publish.
    let s4 = next(&mut snaps, 256);
    proxy.set_mode(Mode::Refuse);
    let origin_mark = LogMark::at_end(&net.origin_log);
    let p = net.publish(REPO, &s4.dir, &["--json", "--wait", "1", "--timeout", "30"]);
    assert_eq!(p.code, 0, "{p:#?}");
    assert!(
        p.elapsed < Duration::from_secs(5),
        "m0 slowed: {:?}",
        p.elapsed
    );
    wait_until("metalink without m1", Duration::from_secs(5), || {
        (metalink_urls(&net) == m0_only).then_some(())
    });
    std::thread::sleep(Duration::from_secs(4));
    let failures: Vec<String> = origin_mark
        .since()
        .lines()
        .filter(|l| l.contains("push failed") && l.contains("agent=m1"))
        .map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("retry_in="))
                .unwrap_or("?")
                .to_owned()
        })
        .collect();
    assert!(
        (2..=8).contains(&failures.len()),
        "expected a few retries with backoff in 4 s, got {failures:?}"
    );
    proxy.set_mode(Mode::Pass);
    let t = Instant::now();
    wait_until(
        "m1 to catch up after being unreachable",
        Duration::from_secs(40),
        || (served_snapshot(&net.agents[1], &[&s4]) == Ok(4)).then_some(()),
    );
    let unreachable_catchup = t.elapsed();
    wait_until("metalink with both", Duration::from_secs(10), || {
        (metalink_urls(&net).len() == 2).then_some(())
    });
    eprintln!(
        "== network: stall catch-up {stall_catchup:?}; unreachable retries (retry_in) {failures:?}, catch-up {unreachable_catchup:?}"
    );
    let _ = &mut net;
}

#[test]
fn a_newer_publish_supersedes_one_still_streaming_and_the_older_is_never_installed() {
    let net = Network::builder()
        .repo(REPO)
        .agent(
            AgentSpec::v4()
                .env("RUST_LOG", DEBUG_LOG)
                // ~16 chunks/s: an 8 MiB blob streams for ~8 s.
                .env("FAILPOINTS", "receive::chunk_written=sleep(60)"),
        )
        .agent(AgentSpec::v6())
        .start();
    let s1 = Snap {
        version: 1,
        dir: net.root.join("s1"),
    };
    fixture::repo_with(&s1.dir, &[("base", "1.0", 8)]);
    publish_ok(&net, &s1, &[]);
    let s2 = Snap {
        version: 2,
        dir: net.root.join("s2"),
    };
    fixture::copy_dir(&s1.dir, &s2.dir);
    fixture::build_rpm(&s2.dir, "big", "1.0", 8 * 1024);
    fixture::createrepo(&s2.dir);
    let s3 = Snap {
        version: 3,
        dir: net.root.join("s3"),
    };
    fixture::copy_dir(&s2.dir, &s3.dir);
    fixture::build_rpm(&s3.dir, "fix", "1.0", 8);
    fixture::createrepo(&s3.dir);

    let m0_mark = LogMark::at_end(&net.agents[0].log);
    let origin_mark = LogMark::at_end(&net.origin_log);
    let seen = std::sync::Mutex::new(Vec::<u64>::new());
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        // Watch what m0 serves the whole time.
        s.spawn(|| {
            while !stop.load(Ordering::SeqCst) {
                if let Some(v) = net.agents[0].linked_version(REPO) {
                    let mut seen = seen.lock().unwrap();
                    if seen.last() != Some(&v) {
                        seen.push(v);
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        });
        // `--wait 1`: m1 acks v2; m0 never will (superseded), and the CLI
        // would otherwise wait out its whole timeout for it.
        let older =
            s.spawn(|| net.publish(REPO, &s2.dir, &["--json", "--wait", "1", "--timeout", "30"]));
        wait_until("v2 streaming to m0", Duration::from_secs(20), || {
            (stage_hits(&m0_mark.since(), "receive::chunk_written") >= 10).then_some(())
        });
        let p3 = net.publish(REPO, &s3.dir, &["--json", "--timeout", "60"]);
        assert_eq!(p3.code, 0, "{p3:#?}");
        let _ = older.join().unwrap();
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, Ordering::SeqCst);
    });
    let seen = seen.into_inner().unwrap();
    let log = m0_mark.since();
    eprintln!("== overlap: m0 served versions in order {seen:?}");
    assert!(
        seen.windows(2).all(|w| w[0] < w[1]),
        "served version went backwards: {seen:?}"
    );
    assert_eq!(seen.last(), Some(&3));
    assert!(
        !log.lines()
            .any(|l| l.contains("acked: snapshot is live") && l.contains("version=2")),
        "m0 installed the superseded version 2:\n{log}"
    );
    assert!(
        log.contains("superseded") || origin_mark.since().contains("superseded"),
        "nobody reported v2 as superseded"
    );
    assert_eq!(served_snapshot(&net.agents[0], &[&s3]), Ok(3));
    assert_eq!(served_snapshot(&net.agents[1], &[&s2, &s3]), Ok(3));
    // Half of the big blob was streamed for v2; v3 resumes it.
    let sent = acked_bytes(&net, "m0", 3).unwrap();
    let total_new: u64 = {
        let old = fixture::blobs(&s1.dir);
        fixture::blobs(&s3.dir)
            .iter()
            .filter(|(h, _)| !old.contains_key(*h))
            .map(|(_, n)| n)
            .sum()
    };
    eprintln!("== overlap: v3 push to m0 sent {sent} of {total_new} new bytes");
    assert!(
        sent < total_new,
        "v3 resent the part v2 had streamed: {sent} of {total_new}"
    );
}

#[test]
fn webcheck_parses_createrepo_output() {
    let dir = tempfile::tempdir().unwrap();
    fixture::repo_with(dir.path(), &[("a", "1.0", 1), ("b", "1.0", 1)]);
    let repomd = std::fs::read_to_string(dir.path().join("repodata/repomd.xml")).unwrap();
    let entries = webcheck::repomd_entries(&repomd);
    assert_eq!(entries.len(), 3, "{entries:?}");
    let primary = entries.iter().find(|(h, _)| h.contains("primary")).unwrap();
    let body = fixture::read(&dir.path().join(&primary.0));
    assert_eq!(sha256_hex(&body), primary.1);
    let pkgs = webcheck::primary_packages(&String::from_utf8_lossy(&webcheck::gunzip(&body)));
    assert_eq!(pkgs.len(), 2, "{pkgs:?}");
    for (href, sum) in pkgs {
        assert_eq!(sha256_hex(&fixture::read(&dir.path().join(href))), sum);
    }
}
