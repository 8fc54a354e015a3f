# Shared helpers for the guest scripts (sourced, bash). Each step says what it does on stdout, so
# that the output kept on failure reads as a log. Everything runs as root inside the VM.
set -euo pipefail

target_name=iqn.2026-11.dev.ferry:vm
ferry_directory=/tmp/ferry

step() { echo "== $(date +%T) $*"; }
fail() {
    echo "FAIL: $*" >&2
    exit 1
}

# Waits up to $2 seconds (default 30) for the command $1 to succeed.
wait_for() {
    local deadline=$((SECONDS + ${2:-30}))
    while ! eval "$1" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || fail "timed out after ${2:-30} s waiting for: $1"
        sleep 0.1
    done
}

# Loads scsi_debug (with sg and sd_mod) with the options given, and sets scsi_debug_sg and
# scsi_debug_disk to its /dev/sgN and /dev/sdX once the disk's size is known.
load_scsi_debug() {
    step "modprobe scsi_debug $*"
    modprobe sg
    modprobe sd_mod
    modprobe scsi_debug "$@"
    local device
    wait_for 'ls -d /sys/bus/pseudo/drivers/scsi_debug/adapter0/host*/target*/*:*:*:0/scsi_generic/sg*'
    device=$(ls -d /sys/bus/pseudo/drivers/scsi_debug/adapter0/host*/target*/*:*:*:0)
    scsi_debug_sg=/dev/$(ls "$device/scsi_generic")
    wait_for "ls $device/block/sd*"
    scsi_debug_disk=/dev/$(ls "$device/block")
    wait_for "[ \$(cat /sys/class/block/${scsi_debug_disk#/dev/}/size) -gt 0 ]"
    echo "scsi_debug: $scsi_debug_sg and $scsi_debug_disk"
}

# Starts ferryd ($FERRYD) with one target $target_name on 127.0.0.1:3260 and LUN 0 as given:
#   start_ferryd emulated            a 64 MiB sparse file in tmpfs
#   start_ferryd sg /dev/sgN         passthrough through the sg backend
# $FERRY_LUN_OPTIONS, if set, adds its lines (TOML keys) to the LUN's table.
start_ferryd() {
    [ -n "${FERRYD:-}" ] || fail "FERRYD is not set to ferryd's path"
    [ -x "$FERRYD" ] || fail "$FERRYD is not an executable in the guest (was it being rebuilt?)"
    mkdir -p "$ferry_directory/state"
    local lun
    case "$1" in
    emulated)
        lun="path = \"$ferry_directory/lun0.img\"
size = \"64M\"
block_size = 512"
        ;;
    sg)
        lun="path = \"$2\"
backend = \"sg\""
        ;;
    *) fail "start_ferryd: unknown backend $1" ;;
    esac
    cat >"$ferry_directory/ferry.toml" <<CONFIG
state_directory = "$ferry_directory/state"

[[portal]]
address = "127.0.0.1:3260"
portal_group_tag = 1

[[target]]
name = "$target_name"

[[target.lun]]
lun = 0
$lun
${FERRY_LUN_OPTIONS:-}
CONFIG
    step "start ferryd ($1 ${2:-})"
    cat "$ferry_directory/ferry.toml"
    "$FERRYD" --config "$ferry_directory/ferry.toml" --log-level "${FERRYD_LOG_LEVEL:-info}" \
        >>"$FERRY_RESULTS/ferryd.log" 2>&1 &
    ferryd_pid=$!
    local tries=600
    until (exec 3<>/dev/tcp/127.0.0.1/3260) 2>/dev/null; do
        kill -0 "$ferryd_pid" 2>/dev/null || { tail -50 "$FERRY_RESULTS/ferryd.log"; fail "ferryd exited"; }
        tries=$((tries - 1))
        [ "$tries" -gt 0 ] || fail "ferryd does not listen on 127.0.0.1:3260 after 60 s"
        sleep 0.1
    done
    echo "ferryd $ferryd_pid listens on 127.0.0.1:3260"
}

# Stops ferryd with SIGTERM and fails unless it exits 0 within 20 s.
stop_ferryd() {
    step "stop ferryd"
    kill -TERM "$ferryd_pid"
    local tries=200
    while kill -0 "$ferryd_pid" 2>/dev/null; do
        tries=$((tries - 1))
        [ "$tries" -gt 0 ] || { kill -KILL "$ferryd_pid"; fail "ferryd did not stop within 20 s of SIGTERM"; }
        sleep 0.1
    done
    wait "$ferryd_pid" || fail "ferryd exited with status $? on SIGTERM"
}

# Prepares open-iscsi without systemd: our initiator name, iscsid started directly, empty node
# database, iscsi_tcp loaded; then starts iscsid.
start_iscsid() {
    step "start iscsid"
    modprobe iscsi_tcp
    modprobe sd_mod
    mkdir -p /run/lock/iscsi /etc/iscsi
    rm -rf /etc/iscsi/nodes /etc/iscsi/send_targets /etc/iscsi/ifaces /var/lib/iscsi
    mkdir -p /etc/iscsi/nodes /etc/iscsi/send_targets /etc/iscsi/ifaces
    echo "InitiatorName=iqn.2026-11.dev.ferry:vm-initiator" >/etc/iscsi/initiatorname.iscsi
    sed -i -e 's|^iscsid.startup = .*|iscsid.startup = /usr/sbin/iscsid|' \
        -e 's|^node.session.timeo.replacement_timeout = .*|node.session.timeo.replacement_timeout = 15|' \
        /etc/iscsi/iscsid.conf
    iscsid
    wait_for '{ iscsiadm -m session 2>&1 || true; } | grep -q "No active sessions"'
}

# Prints /dev/sdX of LUN 0 of every iSCSI session, in session order.
iscsi_disks() {
    local block
    for block in /sys/class/iscsi_session/session*/device/target*/*:*:*:0/block/sd*; do
        [ -e "$block" ] && echo "/dev/$(basename "$block")"
    done
    true
}

# Logs the node in (through the ifaces given, default "default") and sets iscsi_disk to the new
# disk of the first session once its size is known.
iscsi_login() {
    step "iscsiadm login"
    iscsiadm -m node -T "$target_name" -p 127.0.0.1:3260 -l
    wait_for 'ls -d /sys/class/iscsi_session/session*/device/target*/*:*:*:0/block/sd*'
    iscsi_disk=$(iscsi_disks | head -1)
    wait_for "[ \$(cat /sys/class/block/${iscsi_disk#/dev/}/size) -gt 0 ]"
    echo "iSCSI disk: $iscsi_disk ($(cat /sys/class/block/${iscsi_disk#/dev/}/size) sectors)"
}

iscsi_logout() {
    step "iscsiadm logout"
    iscsiadm -m node -T "$target_name" -p 127.0.0.1:3260 -u
    wait_for '! ls /sys/class/iscsi_session/session* '
}
