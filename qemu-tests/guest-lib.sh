# SPDX-License-Identifier: GPL-2.0
# shellcheck shell=bash
#
# What the guest scripts (guest-suite.sh, guest-demo.sh, guest-bench.sh,
# guest-fuzz.sh) share: sourced, with `repo` set to the checkout, by
# scripts that run inside the test guest as root (the host's filesystem
# visible read-only) under `set -uo pipefail` and handle each step's
# failure themselves.
#
# Checks print the lines of checks.sh.

# shellcheck disable=SC2034 # the paths are for the scripts that source this
ko=${repo:?}/vfio_mig_sample.ko
bin=$repo/tools/target/release
parent=/sys/class/mdev_bus/vfio_mig_sample
debugfs=/sys/kernel/debug
pinned_pages=$debugfs/vfio_mig_sample/pinned_pages
kmemleak=$debugfs/kmemleak

# shellcheck source=qemu-tests/checks.sh
source "$(dirname "${BASH_SOURCE[0]}")/checks.sh"

# load_modules [MODULE...]: mdev, the given modules (the C sample mtty),
# then ours; false if ours did not load.
load_modules() {
	local m
	for m in mdev "$@"; do
		check "modprobe $m" modprobe "$m"
	done
	check "insmod vfio_mig_sample" insmod "$ko"
}

create_mdev() { # TYPE -> UUID on stdout
	local u
	u=$(cat /proc/sys/kernel/random/uuid)
	echo "$u" >"$parent/mdev_supported_types/vfio_mig_sample-$1/create" && echo "$u"
}

remove_mdev() { echo 1 >"/sys/bus/mdev/devices/$1/remove"; } # UUID

# Removes every mdev there is (those a failed step left behind).
remove_mdevs() {
	local d
	for d in /sys/bus/mdev/devices/*; do
		if [ -e "$d/remove" ]; then remove_mdev "${d##*/}"; fi
	done
}

# check_lines COMMAND...: a command that prints its own `ok`/`FAIL` lines
# (and `#` notes): shown and counted; an exit code that no FAIL line explains
# is a failure of its own.
check_lines() {
	local out rc
	out=$("$@" 2>&1)
	rc=$?
	echo "$out"
	passed=$((passed + $(grep -c '^ok ' <<<"$out")))
	failed=$((failed + $(grep -c '^FAIL ' <<<"$out")))
	if [ $rc -ne 0 ] && ! grep -q '^FAIL ' <<<"$out"; then bad "$*" "exited $rc without a failed check"; fi
}

# check_unpinned NAME: the module's debugfs count of pinned guest pages is 0
# (read before rmmod, which takes debugfs away).
check_unpinned() {
	local n
	n=$(cat "$pinned_pages" 2>/dev/null) || n=unreadable
	if [ "$n" = 0 ]; then ok "$1"; else bad "$1" "pinned_pages is $n"; fi
}

# Forget what boot leaked: only what the tests leak is reported.
kmemleak_forget() {
	if [ -w "$kmemleak" ]; then
		echo scan >"$kmemleak"
		echo clear >"$kmemleak"
	fi
}

check_kmemleak() {
	local leaks
	if [ ! -w "$kmemleak" ]; then
		skip "kmemleak clean" "$kmemleak not available"
		return
	fi
	# Two scans: kmemleak only reports objects unreferenced in both.
	echo scan >"$kmemleak"
	sleep 1
	echo scan >"$kmemleak"
	leaks=$(cat "$kmemleak")
	if [ -z "$leaks" ]; then ok "kmemleak clean"; else
		bad "kmemleak clean" "see below"
		head -n 60 <<<"$leaks" | sed 's/^/  | /'
	fi
}

# The kernel log has no report: lockdep and KASAN reports start with
# "WARNING:" or "BUG:".
check_dmesg() {
	local splat='WARNING:|BUG:|Oops|KASAN:|UBSAN:|INFO: task .* blocked|Call Trace:' log
	log=$(dmesg)
	if ! grep -qE "$splat" <<<"$log"; then ok "dmesg clean"; else
		bad "dmesg clean" "$(grep -cE "$splat" <<<"$log") matching lines, the first reports below"
		grep -E -B 3 -A 40 "$splat" <<<"$log" | head -n 200 | sed 's/^/  | /'
	fi
}

# How long the boot took, from the host's start of it (vng-run.sh passes
# its clock in VFIO_MIG_BOOT_START; the guest's clock is set from the host's
# at boot) and from the kernel's start, as a line for the run's log; the
# seconds from the host's start are left in boot_s (empty if unknown).
boot_s=
boot_report() {
	local up
	up=$(cut -d' ' -f1 /proc/uptime)
	if [ -n "${VFIO_MIG_BOOT_START:-}" ]; then
		boot_s=$(($(date +%s) - VFIO_MIG_BOOT_START))
		echo "# boot: $boot_s s to first test (kernel up ${up%.*} s)"
	else
		echo "# boot: kernel up ${up%.*} s at first test"
	fi
}

boot_report
# debugfs holds kmemleak and the module's count of pinned pages.
mountpoint -q "$debugfs" || mount -t debugfs none "$debugfs"
