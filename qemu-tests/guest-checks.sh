# SPDX-License-Identifier: GPL-2.0
#
# Kernel-log checks shared by the guest scripts (sourced, POSIX sh): forget
# what boot left in kmemleak, then report what the run leaked and any
# WARN/BUG/oops/KASAN/UBSAN/lockdep/hung-task report in the kernel log.
# Each check prints `ok NAME` or `FAIL NAME: why` (with the report below)
# and returns non-zero on failure.

kmemleak=/sys/kernel/debug/kmemleak
# Lockdep and KASAN reports start with "WARNING:" or "BUG:".
splat='WARNING:|BUG:|Oops|KASAN:|UBSAN:|INFO: task .* blocked|Call Trace:'

# Forgets what boot leaked: only what runs afterwards is reported.
kmemleak_forget() {
	mountpoint -q /sys/kernel/debug || mount -t debugfs none /sys/kernel/debug
	if [ -w $kmemleak ]; then
		echo scan >$kmemleak
		echo clear >$kmemleak
	fi
}

# Returns 2 when kmemleak is not available (a skip).
kmemleak_check() {
	[ -w $kmemleak ] || { echo "skip kmemleak clean: $kmemleak not available"; return 2; }
	# Two scans: kmemleak only reports objects unreferenced in both.
	echo scan >$kmemleak
	sleep 1
	echo scan >$kmemleak
	leaks=$(cat $kmemleak)
	if [ -z "$leaks" ]; then echo "ok kmemleak clean"; return 0; fi
	echo "FAIL kmemleak clean: see below"
	echo "$leaks" | head -n 60 | sed 's/^/  | /'
	return 1
}

dmesg_check() {
	if ! dmesg | grep -qE "$splat"; then echo "ok dmesg clean"; return 0; fi
	echo "FAIL dmesg clean: $(dmesg | grep -cE "$splat") matching lines, the first reports below"
	dmesg | grep -E -B 3 -A 40 "$splat" | head -n 200 | sed 's/^/  | /'
	return 1
}
