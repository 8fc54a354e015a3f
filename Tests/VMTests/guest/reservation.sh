# Two kernel initiators (two open-iscsi ifaces with their own initiator names, so two I_T nexuses)
# share a passthrough LUN: ferryd's sg backend over scsi_debug's /dev/sgN, one sg file handle for
# both. Ferry must keep their reservations apart (the device sees one nexus):
#   - PERSISTENT RESERVE, Write Exclusive: the other initiator reads but its WRITE gets
#     RESERVATION CONFLICT; after RELEASE it writes.
#   - RESERVE(6): the other initiator's READ gets RESERVATION CONFLICT; after RELEASE(6) it reads.
#   reservation.sh [sg|emulated]     (emulated: the same on an emulated LUN, to check the script)
source "$FERRY_GUEST/lib.sh"
backend=${1:-sg}

# Runs sg_raw and fails unless its SCSI status is (or, with "good", is not) RESERVATION CONFLICT.
expect_status() {
    local expected=$1
    shift
    local output
    output=$(sg_raw "$@" 2>&1) || true
    echo "\$ sg_raw $*"
    echo "$output" | grep -i "status\|error" || true
    if [ "$expected" = conflict ]; then
        echo "$output" | grep -qi "reservation conflict" || fail "expected RESERVATION CONFLICT"
    else
        echo "$output" | grep -qi "reservation conflict\|status: check\|error" && fail "expected GOOD"
        true
    fi
}

if [ "$backend" = sg ]; then
    load_scsi_debug dev_size_mb=64
    step "scsi_debug itself on $scsi_debug_sg (for the record)"
    sg_persist --in --read-keys "$scsi_debug_sg" || true
    start_ferryd sg "$scsi_debug_sg"
else
    start_ferryd emulated
fi
start_iscsid
iscsiadm -m iface -I second -o new
iscsiadm -m iface -I second -o update -n iface.initiatorname -v iqn.2026-11.dev.ferry:vm-second
step "discovery and login through two ifaces"
iscsiadm -m discovery -t sendtargets -p 127.0.0.1:3260 -I default -I second
iscsiadm -m node -T "$target_name" -p 127.0.0.1:3260 -l
wait_for '[ $(ls -d /sys/class/iscsi_session/session*/device/target*/*:*:*:0/block/sd* | wc -l) = 2 ]'
mapfile -t disks < <(iscsi_disks)
a=${disks[0]}
b=${disks[1]}
for disk in "$a" "$b"; do
    wait_for "[ \$(cat /sys/class/block/${disk#/dev/}/size) -gt 0 ]"
done
for session in /sys/class/iscsi_session/session*; do
    echo "$(basename "$session"): $(cat "$session/initiatorname") -> $(ls "$session"/device/target*/*:*:*:0/block)"
done
head -c 512 /dev/urandom >/tmp/block

step "PERSISTENT RESERVE OUT: A registers and reserves Write Exclusive"
sg_persist --out --register --param-sark=0xa1 "$a"
sg_persist --out --reserve --param-rk=0xa1 --prout-type=1 "$a"
sg_persist --in --read-reservation "$b" | tee /tmp/reservation
grep -qi "key=0xa1" /tmp/reservation || fail "B does not see A's reservation"
step "B reads, B's WRITE conflicts, A writes"
expect_status good -r 512 "$b" 28 00 00 00 10 00 00 00 01 00
expect_status conflict -s 512 -i /tmp/block "$b" 2a 00 00 00 10 00 00 00 01 00
expect_status good -s 512 -i /tmp/block "$a" 2a 00 00 00 10 00 00 00 01 00
step "A releases: B writes"
sg_persist --out --release --param-rk=0xa1 --prout-type=1 "$a"
expect_status good -s 512 -i /tmp/block "$b" 2a 00 00 00 10 00 00 00 01 00
sg_persist --out --register --param-rk=0xa1 --param-sark=0 "$a"

step "RESERVE(6) by A: B's READ conflicts until RELEASE(6)"
expect_status good "$a" 16 00 00 00 00 00
expect_status conflict -r 512 "$b" 28 00 00 00 10 00 00 00 01 00
expect_status good -r 512 "$a" 28 00 00 00 10 00 00 00 01 00
expect_status good "$a" 17 00 00 00 00 00
expect_status good -r 512 "$b" 28 00 00 00 10 00 00 00 01 00

iscsiadm -m node -T "$target_name" -p 127.0.0.1:3260 -u
stop_ferryd
step "done"
