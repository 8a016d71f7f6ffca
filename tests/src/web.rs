//! Real servers for the end-to-end tests: [`Web`] runs Debian's python3 `http.server`
//! (`tests/scripts/web.py`) in a bed host, answering with its name, with a status and delay the
//! test changes while it runs ([`Web::set`]). Killed by pid when dropped.

use std::io::BufRead;
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::bed::Bed;

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
