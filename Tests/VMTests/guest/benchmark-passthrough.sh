# scripts/benchmark --passthrough, inside the VM: loads scsi_debug with the options given and runs
# the benchmark script (a copy on the results share) against its /dev/sgN, exported by tgtd
# (--bstype sg) and by ferryd (backend = "sg"), over loopback:
#   benchmark-passthrough.sh "SCSI_DEBUG_OPTIONS" BENCHMARK_ARGUMENTS...
# The script writes its runs to the --json path it is given; the host reports them.
source "$FERRY_GUEST/lib.sh"
read -r -a scsi_debug_options <<<"$1"
shift

load_scsi_debug "${scsi_debug_options[@]}"
disk=${scsi_debug_disk#/dev/}
echo "guest: $(uname -r), $(nproc) CPUs, $(awk '/MemTotal/ {print $2 / 1024 " MiB"}' /proc/meminfo)," \
    "clocksource $(cat /sys/devices/system/clocksource/clocksource0/current_clocksource)"
queue=/sys/class/block/$disk/queue
echo "$disk: $(cat "/sys/class/block/$disk/size") sectors of $(cat "$queue/logical_block_size") bytes," \
    "max_sectors_kb $(cat "$queue/max_sectors_kb")"
step "benchmark"
python3 "$FERRY_RESULTS/benchmark" --in-guest "$scsi_debug_sg" "$@"
step "done"
