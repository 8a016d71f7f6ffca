//! The health checks' state as `status` reads it: the `<table>.checks` file, one line per checked
//! backend, written by the loop (atomically, through `sys::fs::write_atomically`) a few times a
//! second while it changes, like the cluster's `<table>.cluster`.
//!
//! ```text
//! # lbfo-agentd checks: SERVICE ADDR KIND VERDICT SINCE_MS PASSES FAILS LAST RTT_US SRTT_US ERROR_MS ERROR
//! web.lan 10.0.0.1 http up 1733300000000 5 0 pass 812 790 1733299990000 http: status 503
//! ```
//!
//! `VERDICT` is `up`, `down` or `-` (none yet) and `SINCE_MS` the wall-clock time it took that
//! value; `PASSES` and `FAILS` count in a row; `LAST` is the last result (`pass`, `fail`,
//! `unknown`: a local failure, or `-`); `RTT_US` the last round-trip time and `SRTT_US` its
//! smoothed average (`-` before the first pass); `ERROR` the last fault's text, at `ERROR_MS`
//! (`-` and nothing when there was none). The file is the agent's and read by root's `status`;
//! [`parse`] still skips any line it cannot read rather than trust it.

use std::fmt::Write as _;
use std::net::IpAddr;

use lbfo_core::addr::{parse_ip, Ip};

use super::Last;

/// The first line of the file.
pub const HEADER: &str = "# lbfo-agentd checks: SERVICE ADDR KIND VERDICT SINCE_MS PASSES FAILS LAST RTT_US SRTT_US ERROR_MS ERROR";

/// One checked backend's state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// The service.
    pub service: String,
    /// The backend.
    pub addr: IpAddr,
    /// The check's kind (`tcp`, `http`, `icmp`, `exec`).
    pub kind: String,
    /// The verdict, if one has settled.
    pub up: Option<bool>,
    /// Since when (wall-clock milliseconds) the verdict has held.
    pub since_ms: u64,
    /// Passes in a row.
    pub passes: u32,
    /// Failures in a row.
    pub fails: u32,
    /// The last result.
    pub last: Last,
    /// The last round-trip time, in microseconds.
    pub rtt_us: Option<u32>,
    /// The smoothed round-trip time, in microseconds.
    pub srtt_us: Option<u32>,
    /// The last fault: when (wall-clock milliseconds), and its text.
    pub error: Option<(u64, String)>,
}

fn opt(n: Option<impl std::fmt::Display>) -> String {
    n.map_or("-".to_owned(), |n| n.to_string())
}

/// The file's text for `rows`.
pub fn render(rows: impl Iterator<Item = Row>) -> String {
    let mut out = String::from(HEADER);
    out.push('\n');
    for r in rows {
        let verdict = match r.up {
            Some(true) => "up",
            Some(false) => "down",
            None => "-",
        };
        let last = match r.last {
            Last::None => "-",
            Last::Pass => "pass",
            Last::Fail => "fail",
            Last::Unknown => "unknown",
        };
        let (at, text) = match &r.error {
            Some((at, text)) => (at.to_string(), text.as_str()),
            None => ("-".to_owned(), ""),
        };
        // Writing to a String cannot fail.
        let _ = writeln!(
            out,
            "{} {} {} {verdict} {} {} {} {last} {} {} {at} {text}",
            r.service,
            Ip(r.addr),
            r.kind,
            r.since_ms,
            r.passes,
            r.fails,
            opt(r.rtt_us),
            opt(r.srtt_us),
        );
    }
    out
}

/// The rows of the file's text; lines that are not rows are skipped.
pub fn parse(text: &str) -> Vec<Row> {
    text.split('\n').filter_map(row).collect()
}

/// Where the file of the table at `table` is: beside it, `<table>.checks`.
pub fn path(table: &std::path::Path) -> std::path::PathBuf {
    let mut p = table.as_os_str().to_owned();
    p.push(".checks");
    std::path::PathBuf::from(p)
}

/// Decimal digits as a number; `None` for anything else (`-` included). By hand rather than
/// `str::parse`, whose generic code is several times this loop on the routers.
fn num(w: &str) -> Option<u64> {
    if w.is_empty() {
        return None;
    }
    w.bytes().try_fold(0u64, |n, b| {
        let d = u64::from(b.wrapping_sub(b'0'));
        (d < 10).then_some(())?;
        n.checked_mul(10)?.checked_add(d)
    })
}

/// `-` as `Some(None)`, a number as `Some(Some(n))`, anything else as `None`.
fn opt_num(w: &str) -> Option<Option<u64>> {
    if w == "-" {
        Some(None)
    } else {
        num(w).map(Some)
    }
}

fn row(line: &str) -> Option<Row> {
    // Eleven words, then the error's text (which may hold blanks).
    let mut w = [""; 11];
    let mut rest = line;
    for slot in &mut w {
        let (word, tail) = match rest.bytes().position(|b| b == b' ') {
            Some(i) => (rest.get(..i)?, rest.get(i + 1..)?),
            None => (rest, ""),
        };
        *slot = word;
        rest = tail;
    }
    if w[0].is_empty() || w[0].starts_with('#') {
        return None;
    }
    let up = match w[3] {
        "up" => Some(true),
        "down" => Some(false),
        "-" => None,
        _ => return None,
    };
    let last = match w[7] {
        "pass" => Last::Pass,
        "fail" => Last::Fail,
        "unknown" => Last::Unknown,
        "-" => Last::None,
        _ => return None,
    };
    let small = |i: usize| num(w[i]).and_then(|n| u32::try_from(n).ok());
    let rtt = |i: usize| opt_num(w[i]).map(|n| n.and_then(|n| u32::try_from(n).ok()));
    Some(Row {
        service: w[0].to_owned(),
        addr: parse_ip(w[1])?,
        kind: w[2].to_owned(),
        up,
        since_ms: num(w[4])?,
        passes: small(5)?,
        fails: small(6)?,
        last,
        rtt_us: rtt(8)?,
        srtt_us: rtt(9)?,
        error: opt_num(w[10])?.map(|at| (at, rest.to_owned())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_render_and_parse_back() {
        let rows = vec![
            Row {
                service: "web.lan".to_owned(),
                addr: "10.0.0.1".parse().unwrap(),
                kind: "http".to_owned(),
                up: Some(true),
                since_ms: 1_733_300_000_000,
                passes: 5,
                fails: 0,
                last: Last::Pass,
                rtt_us: Some(812),
                srtt_us: Some(790),
                error: Some((1_733_299_990_000, "http: status 503".to_owned())),
            },
            Row {
                service: "dns.lan".to_owned(),
                addr: "fd00::53".parse().unwrap(),
                kind: "icmp".to_owned(),
                up: None,
                since_ms: 7,
                passes: 0,
                fails: 1,
                last: Last::Unknown,
                rtt_us: None,
                srtt_us: None,
                error: Some((9, "unknown: too many open files".to_owned())),
            },
            Row {
                service: "db.lan".to_owned(),
                addr: "10.0.0.3".parse().unwrap(),
                kind: "exec".to_owned(),
                up: Some(false),
                since_ms: 1,
                passes: 0,
                fails: 0,
                last: Last::None,
                rtt_us: None,
                srtt_us: None,
                error: None,
            },
        ];
        let text = render(rows.clone().into_iter());
        assert_eq!(
            text.lines().nth(1),
            Some("web.lan 10.0.0.1 http up 1733300000000 5 0 pass 812 790 1733299990000 http: status 503")
        );
        assert_eq!(
            text.lines().nth(3),
            Some("db.lan 10.0.0.3 exec down 1 0 0 - - - - ")
        );
        assert_eq!(parse(&text), rows);
        // Lines that are not rows are skipped, whatever they hold.
        let junk = "web.lan 10.0.0.1 http sideways 1 2 3 pass - - - x\nweb.lan\n\n# c\nweb.lan 10.0.0.x tcp up 1 2 3 pass - - -";
        assert_eq!(parse(junk), vec![]);
    }
}
