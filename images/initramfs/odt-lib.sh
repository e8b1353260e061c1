# Shared by /init, /etc/odt/udhcpc-event and /etc/odt/power-button (busybox sh).
# Logging: every line goes to /dev/console (the last console= on the kernel
# command line, the serial port in the shipped image) and to the other
# active consoles (the screen), prefixed "odt-init[UPTIME]:".

odt_extra_consoles() {
    # /sys/class/tty/console/active lists the consoles, /dev/console last.
    local active c last
    active=$(cat /sys/class/tty/console/active 2>/dev/null)
    last=""
    for c in $active; do last=$c; done
    for c in $active; do
        [ "$c" = "$last" ] || [ ! -c "/dev/$c" ] || printf '/dev/%s\n' "$c"
    done
}

log() {
    local up rest c
    read -r up rest </proc/uptime
    printf 'odt-init[%s]: %s\n' "$up" "$*" >/dev/console
    for c in ${ODT_EXTRA_CONSOLES-$(odt_extra_consoles)}; do
        printf 'odt-init[%s]: %s\n' "$up" "$*" >"$c" 2>/dev/null
    done
    return 0
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
    fi
    return 0
}
