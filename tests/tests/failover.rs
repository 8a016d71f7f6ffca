//! Failover and durability end to end: the state file across `kill -9`, a long-running resolver
//! across an agent restart.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::time::Duration;

use lbfo_tests::Host;

/// The `i`th backend address of the stream below (unique per `i`).
fn addr(i: u32) -> String {
    format!("10.1.{}.{}", i / 250, i % 250 + 1)
}

/// Line `i` of the stream: adds spread over 300 services, and every 7th line a `down` of the
/// backend added 300 lines earlier (same service).
fn line(i: u32) -> String {
    if i % 7 == 3 && i >= 300 {
        format!("down s{}.lan {}\n", i % 300, addr(i - 300))
    } else {
        format!("add s{}.lan {}\n", i % 300, addr(i))
    }
}

#[test]
fn kill_9_in_a_stream_of_fifo_commands_loses_no_applied_command() {
    let mut h = Host::new("");
    let state = h.dir.join("state/lbfo.state");
    std::fs::create_dir_all(state.parent().unwrap()).unwrap();
    // Up to 300 services of up to 14 backends: more than the default capacity holds.
    h.write_config(&format!(
        "capacity 512 16\nstate {}\nadd keep.lan 10.9.9.9\n",
        state.display()
    ));
    h.start();
    let fifo = h.fifo();
    // A writer that keeps going until the agent is gone (the FIFO then has no reader).
    let writer = std::thread::spawn(move || {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo)
            .unwrap();
        let mut i = 0u32;
        while i < 4000 {
            let chunk: String = (i..i + 20).map(line).collect();
            match f.write_all(chunk.as_bytes()) {
                Ok(()) => i += 20,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(_) => break,
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        i
    });
    // Kill at an arbitrary moment in the middle of the stream.
    h.wait_for("some commands to be applied", || {
        h.log().matches("fifo: line ").count() > 500
    });
    h.kill9();
    let sent = writer.join().unwrap();
    let before = h.log();
    let applied: Vec<&str> = before
        .lines()
        .filter_map(|l| l.strip_prefix("fifo: line "))
        .filter_map(|l| l.split_once(": ").map(|(_, c)| c))
        .collect();
    assert!(applied.len() > 500, "{before}");
    assert!(sent < 4000, "the kill came mid-stream");
    h.start();
    let json = h.status_json();
    for c in &applied {
        let w: Vec<&str> = c.split(' ').collect();
        match w[0] {
            "add" => assert!(
                json.contains(&format!("\"addr\":\"{}\"", w[2])),
                "{c} lost after the restart"
            ),
            "down" => assert!(
                json.contains(&format!("\"addr\":\"{}\",\"state\":\"down\"", w[2])),
                "{c} lost after the restart"
            ),
            other => panic!("unexpected applied line {other}"),
        }
    }
    assert!(json.contains("\"addr\":\"10.9.9.9\""));
    let log = h.log();
    assert!(log.contains("start: restored "), "{log}");
    h.stop();

    // Even without the table (a reboot clears /run), the state file brings it all back.
    h.remove_table();
    h.start();
    let again = h.status_json();
    for c in &applied {
        let a = c.split(' ').nth(2).unwrap();
        assert!(again.contains(&format!("\"addr\":\"{a}\"")), "{c} lost");
    }
}

/// A resolver process that lives across agent restarts: one lookup per [`Follower::ask`].
struct Follower {
    child: std::process::Child,
    out: std::io::BufReader<std::process::ChildStdout>,
}

impl Follower {
    fn start(h: &Host, name: &str) -> Follower {
        let mut child = h
            .command(&h.bin.resolve)
            .args(["--nss", "lbfo files", "follow", name])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let out = std::io::BufReader::new(child.stdout.take().unwrap());
        Follower { child, out }
    }

    fn ask(&mut self) -> String {
        use std::io::BufRead;
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(b"?\n").unwrap();
        let mut line = String::new();
        self.out.read_line(&mut line).unwrap();
        line.trim().to_owned()
    }

    /// Asks until the answer is `want`; returns how long that took (panics after 5 s).
    fn until(&mut self, want: &str) -> Duration {
        let t0 = std::time::Instant::now();
        loop {
            let got = self.ask();
            if got == want {
                return t0.elapsed();
            }
            assert!(
                t0.elapsed() < Duration::from_secs(5),
                "still {got:?}, not {want:?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_long_running_resolver_answers_across_agent_restarts_and_a_recreated_table() {
    let mut h = Host::new("");
    let state = h.dir.join("lbfo.state");
    h.write_config(&format!(
        "state {}\nadd web.lan 10.0.0.1\n",
        state.display()
    ));
    h.start();
    let mut r = Follower::start(&h, "web.lan");
    assert_eq!(r.ask(), "10.0.0.1");
    h.send("add web.lan 10.0.0.2\ndel web.lan 10.0.0.1\n");
    r.until("10.0.0.2");

    // Agent killed: the last table keeps answering.
    h.kill9();
    for _ in 0..20 {
        assert_eq!(r.ask(), "10.0.0.2");
    }
    // Restarted over the same table: the same answers, and new commands reach the old process.
    h.start();
    assert_eq!(r.ask(), "10.0.0.2");
    h.send("add web.lan 10.0.0.3\ndel web.lan 10.0.0.2\n");
    r.until("10.0.0.3");

    // The table is gone (a reboot clears /run) while the agent is down: the process still
    // answers from its mapping; the restarted agent recreates the table from the state file, and
    // the process moves to the new table within about a second.
    h.kill9();
    h.remove_table();
    assert_eq!(r.ask(), "10.0.0.3");
    h.start();
    h.send("add web.lan 10.0.0.4\ndel web.lan 10.0.0.3\n");
    let took = r.until("10.0.0.4");
    assert!(
        took < Duration::from_millis(2500),
        "the process saw the recreated table only after {took:?}"
    );
    assert!(h.log().contains("created"), "{}", h.log());
}

/// A state file cut short (a full disk, a copy gone wrong): the agent restores every line that
/// decodes, applies the config on top, logs what it skipped and keeps the damaged file beside
/// the path, where its own next saves never write.
#[test]
fn a_damaged_state_file_gives_what_decodes_and_is_kept_aside() {
    let mut h = Host::new("");
    let state = h.dir.join("state/lbfo.state");
    std::fs::create_dir_all(state.parent().unwrap()).unwrap();
    h.write_config(&format!(
        "state {}\nadd keep.lan 10.9.9.9\n",
        state.display()
    ));
    h.start();
    h.send("add a.lan 10.0.0.1\nadd b.lan 10.0.0.2\nadd z.lan 10.0.0.26\n");
    h.wait_answer("z.lan", "10.0.0.26");
    h.kill9();
    h.remove_table();
    let whole = std::fs::read(&state).unwrap();
    let cut = &whole[..whole.len() - 3];
    std::fs::write(&state, cut).unwrap();
    h.start();
    for (name, addr) in [
        ("a.lan", "10.0.0.1"),
        ("b.lan", "10.0.0.2"),
        ("keep.lan", "10.9.9.9"),
    ] {
        h.wait_answer(name, addr);
    }
    let log = h.log();
    let line = log
        .lines()
        .find(|l| l.contains(": damaged ("))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(line.contains("(truncated after "), "{line}");
    let bad = line
        .split("kept as ")
        .nth(1)
        .and_then(|t| t.split(';').next())
        .unwrap_or_else(|| panic!("{line}"));
    assert!(
        bad.starts_with(&format!("{}.bad-", state.display())),
        "{line}"
    );
    assert_eq!(std::fs::read(bad).unwrap(), cut, "kept as it was");
    // The agent's own saves go to the path, never to the damaged file.
    h.send("add c.lan 10.0.0.3\n");
    h.wait_answer("c.lan", "10.0.0.3");
    assert_eq!(std::fs::read(bad).unwrap(), cut);
    h.stop();
    h.remove_table();
    h.start();
    assert!(!h.log()[log.len()..].contains("damaged"), "{}", h.log());
    h.wait_answer("c.lan", "10.0.0.3");
}
