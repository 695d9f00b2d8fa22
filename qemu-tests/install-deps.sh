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
	libssl-dev cpio zstd xz-utils qemu-system-x86 busybox-static udev kmod
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
