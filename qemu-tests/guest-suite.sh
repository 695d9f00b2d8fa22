#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Runs inside the test guest (as root, host filesystem visible read-only):
# loads the module, runs the test binary against it, unloads it, and checks
# the kernel log and kmemleak. Every check prints one line, `ok NAME`,
# `FAIL NAME: why` or `skip NAME: why`, and the last line is the summary.
#
# usage: guest-suite.sh REPO [test binary arguments...]
set -uo pipefail

repo=$1
shift
# shellcheck source=qemu-tests/guest-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/guest-lib.sh"

kmemleak_forget

# The C sample mtty: the suite checks its VFIO plumbing against it too.
load_modules mtty
check "parent device registered" test -d "$parent/mdev_supported_types/vfio_mig_sample-small"
# Every refusal of the module says why through dynamic debug: on for the
# run (a subshell: a callsite the kernel cannot write would oops it).
check "dynamic debug on for vfio_mig_sample" \
	bash -c 'echo "module vfio_mig_sample +p" >/proc/dynamic_debug/control'

# The test binary prints its own ok/FAIL/skip lines and a summary line.
out=$(mktemp)
start=$(date +%s)
"$bin/vfio-mig-tests" "$@" >"$out" 2>&1
rc=$?
grep -E '^(ok|FAIL|skip) ' "$out"
grep -vE '^(ok|FAIL|skip) |^[0-9]+ passed, ' "$out" | sed 's/^/  | /'
p=$(grep -c '^ok ' "$out")
f=$(grep -c '^FAIL ' "$out")
s=$(grep -c '^skip ' "$out")
rm -f "$out"
passed=$((passed + p))
failed=$((failed + f))
skipped=$((skipped + s))
if [ $rc -ne 0 ] && [ "$f" -eq 0 ]; then bad "test binary" "exited $rc without a failed test"; fi
echo "# test binary: $((p + f + s)) tests in $(($(date +%s) - start))s"
check "refusals said why in the kernel log" bash -c 'dmesg | grep -q "refused: "'

# The main job as a test: live migrations with the workload on, which the
# tool verifies bit-exact (its exit status), through both VFIO paths. Only
# in a full run (no test filter).
if [ $# -eq 0 ]; then
	check "live migration, legacy container" "$bin/vfio-mig" migrate --create large --quiet
	check "live migration, iommufd, 1000-page queries" "$bin/vfio-mig" migrate --create large --quiet \
		--iommufd --dirty-window 1000 --cpu-rate 3000
	check "live migration through v2, legacy container" "$bin/vfio-mig" migrate --create large --quiet --v2
	check "live migration through v2, iommufd" "$bin/vfio-mig" migrate --create large --quiet --v2 \
		--iommufd
	check_unpinned "no guest page pinned after the migrations"
	# A short fuzz run with a fixed seed (`make fuzz` runs longer ones).
	out=$(mktemp)
	if "$bin/vfio-mig-fuzz" --seconds 60 --seed 1 >"$out" 2>&1; then
		ok "fuzz, 60 s, seed 1 ($(grep -oE '^fuzz: [0-9]+ operations' "$out" | cut -d' ' -f2) operations)"
	else
		bad "fuzz, 60 s, seed 1" "see below"
		grep -vE '^  +[a-z ]+: [0-9]+/[0-9]+ ' "$out" | tail -n 40 | sed 's/^/  | /'
	fi
	rm -f "$out"
	# Stock QEMU live-migrates VMs that own an mdev.
	check_lines "$bin/vfio-mig-qemu" suite
fi

remove_mdevs
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

check_kmemleak
check_dmesg
summary
