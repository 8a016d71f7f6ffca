# nsswitch.awk: the one place that edits the hosts: line of /etc/nsswitch.conf for lbfo.
#
#   awk -v action=add    -f nsswitch.awk /etc/nsswitch.conf > new
#   awk -v action=remove -f nsswitch.awk /etc/nsswitch.conf > new
#
# add:    put `lbfo` on the first active hosts: line, just before `files`, or first when the line
#         has no `files`. A line that already names `lbfo` anywhere is the admin's: left alone.
#         Without any hosts: line, append one that keeps glibc's built-in order after lbfo,
#         marked so that `remove` can take the whole line away again.
# remove: take `lbfo`, with the [ACTION] groups that follow it, off every hosts: line; drop the
#         line `add` appended, if it is still as it was written.
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

BEGIN {
    if (action != "add" && action != "remove") {
        print "nsswitch.awk: action must be add or remove" > "/dev/stderr"
        exit 2
    }
    appended = "hosts: lbfo dns [!UNAVAIL=return] files # added by lbfo: glibc's default after lbfo"
    done = 0
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
            at = find(body, "files")
            if (at == 0) at = 1
            body = substr(body, 1, at - 1) "lbfo " substr(body, at)
            # "hosts:" followed by nothing: no blank to leave before a comment.
            if (at == 1 && body == "lbfo " && comment == "") body = "lbfo"
        }
    } else {
        while ((at = find(body, "lbfo")) > 0) body = cut(body, at, "lbfo")
    }
    print head body comment
}

END {
    if (action == "add" && !done) print appended
}
