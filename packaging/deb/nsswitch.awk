# nsswitch.awk: the one place that edits the hosts: line of /etc/nsswitch.conf for lbfo.
#
#   awk -v action=add    -f nsswitch.awk /etc/nsswitch.conf > new
#   awk -v action=remove -f nsswitch.awk /etc/nsswitch.conf > new
#   awk -v action=check  -f nsswitch.awk /etc/nsswitch.conf      (prints, changes nothing)
#
# The rule: lbfo goes FIRST on the hosts: line. It answers only the names in its table and a miss
# costs next to nothing, so going first takes no name from any other source; and every source
# asked before it can end the lookup before lbfo is asked: `resolve [!UNAVAIL=return]` whenever
# systemd-resolved runs, `mdns4_minimal [NOTFOUND=return]` for .local names, an authoritative
# `sss` or `ldap`, and even `files` when /etc/hosts names a service too.
#
# add:    put `lbfo` first on the first active hosts: line. A line that already names `lbfo`
#         anywhere is the admin's: left alone. Without any hosts: line, append one that keeps
#         glibc's built-in order after lbfo, marked so that `remove` can take it away again.
# remove: take `lbfo`, with the [ACTION] groups that follow it, off every hosts: line; drop the
#         line `add` appended, if it is still as it was written.
# check:  for the first active hosts: line that names lbfo, print each source before it that is
#         followed by an action that returns on anything but SUCCESS, one a line as
#         `SOURCE [ACTION...]`: those can end a lookup before lbfo is asked (postinst warns).
# Whitespace, comments and every other line are kept byte for byte (a missing final newline is
# added), so add then remove gives back the original file. Text after `#` is a comment (glibc
# ignores it); words inside [...] are actions, not services. Plain POSIX awk (mawk, busybox):
# the maintainer scripts inline this file.

function blank(c) { return c == " " || c == "\t" }

# The 1-based position in s of the service word w outside [...], or 0.
function find(s, w,    i, n, c, depth, after) {
    n = length(s)
    depth = 0
    for (i = 1; i <= n; i++) {
        c = substr(s, i, 1)
        if (c == "[") { depth++; continue }
        if (c == "]") { if (depth > 0) depth--; continue }
        if (depth > 0 || blank(c)) continue
        if (i > 1 && !blank(substr(s, i - 1, 1)) && substr(s, i - 1, 1) != "]") continue
        if (substr(s, i, length(w)) != w) continue
        after = substr(s, i + length(w), 1)
        if (after == "" || blank(after) || after == "[") return i
    }
    return 0
}

# s without the service word at i, its [ACTION] groups and the blanks after them (or, when
# nothing follows, the blanks before it).
function cut(s, i, w,    j, n, depth, c, k) {
    n = length(s)
    j = i + length(w)
    for (;;) {
        while (j <= n && blank(substr(s, j, 1))) j++
        if (substr(s, j, 1) != "[") break
        depth = 0
        for (; j <= n; j++) {
            c = substr(s, j, 1)
            if (c == "[") depth++
            if (c == "]" && --depth == 0) { j++; break }
        }
    }
    if (j > n) {
        k = i
        while (k > 1 && blank(substr(s, k - 1, 1))) k--
        return substr(s, 1, k - 1)
    }
    return substr(s, 1, i - 1) substr(s, j)
}

# For `check`: the sources before lbfo in body whose [ACTION] groups can end a lookup on a status
# other than SUCCESS, each with its groups, one a line.
function ending(body,    n, i, c, w, acts, out, depth, grp) {
    n = length(body)
    out = ""
    i = 1
    while (i <= n) {
        c = substr(body, i, 1)
        if (blank(c)) { i++; continue }
        if (c == "[") {
            # An action group: it belongs to the last service word w.
            depth = 0
            grp = ""
            for (; i <= n; i++) {
                c = substr(body, i, 1)
                grp = grp c
                if (c == "[") depth++
                if (c == "]" && --depth == 0) { i++; break }
            }
            acts = acts " " grp
            continue
        }
        if (w != "" && returns(acts)) out = out w acts "\n"
        w = ""
        acts = ""
        while (i <= n && !blank(substr(body, i, 1)) && substr(body, i, 1) != "[") {
            w = w substr(body, i, 1)
            i++
        }
        if (w == "lbfo") return out
    }
    return ""
}

# Whether the [ACTION] groups in acts return on some status other than SUCCESS: any `=return`
# whose status is not SUCCESS, and any negated status (`!X=return` covers SUCCESS's others).
function returns(acts,    g, k, m, item, parts) {
    g = toupper(acts)
    gsub(/[][]/, " ", g)
    # glibc allows blanks around `=`.
    gsub(/[ \t]*=[ \t]*/, "=", g)
    m = split(g, parts, /[ \t]+/)
    for (k = 1; k <= m; k++) {
        item = parts[k]
        if (item !~ /=RETURN$/) continue
        if (item ~ /^!/ || item !~ /^SUCCESS=/) return 1
    }
    return 0
}

BEGIN {
    if (action != "add" && action != "remove" && action != "check") {
        print "nsswitch.awk: action must be add, remove or check" > "/dev/stderr"
        exit 2
    }
    appended = "hosts: lbfo dns [!UNAVAIL=return] files # added by lbfo: glibc's default after lbfo"
    done = 0
}

action == "check" {
    if (done || !match($0, /^[ \t]*hosts[ \t]*:[ \t]*/)) next
    body = substr($0, RLENGTH + 1)
    h = index(body, "#")
    if (h > 0) body = substr(body, 1, h - 1)
    if (!find(body, "lbfo")) next
    done = 1
    printf "%s", ending(body)
    next
}

{
    line = $0
    if (action == "remove" && line == appended) next
    if (!match(line, /^[ \t]*hosts[ \t]*:[ \t]*/) || (action == "add" && done)) {
        print line
        next
    }
    head = substr(line, 1, RLENGTH)
    rest = substr(line, RLENGTH + 1)
    body = rest
    comment = ""
    h = index(rest, "#")
    if (h > 0) {
        body = substr(rest, 1, h - 1)
        comment = substr(rest, h)
    }
    if (action == "add") {
        done = 1
        if (!find(body, "lbfo")) {
            body = "lbfo " body
            # "hosts:" followed by nothing: no blank to leave before a comment.
            if (body == "lbfo " && comment == "") body = "lbfo"
        }
    } else {
        while ((at = find(body, "lbfo")) > 0) body = cut(body, at, "lbfo")
    }
    print head body comment
}

END {
    if (action == "add" && !done) print appended
}
