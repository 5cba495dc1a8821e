# One build: BPF objects, the native shim and helpers, and the TypeScript.
# `make` builds; `make demo` runs helmd governing a demo agent; `make test` runs every suite;
# `make bench` measures helm against its baselines and alternatives (bench/results/latest.md).
BUILD := build
CLANG ?= clang
BPFTOOL ?= bpftool
CFLAGS_NATIVE := -O2 -g -Wall -Wextra -Wno-unused-parameter

BPF_OBJS := $(BUILD)/helm.bpf.o $(BUILD)/selftest.bpf.o
NATIVE := $(BUILD)/libhelm.so $(BUILD)/helm-enter $(BUILD)/layout_dump $(BUILD)/escape-tools $(BUILD)/net-probe
BENCH_BIN := $(BUILD)/bench-driver $(BUILD)/bench-noop $(BUILD)/seccomp-notify
# Objects only the tests load: helm.bpf.o as a next release would build it (a new
# object with the same layout; a changed layout), and a small fixture of a cgroup
# program and a tracing program for pinning on kernels without BPF LSM.
TEST_OBJS := $(BUILD)/test/helm-next-object.bpf.o $(BUILD)/test/helm-next-layout.bpf.o \
  $(BUILD)/test/pinning-v1.bpf.o $(BUILD)/test/pinning-v2.bpf.o $(BUILD)/test/pinning-v3.bpf.o

# Which helm.h an object was built against is part of its layout id (see daemon/kernel/pins.ts).
HELM_H_SHA256 = $(shell sha256sum bpf/helm.h | cut -c1-64)
BPF_CFLAGS = -g -O2 -Wall -target bpf -D__TARGET_ARCH_x86 -I$(BUILD) -Ibpf

.PHONY: all bpf native bench-bin ts deps demo test test-unit test-host test-vm bench bench-smoke clean

all: bpf native bench-bin ts

deps:
	bash scripts/install-deps.sh

bpf: $(BPF_OBJS) $(TEST_OBJS)
native: $(NATIVE)
bench-bin: $(BENCH_BIN)
ts: node_modules/.package-lock.json
	npx tsc -p tsconfig.json
	@# One file per command: far fewer files to open at start-up (it matters in the VM, over 9p).
	for b in helmd helmctl; do npx esbuild dist/daemon/cli/$$b.js --bundle --platform=node --target=node20 \
	  --external:koffi --log-level=warning --outfile=dist/bundle/$$b.js || exit 1; done

$(BUILD)/vmlinux.h:
	@mkdir -p $(BUILD)
	$(BPFTOOL) btf dump file /sys/kernel/btf/vmlinux format c > $@.tmp && mv $@.tmp $@

$(BUILD)/%.bpf.o: bpf/%.bpf.c bpf/helm.h $(BUILD)/vmlinux.h
	$(CLANG) $(BPF_CFLAGS) -DHELM_H_SHA256='"$(HELM_H_SHA256)"' -c $< -o $@

# Same programs and maps, other bytes (DWARF 4 debug info): helmd must replace the programs, keep the maps.
$(BUILD)/test/helm-next-object.bpf.o: bpf/helm.bpf.c bpf/helm.h $(BUILD)/vmlinux.h
	@mkdir -p $(@D)
	$(CLANG) $(BPF_CFLAGS) -gdwarf-4 -DHELM_H_SHA256='"$(HELM_H_SHA256)"' -c $< -o $@
# As if helm.h had changed: helmd must rebuild every map and move the links over.
$(BUILD)/test/helm-next-layout.bpf.o: bpf/helm.bpf.c bpf/helm.h $(BUILD)/vmlinux.h
	@mkdir -p $(@D)
	$(CLANG) $(BPF_CFLAGS) -DHELM_H_SHA256='"$(HELM_H_SHA256)+next-layout"' -c $< -o $@
$(BUILD)/test/pinning-v%.bpf.o: test/host/pinning.bpf.c bpf/helm.h $(BUILD)/vmlinux.h
	@mkdir -p $(@D)
	$(CLANG) $(BPF_CFLAGS) -DPINNING_VARIANT=$* -c $< -o $@

$(BUILD)/libhelm.so: native/helm_shim.c
	@mkdir -p $(BUILD)
	$(CC) $(CFLAGS_NATIVE) -shared -fPIC $< -o $@ -lbpf -lelf -lz

$(BUILD)/helm-enter: native/helm_enter.c
	@mkdir -p $(BUILD)
	$(CC) $(CFLAGS_NATIVE) $< -o $@

# The escape suite's attempts that a shell cannot make (test/vm/escape.test.ts).
$(BUILD)/escape-tools: test/vm/escape-tools.c
	@mkdir -p $(BUILD)
	$(CC) $(CFLAGS_NATIVE) $< -o $@ -lpthread

# The network suites' governed agent (test/host/network.test.ts, test/vm/network.test.ts).
$(BUILD)/net-probe: test/support/net-probe.c
	@mkdir -p $(BUILD)
	$(CC) $(CFLAGS_NATIVE) $< -o $@

# The benchmark's measured operations, its "small binary" and the seccomp supervisor (bench/).
$(BUILD)/bench-driver: bench/driver.c
	@mkdir -p $(BUILD)
	$(CC) $(CFLAGS_NATIVE) $< -o $@
$(BUILD)/bench-noop: bench/noop.c
	@mkdir -p $(BUILD)
	$(CC) -O2 -Wall -static -nostdlib $< -o $@
$(BUILD)/seccomp-notify: bench/seccomp-notify.c
	@mkdir -p $(BUILD)
	$(CC) $(CFLAGS_NATIVE) $< -o $@

$(BUILD)/layout_dump: native/layout_dump.c bpf/helm.h
	@mkdir -p $(BUILD)
	$(CC) $(CFLAGS_NATIVE) -Ibpf $< -o $@

node_modules/.package-lock.json: package-lock.json
	npm ci --no-audit --no-fund
	@touch $@

demo: deps all
	bash scripts/demo.sh

test: deps all
	bash scripts/test-all.sh

test-unit: all
	npx tap dist/test/unit
test-host: all
	npx tap dist/test/host
test-vm: all
	bash scripts/vm/run.sh -- npx tap dist/test/vm

bench: deps all
	node dist/bench/run.js
# A few iterations of everything: proves the benchmark runs; asserts no timing.
bench-smoke: all
	node dist/test/bench/smoke.test.js

clean:
	rm -rf $(BUILD) dist
