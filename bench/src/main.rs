//! `hotpush-bench`: runs the benchmark (see docs/PERFORMANCE.md), prints the
//! markdown table on stdout and optionally writes the raw numbers as JSON.
//! Use `bench/run.sh`, which builds the release binaries first.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use hotpush_bench::{Options, Scale, Workload};

/// hotpush side by side with rsync, rsync over ssh, cp and nginx on the
/// same generated repos; prints a markdown table of medians.
#[derive(Parser, Debug)]
#[command(name = "hotpush-bench")]
struct Args {
    /// Data sizes: smoke (seconds), small (a few minutes), full (~1 GB and
    /// 100,000-file trees).
    #[arg(long, value_enum, default_value = "full")]
    scale: Scale,
    /// Every figure is the median of this many runs.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Directory for the generated data and the baselines' destinations
    /// (a temp dir is made inside it); default: the system temp dir.
    /// hotpush's own networks live in $TMPDIR.
    #[arg(long, value_name = "DIR")]
    work: Option<PathBuf>,
    /// Keep the temp dir (data, destinations, logs) instead of removing it.
    #[arg(long)]
    keep: bool,
    /// Also write every sample and median as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
    /// Run only these workloads (comma-separated).
    #[arg(long, value_enum, value_delimiter = ',', value_name = "WORKLOAD,...")]
    only: Vec<Workload>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hotpush-bench: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> anyhow::Result<()> {
    let opts = Options {
        scale: args.scale,
        runs: args.runs,
        work: args.work,
        keep: args.keep,
        only: args.only,
    };
    let report = hotpush_bench::run(&opts)?;
    print!("{}", report.markdown());
    if let Some(path) = args.json {
        let text = serde_json::to_string_pretty(&report.json())?;
        std::fs::write(&path, text + "\n")
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let missing = report.missing();
    if !missing.is_empty() {
        anyhow::bail!("incomplete results:\n  {}", missing.join("\n  "));
    }
    Ok(())
}
