# One build: BPF objects, the native shim and helpers, and the TypeScript.
# `make` builds; `make demo` runs helmd governing a demo agent; `make test` runs every suite;
# `make bench` measures helm against its baselines and alternatives (bench/results/latest.md).
BUILD := build
CLANG ?= clang
BPFTOOL ?= bpftool
CFLAGS_NATIVE := -O2 -g -Wall -Wextra -Wno-unused-parameter

BPF_OBJS := $(BUILD)/helm.bpf.o $(BUILD)/selftest.bpf.o
NATIVE := $(BUILD)/libhelm.so $(BUILD)/helm-enter $(BUILD)/layout_dump $(BUILD)/escape-tools $(BUILD)/net-probe $(BUILD)/test/notify-listen
BENCH_BIN := $(BUILD)/bench-driver $(BUILD)/bench-noop $(BUILD)/seccomp-notify
# Objects only the tests load: helm.bpf.o as a next release would build it (a new
# object with the same layout; a changed layout), and a small fixture of a cgroup
# program and a tracing program for pinning on kernels without BPF LSM, and a slow
# LSM decision for the grace-period test.
TEST_OBJS := $(BUILD)/test/helm-next-object.bpf.o $(BUILD)/test/helm-next-layout.bpf.o \
  $(BUILD)/test/pinning-v1.bpf.o $(BUILD)/test/pinning-v2.bpf.o $(BUILD)/test/pinning-v3.bpf.o \
  $(BUILD)/test/slow-decision.bpf.o

# Which helm.h an object was built against is part of its layout id (see daemon/kernel/pins.ts).
HELM_H_SHA256 = $(shell sha256sum bpf/helm.h | cut -c1-64)
BPF_CFLAGS = -g -O2 -Wall -target bpf -D__TARGET_ARCH_x86 -I$(BUILD) -Ibpf

.PHONY: all bpf native bench-bin ts deps demo test test-unit test-host test-vm bench bench-smoke clean install uninstall verify-unit

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
	@# ASCII only (esbuild escapes strings; comments it keeps are copied as written): V8 keeps a
	@# script's source in memory, and one non-ASCII character makes it two bytes a character
	@# (helmd's bundle: 4 MB of its heap rather than 2). Write comments that reach the bundle in ASCII.
	@for b in helmd helmctl; do if LC_ALL=C grep -n -m3 -P '[\x80-\xff]' dist/bundle/$$b.js; then \
	  echo "dist/bundle/$$b.js is not ASCII (the lines above): see the Makefile's ts target" >&2; exit 1; fi; done

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

$(BUILD)/test/slow-decision.bpf.o: test/vm-preempt/slow-decision.bpf.c $(BUILD)/vmlinux.h
	@mkdir -p $(@D)
	$(CLANG) $(BPF_CFLAGS) -c $< -o $@

$(BUILD)/libhelm.so: native/helm_shim.c native/audit_format.c bpf/helm.h
	@mkdir -p $(BUILD)
	$(CC) $(CFLAGS_NATIVE) -Ibpf -shared -fPIC $(filter %.c,$^) -o $@ -lbpf -lelf -lz

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

# systemd's side of NOTIFY_SOCKET, for the VM's service start (test/vm/lifecycle.test.ts).
$(BUILD)/test/notify-listen: test/vm/notify-listen.c
	@mkdir -p $(@D)
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

# BENCH_ARGS='--scale 0.5': half the rounds, for a shorter run (bench/run.ts).
bench: deps all
	node dist/bench/run.js $(BENCH_ARGS)
# A few iterations of everything: proves the benchmark runs; asserts no timing.
bench-smoke: all
	node dist/test/bench/smoke.test.js

# ---- installation: `make` first, then `make install` (as root; DESTDIR stages a package)
PREFIX ?= /usr/local
DESTDIR ?=
LIBDIR = $(PREFIX)/lib/helm
UNITDIR = $(PREFIX)/lib/systemd/system
# What an installation runs: the bundles (everything but koffi is bundled), the
# native shim and helper, the BPF object, the API definition (proto/helm/v1/*.proto).
RUNTIME = dist/bundle/helmd.js dist/bundle/helmctl.js build/libhelm.so build/helm-enter build/helm.bpf.o proto/helm/v1/helm.proto

install:
	@for f in $(RUNTIME) node_modules/koffi; do [ -e $$f ] || { echo "make install: $$f is missing: run make first" >&2; exit 1; }; done
	install -d -m 0755 $(DESTDIR)$(LIBDIR)/bin $(DESTDIR)$(LIBDIR)/dist/bundle $(DESTDIR)$(LIBDIR)/build \
	  $(DESTDIR)$(LIBDIR)/proto/helm/v1 $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(UNITDIR)
	install -m 0755 bin/helmd bin/helmctl $(DESTDIR)$(LIBDIR)/bin/
	install -m 0644 dist/bundle/helmd.js dist/bundle/helmctl.js $(DESTDIR)$(LIBDIR)/dist/bundle/
	install -m 0755 build/libhelm.so build/helm-enter $(DESTDIR)$(LIBDIR)/build/
	install -m 0644 build/helm.bpf.o $(DESTDIR)$(LIBDIR)/build/
	install -m 0644 proto/helm/v1/*.proto $(DESTDIR)$(LIBDIR)/proto/helm/v1/
	rm -rf $(DESTDIR)$(LIBDIR)/policies $(DESTDIR)$(LIBDIR)/node_modules
	cp -R policies $(DESTDIR)$(LIBDIR)/policies
	@# koffi and its binary for this platform (an optional dependency of it)
	mkdir -p $(DESTDIR)$(LIBDIR)/node_modules/@koromix
	cp -R node_modules/koffi $(DESTDIR)$(LIBDIR)/node_modules/
	cp -R node_modules/@koromix/. $(DESTDIR)$(LIBDIR)/node_modules/@koromix/
	ln -sfn ../lib/helm/bin/helmd $(DESTDIR)$(PREFIX)/bin/helmd
	ln -sfn ../lib/helm/bin/helmctl $(DESTDIR)$(PREFIX)/bin/helmctl
	sed 's#^ExecStart=/usr/local/#ExecStart=$(PREFIX)/#' systemd/helmd.service > $(DESTDIR)$(UNITDIR)/helmd.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/helmd.service
	@# The configuration and the default policy are the administrator's: never replaced.
	install -d -m 0755 $(DESTDIR)/etc/helm
	[ -e $(DESTDIR)/etc/helm/helmd.yaml ] || install -m 0644 systemd/helmd.yaml $(DESTDIR)/etc/helm/helmd.yaml
	[ -e $(DESTDIR)/etc/helm/policies ] || install -D -m 0644 policies/default.yaml $(DESTDIR)/etc/helm/policies/default.yaml
	install -d -m 0750 $(DESTDIR)/var/log/helm
	install -d -m 0700 $(DESTDIR)/var/lib/helm
	@if [ -z "$(DESTDIR)" ]; then getent group helm >/dev/null || groupadd --system helm; \
	 else echo "make install: staged in $(DESTDIR): create the helm group on the target (groupadd --system helm)"; fi
	@echo "installed; start it: systemctl daemon-reload && systemctl enable --now helmd; check: helmctl doctor"

# Enforcement goes first, audited (helmctl uninstall); nothing else is removed if that fails.
# Kept: /etc/helm (configuration, policies), /var/log/helm (the audit trail), the helm group.
uninstall:
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl disable --now helmd.service || true; fi
	@if [ -z "$(DESTDIR)" ] && [ -x $(PREFIX)/bin/helmctl ]; then $(PREFIX)/bin/helmctl uninstall; fi
	rm -f $(DESTDIR)$(PREFIX)/bin/helmd $(DESTDIR)$(PREFIX)/bin/helmctl $(DESTDIR)$(UNITDIR)/helmd.service
	rm -rf $(DESTDIR)$(LIBDIR) $(DESTDIR)/var/lib/helm
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
	@echo "uninstalled; kept /etc/helm (configuration, policies), /var/log/helm (the audit trail) and the helm group"

# The unit file as systemd-analyze verify sees it (any warning fails).
verify-unit:
	bash scripts/verify-unit.sh

clean:
	rm -rf $(BUILD) dist
