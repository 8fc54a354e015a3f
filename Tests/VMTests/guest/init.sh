#!/bin/bash
# Stage-2 init of the test bed (PID 1 on the overlay root). Prepares the guest (proc, sys, tmpfs
# for /tmp and /run, loopback, the user-mode NIC if there is one), runs /ferry-results/job.sh,
# which the harness wrote, under a guest-side timeout, then leaves its output, exit code and
# dmesg in /ferry-results and powers the VM off. It must never exit: PID 1 exiting panics.
results=/ferry-results
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root TERM=dumb

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mkdir -p /dev/pts /dev/shm
# devtmpfs has no /dev/fd (bash's process substitution needs it) nor /dev/std*.
ln -sfn /proc/self/fd /dev/fd
ln -sf /proc/self/fd/0 /dev/stdin
ln -sf /proc/self/fd/1 /dev/stdout
ln -sf /proc/self/fd/2 /dev/stderr
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p /run/lock /var/tmp
hostname ferry-vm
ip link set lo up
if [ -d /sys/class/net/eth0 ]; then
    # QEMU user-mode networking: the guest is 10.0.2.15 and the host's loopback is 10.0.2.2.
    ip link set eth0 up
    ip addr add 10.0.2.15/24 dev eth0
    ip route add default via 10.0.2.2
fi

started=$(date +%s%N)
# The harness's job: environment, then the script with its arguments (see job.sh).
timeout -k 5 "$(cat "$results/guest-timeout")" bash "$results/job.sh" >"$results/output.log" 2>&1 </dev/null
status=$?
echo "$(( ($(date +%s%N) - started) / 1000000 ))" >"$results/job-milliseconds"
dmesg >"$results/dmesg.log" 2>&1
echo "$status" >"$results/exit-code.tmp"
sync
mv "$results/exit-code.tmp" "$results/exit-code"
sync
echo o >/proc/sysrq-trigger
sleep 30
