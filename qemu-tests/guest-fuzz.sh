#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Runs inside the test guest (as root, host filesystem visible read-only):
# loads the module, runs the fuzzer (tools/fuzz) with the given arguments,
# unloads the module and checks kmemleak and the kernel log. Ends with
# `fuzz: PASSED` (exit 0) or `fuzz: FAILED`.
#
# usage: guest-fuzz.sh REPO [vfio-mig-fuzz arguments...]
set -u

repo=$1
shift
. "$repo/qemu-tests/guest-checks.sh"

failed=0
kmemleak_forget
modprobe mdev || failed=1
insmod "$repo/vfio_mig_sample.ko" || failed=1
if [ $failed -eq 0 ]; then
	"$repo/tools/target/release/vfio-mig-fuzz" "$@" || failed=1
	# The fuzzer removes its mdevs; a failed run may leave some.
	for d in /sys/bus/mdev/devices/*; do
		[ -e "$d/remove" ] && echo 1 >"$d/remove"
	done
	rmmod vfio_mig_sample || failed=1
fi
kmemleak_check
[ $? -eq 1 ] && failed=1
dmesg_check || failed=1
if [ $failed -eq 0 ]; then echo "fuzz: PASSED"; else echo "fuzz: FAILED"; fi
exit $failed
