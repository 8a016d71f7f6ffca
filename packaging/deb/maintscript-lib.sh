# Shared by postinst and postrm (scripts/deb.sh inlines this file and nsswitch.awk into them).

# The hosts: line editor, packaging/deb/nsswitch.awk.
LBFO_NSSWITCH_AWK=$(cat <<'LBFO_AWK'
#NSSWITCH_AWK#
LBFO_AWK
)

# lbfo_nsswitch add|remove: edits /etc/nsswitch.conf in place of a copy (mode and owner kept),
# replaces it only when something changed, and never fails the package operation: a problem is
# reported with what the admin should do by hand. Returns 0 if the file changed, 1 if not.
lbfo_nsswitch() {
    f=/etc/nsswitch.conf
    if [ ! -e "$f" ]; then
        echo "lbfo: $f does not exist; nothing to $1 (see nss-lbfo(8))" >&2
        return 1
    fi
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

# Set by postrm remove when it took lbfo off the hosts: line, so that installing the package
# again puts it back; an upgrade never does, so an admin who took lbfo off keeps it off.
LBFO_READD=/var/lib/lbfo/nsswitch-readd
