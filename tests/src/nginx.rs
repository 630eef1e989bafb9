//! A real nginx serving a directory on a loopback port, run as root in the
//! foreground with every path private to a temp dir (see
//! `/work/shared/research/dnf-harness.md` §3 and pitfall 10: `-e` so it never
//! opens `/var/log/nginx`, explicit temp paths, `daemon off`). Stopped with
//! SIGTERM (by PID) when dropped.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `Err(reason)` when nginx cannot run here.
pub fn available() -> Result<(), String> {
    Command::new("nginx")
        .arg("-v")
        .output()
        .map(|_| ())
        .map_err(|e| format!("nginx is not installed: {e}"))
}

#[derive(Debug)]
pub struct Nginx {
    pub addr: SocketAddr,
    pub dir: PathBuf,
    child: Option<Child>,
}

impl Nginx {
    /// Serves `root` on `addr` (symlinks followed, nginx's default); its
    /// config, logs and temp files live under `dir`.
    pub fn start(addr: SocketAddr, root: &Path, dir: &Path) -> Self {
        Self::with_server(addr, "", &format!("root {};", root.display()), dir)
    }

    /// A partner's front end: `deploy/nginx-hotpush.conf` as shipped, with
    /// its `/srv/hotpush/` pointed at `serve_root`, so the tree is at
    /// `http://<addr>/hotpush/`.
    pub fn front_end(addr: SocketAddr, serve_root: &Path, dir: &Path) -> Self {
        let snippet =
            std::fs::read_to_string(crate::workspace_root().join("deploy/nginx-hotpush.conf"))
                .expect("reading deploy/nginx-hotpush.conf");
        let snippet = snippet.replace("/srv/hotpush/", &format!("{}/", serve_root.display()));
        Self::with_server(addr, "", &snippet, dir)
    }

    /// A caching reverse proxy in front of `upstream` (HTTP), keeping each
    /// answer as long as its `Cache-Control: max-age` allows (nginx's
    /// default for `proxy_cache`): what a client behind a site proxy sees.
    pub fn caching_proxy(addr: SocketAddr, upstream: SocketAddr, dir: &Path) -> Self {
        let http = format!(
            "proxy_cache_path {} levels=1 keys_zone=hotpush:1m max_size=16m use_temp_path=off;",
            dir.join("cache").display()
        );
        let server = format!(
            "location / {{ proxy_pass http://{upstream}; proxy_cache hotpush; \
             add_header X-Cache-Status $upstream_cache_status; }}"
        );
        Self::with_server(addr, &http, &server, dir)
    }

    /// The public URL of a [`Nginx::front_end`].
    pub fn public_url(&self) -> String {
        format!("http://{}/hotpush/", self.addr)
    }

    fn with_server(addr: SocketAddr, http_extra: &str, server_body: &str, dir: &Path) -> Self {
        let d = |p: &str| dir.join(p).display().to_string();
        for sub in [
            "tmp/body",
            "tmp/proxy",
            "tmp/fastcgi",
            "tmp/uwsgi",
            "tmp/scgi",
        ] {
            std::fs::create_dir_all(dir.join(sub)).expect("nginx temp dirs");
        }
        let conf = format!(
            r#"daemon off;
worker_processes 1;
user root;
pid {pid};
error_log {err} notice;
events {{ worker_connections 512; }}
http {{
  access_log {access};
  client_body_temp_path {body};
  proxy_temp_path {proxy};
  fastcgi_temp_path {fastcgi};
  uwsgi_temp_path {uwsgi};
  scgi_temp_path {scgi};
  default_type application/octet-stream;
  keepalive_timeout 5;
  {http_extra}
  server {{
    listen {addr};
    {server_body}
  }}
}}
"#,
            pid = d("nginx.pid"),
            err = d("error.log"),
            access = d("access.log"),
            body = d("tmp/body"),
            proxy = d("tmp/proxy"),
            fastcgi = d("tmp/fastcgi"),
            uwsgi = d("tmp/uwsgi"),
            scgi = d("tmp/scgi"),
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf).expect("writing nginx.conf");
        let child = Command::new("nginx")
            .arg("-e")
            .arg(dir.join("error.log"))
            .arg("-p")
            .arg(dir)
            .arg("-c")
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("spawning nginx: {e}"));
        let mut n = Nginx {
            addr,
            dir: dir.to_path_buf(),
            child: Some(child),
        };
        let deadline = Instant::now() + crate::READY_TIMEOUT;
        loop {
            if let Some(Ok(Some(status))) = n.child.as_mut().map(Child::try_wait) {
                panic!(
                    "nginx exited with {status}: {}",
                    std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
                );
            }
            if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "nginx not listening on {addr}: {}",
                std::fs::read_to_string(dir.join("error.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(25));
        }
        n
    }

    /// Its error log so far.
    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // TERM the master: it stops its workers, then exits.
            crate::stop_child(&mut child, crate::Signal::Term);
        }
    }
}
