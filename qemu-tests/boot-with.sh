#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# What `make demo` and `make bench` share: install what is missing, build
# (or find) the kernel, build the module against it and the tools, then
# boot that kernel under virtme-ng and run one guest script of qemu-tests/
# there. Exits non-zero if a step or the guest script fails.
#
# usage: boot-with.sh [--kernel test|bench] GUEST_SCRIPT [its arguments...]
#
# The kernel is the test kernel unless --kernel bench asks for the
# benchmark kernel (qemu-tests/build-kernel.sh).
set -euo pipefail

# shellcheck source=qemu-tests/host-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/host-lib.sh"

flavour="test"
if [ "${1:-}" = --kernel ]; then
	flavour=$2
	shift 2
fi
guest_script=$1
shift

step "install dependencies" qemu-tests/install-deps.sh
kernel "$flavour"
step "module builds" make module
step "tools build" make tools
echo "# booting the $flavour kernel, $KDIR (TCG: one to five minutes before $guest_script starts)"
run_guest "$guest_script" "$@"
