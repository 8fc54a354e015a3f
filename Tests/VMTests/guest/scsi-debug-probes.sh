# Shows, straight on scsi_debug's /dev/sgN (no Ferry), each scsi_debug behaviour that
# passthrough-known-failures.txt blames for a conformance failure. conformance.sh saves the output
# in $FERRY_RESULTS/scsi-debug-probes.log and the test prints it. Each probe says what a
# conforming device answers and which conformance tests the behaviour breaks.
#   scsi-debug-probes.sh /dev/sgN
set -u
sg=$1
blocks=$(($(sg_readcap "$sg" | sed -n 's/.*Last LBA=\([0-9]*\).*/\1/p') + 1))
# 8 bytes of an LBA, big-endian, as sg_raw arguments.
lba64() { printf '%016x' "$1" | sed 's/../& /g'; }
lba32() { printf '%08x' "$1" | sed 's/../& /g'; }
probe() {
    echo
    echo "--- $1"
    shift
    echo "\$ $*"
    "$@" 2>&1 | grep -v '^ *[0-9a-f]\{2,3\}  '
    echo "(exit ${PIPESTATUS[0]})"
}
head -c 512 /dev/zero >/tmp/zero-block
echo "scsi_debug $sg: $blocks blocks of 512 bytes"

probe "standard INQUIRY VERSION is 7 (SPC-5); libiscsi 1.19 accepts 4, 5 or 6 (Inquiry.Standard)" \
    sg_inq "$sg"
probe "INQUIRY with EVPD=0 and PAGE CODE 0x80 succeeds; SPC-4 wants INVALID FIELD IN CDB (Inquiry.EVPD)" \
    sg_raw -r 96 "$sg" 12 00 80 00 60 00
probe "READ(16) of 1 block at LBA 2^64-1 succeeds: the LBA + length check wraps (Read16.BeyondEol)" \
    sg_raw -r 512 "$sg" 88 00 $(lba64 $((0xffffffffffffffff))) 00 00 00 01 00 00
probe "WRITE(16) of 1 block at LBA 2^64-1 succeeds: the same wrap (Write16.BeyondEol)" \
    sg_raw -s 512 -i /tmp/zero-block "$sg" 8a 00 $(lba64 $((0xffffffffffffffff))) 00 00 00 01 00 00
probe "PRE-FETCH(16) at LBA 2^64-1 ends CONDITION MET: the same wrap (Prefetch16.BeyondEol)" \
    sg_raw "$sg" 90 00 $(lba64 $((0xffffffffffffffff))) 00 00 00 01 00 00
probe "WRITE SAME(16) at LBA 2^64-1 succeeds: the same wrap (WriteSame16.BeyondEol)" \
    sg_raw -s 512 -i /tmp/zero-block "$sg" 93 00 $(lba64 $((0xffffffffffffffff))) 00 00 00 01 00 00
probe "VERIFY(16) BYTCHK=0 at LBA 2^64-1 does not fail with LBA OUT OF RANGE (Verify16.BeyondEol)" \
    sg_raw "$sg" 8f 00 $(lba64 $((0xffffffffffffffff))) 00 00 00 01 00 00
probe "GET LBA STATUS at LBA 2^64-1 succeeds: the same wrap (GetLBAStatus.BeyondEol)" \
    sg_raw -r 24 "$sg" 9e 12 $(lba64 $((0xffffffffffffffff))) 00 00 00 18 00 00
probe "VERIFY(10) of 0 blocks past the end succeeds; SBC-4 wants LBA OUT OF RANGE (Verify10.ZeroBlocks)" \
    sg_raw "$sg" 2f 00 $(lba32 $((blocks + 1))) 00 00 00 00
probe "VERIFY(16) of 0 blocks past the end succeeds (Verify16.ZeroBlocks)" \
    sg_raw "$sg" 8f 00 $(lba64 $((blocks + 1))) 00 00 00 00 00 00
probe "READ(10) with RDPROTECT=1 on a device without protection succeeds; SBC-4 wants INVALID FIELD IN CDB (Read10/12/16.ReadProtect)" \
    sg_raw -r 512 "$sg" 28 20 00 00 00 00 00 00 01 00
probe "WRITE(10) with WRPROTECT=1 on a device without protection succeeds (Write10/12/16.WriteProtect, WriteSame10/16.WriteProtect)" \
    sg_raw -s 512 -i /tmp/zero-block "$sg" 2a 20 00 00 00 00 00 00 01 00
probe "VERIFY(10) with VRPROTECT=1 on a device without protection succeeds (Verify10/16.VerifyProtect)" \
    sg_raw "$sg" 2f 20 00 00 00 00 00 00 01 00
probe "WRITE SAME(10) with NUMBER OF LOGICAL BLOCKS 0 succeeds (WriteSame10/16.ZeroBlocks)" \
    sg_raw -s 512 -i /tmp/zero-block "$sg" 41 00 00 00 00 00 00 00 00 00
probe "standard INQUIRY version descriptors claim SBC-4 (0x0600), not SBC-3, which libiscsi 1.19 looks for before it accepts a 60-byte Block Limits page (Inquiry.BlockLimits)" \
    sg_inq -d "$sg"
probe "Block Limits VPD page: 60 bytes, MAXIMUM COMPARE AND WRITE LENGTH 0 (Inquiry.BlockLimits)" \
    sg_vpd -p bl "$sg"
probe "Logical Block Provisioning VPD page: LBPU and LBPME clear, yet UNMAP is listed (Unmap.VPD)" \
    sg_vpd -p lbpv "$sg"
probe "REPORT SUPPORTED OPERATION CODES lists UNMAP (Unmap.VPD)" \
    sg_opcodes -o 0x42 "$sg"
probe "REPORT SUPPORTED OPERATION CODES for one command: 0x7f (ReportSupportedOpcodes.OneCommand)" \
    sg_opcodes -o 0x7f -s 0x9 "$sg"
# The all-commands descriptors (8 bytes each, from byte 4) whose SERVICE ACTION is non-zero while
# SERVACTV (byte 5 bit 0) is clear.
servactv_clear() {
    sg_raw -r 8192 -o /tmp/rsoc "$sg" a3 0c 00 00 00 00 00 00 20 00 00 00 >/dev/null 2>&1
    od -An -v -tu1 -w8 -j4 /tmp/rsoc | awk '$1 + $2 + $3 + $4 + $5 + $6 + $7 + $8 != 0 && $6 % 2 == 0 && $3 + $4 != 0 {
        printf "opcode 0x%02x service action 0x%02x%02x: SERVACTV clear\n", $1, $3, $4 }'
}
probe "REPORT SUPPORTED OPERATION CODES lists descriptors with a non-zero SERVICE ACTION but SERVACTV clear (ReportSupportedOpcodes.SERVACTV)" \
    servactv_clear
# The changeable values of the control mode page (MODE SENSE(6), DBD=1, PC=01b) and its SWP bit.
swp_changeable() {
    sg_raw -r 64 -o /tmp/control "$sg" 1a 08 4a 00 40 00 >/dev/null 2>&1
    od -An -v -tu1 -j4 -N12 /tmp/control | awk '{
        printf "changeable mask:"; for (i = 1; i <= NF; i++) printf " %02x", $i
        printf "; SWP (byte 4 bit 3) changeable: %s\n", int($5 / 8) % 2 ? "yes" : "no" }'
}
probe "control mode page: SWP is not changeable, so libiscsi cannot set software write protect (Sanitize.Readonly)" \
    swp_changeable
probe "COMPARE AND WRITE of 1 block at LBA 100 (compare 'A', write 'B') then READ: is the block 'B'? (CompareAndWrite.Simple)" \
    bash -c "head -c 512 /dev/zero | tr '\\0' A >/tmp/a; head -c 512 /dev/zero | tr '\\0' B >/tmp/b; cat /tmp/a /tmp/b >/tmp/ab
        sg_raw -s 512 -i /tmp/a $sg 8a 00 00 00 00 00 00 00 00 64 00 00 00 01 00 00 2>&1 | grep Status
        sg_raw -s 1024 -i /tmp/ab $sg 89 00 00 00 00 00 00 00 00 64 00 00 00 01 00 00 2>&1 | grep -A3 Status
        sg_raw -r 512 -o /tmp/readback $sg 88 00 00 00 00 00 00 00 00 64 00 00 00 01 00 00 2>&1 | grep Status
        od -An -c -N 8 /tmp/readback"
probe "COMPARE AND WRITE that must miscompare (block 100 holds 'B' or 'A', compare data is 'C') (CompareAndWrite.Miscompare)" \
    bash -c "head -c 512 /dev/zero | tr '\\0' C >/tmp/c; cat /tmp/c /tmp/b >/tmp/cb
        sg_raw -s 1024 -i /tmp/cb $sg 89 00 00 00 00 00 00 00 00 64 00 00 00 01 00 00 2>&1 | grep -A3 Status"
probe "COMPARE AND WRITE with NUMBER OF LOGICAL BLOCKS 0 (libiscsi's 256 blocks: the one-byte field wraps, as the MAXIMUM COMPARE AND WRITE LENGTH 0 above leaves libiscsi to try 256) ends GOOD and writes nothing: block 100 is not 'B' afterwards (CompareAndWrite.Simple, CompareAndWrite.Miscompare)" \
    bash -c "sg_raw -s 512 -i /tmp/a $sg 8a 00 00 00 00 00 00 00 00 64 00 00 00 01 00 00 2>&1 | grep Status
        sg_raw -s 1024 -i /tmp/cb $sg 89 00 00 00 00 00 00 00 00 64 00 00 00 00 00 00 2>&1 | grep -A3 Status
        sg_raw -r 512 -o /tmp/readback $sg 88 00 00 00 00 00 00 00 00 64 00 00 00 01 00 00 2>&1 | grep Status
        od -An -c -N 8 /tmp/readback"
disk=$(ls /sys/class/scsi_generic/${sg#/dev/}/device/block 2>/dev/null)
probe "the kernel's transfer limits for this device (Ferry clamps Block Limits and bursts to them)" \
    bash -c "grep . /sys/block/$disk/queue/max_sectors_kb /sys/block/$disk/queue/max_hw_sectors_kb; sg_vpd -p bl $sg | grep -i 'transfer length'"
probe "WRITE(16) of 2048 blocks (1 MiB) straight through sg (ExtendedCopy.Simple writes 2048 blocks)" \
    bash -c "head -c 1048576 /dev/zero >/tmp/mib; sg_raw -s 1048576 -i /tmp/mib $sg 8a 00 00 00 00 00 00 00 00 00 00 00 08 00 00 00 2>&1 | grep -A3 Status"
probe "VERIFY(16) BYTCHK=0 with 1 block of data-out anyway, as Verify16.MismatchNoCmp sends it: does scsi_debug answer? (30 s limit)" \
    timeout 30 sg_raw -s 512 -i /tmp/zero-block "$sg" 8f 00 00 00 00 00 00 00 00 00 00 00 00 01 00 00
