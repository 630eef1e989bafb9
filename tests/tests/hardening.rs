//! Resource exhaustion and leaks a hostile (or broken) peer could cause, one
//! test per class: what it can make us read, hold open, buffer, keep on
//! disk, or write into a log. Each test attacks real daemons over real
//! sockets and checks the bound, and that the honest path still works.
//! Measurements are printed as `REPORT` lines.

#![allow(clippy::unwrap_used)] // a test file: a panic is the failure report

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hotpush_proto as pb;
use hotpush_shared::Limits;
use hotpush_shared::identity::{Identity, PinnedVerifier, client_config};
use hotpush_shared::repo::{NoCache, validate_repo};
use hotpush_shared::sign::SigningKey;
use hotpush_shared::store::{BlobStore, Import};
use hotpush_tests::faultproxy::FaultProxy;
use hotpush_tests::fixture::{gzip, pseudo_random, synthetic_repo, write_repodata};
use hotpush_tests::local::LocalNetwork;
use hotpush_tests::{
    AgentSpec, Network, Tmpfs, open_fds, peak_rss_kib, raise_fd_limit, rss_kib, run_ok, sha256_hex,
    wait_until,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

const REPO: &str = "sec/x86_64";

/// `n` packages of `size` bytes under Packages/.
fn packages(prefix: &str, n: usize, size: u64) -> Vec<(String, u64)> {
    (0..n)
        .map(|i| (format!("Packages/{prefix}-{i}.rpm"), size))
        .collect()
}

/// A network of `agents` carrying REPO, with `v1` (two small packages) live.
fn network_with_v1(builder: hotpush_tests::NetworkBuilder) -> Network {
    let net = builder.repo(REPO).start();
    publish_v1(&net);
    net
}

/// Publishes `v1`: two small packages.
fn publish_v1(net: &Network) {
    let v1 = net.root.join("v1");
    synthetic_repo(&v1, &packages("base", 2, 4096), 1, 1_800_000_001);
    publish_ok(net, &v1);
}

/// A network whose first agent is reached through `proxy`, with `v1` live.
fn proxied_network(proxy: &FaultProxy, builder: hotpush_tests::NetworkBuilder) -> Network {
    let net = builder.repo(REPO).start();
    proxy.set_target(net.agents[0].listen);
    publish_v1(&net);
    net
}

fn publish_ok(net: &Network, dir: &Path) -> hotpush_tests::Publish {
    let p = net.publish(REPO, dir, &["--json", "--timeout", "60"]);
    assert_eq!(p.code, 0, "publish of {} failed: {p:#?}", dir.display());
    p
}

/// A TCP connection to `to` from the loopback address `from`.
fn connect_from(from: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.bind(&SocketAddr::new(IpAddr::V4(from), 0).into())?;
    socket.connect_timeout(&to.into(), Duration::from_secs(2))?;
    Ok(socket.into())
}

/// Loopback source address number `i` (127.0.1.x …): attackers that are not
/// the honest client's 127.0.0.1.
fn attacker_addr(i: usize) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 1 + (i / 250) as u8, 1 + (i % 250) as u8)
}

// ---------------------------------------------------------------------------
// 1. A publisher cannot make the origin read outside the publish tree.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_never_reads_through_a_symlink_swapped_in_mid_publish() {
    let net = LocalNetwork::start(&[REPO], &[]).await;
    let root = net.root().to_path_buf();
    // A secret the publisher cannot read, named as the repo names its package.
    let secret_dir = root.join("secret");
    std::fs::create_dir_all(&secret_dir).unwrap();
    let secret = pseudo_random(99, 5000);
    std::fs::write(secret_dir.join("p.rpm"), &secret).unwrap();
    let secret_sha = sha256_hex(&secret);

    let src = root.join("src");
    synthetic_repo(&src, &[("Packages/h/p.rpm".into(), 5000)], 7, 1_800_000_000);
    let honest_sha = sha256_hex(&std::fs::read(src.join("Packages/h/p.rpm")).unwrap());

    // Flip Packages/h between the real directory and a symlink to the secret's.
    let stop = Arc::new(AtomicBool::new(false));
    let flipper = {
        let (stop, src, secret_dir) = (stop.clone(), src.clone(), secret_dir.clone());
        std::thread::spawn(move || {
            let (h, real) = (src.join("Packages/h"), src.join("Packages/h.real"));
            let mut flips = 0u64;
            while !stop.load(Ordering::SeqCst) {
                if std::fs::rename(&h, &real).is_ok() {
                    std::os::unix::fs::symlink(&secret_dir, &h).unwrap();
                    std::thread::yield_now();
                    std::fs::remove_file(&h).unwrap();
                    std::fs::rename(&real, &h).unwrap();
                    flips += 1;
                }
            }
            flips
        })
    };

    // Through the daemon (hash cache and all), and straight through the
    // validator with no cache, so that every round reads the file.
    let origin = net.origin.origin.clone();
    let repo: hotpush_shared::manifest::RepoName = REPO.parse().unwrap();
    let scratch = tempfile::tempdir().unwrap();
    let store = BlobStore::open(scratch.path()).unwrap();
    let (mut published, mut refused) = (0, 0);
    let mut messages = Vec::new();
    for _ in 0..40 {
        let (o, r, s) = (origin.clone(), repo.clone(), src.clone());
        match tokio::task::spawn_blocking(move || {
            hotpush_origin::publish::publish(&o, &r, &s, "t", false)
        })
        .await
        .unwrap()
        {
            Ok(p) => {
                published += 1;
                for e in &p.snapshot.manifest.entries {
                    assert_ne!(e.sha256.to_hex(), secret_sha, "the secret was published");
                }
            }
            Err(e) => {
                refused += 1;
                messages.push(e.to_string());
            }
        }
        let mut import = Import::new(&store);
        match validate_repo(&src, &Limits::default(), &mut NoCache, Some(&mut import)) {
            Ok(v) => {
                let p = v
                    .files
                    .iter()
                    .find(|f| f.path == "Packages/h/p.rpm")
                    .unwrap();
                assert_eq!(p.sha256.to_hex(), honest_sha);
                import.commit().unwrap();
            }
            Err(e) => messages.push(e.to_string()),
        }
    }
    stop.store(true, Ordering::SeqCst);
    let flips = flipper.join().unwrap();
    let secret_digest = secret_sha.parse().unwrap();
    assert!(
        !origin.store.has(&secret_digest),
        "the secret reached the origin's store"
    );
    assert!(!store.has(&secret_digest));
    for m in &messages {
        assert!(
            !m.contains(&secret_sha),
            "an error revealed the secret's hash: {m}"
        );
        assert!(
            !m.contains(secret_dir.to_str().unwrap()),
            "an error named a path outside the tree: {m}"
        );
    }
    let kinds: BTreeSet<String> = messages
        .iter()
        .map(|m| m.split(": ").last().unwrap_or(m).to_owned())
        .collect();
    println!(
        "REPORT toctou: {flips} flips during 80 validations; {published} publishes of the honest file, \
         {refused} refused; refusals said: {kinds:?}"
    );
    assert!(flips > 10, "the flipper hardly ran ({flips} flips)");
    net.stop().await;
}

#[test]
fn a_refused_symlink_names_only_the_path_inside_the_tree() {
    let net = Network::builder().repo(REPO).agent(AgentSpec::v4()).start();
    let outside = net.root.join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("key"), b"0123456789").unwrap();
    let src = net.root.join("src");
    synthetic_repo(&src, &[("Packages/a.rpm".into(), 10)], 3, 1_800_000_000);
    // The package file becomes a symlink to a file with exactly its content.
    let body = std::fs::read(src.join("Packages/a.rpm")).unwrap();
    std::fs::write(outside.join("key"), &body).unwrap();
    std::fs::remove_file(src.join("Packages/a.rpm")).unwrap();
    std::os::unix::fs::symlink(outside.join("key"), src.join("Packages/a.rpm")).unwrap();
    let p = net.publish(REPO, &src, &[]);
    assert_eq!(p.code, 1, "{p:#?}");
    assert!(
        p.stderr.contains("Packages/a.rpm: is a symlink"),
        "{}",
        p.stderr
    );
    assert!(!p.stderr.contains("outside"), "{}", p.stderr);
}

// ---------------------------------------------------------------------------
// 2. Idle and half-sent HTTP connections cannot take the metalink down.

#[test]
fn the_metalink_answers_within_a_second_while_thousands_of_connections_are_held() {
    raise_fd_limit();
    let net = network_with_v1(
        Network::builder()
            .agent(AgentSpec::v4())
            .origin_config("connections.max_http_connections", "1000")
            .origin_config("connections.http_header_timeout_secs", "3"),
    );
    let origin_pid = net.origin_pid().unwrap();
    let http = net.origin_http;
    let fds_before = open_fds(origin_pid);

    // 3,000 connections from 15 addresses, 200 each (under the per-address
    // cap): half say nothing, half send a request line and never finish.
    let t = Instant::now();
    let mut held = Vec::new();
    for i in 0..3000 {
        let Ok(mut c) = connect_from(attacker_addr(i / 200), http) else {
            continue;
        };
        if i % 2 == 1 {
            let _ = c.write_all(b"GET /metalink?repo=sec&arch=x86_64 HTTP/1.1\r\nHost: x\r\n");
        }
        held.push(c);
    }
    let opened = held.len();
    // Evicted connections close as their tasks run: let them.
    std::thread::sleep(Duration::from_millis(300));
    let fds_attacked = open_fds(origin_pid);

    // The honest client, from its own address, while the attack is held.
    let url = net.metalink_url(REPO);
    let mut worst = Duration::ZERO;
    for _ in 0..30 {
        let t = Instant::now();
        let body = hotpush_tests::http_get(&url).expect("metalink under attack");
        assert!(String::from_utf8_lossy(&body).contains("repomd.xml"));
        worst = worst.max(t.elapsed());
    }
    assert!(
        worst < Duration::from_secs(1),
        "a metalink took {worst:?} under attack"
    );
    assert!(
        fds_attacked <= fds_before + 1000 + 16,
        "the origin holds {fds_attacked} descriptors for a cap of 1000 connections"
    );

    // The header timeout sheds the idle and half-sent ones.
    std::thread::sleep(Duration::from_secs(5));
    let fds_after = open_fds(origin_pid);
    assert!(
        fds_after <= fds_before + 10,
        "idle connections were not closed: {fds_before} descriptors before, {fds_after} after"
    );
    let closed = held
        .iter_mut()
        .filter_map(|c| {
            c.set_read_timeout(Some(Duration::from_millis(10))).ok()?;
            // A 408 answer or nothing: either way the origin hung up.
            let mut buf = [0u8; 256];
            loop {
                match c.read(&mut buf) {
                    Ok(0) => return Some(()),
                    Ok(_) => continue,
                    Err(_) => return None,
                }
            }
        })
        .count();
    let rss_mib = peak_rss_kib(origin_pid) / 1024;
    println!(
        "REPORT http flood: {opened} connections held ({:?} to open); origin descriptors {fds_before} -> \
         {fds_attacked} (cap 1000) -> {fds_after} after the 3 s header timeout; {closed}/{opened} closed \
         by the origin; worst metalink answer under attack {worst:?}; origin peak RSS {rss_mib} MiB",
        t.elapsed()
    );
    assert!(
        closed > opened * 9 / 10,
        "only {closed} of {opened} were closed"
    );
}

#[test]
fn one_address_holds_at_most_its_share_of_http_connections() {
    raise_fd_limit();
    let net = network_with_v1(
        Network::builder()
            .agent(AgentSpec::v4())
            .origin_config("connections.max_http_connections_per_address", "50"),
    );
    let origin_pid = net.origin_pid().unwrap();
    let fds_before = open_fds(origin_pid);
    let held: Vec<TcpStream> = (0..500)
        .filter_map(|_| connect_from(attacker_addr(7), net.origin_http).ok())
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let fds = open_fds(origin_pid);
    assert!(
        fds <= fds_before + 50 + 4,
        "{fds} descriptors for a cap of 50 per address"
    );
    hotpush_tests::http_get(&net.metalink_url(REPO)).expect("the honest client");
    println!(
        "REPORT http per-address: 500 connections from one address, origin holds {} (cap 50)",
        fds - fds_before
    );
    drop(held);
}

// ---------------------------------------------------------------------------
// 3. Half-open TLS handshakes neither starve the agent nor lock out the origin.

#[test]
fn half_open_tls_handshakes_neither_starve_the_agent_nor_lock_out_the_origin() {
    raise_fd_limit();
    // A small descriptor limit, as on a partner host that never raised it.
    let net = network_with_v1(Network::builder().agent(AgentSpec::v4().wrapper(&[
        "prlimit",
        "--nofile=1024:1024",
        "--",
    ])));
    let agent_pid = net.agents[0].pid().unwrap();
    let port = net.agents[0].listen;
    // 3,000 connections from 20 addresses; a third send half a ClientHello.
    let mut held = Vec::new();
    for i in 0..3000 {
        if let Ok(mut c) = connect_from(attacker_addr(i % 20), port) {
            if i % 3 == 0 {
                let _ = c.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]);
            }
            held.push(c);
        }
    }
    let fds_attacked = open_fds(agent_pid);
    assert!(
        fds_attacked < 1024,
        "{fds_attacked} descriptors at a limit of 1024"
    );

    // A restarted origin must complete a new handshake through the flood,
    // then publish a fix that needs file work on the agent.
    let mut net = net;
    net.stop_origin(hotpush_tests::Signal::Term);
    net.start_origin();
    let v2 = net.root.join("v2");
    synthetic_repo(&v2, &packages("fix", 40, 64 << 10), 2, 1_800_000_002);
    let t = Instant::now();
    publish_ok(&net, &v2);
    let took = t.elapsed();
    assert_eq!(net.agents[0].status_version(REPO), Some(2));
    let log = net.agents[0].log_text();
    assert!(
        !log.contains("Too many open files"),
        "the agent ran out of descriptors"
    );
    let rss_mib = peak_rss_kib(agent_pid) / 1024;
    println!(
        "REPORT tls flood: {} connections held against an agent with 1024 descriptors; it held \
         {fds_attacked}; the origin's publish of 40 files went live in {took:?}; agent peak RSS {rss_mib} MiB",
        held.len()
    );
    drop(held);
}

// ---------------------------------------------------------------------------
// 4. A stolen TLS identity without the signing key cannot make an agent
//    buffer without bound.

/// A push client presenting the origin's own TLS identity.
fn rogue_client(net: &Network) -> (tokio::runtime::Runtime, Vec<tonic::transport::Channel>) {
    hotpush_shared::identity::install_crypto_provider();
    let identity = Identity::load(
        &net.origin_dir.join("tls/cert.pem"),
        &net.origin_dir.join("tls/key.pem"),
    )
    .unwrap();
    let config = client_config(
        &identity,
        PinnedVerifier::new([net.agents[0].id.parse().unwrap()], "agent"),
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let url = format!("https://{}", net.agents[0].listen);
    let channels = (0..8)
        .map(|_| {
            let _guard = rt.enter();
            hotpush_shared::transport::tls_channel(&url, config.clone(), &Default::default())
                .unwrap()
        })
        .collect();
    (rt, channels)
}

#[test]
fn a_stolen_tls_identity_cannot_make_an_agent_buffer_unverified_offers_without_bound() {
    let net = network_with_v1(Network::builder().agent(AgentSpec::v4()));
    let agent_pid = net.agents[0].pid().unwrap();
    let base_kib = rss_kib(agent_pid);
    let (rt, channels) = rogue_client(&net);
    let stranger = SigningKey::generate().unwrap();
    let big = Bytes::from(pseudo_random(5, 12 << 20));
    let signed = stranger.sign(big).to_pb();

    // 8 connections × 30 streams, each sending a 12 MiB Offer and staying open.
    let mut senders = Vec::new();
    let refused = rt.block_on(async {
        let mut calls = Vec::new();
        for channel in &channels {
            for _ in 0..30 {
                let (tx, rx) = mpsc::channel(2);
                let offer = pb::PushRequest {
                    msg: Some(pb::push_request::Msg::Offer(pb::Offer {
                        form: Some(pb::offer::Form::Manifest(signed.clone())),
                    })),
                };
                let _ = tx.try_send(offer);
                senders.push(tx);
                let mut client = pb::agent_client::AgentClient::new(channel.clone())
                    .max_encoding_message_size(64 << 20);
                calls.push(tokio::spawn(async move {
                    match tokio::time::timeout(
                        Duration::from_secs(20),
                        client.push(ReceiverStream::new(rx)),
                    )
                    .await
                    {
                        Ok(Ok(r)) => {
                            let mut s = r.into_inner();
                            matches!(
                                s.message().await,
                                Ok(Some(pb::PushResponse {
                                    msg: Some(pb::push_response::Msg::Reject(_))
                                }))
                            )
                        }
                        _ => false,
                    }
                }));
            }
        }
        let mut refused = 0;
        for c in calls {
            if c.await.unwrap_or(false) {
                refused += 1;
            }
        }
        refused
    });
    let peak_mib = peak_rss_kib(agent_pid) / 1024;

    // 10,000 streams on one connection that send nothing.
    let idle_peak = rt.block_on(async {
        let mut calls = Vec::new();
        let mut idle = Vec::new();
        for _ in 0..10_000 {
            let (tx, rx) = mpsc::channel::<pb::PushRequest>(1);
            idle.push(tx);
            let mut client = pb::agent_client::AgentClient::new(channels[0].clone());
            calls.push(tokio::spawn(async move {
                let _ = tokio::time::timeout(
                    Duration::from_secs(3),
                    client.push(ReceiverStream::new(rx)),
                )
                .await;
            }));
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let rss = rss_kib(agent_pid) / 1024;
        drop(idle);
        for c in calls {
            let _ = c.await;
        }
        rss
    });
    drop(senders);
    rt.shutdown_background();
    println!(
        "REPORT stolen identity: 240 streams on 8 connections each sending a 12 MiB unsigned Offer: \
         {refused} refused with a reason; agent RSS {} MiB before, peak {peak_mib} MiB; with 10,000 \
         idle streams on one connection: {idle_peak} MiB",
        base_kib / 1024
    );
    assert!(peak_mib < 250, "agent peak RSS {peak_mib} MiB");
    assert!(
        idle_peak < 250,
        "agent RSS {idle_peak} MiB with idle streams"
    );
    // The honest origin still gets through.
    let v2 = net.root.join("v2");
    synthetic_repo(&v2, &packages("fix", 2, 4096), 2, 1_800_000_002);
    publish_ok(&net, &v2);
}

// ---------------------------------------------------------------------------
// 5. A push stalled by a partition (no reset) times out; the retry resumes.

#[test]
fn a_push_stalled_by_a_partition_times_out_and_the_retry_resumes() {
    let proxy = FaultProxy::start();
    let net = proxied_network(
        &proxy,
        Network::builder()
            .origin_config("connections.keepalive_secs", "2")
            .agent(
                AgentSpec::v4()
                    .endpoint(&proxy.endpoint())
                    .config("connections.push_idle_timeout_secs", "3")
                    .config("connections.keepalive_secs", "2"),
            )
            .agent(AgentSpec::v4()),
    );
    let v2 = net.root.join("v2");
    let size = 8 << 20;
    synthetic_repo(&v2, &[("Packages/big.rpm".into(), size)], 2, 1_800_000_002);
    // Publish v2 again through the proxy, freezing it 2 MiB into the blob.
    proxy.freeze_after_up_bytes(2 << 20);
    let t = Instant::now();
    let p = net.publish(REPO, &v2, &["--json", "--timeout", "60"]);
    let took = t.elapsed();
    assert_eq!(p.code, 0, "{p:#?}");
    let sent = net.last_push("m0", REPO).unwrap();
    let log = net.agents[0].log_text();
    let how = if log.contains("push idle too long") {
        "the agent's idle timeout"
    } else if log.contains("superseded") {
        "the retry superseding it"
    } else {
        panic!("the stalled push neither timed out nor was superseded:\n{log}")
    };
    println!(
        "REPORT stall: a push frozen mid-blob (no reset) ended by {how}; the retry went live {took:?} \
         after the publish and sent {} of {size} bytes",
        sent.1
    );
    assert!(
        sent.1 < size,
        "the retry did not resume: sent {} of {size}",
        sent.1
    );
    assert!(took < Duration::from_secs(30), "took {took:?}");
}

// ---------------------------------------------------------------------------
// 6. Disk: abandoned partial blobs and half-done swaps are reclaimed.

#[test]
fn an_abandoned_partial_blob_makes_room_for_the_next_fix() {
    let scratch = tempfile::tempdir().unwrap();
    let disk =
        Tmpfs::mount(&scratch.path().join("disk"), "40m").expect("mounting a tmpfs needs root");
    let proxy = FaultProxy::start();
    let net = proxied_network(
        &proxy,
        Network::builder().agent(
            AgentSpec::v4()
                .endpoint(&proxy.endpoint())
                .data_root(&disk.dir)
                .config("min_free_bytes", "8388608"),
        ),
    );
    // v2 carries a 30 MiB package; the agent goes away 24 MiB in.
    let v2 = net.root.join("v2");
    synthetic_repo(
        &v2,
        &[("Packages/huge.rpm".into(), 30 << 20)],
        2,
        1_800_000_002,
    );
    proxy.refuse_after_up_bytes(24 << 20);
    let p = net.publish(REPO, &v2, &["--json", "--timeout", "3"]);
    assert_eq!(p.code, 3, "{p:#?}");
    let tmp = disk.dir.join("data/tmp");
    wait_until("the abandoned partial", Duration::from_secs(10), || {
        (walk_size(&tmp) > 16 << 20).then_some(())
    });
    let partial_bytes = walk_size(&tmp);

    // The fix (12 MiB) does not fit beside the partial and the 8 MiB reserve.
    let v3 = net.root.join("v3");
    synthetic_repo(
        &v3,
        &[("Packages/fix.rpm".into(), 12 << 20)],
        3,
        1_800_000_003,
    );
    proxy.set_mode(hotpush_tests::faultproxy::Mode::Pass);
    let p = net.publish(REPO, &v3, &["--json", "--timeout", "60"]);
    assert_eq!(p.code, 0, "{p:#?}");
    assert_eq!(net.agents[0].status_version(REPO), Some(3));
    let log = net.agents[0].log_text();
    assert!(log.contains("reclaimed partial blobs"), "{log}");
    println!(
        "REPORT disk: a {} MiB partial of an abandoned push on a 40 MiB disk was reclaimed for a 12 MiB fix",
        partial_bytes >> 20
    );
}

fn walk_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

#[test]
fn partial_blobs_no_push_wants_expire_after_retain_partials_for() {
    let proxy = FaultProxy::start();
    let net = proxied_network(
        &proxy,
        Network::builder().agent(
            AgentSpec::v4()
                .endpoint(&proxy.endpoint())
                .config("retain_partials_for_secs", "1"),
        ),
    );
    let v2 = net.root.join("v2");
    synthetic_repo(
        &v2,
        &[("Packages/big.rpm".into(), 4 << 20)],
        2,
        1_800_000_002,
    );
    proxy.refuse_after_up_bytes(2 << 20);
    let _ = net.publish(REPO, &v2, &["--json", "--timeout", "2"]);
    let tmp = net.agents[0].data_dir.join("tmp");
    wait_until("a partial blob", Duration::from_secs(10), || {
        (walk_size(&tmp) > 0).then_some(())
    });
    // A later, different fix goes live; the stale partial goes with its GC.
    std::thread::sleep(Duration::from_millis(1200));
    let v3 = net.root.join("v3");
    synthetic_repo(&v3, &packages("fix", 1, 1000), 3, 1_800_000_003);
    proxy.set_mode(hotpush_tests::faultproxy::Mode::Pass);
    publish_ok(&net, &v3);
    wait_until(
        "the stale partial reclaimed",
        Duration::from_secs(10),
        || (walk_size(&tmp) == 0).then_some(()),
    );
}

#[test]
fn a_swap_failing_midway_leaves_nothing_in_the_served_tree() {
    let mut net = network_with_v1(Network::builder().agent(AgentSpec::v4()));
    net.stop_agent(0, hotpush_tests::Signal::Term);
    net.set_agent_env(0, &[("FAILPOINTS", "swap::before_flip=return")]);
    net.start_agent(0);
    let before = net.agents[0].served_files(REPO);
    let v2 = net.root.join("v2");
    synthetic_repo(&v2, &packages("fix", 3, 4096), 2, 1_800_000_002);
    let p = net.publish(REPO, &v2, &["--json", "--timeout", "4"]);
    assert_eq!(p.code, 3, "{p:#?}");
    assert!(
        p.agent("m0")["reason"]
            .as_str()
            .unwrap()
            .contains("failpoint swap::before_flip"),
        "{p:#?}"
    );
    // No retry may be half-way when we look: stop the origin first.
    net.stop_origin(hotpush_tests::Signal::Term);
    std::thread::sleep(Duration::from_millis(300));
    // Every attempt took away what it placed.
    let served = net.agents[0].served(REPO);
    let mut leftovers = Vec::new();
    let mut stack = vec![served.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.contains("hotpush-tmp")
                || name.contains("link-tmp")
                || name == "2"
                || name.contains(".building")
                || name.starts_with("fix-")
            {
                leftovers.push(e.path().display().to_string());
            }
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
        }
    }
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert_eq!(net.agents[0].served_files(REPO), before);
    assert!(
        net.agents[0]
            .log_text()
            .contains("removed what an unfinished swap had placed")
    );
    // Without the fault the same fix goes live.
    net.stop_agent(0, hotpush_tests::Signal::Term);
    net.set_agent_env(0, &[]);
    net.start_agent(0);
    net.start_origin();
    wait_until("v2 live after the fault", Duration::from_secs(30), || {
        (net.agents[0].status_version(REPO) == Some(2)).then_some(())
    });
}

// ---------------------------------------------------------------------------
// 7. A gzip bomb in primary.xml is parsed in bounded memory.

#[test]
fn a_gzip_bomb_primary_is_refused_in_bounded_memory() {
    let net = Network::builder().repo(REPO).agent(AgentSpec::v4()).start();
    let origin_pid = net.origin_pid().unwrap();
    let src = net.root.join("bomb");
    // One text node of 1 GiB: 1,024 gzip members of 1 MiB of 'a' each, ~1 MiB on disk.
    let mut bomb = gzip(b"<metadata packages=\"1\"><package><description>");
    let member = gzip(&vec![b'a'; 1 << 20]);
    for _ in 0..1024 {
        bomb.extend_from_slice(&member);
    }
    bomb.extend_from_slice(&gzip(b"</description></package></metadata>"));
    write_repodata(&src, &bomb, 1_800_000_000);
    let base_mib = rss_kib(origin_pid) / 1024;
    let t = Instant::now();
    let p = net.publish(REPO, &src, &[]);
    let took = t.elapsed();
    assert_eq!(p.code, 1, "{p:#?}");
    assert!(
        p.stderr.contains("longer than 1048576 bytes"),
        "{}",
        p.stderr
    );
    let peak_mib = peak_rss_kib(origin_pid) / 1024;
    println!(
        "REPORT gzip bomb: {} KiB primary.xml.gz holding a 1 GiB text node refused in {took:?}; origin RSS \
         {base_mib} MiB before, peak {peak_mib} MiB",
        bomb.len() >> 10
    );
    assert!(peak_mib < base_mib + 64, "peak {peak_mib} MiB");
}

// ---------------------------------------------------------------------------
// 9. Nothing a client sends can forge a log line.

#[test]
fn values_a_client_sends_cannot_forge_log_lines() {
    let net = Network::builder().repo(REPO).agent(AgentSpec::v4()).start();
    // A directory whose name carries a line break and a fake log line.
    let evil = net
        .root
        .join("x\n2030-01-01T00:00:00Z  INFO forged: agent m9 acked");
    std::fs::create_dir_all(&evil).unwrap();
    let p = net.publish(REPO, &evil, &[]);
    assert_eq!(p.code, 1, "{p:#?}");
    let _ = hotpush_tests::http_get(&format!(
        "http://{}/metalink?repo=a%0d%0a2030-01-01T00:00:00Z%20INFO%20forged&arch=b",
        net.origin_http
    ));
    wait_until("the refusal logged", Duration::from_secs(5), || {
        net.origin_log_text()
            .contains("publish refused")
            .then_some(())
    });
    let log = net.origin_log_text();
    assert!(
        !log.lines().any(|l| l.starts_with("2030-01-01")),
        "a forged line:\n{log}"
    );
    assert!(
        log.contains("\\x0a2030-01-01"),
        "the line break was not escaped:\n{log}"
    );
    run_ok(net.origin_cmd().args(["status"]));
}
