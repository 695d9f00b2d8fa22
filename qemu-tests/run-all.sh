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

# shellcheck source=qemu-tests/host-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/host-lib.sh"

finish() {
	summary
	exit
}
# cargo_counts NAME LOG: adds the `cargo test` result lines of LOG.
cargo_counts() {
	local p f
	p=$(awk '/^test result:/ { for (i = 1; i < NF; i++) if ($(i + 1) ~ /^passed/) s += $i } END { print s + 0 }' "$2")
	f=$(awk '/^test result:/ { for (i = 1; i < NF; i++) if ($(i + 1) ~ /^failed/) s += $i } END { print s + 0 }' "$2")
	echo "# $1: ${p:-0} passed, ${f:-0} failed"
	passed=$((passed + ${p:-0}))
	failed=$((failed + ${f:-0}))
	grep -E '^test .* FAILED$' "$2" | sed 's/^/FAIL /'
}

echo "# dependencies"
step "install dependencies" qemu-tests/install-deps.sh || finish
kernel test || finish

echo "# module"
step "module builds with CLIPPY=1" make clippy
step "module builds" make module || finish
step "rustfmt" make fmt-check

echo "# tools"
step "tools build" make tools || finish
step "tools clippy" bash -c 'cd tools && cargo clippy --release --locked --all-targets -- -D warnings'
if (cd tools && cargo test --release --locked --workspace) >"$logs/cargo-test.log" 2>&1; then :; else
	grep -qE '^test result:' "$logs/cargo-test.log" || { bad "host unit tests" "did not run:"; tail -n 30 "$logs/cargo-test.log"; }
fi
cargo_counts "host unit tests" "$logs/cargo-test.log"

echo "# guest suite (virtme-ng, TCG)"
start=$SECONDS
run_guest guest-suite.sh >"$logs/guest.log"
rc=$?
grep -E '^(ok|FAIL|skip) |^  \| |^# ' "$logs/guest.log"
p=$(grep -c '^ok ' "$logs/guest.log")
f=$(grep -c '^FAIL ' "$logs/guest.log")
s=$(grep -c '^skip ' "$logs/guest.log")
passed=$((passed + p))
failed=$((failed + f))
skipped=$((skipped + s))
echo "# guest suite: $((SECONDS - start))s including boot"
if ! grep -qE '^[0-9]+ passed, [0-9]+ failed' "$logs/guest.log"; then
	bad "guest suite completed" "no summary line (exit $rc); guest output:"
	tail -n 60 "$logs/guest.log" | sed 's/^/  | /'
elif [ $rc -ne 0 ] && [ "$f" -eq 0 ]; then
	bad "guest suite exit code" "exit $rc with no failed check"
fi
finish
