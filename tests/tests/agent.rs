//! The agent through its real interfaces: the config file, the FIFO, signals, `status`.

use lbfo_tests::{describe, Host};
use std::process::Command;

#[test]
fn a_bad_fifo_line_is_reported_and_skipped_while_its_neighbours_apply() {
    let mut h = Host::new("add a.lan 10.0.0.1\n");
    h.start();
    h.send("add b.lan 10.0.0.2\nadd b.lan 10.0.0.300\ndown nosuch.lan 10.0.0.9\ntable /tmp/elsewhere\nadd c.lan 10.0.0.3\n");
    h.wait_answer("c.lan", "10.0.0.3");
    assert_eq!(h.resolve(&["gai4", "b.lan"]), "10.0.0.2");
    let log = h.log();
    assert!(
        log.contains("line 2") && log.contains("column 11") && log.contains("address"),
        "{log}"
    );
    assert!(
        log.contains("line 3") && log.contains("no such service"),
        "{log}"
    );
    assert!(
        log.contains("line 4: column 1: `table` is a setting of the config file, not a FIFO command; change it in the config file and restart the agent"),
        "settings are refused on the FIFO, naming the rule: {log}"
    );
    // Lines split across writes are reassembled.
    h.send("add d.lan 10.0");
    h.send(".0.4\nadd e.lan 10.0.0.5\n");
    h.wait_answer("e.lan", "10.0.0.5");
    assert_eq!(h.resolve(&["gai4", "d.lan"]), "10.0.0.4");
}

#[test]
fn ten_thousand_lines_from_four_concurrent_writers_are_all_applied() {
    // 4 x 157 services of 16 backends: more than the default capacity holds.
    let mut h = Host::new("capacity 1024 16\n");
    h.start();
    let mut files = Vec::new();
    for k in 0..4u32 {
        let mut text = String::new();
        for i in 0..2500u32 {
            text += &format!(
                "add w{k}-{}.lan 10.{k}.{}.{}\n",
                i / 16,
                i / 250,
                i % 250 + 1
            );
        }
        text += &format!("add done{k}.lan 127.0.1.{}\n", k + 1);
        let path = h.dir.join(format!("cmds{k}"));
        std::fs::write(&path, text).unwrap();
        files.push(path);
    }
    // Real `cat` processes, as from cron: `cat cmds > /var/run/lbfo.sock`.
    let children: Vec<_> = files
        .iter()
        .map(|f| {
            Command::new("sh")
                .arg("-c")
                .arg(format!("cat {} > {}", f.display(), h.fifo().display()))
                .spawn()
                .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    for k in 0..4 {
        h.wait_answer(&format!("done{k}.lan"), &format!("127.0.1.{}", k + 1));
    }
    let status = h.status_json();
    let backends = status.matches("\"addr\"").count();
    assert_eq!(backends, 10_000 + 4, "every line applied");
    // Spot-check through lookups: the last service of each writer rotates over its backends.
    for k in 0..4 {
        let counts = h.tally("gai4", &format!("w{k}-156.lan"), 4);
        assert_eq!(
            counts.len(),
            4,
            "w{k}-156.lan has its 4 backends: {counts:?}"
        );
    }
}

#[test]
fn config_errors_name_file_line_column_exit_2_and_leave_the_table_alone() {
    let mut h = Host::new("add a.lan 10.0.0.1\n");
    h.start();
    h.stop();
    let before = std::fs::read(h.table()).unwrap();
    // Starts the agent on `conf`: it must exit 2; its stderr.
    let refused = |h: &mut Host, conf: &str| {
        h.write_config(conf);
        let out = Command::new(&h.bin.agent)
            .arg("-c")
            .arg(h.config())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let err = refused(
        &mut h,
        "add a.lan 10.0.0.1\n# fine\nadd b.lan 10.0.0.2 weigth=3\n",
    );
    // table and fifo lines come first, so the user's line 3 is line 5 of the file.
    let want = format!("{}:5:20: unknown option", h.config().display());
    assert!(err.contains(&want), "want {want:?} in {err}");
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert_eq!(std::fs::read(h.table()).unwrap(), before, "table untouched");
    let err = refused(&mut h, "down a.lan 10.0.0.1\n");
    assert!(err.contains(":3:1: no such service"), "{err}");
    // A bad check line the same way (its own column).
    let err = refused(
        &mut h,
        "add a.lan 10.0.0.1\ncheck a.lan http 80 expect=600\n",
    );
    let want = format!("{}:4:28: not a status", h.config().display());
    assert!(err.contains(&want), "want {want:?} in {err}");

    let out = Command::new(&h.bin.agent)
        .args(["-c", "/nonexistent/lbfo.conf"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/lbfo.conf"));
    let out = Command::new(&h.bin.agent).arg("--bogus").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "bad usage: {}", describe(&out));
}

#[test]
fn sighup_applies_the_new_config_and_keeps_counters_and_runtime_state() {
    let mut h = Host::new("add a.lan 10.0.0.1\nadd a.lan 10.0.0.2\nadd gone.lan 10.0.9.9\n");
    h.start();
    h.resolve(&["gai4", "a.lan", "10"]);
    h.send("down a.lan 10.0.0.2\nadd runtime.lan 10.0.7.7\n");
    h.wait_answer("runtime.lan", "10.0.7.7");
    h.write_config("add a.lan 10.0.0.1\nadd a.lan 10.0.0.2\nadd new.lan 10.0.8.8\n");
    h.signal(libc::SIGHUP);
    h.wait_answer("new.lan", "10.0.8.8");
    assert!(
        h.resolve(&["gai4", "gone.lan"]).starts_with("error:"),
        "removed from the config: gone"
    );
    assert_eq!(
        h.resolve(&["gai4", "runtime.lan"]),
        "10.0.7.7",
        "made at run time: kept"
    );
    assert_eq!(
        h.resolve(&["gai4", "a.lan", "3"]),
        "10.0.0.1\n10.0.0.1\n10.0.0.1",
        "still down"
    );
    let status = h.status_json();
    assert!(
        status.contains("\"lookups\":8") || status.contains("\"lookups\": 8"),
        "counters kept: {status}"
    );
    // A broken config on reload is reported and changes nothing.
    h.write_config("add a.lan 10.0.0.1\nbogus\n");
    h.signal(libc::SIGHUP);
    h.wait_for("the reload error in the log", || h.log().contains(":4:1:"));
    h.send("add sentinel.lan 127.0.0.9\n");
    h.wait_answer("sentinel.lan", "127.0.0.9");
    assert_eq!(h.resolve(&["gai4", "new.lan"]), "10.0.8.8");
}

#[test]
fn the_command_line_refuses_non_text_and_unknown_flags_with_exit_2_and_helps_with_exit_0() {
    use std::os::unix::ffi::OsStrExt;
    let bin = lbfo_tests::artefacts().agent;
    let run = |args: &[&std::ffi::OsStr]| Command::new(&bin).args(args).output().unwrap();

    let out = run(&[
        "-c".as_ref(),
        std::ffi::OsStr::from_bytes(b"/etc/lbfo-\xff.conf"),
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "lbfo-agentd: arguments must be UTF-8 text\n"
    );

    let out = run(&["--frobnicate".as_ref()]);
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--frobnicate")
            && err.ends_with("Run lbfo-agentd --help for more information.\n"),
        "{err}"
    );
    assert!(out.stdout.is_empty(), "{}", describe(&out));

    let out = run(&["--help".as_ref()]);
    assert_eq!(out.status.code(), Some(0), "{}", describe(&out));
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.starts_with("Usage: lbfo-agentd")
            && help.contains("keygen")
            && help.contains("status"),
        "{help}"
    );
}

#[test]
fn sigint_and_sigterm_exit_cleanly_naming_the_signal_and_the_table_keeps_answering() {
    let mut h = Host::new("add a.lan 10.0.0.1\n");
    h.start();
    h.signal(libc::SIGINT);
    h.wait_for("the agent logs its exit on SIGINT", || {
        h.log()
            .contains("SIGINT: exiting; the table stays in place and keeps answering")
    });
    let st = h.stop().expect("the agent ran");
    assert_eq!(st.code(), Some(0), "{st:?}");
    assert_eq!(h.resolve(&["gai4", "a.lan"]), "10.0.0.1");

    h.start();
    let st = h.stop().expect("the agent ran");
    assert_eq!(st.code(), Some(0), "{st:?}");
    assert!(
        h.log()
            .contains("SIGTERM: exiting; the table stays in place and keeps answering"),
        "{}",
        h.log()
    );
    assert_eq!(h.resolve(&["gai4", "a.lan"]), "10.0.0.1");
}

/// std's runtime ignores SIGPIPE for the agent: `status` into a pipe whose reader went away
/// fails with exit 1 (EPIPE), it is not killed. The child gets SIGPIPE at its default first
/// (`env --default-signal`): the test harness ignores it, and an ignored signal stays ignored
/// across exec.
#[test]
fn a_status_reader_that_went_away_is_an_error_not_a_kill() {
    use std::process::Stdio;
    let mut h = Host::new("add a.lan 10.0.0.1\n");
    h.start();
    let closed_pipe = || {
        let mut reader = Command::new("true").stdin(Stdio::piped()).spawn().unwrap();
        let writer = reader.stdin.take().unwrap();
        reader.wait().unwrap();
        Stdio::from(writer)
    };
    let run = |program: &std::path::Path, args: &[&std::ffi::OsStr]| {
        Command::new("env")
            .arg("--default-signal=PIPE")
            .arg(program)
            .args(args)
            .stdout(closed_pipe())
            .stderr(Stdio::null())
            .status()
            .unwrap()
    };
    // The setup can fail: a program that leaves SIGPIPE alone dies of it.
    let echo = run("/bin/echo".as_ref(), &["x".as_ref()]);
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&echo),
        Some(libc::SIGPIPE),
        "{echo:?}"
    );
    let table = h.table();
    let st = run(
        &h.bin.agent,
        &["status".as_ref(), "--table".as_ref(), table.as_ref()],
    );
    assert_eq!(st.code(), Some(1), "{st:?}");
    let st = run(&h.bin.agent, &["--help".as_ref()]);
    assert_eq!(st.code(), Some(0), "{st:?}");
}

/// std's runtime opens /dev/null on fds 0-2 when the agent starts without them, so no file the
/// agent opens later (the signalfd, the table, the FIFO) takes their numbers and gets its log
/// lines written into it.
#[test]
fn an_agent_started_without_fds_0_to_2_has_them_on_dev_null_and_runs() {
    let h = Host::new("add a.lan 10.0.0.1\n");
    let mut agent = Command::new("sh")
        .args(["-c", r#"exec "$0" -c "$1" <&- >&- 2>&-"#])
        .arg(&h.bin.agent)
        .arg(h.config())
        .spawn()
        .unwrap();
    /// Ends the agent also when an assertion fails.
    struct Reap<'a>(&'a mut std::process::Child);
    impl Drop for Reap<'_> {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let pid = agent.id();
    let _reap = Reap(&mut agent);
    let (table, fifo) = (h.table(), h.fifo());
    h.wait_for("the agent's table and FIFO", || {
        table.exists() && fifo.exists()
    });
    for fd in 0..3 {
        let link = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).unwrap();
        assert_eq!(link, std::path::Path::new("/dev/null"), "fd {fd}");
    }
    h.wait_answer("a.lan", "10.0.0.1");
    h.send("add b.lan 10.0.0.2\n");
    h.wait_answer("b.lan", "10.0.0.2");
}

#[test]
fn a_table_that_does_not_fit_its_filesystem_is_refused_at_start_not_a_sigbus_later() {
    // A 16 KiB tmpfs, in a private mount namespace, for a table of the default capacity (about
    // 48 KiB): a sparse file would be created and mapped, and the first store would fault.
    let h = Host::new("add a.lan 10.0.0.1\n");
    let small = h.dir.join("small");
    std::fs::create_dir_all(&small).unwrap();
    let conf = h.dir.join("small.conf");
    std::fs::write(
        &conf,
        format!(
            "table {}/table\nfifo {}\nadd a.lan 10.0.0.1\n",
            small.display(),
            h.fifo().display()
        ),
    )
    .unwrap();
    let script = format!(
        "mount -t tmpfs -o size=16k tmpfs {} && exec {} -c {}",
        small.display(),
        h.bin.agent.display(),
        conf.display()
    );
    let out = Command::new(lbfo_tests::unshare_mount()[0])
        .args(&lbfo_tests::unshare_mount()[1..])
        .args(["sh", "-c", &script])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{}", describe(&out));
    assert!(
        err.contains("/table: allocate the new table on its filesystem: no space left on device"),
        "{err}"
    );
}

/// The counters segment the table names, as `status --json` shows it.
fn counters_id(h: &Host) -> i32 {
    let j = h.status_json();
    let at = j.find("\"counters_id\":").unwrap() + "\"counters_id\":".len();
    j[at..].split(',').next().unwrap().parse().unwrap()
}

/// Whether SysV segment `id` exists (in this IPC namespace).
fn segment_exists(id: i32) -> bool {
    std::fs::read_to_string("/proc/sysvipc/shm")
        .unwrap()
        .lines()
        .skip(1)
        .any(|l| l.split_whitespace().nth(1) == Some(&id.to_string()))
}

#[test]
fn a_reload_with_a_larger_capacity_reaches_running_programs_and_removes_the_old_segment() {
    let mut h = Host::new("capacity 2 2\nadd a.lan 10.0.0.1\nadd b.lan 10.0.1.1\n");
    h.start();
    let old = counters_id(&h);
    // A program that keeps running across the reload, as a daemon's resolver would.
    let mut follower = h
        .command(&h.bin.resolve)
        .args(["--nss", "lbfo files", "follow", "c.lan"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut ask = {
        use std::io::{BufRead, Write};
        let mut stdin = follower.stdin.take().unwrap();
        let mut out = std::io::BufReader::new(follower.stdout.take().unwrap());
        move || {
            stdin.write_all(b"?\n").unwrap();
            let mut line = String::new();
            out.read_line(&mut line).unwrap();
            line.trim().to_owned()
        }
    };
    assert_ne!(ask(), "10.0.2.1");
    h.send("add c.lan 10.0.2.1\n");
    h.wait_for("c.lan refused for the capacity", || {
        h.log().contains("table full: `capacity` allows 2 services")
    });
    h.write_config(
        "capacity 16 4\nadd a.lan 10.0.0.1\nadd b.lan 10.0.1.1\nadd c.lan 10.0.2.1\nadd c.lan 10.0.2.2\n",
    );
    h.signal(libc::SIGHUP);
    h.wait_for("the new table in place", || {
        h.log().contains("the new table is in place")
    });
    h.wait_answer("c.lan", "10.0.2.1");
    let t0 = std::time::Instant::now();
    while !ask().starts_with("10.0.2.") {
        assert!(
            t0.elapsed().as_secs() < 5,
            "the running program never saw c.lan"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = follower.kill();
    let _ = follower.wait();
    let status = h.status_json();
    assert!(
        status.contains("\"capacity\":{\"max_services\":16,\"max_backends\":4}"),
        "{status}"
    );
    assert_ne!(counters_id(&h), old);
    assert!(!segment_exists(old), "the old table's segment is gone");
    let log = h.log();
    assert!(
        log.contains(&format!(
            "marked the previous table's segment {old} for removal"
        )),
        "{log}"
    );
}

#[test]
fn a_table_deleted_while_no_agent_runs_leaves_no_segment_behind() {
    let mut h = Host::new("add a.lan 10.0.0.1\n");
    h.start();
    let id = counters_id(&h);
    h.stop();
    assert!(
        segment_exists(id),
        "kept while the table is there: lookups go on counting"
    );
    std::fs::remove_file(h.table()).unwrap();
    h.start();
    assert!(!segment_exists(id), "{}", h.log());
    assert!(
        h.log().contains(&format!(
            "counters: marked a deleted table's segment {id} for removal"
        )),
        "{}",
        h.log()
    );
}

#[test]
fn an_agent_whose_table_was_deleted_removes_its_segment_when_it_exits() {
    let mut h = Host::new("add a.lan 10.0.0.1\n");
    h.start();
    let id = counters_id(&h);
    std::fs::remove_file(h.table()).unwrap();
    h.stop();
    assert!(!segment_exists(id), "{}", h.log());
    let log = h.log();
    assert!(log.contains(&format!("segment {id} for removal")), "{log}");
}
