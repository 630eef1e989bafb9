//! The core promise with the whole network in this test process: an origin
//! and three agents (one on IPv6) started as libraries, real mutual TLS over
//! loopback sockets. The same checks as core.rs's process-based test, with
//! no prior build of the binaries and no log or port polling: what a relay
//! or a new subcommand can be tested with, calling the libraries directly.

#![allow(clippy::unwrap_used)] // a test file: a panic is the failure report

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hotpush_origin::client::{Outcome, Wait};
use hotpush_tests::fixture::{self, referenced_files};
use hotpush_tests::local::LocalNetwork;
use hotpush_tests::{Family, Metalink, sha256_hex, sha512_hex};

const REPO: &str = "demo/x86_64";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_and_three_agents_in_one_process_publish_and_list_every_mirror() {
    let started = Instant::now();
    let net = LocalNetwork::start(&[REPO], &[Family::V6, Family::V4, Family::V4]).await;
    let src = net.root().join("src");
    fixture::sample_repo(&src);

    let summary = net
        .publish(REPO, &src, Wait::All, Duration::from_secs(20))
        .await;
    assert!(summary.ok, "{summary:#?}");
    assert_eq!(summary.live, 3);
    assert!(summary.agents.values().all(|a| a.state == Outcome::Live));
    assert_eq!(
        summary.published.entries,
        referenced_files(&src).len() as u64
    );
    assert_eq!(summary.published.unreferenced_files, 0);

    // Every agent serves exactly the source files, byte for byte.
    let expected: BTreeMap<String, Vec<u8>> = referenced_files(&src)
        .into_iter()
        .map(|rel| {
            let body = fixture::read(&src.join(&rel));
            (rel, body)
        })
        .collect();
    for a in &net.agents {
        assert_eq!(
            a.served_files(REPO),
            expected.keys().cloned().collect::<Vec<_>>(),
            "{}",
            a.name
        );
        for (rel, want) in &expected {
            assert!(
                a.read_served(REPO, rel).as_ref() == Some(want),
                "{}: {rel}",
                a.name
            );
        }
    }

    // The metalink lists every agent (one on IPv6) and describes repomd.xml.
    let repomd = &expected["repodata/repomd.xml"];
    let mut want: Vec<String> = net.agents.iter().map(|a| a.repomd_url(REPO)).collect();
    want.sort();
    assert!(
        want.iter().any(|u| u.starts_with("http://[::1]:")),
        "{want:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    let m = loop {
        let m = Metalink::parse(&net.metalink(REPO).await.unwrap());
        let mut urls = m.urls.clone();
        urls.sort();
        if urls == want {
            break m;
        }
        assert!(
            Instant::now() < deadline,
            "metalink lists {urls:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(m.hashes.get("sha256"), Some(&sha256_hex(repomd)));
    assert_eq!(m.hashes.get("sha512"), Some(&sha512_hex(repomd)));
    assert_eq!(m.size, Some(repomd.len() as u64));
    assert!(!m.has_alternates);

    // Status agrees, from the same report the CLI and /status render.
    let report = net.status().await;
    assert_eq!(report.repos[0].metalink_version, summary.published.version);
    for a in &report.agents {
        assert_eq!(a.mirrors[0].version, summary.published.version, "{a:?}");
    }
    net.stop().await;
    println!(
        "REPORT in-process network (origin + 3 agents): start, publish, check, stop in {:?}",
        started.elapsed()
    );
}
