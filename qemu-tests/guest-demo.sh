#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Runs inside the test guest (as root, host filesystem visible read-only):
# loads the module, creates two vfio_mig_sample-large mdevs and
# live-migrates a running device between them with `vfio-mig migrate`,
# once through the legacy VFIO container with the defaults and once through
# iommufd with dirty queries in windows of 1000 pages (the walk over guest
# RAM then takes several queries at starts that are not multiples of 64)
# and vCPUs six times busier (pre-copy needs more iterations). Then removes
# the mdevs, checks that no guest page stays pinned, unloads the module and
# checks the kernel log. Ends with `demo: PASSED` or `demo: FAILED` and
# exits non-zero on any failure.
#
# usage: guest-demo.sh REPO [extra vfio-mig migrate options...]
set -uo pipefail

repo=$1
shift
# shellcheck source=qemu-tests/guest-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/guest-lib.sh"

verdict() {
	if [ "$failed" -eq 0 ]; then echo "demo: PASSED"; else echo "demo: FAILED"; fi
	exit $((failed > 0))
}

load_modules || verdict
src=$(create_mdev large) || { bad "creating the source mdev" "see above"; verdict; }
dst=$(create_mdev large) || { bad "creating the destination mdev" "see above"; verdict; }
echo "demo: source mdev $src, destination mdev $dst (vfio_mig_sample-large)"

# The report has the iteration table: no progress lines (--quiet), and
# errors in the same stream.
# migrate NAME [migrate options...]
migrate() {
	local name=$1
	shift
	echo
	echo "=== $name ==="
	if "$bin/vfio-mig" migrate --src "$src" --dst "$dst" --quiet "$@" 2>&1; then
		ok "$name"
	else
		bad "$name" "vfio-mig migrate failed, see above"
	fi
}
migrate "live migration through the legacy VFIO container" "$@"
migrate "live migration through iommufd, dirty queries of 1000 pages, busier vCPUs" \
	--iommufd --dirty-window 1000 --cpu-rate 3000 --cpu-pattern strided:7 "$@"

echo
echo "=== stock QEMU: a VM that owns an mdev live-migrates (vfio-mig-qemu) ==="
check_lines "$bin/vfio-mig-qemu" demo

echo
check "removing $src" remove_mdev "$src"
check "removing $dst" remove_mdev "$dst"
# Closing the devices reset them and unpinned their rings.
check_unpinned "no guest page pinned after close"
check "rmmod vfio_mig_sample" rmmod vfio_mig_sample
check_dmesg
verdict
