//! The README's first command, `deploy/demo.sh`, brings up a network that a
//! real dnf installs the sample RPM from.

use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv6Addr};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use hotpush_tests::{bin, free_ports, workspace_root};

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn dnf_installs_the_sample_rpm_from_the_demo_network() {
    if !have("dnf") || !have("rpmbuild") {
        eprintln!("SKIPPED: dnf is not installed (tests/install-deps.sh installs it)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // The demo numbers its ports PORT..PORT+30.
    let port = free_ports(IpAddr::V6(Ipv6Addr::LOCALHOST), 31);
    let bin_dir = bin("hotpush-origin").parent().unwrap().to_path_buf();
    let mut demo = Command::new("bash")
        .arg(workspace_root().join("deploy/demo.sh"))
        .env("HOTPUSH_BIN_DIR", &bin_dir)
        .env("HOTPUSH_DEMO_DIR", dir.path())
        .env("HOTPUSH_DEMO_PORT", port.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting deploy/demo.sh");
    let stdout = demo.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            println!("demo: {line}");
            if let Some(url) = line.strip_prefix("HOTPUSH-DEMO-READY ") {
                let _ = tx.send(url.to_owned());
            }
        }
    });
    let metalink = rx.recv_timeout(Duration::from_secs(60));
    let result = metalink.map(|url| {
        let repo_file = std::fs::read_to_string(dir.path().join("hotpush-demo.repo")).unwrap();
        assert!(
            repo_file.contains(&format!("metalink={url}")),
            "{repo_file}"
        );
        Command::new("bash")
            .arg(workspace_root().join("tests/dnf-check.sh"))
            .args([
                &url,
                "hello-hotpush",
                "/usr/share/hello-hotpush/VERSION",
                "1.0",
            ])
            .env("DNF_TIMEOUT", "120")
            .output()
            .expect("running tests/dnf-check.sh")
    });
    // Stop the demo the way a person does (its trap stops the daemons).
    let _ = Command::new("kill")
        .args(["-INT", &demo.id().to_string()])
        .status();
    let _ = demo.wait();
    let out = result.expect("demo.sh printed HOTPUSH-DEMO-READY within 60 s");
    assert!(
        out.status.success(),
        "dnf could not install through the demo's metalink:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
