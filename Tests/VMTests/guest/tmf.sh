# Task management on the device path (issue 4), against ferryd's sg backend on scsi_debug (loaded with
# opts=0x2000, so that it logs every abort and reset it receives to the kernel log):
#   tmf.sh abort-in-device      TMFProbe: ABORT TASK of a READ and a WRITE in the slowed device; no reset
#   tmf.sh abort-deadline       TMFProbe: ABORT TASK past abort_deadline -> one device reset, no bus/host reset
#   tmf.sh logical-unit-reset   TMFProbe: LOGICAL UNIT RESET with commands of two sessions in the device
#   tmf.sh conformance          iscsi-test-cu -t iSCSI.iSCSITMF
#   tmf.sh kernel-initiator     open-iscsi with short timeouts on a slowed device: its error handler aborts
#                               through Ferry, the file system survives (fsck clean), nothing hangs.
#                               libiscsi's timeout handler first pings (NOP-Out) and re-arms the timer, so a
#                               command reaches the error handler after twice the SCSI timeout: 2 s, 4 s with
#                               the device at 5 s a command. scsi_debug takes a new delay only when idle, and
#                               SYNCHRONIZE CACHE waits far longer than the delay (F_LONG_DELAY), so ext4
#                               commits every 60 s and the delay returns to 0 before dd's fsync.
# TMFProbe is $FERRY_RESULTS/TMFProbe (Tests/TMFProbe); it prints `measured:` and `FAIL:` lines.
source "$FERRY_GUEST/lib.sh"
scenario=$1
probe=$FERRY_RESULTS/TMFProbe
hz=$(sed -n 's/^CONFIG_HZ=//p' "/boot/config-$(uname -r)" 2>/dev/null || true)
hz=${hz:-250}
delay_file=/sys/bus/pseudo/drivers/scsi_debug/delay

# The resets scsi_debug logged since the last `dmesg -C` of the kind given (device, target, bus, host);
# 6.1 logs the handler's name (scsi_debug_device_reset), newer kernels "doing device reset".
resets() { dmesg | grep -E "scsi_debug_$1_reset|doing $1 reset" || true; }

# Fails on any bus or host reset: Ferry never sends one, and never a reset without NO_ESCALATE.
expect_no_wide_resets() {
    local wide
    wide=$(resets bus; resets host)
    [ -z "$wide" ] || fail "scsi_debug got a bus or host reset: $wide"
}

run_probe() {
    [ -x "$probe" ] || fail "$probe is missing (the harness copies Tests/TMFProbe's build there)"
    step "TMFProbe $*"
    dmesg -C
    "$probe" "$@" --target "$target_name" --hz "$hz"
}

load_scsi_debug dev_size_mb=64 max_queue=64 opts=0x2000
echo "kernel $(uname -r), HZ=$hz"
case "$scenario" in
abort-in-device)
    FERRY_LUN_OPTIONS='abort_deadline = "20s"
command_timeout = 30000' start_ferryd sg "$scsi_debug_sg"
    run_probe abort-in-device --abort-deadline-ms 20000 --command-timeout-ms 30000
    step "kernel log: no reset, as the device returned both commands before the deadline"
    resets device
    [ -z "$(resets device; resets target)" ] || fail "the device was reset although it returned the commands"
    expect_no_wide_resets
    ;;
abort-deadline)
    FERRY_LUN_OPTIONS='abort_deadline = "2s"
command_timeout = 6000' start_ferryd sg "$scsi_debug_sg"
    run_probe abort-deadline --abort-deadline-ms 2000 --command-timeout-ms 6000
    step "kernel log: the device reset"
    dmesg | grep scsi_debug || true
    [ -n "$(resets device)" ] || fail "scsi_debug logged no device reset after the abort deadline"
    expect_no_wide_resets
    ;;
logical-unit-reset)
    FERRY_LUN_OPTIONS='command_timeout = 8000' start_ferryd sg "$scsi_debug_sg"
    run_probe logical-unit-reset --command-timeout-ms 8000
    step "kernel log: the device reset"
    dmesg | grep scsi_debug || true
    [ -n "$(resets device)" ] || fail "scsi_debug logged no device reset for LOGICAL UNIT RESET"
    expect_no_wide_resets
    ;;
conformance)
    start_ferryd sg "$scsi_debug_sg"
    step "iscsi-test-cu -t iSCSI.iSCSITMF"
    mkdir -p "$FERRY_RESULTS/conformance"
    url="iscsi://127.0.0.1:3260/$target_name/0"
    dmesg -C
    status=0
    timeout -k 5 120 iscsi-test-cu -d -S -t iSCSI.iSCSITMF "$url" "$url" \
        >"$FERRY_RESULTS/conformance/iSCSI.iSCSITMF.log" 2>&1 || status=$?
    cat "$FERRY_RESULTS/conformance/iSCSI.iSCSITMF.log"
    echo "iscsi-test-cu exit status $status"
    dmesg | grep scsi_debug || true
    expect_no_wide_resets
    ;;
kernel-initiator)
    FERRY_LUN_OPTIONS='abort_deadline = "3s"
command_timeout = 10000' start_ferryd sg "$scsi_debug_sg"
    start_iscsid
    sed -i -e 's|^node.session.err_timeo.abort_timeout = .*|node.session.err_timeo.abort_timeout = 5|' \
        -e 's|^node.session.err_timeo.lu_reset_timeout = .*|node.session.err_timeo.lu_reset_timeout = 10|' \
        -e 's|^node.session.err_timeo.tgt_reset_timeout = .*|node.session.err_timeo.tgt_reset_timeout = 10|' \
        /etc/iscsi/iscsid.conf
    grep err_timeo /etc/iscsi/iscsid.conf
    iscsiadm -m discovery -t sendtargets -p 127.0.0.1:3260
    iscsi_login
    disk=${iscsi_disk#/dev/}
    step "mkfs.ext4 and a first file at full speed"
    mkfs.ext4 -q -F "$iscsi_disk"
    mkdir -p /mnt/ferry
    mount -o commit=60 "$iscsi_disk" /mnt/ferry
    head -c 1M /dev/urandom >/tmp/slow
    cp /tmp/slow /mnt/ferry/fast
    sync
    step "slow the device to 5 s a command with a 2 s SCSI timeout, then write and fsync"
    echo 2 >"/sys/block/$disk/device/timeout"
    dmesg -C
    until echo $((5 * hz)) >"$delay_file" 2>/dev/null; do sleep 0.05; done
    started=$SECONDS
    timeout -k 5 150 dd if=/tmp/slow of=/mnt/ferry/slow bs=64k oflag=direct conv=fsync status=none &
    writer=$!
    step "wait until the initiator's error handler sent a task management function"
    tmf_sent() { iscsiadm -m session -s 2>/dev/null | awk '/tmfcmd_pdus/ { n += $2 } END { exit !(n > 0) }'; }
    wait_for tmf_sent 90
    echo "measured: first task management function after $((SECONDS - started)) s"
    step "back to full speed (scsi_debug takes the new delay once it is idle)"
    until echo 0 >"$delay_file" 2>/dev/null; do :; done
    echo "measured: delay 0 after $((SECONDS - started)) s"
    echo 30 >"/sys/block/$disk/device/timeout"
    status=0
    wait "$writer" || status=$?
    echo "measured: the slowed write ended with status $status after $((SECONDS - started)) s"
    iscsiadm -m session -s | grep -E "tmf|scsicmd|timeout" || true
    step "kernel log: the initiator's error handling and the resets scsi_debug got"
    dmesg | grep -vE "^\s*$" | tail -40
    [ "$status" = 0 ] || fail "the write on the slowed device failed (status $status)"
    grep -q "function=abortTask" "$FERRY_RESULTS/ferryd.log" || fail "ferryd logged no ABORT TASK answered"
    expect_no_wide_resets
    cmp /tmp/slow /mnt/ferry/slow || fail "the file written on the slowed device reads back different"
    umount /mnt/ferry
    iscsi_logout
    stop_ferryd
    step "fsck.ext4 straight on scsi_debug's $scsi_debug_disk"
    blockdev --flushbufs "$scsi_debug_disk"
    fsck.ext4 -fn "$scsi_debug_disk" || fail "fsck found errors"
    mount -o ro "$scsi_debug_disk" /mnt/ferry
    cmp /tmp/slow /mnt/ferry/slow || fail "the file differs on scsi_debug itself"
    cmp /tmp/slow /mnt/ferry/fast || fail "the first file differs on scsi_debug itself"
    umount /mnt/ferry
    grep -E "task management|device reset" "$FERRY_RESULTS/ferryd.log" | tail -20 || true
    step "done"
    exit 0
    ;;
*) fail "tmf.sh: unknown scenario $scenario" ;;
esac
step "ferryd's task management log"
grep -E "task management|device reset" "$FERRY_RESULTS/ferryd.log" || true
stop_ferryd
step "done"
