#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# The whole test run, as CI does it on a fresh clone: install what is
# missing, build (or find) the test kernel, build the module (plain and with
# clippy), check formatting, build and unit-test the tools on the host, then
# boot the test kernel and run the guest suite. Prints `ok`/`FAIL`/`skip`
# lines and ends with `N passed, N failed, N skipped`; exits non-zero on any
# failure.
set -uo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

pass=0
fail=0
skip=0
ok() { echo "ok $1"; pass=$((pass + 1)); }
bad() { echo "FAIL $1: $2"; fail=$((fail + 1)); }
summary() {
	echo "$pass passed, $fail failed, $skip skipped"
	[ "$fail" -eq 0 ]
	exit
}
# step NAME COMMAND...: runs the command with its output in a log, shown on failure.
step() {
	local name=$1 log
	shift
	log=$out/$(echo "$name" | tr -c 'a-zA-Z0-9\n' '_').log
	local start=$SECONDS
	if "$@" >"$log" 2>&1; then
		ok "$name ($((SECONDS - start))s)"
	else
		bad "$name" "exit $?, last lines:"
		tail -n 40 "$log" | sed 's/^/  | /'
		return 1
	fi
}
# cargo_counts NAME LOG: adds the `cargo test` result lines of LOG.
cargo_counts() {
	local p f
	p=$(awk '/^test result:/ { for (i = 1; i < NF; i++) if ($(i + 1) ~ /^passed/) s += $i } END { print s + 0 }' "$2")
	f=$(awk '/^test result:/ { for (i = 1; i < NF; i++) if ($(i + 1) ~ /^failed/) s += $i } END { print s + 0 }' "$2")
	echo "# $1: ${p:-0} passed, ${f:-0} failed"
	pass=$((pass + ${p:-0}))
	fail=$((fail + ${f:-0}))
	grep -E '^test .* FAILED$' "$2" | sed 's/^/FAIL /'
}

echo "# dependencies"
step "install dependencies" qemu-tests/install-deps.sh || summary
echo "# test kernel (cached; the first build takes about 20 minutes)"
qemu-tests/build-kernel.sh >"$out/kdir" && ok "test kernel" || { bad "test kernel" "build failed"; summary; }
export KDIR=$(cat "$out/kdir")

echo "# module"
step "module builds with CLIPPY=1" make clippy
step "module builds" make module || summary
step "rustfmt" make fmt-check

echo "# tools"
step "tools build" make tools || summary
step "tools clippy" bash -c 'cd tools && cargo clippy --release --locked --all-targets -- -D warnings'
if (cd tools && cargo test --release --locked --workspace) >"$out/cargo-test.log" 2>&1; then :; else
	grep -qE '^test result:' "$out/cargo-test.log" || { bad "host unit tests" "did not run:"; tail -n 30 "$out/cargo-test.log"; }
fi
cargo_counts "host unit tests" "$out/cargo-test.log"

echo "# guest suite (virtme-ng, TCG)"
start=$SECONDS
qemu-tests/vng-run.sh "$repo/qemu-tests/guest-suite.sh" "$repo" >"$out/guest.log" 2>&1
rc=$?
grep -E '^(ok|FAIL|skip) |^  \| |^# ' "$out/guest.log"
p=$(grep -c '^ok ' "$out/guest.log")
f=$(grep -c '^FAIL ' "$out/guest.log")
s=$(grep -c '^skip ' "$out/guest.log")
pass=$((pass + p))
fail=$((fail + f))
skip=$((skip + s))
echo "# guest suite: $((SECONDS - start))s including boot"
if ! grep -qE '^[0-9]+ passed, [0-9]+ failed' "$out/guest.log"; then
	bad "guest suite completed" "no summary line (exit $rc); guest output:"
	tail -n 60 "$out/guest.log" | sed 's/^/  | /'
elif [ $rc -ne 0 ] && [ "$f" -eq 0 ]; then
	bad "guest suite exit code" "exit $rc with no failed check"
fi
summary
