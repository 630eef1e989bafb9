//! Driving the real `dnf` (Debian 12: dnf 4.14 / librepo 1.14) against a
//! [`crate::Network`], plus the log and helper-process plumbing those tests
//! need.
//!
//! A [`DnfRoot`] is one persistent `--installroot` with everything private to
//! it (see `/work/shared/research/dnf-harness.md` §8 for why each is needed):
//! a HOME whose `.rpmmacros` puts the rpmdb at `/var/lib/rpm` (Debian's rpm
//! would use `~/.rpmdb` inside the root), its own `dnf.conf` with
//! `skip_if_unavailable=False` (Debian's says True, which turns a broken repo
//! into a later "No match for argument"), its own reposdir, and
//! `--releasever=40 --noplugins` on every call. Dropping it kills the
//! gpg-agents dnf left behind (by PID, selected by a homedir under its dir).

use std::fs::OpenOptions;
use std::io::{Read, Seek, SeekFrom};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::{run, strip_ansi, wait_until};

/// `Err(reason)` when this host cannot run the dnf tests: no dnf, or not
/// root (`dnf --installroot` writes an rpmdb).
pub fn available() -> Result<(), String> {
    let have = |tool: &str| {
        Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    for tool in ["dnf", "rpm", "createrepo_c", "rpmbuild"] {
        if !have(tool) {
            return Err(format!("{tool} is not installed (tests/install-deps.sh)"));
        }
    }
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if !is_root {
        return Err("dnf --installroot needs root".into());
    }
    Ok(())
}

/// One finished dnf (or rpm) command.
#[derive(Debug)]
pub struct DnfRun {
    pub args: Vec<String>,
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl DnfRun {
    pub fn success(&self) -> bool {
        self.code == 0
    }
}

/// A persistent dnf installroot with private HOME, config and reposdir.
#[derive(Debug)]
pub struct DnfRoot {
    /// Everything of this root lives here.
    pub dir: PathBuf,
    /// The `--installroot`.
    pub root: PathBuf,
    pub home: PathBuf,
    pub config: PathBuf,
    pub reposdir: PathBuf,
}

impl DnfRoot {
    /// Creates `<dir>/{root,home,etc,repos.d}` with the config files.
    pub fn new(dir: &Path) -> Self {
        let r = DnfRoot {
            dir: dir.to_path_buf(),
            root: dir.join("root"),
            home: dir.join("home"),
            config: dir.join("etc/dnf.conf"),
            reposdir: dir.join("repos.d"),
        };
        for d in [&r.root, &r.home, &r.reposdir, &dir.join("etc")] {
            std::fs::create_dir_all(d).unwrap_or_else(|e| panic!("mkdir {}: {e}", d.display()));
        }
        write(&r.home.join(".rpmmacros"), "%_dbpath /var/lib/rpm\n");
        write(
            &r.config,
            "[main]\ngpgcheck=0\ninstallonly_limit=3\nclean_requirements_on_remove=True\n\
             best=True\nskip_if_unavailable=False\ninstall_weak_deps=False\nkeepcache=False\n",
        );
        r
    }

    /// Writes `repos.d/<id>.repo` for a metalink repo; `extra` lines
    /// (`key=value`) are appended and override nothing set before them
    /// except by dnf's last-one-wins rule.
    pub fn add_repo(&self, id: &str, metalink: &str, extra: &[&str]) {
        let mut text = format!(
            "[{id}]\nname=hotpush {id}\nmetalink={metalink}\nenabled=1\ngpgcheck=0\n\
             repo_gpgcheck=0\nskip_if_unavailable=False\n"
        );
        for line in extra {
            text.push_str(line);
            text.push('\n');
        }
        write(&self.reposdir.join(format!("{id}.repo")), &text);
    }

    /// `dnf -y --installroot … <args>` ready to run.
    pub fn command(&self, args: &[&str]) -> Command {
        self.command_under(&[], args)
    }

    /// [`DnfRoot::command`] run under `wrapper` (e.g. `nice -n 10`).
    pub fn command_under(&self, wrapper: &[&str], args: &[&str]) -> Command {
        let mut c = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut c = Command::new(program);
                c.args(rest).arg("timeout");
                c
            }
            None => Command::new("timeout"),
        };
        c.arg("60")
            .arg("dnf")
            .arg("-y")
            .arg(format!("--installroot={}", self.root.display()))
            .arg("--releasever=40")
            .arg(format!("--config={}", self.config.display()))
            .arg(format!("--setopt=reposdir={}", self.reposdir.display()))
            .arg("--noplugins")
            .args(args);
        self.env(&mut c);
        c
    }

    fn env(&self, c: &mut Command) {
        c.env("HOME", &self.home)
            .env("LC_ALL", "C.UTF-8")
            .env("GNUPGHOME", self.dir.join("dnf-gnupg"))
            .stdin(Stdio::null());
    }

    /// Runs dnf with `args`, whatever its exit status.
    pub fn dnf(&self, args: &[&str]) -> DnfRun {
        let start = Instant::now();
        let out = run(&mut self.command(args));
        finish(args, out, start.elapsed())
    }

    /// Runs dnf with `args`; panics with its output and the tail of
    /// `dnf.librepo.log` (dnf itself is silent about rejected mirrors)
    /// unless it exits 0.
    pub fn dnf_ok(&self, args: &[&str]) -> DnfRun {
        let r = self.dnf(args);
        assert!(
            r.success(),
            "dnf {:?} exited {} after {:?}\nstdout:\n{}\nstderr:\n{}\n---- tail of dnf.librepo.log ----\n{}",
            r.args,
            r.code,
            r.elapsed,
            r.stdout,
            r.stderr,
            self.librepo_log_tail(40)
        );
        r
    }

    /// The last `n` lines of `<root>/var/log/dnf.librepo.log`.
    pub fn librepo_log_tail(&self, n: usize) -> String {
        let text =
            std::fs::read_to_string(self.root.join("var/log/dnf.librepo.log")).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// `rpm --root <root> -q <pkg>`: the installed NEVRA, or `None`.
    pub fn rpm_q(&self, pkg: &str) -> Option<String> {
        let mut c = Command::new("rpm");
        c.arg("--root").arg(&self.root).args(["-q", pkg]);
        self.env(&mut c);
        let out = run(&mut c);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// A file inside the installroot (`path` absolute in the root).
    pub fn read(&self, path: &str) -> Option<String> {
        std::fs::read_to_string(self.root.join(path.trim_start_matches('/'))).ok()
    }
}

impl Drop for DnfRoot {
    fn drop(&mut self) {
        // dnf with repo_gpgcheck=1 leaves `gpg-agent --homedir
        // <root>/var/cache/dnf/<repo>/pubring` running.
        kill_gpg_agents_under(&self.dir);
    }
}

fn finish(args: &[&str], out: Output, elapsed: Duration) -> DnfRun {
    DnfRun {
        args: args.iter().map(|s| s.to_string()).collect(),
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed,
    }
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

/// PIDs of the live `gpg-agent`s whose command line names a path under
/// `dir` (zombies have an empty command line and are not listed).
pub fn gpg_agents_under(dir: &Path) -> Vec<u32> {
    let needle = dir.to_string_lossy().into_owned();
    let mut found = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let is_agent = args.first().is_some_and(|a| a.ends_with("gpg-agent"));
        if is_agent && args.iter().any(|a| a.contains(&needle)) {
            found.push(pid);
        }
    }
    found
}

/// Stops every [`gpg_agents_under`] `dir`, by PID: SIGTERM, then SIGKILL
/// for those still alive after 2 s. Returns the PIDs it signalled.
pub fn kill_gpg_agents_under(dir: &Path) -> Vec<u32> {
    let pids = gpg_agents_under(dir);
    for pid in &pids {
        let _ = Command::new("kill").arg(pid.to_string()).status();
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let left: Vec<u32> = gpg_agents_under(dir)
            .into_iter()
            .filter(|p| pids.contains(p))
            .collect();
        if left.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            for pid in left {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    pids
}

/// One access-log line (`INFO access: GET /path 200 123`) of the origin's or
/// an agent's HTTP server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Access {
    pub method: String,
    /// Path and query, as logged.
    pub uri: String,
    pub status: u16,
    /// Body bytes (`None` when logged as `-`).
    pub bytes: Option<u64>,
    /// The User-Agent (`-` when none was sent).
    pub user_agent: String,
}

/// What the origin's crawler names itself in User-Agent.
pub const CRAWLER: &str = hotpush_origin::crawl::Crawls::USER_AGENT;

impl Access {
    /// Whether the origin's mirror crawler made this request, not a client.
    pub fn is_crawler(&self) -> bool {
        self.user_agent.contains(CRAWLER)
    }
}

/// The access-log lines in `log`.
pub fn access_lines(log: &str) -> Vec<Access> {
    log.lines()
        .filter_map(|l| {
            let (_, rest) = l.split_once(" access: ")?;
            let mut w = rest.split_whitespace();
            let method = w.next()?.to_owned();
            let uri = w.next()?.to_owned();
            let status = w.next()?.parse().ok()?;
            let bytes = w.next().and_then(|b| b.parse().ok());
            let user_agent = rest
                .split_once(" \"")
                .map(|(_, ua)| ua.trim_end().trim_end_matches('"').to_owned())
                .unwrap_or_else(|| "-".into());
            Some(Access {
                method,
                uri,
                status,
                bytes,
                user_agent,
            })
        })
        .collect()
}

/// A position in a log file: what was appended after it can be read back.
#[derive(Clone, Debug)]
pub struct LogMark {
    pub path: PathBuf,
    pub offset: u64,
}

impl LogMark {
    /// Marks the current end of `path` (0 when it does not exist yet).
    pub fn at_end(path: &Path) -> Self {
        LogMark {
            path: path.to_path_buf(),
            offset: std::fs::metadata(path).map(|m| m.len()).unwrap_or(0),
        }
    }

    /// Everything appended since the mark, without colour codes.
    pub fn since(&self) -> String {
        let mut buf = Vec::new();
        if let Ok(mut f) = std::fs::File::open(&self.path) {
            let _ = f.seek(SeekFrom::Start(self.offset));
            let _ = f.read_to_end(&mut buf);
        }
        strip_ansi(&String::from_utf8_lossy(&buf))
    }

    /// The access-log lines appended since the mark.
    pub fn access_since(&self) -> Vec<Access> {
        access_lines(&self.since())
    }

    /// The access-log lines appended since the mark, but the origin
    /// crawler's: what clients asked.
    pub fn client_access_since(&self) -> Vec<Access> {
        let mut lines = self.access_since();
        lines.retain(|a| !a.is_crawler());
        lines
    }
}

/// Python's `http.server` serving `dir` on `addr`: a plain static server
/// that logs every request on stderr (to `log`), with its User-Agent.
/// Killed on drop.
#[derive(Debug)]
pub struct PyHttpServer {
    pub addr: SocketAddr,
    pub log: PathBuf,
    child: Child,
}

impl PyHttpServer {
    /// Starts it and waits until it accepts connections.
    pub fn start(addr: SocketAddr, dir: &Path, log: &Path) -> Self {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap_or_else(|e| panic!("opening {}: {e}", log.display()));
        let child = Command::new("/usr/bin/python3")
            .args(["-u", "-c", PY_HTTP_SERVER])
            .arg(addr.ip().to_string())
            .arg(addr.port().to_string())
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap_or_else(|e| panic!("spawning python3 -m http.server: {e}"));
        let mut server = PyHttpServer {
            addr,
            log: log.to_path_buf(),
            child,
        };
        wait_until(
            &format!("python3 http.server on {addr}"),
            crate::READY_TIMEOUT,
            || {
                if let Ok(Some(status)) = server.child.try_wait() {
                    panic!(
                        "python3 http.server exited with {status}: {}",
                        std::fs::read_to_string(&server.log).unwrap_or_default()
                    );
                }
                std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200))
                    .is_ok()
                    .then_some(())
            },
        );
        // Connect-and-close probes log nothing; wipe anything else anyway so
        // the log holds client requests only.
        let _ = server.take_log();
        server
    }

    fn take_log(&mut self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let _ = std::fs::write(&self.log, "");
        text
    }

    /// The request lines clients made so far
    /// (`"GET /… HTTP/1.1" 200 - "user agent"`): the origin crawler's are
    /// left out.
    pub fn requests(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains("\"GET ") || l.contains("\"HEAD ") || l.contains("code "))
            .filter(|l| !l.contains(CRAWLER))
            .map(str::to_owned)
            .collect()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// `http.server` as `python3 -m http.server --bind ADDR PORT -d DIR` runs
/// it (IPv4 or IPv6), logging each request's User-Agent too.
const PY_HTTP_SERVER: &str = r#"
import functools, http.server, sys
class Handler(http.server.SimpleHTTPRequestHandler):
    def log_request(self, code="-", size="-"):
        agent = self.headers.get("User-Agent", "-").replace('"', "'")
        self.log_message('"%s" %s %s "%s"', self.requestline, code, size, agent)
bind, port, directory = sys.argv[1], int(sys.argv[2]), sys.argv[3]
http.server.test(HandlerClass=functools.partial(Handler, directory=directory),
                 port=port, bind=bind)
"#;

impl Drop for PyHttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
