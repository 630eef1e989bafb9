//! The cp baselines: `cp -a` of a whole tree to four directories at once
//! (what a cold copy costs with no protocol at all), and, for a change,
//! copying exactly the changed files and deleting the removed ones: the
//! floor any tool that knows the change in advance could reach.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};

use crate::data::Diff;
use crate::process::output;

/// `cp -a <src>/. <dest>` for each destination (each must exist).
pub fn cold_commands(src: &Path, dests: &[PathBuf]) -> Vec<Command> {
    dests
        .iter()
        .map(|dest| {
            let mut c = Command::new("cp");
            c.arg("-a").arg(src.join(".")).arg(dest);
            c
        })
        .collect()
}

/// For each destination at once: `cp -a --parents` of `diff.changed` from
/// `src` (repomd.xml last), then unlink `diff.removed`. Returns the wall
/// time until all four are done.
pub fn apply_diff(src: &Path, diff: &Diff, dests: &[PathBuf]) -> Result<Duration> {
    let start = Instant::now();
    std::thread::scope(|s| {
        let workers: Vec<_> = dests
            .iter()
            .map(|dest| s.spawn(move || apply_one(src, diff, dest)))
            .collect();
        workers
            .into_iter()
            .map(|w| w.join().map_err(|_| anyhow!("a cp worker panicked"))?)
            .collect::<Result<Vec<()>>>()
    })?;
    Ok(start.elapsed())
}

fn apply_one(src: &Path, diff: &Diff, dest: &Path) -> Result<()> {
    if !diff.changed.is_empty() {
        output(
            Command::new("cp")
                .current_dir(src)
                .args(["-a", "--parents", "--"])
                .args(&diff.changed)
                .arg(dest),
        )?;
    }
    for rel in &diff.removed {
        let path = dest.join(rel);
        std::fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
    }
    Ok(())
}
