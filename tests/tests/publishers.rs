//! Only authorised people can publish: the control socket's permissions
//! decide who may publish locally; remote publishers need a pinned TLS id;
//! every publish is in the audit log with who made it.
#![allow(clippy::unwrap_used)] // a test file: a panic is the failure report

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use hotpush_tests::{AgentSpec, Network, Signal, bin, fixture, free_port, run, run_ok};

const REPO: &str = "sec/x86_64";

fn publisher_init(dir: &std::path::Path) -> String {
    run_ok(
        Command::new(bin("hotpush-origin"))
            .args(["publisher", "init"])
            .arg(dir),
    )
    .trim()
    .to_owned()
}

#[test]
fn remote_publishers_need_a_pinned_id_and_every_publish_is_audited() {
    let mut net = Network::builder().repo(REPO).agent(AgentSpec::v4()).start();
    let alice = net.root.join("alice");
    let alice_id = publisher_init(&alice);
    let mallory = net.root.join("mallory");
    let mallory_id = publisher_init(&mallory);
    let port = free_port("127.0.0.1".parse().unwrap());

    net.stop_origin(Signal::Term);
    let mut config = std::fs::read_to_string(&net.origin_config).unwrap();
    config.push_str(&format!(
        "\ncontrol_listen = [\"127.0.0.1:{port}\"]\n\n[[publisher]]\nname = \"alice\"\nid = \"{alice_id}\"\n"
    ));
    std::fs::write(&net.origin_config, config).unwrap();
    net.start_origin();
    let (cert, key) = (
        net.origin_dir.join("tls/cert.pem"),
        net.origin_dir.join("tls/key.pem"),
    );
    let origin_id = hotpush_shared::identity::Identity::load(&cert, &key)
        .unwrap()
        .id()
        .unwrap()
        .to_string();

    let src = net.root.join("src");
    fixture::sample_repo(&src);
    let url = format!("https://127.0.0.1:{port}");
    let remote = |who: &std::path::Path| {
        let mut c = Command::new(bin("hotpush-origin"));
        c.args(["publish", REPO, "--from"]).arg(&src).args([
            "--json",
            "--timeout",
            "20",
            "--remote",
            &url,
        ]);
        c.args(["--origin-id", &origin_id, "--identity"]).arg(who);
        run(&mut c)
    };

    // A pinned publisher publishes from another "host".
    let ok = remote(&alice);
    assert!(
        ok.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&ok.stdout),
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("\"ok\":true"));

    // An unpinned one is refused in the handshake, and the origin logs its id.
    let refused = remote(&mallory);
    assert!(!refused.status.success());
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        said.contains("cannot reach the origin's control service")
            && said.contains("your publisher id listed"),
        "{said}"
    );
    let log = net.origin_log_text();
    assert!(
        log.contains(&format!("peer_id={mallory_id}")) && log.contains("refused TLS publisher"),
        "{log}"
    );

    // Locally, the socket's permissions decide: an ordinary user is refused.
    for dir in [&net.root, &net.origin_dir] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::fs::set_permissions(&net.origin_config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let socket_mode = std::fs::metadata(&net.origin_socket)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(
        socket_mode, 0o660,
        "control socket must not be world-writable"
    );
    let nobody = run(Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(bin("hotpush-origin"))
        .arg("-c")
        .arg(&net.origin_config)
        .args(["publish", REPO, "--from"])
        .arg(&src));
    let text = String::from_utf8_lossy(&nobody.stderr);
    assert_eq!(nobody.status.code(), Some(69), "{text}");
    assert!(
        text.contains("Permission denied") || text.contains("permission denied"),
        "{text}"
    );

    // And root, through the socket.
    let local = net.publish(REPO, &src, &["--json", "--timeout", "20"]);
    assert_eq!(local.code, 0, "{}", local.stdout);

    // The audit log names both publishers, in order, with versions and digests.
    let audit = run_ok(net.origin_cmd().arg("audit"));
    let lines: Vec<&str> = audit
        .lines()
        .filter(|l| l.contains("\tpublish\t"))
        .collect();
    assert_eq!(lines.len(), 2, "{audit}");
    assert!(
        lines[0].contains(&format!("publisher alice ({})", &alice_id[..16]))
            && lines[0].contains("\tsec/x86_64\tv1\t"),
        "{audit}"
    );
    assert!(
        lines[1].contains("root (uid 0)") && lines[1].contains("\tsec/x86_64\tv2\t"),
        "{audit}"
    );
    assert!(!audit.contains("mallory"), "{audit}");
    // Who receives pushes is audited too: the harness registered m0.
    assert!(
        audit
            .lines()
            .any(|l| l.contains("root (uid 0)\tagent-add\t")
                && l.contains(&format!("m0 https://{}", net.agents[0].listen))),
        "{audit}"
    );
    run_ok(net.origin_cmd().args(["agent", "remove", "m0"]));
    let audit = run_ok(net.origin_cmd().arg("audit"));
    assert!(
        audit
            .lines()
            .any(|l| l.contains("\tagent-remove\t") && l.ends_with("\tm0")),
        "{audit}"
    );
}
