//! Hostile pushes: a rogue origin holding a TLS identity the agent accepts
//! sends crafted exchanges. Each is refused with a specific reason, and
//! nothing was written before the manifest's signature, trust, limits and
//! paths checked out (the agent's directories are compared byte for byte).
//!
//! One `#[test]` per case, each against a fresh agent process that first
//! installed version 5 honestly, so a failure names its case.

#![allow(clippy::unwrap_used)] // a test file: a panic is the failure report

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use hotpush_proto as pb;
use hotpush_proto::push_request::Msg as Out;
use hotpush_proto::push_response::Msg as In;
use hotpush_shared::Sha256Digest;
use hotpush_shared::identity::{Identity, PinnedVerifier, client_config, install_crypto_provider};
use hotpush_shared::sign::SigningKey;
use hotpush_tests::{bin, free_port, run_ok, wait_until};
use prost::Message;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

const REPO: &str = "sec/x86_64";

/// What a case sends after the agent's Want (or instead of waiting for it).
enum After {
    /// Send these, then Commit only if the bool says so, then hang up.
    Send(Vec<pb::PushRequest>),
}

fn offer(signed: pb::SignedManifest) -> pb::PushRequest {
    pb::PushRequest {
        msg: Some(Out::Offer(pb::Offer {
            form: Some(Form::Manifest(signed)),
        })),
    }
}

fn delta_offer(delta: pb::ManifestDelta) -> pb::PushRequest {
    pb::PushRequest {
        msg: Some(Out::Offer(pb::Offer {
            form: Some(Form::Delta(delta)),
        })),
    }
}

/// `signed` as a split Offer: its length and signatures, then its bytes in
/// ManifestParts of `piece` bytes.
fn parts_offer(signed: pb::SignedManifest, piece: usize) -> Vec<pb::PushRequest> {
    let mut msgs = vec![pb::PushRequest {
        msg: Some(Out::Offer(pb::Offer {
            form: Some(Form::Parts(pb::ManifestParts {
                manifest_len: signed.manifest_bytes.len() as u64,
                signatures: signed.signatures,
            })),
        })),
    }];
    for data in signed.manifest_bytes.chunks(piece) {
        msgs.push(part(data));
    }
    msgs
}

fn part(data: &[u8]) -> pb::PushRequest {
    pb::PushRequest {
        msg: Some(Out::Part(pb::ManifestPart {
            data: Bytes::copy_from_slice(data),
        })),
    }
}

fn chunk(digest: &Sha256Digest, offset: u64, data: &[u8]) -> pb::PushRequest {
    pb::PushRequest {
        msg: Some(Out::Chunk(pb::Chunk {
            digest: Bytes::copy_from_slice(&digest.0),
            offset,
            data: Bytes::copy_from_slice(data),
        })),
    }
}

fn flip() -> pb::PushRequest {
    pb::PushRequest {
        msg: Some(Out::Flip(pb::Flip {})),
    }
}

fn commit() -> pb::PushRequest {
    pb::PushRequest {
        msg: Some(Out::Commit(pb::Commit {})),
    }
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// A manifest under construction, as the wire type, so that it can be broken.
#[derive(Clone)]
struct Draft {
    m: pb::Manifest,
}

impl Draft {
    fn new(version: u64, files: &[(&str, &[u8])]) -> Self {
        let mut entries: Vec<pb::Entry> = files
            .iter()
            .map(|(p, body)| pb::Entry {
                path: (*p).to_owned(),
                size: body.len() as u64,
                sha256: Bytes::copy_from_slice(&Sha256Digest::of(body).0),
            })
            .collect();
        entries.sort_by(|a, b| a.path.cmp(&b.path));
        Self {
            m: pb::Manifest {
                format: 1,
                repo: REPO.into(),
                version,
                created_unix: now(),
                expires_unix: now() + 3600,
                entries,
            },
        }
    }

    fn bytes(&self) -> Vec<u8> {
        self.m.encode_to_vec()
    }
}

fn signed_bytes(key: &SigningKey, bytes: Vec<u8>) -> pb::SignedManifest {
    key.sign(Bytes::from(bytes)).to_pb()
}

/// One running agent and a rogue origin it trusts.
struct Bench {
    dir: tempfile::TempDir,
    agent: Child,
    port: u16,
    key: SigningKey,
    identity: Identity,
    agent_id: String,
    rt: tokio::runtime::Runtime,
}

impl Drop for Bench {
    fn drop(&mut self) {
        let _ = self.agent.kill();
        let _ = self.agent.wait();
    }
}

impl Bench {
    fn start() -> Self {
        install_crypto_provider();
        let dir = tempfile::tempdir().unwrap();
        let origin_dir = dir.path().join("origin");
        let out = run_ok(
            Command::new(bin("hotpush-origin"))
                .args(["init", "--dir"])
                .arg(&origin_dir)
                .args(["--http", "127.0.0.1:1"]),
        );
        let field = |name: &str| {
            out.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_owned())
                .unwrap()
        };
        let (origin_id, origin_key) = (field("origin-id:"), field("signing-key:"));
        let port = free_port("127.0.0.1".parse().unwrap());
        let agent_dir = dir.path().join("agent");
        let agent_id = run_ok(
            Command::new(bin("hotpush-agent"))
                .args(["init", "--dir"])
                .arg(&agent_dir)
                .args([
                    "--origin-id",
                    &origin_id,
                    "--origin-key",
                    &origin_key,
                    "--repo",
                    REPO,
                ])
                .args(["--listen", &format!("127.0.0.1:{port}")]),
        )
        .trim()
        .to_owned();
        // Small limits so that the limit cases are cheap to build.
        let config = agent_dir.join("agent.toml");
        let mut text = std::fs::read_to_string(&config).unwrap();
        text.push_str("\n[limits]\nmax_entries = 40\nmax_manifest_bytes = 4096\nmax_chunk_bytes = 65536\nmax_path_bytes = 200\n");
        std::fs::write(&config, text).unwrap();
        let log = std::fs::File::create(dir.path().join("agent.log")).unwrap();
        let agent = Command::new(bin("hotpush-agent"))
            .args(["serve", "-c"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        wait_until("the agent to listen", Duration::from_secs(10), || {
            std::net::TcpStream::connect(("127.0.0.1", port)).ok()
        });
        let key = SigningKey::load(&origin_dir.join("keys/signing.key")).unwrap();
        let identity = Identity::load(
            &origin_dir.join("tls/cert.pem"),
            &origin_dir.join("tls/key.pem"),
        )
        .unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .unwrap();
        Self {
            dir,
            agent,
            port,
            key,
            identity,
            agent_id,
            rt,
        }
    }

    fn agent_dir(&self) -> PathBuf {
        self.dir.path().join("agent")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }

    /// Sends `first`, then (if the agent answers with a Want) `after`, and
    /// returns every answer until the agent closes the stream.
    fn exchange(
        &self,
        first: Vec<pb::PushRequest>,
        after: impl FnOnce(&pb::Want) -> After,
    ) -> Vec<In> {
        let config = client_config(
            &self.identity,
            PinnedVerifier::new([self.agent_id.parse().unwrap()], "agent"),
        )
        .unwrap();
        let url = format!("https://127.0.0.1:{}", self.port);
        self.rt.block_on(async move {
            let channel =
                hotpush_shared::transport::tls_channel(&url, config, &Default::default()).unwrap();
            let mut client = pb::agent_client::AgentClient::new(channel);
            let (tx, rx) = mpsc::channel(64);
            for m in first {
                tx.send(m).await.unwrap();
            }
            let mut stream = client
                .push(ReceiverStream::new(rx))
                .await
                .expect("push call")
                .into_inner();
            let mut answers = Vec::new();
            let mut tx = Some(tx);
            let mut after = Some(after);
            loop {
                let next = tokio::time::timeout(Duration::from_secs(10), stream.message()).await;
                let Ok(Ok(Some(pb::PushResponse { msg: Some(msg) }))) = next else {
                    break;
                };
                if let In::Want(w) = &msg
                    && let (Some(sender), Some(after)) = (tx.take(), after.take())
                {
                    let After::Send(msgs) = after(w);
                    let committed = msgs
                        .last()
                        .is_some_and(|m| matches!(m.msg, Some(Out::Commit(_))));
                    for m in msgs {
                        if sender.send(m).await.is_err() {
                            break;
                        }
                    }
                    // A Commit waits for Staged, then Flip; anything else
                    // ends with our side hung up.
                    if committed {
                        tx = Some(sender);
                    }
                }
                if let In::Staged(_) = &msg
                    && let Some(sender) = tx.as_ref()
                {
                    let _ = sender.send(flip()).await;
                }
                answers.push(msg);
            }
            answers
        })
    }

    /// A complete, honest push.
    fn push_ok(&self, draft: &Draft, files: &[(&str, &[u8])]) {
        let bodies: BTreeMap<Sha256Digest, Vec<u8>> = files
            .iter()
            .map(|(_, b)| (Sha256Digest::of(b), b.to_vec()))
            .collect();
        let answers = self.exchange(
            vec![offer(signed_bytes(&self.key, draft.bytes()))],
            |want| {
                let mut msgs = Vec::new();
                for w in &want.blobs {
                    let d = Sha256Digest::from_slice(&w.digest).unwrap();
                    msgs.push(chunk(&d, 0, &bodies[&d]));
                }
                msgs.push(commit());
                After::Send(msgs)
            },
        );
        assert!(
            matches!(answers.last(), Some(In::Ack(_))),
            "honest push not acked: {answers:?}\n{}",
            self.log()
        );
    }
}

/// Every file under `dir`: path → sha256 (or symlink target).
fn snapshot(dir: &Path, skip: &[&str]) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let path = e.path();
            let rel = path
                .strip_prefix(dir)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if skip.iter().any(|s| rel.starts_with(s)) {
                continue;
            }
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.file_type().is_symlink() {
                out.insert(
                    rel,
                    format!("-> {}", std::fs::read_link(&path).unwrap().display()),
                );
            } else if meta.is_dir() {
                out.insert(rel, "dir".into());
                stack.push(path);
            } else {
                out.insert(
                    rel,
                    Sha256Digest::of(&std::fs::read(&path).unwrap()).to_hex(),
                );
            }
        }
    }
    out
}

struct Case {
    first: Vec<pb::PushRequest>,
    after: Box<dyn FnOnce(&pb::Want) -> After>,
    /// Expected reject code, or None when the agent should just see a hang-up.
    code: Option<pb::RejectCode>,
    reason: &'static str,
    /// True when the manifest itself was valid, so receiving into tmp/ was allowed.
    blob_stage: bool,
}

/// What the cases are built from: the rogue origin's key and version 6,
/// the honest snapshot after the installed version 5.
struct Ctx {
    key: SigningKey,
    /// The installed version 5, as signed.
    v5: Draft,
    new_pkg: Vec<u8>,
    new_digest: Sha256Digest,
}

const REPOMD_V1: &[u8] = b"<repomd/>";
const PKG_V1: &[u8] = b"package v1";
const V1_FILES: [(&str, &[u8]); 2] = [
    ("repodata/repomd.xml", REPOMD_V1),
    ("Packages/a.rpm", PKG_V1),
];
const REPOMD_V6: &[u8] = b"<repomd v6/>";

impl Ctx {
    fn v6(&self) -> Draft {
        Draft::new(
            6,
            &[
                ("repodata/repomd.xml", REPOMD_V6),
                ("Packages/b.rpm", &self.new_pkg),
            ],
        )
    }
    fn sign(&self, d: &Draft) -> pb::SignedManifest {
        signed_bytes(&self.key, d.bytes())
    }
    /// An honest origin's answer to the Want for version 6: every wanted
    /// blob whole, then Commit.
    fn send_v6_blobs(&self) -> impl FnOnce(&pb::Want) -> After + use<> {
        let (d, p) = (self.new_digest, self.new_pkg.clone());
        move |want| {
            let mut msgs = Vec::new();
            for w in &want.blobs {
                let body: &[u8] = if w.digest[..] == d.0 { &p } else { REPOMD_V6 };
                msgs.push(chunk(
                    &Sha256Digest::from_slice(&w.digest).unwrap(),
                    0,
                    body,
                ));
            }
            msgs.push(commit());
            After::Send(msgs)
        }
    }
    /// Version 6 as a delta against the installed version 5, as an origin
    /// sends it (a.rpm removed; b.rpm and repomd.xml changed), then `f`.
    fn delta(&self, f: impl Fn(&mut pb::ManifestDelta)) -> pb::ManifestDelta {
        let v6 = self.v6();
        let signed = self.sign(&v6);
        let mut d = pb::ManifestDelta {
            repo: REPO.into(),
            base_version: 5,
            base_digest: Bytes::copy_from_slice(&Sha256Digest::of(&self.v5.bytes()).0),
            manifest_digest: Bytes::copy_from_slice(&Sha256Digest::of(&signed.manifest_bytes).0),
            version: 6,
            created_unix: v6.m.created_unix,
            expires_unix: v6.m.expires_unix,
            removed: vec!["Packages/a.rpm".into()],
            changed: v6.m.entries.clone(),
            signatures: signed.signatures,
        };
        f(&mut d);
        d
    }
    /// Version 6 with `f` applied, signed.
    fn edit(&self, f: impl Fn(&mut pb::Manifest)) -> Vec<pb::PushRequest> {
        let mut d = self.v6();
        f(&mut d.m);
        vec![offer(self.sign(&d))]
    }
    /// Version 6 plus an entry at `path`, signed.
    fn path_case(&self, path: &str) -> Vec<pb::PushRequest> {
        self.edit(|m| {
            m.entries.push(pb::Entry {
                path: path.into(),
                size: 1,
                sha256: Bytes::copy_from_slice(&[1; 32]),
            });
            m.entries.sort_by(|a, b| a.path.cmp(&b.path));
        })
    }
    /// A valid version 6 offer, then `after` once the agent wants blobs.
    fn blob_case(
        &self,
        after: impl FnOnce(&pb::Want) -> After + 'static,
        code: Option<pb::RejectCode>,
        reason: &'static str,
    ) -> Case {
        Case {
            first: vec![offer(self.sign(&self.v6()))],
            after: Box::new(after),
            code,
            reason,
            blob_stage: true,
        }
    }
}

/// A case refused at the Offer, before anything is received.
fn manifest_case(first: Vec<pb::PushRequest>, code: pb::RejectCode, reason: &'static str) -> Case {
    Case {
        first,
        after: Box::new(|_| After::Send(vec![])),
        code: Some(code),
        reason,
        blob_stage: false,
    }
}

/// A fresh agent with version 5 installed, and the context to attack it.
fn bench_with_v5() -> (Bench, Ctx) {
    let bench = Bench::start();
    let v5 = Draft::new(5, &V1_FILES);
    bench.push_ok(&v5, &V1_FILES);
    let new_pkg = b"package v2 with the fix".to_vec();
    let ctx = Ctx {
        key: SigningKey::load(&bench.dir.path().join("origin/keys/signing.key")).unwrap(),
        v5,
        new_digest: Sha256Digest::of(&new_pkg),
        new_pkg,
    };
    (bench, ctx)
}

/// Runs one case and checks the refusal and that nothing was written.
fn run_case(name: &str, build: impl FnOnce(&Ctx) -> Case) {
    let (bench, ctx) = bench_with_v5();
    let case = build(&ctx);
    let www = bench.agent_dir().join("www");
    let data = bench.agent_dir().join("data");
    let served_before = std::fs::read(www.join(REPO).join("repodata/repomd.xml")).unwrap();
    // Receiving a valid offer's blobs into tmp/ is allowed; nothing else may change.
    let skip: &[&str] = if case.blob_stage { &["tmp"] } else { &[] };
    let before = (snapshot(&data, skip), snapshot(&www, &[]));
    let answers = bench.exchange(case.first, case.after);
    let rejected = answers.iter().find_map(|a| match a {
        In::Reject(r) => Some(r.clone()),
        _ => None,
    });
    match (case.code, &rejected) {
        (Some(code), Some(r)) => {
            assert_eq!(
                r.code, code as i32,
                "{name}: wrong code for reason {:?}",
                r.reason
            );
            assert!(
                r.reason.contains(case.reason),
                "{name}: reason {:?} lacks {:?}",
                r.reason,
                case.reason
            );
            assert!(
                bench.log().contains(&r.reason),
                "{name}: reason not in the agent's log"
            );
        }
        (None, None) => assert!(
            !answers.iter().any(|a| matches!(a, In::Ack(_))),
            "{name}: acked"
        ),
        (want, got) => panic!("{name}: expected {want:?}, got {got:?} ({answers:?})"),
    }
    let after = (snapshot(&data, skip), snapshot(&www, &[]));
    assert_eq!(before.1, after.1, "{name}: the served tree changed");
    assert_eq!(before.0, after.0, "{name}: the data directory changed");
    assert_eq!(
        std::fs::read(www.join(REPO).join("repodata/repomd.xml")).unwrap(),
        served_before
    );
    println!(
        "REPORT hostile | {name} | {} | {} | served tree unchanged |",
        rejected
            .as_ref()
            .map_or("(hang-up: partial kept for resume)".into(), |r| format!(
                "{:?}",
                pb::RejectCode::try_from(r.code).unwrap()
            )),
        rejected.map(|r| r.reason).unwrap_or_default()
    );
}

/// One `#[test]` per case: `name => |ctx| case`.
macro_rules! hostile_cases {
    ($($name:ident => $build:expr;)*) => {
        $(
            #[test]
            fn $name() {
                run_case(stringify!($name), $build);
            }
        )*
    };
}

use pb::RejectCode as C;
use pb::offer::Form;

hostile_cases! {
    bad_signature => |c: &Ctx| {
        let mut s = c.sign(&c.v6());
        s.signatures[0].ed25519_sig = Bytes::from(vec![7u8; 64]);
        manifest_case(vec![offer(s)], C::RejectBadSignature, "bad signature")
    };
    unknown_key => |c: &Ctx| {
        let stranger = SigningKey::generate().unwrap();
        manifest_case(vec![offer(signed_bytes(&stranger, c.v6().bytes()))], C::RejectUntrustedKey, "not signed by any trusted key")
    };
    signature_over_other_bytes => |c: &Ctx| {
        let mut s = c.sign(&c.v6());
        s.manifest_bytes = Bytes::from(Draft::new(7, &[("repodata/repomd.xml", b"x")]).bytes());
        manifest_case(vec![offer(s)], C::RejectBadSignature, "bad signature")
    };
    no_signature_at_all => |c: &Ctx| {
        let mut s = c.sign(&c.v6());
        s.signatures.clear();
        manifest_case(vec![offer(s)], C::RejectUntrustedKey, "signed by: nobody")
    };
    rollback => |c: &Ctx| manifest_case(vec![offer(c.sign(&Draft::new(4, &V1_FILES)))], C::RejectRollback, "rollback refused");
    replay_same_version_other_content => |c: &Ctx| manifest_case(
        vec![offer(c.sign(&Draft::new(5, &[("repodata/repomd.xml", b"evil")])))],
        C::RejectReplay,
        "replay refused",
    );
    expired_freeze => |c: &Ctx| manifest_case(
        c.edit(|m| {
            m.created_unix = now() - 7200;
            m.expires_unix = now() - 60;
        }),
        C::RejectExpired,
        "expired",
    );
    path_with_dotdot => |c: &Ctx| manifest_case(c.path_case("Packages/../../etc/passwd"), C::RejectBadManifest, "'..' segment");
    absolute_path => |c: &Ctx| manifest_case(c.path_case("/etc/passwd"), C::RejectBadManifest, "absolute path");
    empty_path => |c: &Ctx| manifest_case(c.path_case(""), C::RejectBadManifest, "empty path");
    dot_segment => |c: &Ctx| manifest_case(c.path_case("Packages/./x"), C::RejectBadManifest, "'.' segment");
    doubled_slash => |c: &Ctx| manifest_case(c.path_case("Packages//x"), C::RejectBadManifest, "empty segment");
    nul_in_path => |c: &Ctx| manifest_case(c.path_case("Packages/x\0y"), C::RejectBadManifest, "NUL");
    backslash => |c: &Ctx| manifest_case(c.path_case("Packages\\..\\x"), C::RejectBadManifest, "backslash");
    hidden_segment => |c: &Ctx| manifest_case(c.path_case(".repodata/x"), C::RejectBadManifest, "hidden segment");
    over_long_path => |c: &Ctx| manifest_case(c.path_case(&"a/".repeat(120)), C::RejectBadManifest, "over the limit");
    non_utf8_path => |c: &Ctx| {
        // Encode a placeholder path, then corrupt its bytes under the signature.
        let mut raw = c.v6();
        raw.m.entries.push(pb::Entry {
            path: "Packages/zzzz".into(),
            size: 1,
            sha256: Bytes::copy_from_slice(&[1; 32]),
        });
        let mut bytes = raw.bytes();
        let at = bytes.windows(4).position(|w| w == b"zzzz").unwrap();
        bytes[at..at + 2].copy_from_slice(&[0xff, 0xfe]);
        manifest_case(vec![offer(signed_bytes(&c.key, bytes))], C::RejectBadManifest, "does not decode")
    };
    duplicate_path => |c: &Ctx| manifest_case(
        c.edit(|m| {
            let e = m.entries[0].clone();
            m.entries.insert(0, e);
        }),
        C::RejectBadManifest,
        "duplicate path",
    );
    unsorted_entries => |c: &Ctx| manifest_case(c.edit(|m| m.entries.reverse()), C::RejectBadManifest, "not sorted");
    file_and_directory => |c: &Ctx| manifest_case(c.path_case("Packages"), C::RejectBadManifest, "both a file and a directory");
    nested_repodata => |c: &Ctx| manifest_case(c.path_case("repodata/x/y"), C::RejectBadManifest, "directly in repodata");
    no_repomd_xml => |c: &Ctx| manifest_case(
        c.edit(|m| m.entries.retain(|e| e.path != "repodata/repomd.xml")),
        C::RejectBadManifest,
        "no repodata/repomd.xml",
    );
    short_digest => |c: &Ctx| manifest_case(c.edit(|m| m.entries[0].sha256 = Bytes::from_static(b"abc")), C::RejectBadManifest, "not 32");
    unknown_format => |c: &Ctx| manifest_case(c.edit(|m| m.format = 2), C::RejectBadManifest, "format 2");
    version_zero => |c: &Ctx| manifest_case(c.edit(|m| m.version = 0), C::RejectBadManifest, "version must be at least 1");
    bad_repo_name => |c: &Ctx| manifest_case(c.edit(|m| m.repo = "../etc".into()), C::RejectBadManifest, "bad repo name");
    repo_not_carried => |c: &Ctx| manifest_case(c.edit(|m| m.repo = "other/x86_64".into()), C::RejectUnknownRepo, "not carried");
    too_many_entries => |c: &Ctx| manifest_case(
        c.edit(|m| {
            for i in 0..41 {
                m.entries.push(pb::Entry {
                    path: format!("Packages/n{i:03}"),
                    size: 1,
                    sha256: Bytes::copy_from_slice(&[1; 32]),
                });
            }
            m.entries.sort_by(|a, b| a.path.cmp(&b.path));
        }),
        C::RejectLimit,
        "over the limit of 40",
    );
    manifest_over_the_size_limit => |c: &Ctx| {
        let mut big = c.v6();
        for i in 0..30 {
            big.m.entries.push(pb::Entry {
                path: format!("Packages/{}{i:02}", "p".repeat(180)),
                size: 1,
                sha256: Bytes::copy_from_slice(&[1; 32]),
            });
        }
        big.m.entries.sort_by(|a, b| a.path.cmp(&b.path));
        manifest_case(vec![offer(c.sign(&big))], C::RejectLimit, "over the limit of 4096")
    };
    first_message_not_an_offer => |c: &Ctx| manifest_case(vec![chunk(&c.new_digest, 0, b"x")], C::RejectProtocol, "must be an Offer");
    delta_against_another_base => |c: &Ctx| manifest_case(
        vec![delta_offer(c.delta(|d| d.base_digest = Bytes::copy_from_slice(&[9; 32])))],
        C::RejectDeltaBase,
        "has version 5",
    );
    delta_that_does_not_rebuild => |c: &Ctx| manifest_case(
        vec![delta_offer(c.delta(|d| d.changed[0].size += 1))],
        C::RejectDeltaBase,
        "does not rebuild",
    );
    delta_rebuilt_but_badly_signed => |c: &Ctx| manifest_case(
        // The claimed digest matches the rebuilt bytes; the signature is
        // still checked over them, as for a whole manifest.
        vec![delta_offer(c.delta(|d| d.signatures[0].ed25519_sig = Bytes::from(vec![7u8; 64])))],
        C::RejectBadSignature,
        "bad signature",
    );
    delta_for_a_repo_not_carried => |c: &Ctx| manifest_case(
        vec![delta_offer(c.delta(|d| d.repo = "other/x86_64".into()))],
        C::RejectDeltaBase,
        "no snapshot of it live",
    );
    delta_with_a_bad_repo_name => |c: &Ctx| manifest_case(
        vec![delta_offer(c.delta(|d| d.repo = "../etc".into()))],
        C::RejectBadManifest,
        "bad repo name",
    );
    delta_over_the_change_limit => |c: &Ctx| manifest_case(
        vec![delta_offer(c.delta(|d| d.removed = (0..41).map(|i| format!("Packages/{i:02}")).collect()))],
        C::RejectLimit,
        "over the limit of 40",
    );
    delta_rebuilding_past_the_size_limit => |c: &Ctx| manifest_case(
        vec![delta_offer(c.delta(|d| {
            for i in 0..30 {
                d.changed.push(pb::Entry {
                    path: format!("Packages/{}{i:02}", "p".repeat(180)),
                    size: 1,
                    sha256: Bytes::copy_from_slice(&[1; 32]),
                });
            }
        }))],
        C::RejectLimit,
        "over the limit of 4096",
    );
    parts_declaring_a_manifest_over_the_limit => |c: &Ctx| {
        let mut msgs = parts_offer(c.sign(&c.v6()), 64);
        if let Some(Out::Offer(pb::Offer { form: Some(Form::Parts(p)) })) = &mut msgs[0].msg {
            p.manifest_len = 5000;
        }
        manifest_case(msgs, C::RejectLimit, "5000 bytes, over the limit of 4096")
    };
    parts_longer_than_declared => |c: &Ctx| {
        let mut msgs = parts_offer(c.sign(&c.v6()), 64);
        msgs.push(part(b"x"));
        if let Some(Out::Offer(pb::Offer { form: Some(Form::Parts(p)) })) = &mut msgs[0].msg {
            p.manifest_len -= 1;
        }
        manifest_case(msgs, C::RejectProtocol, "longer than the")
    };
    parts_cut_short_by_another_message => |c: &Ctx| {
        let mut msgs = parts_offer(c.sign(&c.v6()), 64);
        msgs.pop();
        msgs.push(commit());
        manifest_case(msgs, C::RejectProtocol, "arrived before another message")
    };
    an_empty_manifest_part => |c: &Ctx| {
        let mut msgs = parts_offer(c.sign(&c.v6()), 64);
        msgs.insert(1, part(b""));
        manifest_case(msgs, C::RejectProtocol, "an empty ManifestPart")
    };
    parts_badly_signed => |c: &Ctx| {
        let mut s = c.sign(&c.v6());
        s.signatures[0].ed25519_sig = Bytes::from(vec![7u8; 64]);
        manifest_case(parts_offer(s, 64), C::RejectBadSignature, "bad signature")
    };
    a_manifest_part_mid_push => |c: &Ctx| c.blob_case(|_| After::Send(vec![part(b"x")]), Some(C::RejectProtocol), "ManifestPart after the manifest");
    offer_without_a_manifest => |_c: &Ctx| manifest_case(
        vec![pb::PushRequest { msg: Some(Out::Offer(pb::Offer { form: None })) }],
        C::RejectProtocol,
        "without a manifest",
    );
    empty_message => |_c: &Ctx| manifest_case(vec![pb::PushRequest { msg: None }], C::RejectProtocol, "empty message");
    blob_longer_than_declared => |c: &Ctx| {
        let d = c.new_digest;
        c.blob_case(move |_| After::Send(vec![chunk(&d, 0, &[b'x'; 64])]), Some(C::RejectBadBlob), "longer than the declared")
    };
    blob_shorter_than_declared => |c: &Ctx| {
        let (d, p) = (c.new_digest, c.new_pkg.clone());
        c.blob_case(move |_| After::Send(vec![chunk(&d, 0, &p[..5]), commit()]), Some(C::RejectProtocol), "Commit before all blobs")
    };
    blob_whose_hash_differs => |c: &Ctx| {
        let (d, n) = (c.new_digest, c.new_pkg.len());
        c.blob_case(move |_| After::Send(vec![chunk(&d, 0, &vec![b'z'; n])]), Some(C::RejectBadBlob), "content hashes to")
    };
    chunk_for_a_digest_not_wanted => |c: &Ctx| c.blob_case(
        |_| After::Send(vec![chunk(&Sha256Digest::of(b"other"), 0, b"other")]),
        Some(C::RejectProtocol),
        "not wanted",
    );
    chunk_at_a_wrong_offset => |c: &Ctx| {
        let d = c.new_digest;
        c.blob_case(move |_| After::Send(vec![chunk(&d, 3, b"abc")]), Some(C::RejectBadBlob), "offset 3, expected 0")
    };
    oversized_chunk => |c: &Ctx| {
        let d = c.new_digest;
        c.blob_case(move |_| After::Send(vec![chunk(&d, 0, &vec![0; 70_000])]), Some(C::RejectLimit), "over the limit of 65536")
    };
    commit_before_all_blobs => |c: &Ctx| c.blob_case(|_| After::Send(vec![commit()]), Some(C::RejectProtocol), "Commit before all blobs");
    second_offer_mid_push => |c: &Ctx| {
        let o = c.sign(&c.v6());
        c.blob_case(move |_| After::Send(vec![offer(o)]), Some(C::RejectProtocol), "second Offer")
    };
    held_blob_declared_with_another_size => |c: &Ctx| manifest_case(
        // The agent holds PKG_V1 (10 bytes, from version 5); version 6 lists
        // it at a new path with another size.
        c.edit(|m| {
            m.entries.push(pb::Entry {
                path: "Packages/copy.rpm".into(),
                size: 3,
                sha256: Bytes::copy_from_slice(&Sha256Digest::of(PKG_V1).0),
            });
            m.entries.sort_by(|a, b| a.path.cmp(&b.path));
        }),
        C::RejectBadManifest,
        "which this agent holds with 10 bytes",
    );
    stream_closed_before_commit => |c: &Ctx| {
        let (d, p) = (c.new_digest, c.new_pkg.clone());
        c.blob_case(move |_| After::Send(vec![chunk(&d, 0, &p[..5])]), None, "")
    };
}

#[test]
fn an_honest_push_after_a_hang_up_resumes_the_partial_blob() {
    let (bench, ctx) = bench_with_v5();
    let (d, p) = (ctx.new_digest, ctx.new_pkg.clone());
    let answers = bench.exchange(vec![offer(ctx.sign(&ctx.v6()))], move |_| {
        After::Send(vec![chunk(&d, 0, &p[..5])])
    });
    assert!(!answers.iter().any(|a| matches!(a, In::Ack(_))));
    let files = [
        ("repodata/repomd.xml", REPOMD_V6),
        ("Packages/b.rpm", &ctx.new_pkg[..]),
    ];
    // The agent asks only for what it lacks, from where the partial ends.
    let mut resumed_at = None;
    let answers = bench.exchange(vec![offer(ctx.sign(&ctx.v6()))], |want| {
        let mut msgs = Vec::new();
        for w in &want.blobs {
            let d = Sha256Digest::from_slice(&w.digest).unwrap();
            let body = files
                .iter()
                .find(|(_, b)| Sha256Digest::of(b) == d)
                .unwrap()
                .1;
            if d == ctx.new_digest {
                resumed_at = Some(w.offset);
            }
            msgs.push(chunk(&d, w.offset, &body[w.offset as usize..]));
        }
        msgs.push(commit());
        After::Send(msgs)
    });
    assert!(
        matches!(answers.last(), Some(In::Ack(_))),
        "{answers:?}
{}",
        bench.log()
    );
    assert_eq!(resumed_at, Some(5));
}

#[test]
fn an_honest_delta_goes_live_with_the_signed_bytes() {
    let (bench, ctx) = bench_with_v5();
    let delta = ctx.delta(|_| {});
    let answers = bench.exchange(vec![delta_offer(delta.clone())], ctx.send_v6_blobs());
    let Some(In::Ack(ack)) = answers.last() else {
        panic!("delta push not acked: {answers:?}\n{}", bench.log());
    };
    // Acked as the very manifest the delta named, and serving it.
    assert_eq!(ack.version, 6);
    assert_eq!(ack.manifest_digest, delta.manifest_digest);
    let www = bench.agent_dir().join("www").join(REPO);
    assert_eq!(
        std::fs::read(www.join("repodata/repomd.xml")).unwrap(),
        REPOMD_V6
    );
    assert_eq!(
        std::fs::read(www.join("Packages/b.rpm")).unwrap(),
        ctx.new_pkg
    );
}

#[test]
fn an_honest_manifest_in_parts_goes_live() {
    let (bench, ctx) = bench_with_v5();
    let signed = ctx.sign(&ctx.v6());
    let digest = Sha256Digest::of(&signed.manifest_bytes);
    let answers = bench.exchange(parts_offer(signed, 7), ctx.send_v6_blobs());
    let Some(In::Ack(ack)) = answers.last() else {
        panic!("push in parts not acked: {answers:?}\n{}", bench.log());
    };
    assert_eq!((ack.version, &ack.manifest_digest[..]), (6, &digest.0[..]));
    let www = bench.agent_dir().join("www").join(REPO);
    assert_eq!(
        std::fs::read(www.join("repodata/repomd.xml")).unwrap(),
        REPOMD_V6
    );
}

#[test]
fn an_empty_file_needs_no_chunk() {
    let (bench, _ctx) = bench_with_v5();
    let v7 = [
        ("repodata/repomd.xml", b"<repomd v7/>".as_slice()),
        ("repodata/repomd.xml.key", b"".as_slice()),
    ];
    bench.push_ok(&Draft::new(7, &v7), &v7);
    let www = bench.agent_dir().join("www");
    assert_eq!(
        std::fs::read(www.join(REPO).join("repodata/repomd.xml.key")).unwrap(),
        b""
    );
}

/// A TLS client config presenting `cert`/`key` (or nothing) to the agent.
fn client_with(
    bench: &Bench,
    cert: Option<(
        rustls::pki_types::CertificateDer<'static>,
        rustls::pki_types::PrivateKeyDer<'static>,
    )>,
) -> std::sync::Arc<rustls::ClientConfig> {
    let verifier = std::sync::Arc::new(PinnedVerifier::new(
        [bench.agent_id.parse().unwrap()],
        "agent",
    ));
    let builder = rustls::ClientConfig::builder_with_provider(hotpush_shared::identity::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    let mut config = match cert {
        Some((c, k)) => builder.with_client_auth_cert(vec![c], k).unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    std::sync::Arc::new(config)
}

/// Tries a Push with `config`; returns the error text (None if it worked).
fn try_push(bench: &Bench, config: std::sync::Arc<rustls::ClientConfig>) -> Option<String> {
    let url = format!("https://127.0.0.1:{}", bench.port);
    bench.rt.block_on(async move {
        let channel =
            hotpush_shared::transport::tls_channel(&url, config, &Default::default()).unwrap();
        let mut client = pb::agent_client::AgentClient::new(channel);
        // With TLS 1.3 the refusal may surface at the call or at the first read.
        match client.status(pb::StatusRequest {}).await {
            Ok(_) => None,
            Err(e) => Some(format!("{e}")),
        }
    })
}

fn self_signed(
    name: &str,
    key: &rcgen::KeyPair,
    expired: bool,
) -> rustls::pki_types::CertificateDer<'static> {
    let mut params = rcgen::CertificateParams::new(vec![name.to_owned()]).unwrap();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    if expired {
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    }
    params.self_signed(key).unwrap().der().clone()
}

fn der_key(key: &rcgen::KeyPair) -> rustls::pki_types::PrivateKeyDer<'static> {
    rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der()).unwrap()
}

#[test]
fn agents_refuse_unpinned_or_expired_identities_during_the_handshake() {
    let bench = Bench::start();
    let origin_key_pem =
        std::fs::read_to_string(bench.dir.path().join("origin/tls/key.pem")).unwrap();
    let pinned_key = rcgen::KeyPair::from_pem(&origin_key_pem).unwrap();
    let stranger_key = rcgen::KeyPair::generate().unwrap();
    let fingerprint = |cert: &[u8]| {
        hotpush_shared::identity::PeerId::of_cert(cert)
            .unwrap()
            .to_string()
    };

    // The real identity works, so every refusal below is about the certificate.
    let real = (bench.identity.cert.clone(), bench.identity.key.clone_key());
    assert_eq!(
        try_push(&bench, client_with(&bench, Some(real))),
        None,
        "{}",
        bench.log()
    );

    assert!(
        try_push(&bench, client_with(&bench, None)).is_some(),
        "no client certificate was accepted"
    );

    let unpinned = self_signed("someone-else", &stranger_key, false);
    let unpinned_id = fingerprint(&unpinned);
    assert!(
        try_push(
            &bench,
            client_with(&bench, Some((unpinned, der_key(&stranger_key))))
        )
        .is_some()
    );

    let same_name = self_signed("hotpush-origin", &stranger_key, false);
    let same_name_id = fingerprint(&same_name);
    assert!(
        try_push(
            &bench,
            client_with(&bench, Some((same_name, der_key(&stranger_key))))
        )
        .is_some()
    );

    let expired = self_signed("hotpush-origin", &pinned_key, true);
    let expired_id = fingerprint(&expired);
    assert_eq!(
        expired_id,
        bench.identity.id().unwrap().to_string(),
        "same key, so the same pinned id"
    );
    assert!(
        try_push(
            &bench,
            client_with(&bench, Some((expired, der_key(&pinned_key))))
        )
        .is_some()
    );

    let log = bench.log();
    assert!(log.contains("TLS handshake refused"), "{log}");
    for id in [&unpinned_id, &same_name_id] {
        assert!(
            log.contains(&format!("peer_id={id}")) && log.contains("not pinned"),
            "log lacks {id}:\n{log}"
        );
    }
    assert!(
        log.contains(&format!("peer_id={expired_id}")) && log.contains("certificate expired"),
        "{log}"
    );

    // The origin side refuses an agent whose id is not the registered one.
    let wrong = client_config(
        &bench.identity,
        PinnedVerifier::new([unpinned_id.parse().unwrap()], "agent"),
    )
    .unwrap();
    let err = try_push(&bench, wrong).expect("an agent with another id was accepted");
    assert!(
        err.contains("ApplicationVerificationFailure") || err.contains("invalid peer certificate"),
        "{err}"
    );
}
