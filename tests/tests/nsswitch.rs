//! The hosts: line editor the maintainer scripts inline (packaging/deb/nsswitch.awk), run with the
//! system's awk on tricky nsswitch.conf files: add, remove, and add-then-remove giving the
//! original back byte for byte.

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

#[test]
fn add_goes_just_before_files() {
    check(
        "hosts:          files dns\n",
        "hosts:          lbfo files dns\n",
    );
    check(
        "hosts: files mdns4_minimal [NOTFOUND=return] dns\n",
        "hosts: lbfo files mdns4_minimal [NOTFOUND=return] dns\n",
    );
    check(
        "hosts: mymachines resolve [!UNAVAIL=return] files myhostname dns\n",
        "hosts: mymachines resolve [!UNAVAIL=return] lbfo files myhostname dns\n",
    );
    check("hosts:\t\tfiles\tdns\n", "hosts:\t\tlbfo files\tdns\n");
    check("  hosts :files\n", "  hosts :lbfo files\n");
}

#[test]
fn without_files_lbfo_goes_first() {
    check("hosts: dns\n", "hosts: lbfo dns\n");
    check("hosts: filesystem dns\n", "hosts: lbfo filesystem dns\n");
    check(
        "hosts: dns [NOTFOUND=files]\n",
        "hosts: lbfo dns [NOTFOUND=files]\n",
    );
    check("hosts:\n", "hosts:lbfo\n");
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
