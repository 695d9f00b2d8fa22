# SPDX-License-Identifier: GPL-2.0
#
# Entry points. `Kbuild` describes the module for kbuild; this file drives
# kbuild, cargo and the scripts in qemu-tests/.
#
#   make            build vfio_mig_sample.ko against KDIR
#   make test       everything CI runs: deps, test kernel, module (and its
#                   clippy build), tools, host unit tests, the guest suites
#   make demo       the main job: build what is missing, boot the test kernel
#                   and live-migrate a running device between two mdevs
#   make bench      the benchmarks, on the benchmark kernel (built here, and
#                   only here, the first time)
#   make kernel     install dependencies and build (or find) the test kernel
#   make tools      build the userspace workspace
#   make clippy     build the module with CLIPPY=1
#   make fmt        rustfmt the module and the tools

# The cached test kernel, unless told otherwise (lazy: only recipes that
# build against it ask).
KDIR ?= $(shell $(CURDIR)/qemu-tests/build-kernel.sh --print-dir)
KBUILD := $(MAKE) -C $(KDIR) M=$(CURDIR) LLVM=1

RUST_SOURCES := $(filter-out rust/sys_generated.rs,$(wildcard rust/*.rs rust/*/*.rs))

.PHONY: all module clippy deps kernel tools test fmt fmt-check clean

all: module

module:
	$(KBUILD) modules

clippy:
	$(KBUILD) CLIPPY=1 modules

deps:
	qemu-tests/install-deps.sh

kernel: deps
	qemu-tests/build-kernel.sh >/dev/null

tools:
	cd tools && cargo build --release --locked

test:
	qemu-tests/run-all.sh

# A live migration with a DMA and vCPU workload, in the test guest.
.PHONY: demo
demo:
	qemu-tests/demo.sh

# The benchmarks, on the benchmark kernel (BENCH_KERNEL=test: on the test
# kernel); tables, no pass/fail on timings.
.PHONY: bench
bench:
	qemu-tests/bench.sh

fmt:
	rustfmt --edition 2021 $(RUST_SOURCES)
	cd tools && cargo fmt

fmt-check:
	rustfmt --edition 2021 --check $(RUST_SOURCES)
	cd tools && cargo fmt --check

clean:
	$(KBUILD) clean
	cd tools && cargo clean
