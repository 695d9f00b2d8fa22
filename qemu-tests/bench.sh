#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# The benchmarks (`make bench`): install what is missing, build (or find)
# the test kernel, build the module and the tools, then boot the test kernel
# under virtme-ng and run qemu-tests/guest-bench.sh there. Prints the tables
# of vfio-mig-bench (absolute numbers and ratios, measured in one boot);
# exits non-zero if a step fails or the benchmark reports an error, never
# because of a timing.
#
# usage: bench.sh [vfio-mig-bench arguments...]   (e.g. --quick, --only dirty)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
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
echo "# booting the test kernel (TCG: one to five minutes before the benchmarks start)"
exec qemu-tests/vng-run.sh "$repo/qemu-tests/guest-bench.sh" "$repo" "$@"
