//! A hostile agent cannot harm the origin: answers that do not match what
//! was offered, wants for blobs the snapshot does not hold, oversized and
//! endless responses are refused, bounded in memory and time, and the agent
//! is reported failed with the reason.
#![allow(clippy::unwrap_used)] // a test file: a panic is the failure report

use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use hotpush_proto as pb;
use hotpush_proto::push_response::Msg as In;
use hotpush_shared::identity::{Identity, PinnedVerifier, install_crypto_provider, server_config};
use hotpush_tests::{Network, free_port, run_ok};
use tokio_stream::Stream;

const REPO: &str = "sec/x86_64";

#[derive(Clone, Copy)]
enum Mode {
    /// Wants a blob the snapshot does not contain.
    UnknownWant,
    /// Acks a version that was never offered.
    WrongAck,
    /// Answers with one message far over the size limit.
    Oversized,
    /// Never stops sending Wants.
    Endless,
}

struct Fake(Mode);

type Responses = Pin<Box<dyn Stream<Item = Result<pb::PushResponse, tonic::Status>> + Send>>;

fn want(digest: Vec<u8>, padding: usize) -> pb::PushResponse {
    let mut blobs = vec![pb::WantedBlob {
        digest: Bytes::from(digest),
        offset: 0,
    }];
    // Padding: many bogus entries make one huge message.
    blobs.extend((0..padding).map(|_| pb::WantedBlob {
        digest: Bytes::from(vec![9u8; 32]),
        offset: 0,
    }));
    pb::PushResponse {
        msg: Some(In::Want(pb::Want {
            blobs,
            max_chunk_bytes: 1 << 20,
        })),
    }
}

#[tonic::async_trait]
impl pb::agent_server::Agent for Fake {
    type PushStream = Responses;

    async fn push(
        &self,
        _request: tonic::Request<tonic::Streaming<pb::PushRequest>>,
    ) -> Result<tonic::Response<Responses>, tonic::Status> {
        let out: Responses = match self.0 {
            Mode::UnknownWant => Box::pin(tokio_stream::iter([Ok(want(vec![7u8; 32], 0))])),
            Mode::WrongAck => Box::pin(tokio_stream::iter([Ok(pb::PushResponse {
                msg: Some(In::Ack(pb::Ack {
                    repo: REPO.into(),
                    version: 999,
                    ..Default::default()
                })),
            })])),
            Mode::Oversized => Box::pin(tokio_stream::iter([Ok(want(vec![7u8; 32], 700_000))])),
            Mode::Endless => Box::pin(tokio_stream::iter(std::iter::repeat_with(|| {
                Ok(pb::PushResponse {
                    msg: Some(In::Want(pb::Want::default())),
                })
            }))),
        };
        Ok(tonic::Response::new(out))
    }

    async fn status(
        &self,
        _r: tonic::Request<pb::StatusRequest>,
    ) -> Result<tonic::Response<pb::AgentStatus>, tonic::Status> {
        Ok(tonic::Response::new(pb::AgentStatus::default()))
    }
}

#[test]
fn hostile_agents_are_refused_and_bounded() {
    install_crypto_provider();
    let net = Network::builder().repo(REPO).start();
    let origin_id = Identity::load(
        &net.origin_dir.join("tls/cert.pem"),
        &net.origin_dir.join("tls/key.pem"),
    )
    .unwrap()
    .id()
    .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let modes = [
        ("unknown-want", Mode::UnknownWant),
        ("wrong-ack", Mode::WrongAck),
        ("oversized", Mode::Oversized),
        ("endless", Mode::Endless),
    ];
    for (name, mode) in modes {
        let identity = Identity::generate("evil-agent").unwrap();
        let id = identity.id().unwrap().to_string();
        let port = free_port("127.0.0.1".parse().unwrap());
        let tls = server_config(&identity, PinnedVerifier::new([origin_id], "origin")).unwrap();
        rt.spawn(async move {
            let listener =
                hotpush_shared::transport::bind(format!("127.0.0.1:{port}").parse().unwrap())
                    .unwrap();
            let incoming = hotpush_shared::transport::tls_incoming(
                vec![listener],
                tokio_rustls::TlsAcceptor::from(tls),
                &hotpush_shared::limits::ConnLimits::default(),
            );
            tonic::transport::Server::builder()
                .add_service(pb::agent_server::AgentServer::new(Fake(mode)))
                .serve_with_incoming(incoming)
                .await
                .unwrap();
        });
        run_ok(
            net.origin_cmd()
                .args([
                    "agent",
                    "add",
                    name,
                    "--endpoint",
                    &format!("https://127.0.0.1:{port}"),
                ])
                .args(["--id", &id, "--public-url", "http://127.0.0.1:9/"]),
        );
    }
    let src = net.root.join("src");
    run_ok(net.origin_cmd().args(["repo", "init"]).arg(&src));
    let p = net.publish(REPO, &src, &["--json", "--timeout", "8"]);
    assert_eq!(
        p.code, 3,
        "no hostile agent may count as live: {}",
        p.stdout
    );
    let expect = [
        ("unknown-want", "which this snapshot does not contain"),
        (
            "wrong-ack",
            "acked sec/x86_64 v999, but sec/x86_64 v1 was offered",
        ),
        ("oversized", "message length too large"),
        ("endless", "a second Want"),
    ];
    for (name, reason) in expect {
        let a = p.agent(name);
        assert_eq!(a["state"], "failed", "{name}: {a}");
        assert!(
            a["reason"].as_str().unwrap().contains(reason),
            "{name}: {a}"
        );
    }
    assert!(
        p.elapsed < Duration::from_secs(12),
        "the publish took {:?}",
        p.elapsed
    );
    // Memory stays bounded: the origin never buffered the oversized or endless answers.
    let pid = run_ok(
        std::process::Command::new("pgrep")
            .arg("-f")
            .arg(format!("{} serve", net.origin_config.display())),
    );
    let pid = pid.lines().next().unwrap().trim();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let hwm_kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .unwrap()
        .trim()
        .trim_end_matches(" kB")
        .trim()
        .parse()
        .unwrap();
    println!(
        "REPORT origin peak RSS with hostile agents: {} MB",
        hwm_kb / 1024
    );
    assert!(hwm_kb < 150 * 1024, "origin peak RSS {hwm_kb} kB");
    // The metalink lists none of them.
    let status = run_ok(net.origin_cmd().args(["status", "--json"]));
    assert!(status.contains("\"metalink_version\":0"), "{status}");
    // Leave the fake agents' tasks to the process exit: tearing down an h2
    // connection mid-stream trips a debug assertion inside h2.
    rt.shutdown_background();
}
