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
. "$repo/qemu-tests/guest-checks.sh"

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

kmemleak_forget

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
	# A short fuzz run with a fixed seed (`make fuzz` runs longer ones).
	fout=$(mktemp)
	if "$repo/tools/target/release/vfio-mig-fuzz" --seconds 60 --seed 1 >"$fout" 2>&1; then
		ok "fuzz, 60 s, seed 1 ($(grep -oE '^fuzz: [0-9]+ operations' "$fout" | cut -d' ' -f2) operations)"
	else
		bad "fuzz, 60 s, seed 1" "see below"
		grep -vE '^  +[a-z ]+: [0-9]+/[0-9]+ ' "$fout" | tail -n 40 | sed 's/^/  | /'
	fi
	rm -f "$fout"
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

out=$(kmemleak_check)
case $? in
0) pass=$((pass + 1)) ;;
2) skip=$((skip + 1)) ;;
*) fail=$((fail + 1)) ;;
esac
echo "$out"
if out=$(dmesg_check); then pass=$((pass + 1)); else fail=$((fail + 1)); fi
echo "$out"

echo "$pass passed, $fail failed, $skip skipped"
[ $fail -eq 0 ]
