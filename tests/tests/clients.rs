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

/// OpenSSH's sshd (Debian's package, downloaded and unpacked, never installed) in bed host `i`,
/// answering every login with `name` (`ForceCommand`). It runs in a private mount namespace with
/// a /run of its own (for its privilege separation directory) and an /etc/passwd that has its
/// `sshd` user, so the machine's own files stay as they are. Killed by pid when dropped.
struct Sshd(std::process::Child);

impl Sshd {
    fn start(bed: &Bed, i: usize, dir: &std::path::Path, roots: &[std::path::PathBuf]) -> Sshd {
        use std::io::BufRead;
        let name = format!("h{i}");
        let key = dir.join(format!("host-{name}"));
        keygen(&key);
        let conf = dir.join(format!("sshd-{name}.conf"));
        std::fs::write(
            &conf,
            format!(
                "ListenAddress {}:22\nHostKey {}\nPidFile none\nUsePAM no\n\
                 PermitRootLogin prohibit-password\nAuthorizedKeysFile {}\nStrictModes no\n\
                 PasswordAuthentication no\nKbdInteractiveAuthentication no\nPrintMotd no\n\
                 ForceCommand echo {name}\n",
                bed.v4(i),
                key.display(),
                dir.join("client.pub").display()
            ),
        )
        .unwrap();
        let sshd = roots[0].join("usr/sbin/sshd");
        let libs = roots[1].join("usr/lib/x86_64-linux-gnu");
        let script = format!(
            "mount -t tmpfs tmpfs /run && mkdir -m 755 /run/sshd && \
             mount --bind {passwd} /etc/passwd && \
             LD_LIBRARY_PATH={libs} exec {sshd} -D -e -f {conf}",
            passwd = dir.join("passwd").display(),
            libs = libs.display(),
            sshd = sshd.display(),
            conf = conf.display()
        );
        let mut child = bed
            .exec(i, "unshare")
            .args(["-m", "--propagation", "private", "sh", "-c", &script])
            .stdin(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stderr.take().unwrap()).lines();
        let mut said = Vec::new();
        loop {
            match lines.next() {
                Some(Ok(line)) if line.starts_with("Server listening on") => break,
                Some(Ok(line)) => said.push(line),
                _ => panic!("sshd {name} did not start: {said:?}"),
            }
        }
        // Its log goes on (one line per login): read and dropped, so it never blocks.
        std::thread::spawn(move || lines.for_each(drop));
        Sshd(child)
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A new ed25519 key pair at `path` (and `path.pub`).
fn keygen(path: &std::path::Path) {
    let out = std::process::Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", lbfo_tests::describe(&out));
}

#[test]
fn ssh_logs_in_through_the_module_to_each_server_in_turn() {
    if !Bed::available() {
        eprintln!("skipped: the multi-host bed needs root and iproute2");
        return;
    }
    let Some(roots) = lbfo_tests::debian_packages(&["openssh-server", "libwrap0"]) else {
        eprintln!("skipped: Debian's openssh-server could not be downloaded");
        return;
    };
    let dir = std::env::temp_dir().join(format!("lbfo-ssh-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    std::fs::write(
        dir.join("passwd"),
        format!("{passwd}sshd:x:64999:65534::/run/sshd:/usr/sbin/nologin\n"),
    )
    .unwrap();
    keygen(&dir.join("client"));
    let bed = Bed::new(4);
    let servers: Vec<Sshd> = (2..=4)
        .map(|i| Sshd::start(&bed, i, &dir, &roots))
        .collect();
    let mut h = bed.agent_host(
        1,
        "add ssh.lan 10.77.0.2\nadd ssh.lan 10.77.0.3\nadd ssh.lan 10.77.0.4\n",
    );
    h.start();
    let ns = h.netns.clone().unwrap();
    let mut got = Vec::new();
    for _ in 0..6 {
        let out = h
            .command("ip")
            .args(["netns", "exec", &ns, "ssh", "-F", "/dev/null", "-i"])
            .arg(dir.join("client"))
            .args([
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "LogLevel=ERROR",
                "-o",
                "ConnectTimeout=5",
                "root@ssh.lan",
            ])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "ssh: {}", lbfo_tests::describe(&out));
        got.push(String::from_utf8_lossy(&out.stdout).trim().to_owned());
    }
    drop(servers);
    let _ = std::fs::remove_dir_all(&dir);
    eprintln!("6 ssh logins through the module: {got:?}");
    let mut sorted = got.clone();
    sorted.sort();
    assert_eq!(sorted, ["h2", "h2", "h3", "h3", "h4", "h4"], "{got:?}");
    assert_ne!(got[0], got[1], "in turn");
}
