#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Runs inside the test guest (as root, host filesystem visible read-only):
# loads mdev, the C sample mtty (the baseline of the BAR read benchmark and
# of stock QEMU's downtime) and the module, runs the benchmarks, unloads.
# The tables and the closing `bench: NAME VALUE` lines are the benchmark
# binary's output (the boot's `# boot: N s to first test`, from
# guest-lib.sh, goes to it as boot_to_suite_s); this script adds its
# checks' lines and `# ...` progress lines, and the kernel log's reports,
# if any. Exits non-zero if a step or the binary failed (the timings
# themselves are never judged).
#
# usage: guest-bench.sh REPO [vfio-mig-bench arguments...]
set -uo pipefail

repo=$1
shift
# shellcheck source=qemu-tests/guest-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/guest-lib.sh"

load_modules mtty || { echo "# cannot run without the module"; exit 1; }

echo "# $(uname -r), $(nproc) cpus, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
start=$(date +%s)
# vng-run.sh always boots with --disable-kvm: say so in the environment table.
# Which of the CPU flags that make copies `rep movsb` the guest has
# (qemu-tests/bench.sh turns them off).
movsb=$(grep -m 1 -o -w -E 'erms|fsrm' /proc/cpuinfo | tr '\n' ' ')
: "${VFIO_MIG_BENCH_ACCEL:=TCG (qemu-tests/vng-run.sh --disable-kvm), -cpu ${VFIO_MIG_GUEST_CPU:-max}, rep-movsb flags: ${movsb:-none}}"
export VFIO_MIG_BENCH_ACCEL
if [ -n "$boot_s" ]; then export VFIO_MIG_BENCH_BOOT_S=$boot_s; fi
"$bin/vfio-mig-bench" "$@"
brc=$?
echo "# vfio-mig-bench exited $brc after $(($(date +%s) - start))s"
[ $brc -eq 0 ] || bad "vfio-mig-bench" "exited $brc"

remove_mdevs
check "rmmod vfio_mig_sample" rmmod vfio_mig_sample
check "rmmod mtty" rmmod mtty
check_dmesg
rc=$((failed > 0))
echo "# guest-bench: exit $rc"
exit $rc
