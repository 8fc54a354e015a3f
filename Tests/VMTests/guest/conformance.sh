# libiscsi's conformance suite against ferryd exporting scsi_debug's /dev/sgN through the sg
# backend, suite by suite:
#   conformance.sh FAMILY SUITE_TIMEOUT_SECONDS [SUITE...]
# Each suite's output goes to $FERRY_RESULTS/conformance/SUITE.log and one line "SUITE STATUS" to
# $FERRY_RESULTS/conformance/suites (STATUS 124: killed after the timeout). A hung suite gets a
# fresh ferryd for the rest. Then scsi-debug-probes.sh shows, straight on the device, the
# scsi_debug behaviours that passthrough-known-failures.txt names.
source "$FERRY_GUEST/lib.sh"
family=$1
suite_timeout=$2
shift 2

load_scsi_debug dev_size_mb=64
start_ferryd sg "$scsi_debug_sg"
url="iscsi://127.0.0.1:3260/$target_name/0"
if [ $# -gt 0 ]; then
    suites=("$@")
else
    mapfile -t suites < <(iscsi-test-cu -l | grep -E "^$family\.[^.]+$")
fi
mkdir -p "$FERRY_RESULTS/conformance"
for suite in "${suites[@]}"; do
    step "$suite"
    status=0
    timeout -k 5 "$suite_timeout" iscsi-test-cu -d -S -t "$suite" "$url" "$url" \
        >"$FERRY_RESULTS/conformance/$suite.log" 2>&1 || status=$?
    echo "$suite $status" >>"$FERRY_RESULTS/conformance/suites"
    if [ "$status" = 124 ] || ! kill -0 "$ferryd_pid" 2>/dev/null; then
        echo "$suite: status $status; ferryd log:"
        tail -30 "$FERRY_RESULTS/ferryd.log"
        kill -KILL "$ferryd_pid" 2>/dev/null || true
        wait "$ferryd_pid" 2>/dev/null || true
        start_ferryd sg "$scsi_debug_sg"
    fi
done
stop_ferryd
step "scsi_debug on its own"
bash "$FERRY_GUEST/scsi-debug-probes.sh" "$scsi_debug_sg" 2>&1 | tee "$FERRY_RESULTS/scsi-debug-probes.log"
step "done"
