# ferryd as an installed systemd service, with systemd as PID 1 (VirtualMachine.run(init: .systemd)).
# Installs $FERRYD as /usr/local/bin/ferryd with systemd/ferryd.service and the ferry user from
# systemd/ferry.sysusers.conf (both in $FERRY_RESULTS), one emulated LUN on a file in /var/lib/ferry,
# and then, with open-iscsi logged in:
#   - systemctl start returns once ferryd said READY=1: the portal answers at once; ferryd runs as
#     ferry with exactly CAP_NET_BIND_SERVICE, CAP_SYS_RAWIO and CAP_SYS_ADMIN (ambient);
#   - systemctl reload with a LUN added: the same session (same SID, TSIH and connection) goes on
#     doing I/O, and LUN 1 appears after a rescan;
#   - systemctl stop: ferryd asks the initiator to log out (Async Message), the initiator logs out,
#     ferryd exits 0 well inside TimeoutStopSec, and the unit is inactive with Result=success.
source "$FERRY_GUEST/lib.sh"

journal() { journalctl --no-pager -o short-monotonic "$@"; }
# Whether the journal of ferryd.service has a line matching $1 (grep -q on a file: a pipe into
# grep -q would fail under pipefail when journalctl gets SIGPIPE).
ferryd_journal_has() {
    journal -u ferryd >/tmp/ferryd.journal
    grep -q -- "$1" /tmp/ferryd.journal
}
# The iSCSI session and its connection, as the initiator sees them (SID and CID).
session_identity() {
    local session
    session=$(basename /sys/class/iscsi_session/session*)
    echo "$session $(basename /sys/class/iscsi_session/"$session"/device/connection*)"
}
# How many normal sessions ferryd has logged in.
ferryd_logins() {
    journal -u ferryd >/tmp/ferryd.journal
    grep -c "sessionType=normal.*logged in" /tmp/ferryd.journal || true
}
# The disk of LUN $1 of the (only) session, once its size is known.
lun_disk() {
    wait_for "ls -d /sys/class/iscsi_session/session*/device/target*/*:*:*:$1/block/sd*" "${2:-30}"
    local disk
    disk=$(basename /sys/class/iscsi_session/session*/device/target*/*:*:*:"$1"/block/sd*)
    wait_for "[ \$(cat /sys/class/block/$disk/size) -gt 0 ]"
    echo "/dev/$disk"
}
milliseconds_since() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }

step "systemd is PID 1"
[ "$(cat /proc/1/comm)" = systemd ] || fail "PID 1 is $(cat /proc/1/comm), not systemd"
systemctl --version | head -1
# (systemd-analyze blame takes minutes under TCG.)
systemd-analyze time
systemctl --failed --no-legend --no-pager

step "only the test bed's units are active (systemd-init.sh masks the rest of the host's)"
# The allow-list, the job itself, and the two mounts that come before systemd (the root and the results share).
allowed=" $(cat /etc/ferry-vm-allowed-units) ferry-vm-job.service -.mount ferry\\x2dresults.mount "
systemctl list-units --no-legend --no-pager --plain --state=active,activating,reloading \
    --type=service,socket,path,timer,mount,automount,swap >/tmp/active-units
strays=$(awk '{print $1}' /tmp/active-units | while read -r unit; do
    case "$allowed" in *" $unit "*) ;; *) echo "$unit" ;; esac
done)
[ -z "$strays" ] || fail "units outside the test bed's allow-list are active: $(echo $strays)"

step "install ferryd, ferryd.service and the ferry user"
{ [ -n "${FERRYD:-}" ] && [ -x "$FERRYD" ]; } || fail "FERRYD is not set to an executable ferryd"
for file in ferryd.service ferry.sysusers.conf; do
    [ -f "$FERRY_RESULTS/$file" ] || fail "$FERRY_RESULTS/$file is missing (the test copies it from systemd/)"
done
install -m 0755 "$FERRYD" /usr/local/bin/ferryd
install -m 0644 "$FERRY_RESULTS/ferry.sysusers.conf" /usr/lib/sysusers.d/ferry.conf
systemd-sysusers
getent passwd ferry || fail "systemd-sysusers did not create the user ferry"
install -d -m 0755 /etc/ferry
write_config() {
    cat >/etc/ferry/ferry.toml <<CONFIG
[[portal]]
address = "127.0.0.1:3260"
portal_group_tag = 1

[[target]]
name = "$target_name"

[[target.lun]]
lun = 0
path = "/var/lib/ferry/lun0.img"
size = "64M"
$1
CONFIG
}
write_config ""
cat /etc/ferry/ferry.toml
install -m 0644 "$FERRY_RESULTS/ferryd.service" /etc/systemd/system/ferryd.service
if [ -n "${FERRYD_LOG_LEVEL:-}" ]; then
    mkdir -p /etc/systemd/system/ferryd.service.d
    printf '[Service]\nExecStart=\nExecStart=/usr/local/bin/ferryd --config /etc/ferry/ferry.toml --log-level %s\n' \
        "$FERRYD_LOG_LEVEL" >/etc/systemd/system/ferryd.service.d/log-level.conf
fi
systemctl daemon-reload

step "systemctl start ferryd"
started=$(date +%s%N)
systemctl start ferryd || { systemctl status ferryd --no-pager || true; journal -u ferryd | tail -40; fail "systemctl start ferryd failed"; }
echo "systemctl start returned after $(milliseconds_since "$started") ms"
# Type=notify: start returns once ferryd said READY=1, which it says when its portal listens.
(exec 3<>/dev/tcp/127.0.0.1/3260) || fail "ferryd.service is $(systemctl is-active ferryd) but 127.0.0.1:3260 does not answer"
[ "$(systemctl is-active ferryd)" = active ] || fail "ferryd.service is $(systemctl is-active ferryd) after start"
systemctl show ferryd -p MainPID -p StatusText -p ExecMainStartTimestampMonotonic -p ActiveEnterTimestampMonotonic
main_start=$(systemctl show ferryd -p ExecMainStartTimestampMonotonic --value)
active_enter=$(systemctl show ferryd -p ActiveEnterTimestampMonotonic --value)
echo "active $(( (active_enter - main_start) / 1000 )) ms after ferryd was executed (READY=1)"
systemctl show ferryd -p StatusText --value | grep -q "^serving 0 session(s), 1 LUN(s) of 1 target(s)" ||
    fail "unexpected status text"

step "ferryd runs as ferry with only its three capabilities"
pid=$(systemctl show ferryd -p MainPID --value)
grep -E '^(Uid|Gid|CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp):' "/proc/$pid/status"
ferry_uid=$(id -u ferry)
ferry_gid=$(id -g ferry)
grep -Eq "^Uid:\s+$ferry_uid\s+$ferry_uid\s+$ferry_uid\s+$ferry_uid$" "/proc/$pid/status" || fail "ferryd does not run as ferry"
grep -Eq "^Gid:\s+$ferry_gid\s+$ferry_gid\s+$ferry_gid\s+$ferry_gid$" "/proc/$pid/status" || fail "ferryd's group is not ferry"
# CAP_NET_BIND_SERVICE (10), CAP_SYS_RAWIO (17), CAP_SYS_ADMIN (21).
capabilities=0000000000220400
capsh --decode="$capabilities"
for set in CapPrm CapEff CapBnd CapAmb; do
    grep -q "^$set:\s*$capabilities$" "/proc/$pid/status" || fail "$set is not $capabilities"
done
grep -q '^NoNewPrivs:\s*1$' "/proc/$pid/status" || fail "NoNewPrivs is not set"
grep -q '^Seccomp:\s*2$' "/proc/$pid/status" || fail "no seccomp filter"
stat -c '%n %U:%G %a' /var/lib/ferry /var/lib/ferry/lun0.img /run/ferry

start_iscsid
step "discovery and login"
iscsiadm -m discovery -t sendtargets -p 127.0.0.1:3260
iscsi_login
iscsiadm -m session
before=$(session_identity)
echo "session: $before"
wait_for 'systemctl show ferryd -p StatusText --value | grep -q "^serving 1 session(s)"' 10
systemctl show ferryd -p StatusText --value

step "write 4 MiB through the session"
head -c 4M /dev/urandom >/tmp/data
dd if=/tmp/data of="$iscsi_disk" bs=1M oflag=direct status=none
cmp <(dd if="$iscsi_disk" bs=1M count=4 iflag=direct status=none) /tmp/data || fail "read back differs"

step "systemctl reload ferryd with LUN 1 added"
write_config '
[[target.lun]]
lun = 1
path = "/var/lib/ferry/lun1.img"
size = "32M"'
started=$(date +%s%N)
systemctl reload ferryd
wait_for '[ "$(systemctl is-active ferryd)" = active ]' 30
echo "systemctl reload returned and the unit is active after $(milliseconds_since "$started") ms"
wait_for 'ferryd_journal_has "reload"' 10
grep -i "reload" /tmp/ferryd.journal
[ "$(systemctl show ferryd -p MainPID --value)" = "$pid" ] || fail "ferryd's main PID changed across the reload"
systemctl show ferryd -p StatusText --value

step "the session survived the reload"
iscsiadm -m session
after=$(session_identity)
echo "session: $after"
[ "$after" = "$before" ] || fail "the session changed across the reload: $before -> $after"
cmp <(dd if="$iscsi_disk" bs=1M count=4 iflag=direct status=none) /tmp/data || fail "read back after the reload differs"
head -c 1M /dev/urandom >/tmp/more
dd if=/tmp/more of="$iscsi_disk" bs=1M seek=4 oflag=direct status=none
cmp <(dd if="$iscsi_disk" bs=1M skip=4 count=1 iflag=direct status=none) /tmp/more || fail "write after the reload differs"
dmesg | grep -i "conn error\|connection.*error\|session recovery" && fail "the connection failed during the reload"

step "rescan: LUN 1 appears"
iscsiadm -m session -R
lun1=$(lun_disk 1)
echo "LUN 1: $lun1 ($(cat /sys/class/block/${lun1#/dev/}/size) sectors)"
[ "$(cat /sys/class/block/${lun1#/dev/}/size)" = 65536 ] || fail "LUN 1 is not 32 MiB"
[ "$(session_identity)" = "$before" ] || fail "the session changed during the rescan"
[ "$(ferryd_logins)" = 1 ] || fail "ferryd saw $(ferryd_logins) logins: the session did not survive"
wait_for 'systemctl show ferryd -p StatusText --value | grep -q "2 LUN(s)"' 10
systemctl show ferryd -p StatusText --value

step "systemctl stop ferryd"
started=$(date +%s%N)
systemctl stop ferryd
stop_milliseconds=$(milliseconds_since "$started")
echo "systemctl stop returned after $stop_milliseconds ms"
systemctl status ferryd --no-pager || true
[ "$(systemctl is-active ferryd)" = inactive ] || fail "ferryd.service is $(systemctl is-active ferryd) after stop"
systemctl show ferryd -p Result -p ExecMainCode -p ExecMainStatus
[ "$(systemctl show ferryd -p Result --value)" = success ] || fail "ferryd.service did not stop with Result=success"
[ "$(systemctl show ferryd -p ExecMainStatus --value)" = 0 ] || fail "ferryd did not exit 0"
# The drain gives initiators 9 s; one that logs out at once makes the stop quick.
[ "$stop_milliseconds" -lt 9000 ] || fail "the stop took $stop_milliseconds ms: the initiator did not log out"

step "ferryd's journal: the drain"
journal -u ferryd | tail -25
ferryd_journal_has "asking initiators to log out" || fail "ferryd did not ask the initiator to log out"
ferryd_journal_has "session closed" || fail "ferryd did not close the session"
ferryd_journal_has "did not log out" && fail "the initiator did not log out in time"
ferryd_journal_has "Stopping ferryd.service" || fail "no stop in the journal"
# A dropped connection logs "connection error"; a logout does not.
sed -n '/Stopping ferryd.service/,$p' /tmp/ferryd.journal >/tmp/ferryd-stop.journal
grep -q "connection error" /tmp/ferryd-stop.journal && fail "the connection broke instead of logging out"

step "the initiator's side: asked to log out, it did (and now tries to log in again)"
journal _COMM=iscsid >/tmp/iscsid.journal
tail -5 /tmp/iscsid.journal
grep -q "Target requests logout" /tmp/iscsid.journal || fail "iscsid did not receive the Async Message"
iscsiadm -m session || true
iscsiadm -m node -T "$target_name" -p 127.0.0.1:3260 -u
step "done"
