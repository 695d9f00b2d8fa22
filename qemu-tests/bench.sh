#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# The benchmarks (`make bench`): builds what is missing, boots the
# benchmark kernel (the test kernel's source and fragment without KASAN,
# lockdep, kmemleak and the other debug options) and runs
# qemu-tests/guest-bench.sh, which prints the tables of vfio-mig-bench
# (absolute numbers and ratios, measured in one boot) and ends with its
# `bench: NAME VALUE` lines. BENCH_KERNEL=test
# runs them on the test kernel instead. Exits non-zero if a step fails or
# the benchmark reports an error, never because of a timing.
#
# usage: [BENCH_KERNEL=bench|test] bench.sh [vfio-mig-bench arguments...]
#        (e.g. --quick, --only dirty)
set -euo pipefail

kernel=${BENCH_KERNEL:-bench}
case "$kernel" in
bench | test) ;;
*) echo "BENCH_KERNEL=$kernel: bench or test" >&2; exit 2 ;;
esac
# The guest CPU is TCG's `max` without ERMS and FSRM. With them, the
# kernel's memcpy and copy_to_user and glibc's memcpy use `rep movsb`,
# which TCG runs one byte per step: then every copy benchmark measures the
# emulator (save 0.06x memcpy with them, 0.33x without; testing.rst,
# "Benchmarks"). Both kernels, and the baselines, run on the same model.
export VNG_CPU=${VNG_CPU:-max,erms=off,fsrm=off}
echo "# make bench: on the $kernel kernel (BENCH_KERNEL=bench|test), -cpu $VNG_CPU"
exec "$(dirname "${BASH_SOURCE[0]}")/boot-with.sh" --kernel "$kernel" guest-bench.sh "$@"
