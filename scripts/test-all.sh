#!/usr/bin/env bash
# Every test suite: unit, host-privileged (root on this kernel) and VM (root in a
# QEMU kernel with BPF LSM). In CI (CI=true) a suite that cannot run is a failure.
# Ends with one line "N passed, N failed" counting assertions over all suites.
set -uo pipefail
cd "$(dirname "$0")/.."

passed=0 failed=0 problems=()
logdir=$(mktemp -d)
trap 'rm -rf "$logdir"' EXIT

# Adds the counts of every tap summary line ("# { total: N, pass: N, fail: N }") in a log.
count() {
  local log=$1 p f
  read -r p f < <(awk '/^# \{ total: / { if (match($0, /pass: [0-9]+/)) p += substr($0, RSTART + 6, RLENGTH - 6);
                                          if (match($0, /fail: [0-9]+/)) f += substr($0, RSTART + 6, RLENGTH - 6) }
                       END { print p + 0, f + 0 }' "$log")
  passed=$((passed + p)); failed=$((failed + f))
}

suite() { # name, command...
  local name=$1; shift
  echo "===== $name: $*"
  local log="$logdir/$name.log"
  "$@" 2>&1 | tee "$log"
  local rc=${PIPESTATUS[0]}
  count "$log"
  if ! grep -qE '^# \{ total: [1-9]' "$log"; then problems+=("$name ran no test"); fi
  ((rc == 0)) || problems+=("$name failed (exit $rc)")
}

cannot_run() { # name, why
  if [ "${CI:-}" = true ]; then problems+=("$1 could not run: $2"); else echo "===== $1: NOT RUN: $2"; problems+=("$1 not run: $2"); fi
}

suite unit npx tap --reporter=tap dist/test/unit

if [ "$(id -u)" = 0 ]; then
  suite host npx tap --reporter=tap dist/test/host
else
  cannot_run host "needs root"
fi

if [ "$(id -u)" != 0 ]; then
  cannot_run vm "needs root (QEMU and the VM's checks run as root)"
else
  suite vm bash scripts/vm/run.sh --timeout 3000 -- bash scripts/vm-suite.sh
  # A VM of its own, fully preemptible, with one CPU online: decisions preempted
  # half-way, and the grace period helmd waits for (test/vm-preempt).
  suite vm-preempt bash scripts/vm/run.sh --timeout 1200 --append preempt=full --append maxcpus=1 -- \
    bash -c 'rc=0; for f in dist/test/vm-preempt/*.test.js; do node "$f" || rc=1; done; exit $rc'
fi

# The benchmark with a few iterations (natively and in the VM): that it runs, never how fast.
if [ "$(id -u)" != 0 ]; then
  cannot_run bench-smoke "needs root (cgroups, BPF maps, the VM)"
else
  suite bench-smoke node dist/test/bench/smoke.test.js
fi

echo
for p in "${problems[@]}"; do echo "PROBLEM: $p"; done
echo "$passed passed, $failed failed"
((${#problems[@]} == 0 && failed == 0))
