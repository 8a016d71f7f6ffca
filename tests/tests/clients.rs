//! Real clients: unmodified programs (curl, ssh) resolving through the NSS module in a bed host
//! (`hosts: lbfo files` in its nsswitch.conf), against real servers in other hosts: Debian's
//! python3 http.server, OpenSSH's sshd.

use std::collections::BTreeMap;

use lbfo_tests::bed::Bed;
use lbfo_tests::web::{Curl, Web};
use lbfo_tests::Host;

/// A bed of four hosts: an agent on host 1 with `conf`, HTTP servers on hosts 2, 3, 4 (port
/// 8080, named after their host).
fn bed(conf: &str) -> Option<(Bed, Host, Vec<Web>)> {
    if !Bed::available() {
        eprintln!("skipped: the multi-host bed needs root and iproute2");
        return None;
    }
    let bed = Bed::new(4);
    let webs = (2..=4)
        .map(|i| Web::start(&bed, i, &bed.v4(i), 8080, &format!("h{i}")))
        .collect();
    let mut h = bed.agent_host(1, conf);
    h.start();
    Some((bed, h, webs))
}

const WEB: &str = "add web.lan 10.77.0.2\nadd web.lan 10.77.0.3\nadd web.lan 10.77.0.4\n";

#[test]
fn curl_spreads_300_requests_exactly_evenly_over_three_servers() {
    let Some((_bed, h, _webs)) = bed(WEB) else {
        return;
    };
    let mut curl = Curl::start(&h, "http://web.lan:8080/", 300);
    let mut by_server: BTreeMap<String, u32> = BTreeMap::new();
    while let Some(a) = curl.next_answer() {
        assert_eq!(a.status, 200, "{a:?}");
        *by_server.entry(a.addr).or_default() += 1;
    }
    eprintln!("300 curl requests through the module: {by_server:?}");
    let even: BTreeMap<String, u32> = (2..=4).map(|i| (format!("10.77.0.{i}"), 100)).collect();
    assert_eq!(by_server, even);
}

#[test]
fn an_http_check_takes_a_server_answering_503_out_under_load_and_brings_it_back() {
    let conf = format!("{WEB}check web.lan http 8080 interval=50ms timeout=500ms fall=2 rise=2\n");
    let Some((_bed, h, webs)) = bed(&conf) else {
        return;
    };
    h.wait_for("the checks' first verdicts", || {
        h.status_json().matches("\"verdict\":\"up\"").count() == 3
    });
    let mut curl = Curl::start(&h, "http://web.lan:8080/", 600);
    let (mut n, mut errors, mut late) = (0, 0, BTreeMap::<String, u32>::new());
    while let Some(a) = curl.next_answer() {
        n += 1;
        match n {
            150 => webs[1].set(503, 0),
            350 => webs[1].set(200, 0),
            _ => {}
        }
        if a.status != 200 {
            assert_eq!((a.status, a.addr.as_str()), (503, "10.77.0.3"), "{a:?}");
            errors += 1;
        }
        if n > 500 {
            *late.entry(a.addr).or_default() += 1;
        }
    }
    eprintln!("600 curl requests, one server answering 503 for 200 of them: {errors} saw a 503");
    assert_eq!(n, 600);
    // A handful (often none): the check needs two failures 50 ms apart, and the next lookup
    // after the verdict skips the server. Without the check a third of the 200 requests would
    // see it; the bound is generous for a loaded machine.
    assert!(errors <= 15, "{errors} requests saw a 503");
    assert!(
        late.get("10.77.0.3").is_some_and(|&c| c > 0),
        "it came back: {late:?}"
    );
    let log = h.log();
    assert!(
        log.contains("check: web.lan 10.77.0.3 down (2 http checks failed: http: status 503)"),
        "{log}"
    );
    assert!(
        log.contains("check: web.lan 10.77.0.3 up (2 http checks passed)"),
        "{log}"
    );
}
