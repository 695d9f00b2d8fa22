#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Boots a kernel under virtme-ng and runs a command in it as root; exits
# with the command's exit code.
#
# usage: vng-run.sh [--kernel KDIR] COMMAND [ARG...]
#
# KDIR is a tree qemu-tests/build-kernel.sh built; the default is $KDIR,
# else the test kernel.
#
# KVM guests hang or abort on these machines, so the guest runs under TCG.
# `no5lvl`: KASAN reports a wild access at early boot under TCG's -cpu max
# with 5-level paging (the config also leaves X86_5LEVEL off).
#
# `PATH=`: the kernel hands it to init, virtme-ng-init, which puts it first
# on its PATH; qemu-tests/guest-path/udevadm then cuts init's udev coldplug
# down to the devices the command's I/O and exit code need.
#
# VNG_CPU, if set, is the guest's QEMU `-cpu` model (vng's default under
# TCG is `max`); `make bench` sets it (qemu-tests/bench.sh).
#
# The command sees VFIO_MIG_BOOT_START, the host's clock when the boot
# began, for its report of how long the boot took (qemu-tests/guest-lib.sh),
# and VFIO_MIG_GUEST_CPU, the `-cpu` model.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
venv=${VFIO_MIG_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/vfio-mig-sample/venv}
if [ "${1:-}" = --kernel ]; then
	kdir=$2
	shift 2
else
	kdir=${KDIR:-$("$here/build-kernel.sh" --print-dir)}
fi
timeout_s=${VNG_TIMEOUT:-2400}

[ -f "$kdir/.vfio-mig-built" ] || { echo "no kernel built in $kdir: run 'make kernel'" >&2; exit 1; }
# One kernel parameter: the path must not split.
case "$here" in *[[:space:]]*) echo "vng-run.sh: $here has white space" >&2; exit 1 ;; esac

# vng execs virtme-run, which must be on PATH.
export PATH=$venv/bin:$PATH

# vng quotes nothing itself: hand it one shell-quoted command line.
cmd="VFIO_MIG_BOOT_START=$(date +%s) VFIO_MIG_GUEST_CPU=${VNG_CPU:-max} $(printf '%q ' "$@")"
exec timeout --foreground -k 10 "$timeout_s" vng --run "$kdir" \
	--disable-kvm --force-9p --user root --memory 2G --cpus 2 \
	--append "no5lvl PATH=$here/guest-path" ${VNG_CPU:+"--qemu-opts=-cpu $VNG_CPU"} \
	-- "$cmd"
