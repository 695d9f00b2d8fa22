# SPDX-License-Identifier: GPL-2.0
# shellcheck shell=bash
#
# What the host scripts that boot a kernel (run-all.sh,
# boot-with.sh) share: sourced, under `set -uo pipefail` or stricter. Moves
# to the checkout's top and keeps the steps' logs in a directory removed on
# exit. Steps print the lines of checks.sh.

# shellcheck source=qemu-tests/checks.sh
source "$(dirname "${BASH_SOURCE[0]}")/checks.sh"

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo" || exit
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT

# step NAME COMMAND...: runs the command with its output in a log; ok with
# its time, or FAIL with the end of the log. Returns the command's success.
step() {
	local name=$1 log start=$SECONDS
	shift
	log=$logs/$(echo "$name" | tr -c 'a-zA-Z0-9\n' '_').log
	if "$@" >"$log" 2>&1; then
		ok "$name ($((SECONDS - start))s)"
	else
		bad "$name" "exit $?, last lines:"
		tail -n 40 "$log" | sed 's/^/  | /'
		return 1
	fi
}

# kernel [FLAVOUR]: builds (or finds) the test kernel, or the bench kernel
# (qemu-tests/build-kernel.sh), and exports its directory as KDIR, for make
# and run_guest.
kernel() {
	local flavour=${1:-test}
	echo "# $flavour kernel (cached; the first build takes about 20 minutes)"
	if KDIR=$(qemu-tests/build-kernel.sh "$flavour"); then
		export KDIR
		ok "$flavour kernel"
	else
		bad "$flavour kernel" "build failed"
		return 1
	fi
}

# run_guest SCRIPT [ARG...]: boots KDIR under virtme-ng and runs
# qemu-tests/SCRIPT REPO ARG... there; returns its exit code. Through a
# pipe: QEMU reopens the console's output through /proc/self/fd, which on a
# regular file (`make demo >log 2>&1`) truncates it and loses the lines
# written before.
run_guest() {
	local script=$1
	shift
	qemu-tests/vng-run.sh --kernel "$KDIR" "$repo/qemu-tests/$script" "$repo" "$@" 2>&1 | cat
}
