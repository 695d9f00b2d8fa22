#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# What `make demo` and `make bench` share: install what is missing, build
# (or find) the test kernel, build the module and the tools, then boot the
# test kernel under virtme-ng and run one guest script of qemu-tests/ there.
# Exits non-zero if a step or the guest script fails.
#
# usage: boot-with.sh GUEST_SCRIPT [its extra arguments...]
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
guest_script=$1
shift
log=$(mktemp)
trap 'rm -f "$log"' EXIT

# step NAME COMMAND...: the command's output goes to a log, shown on failure.
step() {
	local name=$1 start=$SECONDS
	shift
	if "$@" >"$log" 2>&1; then
		echo "# $name ($((SECONDS - start))s)"
	else
		echo "# FAILED: $name, last lines:"
		tail -n 40 "$log" | sed 's/^/  | /'
		exit 1
	fi
}

step "dependencies" qemu-tests/install-deps.sh
echo "# test kernel (cached; the first build takes about 20 minutes)"
kdir=$(qemu-tests/build-kernel.sh) || { echo "# FAILED: test kernel"; exit 1; }
export KDIR=$kdir
step "module" make module
step "tools" make tools
echo "# booting the test kernel (TCG: one to five minutes before $guest_script starts)"
# Through a pipe: QEMU reopens the console's output through /proc/self/fd,
# which on a regular file (`make demo >log 2>&1`) truncates it and loses the
# lines above.
qemu-tests/vng-run.sh "$repo/qemu-tests/$guest_script" "$repo" "$@" 2>&1 | cat
