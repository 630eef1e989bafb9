//! What keeps the lane from rotting between emergencies and readable during
//! one: the mirror crawler (a real nginx front end taken away, then serving
//! an old copy), the status page, both daemons' metrics checked by
//! Prometheus's own `promtool`, and the drill's record.
#![allow(clippy::unwrap_used)] // a test file: a panic is the failure report

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use hotpush_tests::dnf::{self, DnfRoot};
use hotpush_tests::nginx::{self, Nginx};
use hotpush_tests::{AgentSpec, Network, Signal, fixture, free_port, http_get, wait_until};

const REPO: &str = "ops/x86_64";

fn version(root: &Path, v: u64) -> std::path::PathBuf {
    let dir = root.join(format!("v{v}"));
    fixture::synthetic_repo(
        &dir,
        &[(format!("Packages/fix-{v}.rpm"), 20_000)],
        v,
        1_700_000_000 + v,
    );
    dir
}

fn mirror_status(net: &Network, agent: &str) -> serde_json::Value {
    let status = net.status();
    let a = status["agents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == agent)
        .unwrap()
        .clone();
    a["mirrors"][0].clone()
}

#[test]
fn the_crawler_takes_a_dead_or_stale_front_end_out_and_brings_it_back() {
    if let Err(why) = nginx::available() {
        eprintln!(
            "SKIPPED the_crawler_takes_a_dead_or_stale_front_end_out_and_brings_it_back: {why}"
        );
        return;
    }
    let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let front = SocketAddr::new(localhost, free_port(localhost));
    let work = tempfile::tempdir().unwrap();
    let front_root = work.path().join("m2");
    let interval = 1.0;
    let net = Network::builder()
        .repo(REPO)
        .origin_config("crawl_interval_secs", &interval.to_string())
        .agent(AgentSpec::v4())
        .agent(AgentSpec::v6())
        .agent(
            AgentSpec::v4()
                .data_root(&front_root)
                .public_url(&format!("http://{front}/hotpush/")),
        )
        .start();
    let mut nginx = Some(Nginx::front_end(
        front,
        &front_root.join("www"),
        &work.path().join("nginx"),
    ));
    let v1 = version(&net.root, 1);
    assert_eq!(net.publish(REPO, &v1, &["--timeout", "20"]).code, 0);
    let v2 = version(&net.root, 2);
    assert_eq!(net.publish(REPO, &v2, &["--timeout", "20"]).code, 0);
    wait_until("all three listed", Duration::from_secs(10), || {
        (net.listed(REPO).0 == ["m0", "m1", "m2"]).then_some(())
    });
    // The bound: one interval, plus the fetch timeout, plus a rebuild.
    let bound = Duration::from_secs_f64(interval) + Duration::from_secs(5 + 2);

    // The front end dies.
    drop(nginx.take());
    let t = Instant::now();
    wait_until("m2 to leave the metalink", bound, || {
        (net.listed(REPO).0 == ["m0", "m1"]).then_some(())
    });
    let out_after = t.elapsed();
    let m2 = mirror_status(&net, "m2");
    assert_eq!(m2["state"], "stale", "{m2:#}");
    assert_eq!(m2["front_end"]["result"], "unreachable", "{m2:#}");
    // Clients meanwhile: a real dnf through the metalink never meets m2.
    if dnf::available().is_ok() {
        let root = DnfRoot::new(&net.root.join("dnf"));
        root.add_repo("ops", &net.metalink_url(REPO), &["metadata_expire=0"]);
        let r = root.dnf_ok(&["--refresh", "makecache"]);
        let log = root.librepo_log_tail(200);
        assert!(
            !log.contains(&front.to_string()),
            "dnf tried the dead mirror: {log}"
        );
        println!(
            "REPORT crawler: dnf makecache with m2 dead took {:?}",
            r.elapsed
        );
    }

    // Something comes back on its address, but serves an old copy.
    let stale_root = work.path().join("stale");
    let old = stale_root.join("hotpush").join(REPO).join("repodata");
    std::fs::create_dir_all(&old).unwrap();
    std::fs::copy(v1.join("repodata/repomd.xml"), old.join("repomd.xml")).unwrap();
    let stale = Nginx::start(front, &stale_root, &work.path().join("nginx-stale"));
    wait_until("the crawler to see the stale copy", bound, || {
        (mirror_status(&net, "m2")["front_end"]["result"] == "stale").then_some(())
    });
    assert_eq!(net.listed(REPO).0, ["m0", "m1"], "a stale mirror stays out");
    let detail = mirror_status(&net, "m2")["front_end"]["detail"].clone();
    assert!(
        detail.as_str().unwrap().contains("stale front end"),
        "{detail}"
    );

    // The real front end is back: so is the mirror.
    drop(stale);
    let _restored = Nginx::front_end(
        front,
        &front_root.join("www"),
        &work.path().join("nginx-again"),
    );
    let t = Instant::now();
    wait_until("m2 back in the metalink", bound, || {
        (net.listed(REPO).0 == ["m0", "m1", "m2"]).then_some(())
    });
    println!(
        "REPORT crawler: dead front end out after {out_after:?}, restored one back after {:?} (crawl_interval {interval} s)",
        t.elapsed()
    );
    assert_eq!(mirror_status(&net, "m2")["state"], "live");
}

#[test]
fn the_status_page_shows_every_mirror_after_a_publish_with_one_down() {
    let mut net = Network::builder()
        .repo(REPO)
        .agent(AgentSpec::v4())
        .agent(AgentSpec::v6())
        .agent(AgentSpec::v4())
        .start();
    let v1 = version(&net.root, 1);
    assert_eq!(net.publish(REPO, &v1, &["--timeout", "20"]).code, 0);
    net.stop_agent(2, Signal::Kill);
    let v2 = version(&net.root, 2);
    let p = net.publish(REPO, &v2, &["--wait", "2", "--timeout", "20"]);
    assert_eq!(p.code, 0, "{p:#?}");
    wait_until("m2's failure to be known", Duration::from_secs(15), || {
        (mirror_status(&net, "m2")["state"] == "unreachable").then_some(())
    });
    let url = format!("http://{}/", net.origin_http);
    let page = String::from_utf8(http_get(&url).unwrap()).unwrap();
    std::fs::write(net.root.join("status.html"), &page).unwrap();
    if let Ok(dir) = std::env::var("HOTPUSH_STATUS_PAGE_OUT") {
        std::fs::write(Path::new(&dir).join("status.html"), &page).unwrap();
    }
    for needle in [
        "<meta http-equiv=\"refresh\"",
        &format!("Repo <code>{REPO}</code>"),
        "Latest version <strong>2</strong>",
        "sends clients to version <strong>2</strong>",
        "m0",
        "m1",
        "m2",
        "unreachable",
        "unreachable or refused the connection",
        "acked after",
        "no drill has passed yet",
    ] {
        assert!(page.contains(needle), "the page lacks {needle:?}:\n{page}");
    }
    assert_eq!(
        page.matches(">live<").count(),
        2,
        "two live mirrors:\n{page}"
    );
    // What the page shows is what the JSON says.
    let status = net.status();
    assert_eq!(status["repos"][0]["latest_version"], 2);
}

/// `promtool check metrics` on `text`: its complaints, if any.
fn promtool(text: &str) -> Result<(), String> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("promtool: {e}"))?;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

#[test]
fn metrics_of_both_daemons_pass_promtool_and_drills_are_recorded() {
    if Command::new("promtool").arg("--version").output().is_err() {
        eprintln!(
            "SKIPPED metrics_of_both_daemons_pass_promtool: promtool is not installed (tests/install-deps.sh)"
        );
        return;
    }
    let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let admin = SocketAddr::new(localhost, free_port(localhost));
    let net = Network::builder()
        .repo(REPO)
        .agent(AgentSpec::v4().config("admin_listen", &format!("[\"{admin}\"]")))
        .agent(AgentSpec::v4())
        .start();
    let v1 = version(&net.root, 1);
    assert_eq!(net.publish(REPO, &v1, &["--timeout", "20"]).code, 0);
    // A drill: its outcome goes to status, the page and the metrics.
    let drill = hotpush_tests::run(net.origin_cmd().args(["drill", REPO, "--timeout", "30"]));
    assert!(
        drill.status.success(),
        "{}",
        String::from_utf8_lossy(&drill.stdout)
    );
    let status = net.status();
    assert_eq!(status["drill"]["passed"], true, "{status:#}");
    assert!(
        status["warnings"]
            .as_array()
            .unwrap()
            .iter()
            .all(|w| !w.as_str().unwrap().contains("drill")),
        "{status:#}"
    );

    // The crawler looks at each mirror shortly after its ack.
    let origin = wait_until("a crawl to be counted", Duration::from_secs(10), || {
        let text =
            String::from_utf8(http_get(&format!("http://{}/metrics", net.origin_http)).unwrap())
                .unwrap();
        text.contains("hotpush_crawls_total{").then_some(text)
    });
    let agent = String::from_utf8(http_get(&format!("http://{admin}/metrics")).unwrap()).unwrap();
    for (who, text) in [("origin", &origin), ("agent", &agent)] {
        if let Err(why) = promtool(text) {
            panic!("promtool check metrics failed on the {who}'s metrics:\n{why}\n{text}");
        }
    }
    for needle in [
        "hotpush_pushes_total{",
        "hotpush_push_ack_seconds_bucket{",
        "hotpush_mirror_version{agent=\"m0\",repo=\"ops/x86_64\"} 2",
        "hotpush_crawls_total{",
        "hotpush_drill_last_passed 1",
        "hotpush_origin_build_info{",
    ] {
        assert!(
            origin.contains(needle),
            "origin metrics lack {needle:?}:\n{origin}"
        );
    }
    for needle in [
        "hotpush_agent_acks_total{repo=\"ops/x86_64\"}",
        "hotpush_agent_live_version{repo=\"ops/x86_64\"} 2",
        "hotpush_agent_swap_seconds_bucket",
        "hotpush_agent_build_info{",
    ] {
        assert!(
            agent.contains(needle),
            "agent metrics lack {needle:?}:\n{agent}"
        );
    }
}

#[test]
fn agent_doctor_checks_what_clients_get_and_says_what_to_fix() {
    let mut net = Network::builder().repo(REPO).agent(AgentSpec::v4()).start();
    let v1 = version(&net.root, 1);
    assert_eq!(net.publish(REPO, &v1, &["--timeout", "20"]).code, 0);
    let doctor = |net: &Network| {
        let out = hotpush_tests::run(
            Command::new(hotpush_tests::bin("hotpush-agent"))
                .arg("doctor")
                .arg("-c")
                .arg(&net.agents[0].config),
        );
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (code, text) = doctor(&net);
    println!("{text}");
    assert_eq!(code, Some(0), "{text}");
    for needle in [
        "OK    TLS identity loads",
        "serve_root",
        "descriptor limit",
        "serves version 1's repomd.xml",
        "doctor: ",
    ] {
        assert!(
            text.contains(needle),
            "doctor output lacks {needle:?}:\n{text}"
        );
    }
    // Under a descriptor limit below what the caps need (a host that never
    // raised LimitNOFILE), doctor warns and names the fix.
    let low = hotpush_tests::run(
        Command::new("prlimit")
            .args(["--nofile=1024", "--"])
            .arg(hotpush_tests::bin("hotpush-agent"))
            .arg("doctor")
            .arg("-c")
            .arg(&net.agents[0].config),
    );
    let text_low = String::from_utf8_lossy(&low.stdout);
    assert!(
        text_low.contains("WARN")
            && text_low.contains("the descriptor limit is 1024")
            && text_low.contains("LimitNOFILE"),
        "{text_low}"
    );
    // Its server gone, the public URL no longer answers.
    net.stop_agent(0, Signal::Term);
    let (code, text) = doctor(&net);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("FAIL") && text.contains("unreachable"),
        "{text}"
    );
    assert!(text.contains("NOT READY"), "{text}");
}

#[test]
fn a_publish_no_partner_carries_fails_at_once_and_says_why() {
    let net = Network::builder().repo(REPO).start();
    let v1 = version(&net.root, 1);
    let p = net.publish(REPO, &v1, &["--timeout", "60"]);
    assert_eq!(p.code, 3, "reaching no mirror is not success: {p:#?}");
    assert!(
        p.stdout
            .contains("no partner carries ops/x86_64: nothing was pushed"),
        "{}",
        p.stdout
    );
    assert!(
        p.elapsed < Duration::from_secs(10),
        "it says so at once, not at the timeout: {:?}",
        p.elapsed
    );
}

#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    let net = Network::builder().repo(REPO).start();
    // The reader is gone before the command starts, as after `| head`
    // has read what it wanted: closing it after the spawn raced with the
    // command's first write, which could land in the pipe's buffer.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = net
        .origin_cmd()
        .arg("audit")
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(141), "{stderr}");
}
