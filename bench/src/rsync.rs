//! The rsync baselines: four rsync daemons (one module and port each) and a
//! private sshd, all on loopback, pushed to by four rsync clients at once
//! with the flags Debian's ftpsync uses for mirror runs.
//!
//! Push, not pull: the source host runs the four clients, as the hotpush
//! origin pushes to four agents, so both sides of each transfer run on
//! this machine either way and the work done is the same as a pull.

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{Context, Result};

use crate::process::{self, output, wait_listening};

/// ftpsync's `RSYNC_OPTIONS` for a mirror run: permissions, recursion,
/// symlinks, times, hard links, sparse files, 8 KiB blocks, no unsafe
/// symlinks, deletions after the transfer, and every update renamed into
/// place at the end (`--delay-updates`), which is rsync's nearest thing to
/// an atomic switch. `--no-inc-recursive` builds the whole file list first,
/// which `--delay-updates` and `-H` need to be exact.
pub const FTPSYNC_FLAGS: [&str; 5] = [
    "-prltHSB8192",
    "--safe-links",
    "--delete-delay",
    "--delay-updates",
    "--no-inc-recursive",
];

const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// An ssh cipher to compare (OpenSSH's defaults, in its order of preference).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Cipher {
    Chacha20,
    Aes128Gcm,
}

impl Cipher {
    pub const ALL: [Cipher; 2] = [Cipher::Chacha20, Cipher::Aes128Gcm];

    /// The name `ssh -c` takes.
    pub fn ssh_name(self) -> &'static str {
        match self {
            Cipher::Chacha20 => "chacha20-poly1305@openssh.com",
            Cipher::Aes128Gcm => "aes128-gcm@openssh.com",
        }
    }
}

/// Four `rsync --daemon --no-detach`, each serving one destination
/// directory as module `dst` on its own port.
pub struct Daemons {
    children: Vec<Child>,
    ports: Vec<u16>,
}

impl Daemons {
    /// Starts one daemon per destination; configs and logs under `dir`.
    pub fn start(dir: &Path, dests: &[PathBuf]) -> Result<Self> {
        let mut daemons = Daemons {
            children: Vec::new(),
            ports: Vec::new(),
        };
        for (i, dest) in dests.iter().enumerate() {
            let d = dir.join(format!("rsyncd{i}"));
            std::fs::create_dir_all(&d).with_context(|| format!("mkdir {}", d.display()))?;
            let conf = d.join("rsyncd.conf");
            // Running as root, rsyncd would switch to `nobody` and could
            // not write the module: stay root, as a mirror's rsync user
            // owns its tree. No chroot: nothing to isolate on loopback.
            std::fs::write(
                &conf,
                format!(
                    "pid file = {pid}\nlock file = {lock}\nlog file = {log}\nuse chroot = no\n\
                     uid = 0\ngid = 0\nmax connections = 8\n\n[dst]\npath = {path}\nread only = no\n",
                    pid = d.join("rsyncd.pid").display(),
                    lock = d.join("rsyncd.lock").display(),
                    log = d.join("rsyncd.log").display(),
                    path = dest.display(),
                ),
            )
            .with_context(|| format!("writing {}", conf.display()))?;
            let port = hotpush_tests::free_port(LOOPBACK);
            let stderr = d.join("stderr.log");
            let err =
                File::create(&stderr).with_context(|| format!("creating {}", stderr.display()))?;
            let mut child = Command::new("rsync")
                .args(["--daemon", "--no-detach"])
                .arg(format!("--config={}", conf.display()))
                .arg(format!("--port={port}"))
                .arg("--address=127.0.0.1")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(err)
                .spawn()
                .context("spawning rsync --daemon (is rsync installed?)")?;
            let ready = wait_listening(
                &format!("rsync daemon {i}"),
                SocketAddr::new(LOOPBACK, port),
                &mut child,
                &stderr,
            );
            daemons.children.push(child);
            ready?;
            daemons.ports.push(port);
        }
        Ok(daemons)
    }

    /// One client per daemon, pushing `src` (its contents) into the module.
    pub fn commands(&self, src: &Path) -> Vec<Command> {
        self.ports
            .iter()
            .map(|port| {
                let mut c = Command::new("rsync");
                c.args(FTPSYNC_FLAGS)
                    .arg(format!("{}/", src.display()))
                    .arg(format!("rsync://127.0.0.1:{port}/dst/"));
                c
            })
            .collect()
    }
}

impl Drop for Daemons {
    fn drop(&mut self) {
        for c in &mut self.children {
            process::stop(c);
        }
    }
}

/// A private sshd on loopback: its own host key, its own authorized_keys
/// holding a key made for the benchmark, no PAM, nothing of the system's
/// ssh configuration used.
pub struct Sshd {
    child: Child,
    port: u16,
    key: PathBuf,
}

impl Sshd {
    pub fn start(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("mkdir {}", dir.display()))?;
        // sshd refuses to start without its privilege separation directory
        // (normally made by the service unit, which we do not run).
        std::fs::create_dir_all("/run/sshd").context("mkdir /run/sshd")?;
        let (host_key, key) = (dir.join("host_key"), dir.join("client_key"));
        for k in [&host_key, &key] {
            if !k.exists() {
                output(
                    Command::new("ssh-keygen")
                        .args(["-q", "-t", "ed25519", "-N", ""])
                        .arg("-f")
                        .arg(k),
                )?;
            }
        }
        let authorized = dir.join("authorized_keys");
        let public = dir.join("client_key.pub");
        std::fs::copy(&public, &authorized)
            .with_context(|| format!("copying {} to {}", public.display(), authorized.display()))?;
        let port = hotpush_tests::free_port(LOOPBACK);
        let conf = dir.join("sshd_config");
        // StrictModes no: the temp dir's permissions are not sshd's concern
        // here. UsePAM no: no login session machinery on the measured path.
        std::fs::write(
            &conf,
            format!(
                "Port {port}\nListenAddress 127.0.0.1\nHostKey {host}\nAuthorizedKeysFile {auth}\n\
                 PidFile {pid}\nUsePAM no\nStrictModes no\nPermitRootLogin prohibit-password\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nMaxStartups 32\n\
                 Ciphers {ciphers}\n",
                host = host_key.display(),
                auth = authorized.display(),
                pid = dir.join("sshd.pid").display(),
                ciphers = Cipher::ALL.map(Cipher::ssh_name).join(","),
            ),
        )
        .with_context(|| format!("writing {}", conf.display()))?;
        let log = dir.join("sshd.log");
        // sshd must be started by its absolute path (it re-executes itself).
        let mut child = Command::new("/usr/sbin/sshd")
            .arg("-D")
            .arg("-f")
            .arg(&conf)
            .arg("-E")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("spawning /usr/sbin/sshd (is openssh-server installed?)")?;
        if let Err(e) = wait_listening("sshd", SocketAddr::new(LOOPBACK, port), &mut child, &log) {
            process::stop(&mut child);
            return Err(e);
        }
        Ok(Sshd { child, port, key })
    }

    /// One `rsync -e ssh` per destination, pushing `src` with `cipher`.
    pub fn commands(&self, cipher: Cipher, src: &Path, dests: &[PathBuf]) -> Vec<Command> {
        let ssh = format!(
            "ssh -i {} -p {} -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null \
             -o BatchMode=yes -o LogLevel=ERROR -o Compression=no -c {}",
            self.key.display(),
            self.port,
            cipher.ssh_name()
        );
        dests
            .iter()
            .map(|dest| {
                let mut c = Command::new("rsync");
                c.args(FTPSYNC_FLAGS)
                    .arg("-e")
                    .arg(&ssh)
                    .arg(format!("{}/", src.display()))
                    .arg(format!("127.0.0.1:{}/", dest.display()));
                c
            })
            .collect()
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        // Connections are served by children of this one; all have exited
        // with their clients by the time we stop.
        process::stop(&mut self.child);
    }
}
