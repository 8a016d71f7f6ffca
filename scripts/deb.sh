#!/usr/bin/env bash
# Builds the Debian package from the release build: TARGET/debian/lbfo_VERSION_ARCH.deb
# (TARGET is $CARGO_TARGET_DIR or ./target), with plain dpkg-deb, no debhelper.
#
#   bash scripts/deb.sh              builds the release artefacts first
#   bash scripts/deb.sh --no-build   packages what TARGET/release holds (scripts/test.sh)
#
# Contents: /usr/sbin/lbfo-agentd; the NSS module as the multiarch
# /usr/lib/<triplet>/libnss_lbfo.so.2; /etc/lbfo.conf and the AppArmor snippet
# /etc/apparmor.d/abstractions/nameservice.d/lbfo (conffiles); the systemd unit; the man
# pages; docs and examples; contrib scripts in /usr/share/lbfo/contrib; maintainer scripts that
# edit the hosts: line of /etc/nsswitch.conf (packaging/deb/nsswitch.awk, inlined) and enable
# the unit. Prints the package's path last.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v dpkg-deb >/dev/null || need+=(dpkg)
command -v dpkg-architecture >/dev/null || need+=(dpkg-dev)
command -v dpkg-shlibdeps >/dev/null || need+=(dpkg-dev)
command -v gzip >/dev/null || need+=(gzip)
if ((${#need[@]})); then
  if [[ $(id -u) == 0 ]]; then
    echo "deb: installing ${need[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  else
    echo "deb: please install: ${need[*]}" >&2
    exit 1
  fi
fi

target=${CARGO_TARGET_DIR:-target}
[[ $target == /* ]] || target=$PWD/$target
if [[ ${1:-} != --no-build ]]; then
  [[ -d "$HOME/.cargo/bin" ]] && export PATH="$HOME/.cargo/bin:$PATH"
  cargo build --release --workspace --locked
fi
rel=$target/release
for f in "$rel/lbfo-agentd" "$rel/libnss_lbfo.so"; do
  [[ -f $f ]] || { echo "deb: $f is missing: run cargo build --release" >&2; exit 1; }
done

version=$(awk '/^\[workspace.package\]/{p=1; next} /^\[/{p=0} p && $1 == "version" {gsub(/"/, "", $3); print $3}' Cargo.toml)
arch=$(dpkg-architecture -qDEB_HOST_ARCH)
multiarch=$(dpkg-architecture -qDEB_HOST_MULTIARCH)
out=$target/debian
root=$out/lbfo_${version}_$arch
rm -rf "$root"
mkdir -p "$root/DEBIAN"

install -D -m 0755 "$rel/lbfo-agentd" "$root/usr/sbin/lbfo-agentd"
install -D -m 0644 "$rel/libnss_lbfo.so" "$root/usr/lib/$multiarch/libnss_lbfo.so.2"
install -D -m 0644 packaging/deb/lbfo.conf "$root/etc/lbfo.conf"
install -D -m 0644 packaging/systemd/lbfo-agentd.service "$root/lib/systemd/system/lbfo-agentd.service"
# What a lookup needs under AppArmor profiles that include abstractions/nameservice (AppArmor 3+).
install -D -m 0644 packaging/apparmor/lbfo "$root/etc/apparmor.d/abstractions/nameservice.d/lbfo"
for page in man/*.[0-9]; do
  sec=${page##*.}
  install -D -m 0644 "$page" "$root/usr/share/man/man$sec/${page##*/}"
  gzip -9n "$root/usr/share/man/man$sec/${page##*/}"
done
doc=$root/usr/share/doc/lbfo
install -D -m 0644 packaging/deb/copyright "$doc/copyright"
install -D -m 0644 README.md "$doc/README.md"
install -D -m 0644 CHANGELOG.md "$doc/CHANGELOG.md"
gzip -9n "$doc/CHANGELOG.md"
# A native package's changelog.gz is in Debian's format; the real history is CHANGELOG.md.
when=$(git log -1 --format=%ct 2>/dev/null || date +%s)
cat >"$doc/changelog" <<CHANGES
lbfo ($version) unstable; urgency=medium

  * Built from the lbfo source tree; see /usr/share/doc/lbfo/CHANGELOG.md.gz.

 -- lbfo developers <lbfo@example.invalid>  $(date -u -R -d "@$when")
CHANGES
gzip -9n "$doc/changelog"
# checkbashisms reads the awk program inlined in postinst and postrm as shell.
install -D -m 0644 packaging/deb/lintian-overrides "$root/usr/share/lintian/overrides/lbfo"
install -D -m 0644 examples/lbfo.conf "$doc/examples/lbfo.conf"
share=$root/usr/share/lbfo/contrib
install -D -m 0644 contrib/README.md "$doc/README.contrib.md"
for f in contrib/*; do
  [[ -f $f && $f != contrib/README.md ]] || continue
  if [[ -x $f ]]; then mode=0755; else mode=0644; fi
  install -D -m "$mode" "$f" "$share/${f##*/}"
done
install -D -m 0644 -t "$share/examples" contrib/examples/*

# The maintainer scripts: the shared library and the hosts: line editor inlined, so postrm
# works after the package's files are gone.
shl=$(mktemp -d)
trap 'rm -rf "$shl"' EXIT
sed -e '/^#NSSWITCH_AWK#$/{r packaging/deb/nsswitch.awk' -e 'd}' packaging/deb/maintscript-lib.sh >"$shl/lib"
for s in postinst prerm postrm; do
  sed -e "/^#MAINTSCRIPT_LIB#\$/{r $shl/lib" -e 'd}' "packaging/deb/$s" >"$root/DEBIAN/$s"
  chmod 0755 "$root/DEBIAN/$s"
done
printf '%s\n' /etc/lbfo.conf /etc/apparmor.d/abstractions/nameservice.d/lbfo >"$root/DEBIAN/conffiles"
# A shared library in the linker's path: refresh ld.so.cache.
echo "activate-noawait ldconfig" >"$root/DEBIAN/triggers"

# Library dependencies as dpkg-shlibdeps computes them (it wants a debian/control to read).
mkdir "$shl/debian"
printf 'Source: lbfo\n\nPackage: lbfo\nArchitecture: any\n' >"$shl/debian/control"
depends=$(cd "$shl" && dpkg-shlibdeps -O "$root/usr/sbin/lbfo-agentd" \
  "$root/usr/lib/$multiarch/libnss_lbfo.so.2" 2>/dev/null | sed -n 's/^shlibs:Depends=//p')
[[ -n $depends ]] || { echo "deb: dpkg-shlibdeps found no dependencies" >&2; exit 1; }

size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@SIZE@/$size/" \
  -e "s/@DEPENDS@/$depends/" packaging/deb/control.in >"$root/DEBIAN/control"
(cd "$root" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | LC_ALL=C sort -z |
  xargs -0 md5sum) >"$root/DEBIAN/md5sums"

deb=$out/lbfo_${version}_$arch.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
echo "$deb"
