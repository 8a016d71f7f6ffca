#!/usr/bin/env bash
# Installs what building, testing and the demo need on a fresh Debian 12 machine, and nothing
# that is already there. Safe to run again. Root installs with apt-get; others get a list.
set -euo pipefail

need=()
have() { command -v "$1" >/dev/null 2>&1; }
have unshare || need+=(util-linux)
have ip || need+=(iproute2)
have nm || need+=(binutils)
have cc || need+=(gcc)
have getent || need+=(libc-bin)
have valgrind || need+=(valgrind)
have strace || need+=(strace)
# The Debian package: building it, installing it in the test's throwaway root, its lints.
have dpkg-shlibdeps || need+=(dpkg-dev)
have deb-systemd-helper || need+=(init-system-helpers)
have groff || need+=(groff-base)
have shellcheck || need+=(shellcheck)
have nsenter || need+=(util-linux)
# The dnsmasq export test runs a real dnsmasq (in a private network namespace); so does the
# systemd-resolved test, as resolved's upstream.
have dnsmasq || [[ -x /usr/sbin/dnsmasq ]] || need+=(dnsmasq-base)
# The nscd tests resolve with Python's socket.gethostbyname, as a gethostbyname program would.
have python3 || need+=(python3)
# The nscd, systemd-resolved, NSS-module and apparmor_parser tests download Debian packages with
# `apt-get download` and unpack them with `dpkg-deb -x` (tests/scripts/debian-pkgs.sh): never
# installed, since their maintainer scripts would edit this machine's nsswitch.conf and
# resolv.conf or start daemons.
have flock || need+=(util-linux)

if ((${#need[@]})); then
  if [[ $(id -u) == 0 ]]; then
    echo "setup: installing ${need[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    echo "setup: please install: ${need[*]}" >&2
    exit 1
  fi
fi

if ! have cargo; then
  if [[ -x "$HOME/.cargo/bin/cargo" ]]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    echo "setup: no Rust toolchain: install rustup (https://rustup.rs) and run again" >&2
    exit 1
  fi
fi
if have rustup; then
  rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt >/dev/null 2>&1 || true
fi
