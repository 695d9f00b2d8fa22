#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Build (once) a Rust-enabled 6.12 kernel and print its directory.
#
# usage: build-kernel.sh [--print-dir] [test|bench]
#
# The tree is Debian's linux-source-6.12, configured from tinyconfig plus a
# fragment, built with LLVM=1. Two flavours share the source:
#
#   test   (default) qemu-tests/kernel.config: KASAN, lockdep, kmemleak and
#          the other checks the guest suite fails on;
#   bench  the same fragment with its "debugging" section replaced by
#          qemu-tests/bench-kernel.config, which turns those options off
#          (built only by `make bench`).
#
# Each lives in a cache outside the checkout, keyed on the kernel version,
# the fragment, rustc, bindgen and clang, so a second run only checks a
# stamp file.
#
# Progress goes to stderr; the kernel directory is the only thing on stdout.
# With --print-dir, only print where the tree is (or would be) and build
# nothing.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cache=${VFIO_MIG_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/vfio-mig-sample}
tarball=/usr/src/linux-source-6.12.tar.xz

log() { printf '[kernel] %s\n' "$*" >&2; }

print_dir=false
if [ "${1:-}" = "--print-dir" ]; then
	print_dir=true
	shift
fi
flavour=${1:-test}

# The fragment's text. The licence line is not configuration: it stays out
# of the key, which it would otherwise have changed.
test_fragment() { grep -v '^# SPDX-License-Identifier:' "$here/kernel.config"; }
case "$flavour" in
test)
	fragment_text=$(test_fragment)
	name=linux ;;
bench)
	# The test fragment without its "# --- debugging" section (up to the
	# next "# ---" header), then the benchmark kernel's own section.
	fragment_text=$(
		test_fragment | awk '/^# --- / { skip = /^# --- debugging/ } !skip'
		grep -v '^# SPDX-License-Identifier:' "$here/bench-kernel.config"
	)
	name=linux-bench ;;
*)
	log "unknown flavour '$flavour' (test or bench)"
	exit 2 ;;
esac

[ -f "$tarball" ] || { log "missing $tarball: run qemu-tests/install-deps.sh"; exit 1; }

kver=$(dpkg-query -W -f='${Version}' linux-source-6.12)
key=$( {
	echo "$kver"
	echo "$fragment_text"
	sed -n '/^# --- key/,$p' "${BASH_SOURCE[0]}"
	rustc --version
	bindgen --version
	clang --version | head -n 1
} | sha256sum | cut -c1-16)
kdir=$cache/$name-$kver-$key

if $print_dir; then
	echo "$kdir"
	exit 0
fi

if [ -f "$kdir/.vfio-mig-built" ]; then
	log "cached: $kdir"
	echo "$kdir"
	exit 0
fi

# The fragment kbuild merges: the test kernel's file, or the bench kernel's
# text written beside its tree.
if [ "$flavour" = test ]; then
	fragment=$here/kernel.config
else
	mkdir -p "$cache"
	fragment=$kdir.config
	echo "$fragment_text" >"$fragment"
fi

# The build runs in the background (the loop below reports progress). A
# Ctrl-C reaches it through the terminal's process group, but a TERM sent
# to this script alone (timeout(1), a parent's cleanup) would leave it
# running, and make passes no signal on to its jobs: on either, send TERM
# to every process of the build (TERM is handled once the loop's sleep
# ends). Above the key marker: how a build is stopped does not change what
# it builds.
build_tree() { # PID...: these processes and all their descendants
	local p
	for p in "$@"; do
		echo "$p"
		# shellcheck disable=SC2046 # one PID a word
		build_tree $(pgrep -P "$p")
	done
}
stop_build() { # EXIT_CODE
	trap - INT TERM
	if [ -n "${pid:-}" ] && kill -0 "$pid" 2>/dev/null; then
		log "stopping the build (pid $pid and its descendants)"
		# shellcheck disable=SC2046 # one PID a word
		kill -TERM $(build_tree "$pid") 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	fi
	exit "$1"
}
trap 'stop_build 130' INT
trap 'stop_build 143' TERM

# --- key: everything below changes the cache key ---------------------------
mkdir -p "$cache"
if [ ! -f "$kdir/Makefile" ]; then
	log "unpacking $tarball ($kver)"
	rm -rf "$kdir.tmp"
	mkdir -p "$kdir.tmp"
	tar -xJf "$tarball" -C "$kdir.tmp" --strip-components=1
	mv "$kdir.tmp" "$kdir"
fi

mk() { make -C "$kdir" LLVM=1 -j"$(nproc)" "$@"; }

log "configuring: tinyconfig + $(basename "$fragment")"
mk -s tinyconfig >/dev/null
"$kdir/scripts/kconfig/merge_config.sh" -m -O "$kdir" "$kdir/.config" "$fragment" >/dev/null
mk -s olddefconfig >/dev/null

# Every option the fragment names must have survived olddefconfig: a silently
# dropped dependency (say RUST when bindgen is missing) fails here, not later.
bad=0
while IFS= read -r line; do
	case "$line" in
	CONFIG_*=*) want=$line ;;
	"# CONFIG_"*" is not set") want=$line ;;
	*) continue ;;
	esac
	if ! grep -qxF "$want" "$kdir/.config"; then
		name=${want#\# }
		name=${name%%[= ]*}
		log "fragment asks '$want' but .config has: $(grep -E "(^| )$name[= ]" "$kdir/.config" || echo 'nothing')"
		bad=1
	fi
done <"$fragment"
[ $bad -eq 0 ] || { log "config check failed"; exit 1; }

log "building bzImage and modules on $(nproc) cores (log: $kdir/build.log)"
start=$(date +%s)
mk bzImage modules >"$kdir/build.log" 2>&1 &
pid=$!
while kill -0 "$pid" 2>/dev/null; do
	sleep 30
	n=$(grep -cE '^  (CC|RUSTC|AS|LD)' "$kdir/build.log" || true)
	log "$(( $(date +%s) - start ))s: $n objects"
done
if ! wait "$pid"; then
	tail -n 40 "$kdir/build.log" >&2
	log "build failed"
	exit 1
fi
secs=$(( $(date +%s) - start ))
echo "$secs" >"$kdir/.build-seconds"
log "built in ${secs}s"
touch "$kdir/.vfio-mig-built"
echo "$kdir"
