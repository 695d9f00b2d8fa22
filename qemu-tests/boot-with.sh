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

# shellcheck source=qemu-tests/host-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/host-lib.sh"

guest_script=$1
shift

step "install dependencies" qemu-tests/install-deps.sh
kernel
step "module builds" make module
step "tools build" make tools
echo "# booting the test kernel (TCG: one to five minutes before $guest_script starts)"
run_guest "$guest_script" "$@"
