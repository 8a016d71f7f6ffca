#!/usr/bin/env bash
# Fetches Debian packages for the tests WITHOUT installing them:
#
#   bash tests/scripts/debian-pkgs.sh DIR PKG...
#
# Each PKG is downloaded with `apt-get download` (the candidate version of this machine's apt
# sources) into DIR/debs and unpacked with `dpkg-deb -x` into DIR/PKG/root, its maintainer scripts
# with `dpkg-deb -e` into DIR/PKG/DEBIAN. Nothing runs, nothing is registered with dpkg, and no
# maintainer script touches this machine: libnss-resolve's and libnss-mdns's would edit
# /etc/nsswitch.conf, systemd-resolved's would replace /etc/resolv.conf, nscd's would start a
# daemon. A package already unpacked is reused (the cache lives under the target directory), and
# concurrent callers queue on a lock. Prints DIR/PKG/root for each PKG, one a line.
set -euo pipefail
dir=$1
shift
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
mkdir -p "$dir/debs"
exec 9>"$dir/.lock"
flock 9

missing=()
for p in "$@"; do
  [[ -e $dir/$p/.done ]] || missing+=("$p")
done
if ((${#missing[@]})); then
  cd "$dir/debs"
  for p in "${missing[@]}"; do rm -f "./${p}_"*.deb; done
  if ! apt-get download "${missing[@]}" >/dev/null 2>"$dir/apt.log"; then
    # A fresh machine may have no package lists yet.
    if [[ $(id -u) == 0 ]]; then
      apt-get update -qq >/dev/null
    fi
    apt-get download "${missing[@]}" >/dev/null 2>"$dir/apt.log" || {
      cat "$dir/apt.log" >&2
      echo "debian-pkgs: could not download ${missing[*]}" >&2
      exit 1
    }
  fi
  for p in "${missing[@]}"; do
    debs=("$dir/debs/${p}_"*.deb)
    deb=${debs[0]}
    rm -rf "${dir:?}/$p"
    mkdir -p "$dir/$p/root"
    dpkg-deb -x "$deb" "$dir/$p/root"
    dpkg-deb -e "$deb" "$dir/$p/DEBIAN"
    basename "$deb" >"$dir/$p/.done"
  done
fi
for p in "$@"; do
  echo "$dir/$p/root"
done
