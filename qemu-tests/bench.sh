#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# The benchmarks (`make bench`): builds what is missing, boots the test
# kernel and runs qemu-tests/guest-bench.sh, which prints the tables of
# vfio-mig-bench (absolute numbers and ratios, measured in one boot). Exits
# non-zero if a step fails or the benchmark reports an error, never because
# of a timing.
#
# usage: bench.sh [vfio-mig-bench arguments...]   (e.g. --quick, --only dirty)
exec "$(dirname "${BASH_SOURCE[0]}")/boot-with.sh" guest-bench.sh "$@"
