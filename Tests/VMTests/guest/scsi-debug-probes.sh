# Shows, straight on scsi_debug's /dev/sgN (no Ferry), each scsi_debug behaviour that
# passthrough-known-failures.txt blames for a conformance failure. Read its output in
# $FERRY_RESULTS/scsi-debug-probes.log.
#   scsi-debug-probes.sh /dev/sgN
set -u
sg=$1
probe() {
    echo "--- $1"
    shift
    echo "\$ $*"
    "$@" 2>&1
    echo "(exit $?)"
}
probe "INQUIRY" sg_inq "$sg"
