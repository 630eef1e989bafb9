//! Running the external tools: several commands at once, timed as one wall
//! clock, their output kept in log files; daemons waited for; dirty pages
//! flushed between measurements.

use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Runs `cmds` all at once (stdout and stderr to `<logs>/<label>.<i>.log`)
/// and returns the wall time from the first spawn until the last exit.
/// Fails, naming the command and the tail of its log, if any exits non-zero.
pub fn run_parallel(cmds: Vec<Command>, logs: &Path, label: &str) -> Result<Duration> {
    // Open the logs before the clock starts.
    let mut prepared = Vec::with_capacity(cmds.len());
    for (i, mut cmd) in cmds.into_iter().enumerate() {
        let log = logs.join(format!("{label}.{i}.log"));
        let out = File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out
            .try_clone()
            .with_context(|| format!("duplicating {}", log.display()))?;
        cmd.stdin(Stdio::null()).stdout(out).stderr(err);
        prepared.push((cmd, log));
    }
    let start = Instant::now();
    let mut running: Vec<(String, Child, PathBuf)> = Vec::with_capacity(prepared.len());
    for (mut cmd, log) in prepared {
        match cmd.spawn() {
            Ok(child) => running.push((format!("{cmd:?}"), child, log)),
            Err(e) => {
                for (_, mut child, _) in running {
                    let _ = child.kill();
                    let _ = child.wait();
                }
                return Err(e).with_context(|| format!("spawning {cmd:?}"));
            }
        }
    }
    let mut failures = Vec::new();
    for (desc, mut child, log) in running {
        let status = child
            .wait()
            .with_context(|| format!("waiting for {desc}"))?;
        if !status.success() {
            failures.push(format!("{desc} exited with {status}: {}", tail(&log)));
        }
    }
    let elapsed = start.elapsed();
    if !failures.is_empty() {
        bail!("{label}: {}", failures.join("\n"));
    }
    Ok(elapsed)
}

/// Runs a command to completion; its stdout, or an error with its output.
pub fn output(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} exited with {}: {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout).trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `sync(1)`: writes back every dirty page, so that what one tool left
/// unwritten is not flushed (or `syncfs`ed by hotpush) during the next
/// measurement. Not timed.
pub fn flush() -> Result<()> {
    output(&mut Command::new("sync")).map(drop)
}

/// Makes `dir` an empty directory.
pub fn empty_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("mkdir {}", dir.display()))
}

/// Waits until `addr` accepts connections; fails if `child` exits first or
/// after 10 s, with the tail of `log`.
pub fn wait_listening(what: &str, addr: SocketAddr, child: &mut Child, log: &Path) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = child
            .try_wait()
            .with_context(|| format!("checking on {what}"))?
        {
            bail!("{what} exited with {status}: {}", tail(log));
        }
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            bail!("{what} not listening on {addr} after 10 s: {}", tail(log));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Stops a daemon we started (by its own handle, so by its pid only).
pub fn stop(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// The last 20 lines of a log file, for error messages.
pub fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(20);
    format!("(log {}) {}", log.display(), lines[from..].join("\n"))
}

/// Whether `program` can be run (found on PATH or as given).
pub fn have(program: &str) -> bool {
    if program.contains('/') {
        return Path::new(program).is_file();
    }
    std::env::var_os("PATH")
        .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(program).is_file()))
}
