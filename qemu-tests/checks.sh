# SPDX-License-Identifier: GPL-2.0
# shellcheck shell=bash
#
# The lines of a test run, on the host (host-lib.sh) and in the guest
# (guest-lib.sh): `ok NAME`, `FAIL NAME: why`, `skip NAME: why`, counted,
# and the closing `N passed, N failed, N skipped`. Sourced.

passed=0
failed=0
skipped=0
ok() { echo "ok $1"; passed=$((passed + 1)); }
bad() { echo "FAIL $1: $2"; failed=$((failed + 1)); }
skip() { echo "skip $1: $2"; skipped=$((skipped + 1)); }
# check NAME COMMAND...: ok if the command succeeds, else FAIL with the last
# lines of its output; returns the command's success.
check() {
	local name=$1 out
	shift
	if out=$("$@" 2>&1); then
		ok "$name"
	else
		bad "$name" "$(tail -n 3 <<<"$out" | tr '\n' ' ')"
		return 1
	fi
}
# The closing line; true if nothing failed.
summary() {
	echo "$passed passed, $failed failed, $skipped skipped"
	[ "$failed" -eq 0 ]
}
