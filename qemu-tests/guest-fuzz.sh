#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Runs inside the test guest (as root, host filesystem visible read-only):
# loads the module, runs the fuzzer (tools/fuzz) with the given arguments,
# removes what it left, unloads the module and checks kmemleak and the
# kernel log. Ends with `fuzz: PASSED` (exit 0) or `fuzz: FAILED`.
#
# usage: guest-fuzz.sh REPO [vfio-mig-fuzz arguments...]
set -uo pipefail

repo=$1
shift
# shellcheck source=qemu-tests/guest-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/guest-lib.sh"

kmemleak_forget
if load_modules; then
	# The fuzzer prints its own report; its last line is its verdict.
	if "$bin/vfio-mig-fuzz" "$@"; then ok "fuzzer"; else bad "fuzzer" "see above"; fi
	remove_mdevs
	check_unpinned "no guest page pinned after the fuzzer"
	check "rmmod vfio_mig_sample" rmmod vfio_mig_sample
fi
check_kmemleak
check_dmesg
if summary; then echo "fuzz: PASSED"; else echo "fuzz: FAILED"; exit 1; fi
