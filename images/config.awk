# Reads the appliance image configuration (a small subset of TOML, see
# appliance.toml.example) and prints it as shell assignments that `eval` can
# take safely:
#
#   cfg_network_mode='dhcp'
#   cfg_appliance_devices='/dev/sdb' '/dev/sdc'      (arrays: a list of quoted words)
#   cfg_appliance_devices_is_array=1
#
# Every value is single-quoted, so nothing in the file is ever executed.
#
# Supported: comments, [section] headers, key = "basic string" (escapes \\ \"
# \t \n), key = 'literal string', integers, true/false, and one-line arrays of
# strings.  Keys must be in the list passed as -v known="section.key ...";
# anything else is an error (a typo must not be silently ignored).
#
# Usage: awk -v known="network.mode ..." -f config.awk FILE
# Exit status 0 on success; on error, one message "LINE: what" on stderr and
# exit status 1.  Works with POSIX awk, mawk and busybox awk.

function fail(msg) {
    printf "%s:%d: %s\n", FILENAME, NR, msg > "/dev/stderr"
    failed = 1
    exit 1
}

function skip_ws() {
    while (pos <= len && (substr(line, pos, 1) == " " || substr(line, pos, 1) == "\t"))
        pos++
}

# Parses the string starting at pos (which is at the opening quote).
function parse_string(    q, out, c, e) {
    q = substr(line, pos, 1)
    pos++
    out = ""
    while (pos <= len) {
        c = substr(line, pos, 1)
        if (c == q) {
            pos++
            return out
        }
        if (q == "\"" && c == "\\") {
            pos++
            e = substr(line, pos, 1)
            if (e == "\\") out = out "\\"
            else if (e == "\"") out = out "\""
            else if (e == "t") out = out "\t"
            else if (e == "n") out = out "\n"
            else fail("unsupported escape \\" e " in string")
            pos++
            continue
        }
        out = out c
        pos++
    }
    fail("unterminated string")
}

function shq(s) {
    gsub(/'/, "'\\''", s)
    return "'" s "'"
}

# After a value: only blanks and an optional comment.
function expect_end() {
    skip_ws()
    if (pos <= len && substr(line, pos, 1) != "#")
        fail("unexpected text after the value: " substr(line, pos))
}

BEGIN {
    n = split(known, k, " ")
    for (i = 1; i <= n; i++) ok[k[i]] = 1
    section = ""
    failed = 0
}

{
    line = $0
    sub(/\r$/, "", line)
    len = length(line)
    pos = 1
    skip_ws()
    if (pos > len || substr(line, pos, 1) == "#") next

    if (substr(line, pos, 1) == "[") {
        rest = substr(line, pos)
        if (rest !~ /^\[[A-Za-z0-9_-]+\][ \t]*(#.*)?$/)
            fail("bad section header: " rest)
        section = substr(rest, 2, index(rest, "]") - 2)
        next
    }

    rest = substr(line, pos)
    if (rest !~ /^[A-Za-z0-9_-]+[ \t]*=/)
        fail("expected 'key = value' or '[section]': " rest)
    eq = index(rest, "=")
    key = substr(rest, 1, eq - 1)
    sub(/[ \t]+$/, "", key)
    full = (section == "" ? key : section "." key)
    if (!(full in ok))
        fail("unknown setting '" full "'")
    if (full in seen)
        fail("'" full "' is set twice")
    seen[full] = 1
    var = "cfg_" full
    gsub(/[.-]/, "_", var)

    pos = pos + eq
    skip_ws()
    c = substr(line, pos, 1)
    if (c == "\"" || c == "'") {
        v = parse_string()
        expect_end()
        print var "=" shq(v)
    } else if (c == "[") {
        pos++
        words = ""
        count = 0
        for (;;) {
            skip_ws()
            c = substr(line, pos, 1)
            if (c == "]") { pos++; break }
            if (c != "\"" && c != "'")
                fail("arrays may only hold strings (one line, e.g. [\"a\", \"b\"])")
            v = parse_string()
            words = words (count ? " " : "") shq(v)
            count++
            skip_ws()
            c = substr(line, pos, 1)
            if (c == ",") { pos++; continue }
            if (c == "]") { pos++; break }
            fail("expected ',' or ']' in array")
        }
        expect_end()
        print var "=" shq(words)
        print var "_is_array=1"
    } else {
        rest = substr(line, pos)
        if (match(rest, /^(true|false|[+-]?[0-9]+)/)) {
            v = substr(rest, 1, RLENGTH)
            pos = pos + RLENGTH
            expect_end()
            sub(/^\+/, "", v)
            print var "=" shq(v)
        } else {
            fail("unsupported value (use \"text\", a number, true/false or [\"a\", \"b\"]): " rest)
        }
    }
}

END {
    if (failed) exit 1
}
