//! `lbfo-clientbench`: failover as a client sees it (run by `scripts/bench-failover.sh`; needs
//! root). Prints figures; asserts nothing about time.
//!
//! A bed of four hosts: the agent and an unmodified curl on host 1, resolving `web.lan`
//! (roundrobin over hosts 2, 3, 4, each running Debian's python3 http.server) through the NSS
//! module, one request after the other. For each check kind, host 3 fails the way that kind
//! sees it, for 100 requests, then recovers: `tcp` its server killed, `http` and `exec` its server
//! answering 503 (the `exec` check runs curl against the backend), `icmp` its link cut. The figure
//! is how many requests failed per outage (mean and max over TRIALS), beside the request rate.

use std::time::Instant;

use lbfo_tests::bed::Bed;
use lbfo_tests::web::{Curl, Web};

const CHECK: &str = "interval=50ms timeout=200ms fall=2 rise=2";
/// Requests per trial; the outage lasts from request `FROM` to request `TO`.
const REQUESTS: usize = 250;
const FROM: usize = 50;
const TO: usize = 150;

/// One trial of `kind`: the failed requests, and the requests per second.
fn trial(bed: &Bed, kind: &str, webs: &mut [Web], h: &lbfo_tests::Host) -> (usize, f64) {
    let t0 = Instant::now();
    let mut curl = Curl::start(h, "http://web.lan:8080/", REQUESTS);
    let (mut n, mut failed) = (0, 0);
    while let Some(a) = curl.next_answer() {
        n += 1;
        if n == FROM || n == TO {
            let out = n == FROM;
            match kind {
                // The server on 8080 goes (dropped when replaced by one on a port nobody asks).
                "tcp" if out => webs[1] = Web::start(bed, 3, &bed.v4(3), 8081, "h3-off"),
                "tcp" => webs[1] = Web::start(bed, 3, &bed.v4(3), 8080, "h3"),
                "icmp" => bed.cut(3, out),
                _ => webs[1].set(if out { 503 } else { 200 }, 0),
            }
        }
        failed += usize::from(a.status != 200);
    }
    (failed, n as f64 / t0.elapsed().as_secs_f64())
}

fn main() {
    assert!(Bed::available(), "needs root and iproute2");
    let trials: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(3);
    let dir = std::env::temp_dir().join(format!("lbfo-clientbench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("http-ok.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\nexec curl -sf -o /dev/null --max-time 1 \"http://$LBFO_BACKEND:8080/\"\n",
    )
    .unwrap();
    std::process::Command::new("chmod")
        .arg("755")
        .arg(&script)
        .status()
        .unwrap();
    let mut results = Vec::new();
    for kind in ["tcp", "http", "icmp", "exec"] {
        let bed = Bed::new(4);
        let mut webs: Vec<Web> = (2..=4)
            .map(|i| Web::start(&bed, i, &bed.v4(i), 8080, &format!("h{i}")))
            .collect();
        let check = match kind {
            "tcp" => "tcp 8080".to_owned(),
            "http" => "http 8080".to_owned(),
            "icmp" => "icmp".to_owned(),
            _ => format!("exec {}", script.display()),
        };
        let conf = format!(
            "add web.lan 10.77.0.2\nadd web.lan 10.77.0.3\nadd web.lan 10.77.0.4\n\
             check web.lan {check} {CHECK}\n"
        );
        let mut h = bed.agent_host(1, &conf);
        h.start();
        h.wait_for("every backend checked up", || {
            h.status_json().matches("\"verdict\":\"up\"").count() == 3
        });
        let mut failed = Vec::new();
        let mut rate = 0.0;
        for _ in 0..trials {
            let (f, r) = trial(&bed, kind, &mut webs, &h);
            failed.push(f);
            rate += r / trials as f64;
            h.wait_for("host 3 back in rotation", || {
                h.status_json().matches("\"state\":\"up\"").count() == 3
            });
        }
        h.stop();
        drop(h);
        drop(webs);
        drop(bed);
        let mean = failed.iter().sum::<usize>() as f64 / trials as f64;
        let max = failed.iter().max().copied().unwrap_or(0);
        results.push((kind, mean, max, rate));
    }
    let _ = std::fs::remove_dir_all(&dir);
    // A table of its own (a blank line first): one row per check kind.
    println!(
        "\nFailover seen by a client: the requests that failed while one of three roundrobin \
         backends was out for {} requests ({CHECK}; curl through the module, one request at a \
         time; {trials} outages per kind).\n\n\
         | check kind | requests failed per outage, mean | max | requests/s |\n\
         |---|---:|---:|---:|",
        TO - FROM
    );
    for (kind, mean, max, rate) in results {
        println!("| {kind} | {mean:.1} | {max} | {rate:.0} |");
    }
}
