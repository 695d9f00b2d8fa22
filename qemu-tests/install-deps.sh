#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# Install everything the test kernel, the module, the tools and the guest
# runner need on a Debian 12 machine. Idempotent: each step checks first.
set -euo pipefail

BINDGEN_VERSION=0.73.2
VIRTME_NG_VERSION=1.42
VENV=${VFIO_MIG_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/vfio-mig-sample/venv}

APT_PACKAGES=(
	linux-source-6.12 clang lld llvm libclang-dev flex bison bc libelf-dev
	libssl-dev cpio zstd xz-utils busybox-static udev kmod
	python3-venv rsync
)

log() { printf '[deps] %s\n' "$*"; }

missing=()
for p in "${APT_PACKAGES[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
		missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	log "apt: installing ${missing[*]}"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# QEMU 8.1 or later, system-wide: it runs virtme-ng's guest and, inside it,
# the QEMU migration tests (the upstream v2 VFIO migration client). Debian 12
# has 7.2; bookworm-backports has 10.0. The backports source reuses the URIs
# and key of the machine's own bookworm source, so no host is named here.
backports_source() {
	# deb822 stanzas of *.sources, then one-line `deb` entries; prints
	# "URIS|SIGNED-BY" of the first enabled deb source of suite bookworm.
	local f found deb822=() oneline=()
	for f in /etc/apt/sources.list.d/*.sources; do [ -f "$f" ] && deb822+=("$f"); done
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do [ -f "$f" ] && oneline+=("$f"); done
	found=$(
		[ ${#deb822[@]} -eq 0 ] || awk 'BEGIN { RS = ""; FS = "\n" }
		{
			t = ""; s = ""; u = ""; k = ""; e = "yes"
			for (i = 1; i <= NF; i++) {
				if ($i ~ /^Types:/) t = $i
				else if ($i ~ /^Suites:/) s = $i
				else if ($i ~ /^URIs:/) { u = $i; sub(/^URIs:[ \t]*/, "", u) }
				else if ($i ~ /^Signed-By:/) { k = $i; sub(/^Signed-By:[ \t]*/, "", k) }
				else if ($i ~ /^Enabled:/) e = $i
			}
			if (t ~ /[ \t]deb([ \t]|$)/ && s ~ /[ \t]bookworm([ \t]|$)/ && e !~ /no/) print u "|" k
		}' "${deb822[@]}"
		[ ${#oneline[@]} -eq 0 ] ||
			sed -n 's/^deb[ \t]\+\(\[[^]]*\][ \t]\+\)\?\([^ \t]\+\)[ \t]\+bookworm[ \t].*/\2|/p' "${oneline[@]}"
	)
	echo "${found%%$'\n'*}"
}
qemu_version=$(dpkg-query -W -f='${Version}' qemu-system-x86 2>/dev/null || true)
if ! dpkg --compare-versions "${qemu_version:-0}" ge 1:8.1; then
	src=$(backports_source)
	[ -n "$src" ] || { log "no Debian bookworm apt source to take the backports URIs from"; exit 1; }
	list=/etc/apt/sources.list.d/vfio-mig-sample-backports.sources
	{
		echo "Types: deb"
		echo "URIs: ${src%%|*}"
		echo "Suites: bookworm-backports"
		echo "Components: main"
		[ -z "${src#*|}" ] || echo "Signed-By: ${src#*|}"
	} >"$list"
	log "apt: installing qemu-system-x86 from bookworm-backports (have ${qemu_version:-none})"
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends -t bookworm-backports qemu-system-x86 >/dev/null
	qemu_version=$(dpkg-query -W -f='${Version}' qemu-system-x86)
	dpkg --compare-versions "$qemu_version" ge 1:8.1 ||
		{ log "qemu-system-x86 $qemu_version installed, 8.1 or later needed"; exit 1; }
fi

if ! rustup component list --installed 2>/dev/null | grep -q '^rust-src'; then
	log "rustup: adding rust-src"
	rustup component add rust-src
fi

if ! bindgen --version 2>/dev/null | grep -q " $BINDGEN_VERSION\$"; then
	log "cargo: installing bindgen-cli $BINDGEN_VERSION"
	cargo install --locked --quiet bindgen-cli --version "$BINDGEN_VERSION"
fi

if ! "$VENV/bin/vng" --version 2>/dev/null | grep -q "$VIRTME_NG_VERSION"; then
	log "pip: installing virtme-ng $VIRTME_NG_VERSION into $VENV"
	python3 -m venv "$VENV"
	"$VENV/bin/pip" install -q "virtme-ng==$VIRTME_NG_VERSION"
fi
log "ok"
