//! The status page, `GET /`: the [`Report`] as server-rendered HTML that
//! refreshes itself every few seconds, readable in a terminal browser (no
//! JavaScript, no styles it needs). Same model as `status` and `/status`.

use maud::{DOCTYPE, Markup, PreEscaped, html};

use crate::status::{MirrorReport, MirrorState, Report};

/// How often the browser reloads the page.
pub const REFRESH_SECS: u32 = 5;

fn ago(now: i64, then: i64) -> String {
    let secs = (now - then).max(0);
    match secs {
        0..=59 => format!("{secs} s ago"),
        60..=3599 => format!("{} min ago", secs / 60),
        3600..=172_799 => format!("{} h ago", secs / 3600),
        _ => format!("{} days ago", secs / 86_400),
    }
}

fn state(m: &MirrorReport) -> String {
    match m.state {
        MirrorState::Live => "live".into(),
        MirrorState::Pushing => match &m.pushing {
            Some(p) if p.bytes_wanted > 0 => format!(
                "pushing v{} {} % ({})",
                p.version,
                p.bytes_sent * 100 / p.bytes_wanted,
                serde_json::to_value(p.phase)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default()
            ),
            Some(p) => format!("pushing v{}", p.version),
            None => "pushing".into(),
        },
        MirrorState::Unreachable => "unreachable".into(),
        MirrorState::Refused => "refused".into(),
        MirrorState::Stale => "stale front end".into(),
        MirrorState::Failing => "failing".into(),
        MirrorState::Behind => "behind".into(),
    }
}

/// The timeline of a mirror's last push: what the agent and the crawler
/// reported, in order.
fn timeline(m: &MirrorReport) -> String {
    let Some(p) = &m.last_push else {
        return "–".into();
    };
    let mut steps = vec![
        format!("verified {} ms", p.verify_ms),
        format!("received {} ms", p.receive_ms),
        format!("swapped {} ms", p.swap_ms),
    ];
    if p.flip_wait_ms > 0 {
        steps.push(format!("waited {} ms for the flip", p.flip_wait_ms));
    }
    steps.push(format!("acked after {} ms", p.elapsed_ms));
    if let Some(f) = &m.front_end {
        steps.push(format!("crawled: {}", f.result));
    }
    format!("v{}: {}", p.version, steps.join(" → "))
}

/// The page for `report`, as of `now` (Unix seconds).
pub fn render(report: &Report, now: i64) -> String {
    let page: Markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta http-equiv="refresh" content=(REFRESH_SECS);
                title { "hotpush status" }
                style { (PreEscaped("body{font-family:sans-serif;margin:1em}table{border-collapse:collapse}td,th{border:1px solid #999;padding:.2em .5em;text-align:left;vertical-align:top}.live{background:#dfd}.bad{background:#fdd}.busy{background:#ffd}")) }
            }
            body {
                h1 { "hotpush origin" }
                p { "Origin id " code { (report.origin_id) } ". This page reloads every " (REFRESH_SECS) " s; the same report is " a href="/status" { "/status" } " (JSON) and " code { "hotpush-origin status" } "." }
                @for w in &report.warnings {
                    p.bad { strong { "Warning: " } (w) }
                }
                @if report.repos.is_empty() {
                    p { "Nothing published yet: " code { "hotpush-origin publish REPO --from DIR" } "." }
                }
                @for r in &report.repos {
                    h2 { "Repo " code { (r.repo) } }
                    p {
                        "Latest version " strong { (r.latest_version) } "; the metalink sends clients to version "
                        strong { (r.metalink_version) }
                        @if let Some(next) = r.metalink_next { " and also accepts version " (next) " (a flip is under way)" }
                        "."
                    }
                    table {
                        tr { th { "mirror" } th { "state" } th { "serves" } th { "last ack" } th { "front end" } th { "last push" } th { "last error" } }
                        @for a in &report.agents {
                            @for m in a.mirrors.iter().filter(|m| m.repo == r.repo) {
                                @let class = match m.state {
                                    MirrorState::Live => "live",
                                    MirrorState::Pushing | MirrorState::Behind => "busy",
                                    _ => "bad",
                                };
                                tr class=(class) {
                                    td { (a.name) br; small { (a.public_url) } }
                                    td { (state(m)) }
                                    td { "v" (m.version) }
                                    td {
                                        @match a.acked.iter().find(|k| k.repo == r.repo) {
                                            Some(k) => { "v" (k.version) ", " (ago(now, k.acked_unix)) }
                                            None => { "never" }
                                        }
                                    }
                                    td {
                                        @match &m.front_end {
                                            Some(f) => { (f.detail) " (" (ago(now, f.checked_unix)) ", " (f.elapsed_ms) " ms)" }
                                            None => { "not crawled yet" }
                                        }
                                    }
                                    td { (timeline(m)) }
                                    td { (m.last_error.as_deref().unwrap_or("")) }
                                }
                            }
                        }
                    }
                }
                @if let Some(d) = &report.drill {
                    h2 { "Last drill" }
                    p class=(if d.passed { "live" } else { "bad" }) {
                        (if d.passed { "passed" } else { "FAILED" }) ", repo " code { (d.repo) } ", " (ago(now, d.at_unix))
                        @if !d.detail.is_empty() { ": " (d.detail) }
                    }
                }
                p { small { "File descriptors: limit " (report.descriptors.limit) ", the configured caps need " (report.descriptors.needed) "." } }
            }
        }
    };
    page.into_string()
}
