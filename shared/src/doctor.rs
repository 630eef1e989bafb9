//! The report both `doctor` commands print: one OK, WARN or FAIL line per
//! check, then a verdict, and the exit status that goes with it.

use std::process::ExitCode;

/// How bad a finding is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Ok,
    Warn,
    Fail,
}

impl Level {
    /// The word printed in front of the line.
    pub fn label(self) -> &'static str {
        match self {
            Level::Ok => "OK  ",
            Level::Warn => "WARN",
            Level::Fail => "FAIL",
        }
    }
}

/// One line of the report.
#[derive(Clone, Debug)]
pub struct Finding {
    pub level: Level,
    pub what: String,
}

pub fn ok(what: String) -> Finding {
    Finding {
        level: Level::Ok,
        what,
    }
}

pub fn warn(what: String) -> Finding {
    Finding {
        level: Level::Warn,
        what,
    }
}

pub fn fail(what: String) -> Finding {
    Finding {
        level: Level::Fail,
        what,
    }
}

/// Prints every finding and the verdict; fails when any line is FAIL.
pub fn report(findings: &[Finding]) -> ExitCode {
    for f in findings {
        println!("{}  {}", f.level.label(), f.what);
    }
    let worst = findings.iter().map(|f| f.level).max().unwrap_or(Level::Ok);
    println!(
        "doctor: {}",
        match worst {
            Level::Ok => "all good",
            Level::Warn => "usable, with warnings",
            Level::Fail => "NOT READY: fix the FAIL lines",
        }
    );
    if worst == Level::Fail {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
