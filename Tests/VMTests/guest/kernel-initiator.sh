# The Linux kernel initiator (open-iscsi, iscsi_tcp) against ferryd in the guest:
#   kernel-initiator.sh emulated     LUN 0 is an emulated disk on a sparse file in tmpfs
#   kernel-initiator.sh sg           LUN 0 passes through to scsi_debug's /dev/sgN; afterwards
#                                    fsck runs directly against scsi_debug's /dev/sdX too
# Discovery, login, mkfs.ext4, mount, write a file of known content, sync, umount, logout, fsck;
# then login again and read the file back.
source "$FERRY_GUEST/lib.sh"
backend=$1

if [ "$backend" = sg ]; then
    load_scsi_debug dev_size_mb=64
    start_ferryd sg "$scsi_debug_sg"
else
    start_ferryd emulated
fi
start_iscsid

step "discovery"
iscsiadm -m discovery -t sendtargets -p 127.0.0.1:3260 | tee /tmp/discovery
grep -q "127.0.0.1:3260,1 $target_name" /tmp/discovery || fail "SendTargets did not return $target_name"

iscsi_login
step "mkfs.ext4 $iscsi_disk"
mkfs.ext4 -q -F -L ferry-vm "$iscsi_disk"
mkdir -p /mnt/ferry
mount -t ext4 "$iscsi_disk" /mnt/ferry
step "write a file of known content"
head -c 3000000 /dev/urandom >/tmp/known
sha256sum </tmp/known | tee /tmp/known.sha256
cp /tmp/known /mnt/ferry/known
sync
umount /mnt/ferry
iscsi_logout

step "fsck over iSCSI"
iscsi_login
e2fsck -f -n "$iscsi_disk"
iscsi_logout

step "log in again and read the file back"
iscsi_login
echo 3 >/proc/sys/vm/drop_caches
mount -t ext4 -o ro "$iscsi_disk" /mnt/ferry
actual=$(sha256sum </mnt/ferry/known)
[ "$actual" = "$(cat /tmp/known.sha256)" ] || fail "read back $actual, wrote $(cat /tmp/known.sha256)"
echo "read back intact: $actual"
umount /mnt/ferry
iscsi_logout
stop_ferryd

if [ "$backend" = sg ]; then
    step "fsck directly against $scsi_debug_disk"
    blockdev --flushbufs "$scsi_debug_disk"
    echo 3 >/proc/sys/vm/drop_caches
    e2fsck -f -n "$scsi_debug_disk"
    mount -t ext4 -o ro "$scsi_debug_disk" /mnt/ferry
    [ "$(sha256sum </mnt/ferry/known)" = "$(cat /tmp/known.sha256)" ] || fail "the file on $scsi_debug_disk differs"
    umount /mnt/ferry
    echo "the file on $scsi_debug_disk is intact"
fi
step "done"
