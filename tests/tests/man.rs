//! The manual pages agree with the program: every flag and subcommand `--help` shows is in
//! lbfo-agentd(8), every verb and setting the parser knows is in lbfo.conf(5), the pages carry the
//! workspace's version, and groff formats them without a warning.

use lbfo_tests::{artefacts, describe};
use std::path::{Path, PathBuf};
use std::process::Command;

fn page(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../man")
        .join(name)
}

/// The page's roff with font changes dropped and `\-`, `\e` made plain, so flags read as typed.
fn plain(name: &str) -> String {
    let roff = std::fs::read_to_string(page(name)).expect("read man page");
    let mut s = roff.replace("\\-", "-").replace("\\e", "\\");
    for f in ["\\fB", "\\fI", "\\fR", "\\fP"] {
        s = s.replace(f, "");
    }
    s
}

fn help(args: &[&str]) -> String {
    let out = Command::new(artefacts().agent).args(args).output().unwrap();
    assert!(out.status.success(), "{}", describe(&out));
    String::from_utf8(out.stdout).unwrap()
}

/// Flags in a `--help` text's Options section (`  -c, --config ...`, `  --json ...`) and the
/// names in its Commands section.
fn flags_and_commands(help: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut section = "";
    for line in help.lines() {
        if !line.starts_with(' ') {
            section = line;
            continue;
        }
        if line.starts_with("   ") {
            continue; // a wrapped description
        }
        let first = line.split_whitespace().next().unwrap_or("");
        match section {
            "Options:" if first.starts_with('-') => {
                // "-c, --config" or "--help, help": every comma-separated name up to the text.
                let names = line.trim_start().split("  ").next().unwrap_or("");
                out.extend(names.split(", ").map(str::to_string));
            }
            "Commands:" => out.push(first.to_string()),
            _ => {}
        }
    }
    out
}

#[test]
fn every_help_flag_and_command_is_in_lbfo_agentd_8() {
    let man = plain("lbfo-agentd.8");
    let mut seen = Vec::new();
    for args in [&["--help"][..], &["status", "--help"]] {
        let names = flags_and_commands(&help(args));
        assert!(names.len() >= 2, "parsed --help of {args:?}: {names:?}");
        for n in names {
            // An item of its own: the bold tag line after a `.TP`.
            let lines: Vec<&str> = man.lines().collect();
            let described = lines.windows(2).any(|w| {
                w[0] == ".TP"
                    && w[1].starts_with(".B")
                    && w[1]
                        .split_whitespace()
                        .skip(1)
                        .any(|t| t.trim_matches(|c| c == '"' || c == ',') == n)
            });
            assert!(
                described,
                "`{n}` (lbfo-agentd {args:?}) is not described in lbfo-agentd.8"
            );
            seen.push(n);
        }
    }
    for must in [
        "--config",
        "-c",
        "--table",
        "--json",
        "--prometheus",
        "status",
    ] {
        assert!(
            seen.iter().any(|s| s == must),
            "{must} missing from --help: {seen:?}"
        );
    }
}

/// The words the parser lists as expected when it meets `line` in a config file.
fn expected(line: &str) -> Vec<String> {
    // One directory per call: the tests run in parallel in one process.
    static CALLS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("lbfo-man-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let conf = dir.join("bad.conf");
    std::fs::write(&conf, format!("{line}\n")).unwrap();
    let out = Command::new(artefacts().agent)
        .arg("-c")
        .arg(&conf)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    let list = err
        .split("(expected ")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .unwrap_or_else(|| panic!("no list in {err:?}"));
    list.split(", ")
        .flat_map(|w| w.split(" or "))
        .map(str::to_owned)
        .collect()
}

/// Whether `word` opens a `.B` or `.BI` line of lbfo.conf(5) (where its entry starts).
fn described(man: &str, word: &str) -> bool {
    man.lines().any(|l| {
        let l = l
            .strip_prefix(".BI ")
            .or_else(|| l.strip_prefix(".B "))
            .unwrap_or("");
        l == word || l.starts_with(&format!("{word} "))
    })
}

#[test]
fn every_verb_and_setting_is_in_lbfo_conf_5() {
    // The parser names every verb it knows when it meets an unknown one.
    let verbs = expected("bogusverb");
    assert!(verbs.len() >= 11, "{verbs:?}");
    let man = plain("lbfo.conf.5");
    for v in verbs {
        assert!(
            described(&man, &v),
            "verb `{v}` is not described in lbfo.conf.5"
        );
    }
}

#[test]
fn every_check_kind_and_policy_is_in_lbfo_conf_5() {
    let man = plain("lbfo.conf.5");
    let kinds = expected("check a.lan bogus");
    assert_eq!(kinds, ["tcp", "http", "icmp", "exec"]);
    let policies = expected("policy a.lan bogus");
    assert!(policies.len() >= 5, "{policies:?}");
    for w in kinds.iter().chain(&policies) {
        assert!(described(&man, w), "`{w}` is not described in lbfo.conf.5");
    }
}

#[test]
fn pages_carry_the_workspace_version() {
    let toml = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml"))
        .unwrap();
    let version = env!("CARGO_PKG_VERSION");
    assert!(toml.contains(&format!("version = \"{version}\"")));
    for p in ["lbfo-agentd.8", "lbfo.conf.5", "nss-lbfo.8"] {
        let th = std::fs::read_to_string(page(p)).unwrap();
        let th = th.lines().find(|l| l.starts_with(".TH ")).unwrap_or("");
        assert!(th.contains(&format!("\"lbfo {version}\"")), "{p}: {th}");
    }
}

#[test]
fn groff_formats_the_pages_without_warnings() {
    if Command::new("groff").arg("--version").output().is_err() {
        eprintln!("skipped: no groff (apt-get install groff-base; scripts/setup.sh does)");
        return;
    }
    for p in ["lbfo-agentd.8", "lbfo.conf.5", "nss-lbfo.8"] {
        let out = Command::new("groff")
            .args(["-man", "-ww", "-z"])
            .arg(page(p))
            .env("LC_ALL", "C.UTF-8")
            .output()
            .unwrap();
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{p}: {}",
            describe(&out)
        );
    }
}
