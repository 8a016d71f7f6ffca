//! The OpenWrt package's files, as far as they can be tried without OpenWrt: the init script's
//! syntax and what it asks procd for (run against a stub procd that records its calls), and the
//! default config against the real agent.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::Command;

use lbfo_tests::{artefacts, describe};

fn pkg() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../openwrt/lbfo")
}

#[test]
fn init_script_passes_sh_n() {
    let out = Command::new("sh")
        .arg("-n")
        .arg(pkg().join("files/lbfo.init"))
        .output()
        .unwrap();
    assert!(out.status.success(), "sh -n: {}", describe(&out));
}

/// Sources the init script under `sh` with procd's helpers (and `mkdir`) stubbed out to record
/// their arguments, one call a line, runs `after` (more stubs or settings), then calls `fns` in
/// order.
fn run_init(fns: &str, after: &str) -> String {
    let stub = r#"
        rec() { printf '%s' "$1" >> "$LOG"; shift; for a in "$@"; do printf ' [%s]' "$a" >> "$LOG"; done; echo >> "$LOG"; }
        procd_open_instance() { rec open_instance "$@"; }
        procd_set_param() { rec set_param "$@"; }
        procd_close_instance() { rec close_instance "$@"; }
        procd_add_reload_trigger() { rec reload_trigger "$@"; }
        procd_add_interface_trigger() { rec interface_trigger "$@"; }
        procd_send_signal() { rec send_signal "$@"; }
        mkdir() { rec mkdir "$@"; }
        . "$INIT"
        eval "$AFTER"
        for f in $FNS; do "$f"; done
    "#;
    // One directory per call: tests run in parallel threads of one process.
    let dir = std::env::temp_dir().join(format!(
        "lbfo-openwrt-{}-{}",
        std::process::id(),
        fns.replace(' ', "-")
    ));
    fs::create_dir_all(&dir).unwrap();
    let log = dir.join("calls");
    let out = Command::new("sh")
        .arg("-c")
        .arg(stub)
        .env("LOG", &log)
        .env("INIT", pkg().join("files/lbfo.init"))
        .env("FNS", fns)
        .env("AFTER", after)
        .output()
        .unwrap();
    let calls = fs::read_to_string(&log).unwrap_or_default();
    fs::remove_dir_all(&dir).unwrap();
    assert!(out.status.success(), "init script: {}", describe(&out));
    calls
}

#[test]
fn init_script_starts_the_agent_in_the_foreground_with_respawn() {
    let calls = run_init("start_service", "keygen_once() { rec keygen_once; }");
    assert_eq!(
        calls,
        "mkdir [-p] [/tmp/hosts] [/var/run/lbfo]\n\
         keygen_once\n\
         open_instance\n\
         set_param [command] [/usr/sbin/lbfo-agentd] [-c] [/etc/lbfo.conf]\n\
         set_param [respawn] [3600] [5] [5]\n\
         set_param [stdout] [1]\n\
         set_param [stderr] [1]\n\
         close_instance\n"
    );
}

#[test]
fn init_script_makes_the_cluster_key_once_with_the_real_agent() {
    let dir = std::env::temp_dir().join(format!("lbfo-openwrt-key-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let key = dir.join("lbfo.key");
    let after = format!(
        "KEY={}; PROG={}",
        key.display(),
        artefacts().agent.display()
    );
    run_init("keygen_once", &after);
    let first = fs::read(&key).unwrap();
    let mode = fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    run_init("keygen_once", &after);
    assert_eq!(fs::read(&key).unwrap(), first, "an existing key is kept");
    fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn init_script_reloads_with_sighup_on_its_triggers() {
    let calls = run_init("service_triggers reload_service", "");
    assert_eq!(
        calls,
        "reload_trigger [lbfo]\n\
         interface_trigger [interface.*.up] [lan] [/etc/init.d/lbfo] [restart]\n\
         send_signal [lbfo] [*] [HUP]\n"
    );
    let init = fs::read_to_string(pkg().join("files/lbfo.init")).unwrap();
    assert!(init.starts_with("#!/bin/sh /etc/rc.common\n"));
    assert!(init.contains("\nUSE_PROCD=1\n"));
}

#[test]
fn default_config_parses_with_the_real_agent() {
    let conf = pkg().join("files/lbfo.conf");
    let out = Command::new(artefacts().agent)
        .args(["check", "-c"])
        .arg(&conf)
        .output()
        .unwrap();
    assert!(out.status.success(), "check: {}", describe(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("{}: ok\n", conf.display())
    );
    // The cluster is on: the LAN interface, a group, the key the init script makes.
    for line in [
        "iface br-lan\n",
        "group 239.255.76.66:7331\n",
        "key /etc/lbfo.key\n",
    ] {
        assert!(fs::read_to_string(&conf).unwrap().contains(line), "{line}");
    }
    // Its examples parse too, once uncommented.
    let text = fs::read_to_string(&conf).unwrap();
    let examples: String = text
        .lines()
        .filter_map(|l| l.strip_prefix("# "))
        .filter(|l| l.starts_with("add ") || l.starts_with("policy "))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(examples.lines().count() >= 6, "{examples}");
    let dir = std::env::temp_dir().join(format!("lbfo-openwrt-conf-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let full = dir.join("lbfo.conf");
    fs::write(&full, format!("{text}{examples}")).unwrap();
    let out = Command::new(artefacts().agent)
        .args(["check", "-c"])
        .arg(&full)
        .output()
        .unwrap();
    fs::remove_dir_all(&dir).unwrap();
    assert!(out.status.success(), "examples: {}", describe(&out));
}

#[test]
fn check_reports_a_bad_config_with_line_and_column() {
    let dir = std::env::temp_dir().join(format!("lbfo-openwrt-bad-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.conf");
    fs::write(&bad, "hosts-file /tmp/hosts/lbfo\nhosts-file tmp/x\n").unwrap();
    let out = Command::new(artefacts().agent)
        .args(["check", "-c"])
        .arg(&bad)
        .output()
        .unwrap();
    fs::remove_dir_all(&dir).unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", describe(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!("{}:2:1: `hosts-file` given twice\n", bad.display())
    );
}

#[test]
fn package_makefile_follows_the_feed_conventions() {
    let mk = fs::read_to_string(pkg().join("Makefile")).unwrap();
    for needle in [
        "include $(TOPDIR)/rules.mk",
        "PKG_BUILD_DEPENDS:=rust/host",
        "rust/rust-package.mk",
        "DEPENDS:=$(RUST_ARCH_DEPENDS)",
        "MAKE_PATH:=agentd",
        "define Package/lbfo/conffiles\n/etc/lbfo.conf\n/etc/lbfo.key\nendef",
        "$(INSTALL_BIN) ./files/lbfo.init $(1)/etc/init.d/lbfo",
        "$(INSTALL_CONF) ./files/lbfo.conf $(1)/etc/lbfo.conf",
        "$(eval $(call RustBinPackage,lbfo))",
        "$(eval $(call BuildPackage,lbfo))",
    ] {
        assert!(mk.contains(needle), "Makefile lacks {needle:?}");
    }
    // Recipe lines start with a tab, as make requires.
    for l in mk.lines().filter(|l| l.contains("$(INSTALL_")) {
        assert!(l.starts_with('\t'), "not a tab: {l:?}");
    }
}
