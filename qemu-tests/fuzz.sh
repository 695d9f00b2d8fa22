#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# `make fuzz`: builds what is missing, boots the test kernel and runs the
# fuzzer there for SECONDS (qemu-tests/guest-fuzz.sh). The seed is printed
# at the start; give it again to repeat a run. Exits non-zero if a step,
# the fuzzer or a kernel-log check fails.
#
# usage: fuzz.sh SECONDS [SEED]
set -euo pipefail

seconds=${1:?usage: fuzz.sh SECONDS [SEED]}
args=(--seconds "$seconds")
[ -n "${2:-}" ] && args+=(--seed "$2")
# Boot, the run itself and the checks after it.
export VNG_TIMEOUT=${VNG_TIMEOUT:-$((seconds + 1800))}
exec "$(dirname "${BASH_SOURCE[0]}")/boot-with.sh" guest-fuzz.sh "${args[@]}"
