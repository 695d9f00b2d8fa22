#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# Runs inside the test guest (as root, host filesystem visible read-only):
# loads mdev, the C sample mtty (the baseline of the BAR read benchmark) and
# the module, runs the benchmarks, unloads. The tables are the benchmark
# binary's output; this script adds `# ...` progress lines and the kernel
# log's reports, if any. Exits non-zero if a step or the binary failed (the
# timings themselves are never judged).
#
# usage: guest-bench.sh REPO [vfio-mig-bench arguments...]

repo=$1
shift
ko=$repo/vfio_mig_sample.ko
bench=$repo/tools/target/release/vfio-mig-bench
rc=0

step() { # NAME COMMAND...
	name=$1
	shift
	if ! out=$("$@" 2>&1); then
		echo "# FAILED: $name: $(echo "$out" | tail -n 3 | tr '\n' ' ')"
		rc=1
		return 1
	fi
}

mountpoint -q /sys/kernel/debug || mount -t debugfs none /sys/kernel/debug
step "modprobe mdev" modprobe mdev
step "modprobe mtty" modprobe mtty
step "insmod vfio_mig_sample" insmod "$ko" || { echo "# cannot run without the module"; exit 1; }

echo "# $(uname -r), $(nproc) cpus, $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)"
start=$(date +%s)
# vng-run.sh always boots with --disable-kvm: say so in the environment table.
: "${VFIO_MIG_BENCH_ACCEL:=TCG (qemu-tests/vng-run.sh --disable-kvm)}"
export VFIO_MIG_BENCH_ACCEL
"$bench" "$@"
brc=$?
echo "# vfio-mig-bench exited $brc after $(($(date +%s) - start))s"
[ $brc -eq 0 ] || rc=1

for d in /sys/bus/mdev/devices/*; do
	[ -e "$d/remove" ] && echo 1 >"$d/remove"
done
step "rmmod vfio_mig_sample" rmmod vfio_mig_sample
step "rmmod mtty" rmmod mtty

# Lockdep and KASAN reports start with "WARNING:" or "BUG:".
splat='WARNING:|BUG:|Oops|KASAN:|UBSAN:|INFO: task .* blocked|Call Trace:'
if dmesg | grep -qE "$splat"; then
	echo "# FAILED: the kernel log has $(dmesg | grep -cE "$splat") report lines, the first below"
	dmesg | grep -E -B 3 -A 40 "$splat" | head -n 120 | sed 's/^/  | /'
	rc=1
fi
echo "# guest-bench: exit $rc"
exit $rc
