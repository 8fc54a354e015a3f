# Hot-plug of a passthrough disk under systemd-udevd with Ferry's udev rules (docs/udev.md):
# the rules give the ferry group the chosen disk's nodes and /dev/ferry names (udevadm test shows
# them); ferryd serves the disk by its /dev/ferry name to the kernel initiator; the disk is
# deleted with I/O in flight (the I/O ends with an error, no hang; the LUN goes offline; commands
# end with NOT READY 04/03, INQUIRY says peripheral qualifier 1), then scanned back with the same
# WWN (the LUN returns; the first command gets 29/00, the next ones succeed).
# Needs $FERRY_RESULTS/60-ferry.rules and $FERRY_RESULTS/ferryctl.
source "$FERRY_GUEST/lib.sh"

ferryctl=$FERRY_RESULTS/ferryctl
[ -x "$ferryctl" ] || fail "no ferryctl in the results share"
[ -f "$FERRY_RESULTS/60-ferry.rules" ] || fail "no 60-ferry.rules in the results share"

step "udev: Ferry's rules (ferryctl at $ferryctl), group ferry, systemd-udevd"
getent group ferry >/dev/null || groupadd --system ferry
mkdir -p /etc/udev/rules.d /etc/ferry
: >/etc/ferry/disks
sed "s|/usr/local/bin/ferryctl|$ferryctl|g" "$FERRY_RESULTS/60-ferry.rules" >/etc/udev/rules.d/60-ferry.rules
/lib/systemd/systemd-udevd --daemon

# Two scsi_debug disks (one host each): the first is exported, the second is not.
load_scsi_debug dev_size_mb=64
echo 1 >/sys/bus/pseudo/drivers/scsi_debug/add_host
wait_for 'ls -d /sys/bus/pseudo/drivers/scsi_debug/adapter1/host*/target*/*:*:*:0/scsi_generic/sg*'
udevadm settle --timeout=60
host=$(basename "$(ls -d /sys/bus/pseudo/drivers/scsi_debug/adapter0/host*)")
other_sg=/dev/$(ls /sys/bus/pseudo/drivers/scsi_debug/adapter1/host*/target*/*:*:*:0/scsi_generic)
wwid=$(cat "/sys/class/scsi_generic/${scsi_debug_sg#/dev/}/device/wwid")
name=$(udevadm info --query=property --name="$scsi_debug_sg" | sed -n 's/^FERRY_ID=//p')
[ -n "$name" ] || fail "the rules gave $scsi_debug_sg no FERRY_ID: $(udevadm info --query=property --name="$scsi_debug_sg")"
echo "exporting $scsi_debug_sg ($scsi_debug_disk): wwid $wwid, name $name; not exporting $other_sg"
[ ! -e "/dev/ferry/$name" ] || fail "/dev/ferry/$name exists before the disk is chosen"

step "choose the disk: /etc/ferry/disks, udevadm trigger --action=change"
echo "$name" >/etc/ferry/disks
udevadm trigger --action=change --subsystem-match=scsi_generic --subsystem-match=block
udevadm settle --timeout=60
ls -l /dev/ferry/
[ "$(readlink -f "/dev/ferry/$name")" = "$scsi_debug_sg" ] || fail "/dev/ferry/$name does not point to $scsi_debug_sg"
[ "$(readlink -f "/dev/ferry/$name-sd")" = "$scsi_debug_disk" ] || fail "/dev/ferry/$name-sd does not point to $scsi_debug_disk"
for node in "$scsi_debug_sg" "$scsi_debug_disk"; do
    [ "$(stat -c %G:%a "$node")" = "ferry:660" ] || fail "$node is $(stat -c %G:%a "$node"), not ferry:660"
done
[ "$(stat -c %G "$other_sg")" = "disk" ] || fail "$other_sg (not chosen) is group $(stat -c %G "$other_sg"), not disk"
[ "$(ls /dev/ferry | wc -l)" = 2 ] || fail "/dev/ferry has more than the chosen disk's two names"

step "udevadm test $scsi_debug_sg"
udevadm test "/sys/class/scsi_generic/${scsi_debug_sg#/dev/}" >"$FERRY_RESULTS/udevadm-test.log" 2>&1 ||
    fail "udevadm test failed: $(tail -20 "$FERRY_RESULTS/udevadm-test.log")"
grep -E "60-ferry.rules|ferry/|FERRY_" "$FERRY_RESULTS/udevadm-test.log"
gid=$(getent group ferry | cut -d: -f3)
for line in "60-ferry.rules:[0-9]+ GROUP $gid" "60-ferry.rules:[0-9]+ MODE 0660" \
    "60-ferry.rules:[0-9]+ LINK 'ferry/$name'" "60-ferry.rules:[0-9]+ RUN '.*ferryctl device added %k'"; do
    grep -qE "$line" "$FERRY_RESULTS/udevadm-test.log" || fail "udevadm test $scsi_debug_sg: no line like $line"
done
udevadm test "/sys/class/block/${scsi_debug_disk#/dev/}" >"$FERRY_RESULTS/udevadm-test-sd.log" 2>&1 ||
    fail "udevadm test failed: $(tail -20 "$FERRY_RESULTS/udevadm-test-sd.log")"
grep -E "60-ferry.rules:[0-9]+ (GROUP|MODE|LINK)" "$FERRY_RESULTS/udevadm-test-sd.log"
grep -qE "60-ferry.rules:[0-9]+ LINK 'ferry/$name-sd'" "$FERRY_RESULTS/udevadm-test-sd.log" ||
    fail "udevadm test $scsi_debug_disk: no LINK ferry/$name-sd"
grep -q "FERRY_EXPORT=1" "$FERRY_RESULTS/udevadm-test.log" || fail "udevadm test: FERRY_EXPORT is not 1"
udevadm test "/sys/class/scsi_generic/${other_sg#/dev/}" >"$FERRY_RESULTS/udevadm-test-other.log" 2>&1 || true
! grep -q "FERRY_EXPORT=1" "$FERRY_RESULTS/udevadm-test-other.log" || fail "udevadm test: $other_sg is exported"

start_ferryd sg "/dev/ferry/$name"
start_iscsid
step "discovery and login"
iscsiadm -m discovery -t sendtargets -p 127.0.0.1:3260
iscsi_login
udevadm settle --timeout=60
[ "$(ls /dev/ferry | wc -l)" = 2 ] || fail "the iSCSI disk (same WWN) got /dev/ferry names: $(ls -l /dev/ferry)"

luns() { "$ferryctl" luns; }
luns
luns | grep -q " online " || fail "LUN 0 is not online"
dd if="$iscsi_disk" of=/dev/null bs=64k count=16 iflag=direct 2>&1 || fail "reading the iSCSI disk failed"

step "delete the disk with reads in flight (scsi_debug delay 100 ms)"
echo 25 >/sys/bus/pseudo/drivers/scsi_debug/delay
dd if="$iscsi_disk" of=/dev/null bs=64k count=100000 iflag=direct >/tmp/dd.log 2>&1 &
reader=$!
sleep 2
kill -0 "$reader" 2>/dev/null || fail "the reader ended before the disk was deleted: $(cat /tmp/dd.log)"
device=$(readlink -f "/sys/class/scsi_generic/${scsi_debug_sg#/dev/}/device")
hctl=$(basename "$device")
echo 1 >"/sys/class/scsi_device/$hctl/device/delete"
wait_for "! kill -0 $reader" 60
if wait "$reader"; then fail "the reader succeeded although its disk was deleted: $(cat /tmp/dd.log)"; fi
echo "reader ended: $(tail -3 /tmp/dd.log | tr '\n' ' ')"
echo 0 >/sys/bus/pseudo/drivers/scsi_debug/delay
udevadm settle --timeout=60
kill -0 "$ferryd_pid" || fail "ferryd died"
wait_for "luns | grep -q ' offline '" 30
luns
[ ! -e "/dev/ferry/$name" ] || fail "/dev/ferry/$name outlived its disk"

step "commands to the offline LUN"
iscsi_sg=/dev/$(ls "/sys/class/block/${iscsi_disk#/dev/}/device/scsi_generic")
sg_turs -v "$iscsi_sg" >/tmp/tur.log 2>&1 && fail "TEST UNIT READY succeeded on the offline LUN"
cat /tmp/tur.log
grep -qi "not ready" /tmp/tur.log || fail "TEST UNIT READY: not NOT READY"
grep -qi "manual intervention required" /tmp/tur.log || fail "TEST UNIT READY: not 04/03"
sg_inq "$iscsi_sg" >/tmp/inq.log 2>&1 || fail "INQUIRY failed: $(cat /tmp/inq.log)"
grep -E "PQual|Vendor|Product" /tmp/inq.log
grep -q "PQual=1" /tmp/inq.log || fail "INQUIRY: peripheral qualifier is not 1"
timeout 20 dd if="$iscsi_disk" of=/dev/null bs=4k count=1 iflag=direct 2>/tmp/dd1.log &&
    fail "a read of the offline LUN succeeded"
cat /tmp/dd1.log
"$ferryctl" luns --json | grep -q '"state" : "offline"' || fail "ferryctl --json luns does not say offline"

step "scan the disk back (same host, same WWN)"
echo "- - -" >"/sys/class/scsi_host/$host/scan"
udevadm settle --timeout=60
wait_for "[ -e /dev/ferry/$name ]" 30
new_sg=$(readlink -f "/dev/ferry/$name")
new_wwid=$(cat "/sys/class/scsi_generic/${new_sg#/dev/}/device/wwid")
echo "back as $new_sg, wwid $new_wwid"
[ "$new_wwid" = "$wwid" ] || fail "scsi_debug came back with wwid $new_wwid, not $wwid"
wait_for "luns | grep -q ' online '" 30
luns

step "the first command gets the unit attention, then the LUN works"
sg_turs -v "$iscsi_sg" >/tmp/tur.log 2>&1 && fail "the first TEST UNIT READY after the return got no unit attention"
cat /tmp/tur.log
grep -qi "unit attention" /tmp/tur.log || fail "the first command after the return: no UNIT ATTENTION"
grep -qi "power on, reset, or bus device reset occurred" /tmp/tur.log || fail "the unit attention is not 29/00"
sg_turs "$iscsi_sg" || fail "TEST UNIT READY after the unit attention failed"
dd if="$iscsi_disk" of=/dev/null bs=64k count=16 iflag=direct 2>&1 || fail "reading the returned LUN failed"
grep -E "offline|back online|did not complete|sg refused|reading sg completions" "$FERRY_RESULTS/ferryd.log"

iscsi_logout
stop_ferryd
echo "PASS"
