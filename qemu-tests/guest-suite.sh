#!/bin/sh
# SPDX-License-Identifier: GPL-2.0
#
# Runs inside the test guest (as root, host filesystem visible read-only):
# loads the module, runs the test binary against it, unloads it, and checks
# the kernel log and kmemleak. Every check prints one line, `ok NAME`,
# `FAIL NAME: why` or `skip NAME: why`, and the last line is the summary.
#
# usage: guest-suite.sh REPO [test binary arguments...]

repo=$1
shift
ko=$repo/vfio_mig_sample.ko
tests=$repo/tools/target/release/vfio-mig-tests
parent=/sys/class/mdev_bus/vfio_mig_sample
kmemleak=/sys/kernel/debug/kmemleak

pass=0
fail=0
skip=0
ok() { echo "ok $1"; pass=$((pass + 1)); }
bad() { echo "FAIL $1: $2"; fail=$((fail + 1)); }
check() { # NAME COMMAND...
	name=$1
	shift
	if out=$("$@" 2>&1); then ok "$name"; else bad "$name" "$(echo "$out" | tail -n 3 | tr '\n' ' ')"; fi
}
create_mdev() { # TYPE -> UUID on stdout
	u=$(cat /proc/sys/kernel/random/uuid)
	echo "$u" >"$parent/mdev_supported_types/vfio_mig_sample-$1/create" && echo "$u"
}

mountpoint -q /sys/kernel/debug || mount -t debugfs none /sys/kernel/debug
if [ -w $kmemleak ]; then
	# Forget what boot leaked: only what the tests leak is reported.
	echo scan >$kmemleak
	echo clear >$kmemleak
fi

check "modprobe mdev" modprobe mdev
# The C sample: the suite checks its VFIO plumbing against it too.
check "modprobe mtty" modprobe mtty
check "insmod vfio_mig_sample" insmod "$ko"
check "parent device registered" test -d "$parent/mdev_supported_types/vfio_mig_sample-small"

# The test binary prints its own ok/FAIL/skip lines and a summary line.
start=$(date +%s)
"$tests" "$@" >/tmp/suite.out 2>&1
rc=$?
grep -E '^(ok|FAIL|skip) ' /tmp/suite.out
grep -vE '^(ok|FAIL|skip) |^[0-9]+ passed, ' /tmp/suite.out | sed 's/^/  | /'
p=$(grep -c '^ok ' /tmp/suite.out)
f=$(grep -c '^FAIL ' /tmp/suite.out)
s=$(grep -c '^skip ' /tmp/suite.out)
pass=$((pass + p))
fail=$((fail + f))
skip=$((skip + s))
if [ $rc -ne 0 ] && [ "$f" -eq 0 ]; then bad "test binary" "exited $rc without a failed test"; fi
echo "# test binary: $((p + f + s)) tests in $(($(date +%s) - start))s"

# The main job as a test: live migrations with the workload on, which the
# tool verifies bit-exact (its exit status), through both VFIO paths. Only
# in a full run (no test filter).
if [ $# -eq 0 ]; then
	mig=$repo/tools/target/release/vfio-mig
	check "live migration, legacy container" "$mig" migrate --create large --quiet
	check "live migration, iommufd, 1000-page queries" "$mig" migrate --create large --quiet \
		--iommufd --dirty-window 1000 --cpu-rate 3000
	check "no guest page pinned after the migrations" \
		test "$(cat /sys/kernel/debug/vfio_mig_sample/pinned_pages)" = 0
	# Stock QEMU live-migrates VMs that own an mdev: its own ok/FAIL lines.
	"$repo/tools/target/release/vfio-mig-qemu" suite >/tmp/qemu.out 2>&1
	qrc=$?
	cat /tmp/qemu.out
	pass=$((pass + $(grep -c '^ok ' /tmp/qemu.out)))
	fail=$((fail + $(grep -c '^FAIL ' /tmp/qemu.out)))
	[ $qrc -eq 0 ] || grep -q '^FAIL ' /tmp/qemu.out || bad "vfio-mig-qemu suite" "exited $qrc without a failed check"
fi

for d in /sys/bus/mdev/devices/*; do
	[ -e "$d/remove" ] && echo 1 >"$d/remove"
done
check "rmmod vfio_mig_sample" rmmod vfio_mig_sample
check "parent device gone after rmmod" test ! -e "$parent"
check "rmmod mtty" rmmod mtty

# Unloading with mdevs still present removes them first.
check "insmod again" insmod "$ko"
if u1=$(create_mdev small) && u2=$(create_mdev large); then
	check "rmmod with mdevs present" rmmod vfio_mig_sample
	check "mdevs gone after rmmod" test ! -e "/sys/bus/mdev/devices/$u1" -a ! -e "/sys/bus/mdev/devices/$u2"
else
	bad "create mdevs before rmmod" "could not create"
	rmmod vfio_mig_sample
fi

if [ -w $kmemleak ]; then
	# Two scans: kmemleak only reports objects unreferenced in both.
	echo scan >$kmemleak
	sleep 1
	echo scan >$kmemleak
	leaks=$(cat $kmemleak)
	if [ -z "$leaks" ]; then ok "kmemleak clean"; else
		bad "kmemleak clean" "see below"
		echo "$leaks" | head -n 60 | sed 's/^/  | /'
	fi
else
	skip=$((skip + 1))
	echo "skip kmemleak clean: $kmemleak not available"
fi

# Lockdep and KASAN reports start with "WARNING:" or "BUG:".
splat='WARNING:|BUG:|Oops|KASAN:|UBSAN:|INFO: task .* blocked|Call Trace:'
if ! dmesg | grep -qE "$splat"; then ok "dmesg clean"; else
	bad "dmesg clean" "$(dmesg | grep -cE "$splat") matching lines, the first reports below"
	dmesg | grep -E -B 3 -A 40 "$splat" | head -n 200 | sed 's/^/  | /'
fi

echo "$pass passed, $fail failed, $skip skipped"
[ $fail -eq 0 ]
