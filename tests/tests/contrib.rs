//! The contrib scripts and `status --prometheus` against a real agent, checked through real
//! lookups: `lbfo-mark` and `lbfo-check` (monitoring hooks), `lbfo-cron-feed` (command files from
//! cron) with the shipped day/night examples, `lbfo-prom-textfile` (node_exporter).

use lbfo_tests::{describe, Host};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

fn contrib(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../contrib")
        .join(name)
}

/// Runs a contrib script with the host's FIFO and agent.
fn run(h: &Host, script: &str, args: &[&str]) -> Output {
    Command::new(contrib(script))
        .args(args)
        .env("LBFO_FIFO", h.fifo())
        .env("LBFO_AGENTD", &h.bin.agent)
        .env("LBFO_TIMEOUT", "2")
        .output()
        .expect("run contrib script")
}

fn ok(h: &Host, script: &str, args: &[&str]) {
    let out = run(h, script, args);
    assert!(
        out.status.success(),
        "{script} {args:?}: {}",
        describe(&out)
    );
}

const FAILOVER: &str =
    "policy db.lan failover\nadd db.lan 10.0.1.1 prio=1\nadd db.lan 10.0.1.2 prio=2\n";

#[test]
fn lbfo_mark_takes_a_backend_out_and_back() {
    let mut h = Host::new(FAILOVER);
    h.start();
    assert_eq!(h.resolve(&["gai4", "db.lan"]), "10.0.1.1");
    ok(&h, "lbfo-mark", &["down", "db.lan", "10.0.1.1"]);
    h.wait_answer("db.lan", "10.0.1.2");
    ok(&h, "lbfo-mark", &["up", "db.lan", "10.0.1.1"]);
    h.wait_answer("db.lan", "10.0.1.1");

    // One command a line: an argument cannot smuggle in a second one.
    for args in [
        &["down", "db.lan 10.0.1.1\nadd evil.lan 10.6.6.6", "10.0.1.1"][..],
        &["drop", "db.lan", "10.0.1.1"],
        &["down", "db.lan"],
    ] {
        let out = run(&h, "lbfo-mark", args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", describe(&out));
    }
    h.send("add sentinel.lan 127.0.0.9\n");
    h.wait_answer("sentinel.lan", "127.0.0.9");
    assert!(h.resolve(&["gai4", "evil.lan"]).starts_with("error:"));

    // No agent reading the FIFO: a plain `echo > FIFO` would hang; lbfo-mark gives up.
    h.stop();
    let t = Instant::now();
    let out = run(&h, "lbfo-mark", &["down", "db.lan", "10.0.1.1"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(t.elapsed() < Duration::from_secs(8), "gave up in time");
    assert!(String::from_utf8_lossy(&out.stderr).contains("is lbfo-agentd running?"));
}

#[test]
fn lbfo_check_follows_the_checks_verdict() {
    let mut h = Host::new(FAILOVER);
    h.start();
    let check = |args: &[&str]| {
        let mut a = vec!["db.lan", "10.0.1.1", "--"];
        a.extend_from_slice(args);
        run(&h, "lbfo-check", &a)
    };
    // CRITICAL: down.
    assert!(check(&["sh", "-c", "exit 2"]).status.success());
    h.wait_answer("db.lan", "10.0.1.2");
    // UNKNOWN: no change (a broken check must not flip a backend), reported as exit 1.
    let out = check(&["sh", "-c", "exit 3"]);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    h.send("add sentinel.lan 127.0.0.9\n");
    h.wait_answer("sentinel.lan", "127.0.0.9");
    assert_eq!(h.resolve(&["gai4", "db.lan"]), "10.0.1.2", "still down");
    // WARNING still serves: up. The check sees which backend it checks.
    let out = check(&[
        "sh",
        "-c",
        r#"[ "$LBFO_SERVICE $LBFO_ADDR" = "db.lan 10.0.1.1" ] && exit 1; exit 2"#,
    ]);
    assert!(out.status.success(), "{}", describe(&out));
    h.wait_answer("db.lan", "10.0.1.1");
    // A check that hangs is a failed check: down after the timeout.
    let out = Command::new(contrib("lbfo-check"))
        .args(["db.lan", "10.0.1.1", "--", "sleep", "30"])
        .env("LBFO_FIFO", h.fifo())
        .env("LBFO_CHECK_TIMEOUT", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    h.wait_answer("db.lan", "10.0.1.2");
    let out = run(&h, "lbfo-check", &["db.lan", "10.0.1.1", "true"]);
    assert_eq!(out.status.code(), Some(2), "usage: {}", describe(&out));
}

#[test]
fn lbfo_cron_feed_applies_the_day_and_night_files() {
    let mut h = Host::new("add web.lan 10.0.0.11\nadd web.lan 10.0.0.12\n");
    h.start();
    let examples = contrib("examples");
    let night = examples.join("night.cmds");
    let day = examples.join("day.cmds");
    ok(&h, "lbfo-cron-feed", &[night.to_str().unwrap()]);
    h.wait_for("the night file applied", || {
        h.tally("gai4", "web.lan", 8) == [("10.0.0.12".to_string(), 8)]
    });
    ok(&h, "lbfo-cron-feed", &[day.to_str().unwrap()]);
    h.wait_for("the day file applied", || {
        h.tally("gai4", "web.lan", 400)
            == [
                ("10.0.0.11".to_string(), 300),
                ("10.0.0.12".to_string(), 100),
            ]
    });

    // A file without a final newline does not run into the next one.
    let a = h.dir.join("a.cmds");
    let b = h.dir.join("b.cmds");
    std::fs::write(&a, "add a.lan 10.0.3.1").unwrap();
    std::fs::write(&b, "add b.lan 10.0.3.2\n").unwrap();
    ok(
        &h,
        "lbfo-cron-feed",
        &[a.to_str().unwrap(), b.to_str().unwrap()],
    );
    h.wait_answer("b.lan", "10.0.3.2");
    assert_eq!(h.resolve(&["gai4", "a.lan"]), "10.0.3.1");

    // A missing file: nothing is sent, not even the files before it.
    let c = h.dir.join("c.cmds");
    std::fs::write(&c, "add c.lan 10.0.3.3\n").unwrap();
    let out = run(
        &h,
        "lbfo-cron-feed",
        &[c.to_str().unwrap(), "/nonexistent/x.cmds"],
    );
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    h.send("add sentinel.lan 127.0.0.9\n");
    h.wait_answer("sentinel.lan", "127.0.0.9");
    assert!(h.resolve(&["gai4", "c.lan"]).starts_with("error:"));
}

/// Checks the text exposition format: HELP and TYPE before each family's samples, each family
/// once, every sample `name{labels} value` of a declared family. Returns the samples.
fn exposition(text: &str) -> Vec<(String, f64)> {
    let mut families: Vec<String> = Vec::new();
    let mut samples = Vec::new();
    let mut expect_type = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap().to_string();
            assert!(!families.contains(&name), "{name} declared twice");
            families.push(name.clone());
            expect_type = Some(name);
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut w = rest.split(' ');
            assert_eq!(w.next().map(str::to_string), expect_type.take(), "{line}");
            assert!(matches!(w.next(), Some("gauge" | "counter")), "{line}");
        } else {
            let (series, value) = line.rsplit_once(' ').expect("sample: series value");
            let name = series.split('{').next().unwrap();
            assert_eq!(families.last().map(String::as_str), Some(name), "{line}");
            assert!(
                name.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{line}"
            );
            if let Some(labels) = series.strip_prefix(name).filter(|l| !l.is_empty()) {
                assert!(labels.starts_with('{') && labels.ends_with('}'), "{line}");
            }
            samples.push((series.to_string(), value.parse().expect("a number")));
        }
    }
    samples
}

fn value(samples: &[(String, f64)], series: &str) -> Option<f64> {
    samples.iter().find(|(s, _)| s == series).map(|&(_, v)| v)
}

fn prometheus(h: &Host) -> Vec<(String, f64)> {
    let out = Command::new(&h.bin.agent)
        .args(["status", "--prometheus", "-c"])
        .arg(h.config())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    exposition(&String::from_utf8_lossy(&out.stdout))
}

#[test]
fn status_prometheus_reports_lookups_state_and_the_agent() {
    let mut h = Host::new("policy web.lan roundrobin\nadd web.lan 10.0.0.11 weight=2\nadd web.lan 10.0.0.12 prio=5 limit=1000\n");
    h.start();
    h.resolve(&["gai4", "web.lan", "10"]);
    let s = prometheus(&h);
    let b = |m: &str, a: &str| value(&s, &format!("{m}{{service=\"web.lan\",address=\"{a}\"}}"));
    assert_eq!(b("lbfo_backend_lookups_total", "10.0.0.11"), Some(5.0));
    assert_eq!(b("lbfo_backend_lookups_total", "10.0.0.12"), Some(5.0));
    h.send("down web.lan 10.0.0.12\n");
    // Not an answer of 10.0.0.11, which roundrobin gives before the down too: the log line,
    // written once the down is published.
    h.wait_for("the down to be applied", || {
        h.log().contains("fifo: line 1: down web.lan 10.0.0.12")
    });
    let s = prometheus(&h);
    let b = |m: &str, a: &str| value(&s, &format!("{m}{{service=\"web.lan\",address=\"{a}\"}}"));
    assert_eq!(b("lbfo_backend_up", "10.0.0.11"), Some(1.0));
    assert_eq!(b("lbfo_backend_up", "10.0.0.12"), Some(0.0));
    assert_eq!(b("lbfo_backend_weight", "10.0.0.11"), Some(2.0));
    assert_eq!(b("lbfo_backend_priority", "10.0.0.12"), Some(5.0));
    assert_eq!(b("lbfo_backend_limit", "10.0.0.12"), Some(1000.0));
    assert_eq!(value(&s, "lbfo_services"), Some(1.0));
    assert_eq!(
        value(
            &s,
            "lbfo_service_info{service=\"web.lan\",policy=\"roundrobin\"}"
        ),
        Some(1.0)
    );
    assert_eq!(value(&s, "lbfo_agent_up"), Some(1.0));
    assert!(value(&s, "lbfo_agent_heartbeat_age_seconds").is_some_and(|a| a < 3.0));

    // --json and --prometheus together: bad usage.
    let out = Command::new(&h.bin.agent)
        .args(["status", "--json", "--prometheus", "-c"])
        .arg(h.config())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));

    // The agent stops: the table stays, and the metrics say the agent is gone once its
    // heartbeat is stale.
    h.stop();
    h.wait_for("lbfo_agent_up 0", || {
        value(&prometheus(&h), "lbfo_agent_up") == Some(0.0)
    });
}

#[test]
fn lbfo_prom_textfile_writes_the_collector_file_atomically() {
    let mut h = Host::new("add web.lan 10.0.0.11\n");
    h.start();
    h.resolve(&["gai4", "web.lan", "7"]);
    let dir = h.dir.join("textfile");
    std::fs::create_dir(&dir).unwrap();
    let d = dir.to_str().unwrap();
    let conf = h.config();
    ok(
        &h,
        "lbfo-prom-textfile",
        &["-d", d, "-c", conf.to_str().unwrap()],
    );
    let file = dir.join("lbfo.prom");
    let s = exposition(&std::fs::read_to_string(&file).unwrap());
    assert_eq!(
        value(
            &s,
            "lbfo_backend_lookups_total{service=\"web.lan\",address=\"10.0.0.11\"}"
        ),
        Some(7.0)
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(
        mode, 0o644,
        "node_exporter runs as its own user and must read it"
    );
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["lbfo.prom"], "no temporary file left behind");

    // A table that cannot be read is reported, not left stale.
    ok(
        &h,
        "lbfo-prom-textfile",
        &["-d", d, "--table", "/nonexistent/table"],
    );
    let s = exposition(&std::fs::read_to_string(&file).unwrap());
    assert_eq!(value(&s, "lbfo_table_readable"), Some(0.0));
}

#[test]
fn the_crontab_example_names_scripts_and_files_that_ship() {
    let cron = std::fs::read_to_string(contrib("lbfo.cron")).unwrap();
    let mut entries = 0;
    for line in cron.lines() {
        // Entries are commented out for the admin to pick: "# M H DoM Mon DoW user command...".
        let fields: Vec<&str> = line.trim_start_matches("# ").split_whitespace().collect();
        if fields.len() < 7 || fields[5] != "root" || !fields[6].starts_with('/') {
            continue;
        }
        for f in &fields[..5] {
            assert!(
                f.chars().all(|c| c.is_ascii_digit() || "*-,/".contains(c)),
                "time field {f:?} in {line:?}"
            );
        }
        for path in fields[6..]
            .iter()
            .filter(|w| w.starts_with("/usr/share/lbfo/"))
        {
            let local = contrib(path.trim_start_matches("/usr/share/lbfo/contrib/"));
            assert!(
                local.exists(),
                "{path} in lbfo.cron does not ship ({line:?})"
            );
        }
        entries += 1;
    }
    assert!(entries >= 4, "{entries} cron entries found");
}
