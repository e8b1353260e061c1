# Shared by /init, /etc/odt/udhcpc-event and /etc/odt/power-button (busybox sh).
#
# Logging goes through the kernel log (/dev/kmsg, level 4; the image boots with
# loglevel=5 printk.devkmsg=on), so every line reaches every console - the
# screen and the serial port - with the kernel's timestamp, and is kept in
# the kernel's ring buffer.  Writing to /dev/kmsg never waits for a console:
# a screen stopped with Scroll Lock or Ctrl-S cannot stall init or the
# firmware, as a blocking write to /dev/tty0 would.

log() {
    printf '<4>odt-init: %s\n' "$*" >/dev/kmsg 2>/dev/null \
        || printf 'odt-init: %s\n' "$*" >/dev/console 2>/dev/null
    return 0
}

# Copies lines from stdin into the kernel log, prefixed "odt-appliance: ".
# Lines are cut at 900 bytes (the kernel refuses records over ~1000).
log_relay() {
    local line
    exec 4>/dev/kmsg
    while IFS= read -r line || [ -n "$line" ]; do
        printf '<4>odt-appliance: %s\n' "${line:0:900}" >&4
    done
}

# Single-quotes a word for eval.
shq() {
    printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"
}

# Logs how a customer reaches the appliance at address $1 (ports from
# /run/odt/ports.env, written by /init once the configuration is known).
odt_reach_hint() {
    local NFS_PORT CONTROL_PORT
    [ -r /run/odt/ports.env ] || return 0
    . /run/odt/ports.env
    log "customers: mount $1:/ over NFSv3 (port $NFS_PORT, mountport $NFS_PORT, tcp, nolock)"
    if [ -n "$CONTROL_PORT" ]; then
        log "customers: odt unlock --appliance $1:$CONTROL_PORT"
        log "customers: or open https://$1:$CONTROL_PORT/ (compare the certificate fingerprint with the unlock sheet)"
    fi
    return 0
}
