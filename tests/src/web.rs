//! Real servers and clients for the end-to-end tests: [`Web`] runs Debian's python3
//! `http.server` (`tests/scripts/web.py`) in a bed host, answering with its name, with a status
//! and delay the test changes while it runs ([`Web::set`]); killed by pid when dropped.
//! [`Curl`] runs unmodified curl in a bed host, one process per request, resolving through the
//! host's nsswitch.conf (`hosts: lbfo files`) and so through the NSS module.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::bed::Bed;
use crate::Host;

/// One HTTP server in a bed host.
#[derive(Debug)]
pub struct Web {
    child: Child,
    control: PathBuf,
    /// Where it listens: `ADDR:PORT`.
    pub at: String,
}

/// `tests/scripts/NAME`.
pub fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(name)
}

impl Web {
    /// Starts the server named `name` on `addr`:`port` in bed host `i`; returns once it listens.
    pub fn start(bed: &Bed, i: usize, addr: &str, port: u16, name: &str) -> Web {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let control =
            std::env::temp_dir().join(format!("lbfo-web-{}-{n}-{name}", std::process::id()));
        let _ = std::fs::remove_file(&control);
        let mut child = bed
            .exec(i, "/usr/bin/python3")
            .arg(script("web.py"))
            .args([addr, &port.to_string(), name])
            .arg(&control)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run python3 web.py");
        let mut line = String::new();
        let out = child.stdout.take().expect("stdout");
        std::io::BufReader::new(out)
            .read_line(&mut line)
            .expect("read web.py");
        assert_eq!(line.trim(), "listening", "web.py {name} did not start");
        let at = if addr.contains(':') {
            format!("[{addr}]:{port}")
        } else {
            format!("{addr}:{port}")
        };
        Web { child, control, at }
    }

    /// From the next request on, answers with `status` after `delay_ms`.
    pub fn set(&self, status: u16, delay_ms: u32) {
        let tmp = self.control.with_extension("new");
        std::fs::write(&tmp, format!("{status} {delay_ms}\n")).expect("write control");
        std::fs::rename(&tmp, &self.control).expect("rename control");
    }
}

impl Drop for Web {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.control);
    }
}

/// `n` requests of `url` from bed host `h`'s namespace, one curl process each, in sequence; each
/// prints one line, `STATUS REMOTE_IP` (`000` and no address when it failed to connect). Killed
/// by pid when dropped.
#[derive(Debug)]
pub struct Curl {
    child: Child,
    lines: std::io::Lines<std::io::BufReader<std::process::ChildStdout>>,
}

/// One request's outcome: the HTTP status (0 for none) and the server's address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The status, 0 when no answer came.
    pub status: u16,
    /// The address curl connected to (empty when it did not).
    pub addr: String,
}

impl Curl {
    /// Starts the requests (curl gives up on one after 2 s, on its connect after 0.5 s).
    pub fn start(h: &Host, url: &str, n: usize) -> Curl {
        let ns = h.netns.as_ref().expect("a bed host");
        let script = format!(
            "for i in $(seq {n}); do curl -s -o /dev/null --connect-timeout 0.5 --max-time 2 \
             -w '%{{http_code}} %{{remote_ip}}\\n' '{url}'; done"
        );
        let mut child = h
            .command("ip")
            .args(["netns", "exec", ns, "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("run curl in the bed");
        let out = child.stdout.take().expect("stdout");
        Curl {
            child,
            lines: std::io::BufReader::new(out).lines(),
        }
    }

    /// The next request's outcome; `None` when all are done.
    pub fn next_answer(&mut self) -> Option<Answer> {
        let line = self.lines.next()?.ok()?;
        let mut w = line.split_whitespace();
        let status = w.next()?.parse().ok()?;
        Some(Answer {
            status,
            addr: w.next().unwrap_or_default().to_owned(),
        })
    }
}

impl Drop for Curl {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
