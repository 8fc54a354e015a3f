#!/bin/bash
# The stage-2 init of the test bed when systemd is to be PID 1 (VirtualMachine.run(init: .systemd)
# puts ferry.init=systemd on the kernel command line, and the initramfs starts this script). Two roles:
#   systemd-init.sh       PID 1 on the overlay root: writes ferry-vm.target (the default unit) and
#                         ferry-vm-job.service into /etc/systemd/system, masks what this guest does
#                         not need or what is slow under TCG, and execs systemd.
#   systemd-init.sh job   ferry-vm-job.service: runs /ferry-results/job.sh under the guest-side
#                         timeout like init.sh, leaves output.log, exit-code, job-milliseconds,
#                         dmesg.log and journal.log (the whole boot's journal) in /ferry-results, and
#                         powers the VM off.
results=/ferry-results
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

if [ "${1:-}" = job ]; then
    if [ -d /sys/class/net/eth0 ]; then
        # QEMU user-mode networking, as in init.sh: the guest is 10.0.2.15, the host's loopback 10.0.2.2.
        ip link set eth0 up
        ip addr add 10.0.2.15/24 dev eth0
        ip route add default via 10.0.2.2
    fi
    started=$(date +%s%N)
    # guest-timeout counts from the start of the VM, which under systemd is long before the job's.
    read -r uptime _ </proc/uptime
    timeout -k 5 "$(( $(cat "$results/guest-timeout") - ${uptime%.*} ))" bash "$results/job.sh" >"$results/output.log" 2>&1 </dev/null
    status=$?
    echo "$(( ($(date +%s%N) - started) / 1000000 ))" >"$results/job-milliseconds"
    dmesg >"$results/dmesg.log" 2>&1
    journalctl --boot --no-pager -o short-monotonic >"$results/journal.log" 2>&1
    echo "$status" >"$results/exit-code.tmp"
    sync
    mv "$results/exit-code.tmp" "$results/exit-code"
    sync
    # Everything is saved: no need to stop the units one by one.
    systemctl poweroff --force --force
    exit 0
fi

# PID 1 until systemd takes over: nothing may fail here unnoticed (an exit panics the guest, and the
# harness sees a VM that stopped without an exit code).
units=/etc/systemd/system
cat >"$units/ferry-vm.target" <<'UNIT'
[Unit]
Description=Ferry VM test bed
Requires=basic.target
After=basic.target
Wants=ferry-vm-job.service
AllowIsolate=yes
UNIT
cat >"$units/ferry-vm-job.service" <<'UNIT'
[Unit]
Description=Ferry VM test job (/ferry-results/job.sh)
After=basic.target

[Service]
Type=exec
ExecStart=/bin/bash /ferry-results/guest/systemd-init.sh job
Environment=HOME=/root TERM=dumb
WorkingDirectory=/tmp
UNIT
ln -sfn ferry-vm.target "$units/default.target"
# /tmp is a tmpfs, as under init.sh (the host's /tmp stays out of sight, and systemd-tmpfiles
# does not spend minutes emptying it through the overlay).
mkdir -p "$units/local-fs.target.wants"
ln -sfn /usr/share/systemd/tmp.mount "$units/tmp.mount"
ln -sfn ../tmp.mount "$units/local-fs.target.wants/tmp.mount"
# A host that is a container leaves its marker in the shared root; systemd would believe it runs
# in that container and skip udev, among others.
rm -f /.dockerenv /run/.containerenv
# An allow-list, not a deny-list: every unit the host's packages install is masked except the few the
# test bed needs, so that what the host has installed (multipathd, lvm2, ceph-*, etcd, tgt, a database...)
# never starts in the guest. Each unit costs a second or more of boot under TCG, a daemon such as
# multipathd would claim the disks the tests log in, and one that fills the overlay's tmpfs breaks the
# unit under test. What stays: journald, udevd with its coldplug, /tmp, and D-Bus's socket. Targets are
# not masked: they only order and group. The guest scripts start what else they need (iscsid, for one).
# systemd-service.sh checks that nothing outside this list is active.
allowed_units="systemd-journald.service systemd-journald.socket systemd-journald-dev-log.socket \
systemd-udevd.service systemd-udevd-control.socket systemd-udevd-kernel.socket systemd-udev-trigger.service \
dbus.socket dbus.service tmp.mount"
echo "$allowed_units" >/etc/ferry-vm-allowed-units
for directory in /usr/lib/systemd/system /usr/local/lib/systemd/system /etc/systemd/system; do
    for unit in "$directory"/*.{service,socket,path,timer,mount,automount,swap}; do
        [ -e "$unit" ] || [ -L "$unit" ] || continue
        unit=${unit##*/}
        case " $allowed_units ferry-vm-job.service " in
            *" $unit "*) ;;
            *) ln -sfn /dev/null "$units/$unit" ;;
        esac
    done
done
# The generators (SysV scripts, fstab, GPT, the host's postgresql, ...) take seconds and have
# nothing to find here.
mkdir -p /etc/systemd/system-generators
for generator in /lib/systemd/system-generators/*; do
    ln -sfn /dev/null "/etc/systemd/system-generators/${generator##*/}"
done
mkdir -p /etc/systemd/journald.conf.d
printf '[Journal]\nStorage=volatile\n' >/etc/systemd/journald.conf.d/ferry-vm.conf
# The host's fstab and hostname are not this machine's.
echo "# ferry-vm: the root is the initramfs's overlay" >/etc/fstab
echo ferry-vm >/etc/hostname
exec /lib/systemd/systemd
