//! `hotpush-origin drill`: the rehearsal passes on a healthy network and
//! fails, naming the partner, when one is down.
#![allow(clippy::unwrap_used)] // a test file: a panic is the failure report

use hotpush_tests::{AgentSpec, Network, Signal, fixture, run};

const REPO: &str = "sec/x86_64";

/// Two agents (IPv4 and IPv6) serving the sample repo.
fn published_network() -> Network {
    let net = Network::builder()
        .repo(REPO)
        .agent(AgentSpec::v4())
        .agent(AgentSpec::v6())
        .start();
    let src = net.root.join("src");
    fixture::sample_repo(&src);
    assert_eq!(net.publish(REPO, &src, &["--timeout", "20"]).code, 0);
    net
}

#[test]
fn drill_passes_on_a_healthy_network_and_names_a_dead_partner() {
    let mut net = published_network();

    let out = run(net.origin_cmd().args(["drill", REPO, "--timeout", "20"]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        text.lines()
            .filter(|l| l.trim_start().starts_with("PASS"))
            .count(),
        2,
        "{text}"
    );
    assert!(
        text.contains("1 packages") && text.contains("drill PASSED"),
        "{text}"
    );
    assert!(
        text.contains("same content as the previous version"),
        "{text}"
    );

    net.stop_agent(1, Signal::Kill);
    let out = run(net.origin_cmd().args(["drill", REPO, "--timeout", "3"]));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let dead = &net.agents[1].name;
    assert!(
        text.contains(&format!("{dead}: failed")) && text.contains("drill FAILED"),
        "{text}"
    );
    assert_eq!(
        text.lines()
            .filter(|l| l.trim_start().starts_with("PASS"))
            .count(),
        1,
        "{text}"
    );
}

#[test]
fn doctor_says_ready_and_names_what_to_fix() {
    let mut net = published_network();

    let out = run(net.origin_cmd().arg("doctor"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(
        !text.contains("FAIL") && text.contains("doctor: all good"),
        "{text}"
    );
    assert!(
        text.contains(&format!("metalink for {REPO} lists 2 mirror(s)")),
        "{text}"
    );

    net.stop_agent(0, Signal::Kill);
    let out = run(net.origin_cmd().arg("doctor"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let dead = &net.agents[0].name;
    let line = text
        .lines()
        .find(|l| l.contains(&format!("agent {dead} ")))
        .unwrap_or_default();
    assert!(
        line.starts_with("FAIL") && line.contains("Connection refused"),
        "{text}"
    );
    assert!(text.contains("NOT READY"), "{text}");
}
