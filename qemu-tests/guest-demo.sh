#!/bin/sh
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
# checks the kernel log. Exits non-zero on any failure.
#
# usage: guest-demo.sh REPO [extra vfio-mig migrate options...]

repo=$1
shift
ko=$repo/vfio_mig_sample.ko
tool=$repo/tools/target/release/vfio-mig
parent=/sys/class/mdev_bus/vfio_mig_sample
pinned=/sys/kernel/debug/vfio_mig_sample/pinned_pages

failed=0
bad() { echo "demo: FAILED: $*"; failed=1; }
die() { echo "demo: FAILED: $*"; exit 1; }
create_mdev() { # TYPE -> UUID on stdout
	u=$(cat /proc/sys/kernel/random/uuid)
	echo "$u" >"$parent/mdev_supported_types/vfio_mig_sample-$1/create" && echo "$u"
}

# debugfs holds the module's count of pinned pages.
mountpoint -q /sys/kernel/debug || mount -t debugfs none /sys/kernel/debug
modprobe mdev || die "modprobe mdev"
insmod "$ko" || die "insmod $ko"
src=$(create_mdev large) || die "creating the source mdev"
dst=$(create_mdev large) || die "creating the destination mdev"
echo "demo: source mdev $src, destination mdev $dst (vfio_mig_sample-large)"

echo
echo "=== live migration through the legacy VFIO container ==="
# The report has the iteration table: no progress lines (--quiet), and
# errors in the same stream.
"$tool" migrate --src "$src" --dst "$dst" --quiet "$@" 2>&1 ||
	bad "live migration (legacy container)"

echo
echo "=== live migration through iommufd, dirty queries of 1000 pages, busier vCPUs ==="
"$tool" migrate --src "$src" --dst "$dst" --quiet --iommufd --dirty-window 1000 \
	--cpu-rate 3000 --cpu-pattern strided:7 "$@" 2>&1 ||
	bad "live migration (iommufd)"

echo
echo "=== stock QEMU: a VM that owns an mdev live-migrates (vfio-mig-qemu) ==="
"$repo/tools/target/release/vfio-mig-qemu" demo 2>&1 || bad "stock QEMU live migration"

echo
echo 1 >"/sys/bus/mdev/devices/$src/remove" || bad "removing $src"
echo 1 >"/sys/bus/mdev/devices/$dst/remove" || bad "removing $dst"
# Closing the devices reset them and unpinned their rings; the count lives
# in the module's debugfs, so it is read before rmmod.
n=$(cat "$pinned" 2>/dev/null) || n="unreadable"
if [ "$n" = 0 ]; then echo "demo: pinned pages after close: 0"; else bad "pinned pages after close: $n"; fi
rmmod vfio_mig_sample || bad "rmmod vfio_mig_sample"

# Lockdep and KASAN reports start with "WARNING:" or "BUG:".
splat='WARNING:|BUG:|Oops|KASAN:|UBSAN:|INFO: task .* blocked|Call Trace:'
if dmesg | grep -qE "$splat"; then
	bad "the kernel log has $(dmesg | grep -cE "$splat") report lines, the first below"
	dmesg | grep -E -B 3 -A 40 "$splat" | head -n 120 | sed 's/^/  | /'
else
	echo "demo: kernel log clean (no WARNING/BUG/Oops/KASAN/Call Trace)"
fi

if [ $failed -eq 0 ]; then echo "demo: PASSED"; else echo "demo: FAILED"; fi
exit $failed
