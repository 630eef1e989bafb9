//! Smoke test: the whole benchmark at its tiniest scale, one run, on the
//! debug binaries (`cargo build --workspace` first, as for the other
//! process-level tests). Asserts only that every row has a figure for
//! every column it should; never a timing.
//!
//! Two tests, which the test harness runs at the same time: `urgent` waits
//! out the product's 12 s settle, and the rest runs meanwhile.

use hotpush_bench::report::Report;
use hotpush_bench::{Options, Workload};

/// Runs `only` at smoke scale; `None` (after a SKIPPED line) when a tool
/// it needs is missing.
fn smoke(name: &str, only: Vec<Workload>) -> Option<Report> {
    let opts = Options {
        scale: hotpush_bench::Scale::Smoke,
        runs: 1,
        work: None,
        keep: false,
        only,
    };
    let missing = hotpush_bench::missing_tools(&opts);
    if !missing.is_empty() {
        eprintln!(
            "SKIPPED {name}: missing {} (tests/install-deps.sh installs them)",
            missing.join(", ")
        );
        return None;
    }
    let report = hotpush_bench::run(&opts).expect("the benchmark runs");
    let table = report.markdown();
    eprintln!("{table}");
    assert_eq!(report.missing(), Vec::<String>::new(), "{table}");
    Some(report)
}

#[test]
fn urgent_rows_have_every_figure() {
    let Some(report) = smoke("urgent_rows_have_every_figure", vec![Workload::Urgent]) else {
        return;
    };
    // Settle 0, then the product's timing.
    assert_eq!(report.rows.len(), 2, "{}", report.markdown());
    assert!(report.rss.is_empty() && report.metalink.is_empty());
}

#[test]
fn every_other_row_has_every_figure() {
    let only: Vec<Workload> = Workload::ALL
        .into_iter()
        .filter(|w| *w != Workload::Urgent)
        .collect();
    let Some(report) = smoke("every_other_row_has_every_figure", only) else {
        return;
    };
    let table = report.markdown();
    // full, inc20k, inc100k, first100k.
    assert_eq!(report.rows.len(), 4, "{table}");
    // 20,000- and 100,000-file trees.
    assert_eq!(report.rss.len(), 2, "{table}");
    // Empty repo and 20,000 files, each from the origin and from nginx.
    assert_eq!(report.metalink.len(), 4, "{table}");
    assert_eq!(report.json()["timings"].as_array().map(Vec::len), Some(4));
}
