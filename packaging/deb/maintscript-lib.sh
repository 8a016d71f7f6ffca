# Shared by postinst and postrm (scripts/deb.sh inlines this file and nsswitch.awk into them).

# The hosts: line editor, packaging/deb/nsswitch.awk.
LBFO_NSSWITCH_AWK=$(cat <<'LBFO_AWK'
#NSSWITCH_AWK#
LBFO_AWK
)

# The file to edit for /etc/nsswitch.conf: the file itself, or where it points when some image
# made it a symlink (the link stays a link). Empty, with the reason on stderr, when there is none.
lbfo_nsswitch_file() {
    f=/etc/nsswitch.conf
    if [ -L "$f" ]; then
        t=$(readlink -f "$f" 2>/dev/null) || t=
        if [ -z "$t" ] || [ ! -f "$t" ]; then
            echo "lbfo: $f is a symlink to no regular file; nothing to $1 (see nss-lbfo(8))" >&2
            return 0
        fi
        f=$t
    elif [ ! -e "$f" ]; then
        echo "lbfo: $f does not exist; nothing to $1 (see nss-lbfo(8))" >&2
        return 0
    fi
    echo "$f"
}

# lbfo_nsswitch add|remove: edits /etc/nsswitch.conf (or the file its symlink points to) in place
# of a copy (mode and owner kept), replaces it only when something changed, and never fails the
# package operation: a problem is reported with what the admin should do by hand. Returns 0 if
# the file changed, 1 if not.
lbfo_nsswitch() {
    f=$(lbfo_nsswitch_file "$1")
    [ -n "$f" ] || return 1
    if ! command -v awk >/dev/null 2>&1; then
        echo "lbfo: no awk; $1 lbfo on the hosts: line of $f by hand (see nss-lbfo(8))" >&2
        return 1
    fi
    new="$f.lbfo-new"
    if ! cp -p "$f" "$new" || ! awk -v action="$1" "$LBFO_NSSWITCH_AWK" "$f" >"$new"; then
        rm -f "$new"
        echo "lbfo: could not edit $f; $1 lbfo on its hosts: line by hand (see nss-lbfo(8))" >&2
        return 1
    fi
    if cmp -s "$f" "$new"; then
        rm -f "$new"
        return 1
    fi
    # A bind-mounted file (containers) cannot be renamed over: rewrite it in place instead.
    if ! mv -f "$new" "$f" 2>/dev/null; then
        cat "$new" >"$f"
        rm -f "$new"
    fi
    echo "lbfo: $1: $(grep -m1 '^[[:blank:]]*hosts[[:blank:]]*:' "$f" || echo "no hosts: line") ($f)"
    return 0
}

# (postinst only: postrm inlines this file too, hence the shellcheck directive.)
# shellcheck disable=SC2317
# Warns when the hosts: line names lbfo after a source whose action can end a lookup (an
# admin's line, or one an older lbfo wrote just before `files`): lbfo is never asked there.
lbfo_nsswitch_check() {
    f=$(lbfo_nsswitch_file check 2>/dev/null)
    [ -n "$f" ] && command -v awk >/dev/null 2>&1 || return 0
    ends=$(awk -v action=check "$LBFO_NSSWITCH_AWK" "$f" 2>/dev/null) || return 0
    [ -n "$ends" ] || return 0
    echo "lbfo: warning: on the hosts: line of $f, lbfo comes after" >&2
    printf '%s\n' "$ends" | sed 's/^/lbfo:     /' >&2
    echo "lbfo: which can end a lookup before lbfo is asked (resolve does for every name while" >&2
    echo "lbfo: systemd-resolved runs): move lbfo first on the line, e.g. hosts: lbfo files dns" >&2
}

# (postinst only, as above.)
# shellcheck disable=SC2317
# Notes a name service cache daemon that keeps lbfo's answers, and so keeps serving the backend a
# lookup got after lbfo has moved on. Only where it still happens, with /etc/nscd.conf's hosts
# cache on (the last `enable-cache hosts` line wins, as both daemons read it):
# - unscd (Debian's /usr/sbin/nscd too; its executable names the `worker_nscd` processes it
#   re-executes itself as) caches every answer: say what to change in its conffile, which is
#   not ours to edit;
# - glibc's nscd keeps none of lbfo's answers (the module lists the address twice in every
#   hostent answer it gives nscd), but a running nscd keeps the module it loaded, and one loaded
#   before this upgrade is marked deleted in its memory map: say to restart it.
lbfo_nscd_note() {
    conf=/etc/nscd.conf
    [ -x /usr/sbin/nscd ] && [ -f "$conf" ] || return 0
    on=$(awk '{ sub(/#.*/, "") }
        $1 == "enable-cache" && $2 == "hosts" { v = $3 }
        END { print (v == "yes") ? "yes" : "no" }' "$conf" 2>/dev/null) || return 0
    [ "$on" = yes ] || return 0
    if grep -q worker_nscd /usr/sbin/nscd 2>/dev/null; then
        cat >&2 <<'LBFO_UNSCD'
lbfo: note: unscd is installed with its hosts cache on (/etc/nscd.conf: enable-cache hosts
lbfo:   yes). unscd keeps every answer, so the backend a program got (through getaddrinfo()
lbfo:   or gethostbyname()) keeps being served after lbfo has moved on, even after `down`:
lbfo:   balancing and failover stop. Set `enable-cache hosts no` in /etc/nscd.conf and restart
lbfo:   unscd (passwd and group caching can stay on). See nss-lbfo(8), NOTES.
LBFO_UNSCD
        return 0
    fi
    for d in /proc/[0-9]*; do
        [ "$(cat "$d/comm" 2>/dev/null)" = nscd ] || continue
        grep -q '/libnss_lbfo\.so\.2 (deleted)$' "$d/maps" 2>/dev/null || continue
        echo "lbfo: note: nscd (pid ${d#/proc/}) still runs the lbfo module it loaded before this" >&2
        echo "lbfo:   upgrade and may keep answers: restart nscd. See nss-lbfo(8), NOTES." >&2
    done
}

# Set by postrm remove when it took lbfo off the hosts: line, so that installing the package
# again puts it back; an upgrade never does, so an admin who took lbfo off keeps it off.
LBFO_READD=/var/lib/lbfo/nsswitch-readd
