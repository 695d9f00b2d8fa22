#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# The main job (`make demo`): builds what is missing, boots the test kernel
# and runs qemu-tests/guest-demo.sh, which live-migrates a running device
# between two mdevs and prints each migration's report. Exits non-zero if a
# step, a migration or a check fails.
#
# usage: demo.sh [extra vfio-mig migrate options...]   (e.g. --cpu-rate 2000)
set -euo pipefail

exec "$(dirname "${BASH_SOURCE[0]}")/boot-with.sh" guest-demo.sh "$@"
