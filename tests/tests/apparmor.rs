//! The AppArmor snippet the package ships as /etc/apparmor.d/abstractions/nameservice.d/lbfo
//! (packaging/apparmor/lbfo), through the real `apparmor_parser` of Debian's apparmor package
//! (downloaded and unpacked, never installed) with a private copy of that package's profile tree.
//!
//! A profile that includes abstractions/nameservice compiles with the snippet in place (`-Q`:
//! everything but loading into a kernel, which has no AppArmor here), the preprocessed profile
//! shows the snippet's rule reached through the abstraction's `include if exists`, and a broken
//! copy of the snippet is refused, so the parser really reads it. What this cannot show: that a
//! kernel enforcing the profile lets the lookup through; no kernel here runs AppArmor.

use lbfo_tests::{debian_packages, describe};
use std::path::Path;
use std::process::{Command, Output};

const PROFILE: &str = "abi <abi/3.0>,\ninclude <tunables/global>\nprofile lbfo-test /usr/bin/lbfo-test {\n  include <abstractions/base>\n  include <abstractions/nameservice>\n}\n";

fn parser(root: &Path, tree: &Path, dir: &Path, args: &[&str]) -> Output {
    Command::new(root.join("sbin/apparmor_parser"))
        .arg("--config-file")
        .arg(dir.join("parser.conf"))
        .args(args)
        .arg("-b")
        .arg(tree)
        .arg("-I")
        .arg(tree)
        .arg(dir.join("test.profile"))
        .output()
        .expect("run apparmor_parser")
}

#[test]
fn apparmor_parser_accepts_a_nameservice_profile_with_the_snippet() {
    let Some(roots) = debian_packages(&["apparmor"]) else {
        eprintln!("skipped: no apt-get here (not Debian), so no apparmor package to run");
        return;
    };
    let root = &roots[0];
    let snippet = Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/apparmor/lbfo");
    let dir = std::env::temp_dir().join(format!("lbfo-apparmor-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let tree = dir.join("apparmor.d");
    let cp = Command::new("cp")
        .arg("-a")
        .arg(root.join("etc/apparmor.d"))
        .arg(&tree)
        .output()
        .expect("cp");
    assert!(cp.status.success(), "{}", describe(&cp));
    let abstraction =
        std::fs::read_to_string(tree.join("abstractions/nameservice")).expect("abstraction");
    assert!(
        abstraction.contains("include if exists <abstractions/nameservice.d>"),
        "this apparmor's nameservice abstraction includes nameservice.d"
    );
    let drop_in = tree.join("abstractions/nameservice.d");
    std::fs::create_dir_all(&drop_in).expect("nameservice.d");
    std::fs::copy(&snippet, drop_in.join("lbfo")).expect("install the snippet");
    std::fs::write(dir.join("test.profile"), PROFILE).expect("profile");
    std::fs::write(dir.join("parser.conf"), "").expect("parser.conf");

    let out = parser(root, &tree, &dir, &["-Q", "-K"]);
    assert!(
        out.status.success(),
        "the profile compiles: {}",
        describe(&out)
    );
    let out = parser(root, &tree, &dir, &["-p"]);
    assert!(out.status.success(), "{}", describe(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    let rules: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && l.contains("lbfo/table"))
        .collect();
    assert_eq!(
        rules,
        ["@{run}/lbfo/table r,"],
        "the snippet's one rule, reached through the abstraction"
    );

    let broken = std::fs::read_to_string(&snippet)
        .expect("snippet")
        .replace("table r,", "table rz,");
    std::fs::write(drop_in.join("lbfo"), broken).expect("broken snippet");
    let out = parser(root, &tree, &dir, &["-Q", "-K"]);
    assert!(
        !out.status.success(),
        "a broken snippet is refused: {}",
        describe(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("nameservice.d/lbfo"),
        "{}",
        describe(&out)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
