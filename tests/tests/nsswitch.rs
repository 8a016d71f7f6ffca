//! The hosts: line editor the maintainer scripts inline (packaging/deb/nsswitch.awk), run with the
//! system's awk on tricky nsswitch.conf files and on the distributions' real default lines: add
//! puts lbfo first, remove gives the original back byte for byte, check names the sources that
//! could end a lookup before lbfo. Then the other NSS packages' own maintainer scripts (Debian's
//! libnss-resolve, -mdns, -myhostname, -mymachines, downloaded and run against a private copy
//! through `DPKG_ROOT`) edit the same file before and after lbfo's, in every order.

use lbfo_tests::{debian_packages, describe};
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

fn edit(action: &str, input: &str) -> String {
    let awk = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/deb/nsswitch.awk");
    let mut child = Command::new("awk")
        .args(["-v", &format!("action={action}"), "-f"])
        .arg(awk)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run awk");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write awk's input");
    let out = child.wait_with_output().expect("awk output");
    assert!(out.status.success(), "awk {action} failed on {input:?}");
    String::from_utf8(out.stdout).expect("utf-8")
}

/// `add` turns `input` into `expect`; `remove` turns that back into `input`; both are idempotent.
fn check(input: &str, expect: &str) {
    let added = edit("add", input);
    assert_eq!(added, expect, "add on {input:?}");
    assert_eq!(edit("add", &added), added, "add twice on {input:?}");
    let removed = edit("remove", &added);
    assert_eq!(removed, input, "remove after add on {input:?}");
    assert_eq!(
        edit("remove", &removed),
        removed,
        "remove twice on {input:?}"
    );
}

/// What `check` prints for `input`: the sources before lbfo that can end a lookup.
fn ending(input: &str) -> String {
    edit("check", input)
}

/// The hosts: lines as the distributions ship them, and as their own NSS packages leave them.
/// Each is (where it comes from, the line).
const WILD: &[(&str, &str)] = &[
    // glibc's template, /usr/share/libc-bin/nsswitch.conf (libc-bin), the same in Debian 12, 13
    // and Ubuntu 22.04, 24.04: a server without mDNS.
    ("Debian 12/13, Ubuntu server", "hosts:          files dns"),
    // Debian with systemd's NSS packages (their dh_installnss scripts: myhostname after files,
    // mymachines and resolve before dns), without and with libnss-mdns: the second is what
    // `real_packages_in_every_order` gets from the real scripts.
    (
        "Debian 12/13 + libnss-myhostname, -mymachines, -resolve",
        "hosts:          files myhostname mymachines resolve [!UNAVAIL=return] dns",
    ),
    (
        "Debian 12/13 + libnss-myhostname, -mdns, -mymachines, -resolve",
        "hosts:          files myhostname mdns4_minimal [NOTFOUND=return] mymachines resolve [!UNAVAIL=return] dns",
    ),
    // libnss-mdns's script puts mDNS before dns (or resolve): Ubuntu desktop 24.04, Debian desktops.
    (
        "Ubuntu 24.04 desktop, Debian + libnss-mdns",
        "hosts:          files mdns4_minimal [NOTFOUND=return] dns",
    ),
    // Ubuntu 22.04 desktop images, as reported from installed systems.
    (
        "Ubuntu 22.04 desktop (libnss-mdns)",
        "hosts:          files mdns4_minimal [NOTFOUND=return] dns myhostname",
    ),
    (
        "Ubuntu + libnss-mdns + libnss-resolve",
        "hosts:          files mdns4_minimal [NOTFOUND=return] resolve [!UNAVAIL=return] dns",
    ),
    // Fedora: authselect's `local` profile, without and with `with-mdns4` (Workstation).
    (
        "Fedora",
        "hosts:      files myhostname resolve [!UNAVAIL=return] dns",
    ),
    (
        "Fedora Workstation (with-mdns4)",
        "hosts:      files myhostname mdns4_minimal [NOTFOUND=return] resolve [!UNAVAIL=return] dns",
    ),
    // Arch's filesystem package follows systemd's factory/etc/nsswitch.conf (also the line the
    // issue saw): resolve is asked before files, and while resolved runs it ends every lookup.
    (
        "Arch, systemd's recommended line",
        "hosts: mymachines resolve [!UNAVAIL=return] files myhostname dns",
    ),
    // Directory services before files: SSSD, nslcd (libnss-ldapd), authoritative or not.
    ("SSSD", "hosts:      sss files dns"),
    ("SSSD, authoritative", "hosts: sss [NOTFOUND=return] files dns"),
    ("nslcd, authoritative", "hosts: ldap [NOTFOUND=return] files dns"),
    // Lines admins wrote.
    (
        "admin: comment, tabs, actions",
        "hosts:\tfiles [NOTFOUND=return]\tdns  # no DNS for names in /etc/hosts",
    ),
    ("admin: DNS only", "hosts: dns [!UNAVAIL=return] files"),
];

#[test]
fn add_puts_lbfo_first_on_every_line_in_the_wild() {
    for (what, line) in WILD {
        let input = format!("passwd: files\n{line}\nnetworks: files\n");
        let rest = line.split_once(':').expect("a hosts: line").1;
        let lead = rest.len() - rest.trim_start().len();
        let (blanks, sources) = rest.split_at(lead);
        let want = format!("passwd: files\nhosts:{blanks}lbfo {sources}\nnetworks: files\n");
        check(&input, &want);
        assert_eq!(
            ending(&want),
            "",
            "{what}: lbfo first, nothing ends a lookup before it"
        );
    }
}

#[test]
fn check_names_what_ends_a_lookup_before_lbfo() {
    // Where the old rule (just before `files`) put lbfo on systemd's line: never asked.
    assert_eq!(
        ending("hosts: mymachines resolve [!UNAVAIL=return] lbfo files myhostname dns\n"),
        "resolve [!UNAVAIL=return]\n"
    );
    assert_eq!(
        ending("hosts: files mdns4_minimal [ NOTFOUND = return ] sss [NOTFOUND=return] [UNAVAIL=continue] lbfo dns\n"),
        "mdns4_minimal [ NOTFOUND = return ]\nsss [NOTFOUND=return] [UNAVAIL=continue]\n"
    );
    // Only SUCCESS returning (the default) ends nothing lbfo would answer differently.
    for line in [
        "hosts: files lbfo dns\n",
        "hosts: files [SUCCESS=return] lbfo dns\n",
        "hosts: resolve [UNAVAIL=continue] lbfo dns\n",
        "hosts: lbfo [TRYAGAIN=return] files dns\n",
        "hosts: files dns [NOTFOUND=return] lbfo # [NOTFOUND=return] in a comment\n",
        "hosts: files dns\n",
        "# hosts: resolve [!UNAVAIL=return] lbfo\n",
    ] {
        let want = if line.contains("dns [NOTFOUND=return] lbfo") {
            "dns [NOTFOUND=return]\n"
        } else {
            ""
        };
        assert_eq!(ending(line), want, "check on {line:?}");
    }
    // A negated status returns on SUCCESS's others, whatever it names.
    assert_eq!(
        ending("hosts: files [!SUCCESS=return] lbfo\n"),
        "files [!SUCCESS=return]\n"
    );
}

#[test]
fn lbfo_goes_first_on_any_line() {
    check("hosts: dns\n", "hosts: lbfo dns\n");
    check("hosts: filesystem dns\n", "hosts: lbfo filesystem dns\n");
    check(
        "hosts: dns [NOTFOUND=files]\n",
        "hosts: lbfo dns [NOTFOUND=files]\n",
    );
    check("hosts:\t\tfiles\tdns\n", "hosts:\t\tlbfo files\tdns\n");
    check("  hosts :files\n", "  hosts :lbfo files\n");
    check("hosts:\n", "hosts:lbfo\n");
    check("hosts: # nothing yet\n", "hosts: lbfo # nothing yet\n");
}

#[test]
fn comments_and_other_lines_are_kept() {
    let conf = "# hosts: files dns\n#hosts: lbfo\npasswd:         files systemd\n\nhosts:  files dns # lbfo? not yet\nnetworks:       files\n";
    check(
        conf,
        "# hosts: files dns\n#hosts: lbfo\npasswd:         files systemd\n\nhosts:  lbfo files dns # lbfo? not yet\nnetworks:       files\n",
    );
    // A last line without its newline gets one (awk prints whole lines); nothing else changes.
    assert_eq!(edit("add", "hosts: files dns"), "hosts: lbfo files dns\n");
}

#[test]
fn an_admins_lbfo_is_left_alone_by_add() {
    for line in [
        "hosts: files lbfo dns\n",
        "hosts: lbfo [TRYAGAIN=return] files dns\n",
        "hosts: files dns lbfo\n",
    ] {
        assert_eq!(edit("add", line), line);
    }
    // Only the first hosts: line counts (a second one is the admin's business).
    let two = "hosts: files dns\nhosts: dns\n";
    assert_eq!(edit("add", two), "hosts: lbfo files dns\nhosts: dns\n");
}

#[test]
fn remove_takes_lbfo_and_its_actions_anywhere() {
    let cases = [
        (
            "hosts: lbfo [TRYAGAIN=return] files dns\n",
            "hosts: files dns\n",
        ),
        (
            "hosts: lbfo [ TRYAGAIN=return ] [NOTFOUND=continue] files\n",
            "hosts: files\n",
        ),
        ("hosts: files lbfo\n", "hosts: files\n"),
        (
            "hosts: files\tlbfo\tdns # keep\n",
            "hosts: files\tdns # keep\n",
        ),
        ("hosts: lbfo lbfo files\n", "hosts: files\n"),
        ("hosts: lbfo2 files\n", "hosts: lbfo2 files\n"),
        (
            "hosts: files [NOTFOUND=lbfo] dns\n",
            "hosts: files [NOTFOUND=lbfo] dns\n",
        ),
        ("passwd: lbfo files\n", "passwd: lbfo files\n"),
    ];
    for (input, want) in cases {
        assert_eq!(edit("remove", input), want, "remove on {input:?}");
    }
}

#[test]
fn no_hosts_line_gets_glibcs_default_order_after_lbfo() {
    let conf = "passwd: files\n# hosts: files\n";
    check(
        conf,
        "passwd: files\n# hosts: files\nhosts: lbfo dns [!UNAVAIL=return] files # added by lbfo: glibc's default after lbfo\n",
    );
    check(
        "",
        "hosts: lbfo dns [!UNAVAIL=return] files # added by lbfo: glibc's default after lbfo\n",
    );
    // The appended line, once edited by the admin, is theirs: remove only takes lbfo off.
    let edited = "hosts: lbfo dns [!UNAVAIL=return] files # added by lbfo: edited\n";
    assert_eq!(
        edit("remove", edited),
        "hosts: dns [!UNAVAIL=return] files # added by lbfo: edited\n"
    );
}

/// Debian's nsswitch.conf as libc-bin installs it (its template, the same in Debian 12 and 13).
const DEBIAN: &str = "# /etc/nsswitch.conf\n#\n# Example configuration of GNU Name Service Switch functionality.\n# If you have the `glibc-doc-reference' and `info' packages installed, try:\n# `info libc \"Name Service Switch\"' for information about this file.\n\npasswd:         files\ngroup:          files\nshadow:         files\ngshadow:        files\n\nhosts:          files dns\nnetworks:       files\n\nprotocols:      db files\nservices:       db files\nethers:         db files\nrpc:            db files\n\nnetgroup:       nis\n";

/// The NSS packages whose maintainer scripts edit the hosts: line.
const NSS_PACKAGES: &[&str] = &[
    "libnss-resolve",
    "libnss-mdns",
    "libnss-myhostname",
    "libnss-mymachines",
];

/// Runs one of `pkg`'s maintainer scripts against `root`/etc/nsswitch.conf (dh_installnss honours
/// DPKG_ROOT, so the script never sees this machine's /etc).
fn maintscript(unpacked: &Path, pkg: &str, script: &str, arg: &str, root: &Path) {
    assert!(root.is_absolute() && root != Path::new("/"));
    let path = unpacked
        .parent()
        .expect("package dir")
        .join("DEBIAN")
        .join(script);
    let out = Command::new("sh")
        .arg(&path)
        .arg(arg)
        .env("DPKG_ROOT", root)
        .env("DPKG_MAINTSCRIPT_PACKAGE", pkg)
        .env("DPKG_MAINTSCRIPT_PACKAGE_INSTCOUNT", "0")
        .output()
        .expect("run a maintainer script");
    assert!(
        out.status.success(),
        "{pkg} {script} {arg}: {}",
        describe(&out)
    );
}

/// Every order of `items` (Heap's algorithm).
fn orders(items: &[usize]) -> Vec<Vec<usize>> {
    fn go(k: usize, a: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
        if k <= 1 {
            out.push(a.clone());
            return;
        }
        for i in 0..k {
            go(k - 1, a, out);
            let j = if k % 2 == 0 { i } else { 0 };
            a.swap(j, k - 1);
        }
    }
    let mut out = Vec::new();
    go(items.len(), &mut items.to_vec(), &mut out);
    out
}

fn hosts_line(conf: &str) -> &str {
    conf.lines()
        .find(|l| l.starts_with("hosts:"))
        .expect("a hosts: line")
}

#[test]
fn real_packages_in_every_order() {
    let Some(roots) = debian_packages(NSS_PACKAGES) else {
        eprintln!("skipped: no apt-get here (not Debian), so no Debian packages to run");
        return;
    };
    let machine = std::fs::read("/etc/nsswitch.conf").ok();
    let scratch = std::env::temp_dir().join(format!("lbfo-nss-order-{}", std::process::id()));
    let etc = scratch.join("etc");
    std::fs::create_dir_all(&etc).expect("scratch /etc");
    let conf = etc.join("nsswitch.conf");
    let read = || std::fs::read_to_string(&conf).expect("read nsswitch.conf");

    // The packages alone, in this order (the others give the same sources, mDNS placed elsewhere).
    std::fs::write(&conf, DEBIAN).expect("write nsswitch.conf");
    for (root, pkg) in roots.iter().zip(NSS_PACKAGES) {
        maintscript(root, pkg, "preinst", "install", &scratch);
        maintscript(root, pkg, "postinst", "configure", &scratch);
    }
    let without_lbfo = read();
    assert_eq!(
        hosts_line(&without_lbfo),
        "hosts:          files myhostname mdns4_minimal [NOTFOUND=return] mymachines resolve [!UNAVAIL=return] dns"
    );

    // lbfo (index 4) and the four packages, installed in every order, then removed in reverse:
    // lbfo is first whenever it is there, and each removal gives the file back byte for byte.
    let mut runs = 0;
    for order in orders(&[0, 1, 2, 3, 4]) {
        std::fs::write(&conf, DEBIAN).expect("write nsswitch.conf");
        let mut states = vec![read()];
        for &i in &order {
            if i == 4 {
                std::fs::write(&conf, edit("add", &read())).expect("lbfo add");
            } else {
                maintscript(&roots[i], NSS_PACKAGES[i], "preinst", "install", &scratch);
                maintscript(
                    &roots[i],
                    NSS_PACKAGES[i],
                    "postinst",
                    "configure",
                    &scratch,
                );
            }
            states.push(read());
        }
        let line = hosts_line(states.last().expect("a state")).to_string();
        assert!(
            line.starts_with("hosts:          lbfo "),
            "{order:?}: {line}"
        );
        assert_eq!(ending(&read()), "", "{order:?}: {line}");
        for (&i, before) in order.iter().rev().zip(states.iter().rev().skip(1)) {
            if i == 4 {
                std::fs::write(&conf, edit("remove", &read())).expect("lbfo remove");
            } else {
                maintscript(&roots[i], NSS_PACKAGES[i], "postrm", "remove", &scratch);
            }
            assert_eq!(&read(), before, "{order:?}: removing {i} after {line}");
        }
        runs += 1;
    }
    assert_eq!(runs, 120);
    let _ = std::fs::remove_dir_all(&scratch);
    assert_eq!(
        std::fs::read("/etc/nsswitch.conf").ok(),
        machine,
        "the machine's own nsswitch.conf is untouched"
    );
}
